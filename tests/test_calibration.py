"""deepwml_calibrate: temperatures fitted on labelled scans make probabilities honest, never change the mask at 0.5,
travel with the model (export, install, manifest) and are refused when malformed."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import PredictedCaseSpy, tiny_case
from deepwml.calibration.temperature import calibrate_probabilities, fit_temperatures, probabilities
from deepwml.cli.calibrate import main as calibrate_main
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image
from deepwml.inference.model_zip import file_record
from deepwml.inference.packaging import export_model, install_model
from deepwml_testing.toy_models import tiny_plan, write_model_dir

KEPT = 0.8  # the share of each lesion the noisy labels keep: a sure model is right about 80 % of its lesion voxels


def test_fit_recovers_the_over_confidence_of_each_side():
    """Logits made 3x too sure above 0 and 1.5x below are put back: the fit finds (1.5, 3)."""
    rng = np.random.default_rng(0)
    true = rng.normal(0, 2.5, 200_000)
    labels = rng.random(true.size) < 1 / (1 + np.exp(-true))
    logits = np.where(true >= 0, 3.0 * true, 1.5 * true)
    below, above = fit_temperatures(logits, labels)
    assert below == pytest.approx(1.5, rel=0.1) and above == pytest.approx(3.0, rel=0.1)


def test_calibration_keeps_half_order_and_certainty():
    """0.5 stays 0.5 (so the mask at 0.5 cannot change), order is kept, 0 and 1 stay exact, (1, 1) is the identity."""
    p = np.array([0.0, 1e-6, 0.2, 0.4999, 0.5, 0.5001, 0.8, 0.999999, 1.0], np.float32)
    q = calibrate_probabilities(p, (1.4, 3.5))
    assert q[0] == 0.0 and q[-1] == 1.0 and q[4] == pytest.approx(0.5, abs=1e-6)
    assert np.all(np.diff(q) > 0) and np.array_equal(q >= 0.5, p >= 0.5)
    assert q[6] < p[6] and q[2] > p[2]  # pulled towards 0.5 on both sides
    assert np.array_equal(calibrate_probabilities(p, (1.0, 1.0)), p)


def test_calibrating_in_place_writes_the_same_map_over_the_input_and_the_default_leaves_it():
    """A reverted map (zero outside a box, exact 0 and 1 inside): in place gives the copy's values bit for bit, over
    the array it was given; without in_place the input is unchanged. Both are the float64 definition to float32."""
    rng = np.random.default_rng(3)
    p = np.zeros((4, 40, 50), np.float32)
    p[1:3, 5:30, 8:45] = rng.random((2, 25, 37)).astype(np.float32) ** 4
    p[1, 6, 9], p[2, 7, 10] = 1.0, 0.0
    before = p.copy()
    copied = calibrate_probabilities(p, (1.7, 4.2))
    assert np.array_equal(p, before)
    inside = (p > 0) & (p < 1)
    values = p[inside].astype(np.float64)
    reference = probabilities(np.log(values) - np.log1p(-values), (1.7, 4.2))
    assert np.allclose(copied[inside], reference, rtol=1e-4, atol=1e-6)
    assert copied[1, 6, 9] == 1.0 and np.all(copied[p == 0] == 0)
    written = calibrate_probabilities(p, (1.7, 4.2), in_place=True)
    assert written is p and np.array_equal(written, copied)


@pytest.fixture
def site(tmp_path) -> Path:
    """A threshold model (sure of every bright voxel) and 6 scans whose labels keep only part of each lesion."""
    write_model_dir(tmp_path / "res" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,))
    rng = np.random.default_rng(1)
    for i in range(6):
        image, label, geometry = tiny_case(shape_zyx=(5, 64, 64), seed=10 + i, n_lesions=4)
        noisy = label * (rng.random(label.shape) < KEPT)
        write_image(image, geometry, tmp_path / "images" / f"case{i}.nii.gz")
        write_image(noisy.astype(np.uint8), geometry, tmp_path / "labels" / f"case{i}.nii.gz")
    return tmp_path


def _predict(site: Path, out: str, model: Path, *extra: str) -> Path:
    assert predict_main(["-i", str(site / "images"), "-o", str(site / out), "-m", str(model),
                         "--save-probabilities", "--no-qc", "--no-anatomy", *extra]) == 0
    return site / out


def _maps(folder: Path, case: str = "case0"):
    return read_image(folder / f"{case}.nii.gz").array, read_image(folder / f"{case}_prob.nii.gz").array


def _calibrate(site: Path, model: Path, *extra: str) -> int:
    return calibrate_main(["-m", str(model), "-i", str(site / "images"), "-l", str(site / "labels"), "--device", "cpu", *extra])


def test_calibrated_model_says_how_sure_it_is_and_keeps_its_masks(site, capsys):
    """After calibration the mean probability inside the mask is near the share of it that is lesion, the masks are
    the same voxel for voxel, predict says it is calibrated, and --reset gives back the raw probabilities."""
    model = site / "res" / "Dataset999_Toy" / "tiny"
    before = _predict(site, "before", model)
    capsys.readouterr()
    assert _calibrate(site, model) == 0
    captured = capsys.readouterr()
    assert "temperatures" in captured.out and "stored in" in captured.out and "warning" not in captured.err
    ckpt = torch.load(model / "fold_0" / "checkpoint_best.pth", weights_only=True)
    below, above = ckpt["temperature"]
    assert above > 1.5 and ckpt["calibration"]["cases"] == [f"case{i}" for i in range(6)]
    assert ckpt["calibration"]["candidate_ece_after"] < ckpt["calibration"]["candidate_ece_before"]
    after = _predict(site, "after", model, "--report")
    assert "probabilities calibrated" in capsys.readouterr().out
    # the patient report tells the reader that its confidence figures are calibrated
    assert "calibrated on labelled scans (deepwml_calibrate" in (after / "report" / "case0.html").read_text(encoding="utf-8")
    for i in range(6):
        (mask_b, prob_b), (mask_a, prob_a) = _maps(before, f"case{i}"), _maps(after, f"case{i}")
        assert np.array_equal(mask_a, mask_b)
    mask, prob_b = _maps(before)
    _, prob_a = _maps(after)
    label = read_image(site / "labels" / "case0.nii.gz").array
    inside = mask > 0
    share = label[inside].mean()
    assert abs(prob_a[inside].mean() - share) < abs(prob_b[inside].mean() - share) - 0.1
    assert _calibrate(site, model, "--reset") == 0
    assert "temperature" not in torch.load(model / "fold_0" / "checkpoint_best.pth", weights_only=True)
    np.testing.assert_array_equal(_maps(_predict(site, "reset", model))[1], prob_b)


def test_dry_run_changes_nothing(site):
    model = site / "res" / "Dataset999_Toy" / "tiny"
    path = model / "fold_0" / "checkpoint_best.pth"
    data = path.read_bytes()
    assert _calibrate(site, model, "--dry-run") == 0
    assert path.read_bytes() == data


def test_an_interrupted_fit_resumes_and_fits_exactly_what_an_uninterrupted_one_fits(site, monkeypatch, tmp_path):
    """Each case's voxel sample (and the random state after it) is kept as drawn: after an interrupt only the rest is
    predicted and the temperatures are bit for bit those of a run never interrupted; the samples go once fitted."""
    from deepwml.calibration.fit import calibrate
    from deepwml.training.device import setup_device

    import deepwml.calibration.temperature as temperature

    monkeypatch.setattr(temperature, "MAX_VOXELS_PER_CASE", 2000)  # every part of each case drawn at random
    model = site / "res" / "Dataset999_Toy" / "tiny"
    args = (model, site / "images", site / "labels", setup_device("cpu"))
    monkeypatch.setenv("DEEPWML_CACHE_DIR", "off")
    straight = calibrate(*args, write=False, progress=False).temperatures
    monkeypatch.setenv("DEEPWML_CACHE_DIR", str(tmp_path / "cache"))
    spy = PredictedCaseSpy(monkeypatch, stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        calibrate(*args, write=False, progress=False)
    assert list((tmp_path / "cache" / "calibration_samples").glob("*/*.npz"))
    spy.stop_after, spy.seen[:] = None, []
    resumed = calibrate(*args, write=False, progress=False).temperatures
    assert spy.seen == ["case3", "case4", "case5"]
    assert resumed == straight
    assert not list((tmp_path / "cache" / "calibration_samples").glob("*/*.npz"))


def test_temperatures_travel_through_export_and_install_and_keep_the_manifest_true(site):
    """An exported calibrated model installs elsewhere and writes the same calibrated maps; calibrating an installed
    model updates its manifest, so it can be exported again."""
    model = site / "res" / "Dataset999_Toy" / "tiny"
    assert _calibrate(site, model) == 0
    export_model(model, site / "m.zip")
    installed = install_model(site / "m.zip", site / "siteB")
    assert torch.load(installed / "fold_0" / "checkpoint_best.pth", weights_only=True)["temperature"] is not None
    np.testing.assert_array_equal(_maps(_predict(site, "a", model))[1], _maps(_predict(site, "b", installed))[1])
    assert _calibrate(site, installed, "--reset") == 0
    manifest = json.loads((installed / "manifest.json").read_text())
    assert manifest["files"]["fold_0/checkpoint_best.pth"] == file_record((installed / "fold_0" / "checkpoint_best.pth").read_bytes())
    export_model(installed, site / "again.zip")
    assert install_model(site / "again.zip", site / "siteC").is_dir()


@pytest.mark.parametrize("value", ["hot", -1.0, [1.0], [1.0, 0.0], True])
def test_a_malformed_temperature_is_refused_naming_the_checkpoint(site, value, capsys):
    model = site / "res" / "Dataset999_Toy" / "tiny"
    path = model / "fold_0" / "checkpoint_best.pth"
    ckpt = torch.load(path, weights_only=True)
    ckpt["temperature"] = value
    torch.save(ckpt, path)
    assert predict_main(["-i", str(site / "images"), "-o", str(site / "out"), "-m", str(model), "--no-qc", "--no-anatomy"]) != 0
    err = capsys.readouterr().err
    assert "temperature" in err and "checkpoint_best.pth" in err


def test_folds_calibrated_apart_are_refused(site, capsys):
    """Two folds with different temperatures cannot be averaged into one calibrated map."""
    model = write_model_dir(site / "res2" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0, 1))
    for fold, t in ((0, [1.2, 2.0]), (1, [1.0, 3.0])):
        path = model / f"fold_{fold}" / "checkpoint_best.pth"
        ckpt = torch.load(path, weights_only=True)
        ckpt["temperature"] = t
        torch.save(ckpt, path)
    assert predict_main(["-i", str(site / "images"), "-o", str(site / "out"), "-m", str(model), "--no-qc", "--no-anatomy"]) != 0
    assert "different temperatures" in capsys.readouterr().err


def test_labelled_scans_that_do_not_match_are_one_line(site, capsys):
    """No label with the images' case ids, or a label on another grid, names the folder or file."""
    model = site / "res" / "Dataset999_Toy" / "tiny"
    empty = site / "nolabels"
    empty.mkdir()
    assert calibrate_main(["-m", str(model), "-i", str(site / "images"), "-l", str(empty)]) == 2
    assert "no image" in capsys.readouterr().err
    image, label, geometry = tiny_case(shape_zyx=(4, 32, 32), seed=3)
    write_image(label, geometry, site / "labels" / "case0.nii.gz")
    assert _calibrate(site, model) == 2
    err = capsys.readouterr().err
    assert "not on the image's grid" in err and "case0.nii.gz" in err
    assert _calibrate(site, model, "--reset") == 0  # nothing was written by the refused run


