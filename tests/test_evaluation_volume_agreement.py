"""Lesion volume agreement (deepwml_evaluate): Bland-Altman figures, ICC(A,1) and correlations, checked against
published values and scipy, and reported in summary.json, table2.md, report.html and a figure."""
from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_tiny_dataset

from deepwml.evaluation import evaluate_folders
from deepwml.evaluation.volume_agreement import icc_absolute_agreement, volume_agreement
from deepwml.imageio import read_image, write_image

#: Shrout & Fleiss (1979), Table 2: six targets rated by four judges
SHROUT_FLEISS = np.array([[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]])


def test_icc_matches_shrout_and_fleiss_and_an_independent_implementation():
    """ICC(2,1) of Shrout & Fleiss's example is 0.29 (their paper); its F test and McGraw & Wong interval are those
    pingouin 0.7.0's intraclass_corr prints for the same table (F 11.03, p 0.000135, CI [0.02, 0.76])."""
    icc = icc_absolute_agreement(SHROUT_FLEISS)
    assert icc["value"] == pytest.approx(0.29, abs=0.005)
    assert icc["f"] == pytest.approx(11.027, abs=0.001) and icc["p"] == pytest.approx(0.000135, rel=0.01)
    assert icc["ci95"] == pytest.approx([0.02, 0.76], abs=0.005)
    # two raters, lesion volumes: pingouin gives ICC(A,1) 0.9138, F 26.87, p 0.000152, CI [0.63, 0.98]
    two = icc_absolute_agreement(np.column_stack([[1.2, 5.0, 12.3, 30.1, 0.4, 8.8, 60.2, 2.2],
                                                  [0.9, 4.1, 10.0, 22.5, 0.8, 7.0, 41.0, 2.5]]))
    assert two["value"] == pytest.approx(0.9138, abs=1e-4) and two["f"] == pytest.approx(26.87, abs=0.01)
    assert two["ci95"] == pytest.approx([0.63, 0.98], abs=0.005)


def test_identical_volumes_agree_perfectly_and_a_constant_shortfall_is_the_mean_difference():
    """The same volumes: ICC 1, no bias, zero-width limits; a model 2 ml short on every case: bias −2 ml with zero
    spread, no proportional bias, correlation 1, and an ICC below 1 (absolute agreement is penalised)."""
    ref = np.array([0.5, 3.0, 7.5, 12.0, 40.0])
    same = volume_agreement(ref, ref)
    assert same["testable"] and same["icc_a1"]["value"] == pytest.approx(1.0)
    assert same["mean_difference_ml"] == 0 and same["limits_of_agreement_ml"] == [0, 0]
    short = volume_agreement(ref, ref - 2)
    assert short["mean_difference_ml"] == pytest.approx(-2) and short["sd_difference_ml"] == pytest.approx(0, abs=1e-12)
    assert short["proportional_bias"]["slope"] == pytest.approx(0, abs=1e-12)
    assert short["pearson"]["r"] == pytest.approx(1) and short["icc_a1"]["value"] < 1


def test_a_model_missing_the_bulk_of_heavy_loads_shows_a_proportional_bias():
    """Predicting 60 % of every load: Bland-Altman limits from scipy's figures, a significant negative slope of the
    difference on the mean, and Pearson/Spearman as scipy computes them."""
    from scipy import stats

    rng = np.random.default_rng(0)
    ref = rng.uniform(0.2, 80, size=30)
    pred = 0.6 * ref + rng.normal(0, 0.5, size=30)
    out = volume_agreement(ref, pred)
    diff = pred - ref
    assert out["mean_difference_ml"] == pytest.approx(diff.mean())
    assert out["limits_of_agreement_ml"] == pytest.approx([diff.mean() - 1.96 * diff.std(ddof=1), diff.mean() + 1.96 * diff.std(ddof=1)])
    assert out["proportional_bias"]["slope"] < -0.3 and out["proportional_bias"]["p"] < 0.001
    assert out["pearson"]["r"] == pytest.approx(stats.pearsonr(ref, pred)[0])
    assert out["spearman"]["rho"] == pytest.approx(stats.spearmanr(ref, pred)[0])


@pytest.mark.parametrize("ref,pred,reason", [([1.0, 2.0], [1.0, 2.0], "at least 3"),
                                             ([0.0, 0.0, 0.0], [0.1, 0.0, 0.3], "all equal")])
def test_too_few_cases_or_constant_volumes_are_not_testable_with_the_reason(ref, pred, reason):
    """Two cases, or every reference empty: no coefficient is made up; the reason is given and totals still are."""
    out = volume_agreement(ref, pred)
    assert out["testable"] is False and reason in out["reason"] and out["n_cases"] == len(ref)
    assert out["predicted_total_ml"] == pytest.approx(sum(pred))


