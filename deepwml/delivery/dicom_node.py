"""A DICOM node on the hospital network, as clinical lesion tools are wired in: studies arrive from a PACS or a
scanner by C-STORE, each is predicted once nothing more of it has arrived for a while, and DeepWML's DICOM objects
(SEG, findings picture, SR) go back by C-STORE (:mod:`deepwml.delivery.dicom_store`).

The node's folder holds everything it knows, so a restart neither repeats nor forgets work::

    incoming/STUDY_UID/SOP_UID.dcm   what was received, one flat folder per study (the study reader picks the FLAIR)
    studies/STUDY_UID/               deepwml_predict's output folder of that study
    state/STUDY_UID.json             what the node did with the study
    studies.csv                      a row per study: patient, date, instances, outcome, lesions, delivery
    node.log                         every event with its time

A reader's corrections come back the same way: a DICOM SEG of the study's FLAIR series, made by another program than
DeepWML, whose segments are MANUAL or SEMIAUTOMATIC (DeepWML's SEG edited in a PACS viewer, say), arriving in the
study makes the node describe the study again from those outlines (deepwml_predict --lesion-masks) and deliver the
reviewed SEG, findings picture and SR. An AUTOMATIC SEG of another tool is not taken for a reader's.
"""
from __future__ import annotations

import csv
import io
import re
import shutil
import threading
import time
import traceback
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from deepwml.delivery.dicom_store import MANUFACTURER, VERIFICATION, Destination, TlsFiles, check_ae_title, send_outputs
from deepwml.utils.atomic import read_json, write_json, write_text
from deepwml.utils.errors import DeepWMLError

#: a DICOM UID: digits and dots, at most 64 characters; anything else never becomes a file or folder name
UID = re.compile(r"[0-9]+(\.[0-9]+)*")
#: C-STORE statuses the node answers with
STORED, OUT_OF_RESOURCES, CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xC210
STUDIES_COLUMNS = ["study_uid", "patient_id", "study_date", "accession_number", "study_description", "instances",
                   "received_from", "status", "lesion_count", "total_lesion_volume_ml", "series_read", "warning", "error",
                   "prior_study_uid", "prior_study_date", "new_lesions", "enlarging_lesions", "change", "retrieved_for",
                   "delivery", "updated", "lesions_from"]
#: DICOM Segmentation Storage, and the segment algorithm types of a reader's outlines
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
READER_ALGORITHM_TYPES = ("MANUAL", "SEMIAUTOMATIC")
#: what reader_outlines reads of each received file (a study may hold hundreds)
READER_SEG_TAGS = ("SOPClassUID", "Manufacturer", "SegmentSequence", "ReferencedSeriesSequence", "ContentDate",
                   "ContentTime")
#: statuses of a study whose prediction succeeded
PREDICTED = ("done", "predicted", "delivered")
#: longest wait between two delivery attempts to a node that is down
MAX_RETRY_SECONDS = 3600.0


@dataclass
class NodeConfig:
    """How the node listens, when a study is complete, what it does with it and where the results go."""

    folder: Path
    ae_title: str = "DEEPWML"
    port: int = 11112
    bind: str = "0.0.0.0"
    #: calling AE titles allowed to connect (empty: any)
    allowed_callers: Tuple[str, ...] = ()
    #: a study is predicted once nothing of it has arrived for this many seconds
    stable_seconds: float = 30.0
    send_to: Tuple[Destination, ...] = ()
    #: first wait before delivering again to a node that was down; doubled per failure up to an hour
    retry_seconds: float = 60.0
    timeout: float = 30.0
    #: remove a study's received files once it is predicted and delivered
    delete_received: bool = False
    #: instances are refused (out of resources) when the disk has less free space than this
    min_free_bytes: int = 1 << 30
    #: compare each study with the patient's latest earlier study the node predicted (deepwml_compare)
    compare_prior: bool = False
    #: listen over TLS with these files (with a CA: callers must show a certificate it signed)
    tls: Optional[TlsFiles] = None
    #: send the results over TLS with these files (the CA checks the destination, the certificate is ours)
    send_tls: Optional[TlsFiles] = None
    #: with compare_prior: the PACS to ask (C-FIND, C-MOVE or C-GET) for the patient's earlier study the node has not seen
    fetch_prior_from: Optional[Destination] = None
    #: how the prior is retrieved: 'move' (C-MOVE to ae_title: the PACS must know this node) or 'get' (C-GET)
    retrieve: str = "move"


