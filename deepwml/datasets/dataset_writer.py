"""Write a raw dataset from source files: copy or link what is already in the right format, convert the rest losslessly.

The dataset is assembled in a hidden staging folder next to its final place and renamed into place only
when every case is written, so a reader never sees half a dataset. An interrupted conversion resumes:
files already staged from the same source are kept.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Protocol, Sequence, Union

import SimpleITK as sitk

from deepwml.constants import IMAGE_ENDINGS
from deepwml.datasets.dataset_json import CaseMeta, DatasetJson, case_id_problem, schema_problems
from deepwml.datasets.raw_dataset import DATASET_DIR, SPLITS, dataset_folder_name
from deepwml.datasets.verify import Problem, verify_dataset
from deepwml.imageio import Geometry, read_sitk, split_ending, write_image
from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import DatasetError

LINK_MODES = ("copy", "hardlink", "symlink")

#: Header + separate data file formats: copying the header alone would orphan it, so these are always re-written.
DETACHED_ENDINGS = (".mhd", ".nhdr")

_PROGRESS_FILE = ".conversion_progress.jsonl"


class LabelSource(Protocol):
    """A label that is computed rather than copied (e.g. a consensus of several raters)."""

    def key(self) -> str:
        """Identifies the inputs, so that a resumed conversion knows whether the staged file is current."""

    def write(self, target: Path) -> None:
        """Write the label to ``target`` atomically."""


@dataclass
class SourceCase:
    """One case to put into a raw dataset: where its image and label come from, and its metadata."""

    case_id: str
    image: Path
    label: Union[None, Path, LabelSource] = None
    meta: CaseMeta = field(default_factory=CaseMeta)
    split: str = "Tr"
    #: which series to take when ``image`` is a DICOM folder holding several
    series_uid: Optional[str] = None


@dataclass
class ConversionResult:
    """Where the dataset was written and what verify_dataset found wrong with it."""

    folder: Path
    problems: List[Problem]
    n_cases: int


def safe_case_id(text: str) -> str:
    """A case id derived from a file or folder name: characters other than [A-Za-z0-9_.-] become '_'."""
    cid = re.sub(r"[^A-Za-z0-9_.\-]+", "_", text)
    cid = re.sub(r"\.{2,}", "_", cid)
    cid = re.sub(r"_{2,}", "_", cid).strip("._-")
    return cid or "case"


def write_dataset(
    cases: Sequence[SourceCase],
    raw_root: Union[str, Path],
    dataset_id: int,
    name: str,
    file_ending: str = ".nii.gz",
    labels: Optional[Dict[str, int]] = None,
    description: str = "",
    overwrite: bool = False,
    link: str = "copy",
    n_jobs: int = 1,
    progress: bool = False,
) -> ConversionResult:
    """Write ``cases`` as raw dataset DatasetNNN_name below ``raw_root``, then verify it; returns its problems."""
    raw_root = Path(raw_root)
    folder_name = dataset_folder_name(dataset_id, name)
    target = raw_root / folder_name
    spec = _dataset_json(cases, folder_name, file_ending, labels, description)
    if link not in LINK_MODES:
        raise DatasetError(f"link mode must be one of {', '.join(LINK_MODES)}, got {link!r}")
    _check_target(raw_root, target, int(dataset_id), overwrite)

    staging = raw_root / f".{folder_name}.partial"
    staging.mkdir(parents=True, exist_ok=True)
    done = _read_progress(staging / _PROGRESS_FILE)
    from tqdm import tqdm

    with open(staging / _PROGRESS_FILE, "a") as log:
        for case in tqdm(cases, desc=f"convert {folder_name}", unit="case", file=sys.stderr, disable=not progress):
            for kind, source in (("images", case.image), ("labels", case.label)):
                if source is None:
                    continue
                rel = f"{kind}{case.split}/{case.case_id}{file_ending}"
                key = _source_key(source, link, case.series_uid if kind == "images" else None)
                if done.get(rel) == key and (staging / rel).exists():
                    continue
                _put(source, staging / rel, link, case.series_uid if kind == "images" else None)
                log.write(json.dumps({"file": rel, "source": key}) + "\n")
                log.flush()
    expected = {f"{kind}{c.split}/{c.case_id}{file_ending}" for c in cases for kind in ("images", "labels")}
    _remove_stale(staging, expected)
    spec.save(staging / "dataset.json")
    (staging / _PROGRESS_FILE).unlink()
    _move_into_place(staging, target)
    problems = verify_dataset(target, n_jobs=n_jobs, progress=progress)
    return ConversionResult(target, problems, len(cases))


def _dataset_json(cases: Sequence[SourceCase], name: str, file_ending: str, labels: Optional[Dict[str, int]], description: str) -> DatasetJson:
    """dataset.json for ``cases``; every problem of the case list is raised at once, before anything is written."""
    problems = []
    if file_ending not in IMAGE_ENDINGS:
        problems.append(f"file ending {file_ending!r} is not one of {', '.join(IMAGE_ENDINGS)}")
    if not cases:
        problems.append("no cases found")
    seen: Dict[str, int] = {}
    for case in cases:
        why = case_id_problem(case.case_id)
        if why:
            problems.append(f"{why} (image {case.image})")
        seen[case.case_id.lower()] = seen.get(case.case_id.lower(), 0) + 1
        if case.split not in SPLITS:
            problems.append(f"case {case.case_id!r}: split must be one of {', '.join(SPLITS)}, got {case.split!r}")
        if case.split == "Tr" and case.label is None:
            problems.append(f"case {case.case_id!r}: a training case needs a label (image {case.image})")
    duplicates = sorted(cid for cid, n in seen.items() if n > 1)
    if duplicates:
        problems.append(f"duplicate case ids (letter case ignored): {', '.join(duplicates)}")
    spec = DatasetJson(
        name=name,
        file_ending=file_ending,
        description=description,
        labels=dict(labels or {"background": 0, "lesion": 1}),
        cases={c.case_id: c.meta for c in cases},
        num_training=sum(c.split == "Tr" for c in cases),
        num_test=sum(c.split == "Ts" for c in cases),
    )
    problems += schema_problems(json.loads(json.dumps(spec.to_dict(), default=str)))
    if problems:
        raise DatasetError(f"cannot write dataset {name}: " + "; ".join(dict.fromkeys(problems)))
    return spec


def _check_target(raw_root: Path, target: Path, dataset_id: int, overwrite: bool) -> None:
    """Refuse to replace an existing dataset without ``overwrite``, or to reuse another dataset's id."""
    if target.exists() and not overwrite:
        raise DatasetError("dataset already exists; pass --overwrite to replace it", target)
    if raw_root.is_dir():
        for other in raw_root.iterdir():
            match = DATASET_DIR.match(other.name)
            if match and int(match.group(1)) == dataset_id and other.name != target.name and other.is_dir():
                raise DatasetError(f"dataset id {dataset_id:03d} is already used by {other.name}; choose another id", raw_root)


