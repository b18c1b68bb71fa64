"""deepwml_ensemble: average the probability maps that several deepwml_predict runs wrote, and threshold the average.

The models need not share a plan (nnU-Net's ``nnUNetv2_ensemble`` does the same across configurations): every map is
already on its input's own grid, so a 2D model, a wider one and a model from another site can be averaged voxel by
voxel. Each input folder must hold the same cases, each case's maps the same grid. When the first folder holds a
case's anatomy map (deepwml_predict --save-anatomy), the ensemble's lesions get their locations from it and, as
deepwml_predict does, those with no voxel in its brain are dropped (deepwml.inference.outside_brain).
"""
from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from tqdm import tqdm

import deepwml
from deepwml.constants import MIN_CORTEX_CONTRAST
from deepwml.imageio import Geometry, read_image, split_ending, write_image
from deepwml.inference.bids_names import output_names
from deepwml.inference.cortex_contrast import check_cortex_contrast, drop_faint_cortical
from deepwml.inference.lesion_contrast import background_floor
from deepwml.inference.lesion_numbers import NUMBERED_LESIONS
from deepwml.inference.lesion_report import (FAINT_CORTEX_COLUMN, OUTSIDE_BRAIN_COLUMN, CaseSummary, check_lesion_filters, failed_case, filter_lesions, lesion_table,
                                            summarize_case, summary_frame)
from deepwml.inference.inputs import InputCase, discover_cases, read_case
from deepwml.inference.outside_brain import drop_outside_brain
from deepwml.inference.output_folder import MARKER_NAME, PRODUCER_KEY, QC_FOLDER, check_output_folder
from deepwml.inference.outputs import write_csv
from deepwml.inference.batches import probabilities_to_mask
from deepwml.inference.qc import table_locations, write_qc_montage
from deepwml.inference.signal_level import from_no_signal
from deepwml.inference.thin_slices import thin_slab_inputs
from deepwml.utils.atomic import read_json, remove_dead_temporaries, write_json
from deepwml.utils.errors import DeepWMLError

#: the marker's record of what made an ensemble folder's masks
ENSEMBLE_KEY = "ensembled_from"
#: the plans' threshold when no input folder records one
DEFAULT_THRESHOLD = 0.5
#: probability maps are float32: values a hair outside 0..1 are rounding, not a wrong file
RANGE_TOLERANCE = 1e-4
_PLAIN = re.compile(r"^(?P<case>.+)_prob$")
_BIDS = re.compile(r"^(?P<case>.+)_label-WMH_probseg$")


@dataclass(frozen=True)
class ProbabilityFile:
    """One case's probability map in one input folder."""

    case_id: str
    path: Path
    ending: str
    #: written with deepwml_predict --bids-names (``<entities>_label-WMH_probseg``): the outputs keep BIDS names
    bids: bool


@dataclass
class EnsembleReport:
    """What a run did."""

    summaries: List[CaseSummary]
    written: int = 0
    resumed: int = 0
    threshold: float = DEFAULT_THRESHOLD
    weights: List[float] = field(default_factory=list)
    seconds: float = 0.0
    summary_csv: Optional[Path] = None
    #: the first input folder held the cases' anatomy maps (locations in the lesion tables)
    anatomy: bool = False
    #: lesions with no voxel in those maps' brain were dropped
    outside_brain_dropped: bool = False
    #: lesions in those maps' cortex under this many times its median intensity were dropped (0: not)
    cortex_contrast: float = 0.0

    @property
    def failed(self) -> List[CaseSummary]:
        """Cases whose maps could not be averaged."""
        return [s for s in self.summaries if s.status != "ok"]

    def describe(self) -> str:
        """One line for the terminal."""
        weights = ", ".join(f"{w:.3g}" for w in self.weights)
        return (f"deepwml_ensemble: {self.written} case(s) written, {self.resumed} already done, {len(self.failed)} "
                f"failed in {self.seconds:.1f} s; weights {weights}, threshold {self.threshold:g}; summary: {self.summary_csv}"
                + ("; lesion locations from the first folder's anatomy maps" if self.anatomy else "")
                + ("; lesions outside their brain dropped" if self.outside_brain_dropped else "")
                + (f"; lesions in their cortex under {self.cortex_contrast:g} x its median dropped" if self.cortex_contrast else ""))


