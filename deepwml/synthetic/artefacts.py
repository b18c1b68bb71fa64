"""Acquisition artefacts that real thick-slice FLAIR shows and that are never lesion.

- motion ghosting: faint replicas of the head shifted by a fraction of the field of view along phase encoding;
- Gibbs ringing: k-space truncated with a hard edge (acquired matrix smaller than the reconstructed one);
- interleaved slice-to-slice intensity steps: odd and even slices acquired in separate passes, scaled differently.

All three are linear in the signal, so they can be applied to each additive part of the image separately.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

import numpy as np
from scipy import fft as sfft


@dataclass(frozen=True)
class Artefacts:
    """The artefacts of one scan; amplitude 0 (or keep 1) means absent."""

    #: ghost amplitude per slice (relative to the head), replicas at multiples of field of view / ghost_period
    ghost: Tuple[float, ...]
    ghost_period: int
    #: numpy axis of the phase-encoding direction in a (z, y, x) stack: 1 or 2
    ghost_axis: int
    #: share of k-space kept along each in-plane axis (1: no truncation)
    k_keep: Tuple[float, float]
    #: odd slices are scaled by 1 + interleave
    interleave: float


def sample_artefacts(rng: np.random.Generator, n_slices: int) -> Artefacts:
    """Ghosting in about a third of scans, ringing in about 60 %, interleave steps in about 40 %."""
    ghost = (0.0,) * n_slices
    if rng.random() < 0.35:
        # motion differs from slice to slice: some slices ghost clearly, others hardly
        ghost = tuple(float(v) for v in rng.uniform(0.015, 0.07) * rng.uniform(0.2, 1.5, n_slices))
    period = int(rng.choice([2, 3, 4, 6]))
    axis = int(rng.choice([1, 2]))
    keep = (1.0, 1.0)
    if rng.random() < 0.6:
        keep = (float(rng.uniform(0.5, 0.9)), float(rng.uniform(0.6, 1.0)))
        if rng.random() < 0.5:
            keep = keep[::-1]
    interleave = float(rng.uniform(0.03, 0.1) * rng.choice([-1, 1])) if rng.random() < 0.4 else 0.0
    return Artefacts(ghost, period, axis, keep, interleave)


def apply_artefacts(signal: np.ndarray, art: Artefacts) -> np.ndarray:
    """``signal`` (z, y, x, float32) with the scan's artefacts; linear in ``signal``."""
    out = signal
    if art.interleave:
        out = out.copy()
        out[1::2] *= np.float32(1.0 + art.interleave)
    if min(art.k_keep) < 1.0:
        out = _truncate_kspace(out, art.k_keep)
    if any(art.ghost):
        n = out.shape[art.ghost_axis]
        step = max(1, int(round(n / art.ghost_period)))
        weights = np.asarray(art.ghost, np.float32)[:, None, None]
        ghosts = 0.5 * (np.roll(out, step, axis=art.ghost_axis) + np.roll(out, -step, axis=art.ghost_axis))
        if art.ghost_period > 2:  # the second replica pair, fainter
            ghosts += 0.25 * (np.roll(out, 2 * step, axis=art.ghost_axis) + np.roll(out, -2 * step, axis=art.ghost_axis))
        out = out + weights * ghosts
    return out.astype(np.float32, copy=False)


def _truncate_kspace(signal: np.ndarray, keep: Tuple[float, float]) -> np.ndarray:
    """Zero k-space outside the central ``keep`` share of each in-plane axis: blurring plus ringing at sharp edges."""
    ny, nx = signal.shape[1:]
    spectrum = sfft.rfft2(signal, axes=(1, 2), workers=1)
    fy = np.abs(sfft.fftfreq(ny))[:, None]
    fx = sfft.rfftfreq(nx)[None, :]
    window = (fy <= 0.5 * keep[0]) & (fx <= 0.5 * keep[1])
    spectrum *= window[None]
    return sfft.irfft2(spectrum, s=(ny, nx), axes=(1, 2), workers=1).astype(np.float32)
