"""DICOM series written the way the tests and benchmarks need them: one MR file per slice, full patient geometry."""
from __future__ import annotations

import locale
from pathlib import Path
from typing import Optional

import numpy as np
import SimpleITK as sitk

from deepwml.imageio import Geometry

#: pydicom's UID root, used here only to build syntactically valid test UIDs
UID_ROOT = "1.2.826.0.1.3680043.8.498."


def write_dicom_series(folder: Path, array: np.ndarray, geometry: Geometry, series_uid: str,
                       study_uid: Optional[str] = None, prefix: str = "slice", description: str = "AX FLAIR",
                       extra_tags: Optional[dict] = None) -> Path:
    """Write a (z, y, x) int16 array as one MR slice file per z index, with full patient geometry (``extra_tags``:
    more DICOM tags as 'gggg|eeee' -> text)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array.astype(np.int16))
    geometry.apply_to(image)
    d = geometry.direction
    # Image Orientation (Patient): the row (x) and column (y) direction cosines, i.e. the first two matrix columns
    orientation = "\\".join(f"{v:.10f}" for v in (d[0], d[3], d[6], d[1], d[4], d[7]))
    tags = {
        "0008|0060": "MR",
        "0008|0016": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
        "0010|0010": "Test^Patient",
        "0010|0020": "P001",
        "0020|000d": study_uid or UID_ROOT + "1",
        "0020|000e": series_uid,
        "0020|0052": f"{series_uid}.0",  # Frame of Reference UID: a DICOM SEG must share it
        "0020|0037": orientation,
        "0018|0050": f"{geometry.spacing[2]:.6f}",
        "0008|103e": description,
        **(extra_tags or {}),
    }
    # ITK's DICOM writer (GDCM) switches LC_CTYPE to "C" and leaves it so: Python's default text encoding would
    # turn ASCII for the rest of the test session, breaking unrelated tests that read non-ASCII output
    saved_locale = locale.setlocale(locale.LC_ALL)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for z in range(array.shape[0]):
        slice_image = image[:, :, z]
        for tag, value in tags.items():
            slice_image.SetMetaData(tag, value)
        position = image.TransformIndexToPhysicalPoint((0, 0, z))
        slice_image.SetMetaData("0020|0032", "\\".join(f"{v:.10f}" for v in position))
        slice_image.SetMetaData("0020|0013", str(z + 1))
        slice_image.SetMetaData("0008|0018", f"{series_uid}.{z + 1}")
        writer.SetFileName(str(folder / f"{prefix}{z:03d}.dcm"))
        writer.Execute(slice_image)
    locale.setlocale(locale.LC_ALL, saved_locale)
    return folder
