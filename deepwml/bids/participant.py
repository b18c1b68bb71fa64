"""deepwml_bids participant level: predict every T2-FLAIR of a BIDS dataset into a BIDS-derivatives dataset.

The scans are predicted by one deepwml_predict run (one model load, cases side by side), reading them through
symbolic links named by their BIDS file names in a folder of the run's own (``OUTPUT/.deepwml_bids/input.pid...``,
removed afterwards) and writing into ``OUTPUT/.deepwml_bids/predict``, whose files are then placed in the
derivatives tree (deepwml.bids.derivatives). That prediction folder stays: a second run resumes from it, and
deepwml_predict refuses to add scans predicted with another model or other mask options to it. Runs of different
participants may share it side by side (array jobs): each writes only its own scans' files, every file atomically.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from deepwml.bids.derivatives import check_derivatives_folder, publish, write_dataset_description
from deepwml.bids.layout import BidsScan, find_flair_scans
from deepwml.bids.longitudinal import Comparison, compare_sessions
from deepwml.inference.inputs import InputCase
from deepwml.inference.output_folder import MARKER_NAME, PRODUCER_KEY
from deepwml.inference.outputs import case_outputs
from deepwml.inference.run import PredictRequest, predict
from deepwml.pretrained import builtin_model_dir
from deepwml.utils.atomic import host_tag, pid_alive, read_json
from deepwml.utils.errors import DeepWMLError

WORK_FOLDER = ".deepwml_bids"


@dataclass
class ParticipantReport:
    """What a participant-level run did."""

    scans: List[BidsScan]
    published: int = 0
    predicted: int = 0
    failed: Dict[str, str] = field(default_factory=dict)  # relative path -> error
    warnings: Dict[str, str] = field(default_factory=dict)  # relative path -> acquisition warning
    comparisons: List[Comparison] = field(default_factory=list)  # with longitudinal: the sessions compared

    def describe(self) -> str:
        """One line for the terminal."""
        subjects = len({s.subject for s in self.scans})
        return (f"{len(self.scans)} T2-FLAIR scan(s) of {subjects} participant(s): {self.predicted} predicted now, "
                f"{self.published} in the derivatives dataset, {len(self.failed)} failed")


def _link(scan: BidsScan, folder: Path) -> None:
    """``folder``/<BIDS file name> stands for the scan: a symbolic link, or a copy where links cannot be made."""
    target = folder / scan.path.name
    try:
        os.symlink(scan.path.resolve(), target)
    except OSError:
        shutil.copy2(scan.path, target)


def stage_inputs(scans: Sequence[BidsScan], work: Path) -> Path:
    """A new folder of this run's own below ``work``, holding one entry per scan named by its BIDS file name (the
    prediction's case id). Its own, because array jobs (one participant each) run side by side on one dataset."""
    folder = Path(tempfile.mkdtemp(prefix=f"input.pid{os.getpid()}@{host_tag()}.", dir=work))
    for scan in scans:
        _link(scan, folder)
    return folder


def remove_stale_inputs(work: Path) -> None:
    """Remove the input folders of runs that were killed (their process is gone), sparing those of live runs."""
    for folder in work.glob("input.pid*"):
        owner = re.match(r"input\.pid(\d+)@([A-Za-z0-9-]+)\.", folder.name)
        if owner and (owner.group(2) != host_tag() or pid_alive(int(owner.group(1)))):
            continue  # another machine's run (shared storage) or a live one
        shutil.rmtree(folder, ignore_errors=True)


def model_description(producer: Dict[str, Any]) -> str:
    """The lesion model as dataset_description.json names it: the shipped one by name, another by its folder."""
    model = str(producer.get("model", ""))
    digests = ", ".join(producer.get("weights_sha256") or [])
    name = "the pretrained model shipped with DeepWML" if model == str(builtin_model_dir()) else model
    return f"{name} (weights sha256 {digests}; threshold {producer.get('threshold')})"


def selected_scans(bids_root: Path, out: Path, participants: Optional[Sequence[str]] = None,
                   sessions: Optional[Sequence[str]] = None) -> List[BidsScan]:
    """The T2-FLAIR scans to predict, once the dataset and the derivatives folder are known to be usable."""
    scans = find_flair_scans(Path(bids_root), participants, sessions)
    check_derivatives_folder(Path(out), Path(bids_root))
    return scans


def run_participant_level(bids_root: Path, out: Path, request: PredictRequest, participants: Optional[Sequence[str]] = None,
                          sessions: Optional[Sequence[str]] = None, scans: Optional[List[BidsScan]] = None,
                          longitudinal: Optional[str] = None) -> ParticipantReport:
    """Predict the selected T2-FLAIR scans (``scans``, else those of ``participants`` and ``sessions``; ``request``
    gives the model and options, its input and output are set here) and place each finished scan's files in the
    derivatives dataset ``out``; with ``longitudinal`` ('previous', 'first' or 'both') also compare each of their
    participants' later sessions with the one before, the first or both (deepwml.bids.longitudinal)."""
    bids_root, out = Path(bids_root), Path(out)
    if scans is None:
        scans = selected_scans(bids_root, out, participants, sessions)
    work = out / WORK_FOLDER
    work.mkdir(parents=True, exist_ok=True)
    remove_stale_inputs(work)
    staged_in = stage_inputs(scans, work)
    predicted_dir = work / "predict"
    try:
        run = predict(dataclasses.replace(request, input=staged_in, output=predicted_dir, bids_names=True))
    except DeepWMLError as e:
        if e.path is None or Path(e.path) != predicted_dir:
            raise
        # the prediction folder is ours, not the user's: name the derivatives dataset and this command's words
        raise DeepWMLError(e.problem.replace("choose another -o", "choose another output_dir"), out) from None
    finally:
        shutil.rmtree(staged_in, ignore_errors=True)
    producer = read_json(predicted_dir / MARKER_NAME).get(PRODUCER_KEY) or {}
    write_dataset_description(out, bids_root, model_description(producer))
    rows = {s.case_id: s.to_row() for s in run.summaries}
    report = ParticipantReport(scans=scans, predicted=run.predicted)
    for scan in scans:
        row = rows.get(scan.stem)
        if row is None:
            raise DeepWMLError(f"deepwml_predict returned no result for {scan.relative}", predicted_dir)
        if row.get("status") != "ok":
            report.failed[scan.relative] = str(row.get("error") or "failed")
            continue
        if row.get("acquisition_warning"):
            report.warnings[scan.relative] = str(row["acquisition_warning"])
        case = InputCase(case_id=scan.stem, source=scan.path, kind="file", output_ending=scan.ending, bids_names=True)
        publish(out, scan, case_outputs(predicted_dir, case), row, producer)
        report.published += 1
    if longitudinal:
        tables = {p.name[: -len("_desc-wmh_lesions.csv")] + "_FLAIR": p for p in predicted_dir.glob("*_desc-wmh_lesions.csv")}
        subjects = sorted({s.subject for s in scans})
        report.comparisons = compare_sessions(out, bids_root, subjects, tables, f"DeepWML, {model_description(producer)}",
                                              device=request.device, overwrite=request.overwrite, against=longitudinal)
    return report
