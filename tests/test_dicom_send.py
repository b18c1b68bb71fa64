"""deepwml_send: DeepWML's DICOM outputs reach a DICOM node by C-STORE (a pynetdicom storage SCP in this process
stands for the PACS); only DeepWML's own objects leave the folder, a second run sends only what did not arrive, and
every way the node can fail says so."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, List

import numpy as np
import pydicom
import pytest

from conftest import tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.cli.send import main as send_main
from deepwml.delivery.dicom_store import LEDGER_NAME, VERIFICATION, Destination
from deepwml.utils.errors import DeepWMLError
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from test_dicom import UID_ROOT, write_dicom_series

pytest.importorskip("highdicom", reason="DICOM outputs need highdicom (pip install 'deepwml[dicom]')")
pynetdicom = pytest.importorskip("pynetdicom", reason="deepwml_send needs pynetdicom (pip install 'deepwml[dicom]')")

SEG, SECONDARY_CAPTURE, COMPREHENSIVE_3D_SR = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.7",
                                               "1.2.840.10008.5.1.4.1.1.88.34")


class Pacs:
    """A storage SCP on localhost that keeps what it receives; ``status`` decides its answer per SOP class."""

    def __init__(self, ae_title: str = "PACS", status: Dict[str, int] = None, require_called: bool = True,
                 port: int = 0, ssl_context=None) -> None:
        self.received: List[pydicom.Dataset] = []
        self.status = status or {}
        ae = pynetdicom.AE(ae_title=ae_title)
        ae.require_called_aet = require_called
        for sop_class in (SEG, SECONDARY_CAPTURE, COMPREHENSIVE_3D_SR):
            ae.add_supported_context(sop_class, pynetdicom.ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(VERIFICATION)
        self.server = ae.start_server(("127.0.0.1", port), block=False, ssl_context=ssl_context,
                                      evt_handlers=[(pynetdicom.evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]
        self.closed = False

    def close(self) -> None:
        """Stop listening (once)."""
        if not self.closed:
            self.server.shutdown()
            self.closed = True

    def _store(self, event) -> int:
        ds = event.dataset
        ds.file_meta = event.file_meta
        code = self.status.get(str(ds.SOPClassUID), 0x0000)
        if code == 0x0000:
            self.received.append(ds)
        return code

    def to(self, title: str = "PACS") -> str:
        return f"{title}@127.0.0.1:{self.port}"


@pytest.fixture
def pacs():
    node = Pacs()
    yield node
    node.close()


@pytest.fixture
def outputs(tmp_path) -> Path:
    """A deepwml_predict output folder of one DICOM series with its SEG, findings picture and SR, and a reader's own
    DICOM file (a copy of a scan slice named like an output) that must never be sent."""
    image, _, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), seed=4, n_lesions=5)
    series = write_dicom_series(tmp_path / "dicom" / "p7", np.round(image * 10).astype(np.int16), geometry, UID_ROOT + "98.1")
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    out = tmp_path / "out"
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model), "--dicom-seg", "--dicom-findings",
                         "--dicom-sr"]) == 0
    shutil.copy(next(series.iterdir()), out / "reader_seg.dcm")
    return out


def _uids(folder: Path, names) -> set:
    return {str(pydicom.dcmread(folder / n, stop_before_pixels=True).SOPInstanceUID) for n in names}


def test_the_outputs_reach_the_node_once_and_only_deepwml_s_own(outputs, pacs, capsys):
    assert send_main([str(outputs), "--to", pacs.to()]) == 0
    assert "3 object(s) sent to PACS@127.0.0.1" in capsys.readouterr().out
    ours = ["p7_seg.dcm", "p7_findings.dcm", "p7_sr.dcm"]
    assert {str(ds.SOPInstanceUID) for ds in pacs.received} == _uids(outputs, ours)
    assert {str(ds.SOPClassUID) for ds in pacs.received} == {SEG, SECONDARY_CAPTURE, COMPREHENSIVE_3D_SR}
    # the node got the objects whole: the SEG's frames as written
    seg = next(ds for ds in pacs.received if str(ds.SOPClassUID) == SEG)
    assert np.array_equal(seg.pixel_array, pydicom.dcmread(outputs / "p7_seg.dcm").pixel_array)
    # a second run sends nothing; --resend sends all three again
    assert send_main([str(outputs), "--to", pacs.to()]) == 0
    out = capsys.readouterr().out
    assert "0 object(s) sent to PACS@127.0.0.1" in out and "3 sent before" in out
    assert len(pacs.received) == 3
    assert send_main([str(outputs), "--to", pacs.to(), "--resend", "--progress"]) == 0
    assert len(pacs.received) == 6 and "deepwml_send: 100%" in capsys.readouterr().err
    assert (outputs / LEDGER_NAME).is_file()


def test_a_refused_object_fails_the_run_and_is_sent_by_the_next(outputs, capsys):
    node = Pacs(status={COMPREHENSIVE_3D_SR: 0xA700})  # out of resources, for SRs only
    try:
        assert send_main([str(outputs), "--to", node.to()]) == 1
        out = capsys.readouterr().out
        assert "2 object(s) sent" in out and "1 failed: p7_sr.dcm: the node refused it (C-STORE status 0xA700)" in out
        node.status.clear()
        assert send_main([str(outputs), "--to", node.to()]) == 0
        assert "1 object(s) sent to PACS@127.0.0.1" in capsys.readouterr().out
        assert sorted(str(ds.SOPClassUID) for ds in node.received) == sorted([SEG, SECONDARY_CAPTURE, COMPREHENSIVE_3D_SR])
    finally:
        node.close()


def test_what_a_node_that_cannot_be_reached_or_refuses_says(outputs, pacs, capsys):
    # the node's AE title is not the one called
    assert send_main([str(outputs), "--to", pacs.to("ORTHANC")]) == 2
    assert "rejected the association: is 'ORTHANC' its AE title" in capsys.readouterr().err
    # nothing listens on the port any more
    port = pacs.port
    pacs.close()
    assert send_main([str(outputs), "--to", f"PACS@127.0.0.1:{port}", "--timeout", "5"]) == 2
    assert f"no DICOM node answered at 127.0.0.1:{port}" in capsys.readouterr().err
    assert not (outputs / LEDGER_NAME).exists()
    # user errors: the address, the AE title, a folder without DeepWML objects
    for args, message in ((["--to", "PACS@host"], "expected AE_TITLE@HOST:PORT"),
                          (["--to", "PACS@host:70000"], "port 70000 is not 1-65535"),
                          (["--to", "A_TITLE_FAR_TOO_LONG@host:104"], "must be 1-16 printable ASCII"),
                          (["--to", "PACS@host:104", "--calling-aet", "BAD\\AET"], "must be 1-16 printable ASCII")):
        assert send_main([str(outputs), *args]) == 2
        assert message in capsys.readouterr().err
    empty = outputs.parent / "empty"
    empty.mkdir()
    assert send_main([str(empty), "--to", "PACS@127.0.0.1:104"]) == 2
    assert "holds no DICOM object DeepWML wrote" in capsys.readouterr().err


def test_destination_parsing():
    assert Destination.parse(" PACS@10.0.0.5:104 ") == Destination("PACS", "10.0.0.5", 104)
    assert str(Destination.parse("MY AE@pacs.hospital.org:11112")) == "MY AE@pacs.hospital.org:11112"
    with pytest.raises(DeepWMLError):
        Destination.parse("@host:104")


def test_echo_checks_the_node_and_sends_nothing(pacs, tmp_path, capsys):
    assert send_main(["--echo", "--to", pacs.to()]) == 0
    assert f"PACS@127.0.0.1:{pacs.port} answered C-ECHO from DEEPWML in" in capsys.readouterr().out
    assert not pacs.received
    assert send_main(["--echo", "--to", pacs.to("WRONG")]) == 2
    assert "rejected the association" in capsys.readouterr().err
    assert send_main(["--to", pacs.to()]) == 2
    assert "give the output folder to send (or --echo" in capsys.readouterr().err


TLS = Path(__file__).parent / "data" / "tls"  # test-only certificates (scripts/make_test_tls.sh); the keys are public


def tls_context(cert: str = "node", ca: str = "ca"):
    """A server's TLS context with a test certificate, requiring callers' certificates signed by ``ca``."""
    from deepwml.delivery.dicom_store import TlsFiles

    return TlsFiles(TLS / f"{cert}.pem", TLS / f"{cert}.key", TLS / f"{ca}.pem").server_context()


def test_over_tls_the_outputs_reach_only_a_node_whose_certificate_checks_out(outputs, capsys):
    """DICOM over TLS (mutual): the PACS's certificate is checked against --tls-ca and ours shown; a PACS whose
    certificate another CA signed, plain DICOM to a TLS port, and unusable TLS files fail with what to check."""
    pacs = Pacs(ssl_context=tls_context())
    mine = ["--tls-ca", str(TLS / "ca.pem"), "--tls-cert", str(TLS / "node.pem"), "--tls-key", str(TLS / "node.key")]
    try:
        assert send_main([str(outputs), "--to", pacs.to(), "--echo", *mine]) == 0
        assert send_main([str(outputs), "--to", pacs.to(), *mine]) == 0
        assert "3 object(s) sent" in capsys.readouterr().out and len(pacs.received) == 3
        # our certificate is not one its CA signed: the PACS drops the handshake
        rogue = ["--tls-ca", str(TLS / "ca.pem"), "--tls-cert", str(TLS / "rogue.pem"), "--tls-key", str(TLS / "rogue.key")]
        assert send_main([str(outputs), "--to", pacs.to(), "--resend", *rogue]) == 2
        assert "over TLS: does its certificate chain to" in capsys.readouterr().err
        assert send_main([str(outputs), "--to", pacs.to(), "--resend"]) == 2  # plain DICOM to a TLS port
        capsys.readouterr()
        assert len(pacs.received) == 3
    finally:
        pacs.close()
    impostor = Pacs(ssl_context=tls_context(cert="rogue"))  # a node whose certificate our CA did not sign
    try:
        assert send_main([str(outputs), "--to", impostor.to(), "--resend", *mine]) == 2
        assert "over TLS: does its certificate chain to" in capsys.readouterr().err and not impostor.received
    finally:
        impostor.close()
    for extra, message in ((["--tls-cert", str(TLS / "node.pem")], "--tls-cert and --tls-key go together"),
                           (["--tls-ca", str(TLS / "missing.pem")], "missing.pem: TLS file not found"),
                           (["--tls-ca", str(outputs / "p7_seg.dcm")], "p7_seg.dcm: cannot be used for TLS")):
        assert send_main([str(outputs), "--to", "PACS@127.0.0.1:104", *extra]) == 2
        assert message in capsys.readouterr().err
