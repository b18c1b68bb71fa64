"""deepwml_predict end to end on synthetic scans: masks on the input's own grid (axis-aligned, LPS, oblique, DICOM),
lesion tables and summary, failed cases skipped with a non-zero exit, resume, parts, refusal to overwrite inputs.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import oblique_direction, tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import Geometry, read_image, write_image
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from test_dicom import UID_ROOT, write_dicom_series

AXIAL = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
LPS_FLIPPED = (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A threshold toy model (deterministic lesion masks) as a trained PLAN folder."""
    return write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")


def _case(folder: Path, name: str, seed: int = 0, direction=AXIAL, shape=(6, 72, 60), spacing=(0.9, 0.8, 6.0)):
    """Write image and reference label for one synthetic case; returns (image path, label)."""
    image, label, geometry = tiny_case(shape_zyx=shape, spacing_xyz=spacing, direction=direction, seed=seed, n_lesions=5)
    return write_image(image, geometry, folder / name), label


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return 2 * np.count_nonzero(a & b) / max(1, np.count_nonzero(a) + np.count_nonzero(b))


def _predict(*args) -> int:
    return predict_main([str(a) for a in args])


def _assert_same_grid(actual: Geometry, expected: Geometry) -> None:
    assert actual.size == expected.size
    assert np.allclose(actual.spacing, expected.spacing, atol=1e-6)
    assert np.allclose(actual.origin, expected.origin, atol=1e-4)
    assert np.allclose(actual.direction, expected.direction, atol=1e-6)


@pytest.mark.parametrize(
    "direction,ending",
    [(AXIAL, ".nii.gz"), (LPS_FLIPPED, ".nii.gz"), (oblique_direction(14), ".nii.gz"), (oblique_direction(-9), ".mha"), (LPS_FLIPPED, ".nrrd")],
    ids=["axial-nifti", "lps-nifti", "oblique-nifti", "oblique-mha", "lps-nrrd"],
)
def test_mask_and_probabilities_lie_on_the_inputs_own_grid(tmp_path, model_dir, direction, ending):
    path, label = _case(tmp_path / "in", f"scan{ending}", direction=direction)
    assert _predict("-i", path, "-o", tmp_path / "out", "-m", model_dir, "--save-probabilities") == 0
    image = read_image(path)
    mask = read_image(tmp_path / "out" / f"scan{ending}", dtype=None)
    probs = read_image(tmp_path / "out" / f"scan_prob{ending}", dtype=None)
    for out in (mask, probs):
        _assert_same_grid(out.geometry, image.geometry)
    assert mask.array.dtype == np.uint8 and set(np.unique(mask.array)) <= {0, 1}
    assert probs.array.dtype == np.float32 and 0 <= probs.array.min() and probs.array.max() <= 1
    # the toy model thresholds intensity, so its mask must find the phantom's lesions where they are
    assert _dice(mask.array, label) > 0.8
    assert np.array_equal(mask.array, (probs.array >= 0.5).astype(np.uint8))


def test_prediction_gives_the_callers_torch_thread_count_back(tmp_path, model_dir):
    """deepwml.inference.run.predict is a library call too (demo, recipe, benchmarks): it must not change torch globally."""
    import torch

    from deepwml.inference.run import PredictRequest, predict
    from deepwml.training.device import physical_cores

    path, _ = _case(tmp_path / "in", "scan.nii.gz")
    previous = torch.get_num_threads()
    mine = physical_cores() + 1  # not what the CPU set-up picks for prediction
    try:
        torch.set_num_threads(mine)
        report = predict(PredictRequest(input=path, output=tmp_path / "out", model_dir=model_dir, device="cpu"))
        assert report.predicted == 1
        assert torch.get_num_threads() == mine
    finally:
        torch.set_num_threads(previous)


