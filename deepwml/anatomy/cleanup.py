"""Cortex the anatomy model finds inside the white matter, given back to the white matter.

On FLAIR grey matter is brighter than white matter and a lesion brighter still, so the anatomy model often labels a
white-matter lesion, or the bright rim around it, as cortex: a patch of cortex class enclosed in white matter. The
cortical ribbon itself always borders the CSF outside the brain (background in the map: sulci, fissures, the brain's
surface), so a cortex component that touches no background is such a patch. Left in the map it made most deep and
subcortical lesions 'cortical' (benchmarks/README.md, "Lesion locations and the anatomy map's cortex").

A lesion-aware anatomy model (trained with lesions as a sixth class, deepwml.anatomy.labels.LESION) names the lesions
themselves instead; its map gives each lesion back to the tissue around it.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from deepwml.anatomy.labels import BACKGROUND, CORTEX, INFRATENTORIAL, LESION, WHITE_MATTER

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


def lesions_to_tissue(labels: np.ndarray) -> np.ndarray:
    """The label map with every lesion-class component (26-connected) given the tissue around it: infratentorial when
    more of the voxels touching it are infratentorial than white matter, else white matter when any is (not the
    cortex: a lesion next to the cortex stays juxtacortical, as its neighbour tells); one touching neither is cortex
    when it touches cortex, background when it touches background (a false lesion outside the brain stays outside),
    else white matter. A new array; a map without the lesion class comes back unchanged."""
    labels = np.asarray(labels)
    lesion = labels == LESION
    out = labels.copy()
    if not lesion.any():
        return out
    # only the lesions' bounding box (one voxel wider for their neighbours) is searched
    box = tuple(slice(max(int(i.min()) - 1, 0), int(i.max()) + 2) for i in np.nonzero(lesion))
    sub, sub_lesion = labels[box], lesion[box]
    components, count = ndimage.label(sub_lesion, _CONNECTIVITY)
    # each neighbour voxel takes the id of a lesion it touches (the larger id where it touches two)
    touching = ndimage.grey_dilation(components, footprint=_CONNECTIVITY)
    ring = (touching > 0) & ~sub_lesion
    wm, infra, cortex, outside = (np.bincount(touching[ring & (sub == tissue)], minlength=count + 1)
                                  for tissue in (WHITE_MATTER, INFRATENTORIAL, CORTEX, BACKGROUND))
    tissue = np.select([infra > wm, wm > 0, cortex > 0, outside > 0], [INFRATENTORIAL, WHITE_MATTER, CORTEX, BACKGROUND],
                       WHITE_MATTER).astype(labels.dtype)
    out[box][sub_lesion] = tissue[components[sub_lesion]]
    return out
