"""Lesion masks stored as DICOM SEG, as a viewer or PACS keeps a reader's outlines (3D Slicer, OHIF, DeepWML itself),
turned into a mask on the grid DeepWML reads their series with: for training labels and for a reader's corrected
mask in deepwml_compare.

Each SEG frame is placed by the source instance (classic series) or source frame (multi-frame object) it references,
so the mask's slice z is the series' slice z. The lesion segments are those whose property type is *Lesion* (SNOMED
52988006) or whose label names a lesion, white-matter hyperintensity or plaque; a SEG of one segment is taken whole.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List, Optional

import numpy as np

from deepwml.utils.errors import ImageError

#: SNOMED CT "Lesion": the property type of DeepWML's own SEG segments and of most lesion segmentations
LESION_CODE = "52988006"
LESION_WORDS = re.compile(r"lesion|wmh|hyperintens|plaque", re.IGNORECASE)


def is_dicom_seg(path: Path) -> bool:
    """True when ``path`` is a file holding a DICOM Segmentation (header read only)."""
    import pydicom

    if not Path(path).is_file():
        return False
    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:  # noqa: BLE001 - not DICOM
        return False
    return str(ds.get("SOPClassUID", "")) == "1.2.840.10008.5.1.4.1.1.66.4"


def read_seg_mask(seg_path: Path, series_folder: Path, series_uid: Optional[str] = None) -> np.ndarray:
    """The (z, rows, cols) uint8 lesion mask of the DICOM SEG ``seg_path`` on the series DeepWML reads from
    ``series_folder`` (the same series choice as the image)."""
    from deepwml.imageio.dicom import chosen_series

    seg_path, series_folder = Path(seg_path), Path(series_folder)
    try:
        import highdicom as hd
    except ImportError:
        raise ImageError("reading a DICOM SEG needs highdicom: pip install 'deepwml[dicom]'", seg_path) from None
    try:
        seg = hd.seg.segread(str(seg_path))
    except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
        raise ImageError(f"not a readable DICOM SEG ({str(e).splitlines()[0][:200]})", seg_path) from None
    info = chosen_series(series_folder, series_uid)
    referenced = {str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])}
    if info.uid not in referenced:
        raise ImageError(f"the SEG outlines series {', '.join(sorted(referenced)) or '(none named)'}, not the series "
                         f"{info.uid} read from {series_folder}", seg_path)
    segments = lesion_segments(seg, seg_path)
    try:
        if info.frames > 1:
            pixels = _by_source_frame(seg, info.files[0], segments)
        else:
            pixels = seg.get_pixels_by_source_instance(_instance_uids(info.files), segment_numbers=segments,
                                                       assert_missing_frames_are_empty=True)
    except (ValueError, KeyError, AttributeError) as e:
        raise ImageError(f"the SEG's frames cannot be placed on the series' slices ({str(e).splitlines()[0][:200]})",
                         seg_path) from None
    fractional = str(seg.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL"
    marked = pixels >= 0.5 if fractional else pixels > 0
    return np.asarray(marked.any(axis=-1), dtype=np.uint8)


def lesion_segments(seg, where: Path) -> List[int]:
    """The numbers of the segments that hold lesions (see the module docstring); an error listing them otherwise."""
    described = [(int(s.SegmentNumber), str(s.get("SegmentLabel", "")),
                  str(s.SegmentedPropertyTypeCodeSequence[0].CodeValue) if s.get("SegmentedPropertyTypeCodeSequence") else "")
                 for s in seg.SegmentSequence]
    lesions = [number for number, label, code in described if code == LESION_CODE or LESION_WORDS.search(label)]
    if lesions:
        return lesions
    if len(described) == 1:
        return [described[0][0]]
    listing = ", ".join(f"{number} {label!r}" for number, label, _ in described)
    raise ImageError(f"none of the SEG's {len(described)} segments is a lesion segment (property type Lesion, or a label "
                     f"naming a lesion / WMH): {listing}", where)


def _instance_uids(files: List[str]) -> List[str]:
    import pydicom

    return [str(pydicom.dcmread(f, stop_before_pixels=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID) for f in files]


def _by_source_frame(seg, path: str, segments: List[int]) -> np.ndarray:
    """The SEG's pixels for each frame of a multi-frame source, in the slice order its image is read in."""
    import pydicom

    from deepwml.imageio.dicom_multiframe import frame_geometry

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    positions, orientation = frame_geometry(ds, Path(path))
    order = np.argsort(positions @ np.cross(orientation[:3], orientation[3:]))  # frame indices, slice by slice
    return seg.get_pixels_by_source_frame(str(ds.SOPInstanceUID), [int(k) + 1 for k in order], segment_numbers=segments,
                                          assert_missing_frames_are_empty=True)