def test_lesion_table_and_summary_describe_the_written_mask(tmp_path, model_dir):
    _case(tmp_path / "in", "a.nii.gz", seed=1)
    _case(tmp_path / "in", "b.nii.gz", seed=2, spacing=(0.5, 0.5, 5.0))
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir) == 0
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert summary["case_id"].tolist() == ["a", "b"] and (summary["status"] == "ok").all()
    for row in summary.itertuples():
        mask = read_image(tmp_path / "out" / f"{row.case_id}.nii.gz", dtype=None)
        lesions = pd.read_csv(tmp_path / "out" / f"{row.case_id}_lesions.csv")
        voxel_ml = np.prod(mask.geometry.spacing) / 1000
        assert row.total_lesion_volume_ml == pytest.approx(np.count_nonzero(mask.array) * voxel_ml, rel=1e-5)
        assert row.lesion_count == len(lesions) > 0 and lesions["voxels"].sum() == np.count_nonzero(mask.array)
        assert row.slice_thickness_mm == mask.geometry.spacing[2]
        areas = [float(a) for a in row.lesion_area_mm2_per_slice.split(";")]
        assert len(areas) == mask.array.shape[0]
        assert sum(areas) * row.slice_thickness_mm / 1000 == pytest.approx(row.total_lesion_volume_ml, rel=1e-3)
        assert (tmp_path / "out" / "qc" / f"{row.case_id}.png").stat().st_size > 1000


@pytest.mark.parametrize("direction", [AXIAL, oblique_direction(12)], ids=["axial", "oblique"])
def test_dicom_series_gets_a_nifti_mask_aligned_to_the_series(tmp_path, model_dir, direction):
    image, label, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), direction=direction, seed=4, n_lesions=5)
    write_dicom_series(tmp_path / "dicom" / "patient7", np.round(image * 10).astype(np.int16), geometry, UID_ROOT + "70.1")
    assert _predict("-i", tmp_path / "dicom", "-o", tmp_path / "out", "-m", model_dir) == 0
    mask = read_image(tmp_path / "out" / "patient7.nii.gz", dtype=None)
    _assert_same_grid(mask.geometry, read_image(tmp_path / "dicom" / "patient7").geometry)
    assert _dice(mask.array, label) > 0.8


def test_bad_cases_are_reported_and_skipped_while_the_rest_are_predicted(tmp_path, model_dir, capsys):
    _case(tmp_path / "in", "good.nii.gz")
    geometry = Geometry((16, 16, 4), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    nan = np.ones((4, 16, 16), np.float32)
    nan[0, 0, 0] = np.nan
    write_image(nan, geometry, tmp_path / "in" / "has_nan.nii.gz")
    write_image(np.zeros((4, 16, 16), np.float32), geometry, tmp_path / "in" / "empty.nii.gz")
    good = (tmp_path / "in" / "good.nii.gz").read_bytes()
    (tmp_path / "in" / "truncated.nii.gz").write_bytes(good[: len(good) // 2])
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir) == 1
    err = capsys.readouterr().err
    assert "3 case(s) failed" in err and all(n in err for n in ("has_nan.nii.gz", "empty.nii.gz", "truncated.nii.gz"))
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    assert summary.loc["good", "status"] == "ok" and (tmp_path / "out" / "good.nii.gz").exists()
    assert (summary.drop(index="good")["status"] == "failed").all()
    assert "NaN" in summary.loc["has_nan", "error"] and "empty" in summary.loc["empty", "error"]
    assert not (tmp_path / "out" / "has_nan.nii.gz").exists()


def test_finished_cases_are_skipped_on_a_second_run_unless_overwrite(tmp_path, model_dir, capsys):
    for i in range(2):
        _case(tmp_path / "in", f"c{i}.nii.gz", seed=i)
    out = tmp_path / "out"
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir) == 0
    first = pd.read_csv(out / "summary.csv")
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("c*")}
    (out / "qc" / "c1.png").unlink()  # an interrupted case: one output missing
    capsys.readouterr()
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir) == 0
    assert "1 case(s) predicted, 1 already done" in capsys.readouterr().out
    assert all(out.joinpath(n).stat().st_mtime_ns == t for n, t in stamps.items() if n.startswith("c0"))
    assert (out / "qc" / "c1.png").exists()
    pd.testing.assert_frame_equal(pd.read_csv(out / "summary.csv"), first)
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--overwrite") == 0
    assert "2 case(s) predicted, 0 already done" in capsys.readouterr().out
    assert out.joinpath("c0.nii.gz").stat().st_mtime_ns != stamps["c0.nii.gz"]


