"""Brain and ventricle volumes from the anatomy map, and the lesion load as a share of the brain.

A lesion volume means more beside the size of the brain it lies in: research reports normalise it so, and a
ventricle volume speaks of atrophy. A thick-slice 2D FLAIR covers the head in 17-30 slices and may stop short of the
vertex or of the posterior fossa, so both volumes are of the scanned slices only, and the summary says whether the
brain reaches the first or last slice (then it continues beyond the scan and its volume is too small, and the lesion
share too large, by what is not scanned).
"""
from __future__ import annotations

from typing import Any, Dict

import numpy as np

from deepwml.anatomy.labels import VENTRICLE, brain_mask
from deepwml.imageio import Geometry

BRAIN_VOLUME_COLUMN = "brain_volume_ml"
VENTRICLE_VOLUME_COLUMN = "ventricle_volume_ml"
LESION_PERCENT_COLUMN = "lesion_percent_of_brain"
COVERAGE_COLUMN = "brain_coverage"
VOLUME_COLUMNS = (BRAIN_VOLUME_COLUMN, VENTRICLE_VOLUME_COLUMN, LESION_PERCENT_COLUMN, COVERAGE_COLUMN)
#: an end slice whose brain area is at least this share of the largest slice's is not where the brain ends (at the
#: vertex and at the foramen magnum the brain's last slice holds a small part of it)
CUT_SHARE = 1 / 3
#: the slice axis of an axial stack points at least this much along the world's superior-inferior axis
AXIAL_ALIGNMENT = 0.7
COMPLETE = "complete"


def brain_coverage(anatomy: np.ndarray, geometry: Geometry) -> str:
    """'complete', or where the brain runs past the stack: 'cut at the top', 'cut at the bottom', 'cut at both ends'
    (an axial stack), 'cut at the first slice' and so on (slices in another plane), 'no brain'."""
    return _coverage(brain_mask(anatomy), geometry)


def _coverage(brain: np.ndarray, geometry: Geometry) -> str:
    """brain_coverage of a ``brain`` mask."""
    axis = geometry.slice_axis_numpy
    area = np.count_nonzero(brain, axis=tuple(a for a in range(3) if a != axis))
    if area.max(initial=0) == 0:
        return "no brain"
    cut = area[[0, -1]] >= CUT_SHARE * area.max()
    if not cut.any():
        return COMPLETE
    if cut.all():
        return "cut at both ends"
    # the world direction of increasing slice index (LPS: +z is superior)
    upward = geometry.direction_matrix[2, geometry.slice_axis]
    if abs(upward) < AXIAL_ALIGNMENT:
        return "cut at the first slice" if cut[0] else "cut at the last slice"
    first_is_top = upward < 0
    return "cut at the top" if cut[0] == first_is_top else "cut at the bottom"


def tissue_volumes(anatomy: np.ndarray, geometry: Geometry, lesion_ml: float) -> Dict[str, Any]:
    """summary.csv's brain parenchyma and ventricle volumes (ml, scanned slices), the lesion volume ``lesion_ml`` as a
    percentage of the parenchyma (NaN without brain) and the brain's coverage."""
    voxel_ml, brain = geometry.voxel_volume_ml, brain_mask(anatomy)
    brain_ml = float(np.count_nonzero(brain) * voxel_ml)
    return {
        BRAIN_VOLUME_COLUMN: round(brain_ml, 1),
        VENTRICLE_VOLUME_COLUMN: round(float(np.count_nonzero(np.asarray(anatomy) == VENTRICLE) * voxel_ml), 2),
        LESION_PERCENT_COLUMN: round(100.0 * lesion_ml / brain_ml, 3) if brain_ml > 0 else float("nan"),
        COVERAGE_COLUMN: _coverage(brain, geometry),
    }
