"""DICOM series folders: a series per folder, or a study folder whose FLAIR is chosen; classic or multi-frame."""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Union

import numpy as np
import SimpleITK as sitk

from deepwml.imageio.dicom_multiframe import read_multiframe
from deepwml.imageio.dicom_series import SeriesInfo, choose_series
from deepwml.imageio.geometry import Geometry
from deepwml.imageio.headers import check_dicom_slices, check_geometry
from deepwml.utils.errors import ImageError


#: (folder, series UID) whose choice this process has already told
_SAID: set = set()
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


#: the header fields the series scan reads from every file (pydicom stops at the last one it needs)
SCAN_TAGS = ["SeriesInstanceUID", "ImageOrientationPatient", "ImagePositionPatient", "InstanceNumber"]


def series_in(folder: Path) -> Dict[str, List[str]]:
    """The DICOM files directly in ``folder`` by series UID, each series sorted along its slice normal (then by
    Instance Number, then by name). One header read per file: GDCM's series lookup rescans the folder per series."""
    found: Dict[str, List[tuple]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        ds = _header(path)
        uid = str(ds.get("SeriesInstanceUID", "") or "") if ds is not None else ""
        if not uid:
            continue
        found.setdefault(uid, []).append((_slice_key(ds), str(path)))
    return {uid: [name for _, name in sorted(entries)] for uid, entries in found.items()}


def _header(path: Path):
    """The scan fields of a DICOM file, or None for any other file (a file without the 128-byte preamble, as old
    exports write them, counts when it starts with a group-0008 element)."""
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=SCAN_TAGS)
    except Exception:  # noqa: BLE001 - not DICOM, or not readable: not part of a series
        pass
    try:
        with open(path, "rb") as f:
            start = f.read(2)
        if start != b"\x08\x00":
            return None
        return pydicom.dcmread(str(path), stop_before_pixels=True, specific_tags=SCAN_TAGS, force=True)
    except Exception:  # noqa: BLE001
        return None


def _slice_key(ds) -> tuple:
    """Position along the slice normal when the file has patient geometry, else its Instance Number."""
    try:
        cosines = np.asarray([float(v) for v in ds.ImageOrientationPatient], dtype=float)
        position = np.asarray([float(v) for v in ds.ImagePositionPatient], dtype=float)
        if cosines.shape == (6,) and position.shape == (3,) and np.all(np.isfinite(cosines)) and np.all(np.isfinite(position)):
            return (0, float(np.cross(cosines[:3], cosines[3:]) @ position))
    except (AttributeError, TypeError, ValueError):
        pass
    try:
        return (1, float(ds.get("InstanceNumber")))
    except (TypeError, ValueError):
        return (2, 0.0)


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
    series = series_in(folder)
    if series:
        return series
    merged: Dict[str, List[str]] = {}
    for sub in dicom_subfolders(folder):
        for uid, files in series_in(sub).items():
            merged.setdefault(uid, []).extend(files)
    # a series split over folders is sorted as a whole
    return {uid: files if len(files) < 2 or _same_folder(files) else _resorted(files) for uid, files in merged.items()}


def _same_folder(files: List[str]) -> bool:
    return len({str(Path(f).parent) for f in files}) == 1


def _resorted(files: List[str]) -> List[str]:
    return [name for _, name in sorted((_slice_key(_header(Path(f))), f) for f in files)]


def chosen_series(folder: Union[str, Path], series_uid: Optional[str] = None) -> SeriesInfo:
    """The series :func:`read_dicom_series` reads from ``folder`` (the same choice for its SEG, report and capture)."""
    return choose_series(list_dicom_series(folder), Path(folder), series_uid)[0]


def is_dicom_folder(folder: Union[str, Path]) -> bool:
    """True when ``folder`` holds at least one DICOM series, in itself or in the folders below it."""
    folder = Path(folder)
    return folder.is_dir() and bool(list_dicom_series(folder))


def read_dicom_series(folder: Union[str, Path], series_uid: Optional[str] = None) -> sitk.Image:
    """Read one DICOM series from ``folder`` as a 3D image: the one named, the folder's only MR image series, or its
    one T2-FLAIR (see :mod:`deepwml.imageio.dicom_series`); classic (a file per slice) or multi-frame."""
    folder = Path(folder)
    info, why = choose_series(list_dicom_series(folder), folder, series_uid)
    if why and (str(folder), info.uid) not in _SAID:
        _SAID.add((str(folder), info.uid))  # a folder is read more than once per run (e.g. by deepwml_compare)
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
