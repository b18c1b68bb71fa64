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

from deepwml.imageio.geometry import Geometry
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
    seg = _read_seg(seg_path)
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


def _read_seg(seg_path: Path):
    """The highdicom Segmentation in ``seg_path``; an error naming the file when highdicom or the file fails."""
    try:
        import highdicom as hd
    except ImportError:
        raise ImageError("reading a DICOM SEG needs highdicom: pip install 'deepwml[dicom]'", seg_path) from None
    try:
        return hd.seg.segread(str(seg_path))
    except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
        raise ImageError(f"not a readable DICOM SEG ({str(e).splitlines()[0][:200]})", seg_path) from None


def seg_mask_on_grid(seg_path: Path, geometry: Geometry) -> np.ndarray:
    """The (z, y, x) uint8 lesion mask of the DICOM SEG ``seg_path`` on ``geometry`` (e.g. the grid of a mask
    deepwml_predict wrote for the series), each frame placed by its own Image Position (Patient): no source series
    needed. Every frame must lie on a slice of the grid with the grid's rows, columns, orientation and pixel size."""
    from deepwml.imageio.dicom_multiframe import _group_value, _pixel_spacing, frame_geometry

    seg_path = Path(seg_path)
    seg = _read_seg(seg_path)
    segments = lesion_segments(seg, seg_path)
    positions, orientation = frame_geometry(seg, seg_path)
    rows, cols = int(seg.Rows), int(seg.Columns)
    direction = geometry.direction_matrix
    size_x, size_y, size_z = geometry.size
    problems = []
    if (rows, cols) != (size_y, size_x):
        problems.append(f"frames of {rows}×{cols} pixels, slices of {size_y}×{size_x}")
    if not (np.allclose(orientation[:3], direction[:, 0], atol=1e-3) and np.allclose(orientation[3:], direction[:, 1], atol=1e-3)):
        problems.append(f"orientation {np.round(orientation, 4).tolist()}, the grid's "
                        f"{np.round(np.concatenate([direction[:, 0], direction[:, 1]]), 4).tolist()}")
    row_spacing, col_spacing = _pixel_spacing(seg, seg_path)
    if not np.allclose([col_spacing, row_spacing], geometry.spacing[:2], rtol=1e-3):
        problems.append(f"pixel spacing {row_spacing:g}×{col_spacing:g} mm, the grid's {geometry.spacing[1]:g}×{geometry.spacing[0]:g} mm")
    if problems:
        raise ImageError(f"the SEG is not on the grid of the mask it is compared with: {'; '.join(problems)}", seg_path)
    index = (positions - np.asarray(geometry.origin)) @ direction / np.asarray(geometry.spacing)
    z = np.round(index[:, 2]).astype(int)
    # a tenth of a pixel or of a slice: header rounding, never a different slice
    off = np.flatnonzero((np.abs(index[:, :2]).max(axis=1) > 0.1) | (np.abs(index[:, 2] - z) > 0.1) | (z < 0) | (z >= size_z))
    if off.size:
        k = int(off[0])
        raise ImageError(f"{off.size} of the SEG's {len(positions)} frames lie off the grid's slices (frame {k + 1} at "
                         f"{np.round(positions[k], 2).tolist()} mm, grid index {np.round(index[k], 2).tolist()})", seg_path)
    shared = (seg.get("SharedFunctionalGroupsSequence") or [None])[0]
    # a SEG of one segment may name it once for all frames, in the shared groups
    number = np.array([int(_group_value(g, shared, "SegmentIdentificationSequence", "ReferencedSegmentNumber") or 0)
                       for g in seg.PerFrameFunctionalGroupsSequence])
    pixels = np.asarray(seg.pixel_array).reshape(len(positions), rows, cols)
    if str(seg.get("SegmentationType", "BINARY")).upper() == "FRACTIONAL":
        marked = pixels >= 0.5 * float(seg.get("MaximumFractionalValue", 255))
    else:
        marked = pixels > 0
    out = np.zeros((size_z, size_y, size_x), dtype=np.uint8)
    for k in np.flatnonzero(np.isin(number, segments)):
        out[z[k]] |= marked[k]
    return out


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
