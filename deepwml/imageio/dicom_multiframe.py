"""Enhanced (multi-frame) MR objects: the whole stack in one file, each frame's position in its functional groups.

Newer scanners export these instead of one file per slice. ITK (GDCM) decodes and rescales the pixels; the
frames' positions are checked first (one orientation, one stack, evenly spaced, one pixel spacing and rescale),
because a file holding several stacks or echoes would otherwise be read as one stack with a wrong slice spacing,
and the stack is ordered and placed by the frames' own positions (slices ascending along the slice normal, as a
classic series reads) whatever order they are stored in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

import numpy as np
import SimpleITK as sitk

from deepwml.imageio.headers import check_slice_positions
from deepwml.utils.errors import ImageError


def frame_geometry(ds, path: Path) -> Tuple[np.ndarray, np.ndarray]:
    """Each frame's Image Position (Patient) (frames × 3) and the one Image Orientation (Patient) (6,)."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) != frames:
        raise ImageError(f"multi-frame DICOM with {frames} frames has {len(per_frame)} per-frame functional groups; "
                         "the frames cannot be placed", path)
    positions, orientations = [], []
    for k, group in enumerate(per_frame):
        position = _group_value(group, shared, "PlanePositionSequence", "ImagePositionPatient")
        orientation = _group_value(group, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        if position is None or orientation is None:
            raise ImageError(f"frame {k + 1} of the multi-frame DICOM has no Image Position/Orientation (Patient); "
                             "the frames cannot be placed", path)
        positions.append(_numbers(position, 3, path, f"frame {k + 1} Image Position (Patient)"))
        orientations.append(_numbers(orientation, 6, path, f"frame {k + 1} Image Orientation (Patient)"))
    orientations = np.asarray(orientations)
    if not np.allclose(orientations, orientations[0], atol=1e-4):
        raise ImageError("the frames of the multi-frame DICOM have different orientations (a localiser or several "
                         "stacks in one file); export the FLAIR stack alone", path)
    return np.asarray(positions), orientations[0]


def read_multiframe(path: Path) -> sitk.Image:
    """Read a multi-frame MR object as a 3D image whose slices ascend along the slice normal."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as e:  # noqa: BLE001 - any parse failure is the file's fault
        raise ImageError(f"unreadable DICOM file ({str(e).splitlines()[0][:200]})", path) from None
    positions, orientation = frame_geometry(ds, path)
    normal = np.cross(orientation[:3], orientation[3:])
    check_slice_positions(positions, normal, path, repeat_hint="does the file hold several stacks or echoes?")
    _check_one_rescale(ds, path)
    pixel_spacing = _pixel_spacing(ds, path)
    try:
        decoded = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ImageError(f"unreadable multi-frame DICOM ({str(e).strip().splitlines()[-1][:200]})", path) from None
    frames = sitk.GetArrayFromImage(decoded)
    if frames.ndim != 3 or frames.shape[0] != len(positions):
        raise ImageError(f"ITK decoded the multi-frame DICOM as {frames.shape}, not {len(positions)} frames", path)
    # ITK takes its geometry from the first frames and keeps the stored order (wrong for frames stored interleaved),
    # so only its pixels (rescaled) are used: the stack is ordered and placed by each frame's own position
    along = positions @ normal
    order = np.argsort(along)
    image = sitk.GetImageFromArray(np.ascontiguousarray(frames[order]))
    image.SetSpacing((pixel_spacing[1], pixel_spacing[0], float(np.median(np.diff(along[order])))))
    image.SetOrigin(tuple(float(v) for v in positions[order[0]]))
    image.SetDirection(tuple(float(v) for v in np.column_stack([orientation[:3], orientation[3:], normal]).ravel()))
    return image


def _pixel_spacing(ds, path: Path) -> np.ndarray:
    """The (row, column) Pixel Spacing all frames share, from the functional groups."""
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    found = set()
    for k, group in enumerate(ds.get("PerFrameFunctionalGroupsSequence") or []):
        value = _group_value(group, shared, "PixelMeasuresSequence", "PixelSpacing")
        if value is None:
            raise ImageError(f"frame {k + 1} of the multi-frame DICOM has no Pixel Spacing", path)
        spacing = _numbers(value, 2, path, f"frame {k + 1} Pixel Spacing")
        if np.any(spacing <= 0):
            raise ImageError(f"frame {k + 1} Pixel Spacing {tuple(spacing)} is not positive", path)
        found.add(tuple(np.round(spacing, 6)))
    if len(found) != 1:
        raise ImageError(f"the frames of the multi-frame DICOM have {len(found)} different pixel spacings", path)
    return np.asarray(found.pop())


def _check_one_rescale(ds, path: Path) -> None:
    """One Rescale Slope/Intercept for all frames: ITK applies a single one to the whole stack."""
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    pairs = set()
    for group in ds.get("PerFrameFunctionalGroupsSequence") or []:
        item = _group_item(group, shared, "PixelValueTransformationSequence")
        if item is not None:
            pairs.add((float(item.get("RescaleSlope", 1) or 1), float(item.get("RescaleIntercept", 0) or 0)))
    if len(pairs) > 1:
        raise ImageError(f"the frames of the multi-frame DICOM have {len(pairs)} different rescale slopes/intercepts; "
                         "ITK would apply one to all", path)


def _group_item(group, shared, sequence: str):
    """The first item of a functional-group ``sequence``, per-frame first, then shared; None when absent."""
    for source in (group, shared):
        if source is not None and source.get(sequence):
            return source.get(sequence)[0]
    return None


def _group_value(group, shared, sequence: str, keyword: str):
    item = _group_item(group, shared, sequence)
    return None if item is None else item.get(keyword)


def _numbers(value, n: int, path: Path, what: str) -> np.ndarray:
    try:
        out = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        out = np.zeros(0)
    if out.shape != (n,) or not np.all(np.isfinite(out)):
        raise ImageError(f"{what} is not {n} finite numbers", path)
    return out
