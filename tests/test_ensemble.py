"""deepwml_ensemble: averaging the probability maps of several deepwml_predict runs, whatever their models' plans."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepwml.cli.ensemble import main as ensemble_main
from deepwml.imageio import Geometry, read_image, read_label, write_image
from deepwml.inference.ensemble import ENSEMBLE_KEY, ensemble
from deepwml.inference.lesion_report import lesion_table
from deepwml.inference.output_folder import MARKER_NAME
from deepwml.inference.run import PredictRequest, predict
from deepwml.utils.errors import DeepWMLError
from deepwml_testing.toy_models import tiny_plan, write_model_dir

from conftest import tiny_case

SHAPE = (4, 20, 24)  # z, y, x
GEOMETRY = Geometry((24, 20, 4), (0.9, 0.9, 6.5), (-90.0, 12.5, -30.0),
                    (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0))


def _regions():
    """Two boxes: r1 in slice 1, r2 in slice 2 (numpy z, y, x)."""
    r1 = np.zeros(SHAPE, bool)
    r1[1, 2:6, 3:8] = True
    r2 = np.zeros(SHAPE, bool)
    r2[2, 10:13, 10:19] = True
    return r1, r2


def _write_maps(folder: Path, values: dict, cases=("case1", "case2"), name="{case}_prob.nii.gz",
                geometry: Geometry = GEOMETRY, threshold=None) -> Path:
    """Probability maps: background 0.1, each region of ``values`` set to its value; a deepwml_predict marker
    recording ``threshold`` when given."""
    r1, r2 = _regions()
    for case in cases:
        p = np.full(SHAPE, 0.1, np.float32)
        p[r1], p[r2] = values["r1"], values["r2"]
        write_image(p, geometry, folder / name.format(case=case))
    if threshold is not None:
        (folder / MARKER_NAME).write_text(json.dumps({"written_by": "deepwml_predict", "predicted_with": {"threshold": threshold}}))
    return folder


@pytest.fixture
def two_runs(tmp_path):
    a = _write_maps(tmp_path / "a", {"r1": 0.8, "r2": 0.2})
    b = _write_maps(tmp_path / "b", {"r1": 0.3, "r2": 0.9})
    return a, b


def test_equal_weights_average_the_maps_and_keep_the_inputs_grid(two_runs, tmp_path):
    a, b = two_runs
    report = ensemble([a, b], tmp_path / "out", save_probabilities=True, progress=False)
    assert report.written == 2 and not report.failed and report.weights == [0.5, 0.5] and report.threshold == 0.5
    r1, r2 = _regions()
    mask = read_label(tmp_path / "out" / "case1.nii.gz")
    # 0.55 in both regions (lesion), 0.1 elsewhere
    np.testing.assert_array_equal(mask.array == 1, r1 | r2)
    assert not mask.geometry.mismatches(GEOMETRY)
    probs = read_image(tmp_path / "out" / "case1_prob.nii.gz").array
    np.testing.assert_allclose(probs[r1], 0.55, atol=1e-6)
    np.testing.assert_allclose(probs[~(r1 | r2)], 0.1, atol=1e-6)
    lesions = pd.read_csv(tmp_path / "out" / "case1_lesions.csv")
    assert list(lesions["voxels"]) == [27, 20] and "contrast" not in lesions  # no scans given
    np.testing.assert_allclose(lesions["mean_probability"], 0.55, atol=1e-5)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv")
    assert list(summary["case_id"]) == ["case1", "case2"] and set(summary["status"]) == {"ok"}
    np.testing.assert_allclose(summary["total_lesion_volume_ml"], 47 * 0.9 * 0.9 * 6.5 / 1000, rtol=1e-6)


def test_weights_decide_which_model_wins(two_runs, tmp_path):
    a, b = two_runs
    report = ensemble([a, b], tmp_path / "out", weights=[3, 1], progress=False)
    assert report.weights == [0.75, 0.25]
    r1, _ = _regions()
    # r1: 0.75 * 0.8 + 0.25 * 0.3 = 0.675 (lesion); r2: 0.75 * 0.2 + 0.25 * 0.9 = 0.375 (not)
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "case2.nii.gz").array == 1, r1)


def test_min_lesion_ml_drops_the_small_lesions_of_the_average(two_runs, tmp_path):
    a, b = two_runs
    voxel_ml = 0.9 * 0.9 * 6.5 / 1000
    report = ensemble([a, b], tmp_path / "out", min_lesion_ml=21 * voxel_ml, progress=False)  # r1 20 voxels, r2 27
    _, r2 = _regions()
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "case1.nii.gz").array == 1, r2)
    assert list(pd.read_csv(tmp_path / "out" / "case1_lesions.csv")["voxels"]) == [27]
    assert report.summaries[0].lesion_count == 1
    with pytest.raises(DeepWMLError, match="--min-lesion-ml must be a volume of 0 ml or more"):
        ensemble([a, b], tmp_path / "bad", min_lesion_ml=-1.0, progress=False)
    with pytest.raises(DeepWMLError, match="other inputs or settings"):
        ensemble([a, b], tmp_path / "out", progress=False)


def test_threshold_is_the_one_the_runs_recorded_or_the_one_given(tmp_path):
    a = _write_maps(tmp_path / "a", {"r1": 0.8, "r2": 0.2}, threshold=0.6)
    b = _write_maps(tmp_path / "b", {"r1": 0.3, "r2": 0.9}, threshold=0.6)
    report = ensemble([a, b], tmp_path / "out", progress=False)
    assert report.threshold == 0.6
    assert not read_label(tmp_path / "out" / "case1.nii.gz").array.any()  # 0.55 < 0.6
    report = ensemble([a, b], tmp_path / "out2", threshold=0.5, progress=False)
    assert read_label(tmp_path / "out2" / "case1.nii.gz").array.sum() == 47
    c = _write_maps(tmp_path / "c", {"r1": 0.3, "r2": 0.9}, threshold=0.4)
    with pytest.raises(DeepWMLError, match="different thresholds.*--threshold"):
        ensemble([a, c], tmp_path / "out3", progress=False)


def test_bids_named_maps_give_bids_named_outputs(tmp_path):
    name = "{case}_label-WMH_probseg.nii.gz"
    a = _write_maps(tmp_path / "a", {"r1": 0.8, "r2": 0.2}, cases=("sub-01_ses-2",), name=name)
    b = _write_maps(tmp_path / "b", {"r1": 0.3, "r2": 0.9}, cases=("sub-01_ses-2",), name=name)
    ensemble([a, b], tmp_path / "out", save_probabilities=True, progress=False)
    names = sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith("."))
    assert names == ["sub-01_ses-2_desc-wmh_lesions.csv", "sub-01_ses-2_desc-wmh_mask.nii.gz",
                     "sub-01_ses-2_label-WMH_probseg.nii.gz", "summary.csv"]


@pytest.mark.parametrize("problem, message", [
    ("missing", r"b: lacks 1 case\(s\) \(case2\) that .*a holds"),
    ("extra", r"b: holds 1 case\(s\) \(case3\) that .*a lacks"),
    ("empty", r"b: holds no probability maps"),
    ("one input", r"at least two input folders"),
    ("twice", r"given twice"),
    ("weights", r"--weights gives 3 weight\(s\) for 2"),
    ("negative", r"--weights must be finite, non-negative"),
    ("threshold", r"--threshold must lie in \(0, 1\)"),
    ("inside", r"lies inside the input folder"),
])
def test_user_errors_name_the_folder_and_the_problem(two_runs, tmp_path, problem, message):
    a, b = two_runs
    folders, kwargs, out = [a, b], {}, tmp_path / "out"
    if problem == "missing":
        (b / "case2_prob.nii.gz").unlink()
    elif problem == "extra":
        _write_maps(b, {"r1": 0.3, "r2": 0.9}, cases=("case3",))
    elif problem == "empty":
        for p in b.iterdir():
            p.unlink()
    elif problem == "one input":
        folders = [a]
    elif problem == "twice":
        folders = [a, a]
    elif problem == "weights":
        kwargs["weights"] = [1, 1, 1]
    elif problem == "negative":
        kwargs["weights"] = [1, -1]
    elif problem == "threshold":
        kwargs["threshold"] = 1.0
    elif problem == "inside":
        out = a / "ens"
    with pytest.raises(DeepWMLError, match=message):
        ensemble(folders, out, progress=False, **kwargs)
    assert not (tmp_path / "out").exists()  # refused before anything is written


@pytest.mark.parametrize("problem, message", [
    ("grid", r"case1_prob.nii.gz: is not on the grid of .*case1_prob.nii.gz \(spacing"),
    ("range", r"case1_prob.nii.gz: values .*1.7 are not probabilities"),
    ("nan", r"case1_prob.nii.gz: contains 3 NaN/Inf voxels"),
    ("corrupt", r"case1_prob.nii.gz"),
])
def test_a_bad_map_fails_its_case_only_and_leaves_no_mask(two_runs, tmp_path, capsys, problem, message):
    a, b = two_runs
    bad = b / "case1_prob.nii.gz"
    p = read_image(bad).array
    if problem == "grid":
        write_image(p, Geometry(GEOMETRY.size, (1.0, 1.0, 6.5), GEOMETRY.origin, GEOMETRY.direction), bad)
    elif problem == "range":
        p[0, 0, :3] = 1.7
        write_image(p, GEOMETRY, bad)
    elif problem == "nan":
        p[0, 0, :3] = np.nan
        write_image(p, GEOMETRY, bad)
    else:
        bad.write_bytes(bad.read_bytes()[:60])
    code = ensemble_main(["-i", str(a), str(b), "-o", str(tmp_path / "out")])
    assert code == 1
    err = capsys.readouterr().err
    assert "failed: case1:" in err and re.search(message, err)
    assert not (tmp_path / "out" / "case1.nii.gz").exists() and (tmp_path / "out" / "case2.nii.gz").is_file()
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    assert summary.loc["case1", "status"] == "failed" and summary.loc["case2", "status"] == "ok"
    assert not [p for p in (tmp_path / "out").iterdir() if ".tmp" in p.name]


def test_a_case_whose_outputs_cannot_be_written_fails_alone(two_runs, tmp_path):
    a, b = two_runs
    (tmp_path / "out" / "case1_lesions.csv").mkdir(parents=True)  # a folder where case1's lesion table must go
    report = ensemble([a, b], tmp_path / "out", progress=False)
    assert [s.status for s in report.summaries] == ["failed", "ok"] and "case1_lesions.csv" in report.summaries[0].error
    assert not (tmp_path / "out" / "case1.nii.gz").exists() and (tmp_path / "out" / "case2.nii.gz").is_file()


def test_images_give_qc_pictures_and_a_scan_on_another_grid_fails_its_case(two_runs, tmp_path):
    a, b = two_runs
    scan = np.random.default_rng(0).normal(100, 10, SHAPE).astype(np.float32)
    write_image(scan, GEOMETRY, tmp_path / "scans" / "case1.nii.gz")
    write_image(scan, Geometry(GEOMETRY.size, (1.0, 1.0, 6.5), GEOMETRY.origin, GEOMETRY.direction),
                tmp_path / "scans" / "case2.nii.gz")
    report = ensemble([a, b], tmp_path / "out", images=tmp_path / "scans", progress=False)
    assert (tmp_path / "out" / "qc" / "case1.png").is_file()
    # the scans give each lesion its contrast, as lesion_table measures it on the mask written
    mask = read_label(tmp_path / "out" / "case1.nii.gz").array
    expected = lesion_table(mask, GEOMETRY, image=scan)["contrast"]
    np.testing.assert_allclose(pd.read_csv(tmp_path / "out" / "case1_lesions.csv")["contrast"], expected, rtol=1e-5)
    assert [s.status for s in report.summaries] == ["ok", "failed"]
    assert "case2.nii.gz: is not the scan of" in report.summaries[1].error and "spacing" in report.summaries[1].error
    assert not (tmp_path / "out" / "case2.nii.gz").exists()


def test_a_second_run_resumes_and_other_settings_need_overwrite(two_runs, tmp_path, capsys):
    a, b = two_runs
    out = tmp_path / "out"
    assert ensemble_main(["-i", str(a), str(b), "-o", str(out)]) == 0
    (out / "case2.nii.gz").unlink()
    report = ensemble([a, b], out, progress=False)
    assert (report.written, report.resumed) == (1, 1)
    assert list(pd.read_csv(out / "summary.csv")["lesion_count"]) == [2, 2]
    assert ensemble_main(["-i", str(a), str(b), "-o", str(out), "--weights", "3", "1"]) == 2
    assert "other inputs or settings" in capsys.readouterr().err
    report = ensemble([a, b], out, weights=[3, 1], overwrite=True, progress=False)
    assert report.written == 2 and list(pd.read_csv(out / "summary.csv")["lesion_count"]) == [1, 1]


def test_command_line_prints_one_line_and_exits_2_on_a_user_error(two_runs, tmp_path, capsys):
    a, _ = two_runs
    assert ensemble_main(["-i", str(a), str(tmp_path / "nowhere"), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nowhere: does not exist" in err[0]


def test_maps_of_two_models_of_different_plans_average_on_the_input_grid(tmp_path):
    """Real deepwml_predict runs of two plans (matrix 64 and 48) on one scan: their maps are averaged on the scan's
    grid, the ensemble agrees where both models agree, and weights 1, 0 give the first model's mask."""
    image, _, geometry = tiny_case(shape_zyx=(5, 70, 60), seed=4, n_lesions=4)
    write_image(image, geometry, tmp_path / "in" / "scan.nii.gz")
    runs = []
    for k, matrix in enumerate((64, 48)):
        model = write_model_dir(tmp_path / "models" / "Dataset999_Toy" / f"tiny{matrix}", tiny_plan(matrix=matrix, name=f"tiny{matrix}"))
        out = tmp_path / f"pred{k}"
        report = predict(PredictRequest(input=tmp_path / "in", output=out, model_dir=model, save_probabilities=True,
                                        write_qc=False, anatomy=False))
        assert not report.failed
        runs.append(out)
    masks = [read_label(r / "scan.nii.gz").array for r in runs]
    assert masks[0].any() and masks[1].any() and not np.array_equal(masks[0], masks[1])
    report = ensemble(runs, tmp_path / "both", save_probabilities=True, progress=False, images=tmp_path / "in")
    assert report.threshold == 0.5 and not report.failed  # both runs recorded their plans' 0.5
    assert (tmp_path / "both" / "qc" / "scan.png").stat().st_size > 1000  # the mask outlined on the scan
    both = read_label(tmp_path / "both" / "scan.nii.gz")
    assert not both.geometry.mismatches(geometry)
    probs = [read_image(r / "scan_prob.nii.gz").array for r in runs]
    np.testing.assert_allclose(read_image(tmp_path / "both" / "scan_prob.nii.gz").array, (probs[0] + probs[1]) / 2, atol=1e-6)
    # where both models agree the ensemble agrees; it never calls a voxel neither model calls
    agree = masks[0] == masks[1]
    np.testing.assert_array_equal(both.array[agree], masks[0][agree])
    weighted = ensemble(runs, tmp_path / "first", weights=[1, 0], progress=False)
    assert not weighted.failed
    np.testing.assert_array_equal(read_label(tmp_path / "first" / "scan.nii.gz").array, masks[0])
    (tmp_path / "in" / "scan.nii.gz").rename(tmp_path / "in" / "other.nii.gz")
    with pytest.raises(DeepWMLError, match=r"in: holds no scan of 1 case\(s\) \(scan\)"):
        ensemble(runs, tmp_path / "qc_missing", progress=False, images=tmp_path / "in")
    # the ensemble folder is DeepWML's output: a later deepwml_predict on its parent never reads it as input
    assert json.loads((tmp_path / "both" / MARKER_NAME).read_text())["written_by"] == "deepwml_ensemble"


