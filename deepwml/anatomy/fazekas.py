"""A Fazekas (1987) estimate per patient, periventricular and deep white matter, each 0-3, from the lesion
locations (deepwml.anatomy.location) and the anatomy map. The rules and their thresholds are in docs/prediction.md.

Periventricular (PV) lesions are those touching the ventricles (the continuity rule); the other supratentorial
white-matter lesions (deep and juxtacortical) are deep. A PV lesion's part farther than REACH_MM (3D) from the
ventricles lies in the deep white matter.

- PV: 0 none, or only isolated foci (mean lining < PV_MIN_LINING_MM); 1 caps or a pencil-thin lining; 2 a smooth
  halo (mean lining >= PV_HALO_MM); 3 irregular PV signal extending into the deep white matter: a PV lesion whose
  deep part is a large confluent area (>= DEEP_LARGE_MM across).
- deep: 0 no deep lesion; 1 punctate foci (largest long axis < DEEP_CONFLUENCE_MM); 2 beginning confluence
  (< DEEP_LARGE_MM); 3 large confluent areas, also when they are joined to a PV lesion. The size cut-offs follow
  the quantitative reading of the Fazekas deep grades used in small-vessel-disease studies (< 10, 10-25, >= 25 mm).

"Mean lining" is the PV lesion area within REACH_MM of the ventricle on each slice divided by the length of the
ventricle outline on the slices: the average thickness of the PV signal along the walls.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict

import numpy as np

from deepwml.anatomy.labels import CORTEX, VENTRICLE, WHITE_MATTER
from deepwml.anatomy.location import DEEP, JUXTACORTICAL, PERIVENTRICULAR, LesionLocations, grid_sampling, slice_first
from deepwml.imageio import Geometry

#: mean lining (mm) from which the PV signal is caps or a lining rather than a few isolated foci touching the wall
#: (caps at the four horns of a ~1500 mm outline give about 0.1 mm; one 3 mm focus about 0.005 mm)
PV_MIN_LINING_MM = 0.05
#: mean lining (mm) from which it is a halo rather than caps and a pencil-thin (about 1-2 mm) lining
PV_HALO_MM = 2.0
#: deep lesion long axis (mm) from which foci are beginning to be confluent, and from which the areas are large
DEEP_CONFLUENCE_MM = 10.0
DEEP_LARGE_MM = 25.0


@dataclass(frozen=True)
class FazekasEstimate:
    """The two grades and the measurements they were read from."""

    periventricular: int
    deep: int
    #: PV lesion area within REACH_MM of the ventricle on each slice / length of the ventricle outline (mm)
    pv_lining_mm: float
    #: farthest in-plane reach of a PV lesion from the ventricle wall (mm, capped at REACH_MM)
    pv_extent_mm: float
    #: longest in-plane axis of a deep (or juxtacortical) lesion (mm)
    deep_long_axis_mm: float
    #: longest in-plane axis of the deep part of a PV lesion (mm; 0: none reaches that far)
    pv_deep_part_mm: float

    def to_fields(self) -> Dict[str, object]:
        """summary.csv fields."""
        return {
            "fazekas_periventricular": self.periventricular,
            "fazekas_deep": self.deep,
            "fazekas_pv_lining_mm": round(self.pv_lining_mm, 2),
            "fazekas_pv_extent_mm": round(self.pv_extent_mm, 2),
            "fazekas_pv_deep_part_mm": round(self.pv_deep_part_mm, 2),
            "fazekas_deep_long_axis_mm": round(self.deep_long_axis_mm, 2),
        }


def ventricle_outline_mm(anatomy: np.ndarray, geometry: Geometry) -> float:
    """Length (mm, summed over slices) of the in-plane border between the supratentorial ventricles and brain.

    Pixel edges between a ventricle and a white-matter or cortex pixel are counted with their lengths; the
    factor pi/4 turns a staircase of edges into the length of the smooth outline it approximates (unbiased for
    outlines of random direction). Borders against infratentorial parenchyma (the fourth ventricle) do not count.
    """
    _, du, dv = grid_sampling(geometry)
    anat = slice_first(anatomy, geometry)
    ventricle = anat == VENTRICLE
    if not ventricle.any():
        return 0.0
    lo = [int(np.flatnonzero(ventricle.any(axis=tuple(a for a in range(3) if a != k)))[0]) for k in range(3)]
    hi = [int(np.flatnonzero(ventricle.any(axis=tuple(a for a in range(3) if a != k)))[-1]) + 2 for k in range(3)]
    box = tuple(slice(max(a - 1, 0), b) for a, b in zip(lo, hi))
    sub = anat[box]
    vent = sub == VENTRICLE
    tissue = (sub == WHITE_MATTER) | (sub == CORTEX)
    along_u = np.count_nonzero((vent[:, 1:] & tissue[:, :-1]) | (vent[:, :-1] & tissue[:, 1:]))
    along_v = np.count_nonzero((vent[:, :, 1:] & tissue[:, :, :-1]) | (vent[:, :, :-1] & tissue[:, :, 1:]))
    # an edge between rows (along u) is one pixel wide in v, and the other way round
    return float((along_u * dv + along_v * du) * np.pi / 4.0)


def fazekas_from_locations(locations: LesionLocations, anatomy: np.ndarray, geometry: Geometry) -> FazekasEstimate:
    """Both grades from located lesions and the anatomy map they were located in."""
    where = np.asarray(locations.location, dtype=object)
    pv = where == PERIVENTRICULAR
    outline = ventricle_outline_mm(anatomy, geometry)
    lining = float(np.nansum(locations.near_wall_area_mm2[pv]) / outline) if pv.any() and outline > 0 else 0.0
    extents = locations.wall_extent_mm[pv]
    extent = float(np.nanmax(extents)) if np.isfinite(extents).any() else 0.0
    separate = locations.long_axis_mm[np.isin(where, (DEEP, JUXTACORTICAL))]
    joined = locations.deep_part_long_axis_mm[pv]
    joined = float(joined.max()) if joined.size else 0.0
    deep_axis = float(separate.max()) if separate.size else 0.0
    pv_grade = 0
    if joined >= DEEP_LARGE_MM:
        pv_grade = 3
    elif lining >= PV_HALO_MM:
        pv_grade = 2
    elif lining >= PV_MIN_LINING_MM:
        pv_grade = 1
    if joined >= DEEP_LARGE_MM:
        deep_grade = 3
    elif separate.size:
        deep_grade = 1 + int(deep_axis >= DEEP_CONFLUENCE_MM) + int(deep_axis >= DEEP_LARGE_MM)
    else:
        deep_grade = 0
    return FazekasEstimate(pv_grade, deep_grade, lining, extent, deep_axis, joined)