def test_scans_named_as_in_a_raw_dataset_pair_with_their_labels(tmp_path):
    """CASE_0000<ending> (imagesTr) pairs with CASE<ending> (labelsTr); the record names the case CASE."""
    from deepwml.calibration.fit import labelled_cases

    image, label, geometry = tiny_case(shape_zyx=(4, 32, 32), seed=3)
    write_image(image, geometry, tmp_path / "imagesTr" / "p01_0000.nii.gz")
    write_image(image, geometry, tmp_path / "imagesTr" / "p02.nii.gz")
    write_image(label, geometry, tmp_path / "labelsTr" / "p01.nii.gz")
    write_image(label, geometry, tmp_path / "labelsTr" / "p02.nii.gz")
    pairs = labelled_cases(tmp_path / "imagesTr", tmp_path / "labelsTr")
    assert [(c.case_id, c.source.name, lab.name) for c, lab in pairs] == [
        ("p01", "p01_0000.nii.gz", "p01.nii.gz"), ("p02", "p02.nii.gz", "p02.nii.gz")]


@pytest.mark.parametrize("damage", ["nan", "truncated"])
def test_a_damaged_scan_stops_calibration_naming_it_and_writes_nothing(site, damage, capsys):
    """A NaN-filled or truncated scan among the labelled ones is one line naming the file; the model is untouched."""
    model = site / "res" / "Dataset999_Toy" / "tiny"
    checkpoint = model / "fold_0" / "checkpoint_best.pth"
    before = checkpoint.read_bytes()
    scan = site / "images" / "case3.nii.gz"
    if damage == "nan":
        image = read_image(scan)
        write_image(np.full(image.array.shape, np.nan, np.float32), image.geometry, scan)
    else:
        scan.write_bytes(scan.read_bytes()[:200])
    assert _calibrate(site, model) == 2
    assert "case3.nii.gz" in capsys.readouterr().err
    assert checkpoint.read_bytes() == before


