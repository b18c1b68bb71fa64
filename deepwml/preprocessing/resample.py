"""In-plane resampling of [S, H, W] stacks, slice by slice: nothing is ever interpolated across slices.

Pixel centres are aligned the way ``scipy.ndimage.zoom(grid_mode=True)`` does it: the outer pixel edges of
input and output coincide, so resampling to a size and back returns to the same grid.
"""
from __future__ import annotations

import sys
from functools import lru_cache
from typing import Iterable, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage

from deepwml.utils.errors import PlanError


def target_inplane_shape(
    mode: str,
    shape_hw: Sequence[int],
    spacing_hw: Sequence[float],
    matrix: Sequence[int],
    target_spacing: Optional[Sequence[float]],
) -> Tuple[Tuple[int, int], Tuple[float, float]]:
    """Output (H, W) and its spacing in mm for the plan's in-plane mode."""
    shape = np.asarray(shape_hw, dtype=float)
    extent = shape * np.asarray(spacing_hw, dtype=float)
    if mode == "fixed_matrix":
        out = np.asarray(matrix, dtype=int)
    elif mode == "target_spacing":
        if target_spacing is None:
            raise PlanError("preprocessing.target_spacing is not set; the planner fills it from the fingerprint")
        out = np.maximum(1, np.round(extent / np.asarray(target_spacing, dtype=float))).astype(int)
    else:
        raise PlanError(f"unknown preprocessing.inplane_mode {mode!r}")
    # the true spacing of the output grid: the field of view is kept exactly
    return (int(out[0]), int(out[1])), (float(extent[0] / out[0]), float(extent[1] / out[1]))


def _anti_alias_sigma(shape_hw: Sequence[int], out_hw: Sequence[int]) -> np.ndarray:
    """Gaussian sigma per in-plane axis before downsampling, so fine texture does not alias (as skimage.transform.resize)."""
    factors = np.asarray(out_hw, dtype=float) / np.asarray(shape_hw, dtype=float)
    return np.maximum(0.0, (1.0 / factors - 1.0) / 2.0)


#: weights of a resampling operator below this are set to 0 (see _axis_operator)
OPERATOR_FLOOR = 1e-12


@lru_cache(maxsize=32)
def _axis_operator(n_in: int, n_out: int, order: int, sigma: float) -> np.ndarray:
    """The [n_out, n_in] matrix of resize_slices_reference along one axis: its Gaussian, spline prefilter and
    interpolation are linear and act on each axis separately, so running them on the identity gives the matrix."""
    basis = np.eye(n_in)
    if sigma > 0:
        basis = ndimage.gaussian_filter1d(basis, sigma, axis=0, mode="nearest")
    # along the second axis the zoom factor is 1: an interpolating spline returns the samples themselves there
    operator = ndimage.zoom(basis, (n_out / n_in, 1.0), order=order, mode="nearest", grid_mode=True).astype(np.float32)
    # the spline prefilter is recursive, so weights decay without end: far from each output pixel they fall below
    # float32's normal range, and denormal operands make the products ~10x slower on x86 (0.18 s instead of 0.016 s
    # for 25 slices 512 -> 256). Weights under 1e-12 (the largest is ~1) change no result beyond float32 rounding.
    operator[np.abs(operator) < OPERATOR_FLOOR] = 0.0
    return np.ascontiguousarray(operator)