@dataclass
class StudyState:
    """What the node knows and did about one study (state/STUDY_UID.json)."""

    study_uid: str
    patient_id: str = ""
    study_date: str = ""
    accession_number: str = ""
    study_description: str = ""
    instances: int = 0
    received_from: str = ""
    #: 'predicted' (delivery pending), 'delivered', 'done' (nowhere to send), 'failed'
    status: str = ""
    lesion_count: Optional[int] = None
    total_lesion_volume_ml: Optional[float] = None
    series_read: str = ""
    #: what sets the scan apart from the model's training scans (e.g. a 3D 1 mm FLAIR), as deepwml_predict warns
    warning: str = ""
    error: str = ""
    #: the earlier study of the patient this one was compared with, and what changed (or why it could not be)
    prior_study_uid: str = ""
    prior_study_date: str = ""
    new_lesions: Optional[int] = None
    enlarging_lesions: Optional[int] = None
    change: str = ""
    #: the study this one was retrieved from the PACS for, as its prior (its own results are not sent)
    retrieved_for: str = ""
    #: the prior study asked of the PACS for this one and not yet predicted
    awaiting_prior: str = ""
    #: arrival time (epoch seconds) of the newest instance the prediction saw
    received_upto: float = 0.0
    #: destination -> 'delivered' or why not (yet)
    delivery: Dict[str, str] = field(default_factory=dict)
    delivery_attempts: int = 0
    updated: str = ""
    #: the reader's DICOM SEG the lesions were described from ('' for the model's own mask)
    lesions_from: str = ""

    def row(self) -> Dict[str, object]:
        """Its studies.csv row."""
        row = {k: v for k, v in asdict(self).items() if k in STUDIES_COLUMNS}
        row["delivery"] = "; ".join(f"{d}: {what}" for d, what in sorted(self.delivery.items()))
        return row