def _source_key(source: Union[Path, LabelSource], link: str, series_uid: Optional[str]) -> str:
    """What a staged file was made from: path, size and modification time (or the label source's own key)."""
    if not isinstance(source, Path):
        return source.key()
    if source.is_dir():
        stats = [f.stat() for f in source.rglob("*") if f.is_file()]  # a study's series may lie in subfolders
        return f"dicom:{source.resolve()}:{series_uid}:{len(stats)}:{max((s.st_mtime_ns for s in stats), default=0)}"
    stat = source.stat()
    return f"{link}:{source.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"


def _read_progress(path: Path) -> Dict[str, str]:
    """Staged file -> source key, from an interrupted run's log (a half-written last line is skipped)."""
    done: Dict[str, str] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
                done[entry["file"]] = entry["source"]
            except (ValueError, KeyError, TypeError):
                continue
    return done


def _put(source: Union[Path, LabelSource], target: Path, link: str, series_uid: Optional[str]) -> None:
    """Place one image or label at ``target``: copy/link when the format already matches, else re-write losslessly."""
    if not isinstance(source, Path):
        source.write(target)
        return
    if not source.exists():
        raise DatasetError("source file not found", source)
    if source.is_dir():
        _rewrite(read_sitk(source, series_uid), target)
        return
    _, source_ending = split_ending(source)
    _, target_ending = split_ending(target)
    if source_ending.lower() != target_ending or target_ending in DETACHED_ENDINGS:
        _rewrite(read_sitk(source), target)
        return
    with atomic_path(target, target_ending) as tmp:
        if link == "copy":
            shutil.copyfile(source, tmp)
            return
        tmp.unlink()  # os.link and os.symlink refuse to replace the placeholder atomic_path created
        try:
            if link == "hardlink":
                os.link(source, tmp)
            else:
                os.symlink(source.resolve(), tmp)
        except OSError as e:
            raise DatasetError(f"cannot {link} into {target.parent} ({e.strerror}); use --link copy", source) from None


def _rewrite(image: sitk.Image, target: Path) -> None:
    """Write a SimpleITK image in the target's format with its own voxel type: values and geometry unchanged."""
    write_image(sitk.GetArrayFromImage(image), Geometry.from_sitk(image), target)


def _remove_stale(staging: Path, expected: Iterable[str]) -> None:
    """Delete staged images and labels that the current case list no longer contains (from an earlier run)."""
    expected = set(expected)
    for split in SPLITS:
        for kind in ("images", "labels"):
            sub = staging / f"{kind}{split}"
            if not sub.is_dir():
                continue
            for path in sub.iterdir():
                if f"{kind}{split}/{path.name}" in expected:
                    continue
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path)
                else:
                    path.unlink()


def _move_into_place(staging: Path, target: Path) -> None:
    """Rename the staging folder onto ``target``; an old dataset is moved aside first and deleted after."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.replaced")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
    os.replace(staging, target)
    if old is not None:
        shutil.rmtree(old)


def describe_result(result: ConversionResult) -> str:
    """What to print at the end of a conversion: where the dataset is and whether it verified."""
    base = result.folder.parent
    if not result.problems:
        return f"wrote {result.folder} ({result.n_cases} cases); verify_dataset found no problems"
    lines = [p.relative_to(base) for p in result.problems]
    lines.append(f"wrote {result.folder} ({result.n_cases} cases), but verify_dataset found {len(result.problems)} problem(s) (listed above)")
    return "\n".join(lines)
