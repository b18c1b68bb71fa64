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
    if sample.min() == sample.max():
        return np.ones(stack.shape, dtype=bool)
    mask = stack > threshold_otsu(sample)
    # holes are filled within each slice only: slices 5-8 mm apart are not a continuous volume
    in_plane = in_plane_structure()
    mask = ndimage.binary_opening(mask, structure=in_plane)
    # filling before choosing a component: the scalp ring then encloses skull, CSF and brain as one head,
    # where the dark bone would otherwise split it into brain and scalp and the largest part would win
    mask = ndimage.binary_fill_holes(mask, structure=in_plane)
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.ones(stack.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))
