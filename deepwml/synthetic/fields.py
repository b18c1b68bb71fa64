"""Smooth random fields and cheap resampling: FFT-filtered noise on coarse grids, separable linear interpolation."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import numpy as np
from scipy import fft as sfft
from scipy import ndimage


@dataclass
class CoarseField:
    """Values on a regular grid: ``values[i, j, k]`` sits at ``origin + (i, j, k) * spacing`` (mm, z y x order)."""

    values: np.ndarray
    origin: Tuple[float, float, float]
    spacing: Tuple[float, float, float]

    def sample(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Trilinear values on the tensor grid z × y × x (1D coordinate vectors in mm); shape (len z, len y, len x)."""
        out = self.values
        for axis, coords in enumerate((z, y, x)):
            out = _lerp_along(out, (np.asarray(coords, np.float64) - self.origin[axis]) / self.spacing[axis], axis)
        return out

    def sample_points(self, z: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Trilinear values at scattered points (arrays of mm coordinates of equal shape)."""
        idx = [(np.asarray(c, np.float32) - np.float32(o)) / np.float32(s) for c, o, s in zip((z, y, x), self.origin, self.spacing)]
        return ndimage.map_coordinates(self.values, idx, order=1, mode="nearest").astype(np.float32, copy=False)


@dataclass
class AlignedField:
    """A field on a coarse grid whose in-plane pixels are exactly ``factor`` fine pixels wide (pixel-centred).

    Sampling interpolates freely along z but upsamples in-plane by slicing, with no gathers: the cheapest way to
    bring smooth fields to the fine grid block after block.
    """

    values: np.ndarray
    z0: float
    dz: float
    factor: int
    #: fine (y, x) index of the first fine pixel covered, and how many fine pixels the field covers
    offset: Tuple[int, int]
    size: Tuple[int, int]

    def sample(self, z: np.ndarray) -> np.ndarray:
        """Values at the fine z positions ``z`` (mm) on the fine in-plane pixels this field covers."""
        out = _lerp_along(self.values, (np.asarray(z, np.float64) - self.z0) / self.dz, 0)
        out = upsample_linear(upsample_linear(out, self.factor, 1), self.factor, 2)
        return out[:, : self.size[0], : self.size[1]]

    @property
    def block(self) -> Tuple[slice, slice]:
        """The fine (y, x) index block this field covers."""
        return slice(self.offset[0], self.offset[0] + self.size[0]), slice(self.offset[1], self.offset[1] + self.size[1])


def _lerp_along(a: np.ndarray, u: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``a`` at fractional indices ``u`` along ``axis``, clamped at the edges."""
    n = a.shape[axis]
    u = np.clip(u, 0.0, n - 1.0)
    i0 = np.minimum(np.floor(u).astype(np.intp), max(n - 2, 0))
    i1 = np.minimum(i0 + 1, n - 1)
    w = (u - i0).astype(np.float32)
    shape = [1] * a.ndim
    shape[axis] = len(u)
    w = w.reshape(shape)
    a0 = np.take(a, i0, axis=axis)
    return a0 + w * (np.take(a, i1, axis=axis) - a0)


def band_noise(
    rng: np.random.Generator,
    shape: Sequence[int],
    spacing_mm: Sequence[float],
    wavelength_mm: float,
    bandpass: bool = False,
) -> np.ndarray:
    """Unit-variance Gaussian random field whose structures are about ``wavelength_mm`` across.

    Low-pass (blobs of that size) by default; ``bandpass`` keeps only a ring around that wavelength, which gives
    the evenly spaced ridges and valleys of a folded cortex.
    """
    shape = tuple(int(s) for s in shape)
    white = rng.standard_normal(shape, dtype=np.float32)
    spectrum = sfft.rfftn(white, workers=1)
    freqs = [sfft.fftfreq(n, d) for n, d in zip(shape[:-1], spacing_mm[:-1])] + [sfft.rfftfreq(shape[-1], spacing_mm[-1])]
    k2 = np.zeros(spectrum.shape, np.float32)
    for axis, f in enumerate(freqs):
        view = [1] * len(shape)
        view[axis] = len(f)
        k2 = k2 + (f.astype(np.float32) ** 2).reshape(view)
    k0 = 1.0 / wavelength_mm
    if bandpass:
        gain = np.exp(-((np.sqrt(k2) - k0) ** 2) / (2 * (0.3 * k0) ** 2))
    else:
        gain = np.exp(-k2 / (2 * (0.5 * k0) ** 2))
    field = sfft.irfftn(spectrum * gain, s=shape, workers=1).astype(np.float32)
    field -= field.mean()
    std = float(field.std())
    return field / std if std > 0 else field


def noise_field(
    rng: np.random.Generator,
    lo_mm: Sequence[float],
    hi_mm: Sequence[float],
    spacing_mm: float,
    wavelength_mm: float,
    bandpass: bool = False,
) -> CoarseField:
    """A :func:`band_noise` field covering the box lo..hi (mm, z y x) on an isotropic grid."""
    lo = np.asarray(lo_mm, float)
    n = np.maximum(2, np.ceil((np.asarray(hi_mm, float) - lo) / spacing_mm).astype(int) + 2)
    n = [sfft.next_fast_len(int(v), real=True) for v in n]  # a little more coverage, a much faster FFT
    values = band_noise(rng, n, (spacing_mm,) * 3, wavelength_mm, bandpass)
    return CoarseField(values, tuple(lo), (spacing_mm,) * 3)


def upsample_linear(a: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Pixel-centred linear upsampling by an integer factor along one axis (edges clamped), without gathers."""
    if factor == 1:
        return a
    n = a.shape[axis]
    at = lambda start, stop, step=1: tuple(slice(start, stop, step) if i == axis else slice(None) for i in range(a.ndim))  # noqa: E731
    a = a.astype(np.result_type(a, np.float32), copy=False)
    shape = list(a.shape)
    shape[axis] = n * factor
    out = np.empty(shape, a.dtype)
    step = a[at(1, n)] - a[at(0, n - 1)]
    tmp = np.empty_like(step)
    for r in range(factor):
        # fine pixel r of each coarse pixel sits this far (in coarse pixels) from the coarse pixel's centre
        offset = (r + 0.5) / factor - 0.5
        np.multiply(step, np.float32(offset), out=tmp)
        if offset < 0:  # between the previous coarse pixel and this one; the first one has no previous: clamp
            np.add(a[at(1, n)], tmp, out=out[at(factor + r, None, factor)])
            out[at(r, r + 1)] = a[at(0, 1)]
        else:
            np.add(a[at(0, n - 1)], tmp, out=out[at(r, (n - 1) * factor, factor)])
            out[at((n - 1) * factor + r, (n - 1) * factor + r + 1)] = a[at(n - 1, n)]
    return out


def upsample_inplane(a: np.ndarray, factor: int) -> np.ndarray:
    """Upsample the last two axes of a (z, y, x) stack by an integer factor."""
    return upsample_linear(upsample_linear(a, factor, a.ndim - 2), factor, a.ndim - 1)
