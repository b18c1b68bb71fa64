"""Brain and ventricle volumes from the anatomy map, and the lesion load as a share of the brain.

A lesion volume means more beside the size of the brain it lies in: research reports normalise it so, and a
ventricle volume speaks of atrophy. A thick-slice 2D FLAIR covers the head in 17-30 slices and may stop short of the
vertex or of the posterior fossa, so both volumes are of the scanned slices only, and the summary says whether the
brain reaches the first or last slice (then it continues beyond the scan and its volume is too small, and the lesion
share too large, by what is not scanned). A field of view set too small for the head cuts the brain in the plane of
the slices too (the occipital or frontal pole, one side), and the summary names that side as well.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

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
#: the brain runs past an in-plane edge of the field of view when, on some slice, it lies along at least this length
#: (mm) of that edge: on skull-stripped scans cropped to the brain's box the anatomy model's brain lies along 7-15 mm
#: of the edge (three real brains) and up to 21 mm (generator brains), and a field of view 10 mm into the brain leaves
#: 21-90 mm on it, 4 mm 6-64 mm (benchmarks/field_of_view.py; benchmarks/README.md, "The brain cut by the field of
#: view"): a cut of 10 mm is named, one of 4 mm mostly, a tight crop not
EDGE_CUT_MM = 22.0
#: where an in-plane edge lies, by the world (LPS) axis and sign its outward direction points along most
_SIDES = {(0, 1): "on the left", (0, -1): "on the right", (1, 1): "at the back", (1, -1): "at the front",
          (2, 1): "at the top", (2, -1): "at the bottom"}
COMPLETE = "complete"


def brain_coverage(anatomy: np.ndarray, geometry: Geometry) -> str:
    """'complete', or where the brain runs past the scan: beyond its end slices 'cut at the top', 'cut at the bottom',
    'cut at both ends' (an axial stack), 'cut at the first slice' and so on (slices in another plane); beyond the field
    of view 'cut at the back', 'cut on the left' and so on; both as 'cut at the top and at the back'; 'no brain'."""
    return _coverage(brain_mask(anatomy), geometry)


def _coverage(brain: np.ndarray, geometry: Geometry) -> str:
    """brain_coverage of a ``brain`` mask."""
    axis = geometry.slice_axis_numpy
    area = np.count_nonzero(brain, axis=tuple(a for a in range(3) if a != axis))
    if area.max(initial=0) == 0:
        return "no brain"
    sides = _end_sides(area, geometry) + _field_sides(brain, geometry)
    return "cut " + " and ".join(sides) if sides else COMPLETE


def _end_sides(area: np.ndarray, geometry: Geometry) -> List[str]:
    """Where the brain runs past the first or last slice, by the brain ``area`` of each slice: [] or one side."""
    cut = area[[0, -1]] >= CUT_SHARE * area.max()
    if not cut.any():
        return []
    if cut.all():
        return ["at both ends"]
    # the world direction of increasing slice index (LPS: +z is superior)
    upward = geometry.direction_matrix[2, geometry.slice_axis]
    if abs(upward) < AXIAL_ALIGNMENT:
        return ["at the first slice" if cut[0] else "at the last slice"]
    first_is_top = upward < 0
    return ["at the top" if cut[0] == first_is_top else "at the bottom"]


def field_edges(geometry: Geometry) -> Dict[Tuple[int, int], str]:
    """The four in-plane edges of the field of view, (numpy axis, end 0 or -1), each named by the side of the head it
    lies on ('at the back', 'on the left', ...: where its outward direction points most in the world)."""
    edges = {}
    for axis in (a for a in range(3) if a != geometry.slice_axis_numpy):
        column = geometry.direction_matrix[:, 2 - axis]  # the index axis in the world (LPS)
        world = int(np.argmax(np.abs(column)))
        for end, outward in ((0, -1), (-1, 1)):
            edges[(axis, end)] = _SIDES[(world, int(np.sign(column[world])) * outward)]
    return edges


def _field_sides(brain: np.ndarray, geometry: Geometry) -> List[str]:
    """The in-plane edges of the field of view the ``brain`` runs past (EDGE_CUT_MM along one on some slice), named
    by the side of the head they lie on."""
    axis, spacing = geometry.slice_axis_numpy, geometry.numpy_spacing
    sides = []
    for (edge_axis, end), side in field_edges(geometry).items():
        along = next(a for a in range(3) if a not in (axis, edge_axis))  # the axis the edge runs along
        edge = np.take(brain, end, axis=edge_axis)  # [slices, along] or [along, slices]
        length = np.count_nonzero(edge, axis=0 if along < axis else 1) * spacing[along]
        if length.max(initial=0) >= EDGE_CUT_MM:
            sides.append(side)
    return sides


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