class DicomNode:
    """Receive studies (C-STORE SCP), predict each complete one with ``work`` (a :class:`StudyWork`), compare it
    with the patient's earlier study when asked, and deliver the results. ``poll`` does the work and is called by
    the listening loop (or a test); the association threads only store files.
    """

    def __init__(self, config: NodeConfig, work: "StudyWork", echo: Callable[[str], None] = print) -> None:
        check_ae_title(config.ae_title, "--aet")
        for title in config.allowed_callers:
            check_ae_title(title, "--allow-aet")
        self.config = config
        self.work = work
        self.echo = echo
        self.folder = Path(config.folder)
        self.incoming, self.studies, self.state_dir = (self.folder / n for n in ("incoming", "studies", "state"))
        for folder in (self.incoming, self.studies, self.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        #: study uid -> arrival time of its newest instance
        self.last_arrival: Dict[str, float] = {}
        self.states: Dict[str, StudyState] = {}
        self._next_delivery: Dict[str, float] = {}
        self._callers: Dict[str, set] = {}
        self._per_association: Dict[int, Counter] = {}
        self.server = None
        self._load()

    # --- what is on disk from before -------------------------------------------------------------------------------
    def _load(self) -> None:
        """Read the studies' states and the arrival times of what was received before a restart."""
        for path in sorted(self.state_dir.glob("*.json")):
            try:
                data = read_json(path)
                state = StudyState(**{k: v for k, v in data.items() if k in StudyState.__dataclass_fields__})
            except Exception as e:  # noqa: BLE001 - a damaged state file: the study is simply predicted again
                self.log(f"note: {path} is unreadable ({str(e).splitlines()[0][:100]}); its study will be predicted again")
                continue
            self.states[state.study_uid] = state
            if state.status == "predicted" and self.config.send_to:
                self._next_delivery[state.study_uid] = 0.0  # delivery left pending before the restart
        for study in sorted(p for p in self.incoming.iterdir() if p.is_dir() and UID.fullmatch(p.name)):
            times = [f.stat().st_mtime for f in study.iterdir() if f.is_file() and not f.name.startswith(".")]
            if times:
                self.last_arrival[study.name] = max(times)
            for stale in study.glob(".*.partial"):  # an instance cut off by a crash: its sender got no success
                stale.unlink(missing_ok=True)

    # --- listening -----------------------------------------------------------------------------------------------
    def start(self) -> int:
        """Listen for associations (in background threads); returns the port (useful with port 0)."""
        from pynetdicom import ALL_TRANSFER_SYNTAXES, AE, AllStoragePresentationContexts, evt

        ae = AE(ae_title=self.config.ae_title)
        ae.require_called_aet = True  # an association addressed to another AE title is not for us
        if self.config.allowed_callers:
            ae.require_calling_aet = list(self.config.allowed_callers)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.config.timeout
        ae.maximum_associations = 4
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        handlers = [(evt.EVT_C_STORE, self._on_store), (evt.EVT_RELEASED, self._on_end), (evt.EVT_ABORTED, self._on_end),
                    (evt.EVT_REJECTED, self._on_rejected)]
        context = self.config.tls.server_context() if self.config.tls is not None else None
        try:
            self.server = ae.start_server((self.config.bind, self.config.port), block=False, evt_handlers=handlers,
                                          ssl_context=context)
        except OSError as e:
            raise DeepWMLError(f"cannot listen on {self.config.bind}:{self.config.port} ({e.strerror or e}); is another "
                               "node using the port, or does a port under 1024 need privileges here?") from None
        port = int(self.server.server_address[1])
        tls = self.config.tls
        over = "" if tls is None else (" over TLS" + (f" (callers' certificates checked against {tls.ca})" if tls.ca else ""))
        self.log(f"listening as {self.config.ae_title} on port {port}{over}; a study is predicted {self.config.stable_seconds:g} s "
                 f"after its last instance" + (f"; results go to {', '.join(map(str, self.config.send_to))}"
                                                if self.config.send_to else "; results stay in the folder"))
        return port

    def stop(self) -> None:
        """Stop listening (open associations are ended)."""
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def _on_store(self, event, source: Optional[str] = None) -> int:
        """Keep one received instance in its study's folder (written whole, then renamed) and note its arrival
        (``source``: who sent it, when that is not the association's caller: a C-GET's sub-operations)."""
        try:
            ds = event.dataset
            study, sop = str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")
            manufacturer = str(ds.get("Manufacturer", "") or "")
        except Exception as e:  # noqa: BLE001 - undecodable: the sender hears it cannot be understood
            self.log(f"refused an instance that cannot be decoded ({str(e).splitlines()[0][:100]})")
            return CANNOT_UNDERSTAND
        if not (UID.fullmatch(study) and UID.fullmatch(sop) and len(study) <= 64 and len(sop) <= 64):
            self.log(f"refused an instance whose Study or SOP Instance UID is not a DICOM UID ({study[:70]!r}, {sop[:70]!r})")
            return CANNOT_UNDERSTAND
        if manufacturer == MANUFACTURER:
            return STORED  # DeepWML's own object routed back to us: taken, not stored, never predicted
        if shutil.disk_usage(self.incoming).free < self.config.min_free_bytes:
            self.log(f"refused an instance of study {study}: less than {self.config.min_free_bytes / 2**30:.1f} GiB free "
                     f"on {self.incoming}")
            return OUT_OF_RESOURCES
        folder = self.incoming / study
        try:
            folder.mkdir(exist_ok=True)
            partial = folder / f".{sop}.partial"
            partial.write_bytes(event.encoded_dataset())
            partial.replace(folder / f"{sop}.dcm")
        except OSError as e:
            self.log(f"could not store an instance of study {study}: {e}")
            return OUT_OF_RESOURCES
        with self._lock:
            self.last_arrival[study] = time.time()
            self._callers.setdefault(study, set()).add(source or _caller(event))
            if source is None:  # a C-GET's instances are counted by the retrieval, which says so when it ends
                self._per_association.setdefault(id(event.assoc), Counter())[study] += 1
        return STORED

    def _on_end(self, event) -> None:
        """Say what an association brought once it ends."""
        with self._lock:
            counts = self._per_association.pop(id(event.assoc), None)
        for study, n in sorted((counts or {}).items()):
            self.log(f"received {n} instance(s) of study {study} from {_caller(event)}")

    def _on_rejected(self, event) -> None:
        self.log(f"rejected an association from {_caller(event)} (calling AE title not allowed, or called AE title "
                 f"not {self.config.ae_title})")

    # --- the work ------------------------------------------------------------------------------------------------
    def poll(self, now: Optional[float] = None) -> int:
        """Predict every study complete by ``now`` and not yet predicted as it is, and deliver what is due; returns
        how many studies were predicted."""
        now = time.time() if now is None else now
        with self._lock:
            arrivals = dict(self.last_arrival)
        predicted = 0
        for study, last in sorted(arrivals.items(), key=lambda kv: kv[1]):
            state = self.states.get(study)
            if now - last < self.config.stable_seconds or (state is not None and state.received_upto >= last):
                continue
            self._predict(study, last)
            predicted += 1
        for study, due in sorted(self._next_delivery.items()):
            if due <= now:
                self._deliver(study)
        return predicted

    def idle(self) -> bool:
        """True when every received study is predicted as it is and every delivery was tried at least once (those
        that failed wait for their retry, or for the next start)."""
        with self._lock:
            arrivals = dict(self.last_arrival)
        waiting = [s for s, last in arrivals.items() if s not in self.states or self.states[s].received_upto < last]
        return not waiting and all(due > 0 for due in self._next_delivery.values())

    def _predict(self, study: str, last: float) -> None:
        """Predict one study as received up to ``last`` and deliver its results."""
        folder = self.incoming / study
        files = [f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")] if folder.is_dir() else []
        state = _describe_study(study, files, self.states.get(study))
        with self._lock:
            callers = sorted(self._callers.get(study, set()))
        state.received_from = ", ".join(callers) or state.received_from
        state.received_upto, state.instances = last, len(files)
        state.error, state.delivery, state.delivery_attempts = "", {}, 0
        shutil.rmtree(self.studies / study / "change", ignore_errors=True)  # a comparison of what the study was
        self.log(f"predicting study {study} ({state.instances} instance(s); patient {state.patient_id or '?'}, "
                 f"{state.study_date or 'no date'}, {state.study_description or 'no description'})")
        started = time.perf_counter()
        try:
            summary = self.work.predict(folder, self.studies / study)
        except Exception as e:  # noqa: BLE001 - one study's failure never stops the node
            state.status, state.error = "failed", str(e).splitlines()[0][:300] if str(e) else type(e).__name__
            if not isinstance(e, DeepWMLError):
                self._append_log(traceback.format_exc())
            self.log(f"study {study} failed: {state.error}")
            self._next_delivery.pop(study, None)
            self._save(state)
            self._prior_ready(state)
            return
        state.lesion_count = int(summary.lesion_count)
        state.total_lesion_volume_ml = round(float(summary.total_lesion_volume_ml), 3)
        state.series_read, state.warning = summary.source_series, summary.acquisition_warning
        state.lesions_from = summary.lesions_from
        # a prior retrieved only to compare another study with: its own results stay here
        state.status = "predicted" if self.config.send_to and not state.retrieved_for else "done"
        self.log(f"study {study}: {state.lesion_count} lesion(s), {state.total_lesion_volume_ml:g} ml "
                 f"({time.perf_counter() - started:.1f} s)" + (f"; caution: {state.warning}" if state.warning else "")
                 + (f"; lesions from the {state.lesions_from} (a reader's DICOM SEG)" if state.lesions_from else ""))
        if self.config.compare_prior and not state.retrieved_for:
            self._compare(state, folder)
        self._save(state)
        self._finish(state)
        self._prior_ready(state)

    def _finish(self, state: StudyState) -> None:
        """Deliver a predicted study's results, or (nowhere to send) forget its received images if asked."""
        if state.status == "predicted":
            self._deliver(state.study_uid)
        elif self.config.delete_received and state.status == "done":
            self._forget_received(state.study_uid)

    def _prior_ready(self, prior: StudyState) -> None:
        """Compare the studies that waited for this retrieved prior (or say why they cannot be), then deliver."""
        for state in [s for s in self.states.values() if s.awaiting_prior == prior.study_uid]:
            state.awaiting_prior = ""
            if prior.status == "failed":
                state.change = f"prior study {prior.study_uid} could not be predicted: {prior.error}"
                self.log(f"study {state.study_uid}: {state.change}")
            else:
                self._compare(state, self.incoming / state.study_uid)
            if self.config.send_to and state.status != "failed":
                state.status, state.delivery, state.delivery_attempts = "predicted", {}, 0  # the change goes out too
            self._save(state)
            self._finish(state)

    def _compare(self, state: StudyState, received: Path) -> None:
        """Compare a predicted study with the patient's latest earlier one, when the node predicted one (else ask
        the PACS for it, when the node may)."""
        prior = self._prior_of(state)
        if prior is None:
            if self.config.fetch_prior_from is not None:
                self._fetch_prior(state)
            return
        state.prior_study_uid, state.prior_study_date = prior.study_uid, prior.study_date
        try:
            change = self.work.compare(self.studies / prior.study_uid, received, self.studies / state.study_uid)
        except Exception as e:  # noqa: BLE001 - the study's own results still go out
            state.change = f"not compared: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}"
            if not isinstance(e, DeepWMLError):
                self._append_log(traceback.format_exc())
            self.log(f"study {state.study_uid}: {state.change}")
            return
        state.new_lesions, state.enlarging_lesions = int(change["new_lesions"]), int(change["enlarging_lesions"])
        state.change = str(change["findings"])
        self.log(f"study {state.study_uid} against {prior.study_uid} of {prior.study_date}: {state.change}")

    def _fetch_prior(self, state: StudyState) -> None:
        """Ask the PACS for the patient's latest earlier MR study and have it sent here (C-FIND, C-MOVE); the study
        waits for it, and is compared once it is predicted."""
        from deepwml.delivery.dicom_retrieve import earlier_studies, get_study, move_study

        if not (state.patient_id and state.study_date):
            return
        source, config = self.config.fetch_prior_from, self.config
        try:
            found = earlier_studies(source, config.ae_title, state.patient_id, state.study_date, config.timeout,
                                    config.send_tls)
        except DeepWMLError as e:
            state.change = f"prior not retrieved: {e}"
            self.log(f"study {state.study_uid}: {state.change}")
            return
        # one the node failed on (no FLAIR, say) would fail again: the next earlier one is asked for instead
        found = [f for f in found if f.study_uid not in self.states or self.states[f.study_uid].status != "failed"]
        if not found:
            self.log(f"study {state.study_uid}: {source} holds no earlier MR study of patient {state.patient_id}")
            return
        prior = found[0]
        placeholder = StudyState(prior.study_uid, patient_id=state.patient_id, study_date=prior.study_date,
                                 study_description=prior.description, status="retrieving",
                                 retrieved_for=state.study_uid)
        self._save(placeholder)
        self.log(f"study {state.study_uid}: asking {source} for the prior study {prior.study_uid} of {prior.study_date}")
        try:
            if config.retrieve == "get":
                count = get_study(source, config.ae_title, prior.study_uid,
                                  lambda event: self._on_store(event, f"{source} (C-GET)"), config.timeout, config.send_tls)
            else:
                count = move_study(source, config.ae_title, prior.study_uid, config.ae_title, config.timeout, config.send_tls)
        except DeepWMLError as e:
            placeholder.status, placeholder.error = "failed", str(e)[:300]
            state.change = f"prior not retrieved: {e}"
            self._save(placeholder)
            self.log(f"study {state.study_uid}: {state.change}")
            return
        state.awaiting_prior, state.prior_study_uid, state.prior_study_date = prior.study_uid, prior.study_uid, prior.study_date
        state.change = "awaiting the prior study from the PACS"
        self.log(f"study {state.study_uid}: {count} instance(s) of the prior study {prior.study_uid} received")

    def _prior_of(self, state: StudyState) -> Optional[StudyState]:
        """The patient's latest study dated before this one whose prediction (and scan) the node keeps."""
        if not (state.patient_id and state.study_date):
            return None
        earlier = [s for s in self.states.values() if s.patient_id == state.patient_id and s.status in PREDICTED
                   and s.study_date and s.study_date < state.study_date and s.study_uid != state.study_uid
                   and scan_path(self.studies / s.study_uid).is_file()]
        return max(earlier, key=lambda s: (s.study_date, s.updated), default=None)

    def _deliver(self, study: str) -> None:
        """Send the study's DICOM outputs (and its comparison's) to every destination that lacks them; on failure
        try again later."""
        state = self.states[study]
        folders = [self.studies / study] + [f for f in [self.studies / study / "change"] if (f / "change.json").is_file()]
        pending = False
        for destination in self.config.send_to:
            if state.delivery.get(str(destination)) == "delivered":
                continue
            sent, why = 0, []
            for outputs in folders:
                try:
                    report = send_outputs(outputs, destination, self.config.ae_title, self.config.timeout,
                                          tls=self.config.send_tls)
                    sent += len(report.sent)
                    why += [f"{p.name}: {reason}" for p, reason in report.failed.items()]
                    if not (report.sent or report.already or report.failed):
                        why.append(f"no DICOM output in {outputs.name}/ to send (the input was not DICOM?)")
                except DeepWMLError as e:
                    why.append(str(e))
                    break
            if why:
                pending = True
                state.delivery[str(destination)] = f"not yet: {'; '.join(why)[:300]}"
                self.log(f"study {study}: delivery to {destination} failed: {'; '.join(why)}")
            else:
                state.delivery[str(destination)] = "delivered"
                self.log(f"study {study}: delivered to {destination} ({sent} object(s))")
        state.delivery_attempts += 1
        if pending:
            wait = min(self.config.retry_seconds * 2 ** (state.delivery_attempts - 1), MAX_RETRY_SECONDS)
            self._next_delivery[study] = time.time() + wait
        else:
            self._next_delivery.pop(study, None)
            state.status = "delivered"
        self._save(state)
        if not pending and self.config.delete_received:
            self._forget_received(study)

    def _forget_received(self, study: str) -> None:
        """Remove a finished study's received files (its results and state stay); not while it waits for a prior,
        whose comparison files results in its series."""
        if self.states[study].awaiting_prior:
            return
        shutil.rmtree(self.incoming / study, ignore_errors=True)
        with self._lock:
            if self.last_arrival.get(study, 0.0) <= self.states[study].received_upto:
                self.last_arrival.pop(study, None)

    # --- records -------------------------------------------------------------------------------------------------
    def _save(self, state: StudyState) -> None:
        """Write the study's state and the studies.csv index (both atomically)."""
        state.updated = datetime.now().isoformat(timespec="seconds")
        self.states[state.study_uid] = state
        write_json(self.state_dir / f"{state.study_uid}.json", asdict(state))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=STUDIES_COLUMNS)
        writer.writeheader()
        for s in sorted(self.states.values(), key=lambda s: (s.updated, s.study_uid)):
            writer.writerow(s.row())
        write_text(self.folder / "studies.csv", buffer.getvalue())
        if state.status == "predicted" and state.study_uid not in self._next_delivery:
            self._next_delivery[state.study_uid] = 0.0  # restart or first attempt: deliver at the next poll

    def log(self, message: str) -> None:
        """One line with the time, to the console and node.log."""
        line = f"{datetime.now():%Y-%m-%d %H:%M:%S} {message}"
        self.echo(line)
        self._append_log(line + "\n")

    def _append_log(self, text: str) -> None:
        with self._lock:
            with open(self.folder / "node.log", "a", encoding="utf-8") as f:
                f.write(text)


def _caller(event) -> str:
    """'AE_TITLE at ADDRESS' of the association's requestor."""
    requestor = event.assoc.requestor
    title = requestor.ae_title
    title = title.decode(errors="replace") if isinstance(title, bytes) else str(title)
    return f"{title.strip()} at {requestor.address}"


def _describe_study(study: str, files: Sequence[Path], before: Optional[StudyState]) -> StudyState:
    """A fresh state of the study with patient, date, accession and description from one of its headers."""
    import pydicom

    state = StudyState(study, received_from=before.received_from if before else "",
                       retrieved_for=before.retrieved_for if before else "")
    for path in list(files)[:5]:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True,
                                 specific_tags=["PatientID", "StudyDate", "AccessionNumber", "StudyDescription"])
        except Exception:  # noqa: BLE001 - try the next file
            continue
        state.patient_id = str(ds.get("PatientID", "") or "")
        state.study_date = str(ds.get("StudyDate", "") or "")
        state.accession_number = str(ds.get("AccessionNumber", "") or "")
        state.study_description = str(ds.get("StudyDescription", "") or "")
        break
    return state