def test_min_lesion_peak_keeps_only_lesions_of_the_average_with_a_confident_core(two_runs, tmp_path):
    a, b = two_runs
    # weights 1.2 : 1 average r1 to (1.2 * 0.8 + 0.3) / 2.2 = 0.573 and r2 to (1.2 * 0.2 + 0.9) / 2.2 = 0.518: both lesion
    report = ensemble([a, b], tmp_path / "out", weights=[1.2, 1], min_lesion_peak=0.55, progress=False)
    r1, _ = _regions()
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "case1.nii.gz").array == 1, r1)
    assert report.summaries[0].lesion_count == 1
    # a folder averaged without it keeps every lesion, as before the option existed
    ensemble([a, b], tmp_path / "all", weights=[1.2, 1], progress=False)
    assert "min_lesion_peak" not in json.loads((tmp_path / "all" / MARKER_NAME).read_text())[ENSEMBLE_KEY]
    assert read_label(tmp_path / "all" / "case1.nii.gz").array.sum() == 47
    with pytest.raises(DeepWMLError, match="--min-lesion-peak must be a probability"):
        ensemble([a, b], tmp_path / "bad", min_lesion_peak=1.0, progress=False)
    with pytest.raises(DeepWMLError, match="other inputs or settings"):
        ensemble([a, b], tmp_path / "out", weights=[1.2, 1], progress=False)


