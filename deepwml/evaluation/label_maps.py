"""Multi-class label maps (e.g. the anatomy model's) against reference label maps: Dice per class group and case.

deepwml_evaluate scores lesion masks; a multi-class prediction is scored here by the Dice of named groups of class
values (a group pools its classes, e.g. brain = white matter + cortex + infratentorial), per case on the
reference's grid, then averaged over the cases. A group absent from both reference and prediction of a case has
no Dice there (left out of the mean).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import numpy as np

from deepwml.imageio import has_image_ending, read_label, split_ending
from deepwml.utils.errors import DeepWMLError


def group_dice(reference: np.ndarray, prediction: np.ndarray, groups: Mapping[str, Sequence[int]]) -> Dict[str, Optional[float]]:
    """Dice of each group of class values between two label maps of one grid (None where both lack the group)."""
    out: Dict[str, Optional[float]] = {}
    for name, values in groups.items():
        ref, pred = np.isin(reference, values), np.isin(prediction, values)
        total = int(np.count_nonzero(ref)) + int(np.count_nonzero(pred))
        out[name] = None if total == 0 else 2.0 * np.count_nonzero(ref & pred) / total
    return out


def score_label_maps(ref_dir: Path, pred_dir: Path, groups: Mapping[str, Sequence[int]],
                     prediction_map: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> Dict[str, Any]:
    """Per-case group Dice of every reference label map in ``ref_dir`` against ``pred_dir``/CASE<ending> (each first
    passed through ``prediction_map`` when given), and the mean and median over cases; a missing prediction or one on
    another grid is an error naming the file."""
    refs = sorted(p for p in Path(ref_dir).iterdir() if p.is_file() and has_image_ending(p))
    if not refs:
        raise DeepWMLError("no reference label maps", ref_dir)
    per_case = {}
    for ref_path in refs:
        case_id, ending = split_ending(ref_path)
        pred_path = Path(pred_dir) / f"{case_id}{ending}"
        if not pred_path.is_file():
            raise DeepWMLError(f"no prediction for case {case_id}", pred_path)
        reference, prediction = read_label(ref_path), read_label(pred_path)
        mismatch = reference.geometry.mismatches(prediction.geometry)
        if mismatch:
            raise DeepWMLError(f"prediction is not on the reference's grid: {'; '.join(mismatch)}", pred_path)
        predicted = np.asarray(prediction.array)
        predicted = prediction_map(predicted) if prediction_map is not None else predicted
        per_case[case_id] = group_dice(np.asarray(reference.array), predicted, groups)
    table = np.array([[np.nan if d[g] is None else d[g] for g in groups] for d in per_case.values()], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a group absent from every case
        mean, median = np.nanmean(table, axis=0), np.nanmedian(table, axis=0)
    plain = (lambda v: None if np.isnan(v) else float(v))  # noqa: E731
    return {
        "cases": len(per_case),
        "groups": {name: list(values) for name, values in groups.items()},
        "mean_dice": {name: plain(v) for name, v in zip(groups, mean)},
        "median_dice": {name: plain(v) for name, v in zip(groups, median)},
        "per_case": per_case,
    }
