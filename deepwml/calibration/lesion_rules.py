"""The anatomy map's rules as a postprocessing search applies them to one case at every threshold: which labelled
lesions deepwml_predict would keep (deepwml.inference.outside_brain.drop_outside_brain, then
deepwml.inference.cortex_contrast.drop_faint_cortical), decided lesion by lesion on the search's own labels.

Both rules drop whole lesions, each judged by itself, so a search can ask them about the lesions it has labelled
instead of handing them a mask to label again; what depends on the map alone (the brain region filled in each slice,
the band within STRIP_MARGIN_MM of it, the ventricles' contact field, the cortex) is worked out once per case instead
of once per threshold. The decisions are the two functions' own: a test compares them mask by mask.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from deepwml.anatomy.labels import BACKGROUND, CORTEX
from deepwml.anatomy.location import VentricleField, contact_field, lesion_classes
from deepwml.imageio import Geometry
from deepwml.inference.cortex_contrast import RULE_LOCATIONS
from deepwml.inference.outside_brain import grown_in_plane
from deepwml.inference.skull_strip import MIN_BRAIN_SHARE, STRIP_MARGIN_MM
from deepwml.preprocessing.head_mask import fill_holes_in_plane

Box = Tuple[slice, ...]


class LesionRules:
    """The rules deepwml_predict applies to a case's mask with its anatomy map (``drop_outside``: lesions with no voxel
    within STRIP_MARGIN_MM of the brain region go; ``cortex_contrast`` > 0: cortical and juxtacortical lesions under
    that many times the cortex's median intensity go), for the lesions of many masks of one case."""

    def __init__(self, anatomy: np.ndarray, image: np.ndarray, geometry: Geometry, drop_outside: bool,
                 cortex_contrast: float) -> None:
        self.anatomy, self.image, self.geometry = np.asarray(anatomy), np.asarray(image), geometry
        # a map that finds (almost) no brain is what is wrong there, not the lesions: predict then drops none
        self.drop_outside = drop_outside and float(np.mean(self.anatomy != BACKGROUND)) >= MIN_BRAIN_SHARE
        self.cortex_contrast = float(cortex_contrast)
        self._near: Optional[Tuple[Box, np.ndarray]] = None
        self._ventricles: Optional[VentricleField] = None
        self._cortex: Optional[np.ndarray] = None

    def kept(self, labels: np.ndarray, count: int, box: Box) -> np.ndarray:
        """Per lesion 1..``count`` of ``labels`` (its 26-connected lesions, in ``box`` of the case's grid, the mask
        empty outside it): whether the rules keep it."""
        keep = np.ones(count, bool)
        if count == 0:
            return keep
        if self.drop_outside:
            keep = np.bincount(labels[(labels > 0) & self._near_brain(box)], minlength=count + 1)[1:] > 0
        if self.cortex_contrast > 0 and keep.any():
            keep &= ~self._faint_cortical(labels, count, box, keep)
        return keep

    def _near_brain(self, box: Box) -> np.ndarray:
        """In ``box``: the voxels with a voxel of the brain region within STRIP_MARGIN_MM in their slice (the brain
        region filled in each slice, as drop_outside_brain fills it); kept for the next call with the same box."""
        if self._near is not None and self._near[0] == box:
            return self._near[1]
        axis = self.geometry.slice_axis_numpy
        sampling = list(self.geometry.in_plane_pixels.values())
        grown = grown_in_plane(box, self.geometry)  # every brain voxel within the margin of the box lies in it
        brain = fill_holes_in_plane(np.moveaxis(self.anatomy[grown] != BACKGROUND, axis, 0))
        near = np.zeros(brain.shape, bool)
        for k, plane in enumerate(brain):
            if plane.any():  # a slice without brain has no voxel near it (and no distance to compute)
                near[k] = ndimage.distance_transform_edt(~plane, sampling=sampling) <= STRIP_MARGIN_MM
        near = np.moveaxis(near, 0, axis)[tuple(slice(b.start - g.start, b.stop - g.start) for b, g in zip(box, grown))]
        self._near = (box, near)
        return near

    def _faint_cortical(self, labels: np.ndarray, count: int, box: Box, keep: np.ndarray) -> np.ndarray:
        """Per lesion: kept so far (``keep``), cortical or juxtacortical and under the bound times the median of the
        cortex outside the kept lesions."""
        none = np.zeros(count, bool)
        kept = np.where(np.concatenate([[False], keep])[labels], labels, 0)
        if self._ventricles is None:
            self._ventricles = contact_field(self.anatomy, self.geometry)
            self._cortex = self.anatomy == CORTEX
        offset = tuple(int(b.start) for b in box)
        classes = lesion_classes(kept, count, offset, self.anatomy, self.geometry, self._ventricles)
        cortical = np.isin(classes, RULE_LOCATIONS) & keep
        if not cortical.any():
            return none
        cortex = self._cortex.copy()
        cortex[box] &= kept == 0
        if not cortex.any():
            return none
        reference = float(np.median(self.image[cortex]))
        if not np.isfinite(reference) or reference <= 0:
            return none
        faint = np.zeros(count, bool)
        faint[cortical] = np.asarray(ndimage.mean(self.image[box], kept, np.flatnonzero(cortical) + 1)) < self.cortex_contrast * reference
        return faint
