"""Check a raw dataset and list every problem at once, each naming the file it is about.

Cheap checks come first (dataset.json, file names, pairing, headers); voxel data is then read one
case at a time per worker, so memory stays bounded by a single case whatever the dataset size.
"""
from __future__ import annotations

import re
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from deepwml.constants import IMAGE_ENDINGS
from deepwml.datasets.dataset_json import case_id_problem, channel_name_problems, schema_problems
from deepwml.datasets.integrity import leakage
from deepwml.datasets.raw_dataset import SPLITS
from deepwml.imageio import Geometry, read_geometry, read_image, read_label, split_ending
from deepwml.utils.atomic import read_json
from deepwml.utils.errors import DatasetError, DeepWMLError

PathLike = Union[str, Path]

#: How many offending label values a message lists before it says "..."
_MAX_VALUES_SHOWN = 8
#: 'CASE_0001' → ('CASE', '0001'): one channel's image of a multi-channel case
_CHANNEL_STEM = re.compile(r"^(.+)_(\d{4})$")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a raw dataset: the file it concerns and what is wrong."""

    file: str
    message: str

    def __str__(self) -> str:
        """'<file>: <message>'."""
        return f"{self.file}: {self.message}"

    def relative_to(self, base: PathLike) -> str:
        """The problem as one line with the file shown relative to ``base`` when it lies below it."""
        try:
            shown = str(Path(self.file).relative_to(base))
        except ValueError:
            shown = self.file
        return f"{shown}: {self.message}"


#: files[split][kind][case id] -> the files of that case id (several only when the id is duplicated)
Files = Dict[str, Dict[str, Dict[str, List[Path]]]]


@dataclass(frozen=True)
class _CaseJob:
    """One image (and its label, if any) whose headers and voxels are checked together."""

    image: Path
    label: Optional[Path]
    #: the other channels' images of a multi-channel case (checked against ``image``'s grid)
    channels: Tuple[Path, ...] = ()


def verify_dataset(folder: PathLike, n_jobs: int = 1, progress: bool = False) -> List[Problem]:
    """Every problem of the raw dataset in ``folder`` (empty list: the dataset is fine)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetError("dataset folder does not exist", folder)
    json_path = folder / "dataset.json"
    problems: List[Problem] = []
    spec, json_problems = _load_dataset_json(json_path)
    problems += json_problems

    found = {split: _scan_split(folder, split) for split in SPLITS}
    ending = _declared_or_common_ending(spec, found)
    for split in SPLITS:
        problems += found[split][1]
    n_channels = _n_channels(spec)
    files = {split: _group_by_case(found[split][0], n_channels, problems) for split in SPLITS}

    problems += _file_name_problems(files, ending)
    problems += [Problem(str(path), why) for path, why in leakage(folder)]
    problems += _pairing_problems(files)
    problems += _json_agreement_problems(json_path, spec, files)

    allowed = _allowed_label_values(spec)
    jobs = list(_case_jobs(files))
    problems += _run_case_checks(jobs, allowed, n_jobs, progress)
    return problems


def check_dataset(folder: PathLike, n_jobs: int = 1, progress: bool = False) -> None:
    """Raise one DatasetError listing every problem of the dataset in ``folder`` (for other stages)."""
    problems = verify_dataset(folder, n_jobs=n_jobs, progress=progress)
    if problems:
        base = Path(folder).parent
        listing = "; ".join(p.relative_to(base) for p in problems)
        raise DatasetError(f"{len(problems)} problem(s), fix them or run deepwml_verify_dataset: {listing}", folder)


def dataset_summary(folder: PathLike) -> str:
    """One line describing a (verified) dataset: cases per split, centres and diseases."""
    folder = Path(folder)
    spec = read_json(folder / "dataset.json")
    ending = spec["file_ending"]
    if _n_channels(spec) > 1:
        ending = "_0000" + ending
    counts = {split: len(_image_ids(folder / f"images{split}", ending)) for split in SPLITS}
    metas = [spec.get("cases", {}).get(cid, {}) for split in SPLITS for cid in _image_ids(folder / f"images{split}", ending)]
    centres = sorted({str(m.get("centre", "unknown")) for m in metas})
    diseases = Counter(str(m.get("disease", "other")) for m in metas)
    shown_centres = ", ".join(centres[:6]) + (", ..." if len(centres) > 6 else "")
    disease_text = ", ".join(f"{d} {n}" for d, n in diseases.most_common())
    return (
        f"{folder.name}: {counts['Tr'] + counts['Ts']} cases ({counts['Tr']} training, {counts['Ts']} test), "
        f"{len(centres)} centre(s) ({shown_centres}), diseases: {disease_text or 'none'}; no problems found"
    )


