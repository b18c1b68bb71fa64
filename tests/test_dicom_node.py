"""deepwml_listen: DeepWML as a DICOM node. A study sent to it by C-STORE is predicted once it is complete and its
DICOM results reach the PACS (a pynetdicom storage SCP in this process); a restart neither repeats nor forgets
work; a PACS that is down gets the results later; what the node must not keep is refused."""
from __future__ import annotations

import csv
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import pydicom
import pytest

from conftest import tiny_case
from deepwml.cli.listen import main as listen_main
from deepwml.delivery.dicom_node import DicomNode, NodeConfig, StudyWork
from deepwml.delivery.dicom_store import Destination
from deepwml.inference.run import PredictRequest
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from test_dicom import UID_ROOT, write_dicom_series

pytest.importorskip("highdicom", reason="DICOM outputs need highdicom (pip install 'deepwml[dicom]')")
pynetdicom = pytest.importorskip("pynetdicom", reason="deepwml_listen needs pynetdicom (pip install 'deepwml[dicom]')")
from test_dicom_send import COMPREHENSIVE_3D_SR, SECONDARY_CAPTURE, SEG, TLS, Pacs, tls_context  # noqa: E402

STUDY = UID_ROOT + "120"
FLAIR, T1 = STUDY + ".1", STUDY + ".2"


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> List[Path]:
    """A study's files as a scanner sends them: a T1 and a FLAIR series (5 slices each)."""
    root = tmp_path_factory.mktemp("study")
    image, _, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), seed=12, n_lesions=5)
    stored = np.round(image * 10).astype(np.int16)
    t1 = write_dicom_series(root / "t1", stored[:, ::-1].copy(), geometry, T1, study_uid=STUDY, description="AX T1 SE")
    flair = write_dicom_series(root / "flair", stored, geometry, FLAIR, study_uid=STUDY, description="AX FLAIR")
    return sorted(t1.iterdir()) + sorted(flair.iterdir())


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return write_model_dir(tmp_path_factory.mktemp("model") / "results" / "Dataset999_Toy" / "tiny", tiny_plan(),
                           folds=(0,), kind="threshold")


def _node(folder: Path, model: Path, **config) -> DicomNode:
    request = PredictRequest(input=Path("."), output=Path("."), model_dir=model, dicom_seg=True, dicom_findings=True,
                             dicom_sr=True, anatomy=False, workers=1)
    config.setdefault("stable_seconds", 0.0)
    return DicomNode(NodeConfig(folder, port=0, **config), StudyWork(request), echo=lambda line: None)


def send(port: int, datasets, calling: str = "SCANNER", called: str = "DEEPWML", tls=None) -> Optional[List[int]]:
    """C-STORE the datasets (file paths or datasets) to the node (over TLS with a TlsFiles); the statuses, or None
    when the association failed."""
    datasets = [d if isinstance(d, pydicom.Dataset) else pydicom.dcmread(d) for d in datasets]
    ae = pynetdicom.AE(ae_title=calling)
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title=called,
                         tls_args=(tls.client_context(), "127.0.0.1") if tls is not None else None)
    if not assoc.is_established:
        return None
    try:
        return [int(assoc.send_c_store(ds).Status) for ds in datasets]
    finally:
        assoc.release()


def _rows(node_folder: Path) -> List[dict]:
    with open(node_folder / "studies.csv", newline="") as f:
        return list(csv.DictReader(f))


