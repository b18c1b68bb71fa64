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
from deepwml.inference.confidence import CONFIDENCE_COLUMNS, binary_entropy
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


def test_the_written_uncertainty_map_is_the_entropy_rounded_even_where_its_logarithms_are_skipped():
    """uncertainty_map skips probabilities within NEGLIGIBLE_PROBABILITY of 0 or 1 (most of a trained model's head):
    what CASE_uncertainty holds is still the binary entropy at 1/256 steps, voxel for voxel."""
    from deepwml.inference.confidence import NEGLIGIBLE_PROBABILITY, quantised, uncertainty_map

    rng = np.random.default_rng(7)
    p = np.concatenate([10.0 ** rng.uniform(-9, 0, 200_000), 1 - 10.0 ** rng.uniform(-7, -0.3, 100_000),
                        NEGLIGIBLE_PROBABILITY * np.array([0.999, 1.0, 1.001, 1.5]), [0.0, 1.0, 0.5]]).astype(np.float32)
    fast = uncertainty_map(p)
    assert np.array_equal(quantised(fast), quantised(binary_entropy(p)))
    near = (p > NEGLIGIBLE_PROBABILITY) & (p < 1 - NEGLIGIBLE_PROBABILITY)
    assert np.array_equal(fast[near], binary_entropy(p)[near]) and (fast[~near] == 0).all()
    assert ((p <= NEGLIGIBLE_PROBABILITY) | (p >= 1 - NEGLIGIBLE_PROBABILITY)).mean() > 0.3  # the skip did happen


def test_each_lesion_gets_the_confidence_of_its_own_voxels():
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
    out = lesion_table(mask, geometry, probs=probs)
    assert list(out.columns) == list(table.columns) + CONFIDENCE_COLUMNS
    pd.testing.assert_frame_equal(out[table.columns], table)
    assert out["voxels"].tolist() == [18, 4, 1]
    assert out["mean_probability"].tolist() == pytest.approx([0.99, (3 * 0.6 + 0.8) / 4, 0.9], rel=1e-6)
    assert out["confidence"].tolist() == pytest.approx([1 - _h(0.99), 1 - (3 * _h(0.6) + _h(0.8)) / 4, 1 - _h(0.9)], rel=1e-5)


def test_confidence_of_many_lesions_of_equal_size_and_span_is_each_ones_own():
    """Hundreds of one-voxel lesions on one slice (what an untrained model gives) share voxel count and slice span:
    each row still gets the probability at its own centroid (the rows are told apart by construction, not matched)."""
    rng = np.random.default_rng(0)
    geometry = Geometry((64, 64, 3), (0.5, 0.5, 6.0), (-16.0, -16.0, 0.0))
    mask = np.zeros((3, 64, 64), np.uint8)
    mask[1, ::2, ::2] = 1  # 1024 isolated voxels, 26-connectivity never joins them
    probs = np.where(mask > 0, rng.uniform(0.5, 1.0, mask.shape), 0.0).astype(np.float32)
    out = lesion_table(mask, geometry, probs=probs)
    assert len(out) == 1024 and (out["voxels"] == 1).all()
    # identity direction: index = (world - origin) / spacing
    index = (out[["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].to_numpy() - geometry.origin) / geometry.spacing
    x, y, z = np.round(index).astype(int).T
    assert out["mean_probability"].to_numpy() == pytest.approx(probs[z, y, x].astype(np.float64), rel=1e-6)


def test_no_lesion_gives_the_confidence_columns_and_no_rows():
    geometry = Geometry((8, 8, 3), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    mask = np.zeros((3, 8, 8), np.uint8)
    out = lesion_table(mask, geometry, probs=np.zeros(mask.shape, np.float32))
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
    out = lesion_table(mask, geometry, probs=probs)
    assert len(out) > 3
    frame = pd.DataFrame(out)
    assert frame["confidence"].between(0, 1).all() and (frame["mean_probability"] >= 0.5).all()
