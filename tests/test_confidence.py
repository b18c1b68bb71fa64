"""Confidence (issue #14 point 4): the uncertainty map, each lesion's confidence, and the calibration that
deepwml_evaluate reports (ECE, reliability diagram) on inputs whose answer is known."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deepwml.cli.evaluate import main as evaluate_main
from deepwml.evaluation import evaluate_folders
from deepwml.evaluation.calibration import expected_calibration_error, reliability_counts
from deepwml.imageio import Geometry, write_image
from deepwml.inference.confidence import CONFIDENCE_COLUMNS, add_lesion_confidence, binary_entropy
from deepwml.inference.lesion_report import lesion_table


def _h(p: float) -> float:
    return float(-(p * np.log2(p) + (1 - p) * np.log2(1 - p)))


def test_uncertainty_is_zero_when_certain_one_at_a_coin_flip_and_symmetric():
    p = np.array([0.0, 1.0, 0.5, 0.1, 0.9, 0.25], np.float32)
    u = binary_entropy(p)
    assert u.dtype == np.float32
    assert u[:3].tolist() == pytest.approx([0.0, 0.0, 1.0])
    assert u[3] == pytest.approx(u[4]) == pytest.approx(_h(0.1), rel=1e-5)
    assert u[5] == pytest.approx(_h(0.25), rel=1e-5)


def test_each_lesion_gets_the_confidence_of_its_own_voxels_whatever_the_table_order():
    geometry = Geometry((12, 10, 4), (0.9, 0.9, 5.0), (3.0, -2.0, 10.0))
    mask = np.zeros((4, 10, 12), np.uint8)
    probs = np.zeros(mask.shape, np.float32)
    mask[1:3, 2:5, 2:5] = 1  # the big lesion, certain
    probs[1:3, 2:5, 2:5] = 0.99
    mask[0, 7:9, 8:10] = 1  # a small lesion of voxels just above threshold
    probs[0, 7:9, 8:10] = 0.6
    probs[0, 7, 8] = 0.8
    mask[3, 8, 1] = 1  # a single voxel
    probs[3, 8, 1] = 0.9
    table = lesion_table(mask, geometry)
    out = add_lesion_confidence(table, mask, probs, geometry)
    assert list(out.columns) == list(table.columns) + CONFIDENCE_COLUMNS
    assert out["voxels"].tolist() == [18, 4, 1]
    assert out["mean_probability"].tolist() == pytest.approx([0.99, (3 * 0.6 + 0.8) / 4, 0.9], rel=1e-6)
    assert out["confidence"].tolist() == pytest.approx([1 - _h(0.99), 1 - (3 * _h(0.6) + _h(0.8)) / 4, 1 - _h(0.9)], rel=1e-5)
    # a table listed in another order keeps each lesion's own numbers
    shuffled = add_lesion_confidence(table.iloc[[2, 0, 1]].reset_index(drop=True), mask, probs, geometry)
    assert shuffled["confidence"].tolist() == pytest.approx(out["confidence"].iloc[[2, 0, 1]].tolist())


def test_lesions_are_matched_even_when_a_centroid_sits_on_a_rounding_boundary():
    """Regression: the table's centroids and those computed here differ by float rounding; matching on centroids rounded
    to a micrometre failed ("lesion table does not describe this mask") whenever one lay on a .xxx5 boundary, as it did
    for a lesion whose centroid x was 6.76875 mm."""
    geometry = Geometry((16, 16, 3), (0.9, 0.9, 6.0), (-30.0, -40.0, 10.0))
    mask = np.zeros((3, 16, 16), np.uint8)
    mask[0, 2:4, 2:6] = 1
    mask[2, 9:12, 10:13] = 1
    mask[1, 12, 3] = 1  # same voxel count and slice span as no other lesion, far from the rest
    probs = np.where(mask > 0, 0.7, 0.01).astype(np.float32)
    probs[0, 2, 2] = 0.95
    table = lesion_table(mask, geometry)
    exact = add_lesion_confidence(table, mask, probs, geometry)
    # every centroid moved by at most a micrometre, across the micrometre rounding boundary next to it
    nudged = table.copy()
    for column in ("centroid_x_mm", "centroid_y_mm", "centroid_z_mm"):
        nudged[column] = nudged[column].round(3) + 0.0005 + 1e-6
        assert ((nudged[column] - table[column]).abs() <= 0.0011).all()
        assert (nudged[column].round(3) != table[column].round(3)).all()
    out = add_lesion_confidence(nudged, mask, probs, geometry)
    assert out["mean_probability"].tolist() == pytest.approx(exact["mean_probability"].tolist())
    assert out["confidence"].tolist() == pytest.approx(exact["confidence"].tolist())
    # a table that describes another mask is still refused
    moved = table.copy()
    moved.loc[0, "centroid_x_mm"] += 0.5
    with pytest.raises(ValueError, match="does not describe this mask"):
        add_lesion_confidence(moved, mask, probs, geometry)


def test_no_lesion_gives_the_confidence_columns_and_no_rows():
    geometry = Geometry((8, 8, 3), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    mask = np.zeros((3, 8, 8), np.uint8)
    out = add_lesion_confidence(lesion_table(mask, geometry), mask, np.zeros(mask.shape, np.float32), geometry)
    assert len(out) == 0 and list(out.columns)[-2:] == CONFIDENCE_COLUMNS


def test_ece_of_a_perfectly_calibrated_model_is_zero():
    probs, ref = [], []
    for k in range(10):
        p = (k + 0.5) / 10  # 100 voxels at probability p, of which exactly 100 p are lesion
        probs.append(np.full(100, p))
        ref.append(np.arange(100) < round(100 * p))
    counts = reliability_counts(np.concatenate(probs), np.concatenate(ref))
    assert counts[0].tolist() == [100] * 10
    assert expected_calibration_error(counts) == pytest.approx(0.0, abs=1e-12)


def test_ece_of_a_sampled_calibrated_model_is_near_zero():
    rng = np.random.default_rng(0)
    p = rng.random(400_000)
    assert expected_calibration_error(reliability_counts(p, rng.random(p.size) < p)) < 0.005


def test_ece_of_an_overconfident_model_is_the_gap_weighted_by_voxels():
    # half the voxels at 0.95 with 70 % lesion, half at 0.05 with 30 % lesion: gap 0.25 everywhere
    probs = np.r_[np.full(1000, 0.95), np.full(1000, 0.05)]
    ref = np.r_[np.arange(1000) < 700, np.arange(1000) < 300]
    assert expected_calibration_error(reliability_counts(probs, ref)) == pytest.approx(0.25)
    # probability exactly 1 falls in the last bin, not outside
    assert expected_calibration_error(reliability_counts(np.ones(10), np.arange(10) < 6)) == pytest.approx(0.4)
    assert expected_calibration_error(reliability_counts(np.zeros(0), np.zeros(0, bool))) is None


def _calibration_folders(tmp_path, prob_value: float = 0.8, missed: int = 0):
    """Reference and prediction folders of two cases: 50 voxels at ``prob_value``, 30 of them reference lesion,
    plus ``missed`` reference-lesion voxels the model gives probability 0."""
    g = Geometry((16, 16, 4), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    for case in ("a", "b"):
        ref = np.zeros((4, 16, 16), np.uint8)
        probs = np.zeros(ref.shape, np.float32)
        probs[1, 2:7, 2:12] = prob_value  # 50 voxels
        ref[1, 2:5, 2:12] = 1  # 30 of them lesion
        ref[3, 0, :missed] = 1
        write_image(ref, g, tmp_path / "ref" / f"{case}.nii.gz")
        write_image((probs >= 0.5).astype(np.uint8), g, tmp_path / "pred" / f"{case}.nii.gz")
        write_image(probs, g, tmp_path / "pred" / f"{case}_prob.nii.gz")
    return 4 * 16 * 16


def test_evaluate_reports_known_calibration_from_probability_maps_beside_the_masks(tmp_path):
    voxels = _calibration_folders(tmp_path)
    summary = evaluate_folders(tmp_path / "ref", tmp_path / "pred", tmp_path / "report")
    cal = summary["calibration"]
    assert cal["n_cases"] == 2 and cal["cases_without_probabilities"] == []
    # p = 0.8 against a lesion fraction of 0.6 on 50 of the case's voxels, exactly right elsewhere
    assert cal["candidate_voxels"]["ece"] == pytest.approx(0.2, abs=1e-6)
    assert cal["all_voxels"]["ece"] == pytest.approx(0.2 * 50 / voxels, abs=1e-6)
    assert cal["all_voxels"]["voxels"] == 2 * voxels and cal["candidate_voxels"]["voxels"] == 100
    assert json.loads((tmp_path / "report" / "summary.json").read_text())["calibration"]["candidate_voxels"]["ece"] == pytest.approx(0.2, abs=1e-6)
    assert (tmp_path / "report" / "figures" / "reliability.png").stat().st_size > 5000
    html = (tmp_path / "report" / "report.html").read_text()
    assert "Calibration of lesion probabilities" in html and "0.2000" in html


def test_candidate_voxels_are_chosen_by_probability_so_missed_lesions_do_not_bias_them(tmp_path):
    voxels = _calibration_folders(tmp_path, missed=10)
    cal = evaluate_folders(tmp_path / "ref", tmp_path / "pred", tmp_path / "report")["calibration"]
    # the 50 voxels at 0.8 are judged alone: 10 missed voxels at probability 0 are not pulled into their bins
    assert cal["candidate_voxels"]["ece"] == pytest.approx(0.2, abs=1e-6) and cal["candidate_voxels"]["voxels"] == 100
    # but they count over all voxels: bin 0 holds voxels - 50 of which 10 are lesion
    assert cal["all_voxels"]["ece"] == pytest.approx((50 * 0.2 + 10) / voxels, abs=1e-6)


def test_evaluate_without_probability_maps_has_no_calibration_and_a_named_folder_without_them_is_an_error(tmp_path, capsys):
    _calibration_folders(tmp_path)
    for p in (tmp_path / "pred").glob("*_prob.nii.gz"):
        p.rename(tmp_path / p.name)
    summary = evaluate_folders(tmp_path / "ref", tmp_path / "pred", tmp_path / "report")
    assert summary["calibration"] is None
    assert "Calibration of lesion" not in (tmp_path / "report" / "report.html").read_text()
    (tmp_path / "empty").mkdir()
    code = evaluate_main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-prob", str(tmp_path / "empty"),
                          "-o", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert code == 2 and "no probability maps" in err and str(tmp_path / "empty") in err
    # -prob with the maps elsewhere finds them
    assert evaluate_main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-prob", str(tmp_path), "-o", str(tmp_path / "r3")]) == 0
    assert "ECE all voxels" in capsys.readouterr().out


def test_a_probability_map_outside_zero_to_one_is_an_error_naming_it(tmp_path, capsys):
    _calibration_folders(tmp_path, prob_value=1.5)
    code = evaluate_main(["-ref", str(tmp_path / "ref"), "-pred", str(tmp_path / "pred"), "-o", str(tmp_path / "report")])
    err = capsys.readouterr().err
    assert code == 2 and "a_prob.nii.gz" in err and "outside 0..1" in err
    assert not (tmp_path / "report" / "summary.json").exists()


def test_confidence_is_in_zero_one_and_mean_probability_at_least_the_threshold_on_a_random_map():
    """A predicted-like map: confidence lies in [0, 1] and mean probability at or above the threshold."""
    rng = np.random.default_rng(3)
    geometry = Geometry((20, 20, 5), (1.0, 1.0, 4.0), (0.0, 0.0, 0.0))
    probs = rng.random((5, 20, 20)).astype(np.float32) ** 3
    mask = (probs >= 0.5).astype(np.uint8)
    out = add_lesion_confidence(lesion_table(mask, geometry), mask, probs, geometry)
    assert len(out) > 3
    frame = pd.DataFrame(out)
    assert frame["confidence"].between(0, 1).all() and (frame["mean_probability"] >= 0.5).all()