def resize_slices(stack: np.ndarray, out_hw: Sequence[int], order: int, anti_alias: bool = False) -> np.ndarray:
    """Resample every slice of a float [S, H, W] stack to ``out_hw`` with spline ``order`` (Gaussian-smoothed first
    when ``anti_alias`` and shrinking).

    The same linear map as resize_slices_reference (scipy.ndimage per slice), applied as two matrix products: ~5x
    faster for 512 -> 256 with cubic splines, equal to float32 rounding (relative error < 1e-6).
    """
    stack = np.ascontiguousarray(stack, dtype=np.float32)
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    if stack.shape[1:] == out_hw:
        return stack.copy()
    sigma = _anti_alias_sigma(stack.shape[1:], out_hw) if anti_alias else np.zeros(2)
    rows = _axis_operator(stack.shape[1], out_hw[0], int(order), float(sigma[0]))
    cols = _axis_operator(stack.shape[2], out_hw[1], int(order), float(sigma[1]))
    torch = sys.modules.get("torch")
    if torch is None:  # prediction on ONNX Runtime does not import torch (2 s) for two matrix products
        return np.matmul(np.matmul(rows, stack), cols.T)
    # numpy's products either way, so that a result does not depend on whether torch happens to be imported (its
    # products round differently, ~6e-7 on AVX2 OpenBLAS machines); with torch loaded, no more BLAS threads than its
    # setting, which prediction shares out between its case workers
    from deepwml.utils.cpu import blas_thread_count, blas_threads

    with blas_threads(min(torch.get_num_threads(), blas_thread_count())):
        return np.matmul(np.matmul(rows, stack), cols.T)


def resize_slices_reference(stack: np.ndarray, out_hw: Sequence[int], order: int, anti_alias: bool = False) -> np.ndarray:
    """resize_slices computed slice by slice with scipy.ndimage: the definition, kept for the synthetic generator (whose
    output is pinned bit for bit) and as the tests' reference."""
    stack = np.asarray(stack, dtype=np.float32)
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    if stack.shape[1:] == out_hw:
        return stack.copy()
    factors = np.asarray(out_hw, dtype=float) / np.asarray(stack.shape[1:], dtype=float)
    sigma = _anti_alias_sigma(stack.shape[1:], out_hw) if anti_alias else np.zeros(2)
    out = np.empty((stack.shape[0],) + out_hw, dtype=np.float32)
    for k, plane in enumerate(stack):
        if sigma.any():
            plane = ndimage.gaussian_filter(plane, sigma, mode="nearest")
        out[k] = ndimage.zoom(plane, factors, output=np.float32, order=order, mode="nearest", grid_mode=True)
    return out


def resize_label(label: np.ndarray, out_hw: Sequence[int], threshold: float = 0.5) -> np.ndarray:
    """Resample an integer [S, H, W] label: each non-zero value linearly as a binary mask, then thresholded."""
    label = np.asarray(label)
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    if label.shape[1:] == out_hw:
        return label.astype(np.uint8, copy=True)
    out = np.zeros((label.shape[0],) + out_hw, dtype=np.uint8)
    values = [int(v) for v in np.unique(label) if v != 0]
    # lesion (1) last so that it wins where it and the ignore mask both pass the threshold
    for value in sorted(values, key=lambda v: (v == 1, v)):
        fraction = resize_slices(label == value, out_hw, order=1)
        out[_threshold_keeping_lesions(fraction, threshold) if value == 1 else fraction >= threshold] = value
    return out