def test_deepwml_evaluate_reports_the_agreement_everywhere(tmp_path):
    """summary.json holds the agreement of per_case.csv's volumes; table2.md and report.html show it with the
    Bland-Altman figure."""
    import pandas as pd

    folder = write_tiny_dataset(tmp_path / "raw", n_train=5, n_test=0, centres=("A",), diseases=("MS", "CSVD"))
    (tmp_path / "pred").mkdir()
    for i, path in enumerate(sorted((folder / "labelsTr").iterdir())):
        image = read_image(path, dtype=None)
        pred = image.array.astype(bool)
        if i % 2:  # every other case loses its lesions' last slice
            pred[np.flatnonzero(pred.any(axis=(1, 2)))[-1]] = False
        write_image(pred.astype(np.uint8), image.geometry, tmp_path / "pred" / path.name)
    summary = evaluate_folders(folder / "labelsTr", tmp_path / "pred", tmp_path / "report", dataset="900", raw_root=tmp_path / "raw")
    cases = pd.read_csv(tmp_path / "report" / "per_case.csv")
    expected = volume_agreement(cases["ref_volume_ml"], cases["pred_volume_ml"])
    stored = json.loads((tmp_path / "report" / "summary.json").read_text())["volume_agreement"]
    assert stored == summary["volume_agreement"] and stored["testable"]
    assert stored["mean_difference_ml"] == pytest.approx(expected["mean_difference_ml"], rel=1e-5) and stored["mean_difference_ml"] < 0
    assert stored["icc_a1"]["value"] == pytest.approx(expected["icc_a1"]["value"], rel=1e-5)
    table2 = (tmp_path / "report" / "table2.md").read_text(encoding="utf-8")
    assert "## Total lesion volume agreement" in table2 and "ICC(A,1)" in table2 and "95 % limits of agreement (ml)" in table2
    # the lesion counts the same way: per_case.csv's counts, the table in lesions
    counts = json.loads((tmp_path / "report" / "summary.json").read_text())["count_agreement"]
    assert counts["unit"] == "lesions" and counts["n_cases"] == 5
    assert counts["reference_total_lesions"] == cases["ref_lesion_count"].sum()
    assert counts["predicted_total_lesions"] == cases["pred_lesion_count"].sum()
    assert "## Lesion count agreement" in table2 and "Mean difference, predicted − reference (lesions)" in table2
    html = (tmp_path / "report" / "report.html").read_text(encoding="utf-8")
    assert "<h2>Lesion volume and count agreement</h2>" in html and "Bland–Altman" in html
    assert f"<b>{stored['icc_a1']['value']:.3f}</b><span>lesion volume ICC(A,1)</span>" in html
    assert (tmp_path / "report" / "figures" / "volume_agreement.png").stat().st_size > 5000


def test_lesion_counts_take_their_own_unit_in_every_key_and_the_line():
    """A model that finds one lesion fewer in every case: mean difference -1 lesion, keys and line in lesions."""
    from deepwml.evaluation.volume_agreement import agreement_line, count_agreement

    out = count_agreement([3, 10, 25, 7], [2, 9, 24, 6])
    assert out["mean_difference_lesions"] == pytest.approx(-1) and out["limits_of_agreement_lesions"] == pytest.approx([-1, -1])
    assert out["reference_total_lesions"] == 45 and "intercept_lesions" in out["proportional_bias"]
    assert agreement_line(out).startswith("mean difference -1.00 lesions (95 % limits -1.00 to -1.00)")
    assert "lesion counts" in count_agreement([1, 2], [1, 2])["reason"]


def test_the_one_line_summary_gives_the_figures_or_nothing():
    """benchmarks and deepwml_bids print one line: bias, limits, ICC with its interval and the proportional bias;
    nothing when the agreement could not be computed."""
    from deepwml.evaluation.volume_agreement import agreement_line

    out = volume_agreement([1.0, 4.0, 9.0, 20.0], [1.0, 3.0, 8.0, 15.0])
    line = agreement_line(out)
    low, high = out["limits_of_agreement_ml"]
    assert line.startswith(f"mean difference {out['mean_difference_ml']:+.2f} ml (95 % limits {low:+.2f} to {high:+.2f})")
    assert f"ICC(A,1) {out['icc_a1']['value']:.3f}" in line and "slope of the difference on the mean" in line
    assert agreement_line(volume_agreement([1.0], [2.0])) == ""
