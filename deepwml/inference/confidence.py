"""How sure the model is: a per-voxel uncertainty map and a confidence per lesion.

Uncertainty is the binary entropy (in bits, 0..1) of the lesion probability the run already computes: the mean
over folds and, with TTA, over the left-right flip. That mean carries the ensemble's disagreement (folds that
disagree pull it towards 0.5), works the same for one fold without TTA, and costs one pass over the voxels on the
input grid, with no change to how the networks run. 0 = the model is certain (probability 0 or 1), 1 = a coin
flip (probability 0.5).

A lesion's confidence is 1 - its mean voxel uncertainty: 1 when every voxel is certain, near 0 when the lesion
is made of voxels just above the threshold. Its mean probability is reported beside it.
"""
from __future__ import annotations

import numpy as np

#: Columns appended to CASE_lesions.csv (lesion_table computes them from the components it labels, so a row's
#: confidence is that of its own voxels by construction).
CONFIDENCE_COLUMNS = ["mean_probability", "confidence"]


def binary_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in bits of a Bernoulli variable with probability ``probs`` (float32, 0 where p is 0 or 1)."""
    p = np.clip(np.asarray(probs, dtype=np.float32), 0.0, 1.0)
    out = np.zeros(p.shape, dtype=np.float32)
    # most voxels are background at exactly 0 after reverting; the logarithms run only where they matter
    inside = (p > 0.0) & (p < 1.0)
    q = p[inside]
    out[inside] = -(q * np.log2(q) + (1.0 - q) * np.log2(1.0 - q))
    return np.clip(out, 0.0, 1.0)


#: the written uncertainty map keeps steps of 1/256: far finer than it can be trusted, and the file compresses
#: ~10x better (float32 mantissas end in zeros), which halves its write time for a 512 x 512 x 25 scan
UNCERTAINTY_STEPS = 256


def _negligible_probability() -> float:
    """The p (< 0.5) whose entropy is 0.49 of a step of the written map: nearer 0 or 1 the map rounds to 0 anyway."""
    lo, hi = 1e-12, 0.5
    for _ in range(100):  # bisection; the entropy rises monotonically on (0, 0.5)
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if -(mid * np.log2(mid) + (1 - mid) * np.log2(1 - mid)) < 0.49 / UNCERTAINTY_STEPS else (lo, mid)
    return lo


#: ~1.4e-4: a trained model gives most head voxels a probability below it, so their logarithms are skipped
NEGLIGIBLE_PROBABILITY = _negligible_probability()


def uncertainty_map(probs: np.ndarray) -> np.ndarray:
    """Per-voxel uncertainty of a probability map on any grid (see the module docstring); 0 where the probability is
    within NEGLIGIBLE_PROBABILITY of 0 or 1 (under half a step of the written map: it would be written as 0)."""
    p = np.asarray(probs, dtype=np.float32)
    out = np.zeros(p.shape, dtype=np.float32)
    # the entropy of millions of background voxels cost ~0.2 s per 512 x 512 x 25 scan; they are nearly all skipped
    inside = (p > NEGLIGIBLE_PROBABILITY) & (p < 1.0 - NEGLIGIBLE_PROBABILITY)
    out[inside] = binary_entropy(p[inside])
    return out


def quantised(uncertainty: np.ndarray) -> np.ndarray:
    """``uncertainty`` rounded to 1/UNCERTAINTY_STEPS, float32 (what CASE_uncertainty holds)."""
    return (np.round(np.asarray(uncertainty, dtype=np.float32) * UNCERTAINTY_STEPS) / UNCERTAINTY_STEPS).astype(np.float32)


def lesion_confidence(ids: np.ndarray, probs_at_voxels: np.ndarray, count: int) -> tuple:
    """(mean probability, confidence) of components 1..count from each lesion voxel's component id and probability."""
    voxels = np.bincount(ids, minlength=count + 1)[1:]
    p = np.asarray(probs_at_voxels, dtype=np.float64)
    mean_probability = np.bincount(ids, weights=p, minlength=count + 1)[1:] / voxels
    confidence = 1.0 - np.bincount(ids, weights=binary_entropy(p), minlength=count + 1)[1:] / voxels
    return mean_probability, confidence
