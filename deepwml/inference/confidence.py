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
import pandas as pd
from scipy import ndimage

from deepwml.imageio import Geometry
from deepwml.inference.lesion_report import label_lesions

#: Columns appended to CASE_lesions.csv.
CONFIDENCE_COLUMNS = ["mean_probability", "confidence"]

#: Columns that identify a lesion in a lesion table, whatever order its rows are in.
_EXACT_KEYS = ["voxels", "first_slice", "last_slice"]
_CENTROID_KEYS = ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]
#: centroids of one component computed two ways differ by float rounding only
_CENTROID_TOLERANCE_MM = 0.01


def binary_entropy(probs: np.ndarray) -> np.ndarray:
    """Entropy in bits of a Bernoulli variable with probability ``probs`` (float32, 0 where p is 0 or 1)."""
    p = np.clip(np.asarray(probs, dtype=np.float32), 0.0, 1.0)
    out = np.zeros(p.shape, dtype=np.float32)
    # most voxels are background at exactly 0 after reverting; the logarithms run only where they matter
    inside = (p > 0.0) & (p < 1.0)
    q = p[inside]
    out[inside] = -(q * np.log2(q) + (1.0 - q) * np.log2(1.0 - q))
    return np.clip(out, 0.0, 1.0)


def uncertainty_map(probs: np.ndarray) -> np.ndarray:
    """Per-voxel uncertainty of a probability map on any grid (see the module docstring)."""
    return binary_entropy(probs)


#: the written uncertainty map keeps steps of 1/256: far finer than it can be trusted, and the file compresses
#: ~10x better (float32 mantissas end in zeros), which halves its write time for a 512 x 512 x 25 scan
UNCERTAINTY_STEPS = 256


def quantised(uncertainty: np.ndarray) -> np.ndarray:
    """``uncertainty`` rounded to 1/UNCERTAINTY_STEPS, float32 (what CASE_uncertainty holds)."""
    return (np.round(np.asarray(uncertainty, dtype=np.float32) * UNCERTAINTY_STEPS) / UNCERTAINTY_STEPS).astype(np.float32)


def add_lesion_confidence(lesions: pd.DataFrame, mask: np.ndarray, probs: np.ndarray, geometry: Geometry) -> pd.DataFrame:
    """``lesions`` (a lesion table of ``mask``) with ``mean_probability`` and ``confidence`` for each row.

    The lesions are labelled again and matched to the table's rows by size, slice span and centroid, so the
    result does not depend on the order the table lists them in.
    """
    table = lesions.copy()
    if len(table) == 0:
        for column in CONFIDENCE_COLUMNS:
            table[column] = pd.Series(dtype=float)
        return table
    # labelled inside the mask's bounding box only: the same components, a fraction of the voxels
    box = _bounding_box(np.asarray(mask) > 0)
    labels, count = label_lesions(np.asarray(mask)[box])
    local = np.nonzero(labels)
    ids = labels[local]
    coords = tuple(c + b.start for c, b in zip(local, box))
    p = np.asarray(probs, dtype=np.float64)[coords]
    voxels = np.bincount(ids, minlength=count + 1)[1:]
    stats = pd.DataFrame(
        {
            "voxels": voxels,
            "mean_probability": np.bincount(ids, weights=p, minlength=count + 1)[1:] / voxels,
            "confidence": 1.0 - np.bincount(ids, weights=binary_entropy(p), minlength=count + 1)[1:] / voxels,
        }
    )
    centroid_zyx = np.stack([np.bincount(ids, weights=c, minlength=count + 1)[1:] for c in coords], axis=1) / voxels[:, None]
    world = geometry.index_to_world(centroid_zyx[:, ::-1])
    axis = geometry.slice_axis_numpy
    offset = box[axis].start
    spans = ndimage.find_objects(labels)
    stats["first_slice"] = [s[axis].start + offset for s in spans]
    stats["last_slice"] = [s[axis].stop - 1 + offset for s in spans]
    stats["centroid_x_mm"], stats["centroid_y_mm"], stats["centroid_z_mm"] = world[:, 0], world[:, 1], world[:, 2]
    rows = _matching_rows(table, stats)
    for column in CONFIDENCE_COLUMNS:
        table[column] = stats[column].to_numpy()[rows]
    return table


def _bounding_box(mask: np.ndarray) -> tuple:
    """Slices of the smallest box holding every True voxel of a non-empty 3D mask."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _matching_rows(table: pd.DataFrame, stats: pd.DataFrame) -> np.ndarray:
    """For each lesion of ``table``, the row of ``stats`` describing the same component: equal voxel count and slice
    span, and the nearest centroid (the two are computed differently, so centroids agree only to rounding error;
    matching on rounded centroids failed whenever a coordinate sat on a rounding boundary)."""
    t = table[_EXACT_KEYS].reset_index(drop=True).astype(np.int64).assign(_t=np.arange(len(table)))
    s = stats[_EXACT_KEYS].astype(np.int64).assign(_s=np.arange(len(stats)))
    pairs = t.merge(s, on=_EXACT_KEYS)
    a = table[_CENTROID_KEYS].to_numpy(dtype=np.float64)[pairs["_t"].to_numpy()]
    b = stats[_CENTROID_KEYS].to_numpy(dtype=np.float64)[pairs["_s"].to_numpy()]
    pairs["_d"] = np.linalg.norm(a - b, axis=1)
    best = pairs.sort_values(["_d", "_t"], kind="stable").drop_duplicates("_t").sort_values("_t")
    if len(best) != len(table) or len(stats) != len(table) or best["_s"].duplicated().any() or (best["_d"] > _CENTROID_TOLERANCE_MM).any():
        raise ValueError("lesion table does not describe this mask")  # a bug, never a user error
    return best["_s"].to_numpy()
