"""How far the predicted total lesion volumes agree with the reference's, case by case.

A site validating a lesion tool on its own scans asks first whether it measures the load its readers would: Bland-
Altman's mean difference and 95 % limits of agreement (with a test for a difference that grows with the load, the
way a model that misses confluent bulk shows), the intraclass correlation of absolute agreement, and Pearson's and
Spearman's correlations, as WMH method papers report them. ICC(A,1) is McGraw and Wong's two-way absolute-agreement
single-measure coefficient (Shrout and Fleiss's ICC(2,1)) with their F-based 95 % interval.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence

import numpy as np
from scipy import stats

from deepwml.evaluation.report import p_text
from deepwml.evaluation.tables import Table

#: fewest cases the coefficients and tests are computed on
MIN_CASES = 3


def icc_absolute_agreement(ratings: np.ndarray, alpha: float = 0.05) -> Dict[str, Any]:
    """ICC(A,1) of an (n targets × k raters) table, with its 1 − alpha interval, F statistic and p-value."""
    x = np.asarray(ratings, dtype=float)
    n, k = x.shape
    grand = x.mean()
    ms_rows = k * np.sum((x.mean(axis=1) - grand) ** 2) / (n - 1)
    ms_cols = n * np.sum((x.mean(axis=0) - grand) ** 2) / (k - 1)
    residual = x - x.mean(axis=1, keepdims=True) - x.mean(axis=0, keepdims=True) + grand
    ms_error = np.sum(residual ** 2) / ((n - 1) * (k - 1))
    icc = (ms_rows - ms_error) / (ms_rows + (k - 1) * ms_error + k * (ms_cols - ms_error) / n)
    f_value = ms_rows / ms_error if ms_error > 0 else np.inf
    p = float(stats.f.sf(f_value, n - 1, (n - 1) * (k - 1))) if np.isfinite(f_value) else 0.0
    # McGraw & Wong (1996), case 2A: Satterthwaite's degrees of freedom for the denominator
    a = k * icc / (n * (1 - icc)) if icc < 1 else np.inf
    b = 1 + k * icc * (n - 1) / (n * (1 - icc)) if icc < 1 else np.inf
    lower = upper = float(icc)
    if np.isfinite(a) and ms_error > 0:
        v = (a * ms_cols + b * ms_error) ** 2 / ((a * ms_cols) ** 2 / (k - 1) + (b * ms_error) ** 2 / ((n - 1) * (k - 1)))
        f_lo, f_hi = stats.f.ppf(1 - alpha / 2, n - 1, v), stats.f.ppf(1 - alpha / 2, v, n - 1)
        spread = k * ms_cols + (k * n - k - n) * ms_error
        lower = n * (ms_rows - f_lo * ms_error) / (f_lo * spread + n * ms_rows)
        upper = n * (f_hi * ms_rows - ms_error) / (spread + n * f_hi * ms_rows)
    return {"value": float(icc), "ci95": [float(lower), float(upper)], "f": float(f_value), "p": p}


def volume_agreement(reference_ml: Sequence[float], predicted_ml: Sequence[float]) -> Dict[str, Any]:
    """Bland-Altman figures, ICC(A,1) and correlations of two volume series paired by case; JSON-ready."""
    ref, pred = np.asarray(reference_ml, dtype=float), np.asarray(predicted_ml, dtype=float)
    keep = np.isfinite(ref) & np.isfinite(pred)
    ref, pred = ref[keep], pred[keep]
    out: Dict[str, Any] = {"n_cases": int(ref.size), "reference_total_ml": float(ref.sum()), "predicted_total_ml": float(pred.sum())}
    if ref.size < MIN_CASES:
        return {**out, "testable": False, "reason": f"{ref.size} case(s) with both volumes; at least {MIN_CASES} needed"}
    if np.ptp(ref) == 0 or np.ptp(pred) == 0:
        return {**out, "testable": False, "reason": "one side's volumes are all equal (e.g. every reference empty)"}
    difference, mean = pred - ref, (pred + ref) / 2
    bias, sd = float(difference.mean()), float(difference.std(ddof=1))
    slope = stats.linregress(mean, difference) if np.ptp(mean) > 0 else None
    pearson, spearman = stats.pearsonr(ref, pred), stats.spearmanr(ref, pred)
    return {
        **out,
        "testable": True,
        "mean_difference_ml": bias,
        "sd_difference_ml": sd,
        "limits_of_agreement_ml": [bias - 1.96 * sd, bias + 1.96 * sd],
        "proportional_bias": None if slope is None else {"slope": float(slope.slope), "intercept_ml": float(slope.intercept),
                                                         "p": float(slope.pvalue)},
        "icc_a1": icc_absolute_agreement(np.column_stack([ref, pred])),
        "pearson": {"r": float(pearson[0]), "p": float(pearson[1])},
        "spearman": {"rho": float(spearman[0]), "p": float(spearman[1])},
    }


def agreement_table(agreement: Dict[str, Any]) -> Table:
    """The report's table of the volume agreement (one figure per row)."""
    title = "Lesion volume agreement, predicted against reference (per case)"
    rows = [["Cases", str(agreement["n_cases"])],
            ["Total lesion volume, reference / predicted (ml)",
             f"{agreement['reference_total_ml']:.2f} / {agreement['predicted_total_ml']:.2f}"]]
    if not agreement["testable"]:
        return Table(title, ["Figure", "Value"], rows + [["Agreement", f"not computed: {agreement['reason']}"]], key="volume-agreement")
    low, high = agreement["limits_of_agreement_ml"]
    icc, slope = agreement["icc_a1"], agreement["proportional_bias"]
    rows += [
        ["Mean difference, predicted − reference (ml)", f"{agreement['mean_difference_ml']:+.2f} (SD {agreement['sd_difference_ml']:.2f})"],
        ["95 % limits of agreement (ml)", f"{low:+.2f} to {high:+.2f}"],
        ["Proportional bias: slope of the difference on the mean", "–" if slope is None else f"{slope['slope']:+.3f} ({p_text(slope['p'])})"],
        ["ICC(A,1), absolute agreement (95 % CI)", f"{icc['value']:.3f} ({icc['ci95'][0]:.3f}–{icc['ci95'][1]:.3f})"],
        ["Pearson r", f"{agreement['pearson']['r']:.3f} ({p_text(agreement['pearson']['p'])})"],
        ["Spearman ρ", f"{agreement['spearman']['rho']:.3f} ({p_text(agreement['spearman']['p'])})"],
    ]
    note = ("Bland–Altman: limits = mean difference ± 1.96 SD of the differences; a proportional-bias slope below 0 with "
            "p < 0.05 means the prediction falls further short the larger the load. ICC(A,1): McGraw & Wong's two-way "
            "absolute-agreement single-measure coefficient (Shrout & Fleiss ICC(2,1)).")
    return Table(title, ["Figure", "Value"], rows, note=note, key="volume-agreement")


def agreement_line(agreement: Dict[str, Any]) -> str:
    """One line of the figures a reader looks at first (empty when there are too few cases)."""
    if not agreement["testable"]:
        return ""
    low, high = agreement["limits_of_agreement_ml"]
    icc, slope = agreement["icc_a1"], agreement["proportional_bias"]
    line = (f"mean difference {agreement['mean_difference_ml']:+.2f} ml (95 % limits {low:+.2f} to {high:+.2f}), "
            f"ICC(A,1) {icc['value']:.3f} ({icc['ci95'][0]:.3f}-{icc['ci95'][1]:.3f})")
    return line if slope is None else line + f", slope of the difference on the mean {slope['slope']:+.3f} ({p_text(slope['p'])})"