def probability_files(folder: Path) -> Dict[str, ProbabilityFile]:
    """The probability maps deepwml_predict --save-probabilities wrote in ``folder``, by case id."""
    if not folder.is_dir():
        what = "does not exist" if not folder.exists() else "is not a folder"
        raise DeepWMLError(f"{what}; give folders written by deepwml_predict --save-probabilities", folder)
    found: Dict[str, ProbabilityFile] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            stem, ending = split_ending(path.name)
        except DeepWMLError:
            continue
        match = _PLAIN.match(stem) or _BIDS.match(stem)
        if match is None:
            continue
        case_id = match.group("case")
        if case_id in found:
            raise DeepWMLError(f"holds two probability maps of case {case_id} ({found[case_id].path.name}, {path.name}); "
                               "keep one", folder)
        found[case_id] = ProbabilityFile(case_id, path, ending, bids=match.re is _BIDS)
    if not found:
        raise DeepWMLError("holds no probability maps (CASE_prob<ending>); predict with deepwml_predict "
                           "--save-probabilities", folder)
    return found


def matched_cases(folders: Sequence[Path]) -> List[List[ProbabilityFile]]:
    """Per case, its map in every folder (in folder order); every folder must hold the same cases."""
    found = [probability_files(f) for f in folders]
    cases = set(found[0])
    for folder, files in zip(folders[1:], found[1:]):
        missing, extra = sorted(cases - set(files)), sorted(set(files) - cases)
        if missing or extra:
            parts = ([f"lacks {_some(missing)} that {folders[0]} holds"] if missing else []) + \
                    ([f"holds {_some(extra)} that {folders[0]} lacks"] if extra else [])
            raise DeepWMLError(f"{'; '.join(parts)}: every input folder must hold the same cases", folder)
    return [[files[c] for files in found] for c in sorted(cases)]


def _some(names: Sequence[str], shown: int = 5) -> str:
    """``names`` for a message, at most ``shown`` of them."""
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return f"{len(names)} case(s) ({', '.join(names[:shown])}{more})"


def normalised_weights(weights: Optional[Sequence[float]], n: int) -> List[float]:
    """One weight per input folder, summing to one (equal when none are given)."""
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise DeepWMLError(f"--weights gives {len(weights)} weight(s) for {n} input folder(s); give one per folder")
    if any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise DeepWMLError(f"--weights must be finite, non-negative and not all zero, not {' '.join(map(str, weights))}")
    total = float(sum(weights))
    return [float(w) / total for w in weights]


def recorded_threshold(folders: Sequence[Path]) -> Optional[float]:
    """The mask threshold every input folder's deepwml_predict run recorded; None when none recorded one.

    Folders that record different thresholds are an error: which one the average should use is the user's choice."""
    return _recorded(folders, "threshold", "thresholds", "choose one with --threshold")


def recorded_thin_slab(folders: Sequence[Path]) -> float:
    """The slab (mm) every input folder's deepwml_predict run showed thin scans as (deepwml.inference.thin_slices);
    0 when none recorded one. Folders that differ are an error: their maps did not see the same scans."""
    slab = _recorded(folders, "thin_slab_mm", "--thin-slab-mm slabs", "predict them alike")
    return 0.0 if slab is None else slab


