"""deepwml_send: send the DICOM outputs of deepwml_predict / deepwml_compare to a PACS or DICOM node (C-STORE)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_version_argument, run


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_send."""
    p = argparse.ArgumentParser(
        prog="deepwml_send",
        description=(
            "Send the DICOM objects DeepWML wrote in an output folder (CASE_seg.dcm, CASE_findings.dcm, CASE_sr.dcm, "
            "change_seg.dcm, change_findings.dcm, change_sr.dcm) to a PACS or DICOM node with C-STORE, over one "
            "association. Only DeepWML's own objects are sent. What a node received is recorded in the folder "
            "(.deepwml_sent.json), so running the command again sends only what did not arrive. Needs pynetdicom "
            "(pip install 'deepwml[dicom]')."
        ),
    )
    p.add_argument("folder", type=Path, nargs="?", help="an output folder of deepwml_predict or deepwml_compare")
    p.add_argument("--to", required=True, metavar="AET@HOST:PORT", help="the node, e.g. PACS@10.0.0.5:104")
    p.add_argument("--calling-aet", default="DEEPWML", help="this side's AE title, as the node knows it (default DEEPWML)")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds to wait for the node at each step (default 30)")
    p.add_argument("--resend", action="store_true", help="send everything again, also what the node received before")
    p.add_argument("--progress", action="store_true", help="show the progress bar even when stderr is not a terminal")
    add_tls_arguments(p)
    p.add_argument("--echo", action="store_true",
                   help="only check the node: a C-ECHO with these AE titles (address, AE titles, firewall); sends nothing")
    add_version_argument(p)
    return p


def add_tls_arguments(p: argparse.ArgumentParser) -> None:
    """--tls, --tls-ca, --tls-cert, --tls-key: DICOM over TLS to the node called."""
    p.add_argument("--tls", action="store_true",
                   help="call the node over TLS (DICOM's secure transport; the node's certificate is checked against "
                   "the system's CAs, or --tls-ca)")
    p.add_argument("--tls-ca", type=Path, metavar="PEM", help="the CA the node's certificate must chain to (implies --tls)")
    p.add_argument("--tls-cert", type=Path, metavar="PEM", help="this side's certificate, for a node that asks for one (implies --tls)")
    p.add_argument("--tls-key", type=Path, metavar="PEM", help="the private key of --tls-cert")


def tls_files(args: argparse.Namespace):
    """The TlsFiles the TLS flags ask for, or None for plain DICOM."""
    from deepwml.delivery.dicom_store import TlsFiles

    if not (args.tls or args.tls_ca or args.tls_cert or args.tls_key):
        return None
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)


def _main(argv: Optional[List[str]]) -> int:
    from deepwml.delivery.dicom_store import Destination, send_outputs
    from deepwml.utils.errors import DeepWMLError

    args = build_parser().parse_args(argv)
    destination = Destination.parse(args.to)
    if not args.timeout > 0:
        raise DeepWMLError("--timeout must be a positive number of seconds")
    tls = tls_files(args)
    try:
        import pynetdicom  # noqa: F401
    except ImportError:
        raise DeepWMLError("deepwml_send needs pynetdicom: pip install 'deepwml[dicom]' (or pip install pynetdicom)") from None
    if args.echo:
        from deepwml.delivery.dicom_store import echo

        seconds = echo(destination, args.calling_aet, args.timeout, tls)
        print(f"deepwml_send: {destination} answered C-ECHO from {args.calling_aet} in {1000 * seconds:.0f} ms")
        return 0
    if args.folder is None:
        raise DeepWMLError("give the output folder to send (or --echo to check the node only)")
    report = send_outputs(args.folder, destination, args.calling_aet, args.timeout, args.resend,
                          progress=args.progress or sys.stderr.isatty(), tls=tls)
    if not (report.sent or report.already or report.failed):
        raise DeepWMLError("holds no DICOM object DeepWML wrote (run deepwml_predict with --dicom-seg, --dicom-findings "
                           "or --dicom-sr on DICOM inputs)", args.folder)
    print(report.describe())
    return 1 if report.failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2; objects the node did not take exit 1."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
