"""What a study costs in deepwml_listen, from the end of its transfer to its results delivered, against
deepwml_predict on the same study folder in the same run.

Writes, under --work (outside the repository; emptied), synthetic MS#1 studies (512x512 cut to --slices slices, a T1
and the FLAIR) as DICOM. Each run: (1) deepwml_predict's library run on each study folder alone with --dicom-seg
--dicom-findings --dicom-sr (the shipped model, anatomy on), timed; (2) a fresh node (the shipped model, the same
outputs, --stable-seconds 0) with a storage SCP in this process standing for the PACS: the studies are sent one by
one (C-STORE, timed), the node polled until it has delivered each (timed from the end of that study's transfer).
Prints per run the medians over studies, then the medians over runs and their ratio.

    python benchmarks/dicom_node.py --work /tmp/dicom_node [--studies 3] [--slices 25] [--runs 3]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List


from deepwml.delivery.dicom_node import DicomNode, NodeConfig, StudyWork
from deepwml.delivery.dicom_store import Destination
from deepwml.inference.run import PredictRequest, predict

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script or imported: its sibling benchmark
from dicom_outputs import dicom_series_writer, synthetic_stack  # noqa: E402

UID = "1.2.826.0.1.3680043.8.498.79."
SEG, SECONDARY_CAPTURE, COMPREHENSIVE_3D_SR = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.7",
                                               "1.2.840.10008.5.1.4.1.1.88.34")


def write_study(folder: Path, k: int, slices: int) -> str:
    """Synthetic MS#1 case ``k`` as a DICOM study (a T1-named copy and the FLAIR) in ``folder``; returns its UID."""
    stored, geometry, _ = synthetic_stack(k, slices)
    write_dicom_series = dicom_series_writer()
    study = f"{UID}{k}"
    write_dicom_series(folder / "t1", stored[:, ::-1].copy(), geometry, study + ".1", study_uid=study, description="AX T1 SE")
    write_dicom_series(folder / "flair", stored, geometry, study + ".2", study_uid=study, description="AX FLAIR")
    return study


def request() -> PredictRequest:
    """The shipped model with the three DICOM outputs, as the node's default."""
    return PredictRequest(input=Path("."), output=Path("."), dicom_seg=True, dicom_findings=True, dicom_sr=True, workers=1)


def send_study(port: int, folder: Path) -> None:
    """C-STORE a study's files to the node over one association."""
    import pydicom
    import pynetdicom

    datasets = [pydicom.dcmread(p) for p in sorted(folder.rglob("*")) if p.is_file()]
    ae = pynetdicom.AE(ae_title="SCANNER")
    for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
        ae.add_requested_context(sop_class)
    assoc = ae.associate("127.0.0.1", port, ae_title="DEEPWML")
    assert assoc.is_established
    statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets]
    assoc.release()
    assert statuses == [0] * len(statuses), statuses


class Pacs:
    """A storage SCP that counts what it receives per study."""

    def __init__(self) -> None:
        import pynetdicom

        self.received: Dict[str, int] = {}
        ae = pynetdicom.AE(ae_title="PACS")
        for sop_class in (SEG, SECONDARY_CAPTURE, COMPREHENSIVE_3D_SR):
            ae.add_supported_context(sop_class, pynetdicom.ALL_TRANSFER_SYNTAXES)
        self.server = ae.start_server(("127.0.0.1", 0), block=False,
                                      evt_handlers=[(pynetdicom.evt.EVT_C_STORE, self._store)])
        self.port = self.server.server_address[1]

    def _store(self, event) -> int:
        study = str(event.dataset.StudyInstanceUID)
        self.received[study] = self.received.get(study, 0) + 1
        return 0


def one_run(studies: List[Path], uids: List[str], work: Path) -> Dict[str, float]:
    """Medians over studies of: predict alone, transfer, node from end of transfer to delivery."""
    alone = []
    for folder in studies:
        shutil.rmtree(work / "predict", ignore_errors=True)
        start = time.perf_counter()
        report = predict(PredictRequest(**{**request().__dict__, "input": folder, "output": work / "predict"}))
        alone.append(time.perf_counter() - start)
        assert not report.failed, report.failed[0].error
    pacs = Pacs()
    shutil.rmtree(work / "node", ignore_errors=True)
    node = DicomNode(NodeConfig(work / "node", port=0, stable_seconds=0.0, send_to=(Destination("PACS", "127.0.0.1", pacs.port),)),
                     StudyWork(request()), echo=lambda line: None)
    port = node.start()
    transfer, latency = [], []
    try:
        for folder, uid in zip(studies, uids):
            start = time.perf_counter()
            send_study(port, folder)
            sent = time.perf_counter()
            transfer.append(sent - start)
            while pacs.received.get(uid, 0) < 3:
                node.poll()
                time.sleep(0.01)
            latency.append(time.perf_counter() - sent)
    finally:
        node.stop()
        pacs.server.shutdown()
    return {"predict alone": statistics.median(alone), "transfer": statistics.median(transfer),
            "node: transfer end to delivered": statistics.median(latency)}


def main() -> None:
    """Time studies through the node against deepwml_predict and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", required=True, type=Path, help="scratch folder (emptied)")
    p.add_argument("--studies", type=int, default=3)
    p.add_argument("--slices", type=int, default=25)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    if Path(__file__).resolve().parents[1] in args.work.resolve().parents:
        raise SystemExit("--work must lie outside the repository")
    shutil.rmtree(args.work, ignore_errors=True)
    folders = [args.work / "studies" / f"study{k}" for k in range(args.studies)]
    uids = [write_study(folder, k, args.slices) for k, folder in enumerate(folders)]
    # untimed: the process's first prediction also pays for imports and the first network run
    predict(PredictRequest(**{**request().__dict__, "input": folders[0], "output": args.work / "warm-up"}))
    rows = []
    for run in range(args.runs):
        row = one_run(folders, uids, args.work)
        rows.append(row)
        print(f"run {run + 1}: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in row.items()), flush=True)
    medians = {name: statistics.median(r[name] for r in rows) for name in rows[0]}
    print("median over runs: " + ", ".join(f"{name} {seconds:.2f} s" for name, seconds in medians.items()))
    print(f"node / predict alone: {medians['node: transfer end to delivered'] / medians['predict alone']:.2f}x "
          f"({args.studies} studies of {args.slices} slices, 512x512, per study)")


if __name__ == "__main__":
    main()
