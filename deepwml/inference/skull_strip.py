"""``--skull-strip``: the lesion model sees only the brain the anatomy model finds, so a scan with its skull and the
same scan skull-stripped get the same lesions.

Why: the lesion network's instance normalisation takes its statistics over the whole slice, so what lies outside
the brain (scalp fat, bone, orbits) shifts how bright the brain looks to it. On real brains wrapped in a synthetic
skull it called 20-30 % more lesion than on the same brains stripped (benchmarks/README.md, "Real brains with a
skull"). The intensity normalisation is not the cause: an affine change of the network's input moves its mask by
about 1 % (the first instance norm undoes it), so the fix is what the network sees, not how it is scaled.

Everything outside the brain region (the anatomy map's parenchyma and ventricles, holes filled within each slice,
grown by STRIP_MARGIN_MM in plane so the cortex's edge and juxtacortical lesions stay) is set to 0, the background
of a skull-stripped scan, in every channel before the lesion model's own preprocessing.
"""
from __future__ import annotations

from dataclasses import replace
from typing import List, Sequence

import numpy as np
from scipy import ndimage

from deepwml.anatomy.labels import BACKGROUND
from deepwml.imageio import Geometry, Image
from deepwml.preprocessing.head_mask import fill_holes_in_plane
from deepwml.utils.errors import DeepWMLError

#: the brain region is grown by this much in plane: the anatomy map is coarse (1.5 mm) and trained on synthetic brains
STRIP_MARGIN_MM = 3.0
#: a brain region under this share of the scan's voxels is no brain the model found (a phantom, a wrong series)
MIN_BRAIN_SHARE = 0.005


def brain_region(anatomy: np.ndarray, geometry: Geometry, margin_mm: float = STRIP_MARGIN_MM) -> np.ndarray:
    """Boolean brain region of an anatomy map on its input's grid: every class but background, holes filled within
    each slice, grown by ``margin_mm`` in plane (never across slices)."""
    axis = geometry.slice_axis_numpy
    region = np.moveaxis(np.asarray(anatomy) != BACKGROUND, axis, 0)
    region = fill_holes_in_plane(region)
    if margin_mm > 0 and region.any():
        rows, cols = [s for i, s in enumerate(geometry.spacing[::-1]) if i != axis]
        # the distance to the region within each slice: the slice axis counts as infinitely far
        distance = ndimage.distance_transform_edt(~region, sampling=(1e9, rows, cols))
        region = distance <= margin_mm
    return np.moveaxis(region, 0, axis)


def strip_images(images: Sequence[Image], region: np.ndarray) -> List[Image]:
    """Each channel with everything outside ``region`` set to 0; a region with (almost) no brain is refused."""
    if region.mean() < MIN_BRAIN_SHARE:
        raise DeepWMLError(f"--skull-strip: the anatomy model finds no brain in this scan ({100 * region.mean():.2f} % of "
                           "its voxels): is it an axial head FLAIR? Predict it without --skull-strip", images[0].path)
    return [replace(image, array=np.where(region, image.array, 0).astype(image.array.dtype, copy=False)) for image in images]
