"""Intensities as scanners and converters store them, and lesion contrast set against the subject's own brain.

Stored ranges differ by two orders of magnitude between sites (0..240 after an 8-bit export, 0..4095, 0..16383,
vendor-scaled int16 with a few negative background values), so a model must not rely on absolute values.
Lesion contrast is set per scan so that (lesion median - brain median) / brain IQR lands where real scans put it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

#: Stored modes and their shares: vendor int16 scale, rescaled to a fixed top value, or int16 with an offset.
STORAGE_MODES = {"vendor": 0.35, "uint8": 0.15, "12bit": 0.2, "14bit": 0.15, "signed": 0.15}
_TOPS = {"12bit": 4095, "14bit": 16383}
#: Share of scans whose lesion IQR figure is drawn from the real range 1.7-2.4; the rest from a wider one that
#: reaches down to about the 0.8-1.5 of real 3D FLAIR with bright cortex (generator v7: 0.65 and 0.9-2.9; v5-v6: 0.8 and
#: 1.3-2.9), where only shape and place tell a lesion from normal grey matter.
_IN_RANGE_SHARE = 0.65
_WIDE_RANGE = (0.9, 2.9)
#: At most this many voxels feed each median (strided, so deterministic).
_SAMPLE = 120_000


@dataclass(frozen=True)
class Storage:
    """How the magnitude image becomes stored integers."""

    mode: str
    #: stored value of the brightest voxel in the rescaled modes (uint8, 12bit, 14bit)
    top: int
    #: signed mode: the background is shifted down by this many noise sigmas (a few values become negative)
    offset_sigmas: float
    #: value outside the brain mask of a skull-stripped scan
    background: int = 0


def sample_storage(rng: np.random.Generator) -> Storage:
    """The storage of one scan."""
    modes = list(STORAGE_MODES)
    mode = str(rng.choice(modes, p=np.array(list(STORAGE_MODES.values())) / sum(STORAGE_MODES.values())))
    top = int(rng.integers(230, 256)) if mode == "uint8" else _TOPS.get(mode, 0)
    offset = float(rng.uniform(0.15, 0.6)) if mode == "signed" else 0.0
    return Storage(mode, top, offset)


def sample_iqr_target(rng: np.random.Generator) -> float:
    """(lesion median - brain median) / brain IQR wanted for this scan: mostly the real 1.7-2.4, sometimes beyond."""
    if rng.random() < _IN_RANGE_SHARE:
        return float(rng.uniform(1.72, 2.38))
    return float(rng.uniform(*_WIDE_RANGE))


def store(image: np.ndarray, scale: float, storage: Storage, sigma: float, mask: Optional[np.ndarray] = None) -> np.ndarray:
    """Scale ``image`` (white matter ~ 1) to stored int16 values; outside ``mask`` (skull stripping) the background value."""
    if storage.top:
        peak = float(image.max()) if mask is None else float(image[mask].max(initial=0.0))
        factor = np.float32(storage.top / max(peak, 1e-6))
        out = np.clip(np.rint(image * factor), 0, storage.top)
    else:
        shift = np.float32(storage.offset_sigmas * sigma * scale)
        out = np.clip(np.rint(image * np.float32(scale) - shift), -32768 if storage.mode == "signed" else 0, 32767)
    out = out.astype(np.int16)
    if mask is not None:
        out[~mask] = storage.background
    return out


def lesion_level(
    base: np.ndarray, lesion: np.ndarray, imag: np.ndarray, label: np.ndarray, brain: np.ndarray, target: float, start: float
) -> float:
    """Lesion signal L for which |base + (L - 1) * lesion + i * imag| has the wanted IQR figure.

    ``base`` is the image with lesions painted as white matter, ``lesion`` its derivative with respect to the
    lesion signal, ``imag`` the imaginary noise; the figure is measured on ``label`` against ``brain`` (non-lesion).
    """
    li = _sample(label)
    bi = _sample(brain & ~label)
    if li.size == 0 or bi.size < 100:
        return start
    parts = [(a.ravel()[li], a.ravel()[bi]) for a in (base, lesion, imag)]
    (l0, b0), (l1, b1), (lim, bim) = parts
    level = float(start)
    for _ in range(2):  # brain voxels next to lesions move a little with L too: one refinement suffices
        brain_values = np.hypot(b0 + np.float32(level - 1.0) * b1, bim)
        q25, med, q75 = np.percentile(brain_values, [25, 50, 75])
        want = med + target * (q75 - q25)
        lo, hi = 1.0, 4.0
        for _ in range(24):
            mid = 0.5 * (lo + hi)
            if np.median(np.hypot(l0 + np.float32(mid - 1.0) * l1, lim)) < want:
                lo = mid
            else:
                hi = mid
        level = 0.5 * (lo + hi)
    return level


def _sample(mask: np.ndarray) -> np.ndarray:
    """Flat indices of at most about ``_SAMPLE`` voxels of ``mask``, evenly strided."""
    idx = np.flatnonzero(mask)
    return idx[:: max(1, idx.size // _SAMPLE)]
