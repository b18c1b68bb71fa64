"""The shipped-model plumbing: prediction falls back to it and says so, the recipe installs a loadable model."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import deepwml.pretrained as pretrained
from deepwml.cli import predict as predict_cli
from deepwml.imageio import read_image, write_image
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from deepwml.pretrained.recipe import Recipe, install_builtin, run_recipe
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.errors import DeepWMLError
from tests.conftest import tiny_case

#: the shipped model's whole-scan Dice on two unseen synthetic scans was measured well above this (see MODEL_CARD.md)
SHIPPED_MODEL_MIN_DICE = 0.5


def _inputs(folder: Path, n: int = 2) -> Path:
    for i in range(n):
        image, _, geometry = tiny_case(seed=i)
        write_image(image, geometry, folder / f"c{i}.nii.gz")
    return folder


def test_predict_without_a_model_uses_the_shipped_one_and_says_so(tmp_path, monkeypatch, capsys):
    """A clinician with a scan and no model runs deepwml_predict -i -o and gets masks from the shipped model."""
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=("all",))
    installed = tmp_path / "pkg" / "wmh_flair2d"
    install_builtin(model, Recipe(folds=("all",)), {"figures": {"slice_median_dice": 0.5}}, installed)
    monkeypatch.setattr(pretrained, "BUILTIN_DIR", installed)
    assert predict_cli.main(["-i", str(_inputs(tmp_path / "in")), "-o", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    assert "pretrained model shipped with DeepWML" in err and str(installed) in err
    masks = [read_image(tmp_path / "out" / f"c{i}.nii.gz").array for i in range(2)]
    assert all(m.any() for m in masks)
    # -m builtin names the same model: identical masks
    assert predict_cli.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out2"), "-m", "builtin"]) == 0
    assert all(np.array_equal(m, read_image(tmp_path / "out2" / f"c{i}.nii.gz").array) for i, m in enumerate(masks))
    card = (installed / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "Recipe" in card and "0.5" in card and "Limits" in card


def test_predict_without_a_model_when_none_is_shipped_is_one_clear_line(tmp_path, monkeypatch, capsys):
    """An install without weights says what to do instead of a traceback, and writes nothing."""
    monkeypatch.setattr(pretrained, "BUILTIN_DIR", tmp_path / "nothing")
    assert predict_cli.main(["-i", str(_inputs(tmp_path / "in", 1)), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "ships no pretrained model" in err and "-m MODEL_DIR" in err
    assert not (tmp_path / "out").exists()


def test_builtin_with_a_dataset_is_refused(tmp_path, monkeypatch):
    """-m builtin together with -d is ambiguous."""
    from deepwml.inference.run import PredictRequest, model_dir_of

    monkeypatch.setattr(pretrained, "BUILTIN_DIR", tmp_path)
    with pytest.raises(DeepWMLError, match="not both"):
        model_dir_of(PredictRequest(input=tmp_path, output=tmp_path, model_dir=Path("builtin"), dataset="501"))


def test_recipe_refuses_a_work_folder_started_with_other_settings(tmp_path):
    """Resuming with other settings would mix two models' data; the recipe names the file and stops first."""
    write_json(tmp_path / "recipe.json", {"recipe": {"seed": 1}})
    with pytest.raises(DeepWMLError, match="another recipe"):
        run_recipe(Recipe(), tmp_path, None)


def test_a_work_folder_from_before_tta_resumes_and_the_lesion_recipe_records_it(tmp_path):
    """The lesion recipe fits its temperatures and postprocessing with TTA by default and records it; a work folder
    started before the setting existed (no 'tta' in its record) resumes, since TTA only changes the fitting stages;
    the anatomy recipe has no such setting, and asking for it is refused."""
    from deepwml.pretrained.recipe import open_record

    assert Recipe().tta is True and Recipe().record()["tta"] is True
    assert "tta" not in Recipe.defaults("anatomy").record()
    older = Recipe().record()
    del older["tta"]
    write_json(tmp_path / "recipe.json", {"recipe": older, "generator_version": 12})
    open_record(tmp_path / "recipe.json", Recipe(), 12)
    assert read_json(tmp_path / "recipe.json")["recipe"]["tta"] is True
    with pytest.raises(DeepWMLError, match="--tta is for the lesion model"):
        run_recipe(dataclasses.replace(Recipe.defaults("anatomy"), tta=True), tmp_path / "anatomy", None)


