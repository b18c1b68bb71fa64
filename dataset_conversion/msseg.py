"""ISBI 2015 / MSSEG 2016-style MS folders (FLAIR + one or several rater masks) → DeepWML raw dataset.

Layouts (``--layout``; the globs can be overridden with ``--flair-glob`` / ``--mask-glob``)::

    msseg:  PATIENT/FLAIR*.nii*  PATIENT/ManualSegmentation_1.nii.gz, _2, ...
            (also MSSEG 2016's CENTER/PATIENT/Preprocessed_Data/ + Masks/ subfolders)
    isbi:   PATIENT/preprocessed/PATIENT_TP_flair_pp.nii  PATIENT/masks/PATIENT_TP_mask1.nii, _mask2.nii
            (one case per patient and time point)

A FLAIR and its masks belong together when they sit in the same patient folder (subfolders such as
``Masks`` or ``preprocessed`` do not count) and share the file-name prefix before ``flair``/``mask``.
Several raters are merged by majority vote: a voxel is lesion when more than half of the raters marked
it (any value > 0). Ties (possible with an even number of raters) go to ``--ties``: background (the
default, so two raters give their intersection), lesion (their union) or ignore (label 2, declared as
the dataset's ignore value, so disputed voxels count neither way). A single rater's mask is copied as is.

Example::

    python -m dataset_conversion.msseg ~/downloads/ISBI2015/training --layout isbi --id 512 --name ISBI2015
"""
from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from dataset_conversion import add_output_arguments, write_from_args
from deepwml.cli.common import run
from deepwml.datasets import CaseMeta
from deepwml.datasets.dataset_writer import SourceCase, safe_case_id
from deepwml.imageio import read_geometry, read_label, split_ending, write_image
from deepwml.utils.errors import DatasetError, ImageError

TIE_RULES = ("background", "lesion", "ignore")
IGNORE_VALUE = 2


@dataclass(frozen=True)
class Layout:
    """Where a layout keeps the FLAIR and the rater masks, and what is known about its scanners."""

    flair_glob: str
    mask_glob: str
    centre: str
    dataset_id: int
    vendor: str = "unknown"
    scanner: str = "unknown"
    field_strength: Optional[float] = None


LAYOUTS = {
    "msseg": Layout("FLAIR*.nii*", "ManualSegmentation_*.nii*", centre="MSSEG2016", dataset_id=511),
    # ISBI 2015: all scans from one 3 T Philips scanner
    "isbi": Layout("*_flair_pp.nii*", "*_mask[0-9]*.nii*", centre="ISBI2015", dataset_id=512,
                   vendor="Philips", field_strength=3.0),
}

#: Folders inside a patient folder that only sort its files; the patient is their parent.
SUBFOLDERS = {"preprocessed_data", "raw_data", "masks", "preprocessed", "orig", "pre"}

_FLAIR_TOKEN = re.compile(r"[_\-]?flair", re.IGNORECASE)
_MASK_TOKEN = re.compile(r"[_\-]?(?:manualsegmentation|mask)[_\-]?(\d+)", re.IGNORECASE)
_CENTRE_FOLDER = re.compile(r"^cent(?:er|re)", re.IGNORECASE)


@dataclass(frozen=True)
class MajorityVote:
    """Consensus of several rater masks (a LabelSource for the dataset writer)."""

    masks: Tuple[Path, ...]
    reference: Path
    ties: str = "background"

    def key(self) -> str:
        """The masks' paths, sizes and times plus the tie rule: changes to any of them redo the consensus."""
        stats = [f"{m.resolve()}:{m.stat().st_size}:{m.stat().st_mtime_ns}" for m in self.masks]
        return f"majority:{self.ties}:" + "|".join(stats)

    def write(self, target: Path) -> None:
        """Vote, then write a uint8 label on the FLAIR's grid."""
        geometry = read_geometry(self.reference)
        votes = None
        for mask in self.masks:
            rater = read_label(mask)
            mismatch = geometry.mismatches(rater.geometry)
            if mismatch:
                raise ImageError(f"rater mask is not on the grid of {self.reference.name}: {'; '.join(mismatch)}", mask)
            marked = (rater.array > 0).astype(np.uint8)
            votes = marked if votes is None else votes + marked
        write_image(majority_vote(votes, len(self.masks), self.ties), geometry, target)


def majority_vote(votes: np.ndarray, n_raters: int, ties: str = "background") -> np.ndarray:
    """Label from per-voxel vote counts: 1 where more than half voted lesion; ties per ``ties``."""
    if ties not in TIE_RULES:
        raise DatasetError(f"tie rule must be one of {', '.join(TIE_RULES)}, got {ties!r}")
    twice = 2 * votes.astype(np.int32)
    label = (twice > n_raters).astype(np.uint8)
    if ties != "background":
        label[twice == n_raters] = 1 if ties == "lesion" else IGNORE_VALUE
    return label


def _patient_folder(path: Path, root: Path) -> Path:
    """The folder a file belongs to, skipping sorting subfolders such as Masks/ or preprocessed/."""
    folder = path.parent
    while folder != root and folder.name.lower() in SUBFOLDERS:
        folder = folder.parent
    return folder


def _prefix(name: str, token: re.Pattern) -> Optional[str]:
    """The part of a file name before its flair/mask token (lower case), or None when there is no token."""
    match = token.search(split_ending(name)[0])
    return match.string[: match.start()].lower() if match else None