# --- dataset.json ---------------------------------------------------------------------------------------------


def _load_dataset_json(path: Path) -> Tuple[Optional[Dict[str, Any]], List[Problem]]:
    """The parsed dataset.json (None when missing or unreadable) and its schema problems."""
    if not path.exists():
        return None, [Problem(str(path), "missing; every raw dataset needs a dataset.json (see docs/dataset_format.md)")]
    try:
        spec = read_json(path)
    except DeepWMLError as e:
        return None, [Problem(str(path), e.problem)]
    if not isinstance(spec, dict):
        return None, [Problem(str(path), "must hold a JSON object")]
    problems = [Problem(str(path), p) for p in schema_problems(spec)]
    problems += [Problem(str(path), p) for p in _count_and_meta_problems(spec)]
    return spec, problems


def _count_and_meta_problems(spec: Dict[str, Any]) -> List[str]:
    """Problems of numTraining/numTest and per-case metadata types that the core schema leaves open."""
    problems = []
    for key in ("numTraining", "numTest"):
        value = spec.get(key)
        if value is None:
            problems.append(f"missing key {key!r}")
        elif not isinstance(value, int) or isinstance(value, bool) or value < 0:
            problems.append(f"{key} must be a non-negative integer, got {value!r}")
    if "cases" not in spec:
        problems.append("missing key 'cases': every case needs its centre, disease, vendor, scanner, field_strength")
    cases = spec.get("cases")
    if not isinstance(cases, dict):
        return problems
    for cid, meta in cases.items():
        if not isinstance(meta, dict):
            continue
        fs = meta.get("field_strength")
        if fs is not None and (isinstance(fs, bool) or not isinstance(fs, (int, float)) or not 0 < fs < 20):
            problems.append(f"case {cid!r}: field_strength must be a number of tesla (e.g. 1.5, 3.0) or null, got {fs!r}")
        for key in ("centre", "vendor", "scanner"):
            if key in meta and not isinstance(meta[key], str):
                problems.append(f"case {cid!r}: {key} must be a string, got {meta[key]!r}")
    return problems


def _allowed_label_values(spec: Optional[Dict[str, Any]]) -> Tuple[int, ...]:
    """Label values declared in dataset.json; background and lesion when the declaration is unusable."""
    labels = (spec or {}).get("labels")
    if isinstance(labels, dict):
        values = [v for v in labels.values() if isinstance(v, int) and not isinstance(v, bool)]
        if values:
            return tuple(sorted(set(values)))
    return (0, 1)


def _declared_or_common_ending(spec: Optional[Dict[str, Any]], found: Dict[str, Tuple[List[Tuple[str, str, Path]], list]]) -> str:
    """The declared file ending, or (when dataset.json cannot say) the most common ending on disk."""
    declared = (spec or {}).get("file_ending")
    if declared in IMAGE_ENDINGS:
        return declared
    endings = Counter(end for split in SPLITS for _, end, _ in found[split][0])
    return endings.most_common(1)[0][0] if endings else ".nii.gz"


def _json_agreement_problems(json_path: Path, spec: Optional[Dict[str, Any]], files: Files) -> List[Problem]:
    """Where dataset.json's counts and case list disagree with the files on disk."""
    if spec is None:
        return []
    problems = []
    for split, key in (("Tr", "numTraining"), ("Ts", "numTest")):
        n_files = len(files[split]["images"])
        declared = spec.get(key)
        if isinstance(declared, int) and declared != n_files:
            problems.append(Problem(str(json_path), f"{key} is {declared} but images{split} holds {n_files} case(s)"))
    cases = spec.get("cases")
    if not isinstance(cases, dict):
        return problems
    on_disk = set(files["Tr"]["images"]) | set(files["Ts"]["images"])
    for cid in sorted(set(cases) - on_disk):
        problems.append(Problem(str(json_path), f"case {cid!r} is listed in 'cases' but has no image in imagesTr or imagesTs"))
    for split in SPLITS:
        for cid, images in sorted(files[split]["images"].items()):
            if cid not in cases:
                problems.append(Problem(str(images[0]), f"case {cid!r} has no metadata entry in dataset.json 'cases'"))
    return problems


# --- files on disk -----------------------------------------------------------------------------------------------


