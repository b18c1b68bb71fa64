"""Send DeepWML's DICOM outputs (SEG, findings picture, SR, and their change counterparts) to a PACS or any DICOM
node with C-STORE (pynetdicom), and remember what reached which node so that a second run sends only the rest.

Only objects DeepWML wrote are sent (Manufacturer "DeepWML"): a scan or a reader's file lying in the folder never
leaves it. Everything goes over one association; each object's C-STORE status is checked, and only a success (or a
warning, which a node uses for e.g. coerced elements) counts as delivered.
"""
from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional

from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.errors import DeepWMLError

#: the record of what was delivered, in the output folder
LEDGER_NAME = ".deepwml_sent.json"
MANUFACTURER = "DeepWML"
#: where DeepWML's DICOM outputs lie in an output folder: the folder itself (deepwml_predict, deepwml_compare)
OUTPUT_PATTERNS = ("*_seg.dcm", "*_findings.dcm", "*_sr.dcm")
#: C-STORE statuses that deliver the object: success, and the warnings (coercion, elements discarded)
DELIVERED = {0x0000, 0x0001, 0xB000, 0xB006, 0xB007}
#: the Verification SOP class (C-ECHO)
VERIFICATION = "1.2.840.10008.1.1"
AE_TITLE = re.compile(r"[ -\[\]-~]{1,16}")  # printable ASCII without backslash, at most 16 characters


@dataclass(frozen=True)
class Destination:
    """A DICOM node: its AE title, host and port."""

    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str, flag: str = "--to") -> "Destination":
        """'AET@HOST:PORT' (e.g. PACS@10.0.0.5:104); errors name ``flag``."""
        match = re.fullmatch(r"(.+)@(.+):(\d+)", text.strip())
        if not match:
            raise DeepWMLError(f"{flag} {text!r}: expected AE_TITLE@HOST:PORT, e.g. PACS@10.0.0.5:104")
        title, host, port = match.group(1), match.group(2), int(match.group(3))
        check_ae_title(title, flag)
        if not 1 <= port <= 65535:
            raise DeepWMLError(f"{flag} {text!r}: port {port} is not 1-65535")
        return cls(title, host, port)

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsFiles:
    """Certificate files for DICOM over TLS (DICOM PS3.15 Annex B; what IHE ATNA asks of a secure node): this side's
    certificate and key, and the CA that the other side's certificate must chain to (None: the system's CAs)."""

    cert: Optional[Path] = None
    key: Optional[Path] = None
    ca: Optional[Path] = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise DeepWMLError("--tls-cert and --tls-key go together: this side's certificate and its private key")
        for path in (self.cert, self.key, self.ca):
            if path is not None and not Path(path).is_file():
                raise DeepWMLError("TLS file not found", path)

    def client_context(self) -> ssl.SSLContext:
        """To call a node: its certificate must chain to ``ca`` and name the host called; ours is shown if given."""
        context = self._load(lambda: ssl.create_default_context(ssl.Purpose.SERVER_AUTH,
                                                                cafile=str(self.ca) if self.ca else None), self.ca)
        if self.cert is not None:
            self._load(lambda: context.load_cert_chain(str(self.cert), str(self.key)), self.cert)
        return context

    def server_context(self) -> ssl.SSLContext:
        """To be called: our certificate; with ``ca``, every caller must show a certificate that chains to it."""
        if self.cert is None:
            raise DeepWMLError("listening over TLS needs --tls-cert and --tls-key")
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2  # DICOM's secure transport profiles: TLS 1.2 or later
        self._load(lambda: context.load_cert_chain(str(self.cert), str(self.key)), self.cert)
        if self.ca is not None:
            self._load(lambda: context.load_verify_locations(cafile=str(self.ca)), self.ca)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    @staticmethod
    def _load(step, path: Optional[Path]):
        """Run one loading step; a file that is not a certificate or key (or a key not of the certificate) is named."""
        try:
            return step()
        except (ssl.SSLError, OSError, ValueError) as e:
            raise DeepWMLError(f"cannot be used for TLS ({e})", path) from None


def check_ae_title(title: str, flag: str) -> None:
    """An AE title is 1-16 printable ASCII characters without a backslash and not only spaces."""
    if not AE_TITLE.fullmatch(title) or not title.strip():
        raise DeepWMLError(f"{flag}: AE title {title!r} must be 1-16 printable ASCII characters without '\\'")


@dataclass(frozen=True)
class Outgoing:
    """One DICOM object to send."""

    path: Path
    sop_class: str
    sop_instance: str
    transfer_syntax: str


