"""Does the scan look like a T2-FLAIR at all? A check of its contrast inside the brain the anatomy model finds.

Why: a T2- or PD-weighted scan passed by mistake (a NIfTI folder, a mislabelled DICOM series), or a FLAIR whose CSF
was not nulled, has bright CSF in the sulci and ventricles, and the lesion model calls much of it lesion: synthetic
T2-weighted renderings of the generator's patients came out with a median of 44 ml of "lesion" (up to 160 ml) and a
normal-looking summary (benchmarks/flair_check.py). On a T2-FLAIR the CSF is dark and what is bright is lesion, so
in the outer part of the brain region (SHELL_MM: the cortex, sulci and the CSF next to the skull) the share of voxels
brighter than BRIGHT_FACTOR x the white matter's median and yet outside the lesion mask stays tiny; bright CSF the
model left unmasked raises it. A scan above MAX_BRIGHT_SHARE is predicted as usual, and summary.csv, the terminal,
the report and the DICOM findings say that it does not look like a T2-FLAIR. The figures it was set on are in
benchmarks/README.md ("Is it a FLAIR at all?").

What it cannot promise: a T1-weighted scan is often not flagged (its CSF is dark as on FLAIR; only bright fat in the
region's margin gives it away), and a T2-weighted scan whose bright CSF the anatomy model leaves out of the brain
and the lesion model leaves unmasked is not (those scans got little "lesion" either). Without the anatomy map
(``--no-anatomy``) nothing is checked.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
from scipy import ndimage

from deepwml.anatomy.labels import BACKGROUND, WHITE_MATTER
from deepwml.imageio import Geometry
# summary.csv's column: the share of the brain region (the anatomy map's brain and ventricles, holes filled in plane,
# grown about STRIP_MARGIN_MM, as --skull-strip keeps it) at its surface, brighter than BRIGHT_FACTOR x white matter
from deepwml.inference.lesion_report import BRIGHT_SHARE_COLUMN, with_notes
from deepwml.inference.skull_strip import STRIP_MARGIN_MM, strip_warning
from deepwml.preprocessing.head_mask import fill_holes_in_plane

#: relative to white matter: CSF on a T2-weighted scan is 2-3 x, and on a FLAIR nothing at the brain's surface comes
#: near it (cortex up to 1.6 x on 3D and some 3 T protocols, lesions 1.3-1.8 x). The region's median instead of white
#: matter's, with 1.8, flagged 2 of 61 synthetic FLAIRs whose bright cortex it lowered the bar for
BRIGHT_FACTOR = 2.0
#: below this many white-matter voxels (as sampled) there is no reference to measure against: no check
MIN_WHITE_MATTER_VOXELS = 100
#: only the region's outer part is read, where CSF lies in the sulci and next to the skull: a FLAIR's lesions the
#: model leaves unmasked (the faint bulk of confluent small-vessel disease) lie deeper, so they raise no false alarm
SHELL_MM = 8.0
#: above this share the scan does not look like a T2-FLAIR (benchmarks/flair_check.py: 48 synthetic FLAIRs and the real
#: development scans at most 0.0008; T2-weighted renderings a median of 0.019, 46 of 48 above it)
MAX_BRIGHT_SHARE = 0.003


#: the check reads every other pixel in plane of scans finer than this (mm): 0.47 mm 512² scans at a quarter of the cost
#: (0.07 -> 0.02 s a 25-slice case), for a share of thousands of voxels that does not need every one
CHECK_PIXEL_MM = 0.7


def check_region(anatomy: np.ndarray, pixels: Dict[int, float], margin_mm: float = STRIP_MARGIN_MM) -> Tuple[np.ndarray, tuple]:
    """The brain region the check reads, within its bounding box (returned with it, as slices of the array's grid):
    every class of the anatomy map but background, holes filled within each slice, grown ``margin_mm`` in plane by a
    square (two running maxima; the exact disk of --skull-strip's brain_region takes a distance transform of every
    slice, 0.25 s of a 25-slice 512² case, for a statistic that a square margin serves as well). ``pixels``: the
    pixel size of each in-plane array axis (``Geometry.in_plane_pixels``)."""
    axis = next(d for d in range(3) if d not in pixels)
    inside = np.asarray(anatomy) != BACKGROUND
    if not inside.any():
        return np.zeros((0, 0, 0), bool), (slice(0, 0),) * 3
    reach = {dim: int(margin_mm / step) for dim, step in pixels.items()}
    box = []
    for dim in range(3):
        hit = np.flatnonzero(inside.any(axis=tuple(d for d in range(3) if d != dim)))
        grow = reach.get(dim, 0)
        box.append(slice(max(int(hit[0]) - grow, 0), int(hit[-1]) + grow + 1))
    box = tuple(box)
    region = fill_holes_in_plane(np.moveaxis(inside[box], axis, 0)).view(np.uint8)
    for dim, grow in reach.items():
        if grow > 0:
            moved = dim if dim > axis else dim + 1  # the slice axis moved to the front
            region = ndimage.maximum_filter1d(region, 2 * grow + 1, axis=moved)
    return np.moveaxis(region.view(bool), 0, axis), box


def outer_shell(region: np.ndarray, pixels: Dict[int, float], depth_mm: float = SHELL_MM) -> np.ndarray:
    """The voxels of ``region`` within about ``depth_mm`` in plane of its edge: the region less its erosion by a square
    (two running minima); ``pixels`` as for :func:`check_region`."""
    inner = region.view(np.uint8)
    for dim, step in pixels.items():
        depth = int(depth_mm / step)
        if depth > 0:
            inner = ndimage.minimum_filter1d(inner, 2 * depth + 1, axis=dim)
    return region & ~inner.view(bool)


def bright_share(image: np.ndarray, anatomy: np.ndarray, geometry: Geometry, mask: np.ndarray) -> Optional[float]:
    """The share of the anatomy map's brain region (its voxels above 0, so a skull-stripped scan's zero background does
    not count) that lies in its outer SHELL_MM, is brighter than BRIGHT_FACTOR x the median of the map's white matter
    (outside the lesions) and is outside the lesion ``mask``; None when the map finds no brain or too little white
    matter to measure. Scans finer than CHECK_PIXEL_MM are read every other pixel."""
    pixels = geometry.in_plane_pixels
    step = [2 if pixels.get(dim, 1.0) < CHECK_PIXEL_MM else 1 for dim in range(3)]
    sample = tuple(slice(None, None, k) for k in step)
    pixels = {dim: size * step[dim] for dim, size in pixels.items()}
    anatomy = np.asarray(anatomy)[sample]
    region, box = check_region(anatomy, pixels)
    image, lesion, anatomy = np.asarray(image)[sample][box], np.asarray(mask)[sample][box] > 0, anatomy[box]
    region &= image > 0  # NaN compares False: left out with the background
    white = region & (anatomy == WHITE_MATTER) & ~lesion
    if np.count_nonzero(white) < MIN_WHITE_MATTER_VOXELS:
        return None
    reference = float(np.median(image[white]))  # > 0: the region holds only voxels above 0
    bright = outer_shell(region, pixels) & (image > BRIGHT_FACTOR * reference) & ~lesion
    return float(np.count_nonzero(bright)) / float(np.count_nonzero(region))


def contrast_fields(image: np.ndarray, anatomy: np.ndarray, geometry: Geometry, mask: np.ndarray) -> Dict[str, Any]:
    """summary.csv's BRIGHT_SHARE_COLUMN (rounded; absent when the map finds no brain or too little white matter)."""
    share = bright_share(image, anatomy, geometry, mask)
    return {} if share is None else {BRIGHT_SHARE_COLUMN: round(share, 4)}


def contrast_warning(anatomy_fields: Dict[str, Any]) -> str:
    """What summary.csv's acquisition_warning adds for a scan that does not look like a T2-FLAIR; '' otherwise (and
    for figures without the check)."""
    share = anatomy_fields.get(BRIGHT_SHARE_COLUMN)
    try:
        share = float(share)
    except (TypeError, ValueError):
        return ""
    if not np.isfinite(share) or share <= MAX_BRIGHT_SHARE:
        return ""
    return (f"not like a T2-FLAIR: {share:.1%} of the brain is brighter than {BRIGHT_FACTOR:g} x white matter at its surface "
            f"outside the lesions (on a FLAIR, whose CSF is dark, under {MAX_BRIGHT_SHARE:.1%}): a T2-, PD- or "
            f"T1-weighted scan, or CSF not suppressed? Its lesions are not reliable")


def with_map_warnings(warning: str, anatomy_fields: Dict[str, Any]) -> str:
    """``warning`` (summary.csv's acquisition_warning) with what the anatomy map's figures add: :func:`contrast_warning`
    and a scan left unstripped for want of a brain (deepwml.inference.skull_strip.strip_warning)."""
    return with_notes(warning, contrast_warning(anatomy_fields), strip_warning(anatomy_fields))
