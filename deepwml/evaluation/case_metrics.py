"""Per-case metrics as the MICCAI 2017 WMH segmentation challenge defines them, so numbers compare with its leaderboard.

Values for empty masks (the challenge's where it defines them, ours where it would divide by zero):

| reference / prediction | Dice | HD95 | AVD | lesion recall | lesion precision | lesion F1 |
|---|---|---|---|---|---|---|
| empty / empty          | 1    | NaN  | 0   | 1             | 1                | 1         |
| lesion / empty         | 0    | NaN  | 100 | 0             | 1                | 0         |
| empty / lesion         | 0    | NaN  | NaN | 1             | 0                | 0         |
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from deepwml.evaluation.lesions import LesionDetection, lesion_detection
from deepwml.evaluation.surface import hausdorff_percentile
from deepwml.imageio import Geometry

#: Per-case metric columns, in report order, with the direction that is better.
CASE_METRICS = {
    "dice": "higher",
    "hd95_mm": "lower",
    "avd_percent": "lower",
    "lesion_recall": "higher",
    "lesion_precision": "higher",
    "lesion_f1": "higher",
}


def dice(reference: np.ndarray, prediction: np.ndarray) -> float:
    """2|A∩B| / (|A| + |B|) over the whole volume; 1.0 when both are empty."""
    n_ref = int(np.count_nonzero(reference))
    n_pred = int(np.count_nonzero(prediction))
    if n_ref + n_pred == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(reference & prediction)) / (n_ref + n_pred)


def absolute_volume_difference(n_reference: int, n_predicted: int) -> float:
    """|V_ref − V_pred| / V_ref × 100 %; 0 when both are empty, NaN when only the reference is."""
    if n_reference == 0:
        return 0.0 if n_predicted == 0 else float("nan")
    return abs(n_reference - n_predicted) / n_reference * 100.0


def case_metrics(reference: np.ndarray, prediction: np.ndarray, geometry: Geometry,
                 detection: Optional[LesionDetection] = None) -> Dict[str, Any]:
    """All WMH-challenge metrics of one case, plus lesion counts and volumes (ml); ``detection`` if already counted."""
    n_ref = int(np.count_nonzero(reference))
    n_pred = int(np.count_nonzero(prediction))
    if detection is None:
        detection = lesion_detection(reference, prediction)
    return {
        "dice": dice(reference, prediction),
        "hd95_mm": hausdorff_percentile(reference, prediction, geometry, 95.0),
        "avd_percent": absolute_volume_difference(n_ref, n_pred),
        "lesion_recall": detection.recall,
        "lesion_precision": detection.precision,
        "lesion_f1": detection.f1,
        "ref_lesion_count": detection.n_reference,
        "pred_lesion_count": detection.n_predicted,
        "ref_lesions_detected": detection.n_reference_detected,
        "pred_lesions_touching_ref": detection.n_predicted_touching,
        "ref_volume_ml": n_ref * geometry.voxel_volume_ml,
        "pred_volume_ml": n_pred * geometry.voxel_volume_ml,
        "ref_empty": n_ref == 0,
        "pred_empty": n_pred == 0,
    }