def _scan_split(folder: Path, split: str) -> Tuple[List[Tuple[str, str, Path]], List[Problem]]:
    """(case id, ending, path) of every image-like file in images{split}/labels{split}, and what else is there."""
    entries: List[Tuple[str, str, Path]] = []
    problems: List[Problem] = []
    for kind in ("images", "labels"):
        sub = folder / f"{kind}{split}"
        if not sub.exists():
            if kind == "images" and split == "Tr":
                problems.append(Problem(str(sub), "missing; a raw dataset needs its training images in imagesTr"))
            continue
        for path in sorted(sub.iterdir()):
            if path.name.startswith("."):
                continue  # hidden files: editors, file managers, and our own atomic-write temporaries
            if path.is_dir():
                problems.append(Problem(str(path), "is a folder; the raw format holds one image file per case "
                                                   "(turn DICOM series into files with dataset_conversion.csv_manifest)"))
                continue
            try:
                stem, ending = split_ending(path)
            except DeepWMLError:
                if not path.name.lower().endswith((".raw", ".zraw", ".raw.gz")):  # data files of .mhd/.nhdr headers
                    problems.append(Problem(str(path), f"not an image file DeepWML reads (endings: {', '.join(IMAGE_ENDINGS)})"))
                continue
            entries.append((stem, ending, path))
    return entries, problems


def _n_channels(spec: Optional[Dict[str, Any]]) -> int:
    """Image channels per case that dataset.json declares (1 when it cannot say)."""
    names = (spec or {}).get("channel_names")
    return len(names) if not channel_name_problems(names) else 1


def _group_by_case(entries: List[Tuple[str, str, Path]], n_channels: int = 1,
                   problems: Optional[List[Problem]] = None) -> Dict[str, Dict[str, List[Path]]]:
    """{'images': {case id: [files]}, 'labels': {...}, 'channels': {case id: [files of channels 1..]}} for one split.

    With several channels an image ``CASE_0000`` is case ``CASE``'s channel 0 and ``CASE_000c`` its channel c; an
    image named otherwise, and a case missing a channel, are problems.
    """
    grouped: Dict[str, Dict[str, List[Path]]] = {"images": {}, "labels": {}, "channels": {}}
    channels: Dict[str, Dict[int, Path]] = defaultdict(dict)
    for stem, ending, path in entries:
        kind = "images" if path.parent.name.startswith("images") else "labels"
        if kind == "images" and n_channels > 1:
            match = _CHANNEL_STEM.match(stem)
            if match is None or int(match.group(2)) >= n_channels:
                if problems is not None:
                    problems.append(Problem(str(path), f"dataset.json declares {n_channels} channels: name each case's images "
                                                       f"CASE_0000{ending} .. CASE_{n_channels - 1:04d}{ending}"))
                continue
            stem, channel = match.group(1), int(match.group(2))
            if channel:
                channels[stem][channel] = path
                continue
        grouped[kind].setdefault(stem, []).append(path)
    for cid in sorted(set(channels) | set(grouped["images"]) if n_channels > 1 else ()):
        first = (grouped["images"].get(cid) or [None])[0]
        some = first or next(iter(channels[cid].values()))
        for c in range(n_channels):
            present = first if c == 0 else channels[cid].get(c)
            if present is None and problems is not None:
                problems.append(Problem(str(some.parent / f"{cid}_{c:04d}{split_ending(some)[1]}"),
                                        f"case {cid!r} has no channel {c} image"))
        grouped["channels"][cid] = [channels[cid][c] for c in sorted(channels[cid])]
    return grouped


def _image_ids(folder: Path, ending: str) -> List[str]:
    """Case ids of the files with ``ending`` in ``folder``."""
    if not folder.is_dir():
        return []
    return sorted(p.name[: -len(ending)] for p in folder.iterdir() if p.name.endswith(ending) and not p.name.startswith("."))


def _file_name_problems(files: Files, ending: str) -> List[Problem]:
    """Wrong endings, unsafe case ids, one id with several files, ids that clash by letter case."""
    problems = []
    for split in SPLITS:
        for kind in ("images", "labels"):
            for cid, paths in sorted(files[split][kind].items()):
                why = case_id_problem(cid)
                if why:
                    problems.append(Problem(str(paths[0]), f"unsafe {why}"))
                for path in paths:
                    if not path.name.endswith(ending):
                        problems.append(Problem(str(path), f"file ending differs from dataset.json file_ending {ending!r}"))
                if len(paths) > 1:
                    names = ", ".join(p.name for p in paths)
                    problems.append(Problem(str(paths[0]), f"duplicate case id {cid!r}: {len(paths)} files ({names})"))
            by_lower = defaultdict(list)
            for cid in files[split][kind]:
                by_lower[cid.lower()].append(cid)
            for ids in by_lower.values():
                if len(ids) > 1:
                    first = files[split][kind][ids[0]][0]
                    problems.append(Problem(str(first.parent), f"duplicate case ids that differ only in letter case: "
                                                               f"{', '.join(sorted(ids))} (they clash on macOS/Windows)"))
    return problems