def _recorded(folders: Sequence[Path], key: str, what: str, remedy: str) -> Optional[float]:
    """The number ``key`` every input folder's deepwml_predict run recorded (None: none did); different ones are an
    error naming ``what`` differs and the ``remedy``."""
    seen: Dict[float, Path] = {}
    for folder in folders:
        try:
            marker = read_json(folder / MARKER_NAME)
        except (DeepWMLError, OSError, ValueError):
            continue
        record = marker.get(PRODUCER_KEY) if isinstance(marker, dict) else None
        if isinstance(record, dict) and isinstance(record.get(key), (int, float)):
            seen.setdefault(float(record[key]), folder)
    if len(seen) > 1:
        listed = "; ".join(f"{t:g} in {f}" for t, f in seen.items())
        raise DeepWMLError(f"the input folders were predicted with different {what} ({listed}); {remedy}")
    return next(iter(seen), None)


def average_case(files: Sequence[ProbabilityFile], weights: Sequence[float]) -> Tuple[np.ndarray, Geometry]:
    """The weighted mean of one case's maps; a map on another grid or outside 0..1 is an error naming it."""
    total: Optional[np.ndarray] = None
    geometry: Optional[Geometry] = None
    for f, w in zip(files, weights):
        image = read_image(f.path)  # NaN/Inf is an error naming the file
        lo, hi = float(image.array.min()), float(image.array.max())
        if lo < -RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
            raise DeepWMLError(f"values {lo:.4g}..{hi:.4g} are not probabilities (0..1); give deepwml_predict's "
                               "CASE_prob maps", f.path)
        if geometry is None:
            geometry, total = image.geometry, np.zeros(image.array.shape, np.float32)
        else:
            differ = geometry.mismatches(image.geometry)
            if differ:
                raise DeepWMLError(f"is not on the grid of {files[0].path} ({'; '.join(differ)}): maps of one case "
                                   "must come from the same input scan", f.path)
        total += np.float32(w) * np.clip(image.array, 0.0, 1.0)
    assert total is not None and geometry is not None
    return total, geometry


@dataclass(frozen=True)
class EnsembleOutputs:
    """The files one case produces."""

    mask: Path
    probabilities: Path
    lesions: Path
    qc: Path


def ensemble_outputs(out_dir: Path, first: ProbabilityFile) -> EnsembleOutputs:
    """Output paths of a case, named as deepwml_predict names them (BIDS names when its maps have them)."""
    names = output_names(first.case_id, first.bids)
    return EnsembleOutputs(out_dir / f"{names.mask}{first.ending}", out_dir / f"{names.probabilities}{first.ending}",
                           out_dir / f"{names.lesions}.csv", out_dir / QC_FOLDER / f"{first.case_id}.png")


def scans_by_case(images: Optional[Path], cases: Sequence[Sequence[ProbabilityFile]]) -> Dict[str, InputCase]:
    """The scans of ``images`` (as deepwml_predict -i finds them) for QC pictures; every case must have its scan."""
    if images is None:
        return {}
    found = {c.case_id: c for c in discover_cases(images)}
    missing = [files[0].case_id for files in cases if files[0].case_id not in found]
    if missing:
        raise DeepWMLError(f"holds no scan of {_some(missing)} of the probability maps; give the folder the runs "
                           "predicted (-i of deepwml_predict)", images)
    return found


def _record(folders: Sequence[Path], weights: Sequence[float], threshold: float, min_lesion_ml: float,
            min_lesion_peak: float = 0.0, outside_brain_dropped: bool = False,
            min_lesion_contrast: float = 0.0, min_lesion_spread: float = 0.0,
            min_cortex_contrast: float = 0.0) -> Dict[str, Any]:
    """What decides an ensemble folder's masks."""
    record = {"inputs": [str(f.resolve()) for f in folders], "weights": [round(w, 6) for w in weights],
              "threshold": float(threshold), "min_lesion_ml": float(min_lesion_ml)}
    # only when used, so that a folder averaged before the option existed resumes as keeping every lesion
    if min_lesion_peak > 0:
        record["min_lesion_peak"] = float(min_lesion_peak)
    if min_lesion_contrast > 0:
        record["min_lesion_contrast"] = float(min_lesion_contrast)
    if min_lesion_spread > 0:
        record["min_lesion_spread"] = float(min_lesion_spread)
    if outside_brain_dropped:
        record["outside_brain_dropped"] = True
    if min_cortex_contrast > 0:
        record["min_cortex_contrast"] = float(min_cortex_contrast)
    return record


