"""Thin scans (a 1 mm 3D FLAIR) reach a thick-slice model as slabs around each slice (--thin-slab-mm): the slab
arithmetic, which scans get it, that the networks see exactly the slabs while the outputs keep the scan, the record
that keeps resumed runs honest, and the options' refusals."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import Image, read_image, write_image
from deepwml.imageio.geometry import Geometry
from deepwml.inference.acquisition import TrainedAcquisition
from deepwml.inference.ensemble import recorded_thin_slab
from deepwml.inference.output_folder import MARKER_NAME, PRODUCER_KEY
from deepwml.inference.thin_slices import (is_thin, run_slab_mm, scan_warning, slab_average, slab_weights,
                                           thin_slab_inputs)
from deepwml.utils.errors import DeepWMLError
from deepwml_testing.toy_models import tiny_plan, write_model_dir

TRAINED = TrainedAcquisition((4.0, 8.0), (0.41, 0.94))


def _image(array: np.ndarray, spacing=(0.9, 0.9, 1.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Image:
    size = tuple(int(n) for n in array.shape[::-1])
    return Image(array, Geometry(size, tuple(float(s) for s in spacing), (0.0, 0.0, 0.0), tuple(float(d) for d in direction)))


@pytest.mark.parametrize("spacing,slab,expected", [
    (1.0, 3.0, [1, 1, 1]),
    (1.0, 4.0, [0.5, 1, 1, 1, 0.5]),     # a slab need not be a whole number of slices
    (2.0, 3.0, [0.25, 1, 0.25]),
    (0.8, 3.0, [0.375, 1, 1, 1, 0.375]),
])
def test_each_slice_counts_by_its_share_of_the_slab(spacing, slab, expected):
    weights = slab_weights(spacing, slab)
    assert np.allclose(weights, expected)
    assert weights.sum() == pytest.approx(slab / spacing)  # the slab's width, in slices, exactly


def test_the_slab_average_runs_along_the_slice_axis_and_keeps_the_level_at_the_ends():
    rng = np.random.default_rng(0)
    flat = _image(np.full((9, 5, 4), 7.0, np.float32))
    assert np.allclose(slab_average(flat, 3.0).array, 7.0)  # the end slices average only the slices that exist
    spike = np.zeros((9, 5, 4), np.float32)
    spike[4] = 3.0
    out = slab_average(_image(spike), 3.0).array
    assert np.allclose(out[3:6], 1.0) and np.allclose(out[:3], 0) and np.allclose(out[6:], 0)
    assert out[4].sum() == pytest.approx(spike.sum() / 3)
    # stored with the superior axis first in ITK order (numpy's last axis): the slab runs along that axis
    sagittal_store = (0, 0, 1, 0, 1, 0, 1, 0, 0)
    array = rng.normal(size=(6, 5, 9)).astype(np.float32)
    image = _image(array, spacing=(1.0, 1.0, 1.0), direction=sagittal_store)
    assert image.geometry.slice_axis_numpy == 2
    expected = slab_average(_image(np.moveaxis(array, 2, 0).copy()), 3.0).array
    assert np.allclose(slab_average(image, 3.0).array, np.moveaxis(expected, 0, 2), atol=1e-6)
    assert slab_average(image, 3.0).geometry == image.geometry


@pytest.mark.parametrize("thickness,thin", [(0.8, True), (1.0, True), (1.5, True), (2.0, False), (6.0, False)])
def test_auto_gives_the_shipped_kind_of_model_2_mm_slabs_for_slices_thinner_than_that(thickness, thin):
    slab = run_slab_mm(None, TRAINED)
    assert slab == 2.0
    assert is_thin(thickness, slab) is thin


def test_what_decides_a_slab_without_auto():
    assert run_slab_mm(0.0, TRAINED) == 0.0 and not is_thin(1.0, 0.0)  # 0: every scan as given
    assert run_slab_mm(None, None) == 0.0  # a model without training ranges: auto guesses nothing
    assert run_slab_mm(5.0, None) == 5.0 and is_thin(1.0, 5.0) and is_thin(2.5, 5.0)  # by hand: any thinner scan
    thick = [_image(np.ones((4, 3, 3), np.float32), spacing=(0.9, 0.9, 6.0))]
    assert thin_slab_inputs(thick, 3.0) is None and thin_slab_inputs(thick, 8.0) is not None


def test_the_warning_says_the_scan_was_seen_as_slabs():
    geometry = _image(np.ones((4, 3, 3), np.float32)).geometry
    warning = scan_warning(geometry, TRAINED, 3.0)
    assert "slices 1 mm thick" in warning and warning.endswith("predicted on 3 mm slabs averaged around each 1 mm slice (--thin-slab-mm)")
    assert "slabs" not in scan_warning(geometry, TRAINED, 0.0)
    assert scan_warning(geometry, None, 3.0).startswith("predicted on 3 mm slabs")  # no ranges: only the slab is said


def _toy_model(tmp_path):
    model = write_model_dir(tmp_path / "model" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,))
    (model / "fingerprint.json").write_text(json.dumps({"dataset_summary": {
        "slice_thickness_range": [4.0, 8.0], "inplane_spacing_range": [0.41, 0.94]}}))
    return model


def _thin_scan(tmp_path, name="thin", spacing=(0.9, 0.9, 1.0)):
    image, _, geometry = tiny_case(shape_zyx=(12, 64, 64), seed=5)
    # slice-to-slice noise, so that a slab changes what the network sees
    image = image + np.random.default_rng(1).normal(0, 15, image.shape)
    geometry = Geometry(geometry.size, spacing, geometry.origin, geometry.direction)
    write_image(image.astype(np.float32), geometry, tmp_path / "in" / f"{name}.nii.gz")
    return Image(image.astype(np.float32), geometry)


def test_the_networks_see_exactly_the_slabs_and_the_outputs_keep_the_scan(tmp_path):
    """A 1 mm scan predicted by default (auto: 2 mm) gives the probabilities of its slab average predicted as given;
    with --thin-slab-mm 0 they differ; the mask keeps the thin grid; the marker records the slab."""
    model = _toy_model(tmp_path)
    scan = _thin_scan(tmp_path)
    write_image(slab_average(scan, 2.0).array, scan.geometry, tmp_path / "slabbed" / "thin.nii.gz")
    common = ["-m", str(model), "--no-anatomy", "--no-qc", "--save-probabilities", "--no-postprocessing"]
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "auto"), *common]) == 0
    assert predict_main(["-i", str(tmp_path / "slabbed"), "-o", str(tmp_path / "seen"), *common, "--thin-slab-mm", "0"]) == 0
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "off"), *common, "--thin-slab-mm", "0"]) == 0
    auto, seen, off = (read_image(tmp_path / d / "thin_prob.nii.gz") for d in ("auto", "seen", "off"))
    assert np.allclose(auto.array, seen.array, atol=1e-5)
    assert not np.allclose(auto.array, off.array, atol=1e-3)
    mask = read_image(tmp_path / "auto" / "thin.nii.gz")
    assert not mask.geometry.mismatches(scan.geometry) and mask.array.shape == scan.array.shape
    records = {d: json.loads((tmp_path / d / MARKER_NAME).read_text())[PRODUCER_KEY] for d in ("auto", "off")}
    assert records["auto"]["thin_slab_mm"] == 2.0 and records["off"]["thin_slab_mm"] == 0.0
    summary = pd.read_csv(tmp_path / "auto" / "summary.csv", keep_default_na=False).set_index("case_id")
    assert "predicted on 2 mm slabs" in summary.loc["thin", "acquisition_warning"]
    off_summary = pd.read_csv(tmp_path / "off" / "summary.csv", keep_default_na=False).set_index("case_id")
    assert "slabs" not in off_summary.loc["thin", "acquisition_warning"]


def test_a_thick_scan_is_predicted_as_given_whatever_the_setting(tmp_path):
    model = _toy_model(tmp_path)
    _thin_scan(tmp_path, "routine", spacing=(0.9, 0.9, 6.0))
    common = ["-m", str(model), "--no-anatomy", "--no-qc", "--save-probabilities", "--no-postprocessing"]
    for setting in ("auto", "0", "6"):  # a 6 mm slab does not reach a 6 mm slice's neighbours
        assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / setting), *common, "--thin-slab-mm", setting]) == 0
    maps = [read_image(tmp_path / s / "routine_prob.nii.gz").array for s in ("auto", "0", "6")]
    assert np.array_equal(maps[0], maps[1]) and np.array_equal(maps[0], maps[2])


def test_resuming_with_another_slab_is_refused_and_the_resumed_row_keeps_its_words(tmp_path, capsys):
    model = _toy_model(tmp_path)
    _thin_scan(tmp_path)
    args = ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "--no-anatomy", "--no-qc"]
    assert predict_main(args) == 0
    assert predict_main(args) == 0  # resumed: the row is rebuilt from the mask, with the slab still said
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False).set_index("case_id")
    assert "predicted on 2 mm slabs" in summary.loc["thin", "acquisition_warning"]
    capsys.readouterr()
    assert predict_main(args + ["--thin-slab-mm", "0"]) == 2
    err = capsys.readouterr().err
    assert "thin_slab_mm 2.0 -> 0.0" in err and "--overwrite" in err


@pytest.mark.parametrize("value,words", [("abc", "expected 'auto', 0 or a slab width"), ("-1", "expected 'auto'"),
                                         ("nan", "expected 'auto'")])
def test_a_bad_setting_is_an_argument_error(tmp_path, capsys, value, words):
    with pytest.raises(SystemExit) as stop:
        predict_main(["-i", str(tmp_path), "-o", str(tmp_path / "out"), "--thin-slab-mm", value])
    assert stop.value.code == 2 and words in capsys.readouterr().err


def test_a_slab_wider_than_any_clinical_slice_is_refused(tmp_path, capsys):
    model = _toy_model(tmp_path)
    _thin_scan(tmp_path)
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "--thin-slab-mm", "20"]) == 2
    assert "--thin-slab-mm must be 0 (off), 'auto' or a slab width in mm up to 12" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_ensemble_refuses_members_that_saw_thin_scans_differently(tmp_path):
    for name, slab in (("a", 3.0), ("b", 0.0), ("c", 3.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / MARKER_NAME).write_text(json.dumps({PRODUCER_KEY: {"threshold": 0.5, "thin_slab_mm": slab}}))
    assert recorded_thin_slab([tmp_path / "a", tmp_path / "c"]) == 3.0
    with pytest.raises(DeepWMLError, match="different --thin-slab-mm slabs"):
        recorded_thin_slab([tmp_path / "a", tmp_path / "b"])
    (tmp_path / "old").mkdir()  # a folder from before the record: nothing said, nothing assumed
    assert recorded_thin_slab([tmp_path / "old"]) == 0.0


def test_the_generator_acquires_the_same_patient_in_thin_slices():
    from deepwml.synthetic.generate import generate_case

    case = generate_case("MS#3", 1, seed=3000, thin_slices_mm=2.5)
    assert case.geometry.spacing[2] == 2.5 and case.image.shape[0] == 60
    assert case.label.sum() > 0
    with pytest.raises(DeepWMLError, match="thin_slices_mm must lie in 0.3..3 mm"):
        generate_case("MS#3", 1, seed=3000, thin_slices_mm=5.0)


def test_the_tuning_commands_see_a_thin_scan_as_prediction_does(tmp_path):
    """deepwml_calibrate / deepwml_find_postprocessing / deepwml_find_best_configuration predict each labelled case
    through calibration.fit.case_outputs: with the model's own slab it gives deepwml_predict's probabilities, and the
    image the contrast filter judges is the slab average on the scan's grid."""
    import torch

    from deepwml.calibration.fit import case_outputs
    from deepwml.inference.inputs import discover_cases
    from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
    from deepwml.inference.predictor import SlicePredictor
    from deepwml.inference.thin_slices import model_thin_slab
    from deepwml.training.device import DeviceSetup

    model = _toy_model(tmp_path)
    scan = _thin_scan(tmp_path)
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "--no-anatomy",
                         "--no-qc", "--save-probabilities", "--no-postprocessing", "--backend", "torch", "--no-bf16"]) == 0
    spec = check_model(model)
    predictor = SlicePredictor(build_fold_networks(spec, load_fold_states(spec)), spec.plan,
                               DeviceSetup(torch.device("cpu"), None, channels_last=True, threads=2), tta=spec.plan.inference.tta)
    (case,) = discover_cases(tmp_path / "in", spec.plan.n_channels)
    assert model_thin_slab(model) == 2.0
    probs, image, _ = case_outputs(predictor, case, model_thin_slab(model))
    assert np.allclose(probs, read_image(tmp_path / "out" / "thin_prob.nii.gz").array, atol=1e-4)
    assert np.allclose(image.array, slab_average(scan, 2.0).array, atol=1e-4)
    assert not image.geometry.mismatches(scan.geometry)
    plain, _, _ = case_outputs(predictor, case)
    assert not np.allclose(plain, probs, atol=1e-3)  # without the slab, another view of the scan