def _pairing_problems(files: Files) -> List[Problem]:
    """Training images without a label, and labels without an image."""
    problems = []
    for cid, images in sorted(files["Tr"]["images"].items()):
        if cid not in files["Tr"]["labels"]:
            problems.append(Problem(str(images[0]), f"training image has no label (expected labelsTr/{images[0].name})"))
    for split in SPLITS:
        for cid, labels in sorted(files[split]["labels"].items()):
            if cid not in files[split]["images"]:
                problems.append(Problem(str(labels[0]), f"label has no image in images{split}"))
    return problems


def _case_jobs(files: Files) -> Iterator[_CaseJob]:
    """One job per image file, paired with the label of the same id (same ending preferred)."""
    for split in SPLITS:
        labels = files[split]["labels"]
        for cid, images in sorted(files[split]["images"].items()):
            candidates = labels.get(cid, [])
            for image in images:
                same = [p for p in candidates if split_ending(p)[1] == split_ending(image)[1]]
                label = (same or candidates or [None])[0]
                yield _CaseJob(image, label, tuple(files[split]["channels"].get(cid, ())))


# --- per-case checks (headers, then voxels) ------------------------------------------------------------------------


def _run_case_checks(jobs: Sequence[_CaseJob], allowed: Tuple[int, ...], n_jobs: int, progress: bool) -> List[Problem]:
    """Run :func:`check_case` for every job, in parallel when ``n_jobs`` > 1, with a progress bar."""
    from tqdm import tqdm

    bar = tqdm(total=len(jobs), desc="verify", unit="case", file=sys.stderr, disable=not progress)
    if n_jobs == 1 or len(jobs) < 2:
        results: Iterable[List[Problem]] = (check_case(j.image, j.label, allowed, j.channels) for j in jobs)
    else:
        from joblib import Parallel, delayed

        results = Parallel(n_jobs=n_jobs, return_as="generator")(
            delayed(check_case)(j.image, j.label, allowed, j.channels) for j in jobs)
    problems: List[Problem] = []
    with bar:
        for case_problems in results:
            problems += case_problems
            bar.update(1)
    return problems


def check_case(image: Path, label: Optional[Path], allowed: Sequence[int], channels: Sequence[Path] = ()) -> List[Problem]:
    """Problems of one image (its other channels) and its label: headers and geometry first, then the voxel data of each."""
    problems: List[Problem] = []
    image_geometry = _header(image, problems)
    label_geometry = _header(label, problems) if label is not None else None
    if image_geometry is not None and label_geometry is not None:
        mismatches = image_geometry.mismatches(label_geometry)
        if mismatches:
            problems.append(Problem(str(label), f"geometry differs from its image {image.name}: {'; '.join(mismatches)}"))
    for channel in channels:
        channel_geometry = _header(channel, problems)
        if channel_geometry is not None:
            mismatches = [] if image_geometry is None else image_geometry.mismatches(channel_geometry)
            if mismatches:
                problems.append(Problem(str(channel), f"not on the grid of channel 0 {image.name}: {'; '.join(mismatches)}"))
            problems += _image_voxel_problems(channel)
    if image_geometry is not None:
        problems += _image_voxel_problems(image)
    if label_geometry is not None:
        problems += _label_voxel_problems(label, allowed)  # type: ignore[arg-type]
    return problems


def _header(path: Path, problems: List[Problem]) -> Optional[Geometry]:
    """The file's geometry from its header, or None after recording why it cannot be used."""
    try:
        return read_geometry(path)
    except DeepWMLError as e:
        problems.append(Problem(str(path), e.problem))
        return None


def _image_voxel_problems(path: Path) -> List[Problem]:
    """Truncation, NaN/Inf (via read_image, which checks a NIfTI's voxel data against its header) and blank images."""
    try:
        array = read_image(path).array
    except DeepWMLError as e:
        return [Problem(str(path), e.problem)]
    lo, hi = float(array.min()), float(array.max())
    if lo == hi:
        return [Problem(str(path), f"image is blank: every voxel is {lo:g}")]
    return []


def _label_voxel_problems(path: Path, allowed: Sequence[int]) -> List[Problem]:
    """Unreadable labels, non-integer values, and values dataset.json does not declare."""
    try:
        array = read_label(path).array
    except DeepWMLError as e:
        return [Problem(str(path), e.problem)]
    outside = array[~np.isin(array, np.asarray(allowed))]
    if outside.size == 0:
        return []
    values = np.unique(outside)
    shown = ", ".join(str(int(v)) for v in values[:_MAX_VALUES_SHOWN]) + (", ..." if len(values) > _MAX_VALUES_SHOWN else "")
    declared = ", ".join(str(v) for v in allowed)
    return [Problem(str(path), f"label values {shown} ({outside.size} voxels) are not declared in dataset.json labels ({declared})")]