def resize_classes(label: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
    """Resample a multi-class integer [S, H, W] label: each value's mask linearly, then per pixel the value whose
    fraction is largest (thresholding each class would leave holes where three classes meet)."""
    label = np.asarray(label)
    out_hw = (int(out_hw[0]), int(out_hw[1]))
    if label.shape[1:] == out_hw:
        return label.astype(np.uint8, copy=True)
    out = np.zeros((label.shape[0],) + out_hw, dtype=np.uint8)
    best = np.full(out.shape, -1.0, dtype=np.float32)
    for value in np.unique(label):
        fraction = resize_slices(label == value, out_hw, order=1)
        larger = fraction > best
        out[larger] = value
        best[larger] = fraction[larger]
    return out


def _linear_taps(n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output pixel: the two input pixels a linear resampling mixes and the weight of the second (the grid
    alignment of ``resize_slices``: outer pixel edges coincide, coordinates clamped at the edge pixels)."""
    x = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    first = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
    return first, np.minimum(first + 1, n_in - 1), (x - first).astype(np.float32)


def resize_class_probabilities(probs: np.ndarray, out_hw: Sequence[int]) -> np.ndarray:
    """The class (argmax) of class probabilities [S, C, h, w] resampled linearly to ``out_hw``, as uint8 [S, H, W].

    Only pixels near a class boundary are interpolated: where the four input pixels a linear resampling mixes
    share their argmax, every convex combination of them has that argmax too.
    """
    probs = np.asarray(probs, dtype=np.float32)
    s, _, h, w = probs.shape
    big_h, big_w = int(out_hw[0]), int(out_hw[1])
    best = _first_argmax(probs)
    if (h, w) == (big_h, big_w):
        return best
    y0, y1, wy = _linear_taps(h, big_h)
    x0, x1, wx = _linear_taps(w, big_w)
    # a cell (i, j) mixes input pixels i..i+1 x j..j+1 (clamped); uniform when all four share their class
    edge = np.pad(best, ((0, 0), (0, 1), (0, 1)), mode="edge")
    uniform = (best == edge[:, 1:, :-1]) & (best == edge[:, :-1, 1:]) & (best == edge[:, 1:, 1:])
    # 1D takes and flat indices instead of 2D/3D fancy indexing: the same pixels, several times faster
    out = best.take(y0, axis=1).take(x0, axis=2)
    flat = np.flatnonzero(~uniform.take(y0, axis=1).take(x0, axis=2))
    if flat.size:
        k, rc = np.divmod(flat, big_h * big_w)
        r, c = np.divmod(rc, big_w)
        a, b = wy[r], wx[c]
        weights = ((1 - a) * (1 - b), (1 - a) * b, a * (1 - b), a * b)
        # flat index of each tap in class 0's plane; class j's lies j planes further
        top_left = (k * probs.shape[1] * h + y0[r]) * w + x0[c]
        step_x, step_y = x1[c] - x0[c], (y1[r] - y0[r]) * w
        taps = (top_left, top_left + step_x, top_left + step_y, top_left + step_y + step_x)
        values = probs.reshape(-1)

        def mixed(value: int) -> np.ndarray:
            shift = value * h * w
            total = weights[0] * values.take(taps[0] + shift)
            for weight, tap in zip(weights[1:], taps[1:]):
                total += weight * values.take(tap + shift)
            return total

        out.reshape(-1)[flat] = _running_argmax(mixed(value) for value in range(probs.shape[1]))
    return out


def _first_argmax(probs: np.ndarray) -> np.ndarray:
    """``probs.argmax(axis=1)`` as uint8 for [S, C, h, w] (ties: the first class), class by class: numpy's argmax
    over a middle axis first copies the array into that axis' order."""
    return _running_argmax(probs[:, value] for value in range(probs.shape[1]))


def _running_argmax(planes: Iterable[np.ndarray]) -> np.ndarray:
    """The index (uint8) of the largest of equally shaped arrays given one after another; ties: the first."""
    planes = iter(planes)
    top = np.array(next(planes), copy=True)  # in the planes' own precision, as compared
    best = np.zeros(top.shape, dtype=np.uint8)
    for value, plane in enumerate(planes, start=1):
        larger = plane > top
        best[larger] = value
        np.maximum(top, plane, out=top)
    return best


def in_plane_structure() -> np.ndarray:
    """4-connectivity within a slice and none across slices, for ndimage on [S, H, W] stacks."""
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    return structure


def _threshold_keeping_lesions(fraction: np.ndarray, threshold: float) -> np.ndarray:
    """``fraction >= threshold``, plus the peak pixel of every lesion that the threshold alone would erase.

    Downsampling a lesion of a pixel or two, or one that straddles the new pixel grid, can leave it below
    the threshold everywhere; each connected patch of non-zero fraction keeps at least its peak instead.
    """
    mask = fraction >= threshold
    regions, n = ndimage.label(fraction > 1e-6, structure=in_plane_structure())
    if n == 0:
        return mask
    index = np.arange(1, n + 1)
    lost = index[ndimage.maximum(mask, regions, index) == 0]
    if lost.size:
        peaks = np.asarray(ndimage.maximum_position(fraction, regions, lost), dtype=int).reshape(-1, 3)
        mask[tuple(peaks.T)] = True
    return mask
