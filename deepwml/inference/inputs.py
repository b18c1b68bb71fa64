"""Find the cases to predict: one image file, a folder of image files, a DICOM series or study folder, or a folder of those.

For a model that takes several image channels, a case is the files ``CASE_0000<ending>`` (channel 0, the FLAIR) ..
``CASE_{C-1:04d}<ending>`` side by side, as in a raw dataset; its outputs are named ``CASE``.
"""
from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from deepwml.imageio import Image, has_image_ending, is_image_file, list_dicom_series, read_image, split_ending, unreadable_reason
from deepwml.imageio.dicom import dicom_subfolders, quiet_itk, series_in
from deepwml.imageio.dicom_series import describe_series
from deepwml.inference.case_list import is_case_list, listed_cases
from deepwml.inference.output_folder import MARKER_NAME, is_output_folder
from deepwml.utils.errors import DeepWMLError, ImageError

#: DICOM inputs get their masks as NIfTI, aligned to the series.
DICOM_OUTPUT_ENDING = ".nii.gz"
#: 'CASE_0001' → ('CASE', '0001'): one channel's file of a multi-channel case
CHANNEL_STEM = re.compile(r"^(.+)_(\d{4})$")


@dataclass(frozen=True)
class InputCase:
    """One case to predict: its id (output file stem), where it is read from and the ending its outputs get."""

    case_id: str
    source: Path
    kind: str  # 'file' or 'dicom'
    output_ending: str
    bids_names: bool = False  # name outputs BIDS-derivative style (deepwml_predict --bids-names)
    #: ``case_id`` is a pseudonym (deepwml_predict --pseudonymise): no output names the source
    pseudonymised: bool = False
    #: every channel's file, channel 0 (= ``source``) first, for a model with several channels; empty: one channel
    channels: Tuple[Path, ...] = ()
    #: how the source is named to the user when it is not where it was given (an archive's member: deepwml.imageio.archives)
    shown_as: str = ""

    @property
    def shown_source(self) -> str:
        """The source as the user gave it: ``shown_as``, else the path."""
        return self.shown_as or str(self.source)

    def input_files(self) -> List[Path]:
        """Every file that belongs to this input (all files of a DICOM folder); outputs must never replace them."""
        if self.kind == "dicom":
            if not self.source.is_dir():  # a case list's missing folder: nothing to protect, and the case fails by name
                return []
            # a study folder's series lie below it; an earlier output folder there holds no input
            folders = [self.source, *dicom_subfolders(self.source, prune=is_output_folder)]
            return [p for f in folders for p in f.iterdir() if p.is_file()]
        files = []
        for source in self.channels or (self.source,):
            files.append(source)
            stem, ending = split_ending(source)
            if ending in (".mhd", ".nhdr"):
                # detached headers point at a data file of the same stem; protect those too
                files += [p for p in source.parent.glob(f"{stem}.*") if p.is_file() and p != source]
        return files


def _holds_dicom(folder: Path) -> bool:
    """True when ``folder`` directly holds at least one DICOM series."""
    return bool(series_in(folder))


def _holds_dicom_below(folder: Path) -> bool:
    """True when ``folder`` holds no files but the folders below it hold DICOM series (a study's series folders)."""
    if any(p.is_file() for p in _visible(folder)):
        return False
    return any(series_in(sub) for sub in dicom_subfolders(folder))


def _is_one_study(series_folders: List[Path]) -> bool:
    """True when the series folders are one study's series (one Study Instance UID) and not all T2-FLAIRs: one case
    whose FLAIR is chosen, rather than a case per series. A batch of FLAIR series stays a case per folder."""
    if len(series_folders) < 2:
        return False
    studies, infos = set(), []
    for folder in series_folders:
        series = list_dicom_series(folder)
        if len(series) != 1:
            return False
        info = describe_series(series)[0]
        study = _study_uid(info.files)
        if study is None:
            return False
        studies.add(study)
        infos.append(info)
    return len(studies) == 1 and not all(i.is_mr_image and i.is_t2_flair for i in infos)


def _study_uid(files) -> Optional[str]:
    """The Study Instance UID of the first file that has one (headers only)."""
    import pydicom

    for name in list(files)[:3]:
        try:
            uid = pydicom.dcmread(name, stop_before_pixels=True, specific_tags=["StudyInstanceUID"]).get("StudyInstanceUID")
        except Exception:  # noqa: BLE001 - not DICOM: not part of a study
            continue
        if uid:
            return str(uid)
    return None


#: picture formats a viewer or a screenshot writes: 2D pixels without slice positions or spacing, never a scan
PICTURE_ENDINGS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp")


