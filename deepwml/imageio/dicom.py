"""DICOM series folders: one series per folder, or the series named explicitly when a folder holds several."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union

import SimpleITK as sitk

from deepwml.imageio.geometry import Geometry
from deepwml.imageio.headers import check_dicom_slices, check_geometry
from deepwml.utils.errors import ImageError


def list_dicom_series(folder: Union[str, Path]) -> Dict[str, List[str]]:
    """Map each series instance UID in ``folder`` to its files, sorted by slice position."""
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    uids = reader.GetGDCMSeriesIDs(str(folder)) or ()
    return {uid: list(reader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in uids}


def is_dicom_folder(folder: Union[str, Path]) -> bool:
    """True when ``folder`` directly holds at least one DICOM series."""
    folder = Path(folder)
    return folder.is_dir() and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))


def read_dicom_series(folder: Union[str, Path], series_uid: Optional[str] = None) -> sitk.Image:
    """Read one DICOM series from ``folder`` as a 3D image."""
    folder = Path(folder)
    series = list_dicom_series(folder)
    if not series:
        raise ImageError("folder holds no DICOM series", folder)
    if series_uid is None:
        if len(series) > 1:
            raise ImageError(
                f"folder holds {len(series)} DICOM series; choose one with its series UID: {', '.join(sorted(series))}",
                folder,
            )
        series_uid = next(iter(series))
    if series_uid not in series:
        raise ImageError(f"no DICOM series {series_uid!r}; found {', '.join(sorted(series))}", folder)
    files = series[series_uid]
    if len(files) < 2:
        raise ImageError(f"DICOM series {series_uid} has {len(files)} slice; expected a 3D stack", folder)
    # before ITK: it would silently take a zero Pixel Spacing or slice gap as 1 mm
    check_dicom_slices(files, folder)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as e:
        raise ImageError(f"unreadable DICOM series {series_uid} ({str(e).strip().splitlines()[-1][:200]})", folder) from None
    if image.GetDimension() != 3:
        raise ImageError(f"DICOM series {series_uid} is {image.GetDimension()}D; expected 3D", folder)
    check_geometry(Geometry.from_sitk(image), folder)
    return image
