"""What a predicted mask says: each lesion (3D, 26-connected) and the per-case totals that go into summary.csv.

With an anatomy label map on the same grid (deepwml.anatomy) each lesion also gets a location class and the
case its counts per location, the McDonald 2017 dissemination-in-space regions and a Fazekas estimate.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional

import numpy as np
from scipy import ndimage

from deepwml.anatomy.fazekas import fazekas_from_locations
from deepwml.anatomy.location import (
    DIS_REGIONS,
    FAR_FROM_VENTRICLES_COLUMN,
    LOCATIONS,
    NEAR_VENTRICLES_COLUMN,
    PERIVENTRICULAR,
    LesionLocations,
    check_anatomy,
    dis_summary,
    locate_lesions,
    location_counts,
    location_volumes,
)
from deepwml.anatomy.volumes import VOLUME_COLUMNS, tissue_volumes
from deepwml.imageio import Geometry
from deepwml.inference.confidence import CONFIDENCE_COLUMNS, lesion_confidence
from deepwml.inference.lesion_contrast import background_floor, lesion_contrasts, lesion_measures, ring_radius, widen_box
from deepwml.utils.errors import DeepWMLError

if TYPE_CHECKING:
    # pandas takes ~0.5 s to import: a prediction run loads it in a case worker, not before the first case
    import pandas as pd

LESION_COLUMNS = [
    "lesion_id",
    "volume_ml",
    "voxels",
    "first_slice",
    "last_slice",
    "centroid_x_mm",
    "centroid_y_mm",
    "centroid_z_mm",
]

#: columns the lesion table gains with an anatomy map (after LESION_COLUMNS)
LOCATION_COLUMNS = [
    "location",
    "ventricle_distance_mm",
    "cortex_distance_mm",
    "long_axis_mm",
    "periventricular_extent_mm",
]

#: column the lesion table gains with the scan (after the confidence columns): each lesion's mean intensity over the
#: median of its ring, the figure --min-lesion-contrast judges (deepwml.inference.lesion_contrast)
CONTRAST_COLUMNS = ["contrast"]

#: key of the located lesions in a lesion table's attrs
_LOCATED = "deepwml_located_lesions"

#: 26-connectivity: voxels touching by a face, an edge or a corner belong to one lesion.
CONNECTIVITY_26 = np.ones((3, 3, 3), dtype=bool)


def label_lesions(mask: np.ndarray) -> tuple:
    """Label the 26-connected components of a binary (z, y, x) mask; returns (labels int32, count)."""
    labels, count = ndimage.label(np.asarray(mask) > 0, structure=CONNECTIVITY_26)
    return labels.astype(np.int32, copy=False), int(count)


def lesion_id_labels(mask: np.ndarray, slice_axis: int) -> tuple:
    """The lesions of a binary (z, y, x) mask labelled with their lesion-table ids (most voxels first, then the
    first slice along ``slice_axis``, as :func:`lesion_table` orders its rows); returns (labels int32, count)."""
    mask = np.asarray(mask) > 0
    box = lesion_box(mask)
    labels = np.zeros(mask.shape, np.int32)
    if box is None:
        return labels, 0
    # only the box that holds the lesions is labelled, as in lesion_table: the same components at a fraction of the cost
    raw, count = label_lesions(mask[box])
    voxels = np.bincount(raw.ravel(), minlength=count + 1)[1:]
    first = np.array([s[slice_axis].start for s in ndimage.find_objects(raw)])
    order = np.lexsort((np.arange(count), first, -voxels))
    relabel = np.zeros(count + 1, np.int32)
    relabel[order + 1] = np.arange(1, count + 1)
    labels[box] = relabel[raw]
    return labels, count


#: a lesion contrast filter above this drops every lesion there is: a mistake, not a filter
MAX_MIN_LESION_CONTRAST = 3.0
#: the largest spread bound (--min-lesion-spread: ring spreads above the ring) a run or a stored postprocessing takes
MAX_MIN_LESION_SPREAD = 10.0


def check_lesion_filters(min_ml: float, min_peak: float, min_contrast: float = 0.0, min_spread: float = 0.0) -> None:
    """Refuse a smallest-lesion volume that is not a finite volume of 0 ml or more (--min-lesion-ml), a lesion peak
    probability that is not a probability below 1 (--min-lesion-peak) and a lesion contrast outside 0..3
    (--min-lesion-contrast)."""
    if not (math.isfinite(min_ml) and min_ml >= 0):
        raise DeepWMLError(f"--min-lesion-ml must be a volume of 0 ml or more, not {min_ml}")
    if not (math.isfinite(min_peak) and 0 <= min_peak < 1):
        raise DeepWMLError(f"--min-lesion-peak must be a probability from 0 up to (not including) 1, not {min_peak}")
    if not (math.isfinite(min_contrast) and 0 <= min_contrast <= MAX_MIN_LESION_CONTRAST):
        raise DeepWMLError(f"--min-lesion-contrast must be a ratio from 0 (off) to {MAX_MIN_LESION_CONTRAST:g}, e.g. 1.15 "
                           f"(lesions less than 15 % brighter than the tissue around them dropped), not {min_contrast}")
    if not (math.isfinite(min_spread) and 0 <= min_spread <= MAX_MIN_LESION_SPREAD):
        raise DeepWMLError(f"--min-lesion-spread must be a number of ring spreads from 0 (off) to {MAX_MIN_LESION_SPREAD:g}, "
                           f"e.g. 2.25, not {min_spread}")


def filter_lesions(mask: np.ndarray, geometry: Optional[Geometry] = None, probs: Optional[np.ndarray] = None,
                   min_ml: float = 0.0, min_peak: float = 0.0, image: Optional[np.ndarray] = None,
                   min_contrast: float = 0.0, min_spread: float = 0.0, floor: Optional[float] = None) -> np.ndarray:
    """The mask (uint8) without its lesions (26-connected, as the lesion table counts them) under ``min_ml`` ml
    (needs ``geometry``), whose most probable voxel stays under ``min_peak`` (needs ``probs``: hysteresis
    thresholding, the extent where the mask is, the evidence from the lesion's core) or less than ``min_contrast``
    times as bright as the tissue around them (needs ``image``, the scan on the mask's grid, and ``geometry``:
    deepwml.inference.lesion_contrast); with ``min_spread``, such a lesion is dropped only when it also stands less
    than that many ring spreads above its ring (lesion_contrast.lesion_spreads; a lesion whose ring is too small for
    that figure is judged by the ratio alone). ``floor``: the image's lesion_contrast.background_floor when known."""
    mask = np.asarray(mask) > 0
    box = lesion_box(mask) if (min_ml > 0 or min_peak > 0 or min_contrast > 0) else None
    if box is None:
        return mask.astype(np.uint8)
    if min_contrast > 0:
        if image is None or geometry is None:
            raise DeepWMLError("the lesion contrast filter needs the scan and its geometry")  # a caller's bug
        radius = ring_radius(geometry.numpy_spacing, geometry.slice_axis_numpy)
        # the rings reach past the lesions' box
        box = widen_box(box, mask.shape, radius)
    # labelled inside the box that holds the lesions: a 512x512x25 map costs 0.8 s labelled whole, the box a fraction
    labels, count = label_lesions(mask[box])
    inside = labels > 0
    lesion_of = labels[inside]
    keep = np.ones(count + 1, dtype=bool)
    if min_ml > 0:
        volume_ml = np.bincount(lesion_of, minlength=count + 1) * geometry.voxel_volume_ml
        # a relative tolerance so that a lesion of exactly the minimum (in voxels) is kept despite float rounding
        keep &= volume_ml >= min_ml * (1 - 1e-9)
    if min_peak > 0:
        peak = lesion_peaks(np.asarray(probs, dtype=np.float32)[box][inside], lesion_of, count)
        # compared in float32, as the probability map is stored: a peak of exactly the minimum stays
        keep[1:] &= peak >= np.float32(min_peak)
    if min_contrast > 0:
        floor = background_floor(np.asarray(image)) if floor is None else floor
        # both figures from the same rings, found once
        contrast, spread = lesion_measures(np.asarray(image)[box], labels, count, radius, floor, spreads=min_spread > 0)
        # a relative tolerance as for the volume; a lesion with no ring around it is not judged
        faint = contrast < min_contrast * (1 - 1e-9)
        if min_spread > 0:
            faint &= ~(spread >= min_spread * (1 - 1e-9))
        keep[1:] &= ~faint
    keep[0] = False
    out = np.zeros(mask.shape, np.uint8)
    out[box] = keep[labels]
    return out


def lesion_peaks(values: np.ndarray, lesion_of: np.ndarray, count: int) -> np.ndarray:
    """The largest of ``values`` per lesion 1..count (float32), from the lesion voxels' values and lesion numbers:
    sorted by lesion, then one maximum per run (a per-lesion reduction over the lesion voxels only)."""
    order = np.argsort(lesion_of, kind="stable")
    starts = np.searchsorted(lesion_of[order], np.arange(1, count + 1))
    return np.maximum.reduceat(values[order], starts).astype(np.float32) if count else np.zeros(0, np.float32)


def lesion_box(mask: np.ndarray) -> tuple:
    """The smallest box holding every lesion voxel, as slices per axis (None when there is no lesion)."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def lesion_table(mask: np.ndarray, geometry: Geometry, anatomy: Optional[np.ndarray] = None,
                 probs: Optional[np.ndarray] = None, image: Optional[np.ndarray] = None,
                 floor: Optional[float] = None) -> pd.DataFrame:
    """One row per lesion, largest first: volume, voxel count, slice span (0-based) and centroid in world mm;
    with an ``anatomy`` map (same grid) also the location class and distances (LOCATION_COLUMNS), with the
    lesion probabilities the mask was thresholded from (same grid) each lesion's CONFIDENCE_COLUMNS, and with the
    scan (``image``, same grid) each lesion's contrast (CONTRAST_COLUMNS, NaN for a lesion with no ring; ``floor``:
    the scan's background_floor when known)."""
    import pandas as pd
    mask = np.asarray(mask) > 0
    columns = (LESION_COLUMNS + (LOCATION_COLUMNS if anatomy is not None else [])
               + (CONFIDENCE_COLUMNS if probs is not None else []) + (CONTRAST_COLUMNS if image is not None else []))
    if anatomy is not None:
        anatomy = check_anatomy(anatomy, mask.shape)
    for name, array in (("probabilities", probs), ("a scan", image)):
        if array is not None and np.shape(array) != mask.shape:
            raise ValueError(f"{name} of shape {np.shape(array)} for a mask of shape {mask.shape}")  # a bug, never a user error
    box = lesion_box(mask)
    if box is None:
        return pd.DataFrame(columns=columns)
    # labelling only the box that holds the lesions gives the same components at a fraction of the cost
    labels, count = label_lesions(mask[box])
    offset = np.array([b.start for b in box], dtype=float)
    # only lesion voxels are touched, so memory follows the lesion load, not the image size
    coords = np.nonzero(labels)
    ids = labels[coords]
    voxels = np.bincount(ids, minlength=count + 1)[1:]
    centroid_zyx = np.stack([np.bincount(ids, weights=c, minlength=count + 1)[1:] for c in coords], axis=1) / voxels[:, None]
    world = geometry.index_to_world((centroid_zyx + offset)[:, ::-1])
    slice_axis = geometry.slice_axis_numpy
    spans = ndimage.find_objects(labels)
    start = box[slice_axis].start
    first = np.array([start + s[slice_axis].start for s in spans])
    last = np.array([start + s[slice_axis].stop - 1 for s in spans])
    table = pd.DataFrame(
        {
            "volume_ml": voxels * geometry.voxel_volume_ml,
            "voxels": voxels,
            "first_slice": first,
            "last_slice": last,
            "centroid_x_mm": world[:, 0],
            "centroid_y_mm": world[:, 1],
            "centroid_z_mm": world[:, 2],
        }
    )
    if probs is not None:
        # computed from the components labelled here, so each row gets its own voxels' figures by construction
        at_voxels = np.asarray(probs)[box][coords]
        table["mean_probability"], table["confidence"] = lesion_confidence(ids, at_voxels, count)
    if image is not None:
        # the same components as the rows above, so each row gets its own lesion's contrast by construction
        table["contrast"] = table_contrasts(np.asarray(image), labels, count, box, geometry, floor)
    if anatomy is not None:
        # the same components in the same order as the rows above, so the columns line up before sorting
        located = locate_lesions(labels, count, tuple(b.start for b in box), anatomy, geometry)
        for name, values in location_columns(located).items():
            table[name] = values
    table = table.sort_values(["voxels", "first_slice"], ascending=[False, True], kind="stable").reset_index(drop=True)
    table.insert(0, "lesion_id", np.arange(1, count + 1))
    table = table[columns]
    if anatomy is not None:
        # summarize_case reads the Fazekas measurements from here instead of locating every lesion again
        table.attrs[_LOCATED] = located
    return table


def table_contrasts(image: np.ndarray, labels: np.ndarray, count: int, box: tuple, geometry: Geometry,
                    floor: Optional[float] = None) -> np.ndarray:
    """Each lesion's contrast as filter_lesions judges it, from the ``labels`` of the lesions' ``box`` of ``image``
    (``floor``: its background_floor when known)."""
    radius = ring_radius(geometry.numpy_spacing, geometry.slice_axis_numpy)
    wide = widen_box(box, image.shape, radius)
    # the box holds every lesion voxel, so its labels padded with zeros are those of the widened box: not labelled again
    pad = [(b.start - w.start, w.stop - b.stop) for b, w in zip(box, wide)]
    return lesion_contrasts(image[wide], np.pad(labels, pad), count, radius,
                            background_floor(image) if floor is None else floor)


def location_columns(located: LesionLocations) -> Dict[str, np.ndarray]:
    """LOCATION_COLUMNS from located lesions; the periventricular extent only for periventricular lesions."""
    periventricular = np.asarray(located.location, dtype=object) == PERIVENTRICULAR
    return {
        "location": np.asarray(located.location, dtype=object),
        "ventricle_distance_mm": np.round(located.ventricle_distance_mm, 2),
        "cortex_distance_mm": np.round(located.cortex_distance_mm, 2),
        "long_axis_mm": np.round(located.long_axis_mm, 2),
        "periventricular_extent_mm": np.where(periventricular, np.round(located.wall_extent_mm, 2), np.nan),
    }


def locate_mask(mask: np.ndarray, geometry: Geometry, anatomy: np.ndarray) -> LesionLocations:
    """Located lesions of a boolean mask (none when the mask is empty)."""
    box = lesion_box(mask)
    if box is None:
        return LesionLocations(*([np.zeros(0, dtype=object)] + [np.zeros(0)] * 6 + [np.zeros(0, np.int64)] * 2))
    labels, count = label_lesions(mask[box])
    return locate_lesions(labels, count, tuple(b.start for b in box), anatomy, geometry)


def anatomy_fields(mask: np.ndarray, geometry: Geometry, anatomy: np.ndarray, lesions: Optional[pd.DataFrame] = None) -> Dict[str, Any]:
    """summary.csv fields from an anatomy map: lesions and volumes per location, McDonald 2017 DIS regions, Fazekas.

    ``lesions``: the table lesion_table made from this mask and map; its located lesions are reused.
    """
    mask = np.asarray(mask) > 0
    anatomy = check_anatomy(anatomy, mask.shape)
    located = lesions.attrs.get(_LOCATED) if lesions is not None else None
    if not (isinstance(located, LesionLocations) and len(located) == len(lesions)):
        located = locate_mask(mask, geometry, anatomy)
    fields: Dict[str, Any] = {f"{name}_count": n for name, n in location_counts(located.location).items()}
    fields.update(location_volumes(located, geometry.voxel_volume_ml))
    fields.update(dis_summary(located.location, located.long_axis_mm))
    fields.update(fazekas_from_locations(located, anatomy, geometry).to_fields())
    fields.update(tissue_volumes(anatomy, geometry, float(np.count_nonzero(mask) * geometry.voxel_volume_ml)))
    return fields


def slice_areas_mm2(mask: np.ndarray, geometry: Geometry) -> np.ndarray:
    """Lesion area on each slice (along the slice axis, in order) in mm²."""
    slice_axis = geometry.slice_axis_numpy
    other = tuple(a for a in range(3) if a != slice_axis)
    pixel_area = float(np.prod(geometry.inplane_spacing))
    return np.count_nonzero(np.asarray(mask) > 0, axis=other) * pixel_area


def with_notes(warning: str, *notes: str) -> str:
    """A summary.csv acquisition_warning ``warning`` with ``notes`` added ('; '-separated; any may be '')."""
    return "; ".join(part for part in (warning, *notes) if part)


@dataclass
class CaseSummary:
    """One row of summary.csv."""

    case_id: str
    status: str
    total_lesion_volume_ml: float = float("nan")
    lesion_count: int = 0
    slices: int = 0
    slices_with_lesion: int = 0
    slice_thickness_mm: float = float("nan")
    lesion_area_mm2_per_slice: str = ""
    error: str = ""
    #: what sets the scan apart from the model's training scans (deepwml.inference.acquisition); '' when nothing does
    acquisition_warning: str = ""
    #: for a DICOM input, the series read (number, name, slices, thickness, plane, UID); '' for image files
    source_series: str = ""
    #: the reader's mask the lesions are (deepwml_predict --lesion-masks: "reviewed mask CASE.nii.gz"); '' for the
    #: model's mask. A column of summary.csv only when some row has it
    lesions_from: str = ""
    #: fields from an anatomy map (ANATOMY_SUMMARY_COLUMNS), written after the others; empty without a map
    anatomy: Dict[str, Any] = field(default_factory=dict)

    def to_row(self) -> Dict[str, Any]:
        """The CSV row."""
        row = {k: v for k, v in self.__dict__.items() if k != "anatomy"}
        row.update(self.anatomy)
        return row


#: summary.csv's columns for every run; OPTIONAL_SUMMARY_COLUMNS follow them when some row has a value
OPTIONAL_SUMMARY_COLUMNS = ["lesions_from"]
SUMMARY_COLUMNS = [name for name in CaseSummary.__dataclass_fields__
                   if name != "anatomy" and name not in OPTIONAL_SUMMARY_COLUMNS]
#: summary.csv column: lesions dropped for lying wholly outside the anatomy map's brain
OUTSIDE_BRAIN_COLUMN = "lesions_dropped_outside_brain"
#: summary.csv column: lesions in or against the cortex dropped for being no brighter than bright normal cortex
FAINT_CORTEX_COLUMN = "lesions_dropped_faint_in_cortex"
#: summary.csv column: what the lesion model saw when the run strips the skull (deepwml.inference.skull_strip)
SKULL_STRIP_COLUMN = "lesion_model_input"
#: summary.csv column: the share of the brain region at its surface, brighter than 2 x white matter and outside the
#: lesion mask (deepwml.inference.flair_check)
BRIGHT_SHARE_COLUMN = "bright_brain_share"
#: summary.csv columns added when the cases were given an anatomy map, in this order
ANATOMY_SUMMARY_COLUMNS = (
    [f"{name}_count" for name in LOCATIONS]
    + [f"{name}_volume_ml" for name in LOCATIONS]
    + [NEAR_VENTRICLES_COLUMN, FAR_FROM_VENTRICLES_COLUMN]
    + [f"mcdonald_{region}" for region in DIS_REGIONS]
    + ["mcdonald_dis_regions", "mcdonald_dis_region_names"]
    + ["fazekas_periventricular", "fazekas_deep", "fazekas_pv_lining_mm", "fazekas_pv_extent_mm"]
    + ["fazekas_pv_deep_part_mm", "fazekas_deep_long_axis_mm"]
    # the brain and ventricles of the scanned slices, the lesion volume as a share of the brain (anatomy.volumes)
    + list(VOLUME_COLUMNS)
    # set by deepwml_predict beside the map's figures when it drops lesions outside the brain (inference.outside_brain)
    + [OUTSIDE_BRAIN_COLUMN]
    # and when it drops lesions in or against the cortex no brighter than normal cortex (inference.cortex_contrast)
    + [FAINT_CORTEX_COLUMN]
    # set by deepwml_predict from the scan and the map: does it look like a T2-FLAIR (inference.flair_check)
    + [BRIGHT_SHARE_COLUMN]
    # and what its lesion model saw: the scan stripped to the map's brain, or as given (inference.skull_strip)
    + [SKULL_STRIP_COLUMN]
)


def summarize_case(
    case_id: str, mask: np.ndarray, geometry: Geometry, lesions: pd.DataFrame, anatomy: Optional[np.ndarray] = None
) -> CaseSummary:
    """Totals of one successfully predicted case; per-slice areas are a ';'-separated list in slice order.

    With an ``anatomy`` map (same grid) the row also gets ANATOMY_SUMMARY_COLUMNS.
    """
    areas = slice_areas_mm2(mask, geometry)
    return CaseSummary(
        case_id=case_id,
        status="ok",
        total_lesion_volume_ml=float(np.count_nonzero(mask) * geometry.voxel_volume_ml),
        lesion_count=int(len(lesions)),
        slices=int(len(areas)),
        slices_with_lesion=int(np.count_nonzero(areas)),
        slice_thickness_mm=float(geometry.slice_thickness),
        lesion_area_mm2_per_slice=";".join(f"{a:.2f}" for a in areas),
        anatomy=anatomy_fields(mask, geometry, anatomy, lesions) if anatomy is not None else {},
    )


def failed_case(case_id: str, error: str) -> CaseSummary:
    """The summary row of a case that could not be predicted."""
    return CaseSummary(case_id=case_id, status="failed", error=error)


def summary_frame(rows: List[CaseSummary]) -> pd.DataFrame:
    """summary.csv as a table, sorted by case id."""
    import pandas as pd

    optional = [c for c in OPTIONAL_SUMMARY_COLUMNS if any(getattr(r, c) for r in rows)]
    extra = [c for c in ANATOMY_SUMMARY_COLUMNS if any(c in r.anatomy for r in rows)]
    frame = pd.DataFrame([r.to_row() for r in rows], columns=SUMMARY_COLUMNS + optional + extra)
    return frame.sort_values("case_id", kind="stable").reset_index(drop=True)