def _pictures_said(pictures: List[Path]) -> str:
    """The picture files of a folder in one phrase, the first few named."""
    names = ", ".join(p.name for p in pictures[:3]) + (f" and {len(pictures) - 3} more" if len(pictures) > 3 else "")
    return (f"{len(pictures)} picture file(s) ({names}), which are no scans: a picture has no slice positions or "
            "spacing; export the series as DICOM or NIfTI")


def _visible(folder: Path) -> List[Path]:
    """Children of ``folder`` that are not hidden (temporary files of atomic writes start with '.')."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _file_case(path: Path) -> InputCase:
    """An image file as a case named after its stem."""
    stem, ending = split_ending(path)
    return InputCase(stem, path, "file", ending)


def _dicom_case(folder: Path) -> InputCase:
    """A DICOM series folder as a case named after the folder."""
    return InputCase(folder.name, folder, "dicom", DICOM_OUTPUT_ENDING)


def _dicomdir_cases(root: Path) -> Optional[List[InputCase]]:
    """A media export (CD, PACS export with a DICOMDIR): a case per study the DICOMDIR lists, read from the folder
    holding that study's files and named PatientID_StudyDate; None (folders decide, with a note) when the DICOMDIR
    cannot be read or its studies do not lie in folders of their own."""
    import os

    import pydicom
    from pydicom.fileset import FileSet

    try:
        instances = list(FileSet(pydicom.dcmread(root / "DICOMDIR")))
        studies: Dict[str, Tuple[str, str, List[str]]] = {}
        for instance in instances:
            uid = str(instance.StudyInstanceUID)
            entry = studies.setdefault(uid, (str(getattr(instance, "PatientID", "") or ""),
                                             str(getattr(instance, "StudyDate", "") or ""), []))
            entry[2].append(os.path.realpath(instance.path))
    except Exception as e:  # noqa: BLE001 - a broken DICOMDIR: the folders still hold the files
        print(f"[deepwml_predict] note: {root / 'DICOMDIR'} cannot be read ({str(e).splitlines()[0][:120]}); "
              "cases are found from the folders instead", file=sys.stderr)
        return None
    folders = {uid: Path(os.path.commonpath(files)) for uid, (_, _, files) in studies.items()}
    # a study whose files share a folder with another study's cannot be read as a folder of its own
    for uid, folder in folders.items():
        if folder.is_file() or any(f.startswith(str(folder) + os.sep) for other, (_, _, fs) in studies.items()
                                   if other != uid for f in fs):
            print(f"[deepwml_predict] note: the studies of {root / 'DICOMDIR'} share folders; cases are found from the "
                  "folders instead", file=sys.stderr)
            return None
    if not studies:
        return None
    cases, seen = [], Counter()
    for uid, (patient, date, _) in sorted(studies.items(), key=lambda kv: (kv[1][0], kv[1][1], str(folders[kv[0]]))):
        name = re.sub(r"[^A-Za-z0-9.-]+", "_", f"{patient}_{date}".strip("_")).strip("._-") or folders[uid].name
        seen[name] += 1
        cases.append(InputCase(name if seen[name] == 1 else f"{name}_{seen[name]}", folders[uid], "dicom", DICOM_OUTPUT_ENDING))
    return cases


def _is_candidate_series_folder(folder: Path) -> bool:
    """A subfolder that should hold a DICOM series: it has files and they are not images DeepWML reads directly.

    Folders that are empty or hold only NIfTI/MHA/NRRD files (for example an earlier output folder) are skipped;
    anything else is a case, so an unreadable series is reported as a failed case instead of vanishing silently.
    """
    files = [p for p in _visible(folder) if p.is_file()]
    return bool(files) and not all(is_image_file(p) for p in files)


def discover_cases(input_path: Union[str, Path], n_channels: int = 1) -> List[InputCase]:
    """List the cases below ``input_path`` sorted by case id; duplicate ids are an error naming them.

    With ``n_channels`` > 1 the files ``CASE_0000`` .. ``CASE_{C-1:04d}`` (any ending) make one case ``CASE``.
    """
    path = Path(input_path).expanduser()
    if not path.exists():
        raise DeepWMLError("input not found", path)
    if is_case_list(path):  # a CSV naming the scans, wherever they lie (deepwml.inference.case_list)
        return listed_cases(path, n_channels)
    if path.is_file():
        if not is_image_file(path):
            split_ending(path)  # raises with the list of known endings
        if n_channels > 1:
            # one file of a multi-channel case stands for the case: its sibling channels are read beside it
            return group_channels([_file_case(path)], n_channels, path.parent)
        return [_file_case(path)]
    if is_output_folder(path):
        raise DeepWMLError(
            f"is an output folder of deepwml_predict (it holds {MARKER_NAME} or summary.csv with lesion tables), "
            "not scans; give the folder of scans to -i",
            path,
        )
    children = _visible(path)
    pictures = [p for p in children if p.name.lower().endswith(PICTURE_ENDINGS) and p.is_file()]
    # broken links, empty files and folders named like images stay cases: they fail by name instead of vanishing
    files = [p for p in children if has_image_ending(p) and not (p.is_dir() and _is_candidate_series_folder(p))]
    folders = [p for p in children if p.is_dir() and p not in files]
    earlier_outputs = [p for p in folders if is_output_folder(p)]
    if earlier_outputs:
        # said once per run: a folder of masks must never turn into a failed 'DICOM series' case, nor vanish unnoticed
        names = ", ".join(p.name for p in earlier_outputs)
        print(f"[deepwml_predict] note: skipped {len(earlier_outputs)} earlier DeepWML output folder(s) in {path}: {names}", file=sys.stderr)
        folders = [p for p in folders if p not in earlier_outputs]
    if (path / "DICOMDIR").is_file():
        media = _dicomdir_cases(path)
        if media is not None:
            return media
    if not files and _holds_dicom(path):
        return [_dicom_case(path)]
    series_folders = [p for p in folders if _is_candidate_series_folder(p)]
    if not files and _is_one_study(series_folders):
        return [_dicom_case(path)]
    # a folder holding only folders that hold DICOM: a study exported one folder per series, one case
    study_folders = [p for p in folders if p not in series_folders and _holds_dicom_below(p)]
    cases = [_file_case(p) for p in files]
    if n_channels > 1:
        cases = group_channels(cases, n_channels, path)
    cases += [_dicom_case(p) for p in series_folders + study_folders]
    if not cases:
        raise DeepWMLError(
            "no images found: expected NIfTI/MHA/MHD/NRRD files, a DICOM series folder, or a folder of DICOM series folders"
            + (f"; {_pictures_said(pictures)}" if pictures else ""),
            path,
        )
    if pictures:  # a screenshot or a viewer's JPEG export beside the scans: left, and said, rather than silently
        print(f"[deepwml_predict] note: left {_pictures_said(pictures)} in {path}", file=sys.stderr)
    duplicates = sorted(cid for cid, n in Counter(c.case_id for c in cases).items() if n > 1)
    if duplicates:
        raise DeepWMLError(f"several inputs share the case id(s) {', '.join(duplicates)}; rename one of each", path)
    return sorted(cases, key=lambda c: c.case_id)


def group_channels(cases: List[InputCase], n_channels: int, folder: Path) -> List[InputCase]:
    """Files ``CASE_0000`` .. ``CASE_{C-1:04d}`` as one case ``CASE`` (missing channels fail when the case is read)."""
    groups: Dict[Tuple[str, str], Dict[int, Path]] = {}
    for case in cases:
        match = CHANNEL_STEM.match(case.case_id)
        if match is None or int(match.group(2)) >= n_channels:
            expected = ", ".join(f"CASE_{c:04d}{case.output_ending}" for c in range(n_channels))
            raise DeepWMLError(f"the model takes {n_channels} image channels, so each case is the files {expected} "
                               f"(channel 0 the FLAIR); {case.source.name} is not one of them", folder)
        groups.setdefault((match.group(1), case.output_ending), {})[int(match.group(2))] = case.source
    out = []
    for (case_id, ending), found in groups.items():
        parent = next(iter(found.values())).parent
        channels = tuple(found.get(c, parent / f"{case_id}_{c:04d}{ending}") for c in range(n_channels))
        out.append(InputCase(case_id, channels[0], "file", ending, channels=channels))
    return out


def read_channels(case: InputCase, series_uid: Optional[str] = None) -> List[Image]:
    """Every image channel of a case, channel 0 first; a missing channel file names the case and the file."""
    for channel, source in enumerate(case.channels):
        if not source.exists():
            raise ImageError(f"case {case.case_id}: channel {channel} image file {source.name} is missing "
                             f"(the model takes {len(case.channels)} channels)", source)
    first = read_case(case, series_uid)
    return [first] + [read_case(InputCase(case.case_id, source, "file", case.output_ending)) for source in case.channels[1:]]


def read_case(case: InputCase, series_uid: Optional[str] = None) -> Image:
    """Read one case and reject images no model can segment (NaN, 4D, unreadable, empty, constant)."""
    reason = unreadable_reason(case.source) if case.kind == "file" else None
    if reason:
        raise ImageError(reason, case.source)
    with quiet_itk():
        image = read_image(case.source, series_uid=series_uid if case.kind == "dicom" else None)
    array = image.array
    if array.size == 0:
        raise ImageError("image has no voxels", case.source)
    lo, hi = float(np.min(array)), float(np.max(array))
    if hi <= lo:
        raise ImageError(f"image is empty: every voxel is {lo:g}", case.source)
    return image