class StudyWork:
    """What the node does with a study, with the options of a deepwml.inference.run.PredictRequest: deepwml_predict's
    run on the study folder (keeping the FLAIR it read beside its mask, so that a later study of the patient can be
    compared with it after the images are gone) and deepwml_compare of two predicted studies."""

    def __init__(self, template) -> None:
        self.template = template

    def predict(self, study: Path, output: Path):
        """Predict one study folder into ``output``; its CaseSummary, or raises with the failed case's reason."""
        from deepwml.imageio import read_image, write_image
        from deepwml.inference.run import predict

        template = self.template
        reviewed = reader_outlines(study, template.series_uid)
        if reviewed is not None:  # the reader's lesions as drawn: the model's mask settings do not apply
            template = replace(template, lesion_masks=reviewed, threshold=None, min_lesion_ml=None, min_lesion_peak=None,
                               min_lesion_contrast=None, min_lesion_spread=None, white_matter_only=False)
        report = predict(replace(template, input=study, output=output, overwrite=True))
        if report.failed:
            raise DeepWMLError(report.failed[0].error)
        scan = read_image(study, self.template.series_uid, dtype=None)  # the series predict read, as stored
        write_image(scan.array, scan.geometry, scan_path(output))
        return report.summaries[0]

    def compare(self, prior: Path, received: Path, study: Path) -> Dict[str, object]:
        """deepwml_compare of an earlier study (its output folder ``prior``, the baseline) with a predicted one (its
        received folder and output folder) into ``study``/change, the DICOM objects filed in the later study's
        series; change.json's content."""
        import os
        import tempfile

        from deepwml.imageio.dicom import chosen_series
        from deepwml.inference.run import model_dir_of
        from deepwml.longitudinal.run import CompareRequest, compare
        from deepwml.planning.plan import Plan

        t = self.template
        plan = Plan.load(model_dir_of(t) / "plans.json").name  # named as deepwml_predict names it in the study's SEG
        series = chosen_series(received, t.series_uid)
        # the follow-up as a folder of the one series predicted: the study folder holds its other series too
        with tempfile.TemporaryDirectory(prefix=".compare_", dir=study.parent) as scratch:
            followup = Path(scratch) / received.name
            followup.mkdir()
            for name in series.files:
                try:
                    os.link(name, followup / Path(name).name)
                except OSError:
                    shutil.copy2(name, followup / Path(name).name)
            before, after = study_outputs(prior), study_outputs(study)
            report = compare(CompareRequest(
                baseline=scan_path(prior), followup=followup, output=study / "change", baseline_mask=before.mask,
                followup_mask=after.mask, followup_lesions=after.lesions, masks_from=masks_made_by(plan, prior, study),
                overwrite=True,
                dicom_seg=t.dicom_seg, dicom_findings=t.dicom_findings, dicom_sr=t.dicom_sr))
        return report.summary


