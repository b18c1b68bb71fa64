"""The trainer's view of a preprocessed dataset: plan, splits, fold cases and a cache checked against the plan."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from deepwml.datasets import find_dataset_folder
from deepwml.planning.plan import Plan
from deepwml.planning.splits import splits_problems
from deepwml.preprocessing import load_case, unpack_case
from deepwml.utils.atomic import read_json
from deepwml.utils.errors import DatasetError, DeepWMLError, PlanError

Fold = Union[int, str]


def parse_fold(text: Union[int, str]) -> Fold:
    """0..N or 'all'; anything else is a DeepWMLError."""
    if isinstance(text, int) or str(text).isdigit():
        return int(text)
    if str(text).lower() == "all":
        return "all"
    raise DeepWMLError(f"fold must be a number (0-4) or 'all', got {text!r}")


def fold_folder_name(fold: Fold) -> str:
    """fold_0 ... fold_4, fold_all."""
    return f"fold_{fold}"


@dataclass
class FoldCases:
    """Case ids a fold trains and validates on; ``val_is_train`` for fold 'all' (validated on its training set)."""

    train: List[str]
    val: List[str]
    val_is_train: bool = False


class PreprocessedDataset:
    """One dataset below $DEEPWML_PREPROCESSED with one plan's cache."""

    def __init__(self, preprocessed_root: Union[str, Path], dataset: str, plan_name: str) -> None:
        root = Path(preprocessed_root)
        self.dataset_spec, self.plan_name = dataset, plan_name
        try:
            self.folder = find_dataset_folder(root, dataset)
        except DatasetError as e:
            raise DatasetError(f"{e}; {self.preprocess_hint()}") from None
        self.plan_dir = self.folder / plan_name
        self.cache_dir = self.plan_dir / "cache"
        self.plans_path = self.plan_dir / "plans.json"
        self.splits_path = self.folder / "splits.json"
        if not self.plans_path.is_file():
            raise PlanError(f"plan {plan_name!r} has not been preprocessed for this dataset; {self.preprocess_hint()}", self.plan_dir)
        if not self.splits_path.is_file():
            raise DatasetError(f"splits.json is missing; {self.preprocess_hint()}", self.splits_path)
        self.plan = Plan.load(self.plans_path)
        self.splits = read_json(self.splits_path)
        # splits.json may have been edited by hand: a test case in a fold would be trained on
        problems = splits_problems(self.splits, None)
        if problems:
            raise DatasetError(f"invalid splits: {'; '.join(problems)}; fix it, or delete it and {self.preprocess_hint()}", self.splits_path)

    @property
    def name(self) -> str:
        """DatasetNNN_Name."""
        return self.folder.name

    def preprocess_hint(self) -> str:
        """The command that creates what is missing."""
        return f"run: deepwml_plan_and_preprocess -d {self.dataset_spec} --preset {self.plan_name}"

    def fold_cases(self, fold: Fold) -> FoldCases:
        """Training and validation case ids of ``fold``; 'all' trains on every non-test case and validates on them."""
        folds = self.splits.get("folds") or []
        if fold == "all":
            ids = sorted({c for f in folds for c in f["train"] + f["val"]} - set(self.splits.get("test", [])))
            return FoldCases(ids, ids, val_is_train=True)
        if not isinstance(fold, int) or not 0 <= fold < len(folds):
            raise DatasetError(f"fold {fold} does not exist; this dataset has folds 0..{len(folds) - 1} and 'all'", self.splits_path)
        return FoldCases(sorted(folds[fold]["train"]), sorted(folds[fold]["val"]))

    def check_cache(self, case_ids: List[str]) -> None:
        """Every case is cached and was made with this plan's preprocessing (else: which command to run)."""
        expected = self.plan.preprocessing_hash()
        missing, stale = [], []
        for cid in case_ids:
            path = self.cache_dir / f"{cid}.json"
            if not path.is_file() or not (self.cache_dir / f"{cid}.npz").is_file():
                missing.append(cid)
            elif read_json(path).get("preprocessing_hash") != expected:
                stale.append(cid)
        if missing:
            raise DatasetError(f"{len(missing)} case(s) not preprocessed (e.g. {missing[0]}); {self.preprocess_hint()}", self.cache_dir)
        if stale:
            raise PlanError(
                f"the cache of {len(stale)} case(s) (e.g. {stale[0]}) was made with other preprocessing settings than "
                f"{self.plans_path.name} (preprocessing_hash differs); {self.preprocess_hint()}",
                self.cache_dir,
            )

    def unpack(self, case_ids: List[str]) -> None:
        """Uncompressed .npy copies so that loader workers memory-map slices instead of decompressing whole cases."""
        for cid in case_ids:
            unpack_case(self.cache_dir, cid)

    def load(self, case_id: str) -> Tuple[np.ndarray, np.ndarray]:
        """(image [C,S,H,W], label [S,H,W]) of a cached case; memory-mapped when unpacked."""
        image, label, _ = load_case(self.cache_dir, case_id)
        if label is None:
            raise DatasetError(f"case {case_id} has no label in the cache; training needs labels", self.cache_dir)
        if image.shape[0] != self.plan.n_channels:
            raise PlanError(f"case {case_id} is cached with {image.shape[0]} image channel(s) but {self.plans_path.name} "
                            f"takes {self.plan.n_channels}; {self.preprocess_hint()}", self.cache_dir)
        return image, label

    def extra_files(self) -> Dict[str, Path]:
        """Files copied next to the trained model: plans.json, dataset.json, fingerprint.json."""
        return {"plans.json": self.plans_path, "dataset.json": self.folder / "dataset.json", "fingerprint.json": self.folder / "fingerprint.json"}


def case_arrays(cache_dir: Union[str, Path], case_id: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(image, label) of a cached case without opening the whole dataset (used inside loader workers)."""
    image, label, _ = load_case(cache_dir, case_id)
    return image, label
