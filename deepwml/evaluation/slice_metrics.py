"""Per-slice Dice, sensitivity and precision along the slice axis (the paper's unit of evaluation), all slices at once.

Slices with reference lesion are scored. A slice without reference lesion is never scored 1 nor dropped: it is
kept with ``has_reference_lesion = False``, and when the prediction marks anything on it, it is a false-positive
slice whose false-positive area (mm²) is recorded. On a lesion slice with an empty prediction, Dice and
sensitivity are 0 and precision is NaN (no predicted pixel to be precise about).
"""
from __future__ import annotations

from typing import Dict, Tuple

import numpy as np
import pandas as pd

from deepwml.evaluation.groups import lv_groups
from deepwml.imageio import Geometry

SLICE_COLUMNS = (
    "slice",
    "ref_area_mm2",
    "pred_area_mm2",
    "tp_area_mm2",
    "fp_area_mm2",
    "fn_area_mm2",
    "lesion_volume_ml",
    "lv_group",
    "has_reference_lesion",
    "false_positive_slice",
    "dice",
    "sensitivity",
    "precision",
)


def slice_counts(reference: np.ndarray, prediction: np.ndarray, slice_axis: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts (reference, prediction, true positive) per slice along numpy axis ``slice_axis``."""
    other = tuple(a for a in range(reference.ndim) if a != slice_axis)
    n_ref = np.count_nonzero(reference, axis=other)
    n_pred = np.count_nonzero(prediction, axis=other)
    n_tp = np.count_nonzero(reference & prediction, axis=other)
    return n_ref.astype(np.int64), n_pred.astype(np.int64), n_tp.astype(np.int64)


def slice_scores(n_ref: np.ndarray, n_pred: np.ndarray, n_tp: np.ndarray) -> Dict[str, np.ndarray]:
    """Dice, sensitivity and precision per slice from pixel counts; NaN where undefined (see the module docstring).

    Training validation scores its slices with this function too, so its figures mean the same as these.
    """
    n_ref, n_pred, n_tp = (np.asarray(a, dtype=np.int64) for a in (n_ref, n_pred, n_tp))
    has_ref = n_ref > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        dice = np.where(has_ref, 2.0 * n_tp / (n_ref + n_pred), np.nan)
        sensitivity = np.where(has_ref, n_tp / n_ref, np.nan)
        precision = np.where(has_ref & (n_pred > 0), n_tp / n_pred, np.nan)
    return {"dice": dice, "sensitivity": sensitivity, "precision": precision}


def slice_metrics(reference: np.ndarray, prediction: np.ndarray, geometry: Geometry) -> pd.DataFrame:
    """One row per slice: areas, lesion volume and group, false-positive flag, Dice, sensitivity, precision."""
    n_ref, n_pred, n_tp = slice_counts(reference, prediction, geometry.slice_axis_numpy)
    pixel_mm2 = float(np.prod(geometry.inplane_spacing))
    has_ref = n_ref > 0
    scores = slice_scores(n_ref, n_pred, n_tp)
    volume_ml = n_ref * pixel_mm2 * geometry.slice_thickness / 1000.0
    return pd.DataFrame(
        {
            "slice": np.arange(len(n_ref)),
            "ref_area_mm2": n_ref * pixel_mm2,
            "pred_area_mm2": n_pred * pixel_mm2,
            "tp_area_mm2": n_tp * pixel_mm2,
            "fp_area_mm2": (n_pred - n_tp) * pixel_mm2,
            "fn_area_mm2": (n_ref - n_tp) * pixel_mm2,
            "lesion_volume_ml": volume_ml,
            "lv_group": lv_groups(volume_ml),
            "has_reference_lesion": has_ref,
            "false_positive_slice": ~has_ref & (n_pred > 0),
            "dice": scores["dice"],
            "sensitivity": scores["sensitivity"],
            "precision": scores["precision"],
        },
        columns=list(SLICE_COLUMNS),
    )