def anatomy_file(folder: Path, first: ProbabilityFile) -> Optional[Path]:
    """The anatomy map deepwml_predict --save-anatomy wrote of ``first``'s case in ``folder``, or None."""
    path = folder / f"{output_names(first.case_id, first.bids).anatomy}{first.ending}"
    return path if path.is_file() else None


def _check_output(out_dir: Path, folders: Sequence[Path], record: Dict[str, Any], overwrite: bool) -> None:
    """Refuse an -o that is an input folder, lies inside one, or holds masks another ensemble made (unless ``overwrite``)."""
    for folder in folders:
        check_output_folder(out_dir, folder)
    try:
        earlier = read_json(out_dir / MARKER_NAME) if (out_dir / MARKER_NAME).is_file() else {}
    except DeepWMLError:
        earlier = {}
    if not isinstance(earlier, dict) or not earlier:
        return
    if PRODUCER_KEY in earlier:
        raise DeepWMLError("holds masks written by deepwml_predict; choose another -o for the ensemble", out_dir)
    before = earlier.get(ENSEMBLE_KEY)
    if isinstance(before, dict) and before != record and not overwrite:
        raise DeepWMLError(f"holds an ensemble of other inputs or settings ({before}); choose another -o, or add "
                           "--overwrite to average every case anew", out_dir)