def test_a_recipe_of_several_folds_is_recorded_and_a_work_folder_takes_more_folds(tmp_path):
    """One fold is recorded as before ('fold'), so older work folders resume; a work folder started with fold 0 takes
    folds 0 and 1 of the same recipe (the missing member is trained), but not another seed."""
    from dataclasses import replace

    from deepwml.pretrained.recipe import open_record
    from deepwml.utils.atomic import read_json

    one, two = replace(Recipe(), folds=("0",)), Recipe()
    assert two.folds == ("0", "1") and Recipe.defaults("anatomy").folds == ("0",)
    assert one.record()["fold"] == "0" and "folds" not in one.record()
    assert two.record()["folds"] == ["0", "1"] and "fold" not in two.record()
    record = tmp_path / "recipe.json"
    open_record(record, one, 8)
    write_json(record, dict(read_json(record), figures={"case_mean_dice": 0.5}))
    open_record(record, two, 8)
    assert read_json(record)["recipe"]["folds"] == ["0", "1"] and read_json(record)["figures"] == {"case_mean_dice": 0.5}
    with pytest.raises(DeepWMLError, match="another recipe"):
        open_record(record, replace(two, seed=1), 8)


def test_a_recipe_of_some_centres_is_recorded_resumes_only_with_them_and_its_card_names_them(tmp_path):
    """--centres restricts every synthetic set; unset it is not recorded (older work folders resume), set it is part
    of the recipe a work folder was started with, and the card says which centres the model learnt from."""
    from dataclasses import replace

    from deepwml.cli.train_pretrained import main
    from deepwml.pretrained.model_card import model_card
    from deepwml.pretrained.recipe import _synthetic_args, open_record

    assert "centres" not in Recipe().record() and _synthetic_args(Recipe()) == []
    some = replace(Recipe(), centres=("CSVD#1", "MS#1"))
    assert some.record()["centres"] == ["CSVD#1", "MS#1"]
    assert _synthetic_args(some) == ["--centres", "CSVD#1,MS#1"]
    assert _synthetic_args(replace(Recipe.defaults("anatomy"), centres=("MS#1",))) == ["--centres", "MS#1", "--anatomy"]
    assert _synthetic_args(replace(Recipe.defaults("anatomy"), centres=("MS#1",)), labels=False) == ["--centres", "MS#1"]
    record = tmp_path / "recipe.json"
    open_record(record, some, 12)
    with pytest.raises(DeepWMLError, match="another recipe"):
        open_record(record, Recipe(), 12)
    assert "only centres CSVD#1, MS#1 of Zhang" in model_card(some, {})
    assert "all twelve centres" in model_card(Recipe(), {})
    # an unknown centre is refused before anything is made
    assert main(["--workdir", str(tmp_path / "work"), "--centres", "CSVD#1,XX#9"]) == 2
    assert not (tmp_path / "work").exists()


