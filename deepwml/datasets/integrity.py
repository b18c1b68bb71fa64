"""Cheap checks every stage runs on a raw dataset: entries that cannot be images, and test data leaking into training.

They look only at directory listings, file sizes and (for files of equal size) a few sampled blocks, so they take
milliseconds for a hundred cases and run on every deepwml_plan_and_preprocess, not only with --verify.
"""
from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, Sequence, Tuple, Union

from deepwml.imageio import has_image_ending, split_ending, unreadable_reason
from deepwml.utils.errors import DatasetError

PathLike = Union[str, Path]
#: (file, what is wrong with it)
Finding = Tuple[Path, str]

SUBFOLDERS = ("imagesTr", "labelsTr", "imagesTs", "labelsTs")
#: blocks read from each of two equal-sized files before hashing them whole (distinct scans differ in some of them)
_SAMPLE_BLOCKS = 32
_BLOCK = 4096
#: offsets step by the golden ratio: evenly spaced ones can fall on the same (zero) background rows of every slice
_GOLDEN = 0.6180339887498949


def _image_entries(folder: Path) -> List[Path]:
    """Visible entries of ``folder`` whose name has an image ending, sorted (broken links and folders included)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".") and has_image_ending(p))


def unreadable_entries(dataset: PathLike) -> List[Finding]:
    """Entries named like images in imagesTr/labelsTr/imagesTs/labelsTs that cannot be read as one."""
    found = []
    for sub in SUBFOLDERS:
        for path in _image_entries(Path(dataset) / sub):
            reason = unreadable_reason(path)
            if reason:
                found.append((path, reason))
    return found


def leakage(dataset: PathLike) -> List[Finding]:
    """Test images that are also training images: the same case id in imagesTr and imagesTs, or the same bytes.

    Byte-identical pairs inside imagesTr count too: the test hold-out and the folds are drawn from imagesTr, so one
    scan under two ids could be trained on and tested on.
    """
    dataset = Path(dataset)
    images = {split: [p for p in _image_entries(dataset / f"images{split}") if unreadable_reason(p) is None] for split in ("Tr", "Ts")}
    found: List[Finding] = []
    train_ids = {split_ending(p)[0]: p for p in images["Tr"]}
    for path in images["Ts"]:
        twin = train_ids.get(split_ending(path)[0])
        if twin is not None:
            found.append((path, f"case id {split_ending(path)[0]!r} is in both imagesTr and imagesTs ({_shown(twin, dataset)}); "
                                "a test case must not be trained on"))
    for original, copy in _identical_pairs(images["Tr"] + images["Ts"]):
        if copy.parent.name == "imagesTs" and original.parent.name == "imagesTs":
            continue
        if split_ending(original)[0] == split_ending(copy)[0]:
            continue  # already reported as the same case id
        what = "a test image is also a training image" if copy.parent.name == "imagesTs" else (
            "one scan under two case ids could be trained on and tested on")
        found.append((copy, f"byte-identical to {_shown(original, dataset)}: {what}"))
    return found


def _shown(path: Path, dataset: Path) -> str:
    """'imagesTr/case.nii.gz' for a file of the dataset."""
    return str(path.relative_to(dataset))


def _identical_pairs(paths: Sequence[Path]) -> List[Tuple[Path, Path]]:
    """(first, later) for every file whose bytes equal an earlier file's; only files of equal size are read."""
    by_size: Dict[int, List[Path]] = defaultdict(list)
    for path in paths:
        by_size[path.stat().st_size].append(path)
    pairs = []
    for group in by_size.values():
        if len(group) < 2:
            continue
        by_sample: Dict[bytes, List[Path]] = defaultdict(list)
        for path in group:
            by_sample[_digest(path, sampled=True)].append(path)
        for candidates in by_sample.values():
            by_full: Dict[bytes, List[Path]] = defaultdict(list)
            for path in candidates if len(candidates) > 1 else []:
                by_full[_digest(path, sampled=False)].append(path)
            pairs += [(same[0], later) for same in by_full.values() for later in same[1:]]
    return pairs


def _digest(path: Path, sampled: bool) -> bytes:
    """SHA-256 of the whole file, or of ``_SAMPLE_BLOCKS`` blocks spread through it without a period."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as f:
        if sampled:
            for k in range(_SAMPLE_BLOCKS):
                f.seek(int((k * _GOLDEN) % 1.0 * max(0, size - _BLOCK)))
                h.update(f.read(_BLOCK))
        else:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.digest()


def check_listing(dataset: PathLike) -> None:
    """Raise one DatasetError naming every unreadable entry and every leak of test data into training."""
    dataset = Path(dataset)
    found = unreadable_entries(dataset) + leakage(dataset)
    if found:
        listing = "; ".join(f"{_shown(path, dataset.parent)}: {why}" for path, why in found)
        raise DatasetError(f"{len(found)} problem(s): {listing}", dataset)
