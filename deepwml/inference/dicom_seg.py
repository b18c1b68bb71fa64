"""DICOM Segmentation (SEG) objects for DICOM series inputs, so the mask goes back to a PACS or viewer.

The SEG is made with highdicom from the source series' own headers: each frame references the source instance
(SOP Instance UID) it segments and carries that slice's Image Position (Patient), and the SEG shares the
series' Frame of Reference, Study and Patient, so a viewer lays it over the same frames. Only frames holding
lesion are stored; an empty mask gives a valid SEG whose frames are all empty.

Without an anatomy map one segment holds every lesion. With the lesion table's location classes, each class that has
a lesion is a segment of its own, in the QC picture's colour, and the segments part the mask (each lesion voxel in
exactly one): a viewer shows or hides the periventricular, juxtacortical, cortical, deep and infratentorial lesions
apart, as location-coded MS reports show them, and the union of the segments (as deepwml.imageio.dicom_seg_masks reads
a SEG) is the mask, so a reader who deletes or draws a lesion in any segment corrects the mask.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

import deepwml
from deepwml.anatomy.location import CORTICAL, DEEP, INFRATENTORIAL_LOC, JUXTACORTICAL, LOCATIONS, PERIVENTRICULAR
from deepwml.imageio.dicom import chosen_series
from deepwml.imageio.dicom_multiframe import frame_geometry
from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import DeepWMLError, ImageError

SEGMENT_LABEL = "White matter lesion"
#: series number of the SEG series (viewers sort series by it; the source series keeps its own)
SEG_SERIES_NUMBER = 9901
#: each location class's segment label (the word "lesions" keeps it a lesion segment for any reader matching labels)
LOCATION_SEGMENT_LABELS = {name: f"{name.capitalize()} lesions" for name in LOCATIONS} | {DEEP: "Deep white matter lesions"}


def location_sites() -> Dict[str, object]:
    """The SNOMED finding site of each location class DICOM can name (the SEG's anatomic region, the SR's site)."""
    from pydicom.sr.codedict import codes

    return {PERIVENTRICULAR: codes.SCT.CerebralWhiteMatter, DEEP: codes.SCT.CerebralWhiteMatter,
            JUXTACORTICAL: codes.SCT.CerebralWhiteMatter, CORTICAL: codes.SCT.CerebralCortex, INFRATENTORIAL_LOC: codes.SCT.Brain}


def location_label_map(ids: np.ndarray, locations: Sequence[str]) -> Tuple[np.ndarray, List[str]]:
    """The lesion mask as a label map of location classes (uint8, 0 outside the lesions, k the k-th class returned)
    and the classes that have a lesion, in LOCATIONS order: ``ids`` the lesion-id map (1-based, the lesion table's
    rows) and ``locations`` the table's classes in its order."""
    ids = np.asarray(ids)
    if int(ids.max(initial=0)) > len(locations):
        raise ValueError(f"lesion ids up to {int(ids.max())} for {len(locations)} located lesions")  # a bug
    present = [name for name in LOCATIONS if name in set(map(str, locations))]
    lookup = np.zeros(len(locations) + 1, np.uint8)  # lesion id -> class number, one gather for the whole volume
    lookup[1:] = [present.index(str(name)) + 1 for name in locations]
    return lookup[ids], present


def highdicom_available() -> bool:
    """True when highdicom can be imported (an optional dependency: the 'dicom' extra)."""
    try:
        import highdicom  # noqa: F401
    except ImportError:
        return False
    return True


def require_highdicom(flag: str = "--dicom-seg") -> None:
    """Refuse a DICOM output early, with the fix, when highdicom is missing."""
    if not highdicom_available():
        raise DeepWMLError(f"{flag} needs highdicom: pip install 'deepwml[dicom]' (or pip install highdicom)")


def source_headers(folder: Path, series_uid: Optional[str] = None) -> List:
    """The series' headers (pydicom datasets, no pixel data): one per slice in the order the image's slices were
    read, or the one header of a multi-frame object."""
    import pydicom

    # the same choice and sorted file list the image was read with (deepwml.imageio.dicom), so slice z is file z
    return [pydicom.dcmread(f, stop_before_pixels=True) for f in chosen_series(folder, series_uid).files]


def slice_of_frames(headers: List) -> np.ndarray:
    """For each source frame in stored order (one classic file per slice, or the frames of one multi-frame
    object), the mask slice it is: the reader stacks multi-frame frames ascending along the slice normal."""
    frames = int(headers[0].get("NumberOfFrames", 1) or 1)
    if len(headers) == 1 and frames > 1:
        positions, orientation = frame_geometry(headers[0], Path(str(getattr(headers[0], "filename", "DICOM series"))))
        along = positions @ np.cross(orientation[:3], orientation[3:])
        return np.argsort(np.argsort(along))
    return np.arange(len(headers))