def masks_made_by(plan: str, prior: Path, study: Path) -> str:
    """What made the masks of a prior study and a later one (their output folders), as the change's DICOM objects name
    it: the model, and which of the two masks is a reader's reviewed SEG (summary.csv's lesions_from)."""
    reviewed = []
    for name, output in (("baseline", prior), ("follow-up", study)):
        try:
            with open(output / "summary.csv", newline="") as f:
                if any(row.get("lesions_from") for row in csv.DictReader(f)):
                    reviewed.append(name)
        except OSError:
            continue
    which = "both" if len(reviewed) == 2 else reviewed[0] if reviewed else ""
    return f"DeepWML {plan}" + (f", {which} as reviewed by a reader" if which else "")


def reader_outlines(study: Path, series_uid: Optional[str] = None) -> Optional[Path]:
    """The newest DICOM SEG in the received ``study`` folder that outlines the series deepwml_predict reads there
    (``series_uid``: as --series-uid chooses it) and holds a reader's segments (MANUAL or SEMIAUTOMATIC, not made by
    DeepWML); None when there is none."""
    import pydicom

    from deepwml.imageio.dicom import chosen_series

    candidates = []
    for path in sorted(p for p in study.iterdir() if p.is_file() and not p.name.startswith(".")):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=list(READER_SEG_TAGS))
        except Exception:  # noqa: BLE001 - not DICOM: the study reader says what it makes of it
            continue
        if str(ds.get("SOPClassUID", "")) != SEGMENTATION or str(ds.get("Manufacturer", "") or "") == MANUFACTURER:
            continue
        kinds = {str(item.get("SegmentAlgorithmType", "")).upper() for item in ds.get("SegmentSequence", [])}
        if kinds & set(READER_ALGORITHM_TYPES):
            referenced = {str(item.SeriesInstanceUID) for item in ds.get("ReferencedSeriesSequence", [])}
            when = f"{ds.get('ContentDate', '') or ''}{ds.get('ContentTime', '') or ''}"
            candidates.append((when, path.stat().st_mtime_ns, path, referenced))
    if not candidates:
        return None
    series = chosen_series(study, series_uid).uid
    outlining = [c for c in candidates if series in c[3]]
    return max(outlining)[2] if outlining else None


