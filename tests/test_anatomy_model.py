"""The anatomy model of issue #14: synthetic anatomy datasets, deepwml_predict's anatomy options, the recipe's kind."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from conftest import oblique_direction, tiny_case
from deepwml import pretrained
from deepwml.anatomy.labels import DATASET_LABELS, LESION, LESION_AWARE_LABELS, anatomy_from_truth, with_lesion_class
from deepwml.cli import predict as predict_cli
from deepwml.imageio import Geometry, read_image, write_image
from deepwml.pretrained.model_card import model_card
from deepwml.pretrained.recipe import ANATOMY_SCORES, Recipe
from deepwml.utils.errors import DeepWMLError
from deepwml_testing.toy_models import tiny_plan, write_model_dir


def anatomy_plan():
    """A tiny 5-class plan (random weights make a valid, if meaningless, anatomy model)."""
    plan = tiny_plan(matrix=32, name="anatomy_tiny")
    plan.network.num_classes, plan.training.loss = 5, "ce_dice"
    return plan


@pytest.fixture
def models(tmp_path, monkeypatch):
    """(lesion model, anatomy model, input folder); no shipped anatomy model."""
    monkeypatch.setattr(pretrained, "ANATOMY_DIR", tmp_path / "no_shipped_anatomy")
    lesion = write_model_dir(tmp_path / "lesion" / "Dataset999_Toy" / "tiny", tiny_plan())
    labels = {"name": "Dataset998_Anat", "file_ending": ".nii.gz", "channel_names": {"0": "FLAIR"}, "labels": DATASET_LABELS}
    anatomy = write_model_dir(tmp_path / "anat" / "Dataset998_Anat" / "anatomy_tiny", anatomy_plan(), kind="random",
                              dataset_json=labels)
    image, _, geometry = tiny_case(shape_zyx=(5, 56, 48), spacing_xyz=(0.8, 0.9, 5.0), direction=oblique_direction())
    write_image(image, geometry, tmp_path / "in" / "scan.nii.gz")
    return lesion, anatomy, tmp_path / "in"


def test_predict_writes_the_anatomy_map_on_the_input_grid_without_changing_the_lesion_outputs(tmp_path, models, capsys):
    """--save-anatomy: CASE_anatomy holds only anatomy classes, on the input's (tilted) grid; the lesion mask is the
    one a run without anatomy writes; a second run finds the case done."""
    lesion, anatomy, inputs = models
    args = ["-i", str(inputs), "-m", str(lesion), "--no-qc"]
    assert predict_cli.main(args + ["-o", str(tmp_path / "a"), "--anatomy-model", str(anatomy), "--save-anatomy"]) == 0
    assert f"anatomy model: {anatomy}" in capsys.readouterr().out
    assert predict_cli.main(args + ["-o", str(tmp_path / "b"), "--no-anatomy"]) == 0
    assert "anatomy model: none" in capsys.readouterr().out
    written = read_image(tmp_path / "a" / "scan_anatomy.nii.gz", dtype=None)
    source = read_image(inputs / "scan.nii.gz")
    assert not written.geometry.mismatches(source.geometry) and written.array.dtype == np.uint8
    assert set(np.unique(written.array)) <= set(DATASET_LABELS.values())
    assert np.array_equal(read_image(tmp_path / "a" / "scan.nii.gz", dtype=None).array,
                          read_image(tmp_path / "b" / "scan.nii.gz", dtype=None).array)
    assert not (tmp_path / "b" / "scan_anatomy.nii.gz").exists()
    assert predict_cli.main(args + ["-o", str(tmp_path / "a"), "--anatomy-model", str(anatomy), "--save-anatomy"]) == 0
    assert "1 already done" in capsys.readouterr().out


@pytest.mark.parametrize("extra,message", [
    (["--save-anatomy"], "ships no anatomy model.*--anatomy-model"),
    (["--no-anatomy", "--save-anatomy"], "--no-anatomy contradicts"),
    (["--anatomy-model", "{tmp}/missing"], "missing: model folder not found"),
    (["--anatomy-model", "{lesion}"], "not an anatomy model"),
])
def test_a_missing_or_wrong_anatomy_model_is_one_clear_line_and_nothing_is_written(tmp_path, models, capsys, extra, message):
    """Asking for anatomy that cannot be had stops before any output; without asking, the run goes on without it."""
    lesion, _, inputs = models
    extra = [e.format(tmp=tmp_path, lesion=lesion) for e in extra]
    assert predict_cli.main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(lesion)] + extra) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()


def test_without_a_shipped_anatomy_model_prediction_runs_without_anatomy(tmp_path, models, capsys):
    """The default uses the shipped anatomy model only when the install has one."""
    lesion, _, inputs = models
    assert predict_cli.main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(lesion), "--no-qc"]) == 0
    assert "anatomy model: none" in capsys.readouterr().out


def test_make_synthetic_anatomy_writes_the_anatomy_maps_as_labels(tmp_path):
    """deepwml_make_synthetic --anatomy: same images, anatomy label maps, the five classes in dataset.json."""
    from deepwml.cli.make_synthetic import main
    from deepwml_testing.cases import input_case

    assert main(["--raw", str(tmp_path), "--dataset-id", "520", "--name", "Anat", "--centres", "CSVD#3", "--scale", "0.01",
                 "--test-fraction", "0", "--anatomy"]) == 0
    folder = tmp_path / "Dataset520_Anat"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == DATASET_LABELS and meta["synthetic"]["labels"] == "anatomy"
    case = input_case("CSVD#3", 1, 0, truth=True)
    label = read_image(folder / "labelsTr" / "CSVD3_001.nii.gz", dtype=None).array
    assert np.array_equal(label, anatomy_from_truth(case.truth)) and set(np.unique(label)) == {0, 1, 2, 3, 4}
    assert np.array_equal(read_image(folder / "imagesTr" / "CSVD3_001.nii.gz", dtype=None).array, case.image)


def test_make_synthetic_lesion_class_adds_the_lesions_to_the_anatomy_maps(tmp_path, capsys):
    """--anatomy --lesion-class: the anatomy maps with the case's lesion voxels in the parenchyma as class 5, named in
    dataset.json; --lesion-class alone is refused before anything is written."""
    from deepwml.cli.make_synthetic import main
    from deepwml_testing.cases import input_case

    assert main(["--raw", str(tmp_path), "--dataset-id", "521", "--name", "AnatLes", "--centres", "CSVD#3", "--scale", "0.01",
                 "--test-fraction", "0", "--anatomy", "--lesion-class"]) == 0
    folder = tmp_path / "Dataset521_AnatLes"
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == LESION_AWARE_LABELS and meta["synthetic"]["labels"] == "anatomy_lesions"
    case = input_case("CSVD#3", 1, 0, truth=True)
    label = read_image(folder / "labelsTr" / "CSVD3_001.nii.gz", dtype=None).array
    assert np.array_equal(label, with_lesion_class(anatomy_from_truth(case.truth), case.label > 0))
    assert (label == LESION).sum() > 0.9 * (case.label > 0).sum()
    assert main(["--raw", str(tmp_path), "--dataset-id", "522", "--name", "X", "--scale", "0.01", "--lesion-class"]) == 2
    assert "--lesion-class needs --anatomy" in capsys.readouterr().err and not (tmp_path / "Dataset522_X").exists()


def test_a_lesion_aware_anatomy_model_writes_a_map_without_its_lesion_class(tmp_path, models):
    """A six-class (lesion-aware) anatomy model is accepted; its lesion class, which the network does predict, is given
    back to tissue, so CASE_anatomy holds only the anatomy map's five classes."""
    from deepwml.anatomy.cleanup import enclosed_cortex_to_white_matter, lesions_to_tissue
    from deepwml.inference.anatomy import anatomy_map, load_anatomy_model
    from deepwml.preprocessing.transforms import revert_label_probabilities
    from deepwml.training.device import setup_device

    lesion, _, inputs = models
    plan = anatomy_plan()
    plan.network.num_classes = 6
    labels = {"name": "Dataset997_AnatLes", "file_ending": ".nii.gz", "channel_names": {"0": "FLAIR"}, "labels": LESION_AWARE_LABELS}
    aware = write_model_dir(tmp_path / "anat6" / "Dataset997_AnatLes" / "anatomy_tiny", plan, kind="random", dataset_json=labels)
    model = load_anatomy_model(aware, setup_device("cpu"))
    prepared = model.prepare(read_image(inputs / "scan.nii.gz"))
    probs = model.predict(prepared)
    raw = revert_label_probabilities(probs, prepared.props)
    assert (raw == LESION).any()  # random weights do call some voxels lesion: the test below is not empty
    assert np.array_equal(anatomy_map(probs, prepared.props), enclosed_cortex_to_white_matter(lesions_to_tissue(raw)))
    assert predict_cli.main(["-i", str(inputs), "-o", str(tmp_path / "a"), "-m", str(lesion), "--no-qc", "--anatomy-model",
                             str(aware), "--save-anatomy"]) == 0
    written = read_image(tmp_path / "a" / "scan_anatomy.nii.gz", dtype=None).array
    assert set(np.unique(written)) <= set(DATASET_LABELS.values())


