"""Cortex the anatomy model finds inside the white matter, given back to the white matter.

On FLAIR grey matter is brighter than white matter and a lesion brighter still, so the anatomy model often labels a
white-matter lesion, or the bright rim around it, as cortex: a patch of cortex class enclosed in white matter. The
cortical ribbon itself always borders the CSF outside the brain (background in the map: sulci, fissures, the brain's
surface), so a cortex component that touches no background is such a patch. Left in the map it made most deep and
subcortical lesions 'cortical' (benchmarks/README.md, "Lesion locations and the anatomy map's cortex").
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from deepwml.anatomy.labels import BACKGROUND, CORTEX, WHITE_MATTER

#: 26-connectivity: cortex voxels touching by a face, an edge or a corner are one component (as lesions are counted);
#: thick slices join the ribbon of neighbouring slices only this way
_CONNECTIVITY = np.ones((3, 3, 3), dtype=bool)


def touches_background(labels: np.ndarray, voxels: np.ndarray) -> np.ndarray:
    """Which of ``voxels`` (a boolean map) have a face neighbour in the background class."""
    out = np.zeros(labels.shape, bool)
    background = labels == BACKGROUND
    for axis in range(labels.ndim):
        ahead = [slice(None)] * labels.ndim
        behind = [slice(None)] * labels.ndim
        ahead[axis], behind[axis] = slice(1, None), slice(None, -1)
        # a voxel touches background through its neighbour on either side along this axis
        out[tuple(behind)] |= background[tuple(ahead)]
        out[tuple(ahead)] |= background[tuple(behind)]
    return out & voxels


def enclosed_cortex_to_white_matter(labels: np.ndarray) -> np.ndarray:
    """The anatomy label map with every cortex component that touches no background relabelled white matter (a new
    array; ``labels`` is left as it is); a map without background comes back unchanged."""
    labels = np.asarray(labels)
    cortex = labels == CORTEX
    # with no background in the map (a field of view inside the head) nothing tells the ribbon from a patch
    if not cortex.any() or not (labels == BACKGROUND).any():
        return labels.copy()
    components, count = ndimage.label(cortex, _CONNECTIVITY)
    keep = np.zeros(count + 1, bool)
    keep[np.unique(components[touches_background(labels, cortex)])] = True
    keep[0] = True  # not cortex: left as it is
    out = labels.copy()
    out[~keep[components]] = WHITE_MATTER
    return out
