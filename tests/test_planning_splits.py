"""Splits: stratified by centre × disease, deterministic per seed, and a user's splits.json is checked clearly."""
from __future__ import annotations

from collections import Counter

import pytest

from deepwml.planning.splits import load_splits, make_splits, splits_problems, unassigned_cases
from deepwml.utils.atomic import write_json
from deepwml.utils.errors import DatasetError


def cohort(counts):
    """Case ids and their (centre, disease) for {(centre, disease): n}."""
    ids, strata = [], {}
    for (centre, disease), n in counts.items():
        for i in range(n):
            cid = f"{centre}_{disease}_{i:03d}"
            ids.append(cid)
            strata[cid] = (centre, disease)
    return ids, strata


COUNTS = {("A", "MS"): 20, ("A", "CSVD"): 10, ("B", "MS"): 15, ("B", "NMOSD"): 5, ("C", "CSVD"): 50}


def test_test_set_and_folds_are_stratified_by_centre_and_disease():
    ids, strata = cohort(COUNTS)
    s = make_splits(ids, strata, test_fraction=0.2, n_folds=5, seed=0)
    assert len(s["test"]) == 20
    per_stratum = Counter(strata[c] for c in s["test"])
    # 20 % of each stratum exactly, because every share here is a whole number
    assert per_stratum == {k: n // 5 for k, n in COUNTS.items()}
    for fold in s["folds"]:
        assert len(fold["val"]) == 16 and len(fold["train"]) == 64
        val_strata = Counter(strata[c] for c in fold["val"])
        for k, n in COUNTS.items():
            rest = n - n // 5
            assert abs(val_strata[k] - rest / 5) <= 1, (k, val_strata[k])


def test_the_papers_60_20_20_is_fold_0_plus_test():
    ids, strata = cohort(COUNTS)
    s = make_splits(ids, strata, seed=3)
    fold = s["folds"][0]
    sizes = [len(fold["train"]), len(fold["val"]), len(s["test"])]
    assert [n / len(ids) for n in sizes] == pytest.approx([0.64, 0.16, 0.2])
    assert set(fold["train"]) | set(fold["val"]) | set(s["test"]) == set(ids)


def test_every_case_is_validated_exactly_once_and_never_in_test():
    ids, strata = cohort({("A", "MS"): 7, ("B", "CSVD"): 6})
    s = make_splits(ids, strata, seed=1)
    val = [c for f in s["folds"] for c in f["val"]]
    assert len(val) == len(set(val)) == len(ids) - len(s["test"])
    assert not set(val) & set(s["test"])
    assert unassigned_cases(s, ids) == []
    assert splits_problems(s, ids) == []


def test_deterministic_per_seed_and_different_across_seeds():
    ids, strata = cohort(COUNTS)
    assert make_splits(ids, strata, seed=7) == make_splits(list(reversed(ids)), strata, seed=7)
    assert make_splits(ids, strata, seed=7)["test"] != make_splits(ids, strata, seed=8)["test"]


def test_tiny_datasets_get_fewer_folds_and_one_case_left_is_too_few():
    ids, strata = cohort({("A", "MS"): 4})
    s = make_splits(ids, strata)
    assert len(s["test"]) == 1 and [len(f["val"]) for f in s["folds"]] == [1, 1, 1]
    with pytest.raises(DatasetError, match="too few"):
        make_splits(ids[:2], strata, test_fraction=0.5)


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda s: s["test"].append("nobody"), r"unknown case ids 'nobody'"),
        (lambda s: s["folds"][1]["train"].append(s["test"][0]), r"folds\[1\].*also in the test set"),
        (lambda s: s["folds"][2]["val"].append(s["folds"][0]["val"][0]), r"validation set of folds 0 and 2"),
        (lambda s: s.pop("folds"), r"needs 'test'.*'folds'"),
    ],
)
def test_user_splits_are_validated_with_errors_naming_the_file(tmp_path, edit, message):
    ids, strata = cohort({("A", "MS"): 10, ("B", "CSVD"): 10})
    s = make_splits(ids, strata)
    edit(s)
    path = tmp_path / "splits.json"
    write_json(path, s)
    with pytest.raises(DatasetError, match=r"splits.json: invalid splits: .*" + message):
        load_splits(path, ids)


def test_a_valid_user_subset_is_accepted(tmp_path):
    ids, strata = cohort({("A", "MS"): 10})
    user = {"test": ids[:2], "folds": [{"train": ids[2:6], "val": ids[6:8]}, {"train": ids[6:8], "val": ids[2:6]}]}
    path = tmp_path / "splits.json"
    write_json(path, user)
    assert load_splits(path, ids) == user
    assert unassigned_cases(user, ids) == ids[8:]