def test_the_first_folders_anatomy_maps_give_locations_and_drop_lesions_outside_their_brain(two_runs, tmp_path, capsys):
    """With deepwml_predict --save-anatomy's maps in the first folder, the ensemble does what deepwml_predict does:
    lesions with no voxel in their brain (grown 3 mm) go, unless --keep-outside-brain; the rest get locations."""
    from deepwml.anatomy.labels import BACKGROUND, WHITE_MATTER

    a, b = two_runs
    anatomy = np.full(SHAPE, BACKGROUND, np.uint8)
    anatomy[:, :, :6] = WHITE_MATTER  # r1 (x 3-7) lies in it; r2 (x 10-18) 4.5 mm beyond its edge
    for case in ("case1", "case2"):
        write_image(anatomy, GEOMETRY, a / f"{case}_anatomy.nii.gz")
    r1, r2 = _regions()
    report = ensemble([a, b], tmp_path / "out", progress=False)
    assert report.outside_brain_dropped and "lesions outside their brain dropped" in report.describe()
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "case1.nii.gz").array == 1, r1)
    lesions = pd.read_csv(tmp_path / "out" / "case1_lesions.csv")
    assert list(lesions["voxels"]) == [20] and "location" in lesions.columns
    assert json.loads((tmp_path / "out" / MARKER_NAME).read_text())[ENSEMBLE_KEY]["outside_brain_dropped"] is True
    # summary.csv counts the dropped lesions per case, as deepwml_predict's does
    assert list(pd.read_csv(tmp_path / "out" / "summary.csv")["lesions_dropped_outside_brain"]) == [1, 1]
    # a second run resumes with the same figures (the count from the summary that listed it); keeping them is another
    # setting
    again = ensemble([a, b], tmp_path / "out", progress=False)
    assert again.resumed == 2 and again.summaries[0].anatomy == report.summaries[0].anatomy
    assert list(pd.read_csv(tmp_path / "out" / "summary.csv")["lesions_dropped_outside_brain"]) == [1, 1]
    with pytest.raises(DeepWMLError, match="other inputs or settings"):
        ensemble([a, b], tmp_path / "out", keep_outside_brain=True, progress=False)
    assert ensemble_main(["-i", str(a), str(b), "-o", str(tmp_path / "kept"), "--keep-outside-brain"]) == 0
    assert "dropped" not in capsys.readouterr().out
    np.testing.assert_array_equal(read_label(tmp_path / "kept" / "case1.nii.gz").array == 1, r1 | r2)
    assert "lesions_dropped_outside_brain" not in pd.read_csv(tmp_path / "kept" / "summary.csv").columns
    # some cases with a map and others without is refused, naming the folder
    (a / "case2_anatomy.nii.gz").unlink()
    with pytest.raises(DeepWMLError, match=r"anatomy maps of some cases but not of 1 case\(s\) \(case2\)") as e:
        ensemble([a, b], tmp_path / "mixed", progress=False)
    assert str(a) in str(e.value)