def test_a_recipe_with_a_share_of_skull_stripped_scans_records_it_and_its_card_names_it(tmp_path):
    """--skull-stripped SHARE (the training set's share of stripped scans): not recorded at 'auto' (older work folders
    resume), part of the recipe otherwise, named on the card; a bad share is refused before anything is made."""
    from dataclasses import replace

    from deepwml.cli.train_pretrained import main
    from deepwml.pretrained.model_card import model_card
    from deepwml.pretrained.recipe import open_record

    assert "skull_stripped" not in Recipe().record()
    half = replace(Recipe.defaults("anatomy"), skull_stripped="0.5")
    assert half.record()["skull_stripped"] == "0.5"
    record = tmp_path / "recipe.json"
    open_record(record, half, 12)
    with pytest.raises(DeepWMLError, match="another recipe"):
        open_record(record, Recipe.defaults("anatomy"), 12)
    assert "skull-stripped share 0.5" in model_card(half, {}) and "skull-stripped share" not in model_card(Recipe(), {})
    assert main(["--workdir", str(tmp_path / "work"), "--anatomy", "--skull-stripped", "most"]) == 2
    assert not (tmp_path / "work").exists()


def test_an_ensemble_recipe_installs_every_fold_and_prediction_averages_them(tmp_path, monkeypatch, capsys):
    """Folds 0 and 1 installed as the shipped model (--no-distill): both checkpoints are in the manifest, the card says
    ensemble, and deepwml_predict with no model uses both."""
    from dataclasses import replace

    from deepwml.utils.atomic import read_json

    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0, 1))
    installed = tmp_path / "pkg" / "wmh_flair2d"
    record = {"figures": {"slice_median_dice": 0.5}, "validation": {"0": {"median_dice": 0.71}, "1": {"median_dice": 0.69}},
              "training_hours": {"0": 0.714, "1": 0.801}}
    install_builtin(model, replace(Recipe(), distill=False), record, installed)
    assert sorted(read_json(installed / "manifest.json")["folds"]) == ["0", "1"]
    assert (installed / "fold_1" / "checkpoint_best.pth").is_file()
    card = (installed / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "folds 0, 1 (ensemble)" in card and "fold 0 0.71, fold 1 0.69" in card and "fold 0 0.714 h, fold 1 0.801 h" in card
    monkeypatch.setattr(pretrained, "BUILTIN_DIR", installed)
    assert predict_cli.main(["-i", str(_inputs(tmp_path / "in", 1)), "-o", str(tmp_path / "out"), "--no-qc"]) == 0
    assert "folds 0 1;" in capsys.readouterr().out


def test_a_distilled_recipe_is_recorded_installs_one_network_and_its_card_names_the_teachers(tmp_path, monkeypatch, capsys):
    """--distill adds a stage to a work folder of trained folds; the shipped model is the one distilled network, and the
    card gives its figures beside the teachers'."""
    from dataclasses import replace

    from deepwml.pretrained.recipe import open_record
    from deepwml.utils.atomic import read_json

    plain, distilled = replace(Recipe(), distill=False), Recipe()
    assert distilled.distill and not Recipe.defaults("anatomy").distill
    assert "distill" not in plain.record() and distilled.record()["distill"] is True
    record_path = tmp_path / "recipe.json"
    open_record(record_path, plain, 8)
    open_record(record_path, distilled, 8)
    assert read_json(record_path)["recipe"]["distill"] is True
    with pytest.raises(DeepWMLError, match="another recipe"):
        open_record(record_path, replace(distilled, epochs=3), 8)
    with pytest.raises(DeepWMLError, match="for the lesion model"):
        run_recipe(replace(Recipe.defaults("anatomy"), distill=True), tmp_path / "anatomy_work", None)
    assert not (tmp_path / "anatomy_work").exists()

    student = write_model_dir(tmp_path / "distilled" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,))
    installed = tmp_path / "pkg" / "wmh_flair2d"
    record = {"figures": {"slice_median_dice": 0.655, "case_mean_dice": 0.58}, "validation": {"0": {"median_dice": 0.7}},
              "training_hours": {"0": 1.1}, "teacher_figures": {"slice_median_dice": 0.659, "case_mean_dice": 0.588},
              "teacher_validation": {"0": {"median_dice": 0.71}, "1": {"median_dice": 0.69}},
              "teacher_training_hours": {"0": 0.7, "1": 0.8}}
    install_builtin(student, distilled, record, installed)
    assert read_json(installed / "manifest.json")["folds"] == ["0"] and not (installed / "fold_1").exists()
    card = (installed / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "one network distilled from folds 0, 1 (ensemble)): median per-slice Dice 0.655" in card
    assert "The teachers (folds 0, 1 (ensemble)) on the same set: median per-slice Dice 0.659" in card
    assert "teachers fold 0 0.7 h, fold 1 0.8 h, distilled network 1.1 h" in card
    monkeypatch.setattr(pretrained, "BUILTIN_DIR", installed)
    assert predict_cli.main(["-i", str(_inputs(tmp_path / "in", 1)), "-o", str(tmp_path / "out"), "--no-qc"]) == 0
    assert "folds 0;" in capsys.readouterr().out


def test_a_recipe_started_from_a_model_copies_it_once_and_every_network_fine_tunes_from_the_copy(tmp_path, monkeypatch):
    """--start-from builtin: the shipped model is copied into the work folder and recorded (checksum, generator
    version); folds start from the copy with --pretrained, continued runs with --continue alone; installing another
    model does not change what a resumed run starts from; the card says where the weights came from."""
    from dataclasses import replace

    import deepwml.pretrained.recipe as recipe_module
    from deepwml.pretrained.model_card import model_card
    from deepwml.pretrained.recipe import START_MODEL, _start_model, open_record
    from deepwml.training.pretrained_weights import file_sha256
    from deepwml.utils.atomic import read_json

    shipped = write_model_dir(tmp_path / "pkg" / "wmh_flair2d", tiny_plan(), folds=(0,))
    write_json(shipped / "dataset.json", dict(read_json(shipped / "dataset.json"), synthetic={"generator_version": 8}))
    monkeypatch.setattr(pretrained, "BUILTIN_DIR", shipped)
    recipe, work = replace(Recipe(), start_from="builtin"), tmp_path / "work"
    assert recipe.record()["start_from"] == "builtin" and "start_from" not in Recipe().record()
    work.mkdir()
    record_path = work / "recipe.json"
    open_record(record_path, recipe, 9)
    args = _start_model(recipe, work, record_path)
    assert args == ["--pretrained", str(work / START_MODEL / "fold_0")]
    digest = file_sha256(shipped / "fold_0" / "checkpoint_best.pth")
    start = read_json(record_path)["start_model"]
    assert start["sha256"] == [digest] and start["generator_version"] == 8 and start["source"] == "builtin"
    # a newer model installed in between (e.g. by this very recipe) does not change a resumed run's start
    monkeypatch.setattr(pretrained, "BUILTIN_DIR", write_model_dir(tmp_path / "pkg2" / "wmh_flair2d", tiny_plan(), folds=(0,)))
    assert _start_model(recipe, work, record_path) == args and read_json(record_path)["start_model"]["sha256"] == [digest]
    with pytest.raises(DeepWMLError, match="--start-from: not a trained model's PLAN folder"):
        _start_model(replace(recipe, start_from=str(tmp_path / "nothing")), tmp_path / "other", record_path)

    calls = _train_fold_twice(recipe_module, recipe, "cpu_fast_robust_deep_in", tmp_path / "results", args, monkeypatch)
    assert calls[0][-2:] == args
    assert calls[-1][-1] == "--continue" and "--pretrained" not in calls[-1]
    card = model_card(recipe, read_json(record_path))
    assert f"started from the weights of `builtin` (generator version 8; checkpoint sha256 {digest[:12]}" in card
    assert "started from" not in model_card(Recipe(), {})


def _train_fold_twice(recipe_module, recipe, plan, results, args, monkeypatch):
    """The deepwml_train argument lists of one fold run fresh and then continued (deepwml_train itself faked)."""
    calls = []

    def fake_run(module, argv, env):
        calls.append(argv)
        write_json(results / "fold_0" / "validation" / "summary.json", {"median_dice": 0.7})

    monkeypatch.setattr(recipe_module, "_run", fake_run)
    recipe_module._train_fold(recipe, "0", 510, plan, results, {}, "cpu", args)
    (results / "fold_0" / "validation" / "summary.json").unlink()
    (results / "fold_0" / "checkpoint_latest.pth").write_bytes(b"")
    recipe_module._train_fold(recipe, "0", 510, plan, results, {}, "cpu", args)
    return calls


def test_training_hours_count_each_epoch_once_across_resumed_runs(tmp_path):
    """A fold's training time comes from its log: an epoch logged again after a resume and a line cut by a kill do
    not count twice or break the card."""
    from deepwml.pretrained.recipe import training_hours

    log = tmp_path / "fold_0" / "log.jsonl"
    log.parent.mkdir()
    rows = [{"epoch": 1, "epoch_seconds": 1800.0, "val_seconds": 0.0}, {"epoch": 2, "epoch_seconds": 1700.0, "val_seconds": 100.0},
            {"epoch": 2, "epoch_seconds": 1700.0, "val_seconds": 100.0}]
    log.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"epoch": 3, "epoch_sec', encoding="utf-8")
    assert training_hours(log.parent) == 1.0
    assert training_hours(tmp_path / "missing") is None


def test_train_pretrained_takes_folds():
    """--folds picks the ensemble's members (deduplicated, checked like deepwml_train's fold)."""
    from deepwml.cli.train_pretrained import main

    assert main(["--workdir", "/nonexistent", "--folds", "x"]) == 2


@pytest.mark.slow
def test_recipe_end_to_end_at_toy_size(tmp_path):
    """deepwml_train_pretrained runs every stage and installs a model that predicts, fine-tuned from the shipped one;
    a second run resumes and adds the distilled network."""
    import torch

    from deepwml.cli.train_pretrained import main

    # three centres of small matrices (one case each at this scale, one per disease) instead of all twelve; starting
    # from the shipped model runs the real deepwml_train --pretrained on a recipe's plan (a run from random weights
    # differs only by that argument, and the demo trains from random weights end to end)
    centres = ["--centres", "CSVD#1,NMOSD#3,MS#1"]
    args = ["--workdir", str(tmp_path / "work"), "--scale", "0.01", "--epochs", "1", "--iterations", "1",
            "--heldout-scale", "0.01", "--install-to", str(tmp_path / "model"), "-np", "2", "--start-from", "builtin"] + centres
    assert main(args + ["--no-distill"]) == 0
    assert (tmp_path / "model" / "fold_0" / "checkpoint_best.pth").is_file()
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text(encoding="utf-8")
    # the fold fine-tuned the copy of the shipped model, and its checkpoint and the card say so
    work = tmp_path / "work"
    fold = next((work / "results").glob("Dataset*/*/fold_0"))
    origin = torch.load(fold / "checkpoint_latest.pth", map_location="cpu", weights_only=False)["pretrained"]
    assert origin["sha256"] == read_json(work / "recipe.json")["start_model"]["sha256"][0]
    assert "started from the weights of `builtin`" in card
    assert "generator version" in card and "Probabilities calibrated (`deepwml_calibrate`)" in card
    assert "only centres CSVD#1, NMOSD#3, MS#1" in card
    for dataset in ("Dataset510_SynthPretrain", "Dataset511_SynthHeldout", "Dataset514_SynthCalibration"):
        assert len(list((tmp_path / "work" / "raw" / dataset / "labelsTr").glob("*.nii.gz"))) == 3
    # the shipped network's probabilities are calibrated on a synthetic set of a third seed, and installed so
    installed = torch.load(tmp_path / "model" / "fold_0" / "checkpoint_best.pth", weights_only=True)
    assert len(installed["temperature"]) == 2 and installed["calibration"]["cases"]
    # and then its threshold and lesion filters chosen on that set, after the calibration whose probabilities they cut
    assert 0 < installed["postprocessing"]["threshold"] < 1 and installed["postprocessing"]["record"]["cases"]
    assert "Postprocessing chosen (`deepwml_find_postprocessing`" in card
    # both fitted on flip-averaged probabilities, so deepwml_predict predicts it with TTA by default
    assert installed["calibration"]["tta"] is True and installed["postprocessing"]["tta"] is True
    assert "left-right flip TTA" in card and "`--no-tta` the flip" in card
    assert (tmp_path / "work" / "raw" / "Dataset514_SynthCalibration" / "labelsTr").is_dir()
    # the same work folder takes on a distillation stage (every earlier stage resumes and skips: the data, caches,
    # trained folds and held-out predictions are the first run's), one network learns the trained fold(s), is installed
    assert main(args) == 0  # the default
    assert list((work / "distilled").glob("Dataset*/*/fold_0/checkpoint_best.pth"))
    assert read_json(work / "recipe.json")["teacher_figures"] and (work / "heldout_report_distilled" / "summary.json").is_file()
    card = (tmp_path / "model" / "MODEL_CARD.md").read_text(encoding="utf-8")
    assert "distilled from" in card and "started from the weights of `builtin`" in card


@pytest.mark.parametrize("centre,skull_stripped", [("CSVD#3", False), ("MS#3", True)])
def test_the_shipped_model_segments_an_unseen_synthetic_scan(tmp_path, centre, skull_stripped):
    """Out of the box: the package ships a model, and it finds the lesions of a scan drawn with a seed it never saw;
    the shipped anatomy model beside it measures the brain and ventricles the generator drew."""
    import pandas as pd

    from deepwml.anatomy.labels import VENTRICLE, anatomy_from_truth, brain_mask
    from deepwml.anatomy.volumes import brain_coverage
    from deepwml.evaluation.case_metrics import dice
    from deepwml.pretrained import BUILTIN_DIR
    from deepwml.synthetic.generate import generate_case

    assert (BUILTIN_DIR / "MODEL_CARD.md").is_file() and list(BUILTIN_DIR.glob("fold_*/checkpoint_*.pth"))
    case = generate_case(centre, index=2, seed=4242, skull_stripped=skull_stripped, truth=True)
    write_image(case.image, case.geometry, tmp_path / "in" / "scan.nii.gz")
    assert predict_cli.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-qc"]) == 0
    mask = read_image(tmp_path / "out" / "scan.nii.gz").array > 0
    assert dice(case.label > 0, mask) > SHIPPED_MODEL_MIN_DICE
    row = pd.read_csv(tmp_path / "out" / "summary.csv").iloc[0]
    truth, voxel_ml = anatomy_from_truth(case.truth), case.geometry.voxel_volume_ml
    assert row["brain_volume_ml"] == pytest.approx(np.count_nonzero(brain_mask(truth)) * voxel_ml, rel=0.08)
    assert row["ventricle_volume_ml"] == pytest.approx(np.count_nonzero(truth == VENTRICLE) * voxel_ml, rel=0.25)
    assert row["lesion_percent_of_brain"] == pytest.approx(100 * row["total_lesion_volume_ml"] / row["brain_volume_ml"], rel=1e-3)
    assert row["brain_coverage"] == brain_coverage(truth, case.geometry)


def test_the_recipe_preset_is_the_shipped_plan_cpu_fast_with_strong_intensity_augmentation():
    """The recipe trains on the shipped model's plan: cpu_fast's preprocessing and U-Net (batch norm at the finer
    levels, instance norm at the two coarsest), with intensity augmentation that changes what a lesion's brightness
    looks like; `deepwml_train -p cpu_fast --pretrained builtin` fine-tunes it through the norm bridge."""
    from deepwml.planning.plan import load_preset
    from deepwml.pretrained import builtin_model_dir
    from deepwml.training.augmentation import build_transforms

    robust, fast = load_preset(Recipe().preset), load_preset("cpu_fast")
    shipped = json.loads((builtin_model_dir() / "plans.json").read_text())
    assert robust.name == shipped["name"] == "cpu_fast_robust_deep_in"
    assert robust.to_dict()["network"] == shipped["network"] and robust.to_dict()["preprocessing"] == shipped["preprocessing"]
    assert dataclasses.replace(robust.network, norm=fast.network.norm) == fast.network and robust.preprocessing == fast.preprocessing
    aug = robust.training.augmentation
    assert aug.gamma[1] >= 1.5 and aug.contrast is not None and aug.low_resolution is not None and aug.blur_sigma is not None
    rng = np.random.default_rng(0)
    data = rng.normal(size=(16, 1, 64, 64)).astype(np.float32)
    seg = (rng.random((16, 1, 64, 64)) < 0.1).astype(np.float32)
    np.random.seed(0)
    out = build_transforms(aug, (64, 64))(data=data.copy(), seg=seg.copy())
    assert out["data"].shape == data.shape and set(np.unique(out["seg"])) <= {0.0, 1.0}
    changed = [not np.allclose(out["data"][i], data[i]) and not np.allclose(out["data"][i], data[i, :, :, ::-1])
               for i in range(16)]
    assert sum(changed) >= 8  # most samples see at least one of the transforms at p 0.25 each


def test_a_work_folder_ships_either_checkpoint_and_scores_each_apart(tmp_path):
    """--checkpoint latest on a work folder trained with the default: training is not redone (the record is the same
    recipe), the held-out set is predicted again into its own folder, and the card says which checkpoint the
    validation figures are of."""
    from dataclasses import replace

    from deepwml.pretrained.model_card import model_card
    from deepwml.pretrained.recipe import _heldout_folder, open_record
    from deepwml.utils.atomic import read_json

    best, latest = replace(Recipe(), folds=("0",), epochs=20), replace(Recipe(), folds=("0",), epochs=20, checkpoint="latest")
    record = tmp_path / "recipe.json"
    open_record(record, best, 10)
    open_record(record, latest, 10)
    assert read_json(record)["recipe"]["checkpoint"] == "latest"
    with pytest.raises(DeepWMLError, match="another recipe"):
        open_record(record, replace(latest, epochs=30), 10)
    assert _heldout_folder(tmp_path, "") == tmp_path / "heldout_predictions"
    assert _heldout_folder(tmp_path, "", checkpoint="latest") == tmp_path / "heldout_predictions_latest"
    assert _heldout_folder(tmp_path, "0-1", "heldout_report", "latest") == tmp_path / "heldout_report_0-1_latest"
    card = model_card(latest, {"validation": {"0": {"median_dice": 0.758, "epoch": 6}}})
    assert "checkpoint `latest`" in card and "0.758 (of the best checkpoint, epoch 6; the shipped network is the last, epoch 20)" in card
    assert "of the best checkpoint" not in model_card(best, {"validation": {"0": {"median_dice": 0.758, "epoch": 6}}})


def test_an_installed_model_is_read_with_the_checkpoint_it_holds(tmp_path):
    """A model exported with its last checkpoint (the shipped model, deepwml_install_model) holds that network only:
    it is loaded and fine-tuned from whatever checkpoint a command asks for; a training folder still names what is
    missing."""
    from deepwml.inference.model_loading import check_model
    from deepwml.inference.packaging import export_model, install_model
    from deepwml.pretrained.recipe import _start_model, open_record

    trained = write_model_dir(tmp_path / "res" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), checkpoint="checkpoint_latest.pth")
    with pytest.raises(DeepWMLError, match="use --checkpoint latest"):
        check_model(trained)
    export_model(trained, tmp_path / "m.zip", ["0"], "latest")
    installed = install_model(tmp_path / "m.zip", tmp_path / "installed")
    for asked in ("best", "latest"):
        spec = check_model(installed, checkpoint=asked)
        assert spec.checkpoint == "latest" and spec.checkpoints == [installed / "fold_0" / "checkpoint_latest.pth"]
    # --start-from such a model starts from the network it holds
    from dataclasses import replace

    recipe, work = replace(Recipe(), folds=("0",), start_from=str(installed)), tmp_path / "work"
    work.mkdir()
    open_record(work / "recipe.json", recipe, 10)
    assert _start_model(recipe, work, work / "recipe.json") == ["--pretrained", str(work / "start_model" / "fold_0")]