def _wait(condition, seconds: float = 10.0) -> None:
    """Until ``condition()``: the node's association threads finish on their own schedule."""
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_study_is_predicted_once_complete_and_its_results_reach_the_pacs(tmp_path, study, model):
    pacs = Pacs()
    node = _node(tmp_path / "node", model, send_to=(Destination.parse(pacs.to()),))
    port = node.start()
    try:
        assert send(port, study) == [0] * len(study)
        _wait(lambda: STUDY in node.last_arrival and len(list((tmp_path / "node" / "incoming" / STUDY).glob("*.dcm"))) == 10)
        # not complete yet: something of it arrived less than --stable-seconds ago
        node.config.stable_seconds = 60.0
        assert node.poll() == 0 and not pacs.received and not node.idle()
        node.config.stable_seconds = 0.0
        assert node.poll() == 1
        # the PACS holds the SEG, findings picture and SR of the FLAIR (not the T1), once
        assert sorted(str(ds.SOPClassUID) for ds in pacs.received) == sorted([SEG, SECONDARY_CAPTURE, COMPREHENSIVE_3D_SR])
        seg = next(ds for ds in pacs.received if str(ds.SOPClassUID) == SEG)
        assert str(seg.StudyInstanceUID) == STUDY
        assert str(seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == FLAIR
        out = tmp_path / "node" / "studies" / STUDY
        with open(out / "summary.csv", newline="") as f:
            summary = next(csv.DictReader(f))
        [row] = _rows(tmp_path / "node")
        assert row["status"] == "delivered" and row["patient_id"] == str(pydicom.dcmread(study[0]).PatientID)
        assert row["instances"] == "10" and row["received_from"] == "SCANNER at 127.0.0.1"
        assert row["lesion_count"] == summary["lesion_count"] and int(row["lesion_count"]) > 0
        assert row["delivery"] == f"{pacs.to()}: delivered" and "'AX FLAIR'" in row["series_read"]
        log = (tmp_path / "node" / "node.log").read_text()
        assert f"received 10 instance(s) of study {STUDY} from SCANNER" in log and "delivered to PACS@" in log
        assert node.poll() == 0 and node.idle() and len(pacs.received) == 3
        # DeepWML's own SEG routed back to the node is taken but neither kept nor predicted
        assert send(port, [seg]) == [0]
        assert node.poll() == 0 and not list((tmp_path / "node" / "incoming" / STUDY).glob(f"{seg.SOPInstanceUID}*"))
    finally:
        node.stop()
    # a restart on the same folder neither predicts nor sends again
    again = _node(tmp_path / "node", model, send_to=(Destination.parse(pacs.to()),))
    port = again.start()
    try:
        assert again.poll() == 0 and again.idle() and len(pacs.received) == 3
        # the study sent again (e.g. a technologist resends it): predicted again, the new results delivered
        assert send(port, study[5:]) == [0] * 5
        _wait(lambda: not again.idle())
        assert again.poll() == 1 and len(pacs.received) == 6
        assert len({str(ds.SOPInstanceUID) for ds in pacs.received}) == 6
    finally:
        again.stop()
        pacs.close()


def test_results_wait_for_a_pacs_that_is_down(tmp_path, study, model):
    destination = Destination.parse(f"PACS@127.0.0.1:{_free_port()}")  # nobody listens there yet
    node = _node(tmp_path / "node", model, send_to=(destination,), retry_seconds=30.0)
    port = node.start()
    try:
        assert send(port, study) == [0] * len(study)
        _wait(lambda: len(list((tmp_path / "node" / "incoming" / STUDY).glob("*.dcm"))) == 10)
        time.sleep(0.1)
        assert node.poll() == 1
        [row] = _rows(tmp_path / "node")
        assert row["status"] == "predicted" and "not yet: no DICOM node answered" in row["delivery"]
        assert node.idle()  # tried once; the retry is due later
    finally:
        node.stop()
    # restarted while the PACS is still down: the pending delivery is tried at the first poll, then after the wait
    again = _node(tmp_path / "node", model, send_to=(destination,), retry_seconds=30.0, delete_received=True)
    assert not again.idle() and again.poll() == 0
    assert "not yet" in _rows(tmp_path / "node")[0]["delivery"] and again.idle()
    pacs = Pacs(port=destination.port)
    try:
        assert again.poll() == 0 and not pacs.received  # not due yet
        assert again.poll(now=time.time() + 31) == 0 and not pacs.received  # the wait doubled after a second failure
        assert again.poll(now=time.time() + 61) == 0 and len(pacs.received) == 3  # 30 s doubled for the 2nd failure
        assert _rows(tmp_path / "node")[0]["status"] == "delivered"
        assert not (tmp_path / "node" / "incoming" / STUDY).exists()  # --delete-received once delivered
        assert (tmp_path / "node" / "studies" / STUDY / f"{STUDY}_seg.dcm").is_file()
        assert again.poll(now=time.time() + 3600) == 0 and len(pacs.received) == 3
    finally:
        pacs.close()


def test_a_study_that_cannot_be_predicted_is_recorded_and_not_retried(tmp_path, study, model):
    node = _node(tmp_path / "node", model, delete_received=True)
    port = node.start()
    try:
        ct = pydicom.dcmread(study[-1])  # a slice of another modality in a study of its own
        ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID = UID_ROOT + "121", UID_ROOT + "121.1", UID_ROOT + "121.1.1"
        ct.SOPClassUID, ct.Modality = "1.2.840.10008.5.1.4.1.1.2", "CT"
        ct.file_meta.MediaStorageSOPClassUID, ct.file_meta.MediaStorageSOPInstanceUID = ct.SOPClassUID, ct.SOPInstanceUID
        assert send(port, [ct]) == [0]
        _wait(lambda: UID_ROOT + "121" in node.last_arrival)
        assert node.poll() == 1 and node.poll() == 0 and node.idle()
        [row] = _rows(tmp_path / "node")
        assert row["status"] == "failed" and row["study_uid"] == UID_ROOT + "121"
        assert "not an MR image (CT Image Storage)" in row["error"], row["error"]
        assert f"study {UID_ROOT}121 failed: " in (tmp_path / "node" / "node.log").read_text()
        assert (tmp_path / "node" / "incoming" / (UID_ROOT + "121")).is_dir()  # kept for a look, even if deleting
    finally:
        node.stop()


def test_the_node_refuses_callers_and_instances_it_must_not_take(tmp_path, study, model):
    node = _node(tmp_path / "node", model, allowed_callers=("SCANNER",))
    port = node.start()
    try:
        assert send(port, study[:1], calling="INTRUDER") is None
        assert send(port, study[:1], called="OTHERNODE") is None
        # a UID that would be a path outside the folder
        evil = pydicom.dcmread(study[0])
        evil.StudyInstanceUID = "../../escape"
        assert send(port, [evil]) == [0xC210]
        node.config.min_free_bytes = 1 << 62  # the disk is full
        assert send(port, study[:1]) == [0xA700]
        _wait(lambda: "less than" in (tmp_path / "node" / "node.log").read_text())
        assert not list((tmp_path / "node").rglob("*.dcm")) and not (tmp_path / "escape").exists()
        log = (tmp_path / "node" / "node.log").read_text()
        assert "rejected an association from INTRUDER" in log and "is not a DICOM UID" in log
    finally:
        node.stop()


def _start(args: List[str], folder: Path) -> tuple:
    """deepwml_listen as installed, in its own process; returns it and the port its first line names."""
    process = subprocess.Popen([sys.executable, "-m", "deepwml.cli.listen", str(folder), "--port", "0", *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=os.getcwd())
    line = process.stdout.readline()
    match = re.search(r"listening as \S+ on port (\d+)", line)
    assert match, line + process.stderr.read()
    return process, int(match.group(1))


def test_the_command_serves_until_idle_or_stopped(tmp_path, study, model):
    pacs = Pacs()
    try:
        process, port = _start(["-m", str(model), "--stable-seconds", "0.5", "--exit-when-idle", "1", "--outputs", "seg",
                                "--no-anatomy", "--compare-prior", "--send-to", pacs.to()], tmp_path / "node")
        assert send(port, study) == [0] * len(study)
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        assert [str(ds.SOPClassUID) for ds in pacs.received] == [SEG]
        assert "delivered to PACS@" in out and out.rstrip().endswith("stopped (idle)")
    finally:
        pacs.close()
    # stopped by SIGTERM (as a service manager stops it): a clean exit
    process, port = _start(["-m", str(model)], tmp_path / "node")
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0 and out.rstrip().endswith("stopped"), err


def test_user_errors_are_one_line_each(tmp_path, model, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases = [(["--send-to", "PACS@host"], "--send-to 'PACS@host': expected AE_TITLE@HOST:PORT"),
                 (["--stable-seconds", "-1"], "--stable-seconds must be a non-negative number"),
                 (["--aet", "A" * 17], "--aet: AE title"),
                 (["--bind", "127.0.0.1", "--port", str(busy.getsockname()[1])], "cannot listen on 127.0.0.1:"),
                 (["-m", str(tmp_path / "missing")], "missing"),
                 (["--tls-ca", str(TLS / "ca.pem")], "--tls-ca needs --tls-cert and --tls-key"),
                 (["--tls-cert", str(TLS / "node.pem")], "--tls-cert and --tls-key go together"),
                 (["--tls-cert", str(TLS / "ca.pem"), "--tls-key", str(TLS / "node.key")], "ca.pem: cannot be used for TLS"),
                 (["--send-tls"], "--send-tls needs --send-to or --fetch-prior"),
                 (["--fetch-prior", "PACS@127.0.0.1:104"], "--fetch-prior fetches studies to compare with"),
                 (["--retrieve", "get"], "--retrieve says how --fetch-prior retrieves a study")]
        for extra, message in cases:
            args = [str(tmp_path / "node"), "-m", str(model), *extra] if "-m" not in extra else [str(tmp_path / "node"), *extra]
            assert listen_main(args) == 2, extra
            err = capsys.readouterr().err
            assert message in err and len(err.strip().splitlines()) == 1, err


def _visit(folder: Path, image, geometry, study: str, date: str, patient: str) -> List[Path]:
    """A patient's study on ``date``: the FLAIR and a T1 series; its files."""
    tags = {"0008|0020": date, "0010|0020": patient}
    flair = write_dicom_series(folder / "flair", np.clip(image, 0, None) * 10, geometry, study + ".1", study_uid=study,
                               extra_tags=tags)
    t1 = write_dicom_series(folder / "t1", np.clip(image[::-1], 0, None) * 7, geometry, study + ".2", study_uid=study,
                            description="AX T1 SE", extra_tags={"0018|0081": "12", **tags})
    return sorted(flair.iterdir()) + sorted(t1.iterdir())


def _comparing_node(folder: Path, pacs: Pacs) -> DicomNode:
    """A node with the shipped model and all three DICOM outputs, comparing with priors, deleting what it received
    once delivered to ``pacs``."""
    request = PredictRequest(input=Path("."), output=Path("."), dicom_seg=True, dicom_findings=True, dicom_sr=True,
                             workers=1)
    return DicomNode(NodeConfig(folder, port=0, stable_seconds=0.0, compare_prior=True, delete_received=True,
                                send_to=(Destination.parse(pacs.to()),)), StudyWork(request), echo=lambda line: None)


def test_a_follow_up_is_compared_with_the_patient_s_prior_study(tmp_path):
    """--compare-prior: a patient's later study is compared with the latest earlier one the node predicted (not
    with another patient's), after the earlier study's images are gone (--delete-received); the change's SEG,
    findings picture and SR go to the PACS beside the study's own, filed in the later study."""
    from test_longitudinal import phantom_head, two_visits

    _, base, follow, _ = two_visits(tmp_path)
    head, _, head_geometry = phantom_head()  # the same head as a 1.5 mm 3D scan

    def write(name: str, image, geometry, study: str, date: str, patient: str) -> List[Path]:
        return _visit(tmp_path / name, image, geometry, study, date, patient)

    prior, other, later, older = UID_ROOT + "130", UID_ROOT + "131", UID_ROOT + "132", UID_ROOT + "133"
    pacs = Pacs()
    node = _comparing_node(tmp_path / "node", pacs)
    port = node.start()
    try:
        for files in (write("v1", base.image, base.geometry, prior, "20240110", "PAT9"),
                      write("x", base.image, base.geometry, other, "20240601", "PAT5"),  # another patient, in between
                      write("v2", follow.image, follow.geometry, later, "20250110", "PAT9"),
                      write("v0", head, head_geometry, older, "20230110", "PAT9")):  # an older 3D scan sent last
            assert send(port, files) == [0] * len(files)
            _wait(lambda: not node.idle())
            assert node.poll() == 1
    finally:
        node.stop()
        pacs.close()
    rows = {row["study_uid"]: row for row in _rows(tmp_path / "node")}
    assert rows[prior]["prior_study_uid"] == rows[other]["prior_study_uid"] == ""  # nothing earlier of theirs
    assert rows[older]["prior_study_uid"] == ""  # the studies the node holds are all later than it
    # what deepwml_predict warns of a scan unlike the training scans reaches the record (the phantom's 1.5 mm pixels
    # are coarser than any the model learned, so every study here has a warning of its own)
    assert "slices 1.5 mm thick" in rows[older]["warning"] and "thick" not in rows[later]["warning"]
    row = rows[later]
    assert row["status"] == "delivered" and row["prior_study_uid"] == prior and row["prior_study_date"] == "20240110"
    change = (tmp_path / "node" / "studies" / later / "change" / "change.json").read_text()
    import json

    summary = json.loads(change)
    assert row["change"] == summary["findings"] and int(row["new_lesions"]) == summary["new_lesions"] >= 1
    assert summary["registration"]["correlation"] > 0.9
    # 3 objects per study, and the change's 3, filed in the later study and made on its FLAIR series
    assert len(pacs.received) == 15
    later_objects = [ds for ds in pacs.received if str(ds.StudyInstanceUID) == later]
    assert len(later_objects) == 6
    change_seg = next(ds for ds in later_objects if str(ds.SOPClassUID) == SEG and "change" in str(ds.SeriesDescription))
    assert str(change_seg.ReferencedSeriesSequence[0].SeriesInstanceUID) == later + ".1"
    own_seg = next(ds for ds in later_objects if str(ds.SOPClassUID) == SEG and ds is not change_seg)
    assert change_seg.ManufacturerModelName == own_seg.ManufacturerModelName  # the model that segmented both visits
    assert not (tmp_path / "node" / "incoming" / prior).exists()  # compared from what the node kept of it


def test_over_tls_only_callers_with_a_certificate_of_the_ca_are_heard_and_results_go_out_over_tls(tmp_path, study, model):
    from deepwml.delivery.dicom_store import TlsFiles

    files = TlsFiles(TLS / "node.pem", TLS / "node.key", TLS / "ca.pem")
    pacs = Pacs(ssl_context=tls_context())
    node = _node(tmp_path / "node", model, send_to=(Destination.parse(pacs.to()),), tls=files, send_tls=files)
    port = node.start()
    try:
        assert send(port, study[:2]) is None  # plain DICOM
        assert send(port, study[:2], tls=TlsFiles(TLS / "rogue.pem", TLS / "rogue.key", TLS / "ca.pem")) is None
        assert send(port, study, tls=files) == [0] * len(study)
        _wait(lambda: not node.idle())
        assert node.poll() == 1 and len(pacs.received) == 3
        assert _rows(tmp_path / "node")[0]["instances"] == "10"  # nothing of the refused callers was kept
        assert "over TLS (callers' certificates checked against" in (tmp_path / "node" / "node.log").read_text()
    finally:
        node.stop()
        pacs.close()


class Archive:
    """A PACS's study-root query/retrieve SCP holding earlier studies; it moves a study to the AE titles it knows,
    and with ``get`` also hands it out by C-GET (``extra``: instances of other SOP classes the study holds too)."""

    def __init__(self, files: List[Path], known: dict, ct_studies: tuple = (), get: bool = False,
                 extra: tuple = ()) -> None:
        from deepwml.delivery.dicom_retrieve import STUDY_ROOT_FIND, STUDY_ROOT_GET, STUDY_ROOT_MOVE

        self.datasets = [pydicom.dcmread(f) for f in files] + list(extra)
        self.known, self.moved, self.got, self.ct_studies = known, [], [], ct_studies  # (patient, uid, date): CT, found only
        ae = pynetdicom.AE(ae_title="ARCHIVE")
        ae.add_supported_context(STUDY_ROOT_FIND)
        ae.add_supported_context(STUDY_ROOT_MOVE)
        for sop_class in sorted({str(ds.SOPClassUID) for ds in self.datasets}):
            ae.add_requested_context(sop_class)  # for the C-STORE sub-operations of a move
            if get:  # ... and of a get, on the caller's association (SCP/SCU role selection)
                ae.add_supported_context(sop_class, scu_role=True, scp_role=True)
        handlers = [(pynetdicom.evt.EVT_C_FIND, self._find), (pynetdicom.evt.EVT_C_MOVE, self._move)]
        if get:
            ae.add_supported_context(STUDY_ROOT_GET)
            handlers.append((pynetdicom.evt.EVT_C_GET, self._get))
        self.server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=handlers)
        self.port = self.server.server_address[1]

    def _find(self, event):
        query = event.identifier
        last = str(query.StudyDate).lstrip("-")
        studies = {str(ds.StudyInstanceUID): ds for ds in self.datasets
                   if ds.PatientID == query.PatientID and str(ds.StudyDate) <= last}
        for uid, ds in studies.items():
            answer = pydicom.Dataset()
            answer.QueryRetrieveLevel, answer.PatientID, answer.StudyInstanceUID = "STUDY", ds.PatientID, uid
            answer.StudyDate, answer.ModalitiesInStudy, answer.StudyDescription = ds.StudyDate, ["MR", "SR"], ""
            yield 0xFF00, answer
        for patient, uid, date in self.ct_studies:
            if patient == query.PatientID and date <= last:
                answer = pydicom.Dataset()
                answer.QueryRetrieveLevel, answer.PatientID, answer.StudyInstanceUID = "STUDY", patient, uid
                answer.StudyDate, answer.ModalitiesInStudy, answer.StudyDescription = date, "CT", "CT HEAD"
                yield 0xFF00, answer

    def _move(self, event):
        destination = event.move_destination
        destination = (destination.decode() if isinstance(destination, bytes) else str(destination)).strip()
        if destination not in self.known:
            yield None, None
            return
        yield self.known[destination]
        matching = [ds for ds in self.datasets if ds.StudyInstanceUID == event.identifier.StudyInstanceUID]
        self.moved.append(str(event.identifier.StudyInstanceUID))
        yield len(matching)
        for ds in matching:
            yield 0xFF00, ds

    def _get(self, event):
        matching = [ds for ds in self.datasets if ds.StudyInstanceUID == event.identifier.StudyInstanceUID]
        self.got.append(str(event.identifier.StudyInstanceUID))
        yield len(matching)
        for ds in matching:
            yield 0xFF00, ds

    def to(self) -> str:
        return f"ARCHIVE@127.0.0.1:{self.port}"


def test_the_prior_study_is_retrieved_from_the_pacs_when_the_node_has_none(tmp_path):
    """--fetch-prior: a patient's first study at the node makes it ask the PACS for the latest earlier MR study
    (C-FIND; not a later CT, not an older MR), have it sent (C-MOVE), predict it without sending its results, and compare; the study's own results go
    out at once, the change's once the prior is in."""
    from deepwml.delivery.dicom_retrieve import move_study
    from deepwml.utils.errors import DeepWMLError
    from test_longitudinal import two_visits

    _, base, follow, _ = two_visits(tmp_path)
    prior, oldest, later = UID_ROOT + "150", UID_ROOT + "151", UID_ROOT + "152"
    archived = (_visit(tmp_path / "p", base.image, base.geometry, prior, "20240110", "PAT9")
                + _visit(tmp_path / "o", base.image, base.geometry, oldest, "20200110", "PAT9"))
    pacs = Pacs()
    node = _comparing_node(tmp_path / "node", pacs)
    port = node.start()
    # a head CT between the two MR studies, which is not what a FLAIR is compared with
    archive = Archive(archived, {"DEEPWML": ("127.0.0.1", port)}, ct_studies=(("PAT9", UID_ROOT + "153", "20241201"),))
    node.config.fetch_prior_from = Destination.parse(archive.to())
    try:
        with pytest.raises(DeepWMLError, match="does not know the move destination 'NOBODY'"):
            move_study(node.config.fetch_prior_from, "DEEPWML", prior, "NOBODY")
        files = _visit(tmp_path / "l", follow.image, follow.geometry, later, "20250110", "PAT9")
        assert send(port, files) == [0] * len(files)
        _wait(lambda: not node.idle())
        assert node.poll() == 1  # the study; its prior asked for and received meanwhile
        assert archive.moved == [prior] and len(pacs.received) == 3  # the latest earlier one; the study's own results
        rows = {row["study_uid"]: row for row in _rows(tmp_path / "node")}
        assert rows[later]["change"] == "awaiting the prior study from the PACS"
        assert (tmp_path / "node" / "incoming" / later).is_dir()  # kept: the change is filed in its series
        assert node.poll() == 1 and node.idle()  # the prior, then the comparison and its delivery
    finally:
        node.stop()
        archive.server.shutdown()
        pacs.close()
    rows = {row["study_uid"]: row for row in _rows(tmp_path / "node")}
    assert rows[prior]["retrieved_for"] == later and rows[prior]["status"] == "done" and rows[prior]["delivery"] == ""
    row = rows[later]
    assert row["status"] == "delivered" and row["prior_study_uid"] == prior and int(row["new_lesions"]) >= 1
    assert len(pacs.received) == 6 and {str(ds.StudyInstanceUID) for ds in pacs.received} == {later}
    assert not (tmp_path / "node" / "incoming" / later).exists() and not (tmp_path / "node" / "incoming" / prior).exists()


def _report_of(study_uid: str, patient: str) -> pydicom.Dataset:
    """A basic text SR in a study, as PACS hold beside the images (not an MR image: a C-GET does not take it)."""
    ds = pydicom.Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.11", UID_ROOT + "160.1"
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.PatientID = study_uid, UID_ROOT + "160", patient
    ds.Modality, ds.StudyDate = "SR", "20240110"
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    return ds


def test_with_retrieve_get_the_prior_comes_by_c_get_from_a_pacs_that_knows_no_move_destination(tmp_path):
    """--retrieve get: the prior's MR images come back on the node's own association (C-GET), so a PACS that has
    no move destination for the node still serves it; the study's report (an SR) is declined, not stored; the row
    says who sent the prior; a PACS without C-GET is named in the study's change column."""
    from deepwml.delivery.dicom_retrieve import get_study
    from deepwml.utils.errors import DeepWMLError
    from test_longitudinal import two_visits

    _, base, follow, _ = two_visits(tmp_path)
    prior, later = UID_ROOT + "155", UID_ROOT + "156"
    archived = _visit(tmp_path / "p", base.image, base.geometry, prior, "20240110", "PAT7")
    archive = Archive(archived, {}, get=True, extra=(_report_of(prior, "PAT7"),))
    no_get = Archive(archived, {})
    pacs = Pacs()
    node = _comparing_node(tmp_path / "node", pacs)
    node.config.fetch_prior_from, node.config.retrieve = Destination.parse(archive.to()), "get"
    port = node.start()
    try:
        with pytest.raises(DeepWMLError, match="does not offer study root C-GET"):
            get_study(Destination.parse(no_get.to()), "DEEPWML", prior, lambda event: 0)
        files = _visit(tmp_path / "l", follow.image, follow.geometry, later, "20250110", "PAT7")
        assert send(port, files) == [0] * len(files)
        _wait(lambda: not node.idle())
        assert node.poll() == 1 and archive.got == [prior] and archive.moved == []
        assert sorted(p.name for p in (tmp_path / "node" / "incoming" / prior).iterdir()) == sorted(
            f"{pydicom.dcmread(f).SOPInstanceUID}.dcm" for f in archived)  # the MR images; not the report
        assert node.poll() == 1 and node.idle()  # the prior, then the comparison and its delivery
    finally:
        node.stop()
        archive.server.shutdown()
        no_get.server.shutdown()
        pacs.close()
    rows = {row["study_uid"]: row for row in _rows(tmp_path / "node")}
    assert rows[prior]["retrieved_for"] == later and rows[prior]["received_from"] == f"{archive.to()} (C-GET)"
    assert rows[later]["status"] == "delivered" and rows[later]["prior_study_uid"] == prior
    assert int(rows[later]["new_lesions"]) >= 1
    log = (tmp_path / "node" / "node.log").read_text()
    assert f"{len(archived)} instance(s) of the prior study {prior} received" in log


def _reader_seg(flair_folder: Path, mask: np.ndarray, manufacturer: str = "ReaderViewer", reviewed: bool = True,
                when: str = "120000") -> pydicom.Dataset:
    """A DICOM SEG of the FLAIR series as a viewer stores a reader's outlines (SEMIAUTOMATIC; AUTOMATIC when not
    ``reviewed``: another tool's own segmentation)."""
    from deepwml.inference.dicom_seg import build_dicom_seg, source_headers

    seg = build_dicom_seg(mask, source_headers(flair_folder), "reader", reviewed=reviewed)
    seg.Manufacturer, seg.ContentDate, seg.ContentTime = manufacturer, "20261207", when
    return seg


def test_a_reader_s_corrected_seg_makes_the_node_report_the_study_again_from_it(tmp_path, study, model):
    """The reader corrects DeepWML's outlines in a viewer, which sends its SEG to the node: the study is described
    again from those outlines (deepwml_predict --lesion-masks) and the reviewed SEG (SEMIAUTOMATIC), findings picture
    and SR reach the PACS; studies.csv says where the lesions came from."""
    from scipy import ndimage

    from deepwml.delivery.dicom_node import study_outputs
    from deepwml.imageio import read_image

    pacs = Pacs()
    node = _node(tmp_path / "node", model, send_to=(Destination.parse(pacs.to()),))
    port = node.start()
    try:
        assert send(port, study) == [0] * len(study)
        _wait(lambda: len(list((tmp_path / "node" / "incoming" / STUDY).glob("*.dcm"))) == 10)
        assert node.poll() == 1 and len(pacs.received) == 3
        out = tmp_path / "node" / "studies" / STUDY
        model_mask = read_image(study_outputs(out).mask, dtype=None).array > 0
        labels, n = ndimage.label(model_mask)
        assert n > 1
        corrected = model_mask & (labels != 1)  # the reader removes one lesion
        seg = _reader_seg(study[5].parent, corrected.astype(np.uint8))
        assert send(port, [seg]) == [0]
        _wait(lambda: not node.idle())
        assert node.poll() == 1 and len(pacs.received) == 6
        np.testing.assert_array_equal(read_image(study_outputs(out).mask, dtype=None).array > 0, corrected)
        new_seg = [ds for ds in pacs.received[3:] if str(ds.SOPClassUID) == SEG][0]
        assert new_seg.SegmentSequence[0].SegmentAlgorithmType == "SEMIAUTOMATIC"
        [row] = _rows(tmp_path / "node")
        assert row["lesions_from"] == f"reviewed mask {seg.SOPInstanceUID}.dcm"
        assert int(row["lesion_count"]) == ndimage.label(corrected, structure=np.ones((3, 3, 3)))[1]
        assert "(a reader's DICOM SEG)" in (tmp_path / "node" / "node.log").read_text()
    finally:
        node.stop()
        pacs.close()


def test_the_reader_s_outlines_are_the_newest_reader_seg_of_the_flair_series(tmp_path, study):
    """Another tool's AUTOMATIC SEG and a reader's SEG of another series are not a reader's outlines of the FLAIR;
    of two readers' SEGs, the newer counts."""
    import shutil

    from deepwml.delivery.dicom_node import reader_outlines

    folder = tmp_path / "incoming"
    folder.mkdir()
    for path in study:
        shutil.copy(path, folder / path.name)
    mask = np.zeros((5, 64, 56), np.uint8)
    mask[2, 20:25, 20:25] = 1
    assert reader_outlines(folder) is None
    _reader_seg(study[5].parent, mask, "OtherAI", reviewed=False).save_as(folder / "auto.dcm")
    _reader_seg(study[0].parent, mask).save_as(folder / "t1_reader.dcm")  # outlines the T1
    assert reader_outlines(folder) is None
    _reader_seg(study[5].parent, mask, when="090000").save_as(folder / "early.dcm")
    _reader_seg(study[5].parent, mask, when="170000").save_as(folder / "late.dcm")
    assert reader_outlines(folder) == folder / "late.dcm"


def test_the_change_objects_name_a_reader_s_mask_beside_the_model(tmp_path):
    """With --compare-prior, the change's DICOM objects name what made the two masks: the model, and which of them is a
    reader's reviewed SEG (the study's summary.csv says lesions_from)."""
    from deepwml.delivery.dicom_node import masks_made_by

    prior, study = tmp_path / "prior", tmp_path / "study"
    for folder in (prior, study):
        folder.mkdir()
        (folder / "summary.csv").write_text("case_id,status\nx,ok\n")
    assert masks_made_by("cpu_fast", prior, study) == "DeepWML cpu_fast"
    (study / "summary.csv").write_text("case_id,status,lesions_from\nx,ok,reviewed mask 1.2.3.dcm\n")
    assert masks_made_by("cpu_fast", prior, study) == "DeepWML cpu_fast, follow-up as reviewed by a reader"
    (prior / "summary.csv").write_text("case_id,status,lesions_from\nx,ok,reviewed mask 1.2.2.dcm\n")
    assert masks_made_by("cpu_fast", prior, study) == "DeepWML cpu_fast, both as reviewed by a reader"