def test_label_maps_are_scored_per_class_group(tmp_path):
    """Dice of pooled classes per case; a group absent from both maps has none; a missing prediction names the file."""
    from deepwml.evaluation.label_maps import score_label_maps

    geometry = Geometry((4, 4, 1), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    ref = np.array([[[1, 1, 2, 2], [1, 1, 2, 2], [3, 3, 0, 0], [3, 3, 0, 0]]], np.uint8)
    pred = ref.copy()
    pred[0, 0, :2] = 3
    write_image(ref, geometry, tmp_path / "ref" / "a.nii.gz")
    write_image(pred, geometry, tmp_path / "pred" / "a.nii.gz")
    summary = score_label_maps(tmp_path / "ref", tmp_path / "pred", {"one": (1,), "brain": (1, 3), "four": (4,)})
    assert summary["mean_dice"] == {"one": pytest.approx(2 * 2 / 6), "brain": 1.0, "four": None}
    # a map passed through prediction_map first (a lesion-aware model's map given back to tissue)
    mapped = score_label_maps(tmp_path / "ref", tmp_path / "pred", {"one": (1,)}, prediction_map=lambda a: np.where(a == 3, 1, a))
    assert mapped["mean_dice"]["one"] == pytest.approx(2 * 4 / 12)
    (tmp_path / "pred" / "a.nii.gz").unlink()
    with pytest.raises(DeepWMLError, match="a.nii.gz: no prediction for case a"):
        score_label_maps(tmp_path / "ref", tmp_path / "pred", {"one": (1,)})


def test_the_recipe_makes_either_model_and_records_the_lesion_recipe_as_before():
    """A lesion recipe.json has no 'kind' (work folders started before the anatomy model still resume); the anatomy
    recipe has its own defaults, datasets and card."""
    assert "kind" not in Recipe().record() and Recipe.defaults("lesion") == Recipe()
    anatomy = Recipe.defaults("anatomy")
    assert anatomy.record()["kind"] == "anatomy" and anatomy.preset == "anatomy_fast"
    assert anatomy.datasets() != Recipe().datasets()
    card = model_card(anatomy, {"figures": {"ventricle_dice": 0.91234, "heldout_cases": 3}, "generator_version": 5})
    assert "ventricle 0.912" in card and "--anatomy" in card and set(ANATOMY_SCORES) >= {"ventricle", "brain"}
    with pytest.raises(DeepWMLError, match="unknown kind"):
        Recipe.defaults("tumour")
    assert "lesion_class" not in anatomy.record()
    aware = Recipe(**{**anatomy.__dict__, "lesion_class": True})
    assert aware.record()["lesion_class"] is True
    card = model_card(aware, {"figures": {}, "generator_version": 12})
    assert "--anatomy --lesion-class" in card and "5 lesion in the parenchyma" in card


def test_the_lesion_class_is_refused_for_a_lesion_model(tmp_path):
    """--lesion-class without --anatomy stops before anything is made."""
    from deepwml.cli.train_pretrained import main

    assert main(["--workdir", str(tmp_path / "w"), "--lesion-class"]) == 2
    assert not (tmp_path / "w" / "raw").exists()


def test_the_shipped_anatomy_model_finds_the_anatomy_of_an_unseen_synthetic_scan(tmp_path, capsys):
    """Out of the box (no anatomy option) the shipped anatomy model runs; on a scan of a seed it never saw, its map
    finds the ventricles and the brain."""
    from deepwml.evaluation.label_maps import group_dice
    from deepwml.synthetic.generate import generate_case

    assert (pretrained.ANATOMY_DIR / "MODEL_CARD.md").is_file()
    case = generate_case("CSVD#3", 2, 4242, truth=True)
    write_image(case.image, case.geometry, tmp_path / "in" / "scan.nii.gz")
    assert predict_cli.main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--no-qc", "--save-anatomy"]) == 0
    assert f"anatomy model: {pretrained.ANATOMY_DIR}" in capsys.readouterr().out
    predicted = read_image(tmp_path / "out" / "scan_anatomy.nii.gz", dtype=None).array
    dice = group_dice(anatomy_from_truth(case.truth), predicted, ANATOMY_SCORES)
    assert dice["ventricle"] > 0.7 and dice["brain"] > 0.9, dice