def test_a_recipe_can_distil_its_start_model_into_one_network_of_another_plan(tmp_path, monkeypatch):
    """--distill-start (with --start-from, one fold): the network starts from the start model's copy and learns its
    probabilities (--distill-from the copy), with the recipe's --lr and --distill-weight, on a fresh run only; the
    record keeps older work folders valid; impossible combinations are refused before anything is made; the CLI
    implies --no-distill and fold 0; the card says what was done."""
    from dataclasses import replace

    import deepwml.pretrained.recipe as recipe_module
    from deepwml.cli.train_pretrained import main as train_pretrained
    from deepwml.pretrained.model_card import model_card
    from deepwml.pretrained.recipe import START_MODEL, _start_model, _training_args, open_record

    assert not {"distill_start", "learning_rate", "distill_weight"} & set(Recipe().record())
    recipe = replace(Recipe(), start_from="builtin", distill=False, folds=("0",), distill_start=True, learning_rate=5e-4,
                     distill_weight=0.7, preset="cpu_fast_robust_bn")
    assert {"distill_start": True, "learning_rate": 5e-4, "distill_weight": 0.7}.items() <= recipe.record().items()
    for bad, message in ((dict(start_from=None), "needs --start-from"), (dict(distill=True), "give one"),
                         (dict(folds=("0", "1")), "give one fold"), (dict(learning_rate=0.0), "--lr must be positive"),
                         (dict(distill_weight=1.5), r"in \(0, 1\]"),
                         (dict(distill_start=False), "needs --distill or --distill-start")):
        with pytest.raises(DeepWMLError, match=message):
            run_recipe(replace(recipe, **bad), tmp_path / "refused", None)
    assert not (tmp_path / "refused").exists()

    shipped = write_model_dir(tmp_path / "pkg" / "wmh_flair2d", tiny_plan(), folds=(0,))
    monkeypatch.setattr(pretrained, "BUILTIN_DIR", shipped)
    work = tmp_path / "work"
    work.mkdir()
    open_record(work / "recipe.json", recipe, 12)
    args = _start_model(recipe, work, work / "recipe.json") + _training_args(recipe, work)
    assert args == ["--pretrained", str(work / START_MODEL / "fold_0"), "--distill-from", str(work / START_MODEL),
                    "--lr", "0.0005", "--distill-weight", "0.7"]
    calls = _train_fold_twice(recipe_module, recipe, "cpu_fast_robust_bn", tmp_path / "results", args, monkeypatch)
    assert calls[0][-len(args):] == args
    assert calls[-1][-1] == "--continue" and "--distill-from" not in calls[-1] and "--lr" not in calls[-1]

    card = model_card(recipe, read_json(work / "recipe.json"))
    assert "learns its probabilities beside the labels" in card and "loss 0.3 x labels + 0.7 x the start model's" in card
    assert "at learning rate 0.0005, not from random weights" in card
    assert "distilled from the start model `builtin`" in recipe.shipped_text()

    seen = []
    monkeypatch.setattr(recipe_module, "run_recipe", lambda r, *a, **k: seen.append(r))
    assert train_pretrained(["--workdir", str(tmp_path / "w"), "--start-from", "builtin", "--distill-start",
                             "--preset", "cpu_fast_robust_bn", "--lr", "5e-4", "--distill-weight", "0.7"]) == 0
    assert seen[-1] == replace(Recipe(), start_from="builtin", distill=False, folds=("0",), distill_start=True,
                               learning_rate=5e-4, distill_weight=0.7, preset="cpu_fast_robust_bn")