def test_with_maps_and_scans_lesions_in_the_cortex_no_brighter_than_it_are_dropped(two_runs, tmp_path, capsys):
    """As deepwml_predict does by default: r1 lies in the maps' cortex at 1.1 x its median and goes; r2, as faint in
    the white matter, stays; 0 keeps both; without the scans nothing is judged and nothing recorded."""
    from deepwml.anatomy.labels import CORTEX, WHITE_MATTER

    a, b = two_runs
    r1, r2 = _regions()
    anatomy = np.full(SHAPE, WHITE_MATTER, np.uint8)
    anatomy[:, :, :9] = CORTEX  # r1 (x 3-7) in it, r2 (x 10-18) beyond
    scan = np.where(anatomy == CORTEX, 100.0, 80.0).astype(np.float32)
    scan[r1], scan[r2] = 110.0, 88.0
    for case in ("case1", "case2"):
        write_image(anatomy, GEOMETRY, a / f"{case}_anatomy.nii.gz")
        write_image(scan, GEOMETRY, tmp_path / "scans" / f"{case}.nii.gz")
    report = ensemble([a, b], tmp_path / "out", images=tmp_path / "scans", progress=False)
    assert report.cortex_contrast == 1.15 and "lesions in their cortex under 1.15 x its median dropped" in report.describe()
    np.testing.assert_array_equal(read_label(tmp_path / "out" / "case1.nii.gz").array == 1, r2)
    assert list(pd.read_csv(tmp_path / "out" / "summary.csv")["lesions_dropped_faint_in_cortex"]) == [1, 1]
    assert json.loads((tmp_path / "out" / MARKER_NAME).read_text())[ENSEMBLE_KEY]["min_cortex_contrast"] == 1.15
    again = ensemble([a, b], tmp_path / "out", images=tmp_path / "scans", progress=False)
    assert again.resumed == 2 and list(pd.read_csv(tmp_path / "out" / "summary.csv")["lesions_dropped_faint_in_cortex"]) == [1, 1]
    assert ensemble_main(["-i", str(a), str(b), "-o", str(tmp_path / "kept"), "--images", str(tmp_path / "scans"),
                          "--min-cortex-contrast", "0"]) == 0
    assert "cortex" not in capsys.readouterr().out
    np.testing.assert_array_equal(read_label(tmp_path / "kept" / "case1.nii.gz").array == 1, r1 | r2)
    unjudged = ensemble([a, b], tmp_path / "no_scans", progress=False)
    assert unjudged.cortex_contrast == 0 and "min_cortex_contrast" not in json.loads(
        (tmp_path / "no_scans" / MARKER_NAME).read_text())[ENSEMBLE_KEY]


