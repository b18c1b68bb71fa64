"""``--skull-strip``: the lesion model sees only the brain the anatomy model finds, so a scan with its skull and the
same scan skull-stripped get the same lesions.

Why: the lesion network's instance normalisation takes its statistics over the whole slice, so what lies outside
the brain (scalp fat, bone, orbits) shifts how bright the brain looks to it. On real brains wrapped in a synthetic
skull it called 20-30 % more lesion than on the same brains stripped (benchmarks/README.md, real-data development
check, `--add-head`). The intensity normalisation is not the cause: an affine change of the network's input moves
its mask by a few per cent (the first instance norm undoes it; benchmarks/input_scaling.py), the skull by 29-82 % on
the same stacks, so the fix is what the network sees, not how it is scaled.

Everything outside the brain region (the anatomy map's parenchyma and ventricles, holes filled within each slice,
grown by STRIP_MARGIN_MM in plane so the cortex's edge and juxtacortical lesions stay) is set to 0, the background
of a skull-stripped scan, in every channel before the lesion model's own preprocessing. A scan that is skull-stripped
already (:func:`already_stripped`) is left as it is: there is nothing left to remove, and the anatomy map of a stripped
brain is what can be wrong (the v8 anatomy model's region left out up to 17 % of the lesion voxels of the generator's
stripped scans; the one shipped since, trained on half stripped scans, finds them about as well as brains with skull).
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Sequence

import numpy as np
from scipy import ndimage

from deepwml.anatomy.labels import BACKGROUND
from deepwml.imageio import Geometry, Image
from deepwml.preprocessing.head_mask import fill_holes_in_plane, head_mask
from deepwml.preprocessing.outliers import suppress_outliers
from deepwml.utils.errors import DeepWMLError

#: the brain region is grown by this much in plane: the anatomy map is coarse (1.5 mm) and trained on synthetic brains
STRIP_MARGIN_MM = 3.0
#: a brain region under this share of the scan's voxels is no brain the model found (a phantom, a wrong series)
MIN_BRAIN_SHARE = 0.005
#: a stripped scan's background is one value: at least this share of the voxels outside its head mask hold it (the
#: generator's stripped scans 0.98-1.0, the rest brain apart from the head mask's largest part; with skull, noise: 0.01)
STRIPPED_BACKGROUND_SHARE = 0.9
#: and its head is the brain: at most this share of the head mask lies outside the brain region (a scan with its skull
#: has scalp, skull, orbits and face there: 0.43-0.58 of the head on the generator's scans, 0.01-0.11 stripped)
STRIPPED_HEAD_OUTSIDE_SHARE = 0.25


def brain_region(anatomy: np.ndarray, geometry: Geometry, margin_mm: float = STRIP_MARGIN_MM) -> np.ndarray:
    """Boolean brain region of an anatomy map on its input's grid: every class but background, holes filled within
    each slice, grown by ``margin_mm`` in plane (never across slices)."""
    axis = geometry.slice_axis_numpy
    region = np.moveaxis(np.asarray(anatomy) != BACKGROUND, axis, 0)
    region = fill_holes_in_plane(region)
    if margin_mm > 0:
        sampling = list(geometry.in_plane_pixels.values())
        # slice by slice: one 3D transform with the slice axis made far away gives the same and takes 10x as long
        region = np.stack([ndimage.distance_transform_edt(~plane, sampling=sampling) <= margin_mm if plane.any() else plane
                           for plane in region])
    return np.moveaxis(region, 0, axis)


def strip_images(images: Sequence[Image], region: np.ndarray) -> List[Image]:
    """Each channel with everything outside ``region`` set to 0; a region with (almost) no brain is refused."""
    if region.mean() < MIN_BRAIN_SHARE:
        raise DeepWMLError(f"--skull-strip: the anatomy model finds no brain in this scan ({100 * region.mean():.2f} % of "
                           "its voxels): is it an axial head FLAIR? Predict it without --skull-strip", images[0].path)
    return [replace(image, array=np.where(region, image.array, 0).astype(image.array.dtype, copy=False)) for image in images]


def already_stripped(image: Image, region: np.ndarray) -> bool:
    """Whether a scan is skull-stripped already: the background outside its head mask is one constant value (a
    scanner's background is noise) and its head lies (almost) inside the brain region."""
    axis = image.geometry.slice_axis_numpy
    values, _ = suppress_outliers(np.moveaxis(np.asarray(image.array, np.float32), axis, 0))
    head = np.moveaxis(head_mask(values), 0, axis)
    outside = np.asarray(image.array)[~head]
    if outside.size == 0 or not head.any():
        return False
    _, counts = np.unique(outside, return_counts=True)
    constant = counts.max() >= STRIPPED_BACKGROUND_SHARE * outside.size
    return bool(constant and (head & ~region).sum() <= STRIPPED_HEAD_OUTSIDE_SHARE * head.sum())
