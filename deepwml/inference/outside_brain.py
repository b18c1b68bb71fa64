"""Lesions outside the brain are dropped by default: a white-matter hyperintensity lies in the brain, so a predicted
lesion with no voxel in the anatomy model's brain region is a false positive (orbital or scalp fat, skull base,
sinuses, a ghost in the air), as issue #12 found them on real scans with their skull.

The brain region is the one ``--skull-strip`` uses (deepwml.inference.skull_strip.brain_region: the anatomy map's
parenchyma and ventricles, holes filled in each slice, grown 3 mm in plane), and a lesion is dropped only when none
of its voxels lies in it, so a lesion at the brain's edge that the coarse map cuts stays whole. The shipped model on
its held-out synthetic set (generator v12, seed 1000; benchmarks/README.md): 14 of 833 predicted lesions dropped,
none of them true, lesion F1 0.657 -> 0.665, case mean HD95 21.1 -> 17.7 mm. ``deepwml_predict --keep-outside-brain``
turns it off; without an anatomy model nothing is dropped.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np
from scipy import ndimage

from deepwml.anatomy.labels import BACKGROUND
from deepwml.imageio import Geometry
from deepwml.inference.lesion_report import label_lesions, lesion_box
from deepwml.inference.skull_strip import MIN_BRAIN_SHARE, STRIP_MARGIN_MM
from deepwml.preprocessing.head_mask import fill_holes_in_plane


def drop_outside_brain(mask: np.ndarray, anatomy: np.ndarray, geometry: Geometry) -> Tuple[np.ndarray, int]:
    """(the mask, uint8 on the same grid, without the lesions that have no voxel in the anatomy map's brain region,
    the number of lesions dropped); the mask as it is when the map finds (almost) no brain, where the map, not the
    lesions, is what is wrong."""
    mask = np.asarray(mask, np.uint8)
    anatomy = np.asarray(anatomy)
    axis = geometry.slice_axis_numpy
    box = lesion_box(mask)
    if box is None or np.mean(anatomy != BACKGROUND) < MIN_BRAIN_SHARE:
        return mask, 0
    sampling = list(geometry.in_plane_pixels.values())
    reach = margin_pixels(geometry)
    # everything in the lesions' box grown by the margin in plane (a brain voxel within reach lies in it), and the
    # brain filled in whole planes, as brain_region fills it: the same lesions go, in a fraction of the time
    box = grown_in_plane(box, geometry)
    planes = np.moveaxis(label_lesions(mask[box])[0], axis, 0)
    whole = np.moveaxis(anatomy[tuple(b if a == axis else slice(None) for a, b in enumerate(box))] != BACKGROUND, axis, 0)
    in_plane = tuple(b for a, b in enumerate(box) if a != axis)
    brain = fill_holes_in_plane(whole)[(slice(None),) + in_plane]
    keep = np.zeros(int(planes.max()) + 1, bool)
    keep[np.unique(planes[brain])] = True
    # the others are measured against the brain in a box around each, not by growing the brain of every slice
    for index, lesion in enumerate(ndimage.find_objects(planes), start=1):
        if keep[index] or lesion is None:
            continue
        grown = (lesion[0],) + tuple(slice(max(b.start - r, 0), b.stop + r) for b, r in zip(lesion[1:], reach))
        keep[index] = any(_within_margin(one, near, sampling) for one, near in zip(planes[grown] == index, brain[grown]))
    keep[0] = False
    out = np.zeros_like(mask)
    out[box] = np.moveaxis(keep[planes], 0, axis)
    return out, int(len(keep) - 1 - keep.sum())


def margin_pixels(geometry: Geometry) -> list:
    """STRIP_MARGIN_MM in pixels along each in-plane numpy axis (ascending), rounded up."""
    return [int(np.ceil(STRIP_MARGIN_MM / s)) for s in geometry.in_plane_pixels.values()]


def grown_in_plane(box: Tuple[slice, ...], geometry: Geometry) -> Tuple[slice, ...]:
    """``box`` grown by STRIP_MARGIN_MM in plane (clipped at 0; slicing clips the far end): every voxel within the
    margin of one in the box, in its slice, lies in it."""
    axis = geometry.slice_axis_numpy
    grow = dict(zip((a for a in range(len(box)) if a != axis), margin_pixels(geometry)))
    return tuple(slice(max(b.start - grow[a], 0), b.stop + grow[a]) if a in grow else b for a, b in enumerate(box))


def _within_margin(lesion: np.ndarray, brain: np.ndarray, sampling: Sequence[float]) -> bool:
    """Whether a brain pixel of the plane lies within STRIP_MARGIN_MM of a lesion pixel."""
    if not (lesion.any() and brain.any()):
        return False
    return bool((ndimage.distance_transform_edt(~lesion, sampling=sampling)[brain] <= STRIP_MARGIN_MM).any())