def test_resuming_with_another_model_or_threshold_is_refused_not_mixed(tmp_path, model_dir, capsys):
    """A folder whose finished cases one model made is not quietly completed by another: the summary would mix them."""
    for i in range(2):
        _case(tmp_path / "in", f"c{i}.nii.gz", seed=i)
    out = tmp_path / "out"
    assert _predict("-i", tmp_path / "in" / "c0.nii.gz", "-o", out, "-m", model_dir, "--no-qc") == 0
    marker = (out / ".deepwml_output.json").read_text()
    stamp = (out / "c0.nii.gz").stat().st_mtime_ns
    other = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "other", tiny_plan(), folds=(0,), kind="random", seed=7)
    capsys.readouterr()
    for args, named in ((["-m", other], f"-> {other}"), (["-m", model_dir, "--threshold", "0.3"], "threshold 0.5 -> 0.3")):
        assert _predict("-i", tmp_path / "in", "-o", out, "--no-qc", *args) == 2
        err = capsys.readouterr().err
        assert "holds 1 case(s) predicted with other settings" in err and named in err and "--overwrite" in err
        # refused before anything is written: the second case is not predicted, the first and the marker untouched
        assert not (out / "c1.nii.gz").exists() and (out / "c0.nii.gz").stat().st_mtime_ns == stamp
        assert (out / ".deepwml_output.json").read_text() == marker
    # calibrating it (deepwml_calibrate stores temperatures beside the weights) changes no mask: the weights decide
    import torch

    from deepwml.training.checkpoint import read_checkpoint

    path = model_dir / "fold_0" / "checkpoint_best.pth"
    torch.save({**read_checkpoint(path), "temperature": [1.3, 0.9]}, path)
    # and the same model moved elsewhere is the same model, wherever its folder lies
    moved = tmp_path / "moved" / "tiny"
    moved.parent.mkdir()
    os.rename(model_dir, moved)
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", moved, "--no-qc") == 0
    assert "1 case(s) predicted, 1 already done" in capsys.readouterr().out
    # --overwrite predicts every case with the new model and records it; then resuming with it is fine
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", other, "--no-qc", "--overwrite") == 0
    assert str(other) in (out / ".deepwml_output.json").read_text()
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", other, "--no-qc") == 0
    assert "0 case(s) predicted, 2 already done" in capsys.readouterr().out


def test_overwrite_if_changed_predicts_anew_only_a_folder_made_with_other_settings(tmp_path, model_dir, capsys):
    """--overwrite-if-changed (what the demo, the recipe and deepwml_finetune pass for their own folders, so that a
    run after an update does not stop on masks an earlier DeepWML made): a folder made with these settings resumes,
    one made otherwise is predicted anew in full with a note naming what changed, finished or not."""
    for i in range(2):
        _case(tmp_path / "in", f"c{i}.nii.gz", seed=i)
    out = tmp_path / "out"
    assert _predict("-i", tmp_path / "in" / "c0.nii.gz", "-o", out, "-m", model_dir, "--no-qc") == 0
    capsys.readouterr()
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--no-qc", "--overwrite-if-changed") == 0
    captured = capsys.readouterr()
    assert "1 case(s) predicted, 1 already done" in captured.out and "predicting every case anew" not in captured.err
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("c*.nii.gz")}
    # every case finished with threshold 0.5: asked for 0.3, both are predicted again (the weights read for it)
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--no-qc", "--threshold", "0.3",
                    "--overwrite-if-changed") == 0
    captured = capsys.readouterr()
    assert "2 case(s) predicted, 0 already done" in captured.out
    assert "2 finished case(s) were predicted with other settings (threshold 0.5 -> 0.3)" in captured.err
    assert all(out.joinpath(n).stat().st_mtime_ns != t for n, t in stamps.items())
    assert '"threshold": 0.3' in (out / ".deepwml_output.json").read_text()
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--no-qc", "--threshold", "0.3") == 0
    assert "0 case(s) predicted, 2 already done" in capsys.readouterr().out


