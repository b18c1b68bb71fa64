"""Intensity outliers (a voxel at 1e30, a few hundred hot voxels of a spike artefact) must not steer the head mask
or the normalisation: voxels far outside the scan's robust intensity range take the value of their nearest other
voxel in the slice before anything else sees the scan. A clean scan has no such voxel: its result is unchanged.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

#: the robust range lies between these percentiles: up to 1% of the voxels at either end may be outliers
FENCE_PERCENTILES = (1.0, 99.0)
#: a voxel is an outlier when it lies this many robust ranges beyond the range (scale-free: ×1e6 changes nothing)
FENCE_FACTOR = 5.0
#: at most this many voxels feed the percentiles; a strided sample keeps it deterministic and fast
_SAMPLE = 200_000


def outlier_fences(stack: np.ndarray) -> Tuple[float, float]:
    """(low, high): values outside are outliers; (-inf, inf) when the robust range is empty (a flat image)."""
    flat = np.asarray(stack).ravel()
    sample = flat[:: max(1, flat.size // _SAMPLE)].astype(np.float64)
    low, high = np.percentile(sample, FENCE_PERCENTILES)
    spread = high - low
    if not spread > 0:
        return -np.inf, np.inf
    return float(low - FENCE_FACTOR * spread), float(high + FENCE_FACTOR * spread)


def suppress_outliers(stack: np.ndarray) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(stack with each outlier replaced by its nearest other voxel in the slice, boolean outlier mask or None).

    This happens before any resampling: a spline would spread a 1e30 voxel over dozens of its neighbours, and
    the nearest voxel's value (rather than the brightest) keeps a hot pixel from looking like a lesion.
    """
    stack = np.asarray(stack, dtype=np.float32)
    low, high = outlier_fences(stack)
    outliers = (stack < low) | (stack > high)
    if not outliers.any():
        return stack, None
    out = stack.copy()
    inliers = stack[~outliers]
    for k in np.flatnonzero(outliers.any(axis=(1, 2))):  # only the slices that hold outliers: a full EDT costs seconds
        if outliers[k].all():
            out[k] = np.clip(stack[k], inliers.min(), inliers.max())
            continue
        nearest = ndimage.distance_transform_edt(outliers[k], return_distances=False, return_indices=True)
        out[k] = stack[k][tuple(nearest)]
    return out, outliers
