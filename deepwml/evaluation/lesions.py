"""Lesions as 3D connected components (full 26-connectivity) and the WMH challenge's lesion detection counts."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

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


def count_touched(labels: np.ndarray, other: np.ndarray) -> int:
    """Number of distinct components of ``labels`` that share at least one voxel with ``other``."""
    hit = labels[other]
    return int(np.unique(hit[hit > 0]).size)


def lesion_detection(reference: np.ndarray, prediction: np.ndarray) -> LesionDetection:
    """Lesion-wise detection counts between two boolean masks on the same grid."""
    ref_labels, n_ref = label_lesions(reference)
    pred_labels, n_pred = label_lesions(prediction)
    return LesionDetection(
        n_reference=n_ref,
        n_predicted=n_pred,
        n_reference_detected=count_touched(ref_labels, prediction),
        n_predicted_touching=count_touched(pred_labels, reference),
    )
