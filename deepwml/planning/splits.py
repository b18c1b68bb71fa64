"""Test hold-out and cross-validation folds, stratified by centre × disease, deterministic given a seed.

The hold-out test set is drawn from the imagesTr cases; a dataset's imagesTs are separate data that
splits.json never mentions. The paper's 60/20/20 split is fold 0's train/val plus the test set.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from deepwml.utils.atomic import read_json
from deepwml.utils.errors import DatasetError

N_FOLDS = 5
TEST_FRACTION = 0.2


def _strata(case_ids: Sequence[str], stratum_of: Mapping[str, Tuple[str, str]]) -> Dict[Tuple[str, str], List[str]]:
    """Case ids per (centre, disease), each list sorted."""
    groups: Dict[Tuple[str, str], List[str]] = {}
    for cid in sorted(case_ids):
        groups.setdefault(tuple(stratum_of.get(cid, ("unknown", "other"))), []).append(cid)
    return {k: groups[k] for k in sorted(groups)}


def _test_quota(sizes: Sequence[int], fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Per-stratum test counts summing to round(fraction × total) (largest remainders, random ties)."""
    sizes = np.asarray(sizes, dtype=float)
    exact = sizes * fraction
    quota = np.floor(exact).astype(int)
    missing = int(round(fraction * sizes.sum())) - int(quota.sum())
    # random jitter only breaks ties between equal remainders
    order = np.lexsort((rng.random(len(sizes)), -(exact - quota)))
    quota[order[:missing]] += 1
    return quota


def make_splits(
    case_ids: Sequence[str],
    stratum_of: Mapping[str, Tuple[str, str]],
    test_fraction: float = TEST_FRACTION,
    n_folds: int = N_FOLDS,
    seed: int = 0,
) -> Dict[str, Any]:
    """splits.json content: a stratified test hold-out and ``n_folds`` stratified folds over the rest."""
    if not 0 <= test_fraction < 1:
        raise DatasetError(f"test fraction must lie in [0, 1), got {test_fraction}")
    if n_folds < 2:
        raise DatasetError(f"need at least 2 folds, got {n_folds}")
    rng = np.random.default_rng(seed)
    strata = _strata(case_ids, stratum_of)
    shuffled = {k: [v[i] for i in rng.permutation(len(v))] for k, v in strata.items()}
    quota = _test_quota([len(v) for v in shuffled.values()], test_fraction, rng)
    test = sorted(cid for (_, ids), q in zip(shuffled.items(), quota) for cid in ids[:q])
    n_rest = len(case_ids) - len(test)
    if n_rest < 2:
        raise DatasetError(f"{len(case_ids)} training cases are too few for a test hold-out and cross-validation")
    # a tiny dataset gets as many folds as it has cases, each validating on one
    n_folds = min(n_folds, n_rest)
    # deal the rest round-robin, stratum after stratum: every stratum spreads over the folds, sizes differ by ≤ 1
    fold_of: Dict[str, int] = {}
    position = int(rng.integers(n_folds))
    for (_, ids), q in zip(shuffled.items(), quota):
        for cid in ids[q:]:
            fold_of[cid] = position % n_folds
            position += 1
    folds = []
    for k in range(n_folds):
        val = sorted(cid for cid, f in fold_of.items() if f == k)
        train = sorted(cid for cid, f in fold_of.items() if f != k)
        folds.append({"train": train, "val": val})
    return {"seed": seed, "test_fraction": test_fraction, "stratified_by": ["centre", "disease"], "test": test, "folds": folds}


def splits_problems(splits: Any, case_ids: Optional[Sequence[str]]) -> List[str]:
    """Every reason ``splits`` cannot be used with these training cases (empty: fine); None skips the unknown-id check."""
    if not isinstance(splits, dict):
        return ["must be a JSON object with 'test' and 'folds'"]
    problems = []
    test = splits.get("test", [])
    folds = splits.get("folds")
    if not isinstance(test, list) or not isinstance(folds, list) or not folds:
        return ["needs 'test' (a list of case ids) and 'folds' (a non-empty list of {'train': [...], 'val': [...]})"]
    listed = set(test)
    val_fold: Dict[str, int] = {}
    for k, fold in enumerate(folds):
        if not isinstance(fold, dict) or not isinstance(fold.get("train"), list) or not isinstance(fold.get("val"), list):
            problems.append(f"folds[{k}] must be {{'train': [ids], 'val': [ids]}}")
            continue
        train, val = set(fold["train"]), set(fold["val"])
        listed |= train | val
        both = sorted(train & val)
        if both:
            problems.append(f"folds[{k}]: {_some(both)} in both train and val")
        in_test = sorted((train | val) & set(test))
        if in_test:
            problems.append(f"folds[{k}]: {_some(in_test)} also in the test set")
        for cid in sorted(val):
            if cid in val_fold:
                problems.append(f"case {cid!r} is in the validation set of folds {val_fold[cid]} and {k}")
            val_fold[cid] = k
    unknown = sorted(listed - set(case_ids)) if case_ids is not None else []
    if unknown:
        problems.append(f"unknown case ids {_some(unknown)} (not in imagesTr)")
    duplicates = sorted({c for c in test if test.count(c) > 1})
    if duplicates:
        problems.append(f"test lists {_some(duplicates)} more than once")
    return problems


def _some(ids: Sequence[str], n: int = 5) -> str:
    """A short, readable list of ids."""
    shown = ", ".join(repr(i) for i in ids[:n])
    return shown + (f" and {len(ids) - n} more" if len(ids) > n else "")


def load_splits(path: Path, case_ids: Sequence[str]) -> Dict[str, Any]:
    """Read and validate a splits.json; problems raise DatasetError naming the file."""
    splits = read_json(path)
    problems = splits_problems(splits, case_ids)
    if problems:
        raise DatasetError("invalid splits: " + "; ".join(problems), path)
    return splits


def unassigned_cases(splits: Dict[str, Any], case_ids: Sequence[str]) -> List[str]:
    """Training cases that are neither in the test set nor in any validation set."""
    used = set(splits["test"]) | {cid for fold in splits["folds"] for cid in fold["val"]}
    return sorted(set(case_ids) - used)


def fold_split(splits: Dict[str, Any], fold: int, source: Optional[Path] = None) -> Dict[str, List[str]]:
    """The train and val ids of one fold, with a clear error for a fold that does not exist."""
    if not 0 <= fold < len(splits["folds"]):
        raise DatasetError(f"fold {fold} does not exist; splits have folds 0..{len(splits['folds']) - 1}", source)
    return splits["folds"][fold]