def find_cases(root: Path, layout: Layout, ties: str = "background", centre: Optional[str] = None) -> List[SourceCase]:
    """Every FLAIR below ``root`` with its rater masks; all layout problems are raised together."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError("source folder does not exist", root)
    problems: List[str] = []
    flairs: Dict[Tuple[Path, str], List[Path]] = {}
    for path in sorted(root.rglob(layout.flair_glob)):
        prefix = _prefix(path.name, _FLAIR_TOKEN)
        if path.is_file() and prefix is not None:
            flairs.setdefault((_patient_folder(path, root), prefix), []).append(path)
    masks: Dict[Tuple[Path, str], List[Tuple[int, Path]]] = {}
    for path in sorted(root.rglob(layout.mask_glob)):
        match = _MASK_TOKEN.search(split_ending(path.name)[0]) if path.is_file() else None
        if match:
            key = (_patient_folder(path, root), match.string[: match.start()].lower())
            masks.setdefault(key, []).append((int(match.group(1)), path))
    for paths in flairs.values():
        if len(paths) > 1:
            problems.append(f"several FLAIR images for one case ({', '.join(map(str, paths))}); narrow --flair-glob")
    for key in sorted(set(masks) - set(flairs)):
        problems.append(f"rater masks without a FLAIR: {', '.join(str(p) for _, p in masks[key])}")
    if not flairs:
        problems.append(f"no FLAIR images matching {layout.flair_glob!r}")
    if problems:
        raise DatasetError("; ".join(problems), root)

    ids = _case_ids(list(flairs), root)
    cases = []
    for key, (flair,) in sorted(flairs.items()):
        raters = [p for _, p in sorted(masks.get(key, []))]
        label = None if not raters else raters[0] if len(raters) == 1 else MajorityVote(tuple(raters), flair, ties)
        meta = CaseMeta(
            centre=centre or _centre_of(key[0], root) or layout.centre, disease="MS", vendor=layout.vendor,
            scanner=layout.scanner, field_strength=layout.field_strength,
            extra={"raters": len(raters), "source_case": str(flair.relative_to(root))},
        )
        cases.append(SourceCase(ids[key], flair, label, meta, "Tr" if raters else "Ts"))
    return cases


def _case_ids(keys: Sequence[Tuple[Path, str]], root: Path) -> Dict[Tuple[Path, str], str]:
    """Short ids (the file prefix, else the patient folder path); the full path where short ones would clash."""
    def long_id(folder: Path, prefix: str) -> str:
        """The patient folder's path below root (plus the file prefix), joined with '_'."""
        parts = list(folder.relative_to(root).parts) or [root.name]
        return safe_case_id("_".join(parts + ([prefix] if prefix else [])))

    short = {key: safe_case_id(key[1]) if key[1] else long_id(key[0], "") for key in keys}
    counts: Dict[str, int] = {}
    for cid in short.values():
        counts[cid.lower()] = counts.get(cid.lower(), 0) + 1
    return {key: cid if counts[cid.lower()] == 1 else long_id(*key) for key, cid in short.items()}


def _centre_of(patient: Path, root: Path) -> Optional[str]:
    """MSSEG's Center_NN folder above the patient, if there is one."""
    for part in patient.relative_to(root).parts:
        if _CENTRE_FOLDER.match(part):
            return safe_case_id(part)
    return None


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the ISBI 2015 / MSSEG 2016 converter."""
    parser = argparse.ArgumentParser(
        prog="python -m dataset_conversion.msseg",
        description="Convert ISBI 2015 / MSSEG 2016-style MS folders (FLAIR plus one or several rater masks) into a "
        "DeepWML raw dataset; several raters are merged by majority vote.",
    )
    parser.add_argument("source", type=Path, help="folder holding the patient folders")
    parser.add_argument("--layout", choices=sorted(LAYOUTS), default="msseg", help="file naming (default: msseg)")
    parser.add_argument("--flair-glob", default=None, help="glob for the FLAIR files (default: from --layout)")
    parser.add_argument("--mask-glob", default=None, help="glob for the rater masks (default: from --layout)")
    parser.add_argument("--ties", choices=TIE_RULES, default="background",
                        help="label of voxels exactly half of the raters marked (default: background)")
    parser.add_argument("--centre", default=None, help="centre of every case (default: Center_NN folder, else the layout's name)")
    parser.add_argument("--vendor", default=None, help="scanner vendor of every case")
    parser.add_argument("--scanner", default=None, help="scanner model of every case")
    parser.add_argument("--field-strength", type=float, default=None, help="field strength in tesla of every case")
    add_output_arguments(parser, defaults="511 and MSSEG2016 for --layout msseg, 512 and ISBI2015 for isbi")
    return parser


def _main(argv: Optional[List[str]]) -> int:
    """Parse the arguments and run; user errors propagate to deepwml.cli.common.run."""
    args = build_parser().parse_args(argv)
    base = LAYOUTS[args.layout]
    layout = Layout(
        args.flair_glob or base.flair_glob, args.mask_glob or base.mask_glob, base.centre, base.dataset_id,
        args.vendor or base.vendor, args.scanner or base.scanner,
        args.field_strength if args.field_strength is not None else base.field_strength,
    )
    args.dataset_id = base.dataset_id if args.dataset_id is None else args.dataset_id
    args.name = args.name or base.centre
    cases = find_cases(args.source, layout, args.ties, args.centre)
    labels = {"background": 0, "lesion": 1}
    if args.ties == "ignore":
        labels["ignore"] = IGNORE_VALUE
    ending = split_ending(cases[0].image)[1]
    description = f"{args.layout} layout; raters merged by majority vote, ties -> {args.ties}"
    return write_from_args(cases, args, ending, labels, description)


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