def test_deepwml_finetune_segments_its_own_folder_anew_when_an_earlier_run_made_it_otherwise(tmp_path, model_dir):
    """The fine-tuning command's held-out and fold folders are its own: masks made with other settings (here another
    threshold; after an update, other defaults) are segmented anew instead of stopping the command."""
    from deepwml.pretrained.finetune_holdout import segment

    _case(tmp_path / "in", "c0.nii.gz")
    out = tmp_path / "holdout"
    segment(tmp_path / "in", out, (model_dir, None, "best"), "cpu", threshold=0.5)
    segment(tmp_path / "in", out, (model_dir, None, "best"), "cpu", threshold=0.3)
    assert '"threshold": 0.3' in (out / ".deepwml_output.json").read_text()


def test_parts_split_the_cases_without_overlap_or_gap(tmp_path, model_dir):
    names = [f"p{i}" for i in range(5)]
    for i, n in enumerate(names):
        _case(tmp_path / "in", f"{n}.nii.gz", seed=i, shape=(3, 48, 48))
    seen = []
    for k in range(2):
        assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--num-parts", 2, "--part-id", k, "--no-qc") == 0
        seen.append(pd.read_csv(tmp_path / "out" / f"summary_part{k}_of_2.csv")["case_id"].tolist())
    assert sorted(seen[0] + seen[1]) == names and not set(seen[0]) & set(seen[1])
    assert sorted(p.name for p in (tmp_path / "out").glob("p?.nii.gz")) == [f"{n}.nii.gz" for n in names]
    # a final run without parts finds everything done and writes the combined summary
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--no-qc") == 0
    assert pd.read_csv(tmp_path / "out" / "summary.csv")["case_id"].tolist() == names


def test_output_into_the_input_folder_is_refused_and_inputs_stay_untouched(tmp_path, model_dir, capsys):
    path, _ = _case(tmp_path / "in", "scan.nii.gz")
    before = path.read_bytes()
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "in", "-m", model_dir) == 2
    assert _predict("-i", path, "-o", tmp_path / "in", "-m", model_dir) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path / "in")) == ["scan.nii.gz"]


def test_model_named_by_dataset_and_plan_and_a_mismatched_model_is_a_clear_error(tmp_path, model_dir, capsys):
    path, _ = _case(tmp_path / "in", "scan.nii.gz")
    args = ("-i", path, "-o", tmp_path / "out", "-d", "999", "-p", "tiny", "--results", tmp_path / "results")
    assert _predict(*args) == 0 and (tmp_path / "out" / "scan.nii.gz").exists()
    edited = tiny_plan()
    edited.inference.threshold = 0.7
    edited.save(model_dir / "plans.json")
    assert _predict(*args, "--overwrite") == 2
    assert "plans.json changed after training" in capsys.readouterr().err
    assert _predict("-i", path, "-o", tmp_path / "out", "-m", model_dir, "-f", "3") == 2
    assert "fold 3 is missing" in capsys.readouterr().err


def test_a_case_that_cannot_be_written_fails_alone(tmp_path, model_dir, capsys):
    for i in range(2):
        _case(tmp_path / "in", f"w{i}.nii.gz", seed=i, shape=(3, 48, 48))
    (tmp_path / "out" / "qc" / "w0.png").mkdir(parents=True)  # a folder where w0's QC picture must go
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir) == 1
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    assert summary.loc["w0", "status"] == "failed" and summary.loc["w1", "status"] == "ok"
    assert not (tmp_path / "out" / "w0.nii.gz").exists()  # no mask: the next run predicts w0 again
    assert "w0" in capsys.readouterr().err