def study_outputs(output: Path):
    """deepwml_predict's output paths of the study whose output folder is ``output`` (a DICOM case named after its
    received folder, the study UID)."""
    from deepwml.inference.inputs import DICOM_OUTPUT_ENDING, InputCase
    from deepwml.inference.outputs import case_outputs

    return case_outputs(output, InputCase(output.name, output, "dicom", DICOM_OUTPUT_ENDING))


def scan_path(output: Path) -> Path:
    """Where StudyWork keeps the FLAIR a study's prediction read."""
    return output / f"{output.name}_flair.nii.gz"


def listen(node: DicomNode, stop: Callable[[], bool], exit_when_idle: Optional[float] = None,
           tick: float = 1.0) -> None:
    """Poll ``node`` until ``stop()`` is true, or (``exit_when_idle``) once it has been idle for that many seconds."""
    idle_since: Optional[float] = None
    while not stop():
        node.poll()
        if exit_when_idle is not None:
            if node.idle():
                idle_since = idle_since or time.time()
                with node._lock:
                    newest = max(node.last_arrival.values(), default=0.0)
                if time.time() - max(idle_since, newest) >= exit_when_idle:
                    return
            else:
                idle_since = None
        time.sleep(min(tick, max(0.05, node.config.stable_seconds / 4)))


def destinations(texts: List[str]) -> Tuple[Destination, ...]:
    """--send-to values as destinations (each checked)."""
    return tuple(Destination.parse(t, "--send-to") for t in texts)
