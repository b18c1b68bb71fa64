"""DICOM series folders: a series per folder, or a study folder whose FLAIR is chosen; classic or multi-frame."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Union

import SimpleITK as sitk

from deepwml.imageio.dicom_multiframe import read_multiframe
from deepwml.imageio.dicom_series import choose_series
from deepwml.imageio.geometry import Geometry
from deepwml.imageio.headers import check_dicom_slices, check_geometry
from deepwml.utils.errors import ImageError


#: how deep below a study folder its series folders may lie (e.g. STUDY/PATIENT/EXAM/SERIES/files)
STUDY_DEPTH = 4


@contextlib.contextmanager
def quiet_itk() -> Iterator[None]:
    """GDCM warns on stderr for every folder without DICOM; the series search probes such folders on purpose."""
    previous = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(previous)


def _series_ids(folder: Path) -> List[str]:
    with quiet_itk():
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or ())


def dicom_subfolders(folder: Path, depth: int = STUDY_DEPTH, prune: Optional[Callable[[Path], bool]] = None) -> Iterator[Path]:
    """The visible folders below ``folder`` down to ``depth`` levels, in name order (breadth first); a folder for
    which ``prune`` is true is left out with everything below it."""
    level = [folder]
    for _ in range(depth):
        level = [c for f in level for c in sorted(f.iterdir())
                 if c.is_dir() and not c.name.startswith(".") and not (prune and prune(c))]
        yield from level


def list_dicom_series(folder: Union[str, Path]) -> Dict[str, List[str]]:
    """Map each series instance UID in ``folder`` to its files, sorted by slice position; when the folder holds no
    DICOM files itself, the series of the folders below it (a study exported one folder per series)."""
    folder = Path(folder)
    reader = sitk.ImageSeriesReader()
    uids = _series_ids(folder)
    if uids:
        return {uid: list(reader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in uids}
    where: Dict[str, List[Path]] = {}
    for sub in dicom_subfolders(folder):
        for uid in _series_ids(sub):
            where.setdefault(uid, []).append(sub)
    series = {}
    for uid, folders in where.items():
        if len(folders) == 1:
            series[uid] = list(reader.GetGDCMSeriesFileNames(str(folders[0]), uid))
        else:  # one series split over folders: GDCM sorts the files of the whole tree by position
            series[uid] = list(reader.GetGDCMSeriesFileNames(str(folder), uid, False, True))
    return series


def is_dicom_folder(folder: Union[str, Path]) -> bool:
    """True when ``folder`` holds at least one DICOM series, in itself or in the folders below it."""
    folder = Path(folder)
    return folder.is_dir() and bool(list_dicom_series(folder))


def read_dicom_series(folder: Union[str, Path], series_uid: Optional[str] = None) -> sitk.Image:
    """Read one DICOM series from ``folder`` as a 3D image: the one named, the folder's only MR image series, or its
    one T2-FLAIR (see :mod:`deepwml.imageio.dicom_series`); classic (a file per slice) or multi-frame."""
    folder = Path(folder)
    info, why = choose_series(list_dicom_series(folder), folder, series_uid)
    if why:
        print(f"[deepwml] note: {folder}: reading {info.label()}, {why}; choose another with --series-uid", file=sys.stderr)
    files = list(info.files)
    if info.frames > 1:
        if len(files) > 1:
            raise ImageError(f"DICOM series {info.uid} is {len(files)} multi-frame files; DeepWML reads a series as one "
                             "multi-frame file or one file per slice", folder)
        image = read_multiframe(Path(files[0]))
    else:
        if len(files) < 2:
            raise ImageError(f"DICOM series {info.uid} has {len(files)} slice; expected a 3D stack", folder)
        # before ITK: it would silently take a zero Pixel Spacing or slice gap as 1 mm
        check_dicom_slices(files, folder)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            image = reader.Execute()
        except RuntimeError as e:
            raise ImageError(f"unreadable DICOM series {info.uid} ({str(e).strip().splitlines()[-1][:200]})", folder) from None
    if image.GetDimension() != 3:
        raise ImageError(f"DICOM series {info.uid} is {image.GetDimension()}D; expected 3D", folder)
    check_geometry(Geometry.from_sitk(image), folder)
    return image