def test_threshold_sets_the_lesion_probability_of_the_mask_and_is_checked(tmp_path, model_dir, capsys):
    """--threshold T: the mask is exactly probability >= T (the plan's 0.5 otherwise); out-of-range values are one line."""
    path, _ = _case(tmp_path / "in", "scan.nii.gz")
    masks = {}
    for t in (None, 0.2, 0.9):
        out = tmp_path / f"out_{t}"
        assert _predict("-i", path, "-o", out, "-m", model_dir, "--save-probabilities", "--no-qc",
                        *(["--threshold", t] if t is not None else [])) == 0
        probs = read_image(out / "scan_prob.nii.gz", dtype=None).array
        masks[t] = read_image(out / "scan.nii.gz", dtype=None).array.astype(bool)
        assert np.array_equal(masks[t], probs >= (0.5 if t is None else t))
    assert masks[0.9].sum() < masks[None].sum() < masks[0.2].sum()
    for bad in ("0", "1", "1.5", "nan"):
        assert _predict("-i", path, "-o", tmp_path / "bad", "-m", model_dir, "--threshold", bad) == 2
        assert "--threshold must lie between 0 and 1" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_filter_lesions_by_volume_counts_ml_and_26_connected_lesions():
    """A lesion is dropped whole when its 26-connected volume is under the minimum; one of exactly the minimum stays."""
    from deepwml.inference.lesion_report import filter_lesions

    geometry = Geometry((20, 20, 4), (0.9, 0.9, 6.5), (0, 0, 0))  # 5.265 µl per voxel
    mask = np.zeros((4, 20, 20), np.uint8)
    mask[0, 2, 2] = 1  # 1 voxel: 5.3 µl
    mask[1, 10, 10] = mask[2, 11, 11] = 1  # 2 voxels touching by a corner across slices: one lesion, 10.5 µl
    mask[3, 15:17, 15:18] = 1  # 6 voxels: 31.6 µl
    np.testing.assert_array_equal(filter_lesions(mask, geometry, min_ml=0.0), mask)
    kept = filter_lesions(mask, geometry, min_ml=0.01)
    assert kept.dtype == np.uint8 and kept.sum() == 8 and kept[0, 2, 2] == 0 and kept[2, 11, 11] == 1
    assert filter_lesions(mask, geometry, min_ml=2 * geometry.voxel_volume_ml).sum() == 8  # exactly the minimum: kept
    assert filter_lesions(mask, geometry, min_ml=0.02).sum() == 6
    assert filter_lesions(mask, geometry, min_ml=1.0).sum() == 0


def _assert_resume_refused_and_values_checked(tmp_path: Path, path: Path, model: Path, out: str, used: tuple, bad_values: tuple,
                                              message: str, capsys) -> None:
    """Resuming ``out`` (made with ``used`` = (option, value)) without the option is refused naming the change; each
    bad value of the option is one line and creates nothing."""
    option, value = used
    capsys.readouterr()
    assert _predict("-i", path, "-o", tmp_path / out, "-m", model, "--no-qc", "--report") == 2
    assert f"{option[2:].replace('-', '_')} {value!r} -> 0.0" in capsys.readouterr().err
    for bad in bad_values:
        assert _predict("-i", path, "-o", tmp_path / "bad", "-m", model, option, bad) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_min_lesion_ml_drops_small_lesions_from_mask_table_and_summary(tmp_path, model_dir, capsys):
    """--min-lesion-ml V: the mask, lesion table and summary lose exactly the lesions under V ml; the report says so;
    resuming with another V is refused; a bad value is one line."""
    path, _ = _case(tmp_path / "in", "scan.nii.gz")
    assert _predict("-i", path, "-o", tmp_path / "all", "-m", model_dir, "--no-qc") == 0
    table = pd.read_csv(tmp_path / "all" / "scan_lesions.csv")
    assert len(table) >= 2
    cut = float(table["volume_ml"].median())
    assert _predict("-i", path, "-o", tmp_path / "big", "-m", model_dir, "--no-qc", "--min-lesion-ml", cut, "--report") == 0
    big = pd.read_csv(tmp_path / "big" / "scan_lesions.csv")
    expected = table[table["volume_ml"] >= cut * (1 - 1e-9)]
    assert len(big) == len(expected) < len(table)
    np.testing.assert_allclose(sorted(big["volume_ml"]), sorted(expected["volume_ml"]), rtol=1e-6)
    mask = read_image(tmp_path / "big" / "scan.nii.gz", dtype=None).array
    geometry = read_image(path).geometry
    summary = pd.read_csv(tmp_path / "big" / "summary.csv").iloc[0]
    assert summary["lesion_count"] == len(big)
    assert summary["total_lesion_volume_ml"] == pytest.approx(np.count_nonzero(mask) * geometry.voxel_volume_ml)
    assert summary["total_lesion_volume_ml"] == pytest.approx(big["volume_ml"].sum(), rel=1e-5)
    assert f"{cut:g} ml (smaller ones dropped)" in (tmp_path / "big" / "report" / "scan.html").read_text(encoding="utf-8")
    _assert_resume_refused_and_values_checked(tmp_path, path, model_dir, "big", ("--min-lesion-ml", cut), ("-0.1", "nan", "inf"),
                                              "--min-lesion-ml must be a volume of 0 ml or more", capsys)