def _frames_of(mask: np.ndarray, headers: List) -> np.ndarray:
    """The source frames' masks in the sources' own order: slice z per classic file, by position for multi-frame."""
    where = getattr(headers[0], "filename", "DICOM series")
    rows, cols = int(headers[0].Rows), int(headers[0].Columns)
    slice_of_frame = slice_of_frames(headers)
    if mask.shape != (len(slice_of_frame), rows, cols):
        raise ImageError(f"mask shape {mask.shape} does not match the series ({len(slice_of_frame)} slices of {rows}×{cols})", where)
    return mask[slice_of_frame]


def build_dicom_seg(mask: np.ndarray, headers: List, model_name: str, segment_labels: Sequence[str] = (SEGMENT_LABEL,),
                    series_description: str = "DeepWML white matter lesions (research use)",
                    locations: Sequence[str] = (), reviewed: bool = False):
    """A highdicom Segmentation of the (z, rows, cols) ``mask`` over the source ``headers`` (one per z, or one
    multi-frame header): binary (> 0) for one segment, else a label map whose value k is the k-th of ``segment_labels`` (each a white-matter lesion).

    ``locations``: the mask is :func:`location_label_map`'s label map of these classes; each is a segment named
    LOCATION_SEGMENT_LABELS, in its QC colour and with its anatomic region (``segment_labels`` unused). ``reviewed``:
    the mask is a reader's reviewed one (deepwml_predict --lesion-masks), so its segments are SEMIAUTOMATIC.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from deepwml.inference.qc import LOCATION_COLOURS

    mask = np.asarray(mask)
    sites = location_sites()
    if locations:
        described = [(LOCATION_SEGMENT_LABELS[name], sites.get(name, codes.SCT.Brain), LOCATION_COLOURS[name]) for name in locations]
    else:
        described = [(label, codes.SCT.CerebralWhiteMatter, None) for label in segment_labels]
    if len(described) == 1:
        mask = mask > 0
    elif mask.min() < 0 or mask.max() > len(described):
        raise ValueError(f"label map values {mask.min()}..{mask.max()} for {len(described)} segments")  # a bug
    where = getattr(headers[0], "filename", "DICOM series")
    if not getattr(headers[0], "FrameOfReferenceUID", None):
        # without it no viewer can place the SEG on the images; highdicom refuses too
        raise ImageError("the series has no Frame of Reference UID (0020,0052), which a DICOM SEG must share", where)
    pixels = _frames_of(mask, headers)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="DeepWML", family=codes.cid7162.ArtificialIntelligence, version=deepwml.__version__, source=model_name
    )
    segments = [hd.seg.SegmentDescription(
        segment_number=number,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=(hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC if reviewed
                        else hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC),
        algorithm_identification=algorithm,
        anatomic_regions=[region],
        display_color=hd.color.CIELabColor.from_rgb(*rgb) if rgb is not None else None,
    ) for number, (label, region, rgb) in enumerate(described, start=1)]
    return hd.seg.Segmentation(
        source_images=headers,
        pixel_array=np.asarray(pixels).astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segments,
        series_instance_uid=hd.UID(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="DeepWML",
        manufacturer_model_name=model_name[:64],
        software_versions=deepwml.__version__,
        device_serial_number="none",
        series_description=series_description,
        content_description="Research use only, not a medical device",
        # an all-empty mask keeps its frames (highdicom would otherwise fall back to that with a logged warning)
        omit_empty_frames=bool(np.any(pixels)),
    )


def write_dicom_seg(mask: np.ndarray, folder: Path, path: Path, model_name: str, series_uid: Optional[str] = None,
                    segment_labels: Sequence[str] = (SEGMENT_LABEL,),
                    series_description: str = "DeepWML white matter lesions (research use)",
                    locations: Sequence[str] = (), reviewed: bool = False) -> Path:
    """Write the SEG of ``mask`` (on the series' grid; see :func:`build_dicom_seg`, ``locations`` and ``reviewed``
    included) for the DICOM series in ``folder``, atomically."""
    seg = build_dicom_seg(mask, source_headers(folder, series_uid), model_name, segment_labels, series_description,
                          locations, reviewed)
    with atomic_path(path, ".dcm") as tmp:
        seg.save_as(tmp)
    return path