def test_labels_the_model_cannot_be_fitted_to_are_warned_about(site, capsys):
    """Labels that keep a tenth of each lesion push a temperature to the end of its range: said on stderr."""
    for path in sorted((site / "labels").iterdir()):
        label = read_image(path)
        keep = np.random.default_rng(0).random(label.array.shape) < 0.1
        write_image((label.array * keep).astype(np.uint8), label.geometry, path)
    assert _calibrate(site, site / "res" / "Dataset999_Toy" / "tiny", "--dry-run") == 0
    assert "at the end of its range" in capsys.readouterr().err


def _as_trained(model: Path, validation: dict) -> None:
    """Give toy checkpoints the records deepwml_train writes (dataset, fold, validation cases; None: not recorded)."""
    for fold, val in validation.items():
        path = model / f"fold_{fold}" / "checkpoint_best.pth"
        ckpt = torch.load(path, weights_only=True)
        ckpt.update(dataset="Dataset999_Toy", fold=fold)
        if val is not None:
            ckpt["validation_cases"] = val
        torch.save(ckpt, path)


@pytest.fixture
def trained_site(site, monkeypatch) -> Path:
    """The site's scans as a raw dataset, a two-fold model trained on it: fold 0 lists its validation cases, fold 1
    predates that record (its split is in splits.json)."""
    raw = site / "raw" / "Dataset999_Toy"
    for i in range(6):
        for kind, ending in (("images", "_0000"), ("labels", "")):
            (raw / f"{kind}Tr").mkdir(parents=True, exist_ok=True)
            (raw / f"{kind}Tr" / f"case{i}{ending}.nii.gz").write_bytes((site / kind / f"case{i}.nii.gz").read_bytes())
    pre = site / "pre" / "Dataset999_Toy"
    pre.mkdir(parents=True)
    (pre / "splits.json").write_text(json.dumps({"test": [], "folds": [
        {"train": ["case3", "case4", "case5"], "val": ["case0", "case1", "case2"]},
        {"train": ["case0", "case1", "case2", "case5"], "val": ["case3", "case4"]}]}))
    model = write_model_dir(site / "res" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0, 1))
    _as_trained(model, {0: ["case0", "case1", "case2"], 1: None})
    for kind, folder in (("RAW", "raw"), ("PREPROCESSED", "pre"), ("RESULTS", "res")):
        monkeypatch.setenv(f"DEEPWML_{kind}", str(site / folder))
    return site