def ensemble(folders: Sequence[Path], out_dir: Path, weights: Optional[Sequence[float]] = None,
             threshold: Optional[float] = None, save_probabilities: bool = False, overwrite: bool = False,
             progress: Optional[bool] = None, images: Optional[Path] = None, min_lesion_ml: float = 0.0,
             min_lesion_peak: float = 0.0, keep_outside_brain: bool = False,
             min_lesion_contrast: float = 0.0, min_lesion_spread: float = 0.0,
             min_cortex_contrast: float = MIN_CORTEX_CONTRAST) -> EnsembleReport:
    """Average the probability maps of ``folders`` case by case and write masks, lesion tables and summary.csv to
    ``out_dir`` (with ``images``, the scans, also QC pictures); finished cases are skipped unless ``overwrite``; a
    case that fails is reported, not raised. With the first folder's anatomy maps, lesions outside their brain are
    dropped unless ``keep_outside_brain``; ``min_lesion_contrast`` (needs ``images``) drops the faint ones (with
    ``min_lesion_spread``, only those also under that many ring spreads above their ring); with the maps and the
    scans, lesions in the maps' cortex under ``min_cortex_contrast`` x its median intensity are dropped (0: kept)."""
    start = time.perf_counter()
    folders = [Path(f).expanduser() for f in folders]
    if len(folders) < 2:
        raise DeepWMLError("give at least two input folders to average (-i A B ...)")
    if len({f.resolve() for f in folders}) < len(folders):
        raise DeepWMLError("an input folder is given twice; to weight it, use --weights")
    out_dir = Path(out_dir).expanduser()
    weights = normalised_weights(weights, len(folders))
    if threshold is None:
        threshold = recorded_threshold(folders)
        threshold = DEFAULT_THRESHOLD if threshold is None else threshold
    if not 0.0 < threshold < 1.0:
        raise DeepWMLError(f"--threshold must lie in (0, 1), not {threshold:g}")
    check_lesion_filters(min_lesion_ml, min_lesion_peak, min_lesion_contrast, min_lesion_spread)
    if min_lesion_contrast > 0 and images is None:
        raise DeepWMLError("--min-lesion-contrast compares each lesion with the scan around it: give the scans with --images")
    cases = matched_cases(folders)
    # the contrast filter judges a thin scan on the slabs the members' networks saw, as deepwml_predict does
    thin_slab = recorded_thin_slab(folders) if images is not None else 0.0
    images = Path(images).expanduser() if images is not None else None
    scans = scans_by_case(images, cases)
    if images is not None:
        check_output_folder(out_dir, images)
    # every case's map or none: a folder of mixed runs would give some cases the drop and others not, unsaid
    anatomy = {files[0].case_id: anatomy_file(folders[0], files[0]) for files in cases}
    with_map = [c for c, path in anatomy.items() if path is not None]
    if with_map and len(with_map) < len(anatomy):
        lacking = [c for c, path in anatomy.items() if path is None]
        raise DeepWMLError(f"holds the anatomy maps of some cases but not of {_some(lacking)}: predict them all with "
                           "--save-anatomy, or none", folders[0])
    drop_outside = bool(with_map) and not keep_outside_brain
    cortex_contrast = check_cortex_contrast(min_cortex_contrast) if with_map and images is not None else 0.0
    record = _record(folders, weights, threshold, min_lesion_ml, min_lesion_peak, drop_outside, min_lesion_contrast,
                     min_lesion_spread, cortex_contrast)
    _check_output(out_dir, folders, record, overwrite)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / MARKER_NAME, {"written_by": "deepwml_ensemble", "deepwml_version": deepwml.__version__,
                                       "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), ENSEMBLE_KEY: record})
    remove_dead_temporaries(out_dir)
    remove_dead_temporaries(out_dir / QC_FOLDER)
    report = EnsembleReport(summaries=[], threshold=threshold, weights=weights, anatomy=bool(with_map),
                            outside_brain_dropped=drop_outside, cortex_contrast=cortex_contrast)
    from deepwml.inference.run import earlier_anatomy_rows

    # a finished case's mask no longer shows what was dropped: its count comes from the summary.csv that listed it
    earlier = earlier_anatomy_rows(out_dir / "summary.csv") if (drop_outside or cortex_contrast) and not overwrite else {}
    for files in tqdm(cases, desc="deepwml_ensemble", unit="case", disable=None if progress is None else not progress):
        first = files[0]
        outputs = ensemble_outputs(out_dir, first)
        done = (outputs.mask.is_file() and outputs.lesions.is_file() and (outputs.probabilities.is_file() or not save_probabilities)
                and (outputs.qc.is_file() or not scans))
        try:
            if done and not overwrite:
                summary = _summary_of_done(first.case_id, outputs, anatomy[first.case_id])
                for column in (OUTSIDE_BRAIN_COLUMN, FAINT_CORTEX_COLUMN):
                    count = earlier.get(first.case_id, {}).get(column)
                    if count is not None and count == count:  # NaN: a summary that did not count them
                        summary.anatomy[column] = int(count)
                report.summaries.append(summary)
                report.resumed += 1
                continue
            report.summaries.append(_write_case(files, weights, threshold, outputs, save_probabilities,
                                                scans.get(first.case_id), min_lesion_ml, min_lesion_peak,
                                                anatomy[first.case_id], drop_outside, min_lesion_contrast, thin_slab,
                                                min_lesion_spread, cortex_contrast))
            report.written += 1
        except DeepWMLError as e:
            report.summaries.append(failed_case(first.case_id, str(e)))
        except Exception as e:  # noqa: BLE001 - a case that cannot be written (disk, permissions) fails alone
            report.summaries.append(failed_case(first.case_id, f"{type(e).__name__}: {e}"))
    report.summary_csv = out_dir / "summary.csv"
    write_csv(summary_frame(report.summaries), report.summary_csv)
    report.seconds = time.perf_counter() - start
    return report


def _write_case(files: Sequence[ProbabilityFile], weights: Sequence[float], threshold: float,
                outputs: EnsembleOutputs, save_probabilities: bool, scan: Optional[InputCase] = None,
                min_lesion_ml: float = 0.0, min_lesion_peak: float = 0.0, anatomy_path: Optional[Path] = None,
                drop_outside: bool = False, min_lesion_contrast: float = 0.0, thin_slab_mm: float = 0.0,
                min_lesion_spread: float = 0.0, min_cortex_contrast: float = 0.0) -> CaseSummary:
    """Average, threshold and write one case (a QC picture and the lesions' contrast on ``scan``, the contrast on its
    ``thin_slab_mm`` slabs when it is thin; locations from the anatomy map at ``anatomy_path``, and lesions outside its
    brain dropped with ``drop_outside``, those in or against its cortex under ``min_cortex_contrast`` x its median with the scan);
    the mask last, since its presence marks the case done."""
    probs, geometry = average_case(files, weights)
    mask = probabilities_to_mask(probs, threshold)
    anatomy, dropped = None, 0
    if anatomy_path is not None:
        read = read_image(anatomy_path, dtype=np.uint8)
        differ = geometry.mismatches(read.geometry)
        if differ:
            raise DeepWMLError(f"is not on the grid of {files[0].path} ({'; '.join(differ)})", anatomy_path)
        anatomy = read.array
        if drop_outside:
            mask, dropped = drop_outside_brain(mask, anatomy, geometry)
    # measured from no signal, as deepwml_predict measures the scan (deepwml.inference.signal_level)
    image = from_no_signal(read_case(scan)) if scan is not None else None
    differ = image.geometry.mismatches(geometry) if image is not None else []
    if differ:
        raise DeepWMLError(f"is not the scan of {files[0].path} ({'; '.join(differ)})", scan.source)
    judged = None
    if image is not None:
        judged = (thin_slab_inputs([image], thin_slab_mm) or [image])[0].array
    floor = background_floor(judged) if judged is not None else None  # once for the filter and the table
    mask = filter_lesions(mask, geometry, probs, min_lesion_ml, min_lesion_peak, judged, min_lesion_contrast,
                          min_lesion_spread, floor)
    faint_cortical = None
    if anatomy is not None and judged is not None and min_cortex_contrast > 0:
        mask, faint_cortical = drop_faint_cortical(mask, anatomy, judged, geometry, min_cortex_contrast)
    lesions = lesion_table(mask, geometry, anatomy=anatomy, probs=probs, image=judged, floor=floor)
    summary = summarize_case(files[0].case_id, mask, geometry, lesions, anatomy=anatomy)
    if anatomy is not None and drop_outside:
        summary.anatomy[OUTSIDE_BRAIN_COLUMN] = dropped
    if faint_cortical is not None:
        summary.anatomy[FAINT_CORTEX_COLUMN] = faint_cortical
    if save_probabilities:
        write_image(probs, geometry, outputs.probabilities)
    write_csv(lesions, outputs.lesions)
    if image is not None:
        title = f"{summary.case_id}: {summary.lesion_count} lesions, {summary.total_lesion_volume_ml:.2f} ml (ensemble)"
        title += f"; {dropped} outside the brain dropped" if dropped else ""
        title += f"; {faint_cortical} no brighter than normal cortex dropped" if faint_cortical else ""
        write_qc_montage(image.array, mask, geometry, outputs.qc, title, numbered=NUMBERED_LESIONS, locations=table_locations(lesions))
    write_image(mask, geometry, outputs.mask)
    return summary


def _summary_of_done(case_id: str, outputs: EnsembleOutputs, anatomy_path: Optional[Path] = None) -> CaseSummary:
    """The summary row of a case an earlier run finished, from its mask and lesion table (and anatomy map)."""
    import pandas as pd

    image = read_image(outputs.mask, dtype=np.uint8)
    anatomy = read_image(anatomy_path, dtype=np.uint8).array if anatomy_path is not None else None
    return summarize_case(case_id, image.array, image.geometry, pd.read_csv(outputs.lesions), anatomy=anatomy)
