"""Group comparisons as in the paper: Shapiro–Wilk per group, Kruskal–Wallis across groups, and pairwise
Mann–Whitney U with Bonferroni correction where Kruskal–Wallis is significant.

Groups with fewer than ``MIN_GROUP_SIZE`` defined values, or whose values are all identical, are reported as not
testable (with the reason) instead of failing. Slices of one case are not independent, so p-values over slices are
descriptive (the paper's practice), not a confirmatory test.
"""
from __future__ import annotations

import itertools
import warnings
from typing import Any, Dict, List, Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from deepwml.evaluation.stratify import group_order

MIN_GROUP_SIZE = 3
ALPHA = 0.05
#: scipy's Shapiro–Wilk p-value is approximate above this many values.
SHAPIRO_MAX_EXACT = 5000


def _finite(values: Sequence[float]) -> np.ndarray:
    """The finite values as a float array (NaN metrics are undefined, not zero)."""
    arr = np.asarray(values, dtype=float)
    return arr[np.isfinite(arr)]


def _not_testable(reason: str, **extra: Any) -> Dict[str, Any]:
    """A result for a test that could not be run, with the reason."""
    return {"testable": False, "reason": reason, **extra}


def shapiro_wilk(values: Sequence[float]) -> Dict[str, Any]:
    """Shapiro–Wilk normality test of one group."""
    x = _finite(values)
    if x.size < MIN_GROUP_SIZE:
        return _not_testable(f"n={x.size} < {MIN_GROUP_SIZE}", n=int(x.size))
    if np.ptp(x) == 0:
        return _not_testable("all values identical", n=int(x.size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        w, p = stats.shapiro(x)
    result = {"testable": True, "n": int(x.size), "statistic": float(w), "p": float(p), "normal": bool(p >= ALPHA)}
    if x.size > SHAPIRO_MAX_EXACT:
        result["note"] = f"n > {SHAPIRO_MAX_EXACT}: p-value approximate"
    return result


def testable_groups(groups: Mapping[str, Sequence[float]]) -> Dict[str, np.ndarray]:
    """The groups with at least MIN_GROUP_SIZE finite values."""
    finite = {name: _finite(v) for name, v in groups.items()}
    return {name: v for name, v in finite.items() if v.size >= MIN_GROUP_SIZE}


def kruskal_wallis(groups: Mapping[str, Sequence[float]]) -> Dict[str, Any]:
    """Kruskal–Wallis H test across the testable groups."""
    usable = testable_groups(groups)
    skipped = sorted(set(groups) - set(usable))
    if len(usable) < 2:
        return _not_testable(f"{len(usable)} group(s) with n >= {MIN_GROUP_SIZE}; need 2", groups_excluded=skipped)
    if np.ptp(np.concatenate(list(usable.values()))) == 0:
        return _not_testable("all values identical", groups_excluded=skipped)
    h, p = stats.kruskal(*usable.values())
    return {
        "testable": True,
        "statistic": float(h),
        "p": float(p),
        "significant": bool(p < ALPHA),
        "groups": list(usable),
        "groups_excluded": skipped,
    }


def pairwise_mann_whitney(groups: Mapping[str, Sequence[float]]) -> List[Dict[str, Any]]:
    """Two-sided Mann–Whitney U for every pair of testable groups, Bonferroni-corrected over the pairs."""
    usable = testable_groups(groups)
    pairs = list(itertools.combinations(usable, 2))
    out = []
    for a, b in pairs:
        u, p = stats.mannwhitneyu(usable[a], usable[b], alternative="two-sided")
        p_adj = min(1.0, float(p) * len(pairs))
        out.append(
            {"group_a": a, "group_b": b, "statistic": float(u), "p": float(p), "p_bonferroni": p_adj, "significant": bool(p_adj < ALPHA)}
        )
    return out


def compare_groups(frame: pd.DataFrame, factor: str, metric: str) -> Dict[str, Any]:
    """Shapiro–Wilk per group, Kruskal–Wallis across groups and, if significant, pairwise Mann–Whitney U."""
    keys = frame[factor].astype(str)
    groups = {g: frame.loc[keys == g, metric].to_numpy(dtype=float) for g in group_order(frame, factor)}
    kw = kruskal_wallis(groups)
    result: Dict[str, Any] = {
        "shapiro_wilk": {g: shapiro_wilk(v) for g, v in groups.items()},
        "kruskal_wallis": kw,
    }
    if kw.get("significant"):
        result["mann_whitney_bonferroni"] = pairwise_mann_whitney(groups)
    else:
        result["mann_whitney_bonferroni"] = _not_testable(
            "Kruskal–Wallis not significant" if kw["testable"] else "Kruskal–Wallis not testable"
        )
    return result


def run_statistics(frame: pd.DataFrame, factors: Sequence[str], metrics: Sequence[str]) -> Dict[str, Dict[str, Any]]:
    """{factor: {metric: compare_groups(...)}} for the factors present in ``frame``."""
    return {f: {m: compare_groups(frame, f, m) for m in metrics} for f in factors if f in frame.columns}