def test_without_scans_each_fold_is_calibrated_on_its_own_validation_cases_alone(trained_site, monkeypatch, capsys):
    """deepwml_calibrate -d -p with no -i/-l: every fold's validation cases (from its checkpoint, or splits.json for an
    older one), each predicted by that fold only, never by a fold that trained on it; one calibration in both folds."""
    import deepwml.calibration.fit as fit

    seen = []
    build, predicted_case = fit.build_fold_networks, fit._predicted_case

    def tagged(spec, states):
        networks = build(spec, states)
        for fold, net in zip(spec.folds, networks):
            net.test_fold = fold
        return networks

    def spy(predictor, case, *args):
        seen.append((case.case_id, [net.test_fold for net in predictor.networks]))
        return predicted_case(predictor, case, *args)

    monkeypatch.setattr(fit, "build_fold_networks", tagged)
    monkeypatch.setattr(fit, "_predicted_case", spy)
    assert calibrate_main(["-d", "999", "-p", "tiny", "--device", "cpu"]) == 0
    assert "validation case(s) of its folds" in capsys.readouterr().out
    assert seen == [("case0", ["0"]), ("case1", ["0"]), ("case2", ["0"]), ("case3", ["1"]), ("case4", ["1"])]
    model = trained_site / "res" / "Dataset999_Toy" / "tiny"
    records = [torch.load(model / f"fold_{f}" / "checkpoint_best.pth", weights_only=True) for f in (0, 1)]
    assert records[0]["temperature"] == records[1]["temperature"] and records[0]["temperature"][1] > 1.5
    assert records[0]["calibration"]["cases"] == [f"case{i}" for i in range(5)]
    assert "out of fold" in records[0]["calibration"]["source"]


