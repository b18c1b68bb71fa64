"""Summaries, Table 2 and group tests: correct numbers, and small or degenerate groups reported, never crashing."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from deepwml.evaluation.statistics import compare_groups, kruskal_wallis, pairwise_mann_whitney, shapiro_wilk
from deepwml.evaluation.stratify import describe, factor_table, median_iqr, summarise, table2
from deepwml.evaluation.summary import json_ready


def test_describe_leaves_nan_out_and_counts_it():
    s = describe([1.0, 2.0, 3.0, 4.0, float("nan")])
    assert (s["n"], s["n_undefined"]) == (4, 1)
    assert (s["median"], s["q1"], s["q3"], s["iqr"], s["min"], s["max"]) == (2.5, 1.75, 3.25, 1.5, 1.0, 4.0)
    empty = describe([float("nan")])
    assert empty["n"] == 0 and empty["median"] is None
    assert median_iqr(s) == "2.50 (1.75–3.25)" and median_iqr(empty) == "–"


def slices_frame() -> pd.DataFrame:
    """Scored slices from two centres and two diseases with known values."""
    return pd.DataFrame(
        {
            "centre": ["A", "A", "A", "B", "B"],
            "disease": ["MS", "MS", "CSVD", "CSVD", "CSVD"],
            "lv_group": ["G1", "G1", "G3", "G3", "G5"],
            "dice": [0.2, 0.4, 0.6, 0.8, 1.0],
            "sensitivity": [0.5, 0.5, 0.5, 1.0, 1.0],
            "precision": [np.nan, 0.1, 0.2, 0.3, 0.4],
        }
    )


def test_table2_columns_rows_and_values():
    t = table2(slices_frame())
    assert t.header == ["Metric", "Centre A", "Centre B", "MS", "CSVD", "Overall"]
    assert t.rows[0] == ["Slices (n)", "3", "2", "2", "3", "5"]
    dice_row = dict(zip(t.header, t.rows[1]))
    assert dice_row["Centre A"] == "0.40 (0.30–0.50)" and dice_row["Overall"] == "0.60 (0.40–0.80)"
    precision_row = dict(zip(t.header, t.rows[3]))
    assert precision_row["MS"] == "0.10 (0.10–0.10)"  # the NaN precision is left out, not counted as 0
    md = t.to_markdown()
    assert md.startswith("## Table 2") and "| Dice | 0.40 (0.30–0.50) |" in md


def test_table2_without_dataset_has_only_overall():
    t = table2(slices_frame(), ())
    assert t.header == ["Metric", "Overall"]


def test_lv_group_summary_lists_all_five_groups_even_empty():
    groups = summarise(slices_frame(), "lv_group", ["dice"])
    assert list(groups) == ["G1", "G2", "G3", "G4", "G5"]
    assert groups["G2"]["dice"]["n"] == 0 and groups["G3"]["dice"]["median"] == pytest.approx(0.7)
    table = factor_table(slices_frame(), "lv_group", ["dice"], "by LV")
    assert [r[0] for r in table.rows] == ["G1", "G2", "G3", "G4", "G5", "Overall"]
    assert table.rows[1][2] == "–"


def test_small_and_constant_groups_are_not_testable():
    assert shapiro_wilk([0.1, 0.2])["testable"] is False
    assert shapiro_wilk([0.5] * 10) == {"testable": False, "reason": "all values identical", "n": 10}
    kw = kruskal_wallis({"a": [0.1, 0.2, 0.3], "b": [0.4, 0.5]})
    assert kw["testable"] is False and kw["groups_excluded"] == ["b"]
    assert kruskal_wallis({"a": [1.0] * 4, "b": [1.0] * 5})["reason"] == "all values identical"


def test_kruskal_wallis_and_bonferroni_pairs():
    rng = np.random.default_rng(0)
    groups = {"low": rng.normal(0.2, 0.05, 30), "mid": rng.normal(0.5, 0.05, 30), "high": rng.normal(0.52, 0.05, 30), "tiny": [0.9]}
    kw = kruskal_wallis(groups)
    assert kw["testable"] and kw["significant"] and kw["groups"] == ["low", "mid", "high"] and kw["groups_excluded"] == ["tiny"]
    assert kw["p"] == pytest.approx(stats.kruskal(groups["low"], groups["mid"], groups["high"]).pvalue)
    pairs = {(r["group_a"], r["group_b"]): r for r in pairwise_mann_whitney(groups)}
    assert set(pairs) == {("low", "mid"), ("low", "high"), ("mid", "high")}
    raw_p = stats.mannwhitneyu(groups["mid"], groups["high"], alternative="two-sided").pvalue
    assert pairs[("mid", "high")]["p_bonferroni"] == pytest.approx(min(1.0, 3 * raw_p))
    assert pairs[("low", "mid")]["significant"]


def test_compare_groups_runs_pairs_only_after_significant_kruskal_wallis():
    frame = pd.DataFrame({"g": ["a"] * 5 + ["b"] * 5, "x": [0.1, 0.12, 0.11, 0.13, 0.1, 0.11, 0.12, 0.1, 0.13, 0.11]})
    result = compare_groups(frame, "g", "x")
    assert not result["kruskal_wallis"]["significant"]
    assert result["mann_whitney_bonferroni"]["testable"] is False
    assert set(result["shapiro_wilk"]) == {"a", "b"}


def test_json_ready_gives_strict_json():
    obj = json_ready({"a": float("nan"), "b": np.float32(1.5), "c": [np.int64(3), np.bool_(True)], "d": float("inf")})
    text = json.dumps(obj, allow_nan=False)
    assert json.loads(text) == {"a": None, "b": 1.5, "c": [3, True], "d": None}
