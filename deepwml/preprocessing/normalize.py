"""Per-case intensity normalisation: clip at percentiles, then z-score (inside the head mask by default)."""
from __future__ import annotations

from typing import Dict, Sequence

import numpy as np

from deepwml.planning.plan import NORMALIZATION_SCHEMES
from deepwml.utils.errors import PlanError

SCHEMES = NORMALIZATION_SCHEMES
#: a spread at most this, absolutely and as a share of the largest value, is a constant image's float32 rounding
CONSTANT_SPREAD = 1e-6


def normalization_stats(stack: np.ndarray, head: np.ndarray, scheme: str, clip_percentiles: Sequence[float]) -> Dict[str, float]:
    """Clip bounds, mean and std (of the clipped values) over the voxels the scheme uses."""
    if scheme not in SCHEMES:
        raise PlanError(f"preprocessing.normalization {scheme!r} is not one of {', '.join(SCHEMES)}")
    if scheme == "none":
        return {"scheme": scheme, "clip_low": None, "clip_high": None, "mean": 0.0, "std": 1.0}
    values = stack[head] if scheme == "zscore_head" and head.any() else stack.ravel()
    low, high = np.percentile(values, clip_percentiles)
    clipped = np.clip(values, low, high)
    mean, std = float(clipped.mean()), float(clipped.std())
    # a constant image would divide by zero; keep it unscaled instead. A spread under 1e-6 is constant only when it is
    # also tiny beside the values themselves (float32 rounding): a scan stored in units of 1e-6 is no constant image
    flat = std <= CONSTANT_SPREAD and std <= CONSTANT_SPREAD * max(abs(float(low)), abs(float(high)))
    return {"scheme": scheme, "clip_low": float(low), "clip_high": float(high), "mean": mean, "std": 1.0 if flat else std}


def apply_normalization(stack: np.ndarray, stats: Dict[str, float]) -> np.ndarray:
    """Apply :func:`normalization_stats` to the whole stack (float32)."""
    out = np.asarray(stack, dtype=np.float32)
    if stats["clip_low"] is not None:
        out = np.clip(out, stats["clip_low"], stats["clip_high"])
    return (out - np.float32(stats["mean"])) / np.float32(stats["std"])
