"""A BIDS dataset's T2-FLAIR scans: which files, of which participant and session (deepwml_bids).

BIDS keeps raw anatomical scans as ``sub-<label>/[ses-<label>/]anat/sub-<label>[_ses-<label>][_key-value...]_FLAIR.nii[.gz]``.
Only that layout is read (no ``derivatives/``, ``sourcedata/`` or dot folders), and a file whose name names another
participant or session than its folders is skipped with a note, as the BIDS validator would flag it.
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

from deepwml.inference.bids_names import bids_entities
from deepwml.utils.errors import DeepWMLError

DESCRIPTION_NAME = "dataset_description.json"
#: mask endings tried by default, in this order (BIDS derivative masks, then raw lesion ROIs)
MASK_SUFFIXES = ("label-WMH_mask", "label-wmh_mask", "label-lesion_mask", "desc-lesion_mask", "label-WMH_roi",
                 "label-lesion_roi", "desc-manual_mask")
_LABEL = r"[a-zA-Z0-9]+"
#: a raw T2-FLAIR's file name: sub- first, ses- second when present, other entities, the FLAIR suffix
_FLAIR_NAME = re.compile(rf"^(sub-{_LABEL})(?:_(ses-{_LABEL}))?((?:_[a-zA-Z]+-{_LABEL})*)_FLAIR(\.nii(?:\.gz)?)$")


@dataclass(frozen=True)
class BidsScan:
    """One T2-FLAIR of a BIDS dataset."""

    path: Path
    relative: str  # POSIX path from the dataset root, as BIDS URIs and Sources name it
    subject: str  # the label, without 'sub-'
    session: Optional[str]  # the label, without 'ses-'; None in a dataset without sessions
    stem: str  # the file name without its ending: the prediction's case id
    ending: str  # '.nii.gz' or '.nii'

    @property
    def prefix(self) -> str:
        """The entities its derivatives are named with (sub-01_ses-1_acq-tse)."""
        return "_".join(bids_entities(self.stem) or [])

    @property
    def folder(self) -> str:
        """Its anat folder relative to a dataset root (sub-01/ses-1/anat)."""
        return str(Path(self.relative).parent.as_posix())

    @property
    def participant_id(self) -> str:
        """'sub-<label>', as participants.tsv names it."""
        return f"sub-{self.subject}"


def check_bids_root(root: Path) -> None:
    """Refuse a folder that is not a BIDS dataset, naming what is missing."""
    if not root.is_dir():
        raise DeepWMLError("BIDS dataset folder not found", root)
    if not (root / DESCRIPTION_NAME).is_file():
        raise DeepWMLError(f"is not a BIDS dataset: it holds no {DESCRIPTION_NAME}", root)


def _labels(given: Optional[Iterable[str]], prefix: str) -> Optional[List[str]]:
    """Labels as given on the command line, with or without their 'sub-' / 'ses-' prefix."""
    if not given:
        return None
    labels = [g[len(prefix):] if g.startswith(prefix) else g for g in given]
    bad = [g for g in labels if not re.fullmatch(_LABEL, g)]
    if bad:
        raise DeepWMLError(f"not a BIDS label (letters and digits only): {', '.join(bad)}")
    return labels


def _anat_folders(subject_dir: Path) -> List[Path]:
    """The subject's anat folders: anat/ and ses-*/anat/."""
    folders = [subject_dir / "anat"] + [s / "anat" for s in sorted(subject_dir.glob("ses-*")) if s.is_dir()]
    return [f for f in folders if f.is_dir()]


def scan_of(root: Path, path: Path) -> Optional[BidsScan]:
    """The scan a FLAIR file name describes, or None (with a note) when its name contradicts its folders."""
    m = _FLAIR_NAME.match(path.name)
    if m is None:
        return None
    rel = path.relative_to(root)
    subject, session = m.group(1), m.group(2)
    folder_session = rel.parts[1] if len(rel.parts) == 4 else None
    if subject != rel.parts[0] or session != folder_session:
        print(f"[deepwml_bids] note: skipped {rel.as_posix()}: its name does not match its folder", file=sys.stderr)
        return None
    ending = m.group(4)
    return BidsScan(path=path, relative=rel.as_posix(), subject=subject[4:], session=session[4:] if session else None,
                    stem=path.name[: -len(ending)], ending=ending)


def find_flair_scans(root: Path, participants: Optional[Sequence[str]] = None,
                     sessions: Optional[Sequence[str]] = None) -> List[BidsScan]:
    """Every T2-FLAIR of the dataset at ``root`` (of the given participant and session labels), sorted by path."""
    root = Path(root)
    check_bids_root(root)
    subjects = sorted(p for p in root.glob("sub-*") if p.is_dir())
    wanted = _labels(participants, "sub-")
    if wanted is not None:
        known = {p.name[4:] for p in subjects}
        missing = [w for w in wanted if w not in known]
        if missing:
            shown = ", ".join(sorted(known)[:12]) + (" ..." if len(known) > 12 else "")
            raise DeepWMLError(f"no participant {', '.join('sub-' + m for m in missing)} in the dataset "
                               f"(it holds: {shown or 'no sub-* folder'})", root)
        subjects = [p for p in subjects if p.name[4:] in wanted]
    scans = [s for subject in subjects for folder in _anat_folders(subject)
             for s in (scan_of(root, f) for f in sorted(folder.iterdir()) if f.is_file() or f.is_symlink()) if s is not None]
    session_labels = _labels(sessions, "ses-")
    if session_labels is not None:
        scans = [s for s in scans if s.session in session_labels]
    if not scans:
        which = "" if wanted is None and session_labels is None else " of the participants and sessions asked for"
        raise DeepWMLError(f"holds no T2-FLAIR{which}: no sub-*/[ses-*/]anat/*_FLAIR.nii[.gz]", root)
    return sorted(scans, key=lambda s: s.relative)


def find_mask(masks: Path, scan: BidsScan, suffixes: List[str]) -> Optional[Path]:
    """The scan's mask below ``masks``: its anat folder, its entities and the first of ``suffixes`` that exists."""
    for suffix in suffixes:
        for ending in (".nii.gz", ".nii"):
            path = masks / scan.folder / f"{scan.prefix}_{suffix}{ending}"
            if path.is_file():
                return path
    return None
