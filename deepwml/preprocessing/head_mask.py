"""A head (foreground) mask for intensity normalisation: Otsu threshold, holes filled per slice, largest component."""
from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

from deepwml.preprocessing.resample import in_plane_structure

#: at most this many voxels feed the threshold; a strided sample keeps it deterministic and fast
_THRESHOLD_SAMPLE = 200_000


def head_mask(stack: np.ndarray) -> np.ndarray:
    """Boolean head mask of an [S, H, W] stack; the whole stack when no head can be told from background.

    Pass the stack through preprocessing.outliers.suppress_outliers first: Otsu's histogram spans the full value
    range, so a single voxel at 1e30 would squeeze every real intensity into one bin.
    """
    stack = np.asarray(stack, dtype=np.float32)
    flat = stack.ravel()
    sample = flat[:: max(1, flat.size // _THRESHOLD_SAMPLE)]
    low, high = float(sample.min()), float(sample.max())
    if low == high:
        return np.ones(stack.shape, dtype=bool)
    # Otsu on the sample scaled to [0, 1] in float64: its between-class variance squares intensities, which
    # overflows float32 for scans stored at 1e20 and more; the threshold is the same, mapped back
    mask = stack > low + (high - low) * threshold_otsu((sample.astype(np.float64) - low) / (high - low))
    # holes are filled within each slice only: slices 5-8 mm apart are not a continuous volume
    mask = open_in_plane(mask)
    # filling before choosing a component: the scalp ring then encloses skull, CSF and brain as one head,
    # where the dark bone would otherwise split it into brain and scalp and the largest part would win
    mask = fill_holes_in_plane(mask)
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.ones(stack.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def open_in_plane(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_opening(mask, structure=in_plane_structure())`` (4-neighbour cross per slice, pixels beyond
    the slice count as background) with shifted array views: the same pixels, several times faster."""
    eroded = np.asarray(mask, dtype=bool).copy()
    _cross_step(eroded, mask, np.logical_and)
    for edge in (np.s_[:, 0], np.s_[:, -1], np.s_[:, :, 0], np.s_[:, :, -1]):
        eroded[edge] = False
    opened = eroded.copy()
    _cross_step(opened, eroded, np.logical_or)
    return opened


def _cross_step(out: np.ndarray, source: np.ndarray, combine: np.ufunc) -> None:
    """Combine ``out`` in place with ``source`` shifted one pixel up, down, left and right (the slice axis stays)."""
    for target, shifted in ((np.s_[:, 1:], np.s_[:, :-1]), (np.s_[:, :-1], np.s_[:, 1:]),
                            (np.s_[:, :, 1:], np.s_[:, :, :-1]), (np.s_[:, :, :-1], np.s_[:, :, 1:])):
        combine(out[target], source[shifted], out=out[target])


def fill_holes_in_plane(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes(mask, structure=in_plane_structure())``: background not 4-connected within its
    slice to the slice's edge becomes foreground. One labelling instead of scipy's dilation to convergence."""
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(~mask, structure=in_plane_structure())
    outside = np.zeros(n + 1, dtype=bool)
    for edge in (labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]):
        outside[edge] = True
    outside[0] = False  # label 0 is the foreground itself
    return ~outside[labels]


#: a skull-stripped scan's background is one value: at least this share of the voxels outside its head mask hold it
#: (the generator's stripped scans 0.97-1.0; scans with their skull, whose background is noise, 0.001-0.08)
STRIPPED_BACKGROUND_SHARE = 0.9


def constant_background(stack: np.ndarray, head: np.ndarray) -> bool:
    """Whether the voxels of ``stack`` outside ``head`` (the scan as stored, not outlier-suppressed) are one value, as
    a skull-stripped scan's background is and a scanner's noise never is; False when there is no such voxel."""
    outside = np.asarray(stack)[~np.asarray(head, dtype=bool)]
    if outside.size == 0:
        return False
    # a value held by more than half of them is their median: one partition instead of np.unique's sort
    return bool(np.count_nonzero(outside == np.median(outside)) >= STRIPPED_BACKGROUND_SHARE * outside.size)
