"""How far the predicted total lesion volumes (and lesion counts) agree with the reference's, case by case.

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


def paired_agreement(reference: Sequence[float], predicted: Sequence[float], unit: str = "ml",
                     what: str = "volumes") -> Dict[str, Any]:
    """Bland-Altman figures, ICC(A,1) and correlations of two series paired by case (``unit`` ends the keys of the
    figures that carry it: ml for volumes, lesions for counts); JSON-ready."""
    ref, pred = np.asarray(reference, dtype=float), np.asarray(predicted, dtype=float)
    keep = np.isfinite(ref) & np.isfinite(pred)
    ref, pred = ref[keep], pred[keep]
    out: Dict[str, Any] = {"unit": unit, "n_cases": int(ref.size), f"reference_total_{unit}": float(ref.sum()),
                           f"predicted_total_{unit}": float(pred.sum())}
    if ref.size < MIN_CASES:
        return {**out, "testable": False, "reason": f"{ref.size} case(s) with both {what}; at least {MIN_CASES} needed"}
    if np.ptp(ref) == 0 or np.ptp(pred) == 0:
        return {**out, "testable": False, "reason": f"one side's {what} are all equal (e.g. every reference empty)"}
    difference, mean = pred - ref, (pred + ref) / 2
    bias, sd = float(difference.mean()), float(difference.std(ddof=1))
    slope = stats.linregress(mean, difference) if np.ptp(mean) > 0 else None
    pearson, spearman = stats.pearsonr(ref, pred), stats.spearmanr(ref, pred)
    return {
        **out,
        "testable": True,
        f"mean_difference_{unit}": bias,
        f"sd_difference_{unit}": sd,
        f"limits_of_agreement_{unit}": [bias - 1.96 * sd, bias + 1.96 * sd],
        "proportional_bias": None if slope is None else {"slope": float(slope.slope), f"intercept_{unit}": float(slope.intercept),
                                                         "p": float(slope.pvalue)},
        "icc_a1": icc_absolute_agreement(np.column_stack([ref, pred])),
        "pearson": {"r": float(pearson[0]), "p": float(pearson[1])},
        "spearman": {"rho": float(spearman[0]), "p": float(spearman[1])},
    }


def volume_agreement(reference_ml: Sequence[float], predicted_ml: Sequence[float]) -> Dict[str, Any]:
    """:func:`paired_agreement` of total lesion volumes (ml)."""
    return paired_agreement(reference_ml, predicted_ml, "ml", "volumes")


def count_agreement(reference: Sequence[float], predicted: Sequence[float]) -> Dict[str, Any]:
    """:func:`paired_agreement` of lesion counts (26-connected lesions per case, the WMH challenge's)."""
    return paired_agreement(reference, predicted, "lesions", "lesion counts")


#: per unit: the quantity's name in the tables and how its figures are printed
_QUANTITY = {"ml": ("Total lesion volume", "{:.2f}"), "lesions": ("Lesion count", "{:.1f}")}


def agreement_table(agreement: Dict[str, Any]) -> Table:
    """The report's table of one agreement (volumes or lesion counts; one figure per row)."""
    unit = agreement["unit"]
    quantity, number = _QUANTITY[unit]
    signed = number.replace("{:", "{:+")
    title = f"{quantity} agreement, predicted against reference (per case)"
    key = "volume-agreement" if unit == "ml" else "count-agreement"
    rows = [["Cases", str(agreement["n_cases"])],
            [f"{quantity}, sum over cases: reference / predicted ({unit})",
             f"{number.format(agreement[f'reference_total_{unit}'])} / {number.format(agreement[f'predicted_total_{unit}'])}"]]
    if not agreement["testable"]:
        return Table(title, ["Figure", "Value"], rows + [["Agreement", f"not computed: {agreement['reason']}"]], key=key)
    low, high = agreement[f"limits_of_agreement_{unit}"]
    icc, slope = agreement["icc_a1"], agreement["proportional_bias"]
    rows += [
        [f"Mean difference, predicted − reference ({unit})",
         f"{signed.format(agreement[f'mean_difference_{unit}'])} (SD {number.format(agreement[f'sd_difference_{unit}'])})"],
        [f"95 % limits of agreement ({unit})", f"{signed.format(low)} to {signed.format(high)}"],
        ["Proportional bias: slope of the difference on the mean", "–" if slope is None else f"{slope['slope']:+.3f} ({p_text(slope['p'])})"],
        ["ICC(A,1), absolute agreement (95 % CI)", f"{icc['value']:.3f} ({icc['ci95'][0]:.3f}–{icc['ci95'][1]:.3f})"],
        ["Pearson r", f"{agreement['pearson']['r']:.3f} ({p_text(agreement['pearson']['p'])})"],
        ["Spearman ρ", f"{agreement['spearman']['rho']:.3f} ({p_text(agreement['spearman']['p'])})"],
    ]
    note = ("Bland–Altman: limits = mean difference ± 1.96 SD of the differences; a proportional-bias slope below 0 with "
            "p < 0.05 means the prediction falls further short the larger the value. ICC(A,1): McGraw & Wong's two-way "
            "absolute-agreement single-measure coefficient (Shrout & Fleiss ICC(2,1)).")
    return Table(title, ["Figure", "Value"], rows, note=note, key=key)


def agreement_line(agreement: Dict[str, Any]) -> str:
    """One line of the figures a reader looks at first (empty when there are too few cases)."""
    if not agreement["testable"]:
        return ""
    unit = agreement["unit"]
    low, high = agreement[f"limits_of_agreement_{unit}"]
    icc, slope = agreement["icc_a1"], agreement["proportional_bias"]
    line = (f"mean difference {agreement[f'mean_difference_{unit}']:+.2f} {unit} (95 % limits {low:+.2f} to {high:+.2f}), "
            f"ICC(A,1) {icc['value']:.3f} ({icc['ci95'][0]:.3f}-{icc['ci95'][1]:.3f})")
    return line if slope is None else line + f", slope of the difference on the mean {slope['slope']:+.3f} ({p_text(slope['p'])})"
