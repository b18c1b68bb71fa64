"""A raw dataset on disk: DatasetNNN_Name/ with imagesTr, labelsTr, imagesTs, labelsTs and dataset.json.

A single-channel dataset names its images ``CASE<ending>``; a dataset with C channels (dataset.json ``channel_names``)
names them ``CASE_0000<ending>`` .. ``CASE_{C-1:04d}<ending>``, nnU-Net's convention. Labels are ``CASE<ending>``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple, Union

from deepwml.datasets.dataset_json import CaseMeta, DatasetJson
from deepwml.utils.errors import DatasetError

DATASET_DIR = re.compile(r"^Dataset(\d{3})_([A-Za-z0-9_\-]+)$")
SPLITS = ("Tr", "Ts")


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """'Dataset501_Synth' from (501, 'Synth')."""
    if not 0 <= int(dataset_id) <= 999:
        raise DatasetError(f"dataset id must be 0..999, got {dataset_id}")
    if not re.match(r"^[A-Za-z0-9_\-]+$", name):
        raise DatasetError(f"dataset name {name!r} may only hold letters, digits, '_' and '-'")
    return f"Dataset{int(dataset_id):03d}_{name}"


def channel_file_name(case_id: str, channel: int, ending: str) -> str:
    """'CASE_0001.nii.gz': the file of one channel of a multi-channel case."""
    return f"{case_id}_{channel:04d}{ending}"


def find_dataset_folder(root: Union[str, Path], spec: Union[str, int]) -> Path:
    """Find a dataset below ``root`` by id ('501', 501) or by folder name ('Dataset501_Synth')."""
    root = Path(root)
    spec = str(spec)
    if not root.is_dir():
        raise DatasetError("data root does not exist", root)
    candidates = [p for p in root.iterdir() if p.is_dir() and DATASET_DIR.match(p.name)]
    if spec.isdigit():
        matches = [p for p in candidates if int(DATASET_DIR.match(p.name).group(1)) == int(spec)]
    else:
        matches = [p for p in candidates if p.name == spec]
    if not matches:
        known = ", ".join(sorted(p.name for p in candidates)) or "none"
        raise DatasetError(f"no dataset {spec!r} here (found: {known})", root)
    if len(matches) > 1:
        raise DatasetError(f"dataset id {spec} is ambiguous: {', '.join(sorted(p.name for p in matches))}", root)
    return matches[0]


@dataclass
class Case:
    """One case of a raw dataset: its id, image, label (if any) and metadata."""

    case_id: str
    image: Path
    label: Optional[Path]
    meta: CaseMeta
    split: str
    #: every channel's file, channel 0 (= ``image``) first; empty for a single-channel dataset
    channels: Tuple[Path, ...] = ()

    @property
    def images(self) -> Tuple[Path, ...]:
        """The image file of each channel, channel 0 first."""
        return self.channels or (self.image,)


class RawDataset:
    """Read access to a raw dataset folder."""

    def __init__(self, folder: Union[str, Path]) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise DatasetError("dataset folder does not exist", self.folder)
        self.json_path = self.folder / "dataset.json"
        self.meta = DatasetJson.load(self.json_path)

    @classmethod
    def find(cls, root: Union[str, Path], spec: Union[str, int]) -> "RawDataset":
        """Open a dataset by id or name below ``root``."""
        return cls(find_dataset_folder(root, spec))

    @property
    def name(self) -> str:
        """The folder name, e.g. Dataset501_Synth."""
        return self.folder.name

    @property
    def file_ending(self) -> str:
        """Image file ending declared in dataset.json."""
        return self.meta.file_ending

    @property
    def n_channels(self) -> int:
        """Image channels per case."""
        return self.meta.n_channels

    def image_ids(self, split: str = "Tr") -> List[str]:
        """Case ids that have an image (with several channels: a channel-0 file) in images{split}, sorted."""
        folder = self.folder / f"images{split}"
        if not folder.is_dir():
            return []
        ending = self.file_ending if self.n_channels == 1 else channel_file_name("", 0, self.file_ending)
        return sorted(p.name[: -len(ending)] for p in folder.iterdir() if p.name.endswith(ending) and not p.name.startswith("."))

    def channel_files(self, case_id: str, split: str = "Tr") -> Tuple[Path, ...]:
        """The files of every channel of a multi-channel case (empty for a single-channel dataset)."""
        if self.n_channels == 1:
            return ()
        folder = self.folder / f"images{split}"
        return tuple(folder / channel_file_name(case_id, c, self.file_ending) for c in range(self.n_channels))

    def cases(self, split: str = "Tr") -> List[Case]:
        """All cases of a split ('Tr' or 'Ts') in id order."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}")
        out = []
        for cid in self.image_ids(split):
            label = self.folder / f"labels{split}" / f"{cid}{self.file_ending}"
            channels = self.channel_files(cid, split)
            out.append(
                Case(
                    case_id=cid,
                    image=channels[0] if channels else self.folder / f"images{split}" / f"{cid}{self.file_ending}",
                    label=label if label.exists() else None,
                    meta=self.meta.cases.get(cid, CaseMeta()),
                    split=split,
                    channels=channels,
                )
            )
        return out

    def case(self, case_id: str) -> Case:
        """Look up one case by id in either split."""
        for split in SPLITS:
            for c in self.cases(split):
                if c.case_id == case_id:
                    return c
        raise DatasetError(f"no case {case_id!r}", self.folder)
