"""deepwml_evaluate --against: two methods on the same cases compared pair by pair (Wilcoxon signed-rank), as a
researcher compares a fine-tuned model with the shipped one or with another tool; wrong folders are refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_dataset
from scipy import stats

from deepwml.cli.evaluate import main as cli_main
from deepwml.evaluation import evaluate_folders
from deepwml.imageio import read_image, write_image
from deepwml.utils.errors import DeepWMLError

N_CASES = 8


def _predictions(labels: Path, out: Path, shift: int) -> Path:
    """Each label shifted by ``shift`` + (case index % 3) pixels (0: the labels themselves)."""
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(sorted(labels.iterdir())):
        image = read_image(path, dtype=None)
        moved = np.roll(image.array.astype(bool), shift + (i % 3) if shift else 0, axis=2)
        write_image(moved.astype(np.uint8), image.geometry, out / path.name)
    return out


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A tiny dataset, a better method (the labels shifted by 0-2 pixels) and a worse one (by 2-4), the worse one
    evaluated."""
    root = tmp_path_factory.mktemp("paired")
    folder = write_tiny_dataset(root / "raw", n_train=N_CASES, n_test=0)
    labels = folder / "labelsTr"
    _predictions(labels, root / "worse", shift=2)
    _predictions(labels, root / "better", shift=0)
    evaluate_folders(labels, root / "worse", root / "report_worse")
    return root


def _labels(root: Path) -> Path:
    return root / "raw" / "Dataset900_Tiny" / "labelsTr"


def test_each_metric_is_tested_pair_by_pair_as_scipy_tests_the_two_reports(site, capfd):
    """The per-case p-values are scipy's Wilcoxon on the two per_case.csv files, Bonferroni-corrected over the metrics
    tested; the method that is better is named; per-slice Dice is paired by slice; the CLI prints the line."""
    assert cli_main(["-ref", str(_labels(site)), "-pred", str(site / "better"), "-o", str(site / "report_better"),
                     "--against", str(site / "report_worse")]) == 0
    out = capfd.readouterr().out
    assert f"against {(site / 'worse').resolve()}: case dice" in out
    summary = json.loads((site / "report_better" / "summary.json").read_text())
    against = summary["against"]
    this = pd.read_csv(site / "report_better" / "per_case.csv")
    other = pd.read_csv(site / "report_worse" / "per_case.csv")
    assert list(this["case"]) == list(other["case"])
    tested = [m for m, r in against["cases"].items() if r["testable"]]
    assert "dice" in tested and "hd95_mm" in tested
    for metric in tested:
        a, b = this[metric].to_numpy(float), other[metric].to_numpy(float)
        keep = np.isfinite(a) & np.isfinite(b)
        r = against["cases"][metric]
        assert r["n"] == keep.sum()
        assert r["p"] == pytest.approx(stats.wilcoxon(a[keep], b[keep]).pvalue)
        assert r["p_bonferroni"] == pytest.approx(min(1.0, r["p"] * len(tested)))
    assert against["cases"]["dice"]["favours"] == "this" and against["cases"]["dice"]["median_this"] > 0.5
    assert against["cases"]["hd95_mm"]["favours"] == "this"  # lower is better there
    slices_this = pd.read_csv(site / "report_better" / "per_slice.csv")
    slices_other = pd.read_csv(site / "report_worse" / "per_slice.csv")
    merged = slices_this[slices_this["has_reference_lesion"]].merge(slices_other, on=["case", "slice"])
    assert against["slices"]["dice"]["n"] == len(merged)
    assert against["slices"]["dice"]["p"] == pytest.approx(stats.wilcoxon(merged["dice_x"], merged["dice_y"]).pvalue)
    assert "Against" in (site / "report_better" / "table2.md").read_text()
    assert "Against another method (paired)" in (site / "report_better" / "report.html").read_text()


def test_the_same_masks_are_not_testable_rather_than_a_crash(site, tmp_path):
    """Both methods identical: every test says why it was not run."""
    summary = evaluate_folders(_labels(site), site / "worse", tmp_path / "again", against=site / "report_worse")
    assert all(not r["testable"] and r["reason"] == "identical values in every pair"
               for r in summary["against"]["cases"].values())


def test_wrong_folders_are_refused_naming_them(site, tmp_path):
    """Not a report, this report's own folder, or a report of other cases: one clear error, nothing compared."""
    with pytest.raises(DeepWMLError, match="not a deepwml_evaluate report folder"):
        evaluate_folders(_labels(site), site / "better", tmp_path / "r1", against=site / "worse")
    with pytest.raises(DeepWMLError, match="this report's own folder"):
        evaluate_folders(_labels(site), site / "better", site / "report_worse", against=site / "report_worse")
    fewer, fewer_masks = tmp_path / "fewer_labels", tmp_path / "fewer_masks"
    for folder, source in ((fewer, _labels(site)), (fewer_masks, site / "worse")):
        folder.mkdir()
        for path in sorted(source.iterdir())[:5]:
            (folder / path.name).write_bytes(path.read_bytes())
    evaluate_folders(fewer, fewer_masks, tmp_path / "fewer_report")
    with pytest.raises(DeepWMLError, match="hold different cases"):
        evaluate_folders(_labels(site), site / "better", tmp_path / "r2", against=tmp_path / "fewer_report")
