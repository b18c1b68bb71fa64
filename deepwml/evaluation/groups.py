"""The paper's lesion-volume groups G1–G5 and slice-thickness bands, assigned to whole arrays at once."""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

from deepwml.constants import LV_GROUP_BOUNDS_ML, LV_GROUP_NAMES

#: Upper bounds (inclusive) of the slice-thickness bands in mm; the last band is everything thicker.
THICKNESS_BAND_BOUNDS_MM: Tuple[float, ...] = (5.0, 7.0)
THICKNESS_BAND_NAMES: Tuple[str, ...] = ("≤5 mm", "5–7 mm", ">7 mm")

#: Label of slices without reference lesion (they belong to no lesion-volume group).
NO_LESION = "none"


def lv_groups(volume_ml: np.ndarray) -> np.ndarray:
    """Group name per slice lesion volume: G1 < 0.2 ml ≤ G2 < 0.7 ≤ G3 < 2 ≤ G4 < 5 ≤ G5; 'none' for 0 ml."""
    volume_ml = np.asarray(volume_ml, dtype=float)
    # side='right' puts a volume exactly on a bound into the upper group, as in "0.2–0.7 ml"
    index = np.searchsorted(np.asarray(LV_GROUP_BOUNDS_ML), volume_ml, side="right")
    names = np.asarray(LV_GROUP_NAMES, dtype=object)[index]
    return np.where(volume_ml > 0, names, NO_LESION)


def thickness_bands(thickness_mm: np.ndarray) -> np.ndarray:
    """Band name per slice thickness: ≤5 mm, 5–7 mm (upper bound included), >7 mm."""
    thickness_mm = np.asarray(thickness_mm, dtype=float)
    index = np.searchsorted(np.asarray(THICKNESS_BAND_BOUNDS_MM), thickness_mm, side="left")
    return np.asarray(THICKNESS_BAND_NAMES, dtype=object)[index]


def ordered(values: Sequence[str], order: Sequence[str]) -> list:
    """Distinct ``values`` in the order of ``order`` first, then any others sorted."""
    present = set(values)
    known = [v for v in order if v in present]
    return known + sorted(present - set(known))