def test_filter_lesions_by_peak_keeps_a_lesion_whole_when_its_core_reaches_the_minimum():
    """Hysteresis: a 26-connected lesion stays whole when its most probable voxel reaches the minimum, else goes whole."""
    from deepwml.inference.lesion_report import filter_lesions

    mask = np.zeros((3, 12, 12), np.uint8)
    probs = np.zeros(mask.shape, np.float32)
    mask[0, 1:4, 1:4] = 1
    probs[0, 1:4, 1:4] = 0.55
    probs[0, 2, 2] = 0.8  # a confident core: the whole lesion stays
    mask[1, 8, 8] = mask[2, 9, 9] = 1  # touching by a corner across slices: one lesion, peak 0.6
    probs[1, 8, 8], probs[2, 9, 9] = 0.52, 0.6
    probs[2, 0, 11] = 0.99  # outside the mask: no lesion is made of it
    np.testing.assert_array_equal(filter_lesions(mask, probs=probs, min_peak=0.0), mask)
    kept = filter_lesions(mask, probs=probs, min_peak=0.7)
    assert kept.dtype == np.uint8 and kept.sum() == 9 and kept[0, 1, 1] == 1 and kept[2, 9, 9] == 0
    assert filter_lesions(mask, probs=probs, min_peak=0.6).sum() == 11  # a peak of exactly the minimum: kept
    assert filter_lesions(mask, probs=probs, min_peak=0.9).sum() == 0


def test_min_lesion_peak_drops_lesions_without_a_confident_core_from_mask_table_and_summary(tmp_path, capsys):
    """--min-lesion-peak P: exactly the lesions whose highest probability is under P leave the mask, lesion table and
    summary; the report says so; resuming with another P is refused; a bad value is one line."""
    from scipy import ndimage

    from deepwml.inference.lesion_report import label_lesions

    # a low gain grades the toy model's probabilities by lesion brightness, so lesions have different peaks
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), gain=0.5)
    path, _ = _case(tmp_path / "in", "scan.nii.gz")
    assert _predict("-i", path, "-o", tmp_path / "all", "-m", model, "--no-qc", "--save-probabilities") == 0
    probs = read_image(tmp_path / "all" / "scan_prob.nii.gz", dtype=None).array
    labels, count = label_lesions(read_image(tmp_path / "all" / "scan.nii.gz", dtype=None).array)
    peak_of = np.asarray(ndimage.maximum(probs, labels, index=np.arange(1, count + 1)))
    peaks = np.sort(peak_of)
    assert count >= 2 and peaks[1] - peaks[0] > 0.005, peaks
    cut = float(peaks[0] + peaks[1]) / 2
    assert _predict("-i", path, "-o", tmp_path / "sure", "-m", model, "--no-qc", "--min-lesion-peak", cut, "--report") == 0
    mask = read_image(tmp_path / "sure" / "scan.nii.gz", dtype=None).array
    np.testing.assert_array_equal(mask > 0, np.concatenate([[False], peak_of >= cut])[labels])
    table = pd.read_csv(tmp_path / "sure" / "scan_lesions.csv")
    summary = pd.read_csv(tmp_path / "sure" / "summary.csv").iloc[0]
    assert len(table) == summary["lesion_count"] == count - 1
    assert summary["total_lesion_volume_ml"] == pytest.approx(np.count_nonzero(mask) * read_image(path).geometry.voxel_volume_ml)
    assert f"peak probability ≥ {cut:g}" in (tmp_path / "sure" / "report" / "scan.html").read_text(encoding="utf-8")
    _assert_resume_refused_and_values_checked(tmp_path, path, model, "sure", ("--min-lesion-peak", cut), ("-0.1", "1", "nan"),
                                              "--min-lesion-peak must be a probability from 0 up to (not including) 1", capsys)
    # a peak at or under the mask threshold keeps every lesion, and the run says so
    assert _predict("-i", path, "-o", tmp_path / "low", "-m", model, "--no-qc", "--min-lesion-peak", "0.5") == 0
    assert "--min-lesion-peak 0.5 drops nothing" in capsys.readouterr().err
    np.testing.assert_array_equal(read_image(tmp_path / "low" / "scan.nii.gz", dtype=None).array > 0, labels > 0)