def test_a_scan_stored_with_an_offset_is_judged_as_the_scan_itself(two_runs, tmp_path):
    """The cortex bound reads the scans from their no-signal level, as deepwml_predict does: a lesion in the cortex
    at 1.2 x its median stays, in a scan with air around the head and in its copy stored + 1000 (which made it
    1.02 x and dropped it before)."""
    from deepwml.anatomy.labels import CORTEX, WHITE_MATTER

    a, b = two_runs
    r1, r2 = _regions()
    anatomy = np.full(SHAPE, WHITE_MATTER, np.uint8)
    anatomy[:, :, :9] = CORTEX
    scan = np.where(anatomy == CORTEX, 100.0, 80.0).astype(np.float32)
    scan[r1], scan[r2] = 120.0, 88.0
    scan[:, [0, -1], :], scan[:, :, [0, -1]] = 0.0, 0.0  # air around the head
    for case in ("case1", "case2"):
        write_image(anatomy, GEOMETRY, a / f"{case}_anatomy.nii.gz")
        write_image(scan, GEOMETRY, tmp_path / "stored" / f"{case}.nii.gz")
        write_image(scan + 1000, GEOMETRY, tmp_path / "offset" / f"{case}.nii.gz")
    for name in ("stored", "offset"):
        ensemble([a, b], tmp_path / f"out_{name}", images=tmp_path / name, progress=False)
        np.testing.assert_array_equal(read_label(tmp_path / f"out_{name}" / "case1.nii.gz").array == 1, r1 | r2)
