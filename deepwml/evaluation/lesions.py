"""Lesions as 3D connected components (full 26-connectivity) and the WMH challenge's lesion detection counts."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

#: 26-connectivity: voxels touching by a face, an edge or a corner belong to one lesion (the challenge's choice).
FULL_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


@dataclass(frozen=True)
class LesionDetection:
    """Counts behind lesion recall and precision."""

    n_reference: int
    n_predicted: int
    n_reference_detected: int
    n_predicted_touching: int
    #: per lesion, in label order: its voxels, the slices it spans and whether the other mask touches it
    reference_lesions: Dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)
    predicted_lesions: Dict[str, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @property
    def recall(self) -> float:
        """Reference lesions touched by a predicted voxel / reference lesions; 1.0 when there is none to find."""
        return self.n_reference_detected / self.n_reference if self.n_reference else 1.0

    @property
    def precision(self) -> float:
        """Predicted lesions touching the reference / predicted lesions; 1.0 when nothing was predicted."""
        return self.n_predicted_touching / self.n_predicted if self.n_predicted else 1.0

    @property
    def f1(self) -> float:
        """2PR / (P + R); 0 when both are 0."""
        p, r = self.precision, self.recall
        return 2.0 * p * r / (p + r) if p + r > 0 else 0.0


def label_lesions(mask: np.ndarray) -> Tuple[np.ndarray, int]:
    """Label the 26-connected components of a boolean 3D mask; returns (labels, count)."""
    labels, n = ndimage.label(mask, structure=FULL_CONNECTIVITY)
    return labels, int(n)


def lesion_properties(labels: np.ndarray, n: int, other: np.ndarray, slice_axis: int = 0) -> Dict[str, np.ndarray]:
    """Per component of ``labels`` (1..n): voxels, slices spanned along ``slice_axis`` and whether ``other`` touches it."""
    touched = np.zeros(n + 1, dtype=bool)
    touched[labels[other]] = True
    spans = [box[slice_axis].stop - box[slice_axis].start for box in ndimage.find_objects(labels, max_label=n)]
    return {"voxels": np.bincount(labels.ravel(), minlength=n + 1)[1:], "slices": np.asarray(spans, dtype=int),
            "touched": touched[1:]}


def lesion_detection(reference: np.ndarray, prediction: np.ndarray, slice_axis: int = 0) -> LesionDetection:
    """Lesion-wise detection counts between two boolean masks on the same grid, with each lesion's size."""
    ref_labels, n_ref = label_lesions(reference)
    pred_labels, n_pred = label_lesions(prediction)
    ref, pred = lesion_properties(ref_labels, n_ref, prediction, slice_axis), lesion_properties(pred_labels, n_pred, reference, slice_axis)
    return LesionDetection(
        n_reference=n_ref,
        n_predicted=n_pred,
        n_reference_detected=int(ref["touched"].sum()),
        n_predicted_touching=int(pred["touched"].sum()),
        reference_lesions=ref,
        predicted_lesions=pred,
    )


def lesion_rows(detection: LesionDetection, voxel_ml: float,
                locations: Optional[Tuple[Sequence[str], Sequence[str]]] = None) -> Dict[str, List]:
    """Columns of per_lesion.csv for one case: each reference lesion, then each predicted one; ``locations`` (reference,
    predicted, in label order) from an anatomy map, else the location is empty."""
    columns: Dict[str, List] = {"side": [], "lesion": [], "volume_ml": [], "voxels": [], "slices": [], "detected": [],
                                "location": []}
    for index, (side, props) in enumerate((("reference", detection.reference_lesions), ("prediction", detection.predicted_lesions))):
        n = len(props.get("voxels", ()))
        located = list(locations[index]) if locations is not None else [""] * n
        if len(located) != n:
            raise ValueError(f"{len(located)} {side} lesion locations for {n} lesions")
        columns["side"] += [side] * n
        columns["lesion"] += list(range(1, n + 1))
        columns["voxels"] += [int(v) for v in props.get("voxels", ())]
        columns["volume_ml"] += [float(v) * voxel_ml for v in props.get("voxels", ())]
        columns["slices"] += [int(v) for v in props.get("slices", ())]
        columns["detected"] += [bool(v) for v in props.get("touched", ())]
        columns["location"] += located
    return columns