def test_a_folder_predicted_before_min_lesion_ml_existed_resumes_as_keeping_every_lesion(tmp_path, model_dir, capsys):
    """Markers written before --min-lesion-ml / --min-lesion-peak lack their keys: they kept every lesion, so a run without it resumes them."""
    import json

    for i in range(2):
        _case(tmp_path / "in", f"c{i}.nii.gz", seed=i)
    out = tmp_path / "out"
    assert _predict("-i", tmp_path / "in" / "c0.nii.gz", "-o", out, "-m", model_dir, "--no-qc") == 0
    marker = json.loads((out / ".deepwml_output.json").read_text())
    del marker["predicted_with"]["min_lesion_ml"], marker["predicted_with"]["min_lesion_peak"]
    (out / ".deepwml_output.json").write_text(json.dumps(marker))
    capsys.readouterr()
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--no-qc") == 0
    assert "1 case(s) predicted, 1 already done" in capsys.readouterr().out


def test_a_case_finished_before_a_run_over_other_inputs_keeps_its_anatomy_figures(tmp_path):
    """summary.csv lists one run's cases; the anatomy figures of a case finished earlier, whose map was not saved,
    must survive a run over other inputs into the same folder (the shipped lesion and anatomy models)."""
    for folder, name, seed in (("a", "A", 0), ("b", "B", 1), ("ab", "A", 0), ("ab", "B", 1)):
        image, _, geometry = tiny_case(seed=seed)
        write_image(image, geometry, tmp_path / folder / f"{name}.nii.gz")
    out = tmp_path / "out"
    anatomy_columns = ["periventricular_count", "deep_count", "fazekas_periventricular"]
    assert predict_main(["-i", str(tmp_path / "a"), "-o", str(out), "--device", "cpu"]) == 0
    first = pd.read_csv(out / "summary.csv").set_index("case_id").loc["A", anatomy_columns]
    assert first.notna().all()
    assert predict_main(["-i", str(tmp_path / "b"), "-o", str(out), "--device", "cpu"]) == 0
    assert list(pd.read_csv(out / "summary.csv")["case_id"]) == ["B"]
    assert predict_main(["-i", str(tmp_path / "ab"), "-o", str(out), "--device", "cpu"]) == 0
    both = pd.read_csv(out / "summary.csv").set_index("case_id")
    assert both.loc["A", anatomy_columns].tolist() == first.tolist() and both.loc["B", anatomy_columns].notna().all()
    # predicted anew without the anatomy map, a case's old figures (of another mask) are not brought back
    assert predict_main(["-i", str(tmp_path / "a"), "-o", str(out), "--device", "cpu", "--overwrite", "--no-anatomy"]) == 0
    # (with the anatomy map only when it keeps the lesions outside the brain and in the cortex and shows the lesion
    # model the whole scan: the masks of a run without the map do)
    assert predict_main(["-i", str(tmp_path / "ab"), "-o", str(out), "--device", "cpu", "--keep-outside-brain",
                         "--min-cortex-contrast", "0", "--no-skull-strip"]) == 0
    again = pd.read_csv(out / "summary.csv").set_index("case_id")
    assert again.loc["A", anatomy_columns].isna().all() and again.loc["B", anatomy_columns].notna().all()
