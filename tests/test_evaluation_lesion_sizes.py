"""Lesion detection by lesion size (deepwml_evaluate): each lesion's size and whether it was found, per_lesion.csv,
and the pooled table by size bin."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import write_tiny_dataset

from deepwml.evaluation import evaluate_folders
from deepwml.evaluation.lesion_sizes import SIZE_EDGES_ML, detection_by_size, size_labels
from deepwml.evaluation.lesions import lesion_detection, lesion_rows
from deepwml.imageio import read_image, write_image


def test_each_lesion_keeps_its_voxels_slices_and_whether_the_other_mask_touches_it():
    """Three reference lesions (1 voxel on one slice, 2x2x2, 3x3x3) and a prediction touching only the largest, plus
    a false lesion: sizes, slice spans and found/true flags per lesion, in label order, along the given slice axis."""
    ref = np.zeros((8, 12, 12), bool)
    ref[0, 0, 0] = True
    ref[2:4, 2:4, 2:4] = True
    ref[5:8, 6:9, 6:9] = True
    pred = np.zeros_like(ref)
    pred[6, 7, 7:11] = True  # touches the 3x3x3 lesion
    pred[1, 10, 0] = True  # touches nothing
    d = lesion_detection(ref, pred)
    assert list(d.reference_lesions["voxels"]) == [1, 8, 27] and list(d.reference_lesions["slices"]) == [1, 2, 3]
    assert list(d.reference_lesions["touched"]) == [False, False, True]
    assert list(d.predicted_lesions["touched"]) == [False, True] and list(d.predicted_lesions["voxels"]) == [1, 4]
    assert (d.n_reference_detected, d.n_predicted_touching) == (1, 1)
    # the same masks with the slices along the last axis
    sideways = lesion_detection(np.moveaxis(ref, 0, 2), np.moveaxis(pred, 0, 2), slice_axis=2)
    assert list(sideways.reference_lesions["slices"]) == [1, 2, 3]
    rows = lesion_rows(d, voxel_ml=0.01)
    assert rows["side"] == ["reference"] * 3 + ["prediction"] * 2 and rows["lesion"] == [1, 2, 3, 1, 2]
    assert rows["volume_ml"] == pytest.approx([0.01, 0.08, 0.27, 0.01, 0.04]) and rows["detected"] == [False, False, True, False, True]


def test_lesions_are_binned_by_their_own_volume_edges_included_above():
    """A lesion exactly at an edge belongs to the bin above (0.03 ml is '0.03–0.1 ml'); recall and precision per bin
    and over all; an empty bin has no share."""
    lesions = pd.DataFrame({"side": ["reference"] * 4 + ["prediction"] * 3,
                            "volume_ml": [0.01, 0.03, 0.3, 5.0, 0.02, 0.05, 5.5],
                            "detected": [False, True, True, True, False, True, True]})
    out = detection_by_size(lesions)
    bins = {row["group"]: row for row in out["bins"]}
    assert list(bins) == size_labels() == ["< 0.03 ml", "0.03–0.1 ml", "0.1–0.5 ml", "0.5–2 ml", "≥ 2 ml"]
    assert (bins["< 0.03 ml"]["reference_lesions"], bins["< 0.03 ml"]["recall"]) == (1, 0.0)
    assert bins["< 0.03 ml"]["predicted_false"] == 1 and bins["< 0.03 ml"]["precision"] == 0.0
    assert (bins["0.03–0.1 ml"]["reference_found"], bins["0.03–0.1 ml"]["precision"]) == (1, 1.0)
    assert bins["0.5–2 ml"]["recall"] is None and bins["0.5–2 ml"]["precision"] is None
    assert out["overall"]["recall"] == 0.75 and out["overall"]["precision"] == pytest.approx(2 / 3)
    assert out["edges_ml"] == list(SIZE_EDGES_ML)
    empty = detection_by_size(pd.DataFrame({"side": [], "volume_ml": [], "detected": []}))
    assert empty["overall"]["reference_lesions"] == 0 and empty["overall"]["recall"] is None


def test_deepwml_evaluate_writes_every_lesion_and_the_table(tmp_path):
    """per_lesion.csv holds each case's reference and predicted lesions, consistent with per_case.csv's counts; the
    summary pools them by size, and table2.md and report.html show the table."""
    folder = write_tiny_dataset(tmp_path / "raw", n_train=4, n_test=0, centres=("A", "B"), diseases=("MS",))
    (tmp_path / "pred").mkdir()
    for i, path in enumerate(sorted((folder / "labelsTr").iterdir())):
        image = read_image(path, dtype=None)
        pred = image.array.astype(bool) if i % 2 else np.zeros(image.array.shape, bool)
        pred[0, :2, :2] = True  # a false lesion in a corner
        write_image(pred.astype(np.uint8), image.geometry, tmp_path / "pred" / path.name)
    summary = evaluate_folders(folder / "labelsTr", tmp_path / "pred", tmp_path / "report", dataset="900", raw_root=tmp_path / "raw")
    lesions = pd.read_csv(tmp_path / "report" / "per_lesion.csv")
    cases = pd.read_csv(tmp_path / "report" / "per_case.csv").set_index("case")
    assert list(lesions.columns[:6]) == ["case", "centre", "disease", "slice_thickness_mm", "thickness_band", "side"]
    for case, rows in lesions.groupby("case"):
        ref, pred = rows[rows.side == "reference"], rows[rows.side == "prediction"]
        assert len(ref) == cases.loc[case, "ref_lesion_count"] and len(pred) == cases.loc[case, "pred_lesion_count"]
        assert ref.detected.sum() == cases.loc[case, "ref_lesions_detected"]
        assert pred.detected.sum() == cases.loc[case, "pred_lesions_touching_ref"]
        assert ref.volume_ml.sum() == pytest.approx(cases.loc[case, "ref_volume_ml"], rel=1e-5)
    overall = summary["lesions_by_size"]["overall"]
    assert overall["reference_lesions"] == cases.ref_lesion_count.sum() and overall["predicted_false"] == 4
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["lesions_by_size"] == summary["lesions_by_size"]
    assert "## Lesion detection by lesion size" in (tmp_path / "report" / "table2.md").read_text(encoding="utf-8")
    assert "<h2>Lesion detection by lesion size</h2>" in (tmp_path / "report" / "report.html").read_text(encoding="utf-8")


def test_a_cache_written_before_lesions_were_kept_is_recomputed(tmp_path, monkeypatch):
    """A report folder evaluated by the code before per_lesion.csv resumes: its cached cases lack the lesions, so
    they are scored again instead of failing or leaving per_lesion.csv empty."""
    from deepwml.evaluation import run_cases

    folder = write_tiny_dataset(tmp_path / "raw", n_train=2, n_test=0)
    evaluate_folders(folder / "labelsTr", folder / "labelsTr", tmp_path / "report")
    for entry in (tmp_path / "report" / ".cache").glob("*.json"):
        cached = json.loads(entry.read_text())
        del cached["lesions"]
        entry.write_text(json.dumps(cached))
    calls = []
    original = run_cases.evaluate_case
    monkeypatch.setattr(run_cases, "evaluate_case", lambda pair, ignore: calls.append(pair.case_id) or original(pair, ignore))
    evaluate_folders(folder / "labelsTr", folder / "labelsTr", tmp_path / "report")
    assert len(calls) == 2 and len(pd.read_csv(tmp_path / "report" / "per_lesion.csv")) > 0