def test_the_validation_labels_ignore_value_declared_by_the_dataset_is_left_out(trained_site, capsys):
    """A dataset declaring labels.ignore (the WMH 2017 challenge's 2, "other pathology"): its voxels are left out of
    the fit rather than refused as an unknown label value."""
    model = trained_site / "res" / "Dataset999_Toy" / "tiny"
    dataset = json.loads((model / "dataset.json").read_text())
    dataset["labels"]["ignore"] = 2
    (model / "dataset.json").write_text(json.dumps(dataset))
    path = trained_site / "raw" / "Dataset999_Toy" / "labelsTr" / "case0.nii.gz"
    label = read_image(path, dtype=None)
    array = np.asarray(label.array).copy()
    array[0, :4, :4] = 2
    write_image(array, label.geometry, path)
    assert calibrate_main(["-d", "999", "-p", "tiny", "--device", "cpu"]) == 0
    ckpt = torch.load(model / "fold_0" / "checkpoint_best.pth", weights_only=True)
    assert ckpt["calibration"]["ignore_label"] == 2


@pytest.mark.parametrize("problem,message", [
    ("exported", "does not name the dataset"),
    ("fold_all", "holds out no case"),
    ("missing_case", "have no image with a label"),
    ("only_images", "give both -i IMAGES and -l LABELS"),
])
def test_a_model_whose_validation_cases_cannot_be_found_is_one_line(trained_site, problem, message, capsys):
    """No dataset record (an exported model), a fold that held nothing out, a validation case not in the raw folder, or
    -i without -l: one line naming the problem, and nothing written."""
    model = trained_site / "res" / "Dataset999_Toy" / "tiny"
    args = ["-d", "999", "-p", "tiny", "--device", "cpu"]
    if problem == "exported":
        write_model_dir(model, tiny_plan(), folds=(0, 1))
    elif problem == "fold_all":
        _as_trained(model, {1: []})
    elif problem == "missing_case":
        (trained_site / "raw" / "Dataset999_Toy" / "labelsTr" / "case4.nii.gz").unlink()
    else:
        args += ["-i", str(trained_site / "images")]
    checkpoints = {p: p.read_bytes() for p in model.glob("fold_*/*.pth")}
    assert calibrate_main(args) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in model.glob("fold_*/*.pth")} == checkpoints