@dataclass
class SendReport:
    """What a run delivered, skipped as delivered earlier, and failed (file name -> why)."""

    destination: Destination
    sent: List[Path] = field(default_factory=list)
    already: List[Path] = field(default_factory=list)
    failed: Dict[Path, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the user."""
        line = f"deepwml_send: {len(self.sent)} object(s) sent to {self.destination}, {len(self.already)} sent before"
        if self.failed:
            line += f", {len(self.failed)} failed: " + "; ".join(f"{p.name}: {why}" for p, why in self.failed.items())
        return line


def find_outputs(folder: Path) -> List[Outgoing]:
    """DeepWML's DICOM objects in an output folder of deepwml_predict or deepwml_compare (headers only)."""
    import pydicom

    folder = Path(folder)
    if not folder.is_dir():
        raise DeepWMLError("is not an output folder", folder)
    found = []
    for path in sorted({p for pattern in OUTPUT_PATTERNS for p in folder.glob(pattern) if p.is_file()}):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
            raise DeepWMLError(f"not a readable DICOM file ({str(e).splitlines()[0][:160]})", path) from None
        if str(ds.get("Manufacturer", "")) != MANUFACTURER:
            continue  # not DeepWML's: a scan or a reader's object never leaves the folder
        found.append(Outgoing(path, str(ds.SOPClassUID), str(ds.SOPInstanceUID), str(ds.file_meta.TransferSyntaxUID)))
    return found


def send_outputs(folder: Path, destination: Destination, calling_ae: str = "DEEPWML", timeout: float = 30.0,
                 resend: bool = False, progress: bool = False, tls: Optional[TlsFiles] = None) -> SendReport:
    """C-STORE DeepWML's DICOM objects in ``folder`` to ``destination`` over one association (over TLS with ``tls``);
    objects the ledger records as delivered there are skipped unless ``resend``. The ledger is updated after every
    delivered object."""
    check_ae_title(calling_ae, "--calling-aet")
    outgoing = find_outputs(folder)
    report = SendReport(destination)
    ledger_path = Path(folder) / LEDGER_NAME
    ledger = read_json(ledger_path) if ledger_path.is_file() else {}
    delivered = ledger.setdefault(str(destination), {})
    todo = [o for o in outgoing if resend or o.sop_instance not in delivered]
    report.already = [o.path for o in outgoing if o not in todo]
    if not todo:
        return report
    ae = application_entity(calling_ae, timeout)
    for sop_class, syntax in sorted({(o.sop_class, o.transfer_syntax) for o in todo}):
        ae.add_requested_context(sop_class, syntax)
    assoc = associate(ae, destination, tls)
    from tqdm import tqdm

    try:
        for item in tqdm(todo, desc="deepwml_send", unit="object", disable=not progress):
            _send_one(assoc, item, report, delivered)
            if item.path in report.sent:
                write_json(ledger_path, ledger)  # after each object: an interrupted run resends only the rest
    finally:
        assoc.release()
    return report


def echo(destination: Destination, calling_ae: str = "DEEPWML", timeout: float = 30.0,
         tls: Optional[TlsFiles] = None) -> float:
    """C-ECHO ``destination`` (the DICOM 'ping' a site uses to check a node's address and AE titles); returns the
    seconds the round trip took, or raises with what to fix."""
    import time

    check_ae_title(calling_ae, "--calling-aet")
    ae = application_entity(calling_ae, timeout)
    ae.add_requested_context(VERIFICATION)
    start = time.perf_counter()
    assoc = associate(ae, destination, tls)
    try:
        status = assoc.send_c_echo()
    finally:
        assoc.release()
    code = int(getattr(status, "Status", -1)) if status else -1
    if code != 0x0000:
        raise DeepWMLError(f"{destination} answered C-ECHO with status 0x{code:04X}" if code >= 0
                           else f"{destination} did not answer C-ECHO (timeout or connection lost)")
    return time.perf_counter() - start


def _send_one(assoc, item: Outgoing, report: SendReport, delivered: Dict[str, Dict[str, str]]) -> None:
    """Send one object and file its outcome in ``report`` (and ``delivered`` when it was)."""
    import pydicom

    if not assoc.is_established:
        report.failed[item.path] = "the association ended before it was sent"
        return
    try:
        status = assoc.send_c_store(pydicom.dcmread(item.path))
    except (ValueError, RuntimeError) as e:  # no accepted presentation context, or the node dropped the association
        report.failed[item.path] = str(e).splitlines()[0][:160]
        return
    code = int(getattr(status, "Status", -1)) if status else -1
    if code in DELIVERED:
        report.sent.append(item.path)
        delivered[item.sop_instance] = {"file": item.path.name, "status": f"0x{code:04X}",
                                        "sent": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    elif code == -1:
        report.failed[item.path] = "no answer from the node (timeout or connection lost)"
    else:
        report.failed[item.path] = f"the node refused it (C-STORE status 0x{code:04X})"


def application_entity(calling_ae: str, timeout: float):
    """This side of the association: its AE title, and how long to wait for the node at each step."""
    from pynetdicom import AE

    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    return ae


def associate(ae, destination: Destination, tls: Optional[TlsFiles] = None, **options):
    """An established association with ``destination`` (over TLS with ``tls``; ``options``: more of pynetdicom's
    AE.associate, e.g. role selection and handlers for a C-GET), or an error saying what to check."""
    tls_args = (tls.client_context(), destination.host) if tls is not None else None
    assoc = ae.associate(destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args, **options)
    if not assoc.is_established:
        why = _why_not(assoc, destination)
        if tls is not None and not assoc.is_rejected and "no DICOM node answered" not in why:
            why += (f" -- over TLS: does its certificate chain to {tls.ca or 'a CA this system trusts'} and name "
                    f"{destination.host}, and does it accept this side's certificate (--tls-cert)?")
        raise DeepWMLError(why)
    return assoc


def _why_not(assoc, destination: Destination) -> str:
    """Why no association was made, as a user can act on it."""
    if assoc.is_rejected:
        return (f"{destination} rejected the association: is {destination.ae_title!r} its AE title, and does it accept "
                "this calling AE title (--calling-aet) from this machine?")
    import socket

    try:
        # pynetdicom reports a refused connection as an abort: a plain connection tells the two apart
        socket.create_connection((destination.host, destination.port), timeout=5).close()
    except OSError:
        return f"no DICOM node answered at {destination.host}:{destination.port} (wrong host or port, or a firewall)"
    return f"{destination} broke off the association (it may not accept these object types from this AE title)"
