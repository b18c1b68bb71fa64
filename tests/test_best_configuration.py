"""deepwml_find_best_configuration: plans and their ensembles scored out of fold exactly as deepwml_predict and
deepwml_ensemble would segment those cases, the best named with the commands to use it, resumable, and refusals
that name what is wrong."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_case
from deepwml.calibration import best_configuration as bc
from deepwml.calibration.postprocessing_search import COUNTS
from deepwml.cli.ensemble import main as ensemble_main
from deepwml.cli.find_best_configuration import main as best_main
from deepwml.cli.predict import main as predict_main
from deepwml.evaluation.case_metrics import dice
from deepwml.imageio import read_image, write_image
from deepwml.inference.postprocessing import MaskSettings
from deepwml_testing.toy_models import tiny_plan, write_model_dir

DATASET = "Dataset999_Toy"
VALIDATION = {0: ["case0", "case1", "case2"], 1: ["case3", "case4"]}


def _record_validation(model: Path, validation=VALIDATION) -> None:
    """What deepwml_train records in each fold checkpoint: the dataset and the cases it never trained on."""
    for fold, val in validation.items():
        path = model / f"fold_{fold}" / "checkpoint_best.pth"
        ckpt = torch.load(path, weights_only=True)
        ckpt.update(dataset=DATASET, fold=fold, validation_cases=val)
        torch.save(ckpt, path)


#: each fold's brightness threshold (standard deviations) and gain: folds and plans that segment differently, so that
#: a score taken from the wrong fold, plan or average shows
TOY_FOLDS = {("sharp", 0): (1.3, 4.0), ("sharp", 1): (1.8, 4.0), ("graded", 0): (1.7, 0.8), ("graded", 1): (1.2, 0.8)}


@pytest.fixture
def site(tmp_path, monkeypatch) -> Path:
    """Two trained plans of one dataset (a sharp and a graded brightness model, each fold its own threshold) and the
    dataset's raw labelled cases."""
    results = tmp_path / "res" / DATASET
    for plan in ("sharp", "graded"):
        write_model_dir(results / plan, tiny_plan(), folds=(0, 1), gain=TOY_FOLDS[plan, 0][1])
        _record_validation(results / plan)
        for fold in (0, 1):
            path = results / plan / f"fold_{fold}" / "checkpoint_best.pth"
            ckpt = torch.load(path, weights_only=True)
            threshold, gain = TOY_FOLDS[plan, fold]
            ckpt["model"]["head.bias"][0] = -gain * threshold
            torch.save(ckpt, path)
    rng = np.random.default_rng(5)
    for i in range(5):
        image, label, geometry = tiny_case(shape_zyx=(5, 64, 64), seed=20 + i, n_lesions=4)
        for _ in range(6):  # small bright specks no one labelled
            z, y, x = rng.integers(0, 5), rng.integers(12, 52), rng.integers(16, 48)
            image[z, y:y + 3, x:x + 3] += 60.0
        write_image(image, geometry, tmp_path / "raw" / DATASET / "imagesTr" / f"case{i}_0000.nii.gz")
        write_image(label, geometry, tmp_path / "raw" / DATASET / "labelsTr" / f"case{i}.nii.gz")
    (tmp_path / "pre" / DATASET).mkdir(parents=True)
    for kind, folder in (("RAW", "raw"), ("PREPROCESSED", "pre"), ("RESULTS", "res")):
        monkeypatch.setenv(f"DEEPWML_{kind}", str(tmp_path / folder))
    return tmp_path


def _results(site: Path) -> Path:
    return site / "res" / DATASET


def _run(*extra: str) -> int:
    return best_main(["-d", "999", "-p", "sharp", "graded", "--device", "cpu", *extra])


def _predicted_dice(site: Path, plan: str, fold: int, case: str, out: str, *extra: str) -> Path:
    """deepwml_predict of one raw case with one fold of ``plan``."""
    single = site / "in" / out
    single.mkdir(parents=True, exist_ok=True)
    (single / f"{case}.nii.gz").write_bytes((site / "raw" / DATASET / "imagesTr" / f"{case}_0000.nii.gz").read_bytes())
    assert predict_main(["-i", str(single), "-o", str(site / out), "-d", "999", "-p", plan, "-f", str(fold), "--no-qc",
                         "--no-anatomy", "--device", "cpu", *extra]) == 0
    return site / out


def test_each_configuration_scores_what_predict_and_ensemble_would_segment(site, capsys):
    """The per-case Dice of a plan and of the two plans' average equal those of the masks deepwml_predict (the case's
    own fold alone) and deepwml_ensemble write; the three files are written and the best is named."""
    assert _run() == 0
    out = capsys.readouterr().out
    info = json.loads((_results(site) / bc.INFORMATION).read_text())
    assert [c["name"] for c in info["configurations"]].count("sharp+graded") == 1
    assert info["cases"] == [f"case{i}" for i in range(5)] and info["folds"] == ["0", "1"]
    assert f"best: {info['best']}" in out
    scores = pd.read_csv(_results(site) / bc.SCORES)
    assert sorted(scores["configuration"].unique()) == ["graded", "sharp", "sharp+graded"]
    assert len(scores) == 15
    by_config = scores.pivot(index="case", columns="configuration", values="dice")
    assert (by_config["sharp"] != by_config["graded"]).all() and (by_config["sharp+graded"] != by_config["sharp"]).any()
    for i, (fold, case) in enumerate([(0, "case1"), (1, "case4")]):
        reference = read_image(site / "raw" / DATASET / "labelsTr" / f"{case}.nii.gz").array > 0
        maps = []
        for plan in ("sharp", "graded"):
            folder = _predicted_dice(site, plan, fold, case, f"{plan}{i}", "--no-postprocessing", "--save-probabilities")
            row = scores[(scores.configuration == plan) & (scores.case == case)].iloc[0]
            assert dice(reference, read_image(folder / f"{case}.nii.gz").array > 0) == pytest.approx(row["dice"], abs=1e-6)
            maps.append(str(folder))
        assert ensemble_main(["-i", *maps, "-o", str(site / f"ens{i}"), "--threshold", "0.5"]) == 0
        row = scores[(scores.configuration == "sharp+graded") & (scores.case == case)].iloc[0]
        ensembled = read_image(site / f"ens{i}" / f"{case}.nii.gz").array > 0
        assert dice(reference, ensembled) == pytest.approx(row["dice"], abs=1e-6)
    instructions = (_results(site) / bc.INSTRUCTIONS).read_text()
    assert f"Best configuration of {DATASET}: {info['best']}" in instructions
    assert "deepwml_predict -d Dataset999_Toy -p" in instructions


def test_the_postprocessed_score_is_the_one_its_settings_give(site):
    """A configuration's chosen settings, handed to deepwml_predict, give the case scores listed as postprocessed."""
    assert _run("--no-ensembles") == 0
    info = json.loads((_results(site) / bc.INFORMATION).read_text())
    graded = next(c for c in info["configurations"] if c["name"] == "graded")
    settings = graded["postprocessing"]
    scores = pd.read_csv(_results(site) / bc.SCORES)
    row = scores[(scores.configuration == "graded") & (scores.case == "case0")].iloc[0]
    folder = _predicted_dice(site, "graded", 0, "case0", "pp", "--threshold", str(settings["threshold"]),
                             "--min-lesion-ml", str(settings["min_lesion_ml"]),
                             "--min-lesion-peak", str(settings["min_lesion_peak"]))
    reference = read_image(site / "raw" / DATASET / "labelsTr" / "case0.nii.gz").array > 0
    assert dice(reference, read_image(folder / "case0.nii.gz").array > 0) == pytest.approx(row["dice_postprocessed"], abs=1e-6)
    assert "sharp+graded" not in set(scores["configuration"])


@pytest.mark.parametrize("processes", ["1", "2"])
def test_an_interrupted_run_resumes_without_predicting_finished_cases(site, monkeypatch, processes):
    """Cases finished before an interrupt are read back, not predicted again, and the result is the same (with worker
    processes counting them too: those predicted before the interrupt are counted to the end and kept)."""
    calls = []
    original = bc.case_outputs

    def interrupted(predictor, case, *rest):
        if len(calls) == 4:  # two cases of two plans done
            raise KeyboardInterrupt
        calls.append(case.case_id)
        return original(predictor, case, *rest)

    monkeypatch.setattr(bc, "case_outputs", interrupted)
    assert _run("-np", processes) != 0
    assert not (_results(site) / bc.INFORMATION).exists()
    calls.clear()
    monkeypatch.setattr(bc, "case_outputs", lambda p, c, *rest: (calls.append(c.case_id), original(p, c, *rest))[1])
    assert _run("-np", processes) == 0
    assert calls == [c for c in ("case2", "case3", "case4") for _ in range(2)]
    first = json.loads((_results(site) / bc.INFORMATION).read_text())
    calls.clear()
    assert _run("-np", processes) == 0 and calls == []
    again = json.loads((_results(site) / bc.INFORMATION).read_text())
    assert again["configurations"] == first["configurations"]


def test_cases_counted_in_worker_processes_rank_as_the_main_process_does(site):
    """-np 2 (two spawned processes count the cases while the next is predicted) writes the scores and ranking that
    -np 1 writes."""
    written = {}
    for processes in ("1", "2"):
        out = site / f"np{processes}"
        out.mkdir()
        assert _run("-np", processes, "-o", str(out)) == 0
        info = json.loads((out / bc.INFORMATION).read_text())
        written[processes] = ((out / bc.SCORES).read_text(), info["configurations"], info["best"])
    assert written["1"] == written["2"]


def test_a_case_whose_label_changed_is_scored_again(site, monkeypatch):
    """A corrected reference mask is not scored from the kept tables: only that case is predicted again."""
    assert _run("--no-ensembles") == 0
    before = pd.read_csv(_results(site) / bc.SCORES)
    label = site / "raw" / DATASET / "labelsTr" / "case3.nii.gz"
    image = read_image(label)
    write_image(np.zeros_like(image.array), image.geometry, label)  # the reader found no lesion after all
    calls, original = [], bc.case_outputs
    monkeypatch.setattr(bc, "case_outputs", lambda p, c, *rest: (calls.append(c.case_id), original(p, c, *rest))[1])
    assert _run("--no-ensembles") == 0
    assert calls == ["case3", "case3"]
    after = pd.read_csv(_results(site) / bc.SCORES)
    changed = (before.set_index(["configuration", "case"])["dice"] != after.set_index(["configuration", "case"])["dice"])
    assert sorted(changed[changed].index.get_level_values("case")) == ["case3", "case3"]


def test_an_ensemble_is_chosen_only_when_it_beats_the_best_plan_by_the_margin():
    """Averaging two plans costs the time of both: within the margin the single plan is chosen."""
    configs = bc.configurations(["a", "b"], ensembles=True)
    candidates = {c.name: [MaskSettings(0.5)] for c in configs}

    def table(tp: int) -> np.ndarray:
        row = np.zeros((1, len(COUNTS)), np.int64)
        row[0, [COUNTS.index(k) for k in ("tp", "fp", "fn")]] = (tp, 1000 - tp, 1000 - tp)
        row[0, [COUNTS.index(k) for k in ("n_reference", "n_predicted", "n_reference_detected", "n_predicted_touching")]] = 1
        return row

    for ensemble_tp, expected in ((802, "a"), (900, "a+b")):  # Dice 0.802 and 0.9 against the plan's 0.8
        tables = {"a": [table(800)], "b": [table(500)], "a+b": [table(ensemble_tp)]}
        ranked, best = bc.rank(tables, ["x"], configs, candidates, "dice", 0.005)
        assert best.configuration.name == expected
        assert ranked[0].configuration.name == "a+b"  # ranked by score all the same


@pytest.mark.parametrize("problem, message", [
    ("untrained", "plan missing has no trained model here"),
    ("other_splits", "was validated on different cases"),
    ("no_shared_fold", "the plans share no trained fold"),
])
def test_refusals_name_the_problem(site, problem, message, capsys):
    """A plan never trained, plans validated on other cases, or no fold in common: one line, nothing written."""
    plans = ["sharp", "graded"]
    if problem == "untrained":
        plans = ["sharp", "missing"]
    elif problem == "other_splits":
        _record_validation(_results(site) / "graded", {0: ["case0", "case1"], 1: ["case2", "case3", "case4"]})
    else:
        for fold in (0, 1):
            (_results(site) / "graded" / f"fold_{fold}").rename(_results(site) / "graded" / f"fold_{fold + 2}")
    assert best_main(["-d", "999", "-p", *plans, "--device", "cpu"]) != 0
    assert message in capsys.readouterr().err
    assert not (_results(site) / bc.INFORMATION).exists()



def test_each_other_configuration_is_tested_against_the_chosen_one(site):
    """inference_information.json gives, for every configuration but the chosen one, scipy's Wilcoxon signed-rank
    test of its per-case objective against the chosen one's, on the per-case figures of crossval_scores.csv."""
    from scipy import stats

    assert _run() == 0
    info = json.loads((_results(site) / bc.INFORMATION).read_text())
    scores = pd.read_csv(_results(site) / bc.SCORES)
    objective = lambda name: ((scores[scores.configuration == name]["dice_postprocessed"].to_numpy()  # noqa: E731
                               + scores[scores.configuration == name]["lesion_f1_postprocessed"].to_numpy()) / 2)
    for c in info["configurations"]:
        if c["name"] == info["best"]:
            assert c["against_chosen"] is None
            continue
        a, b = objective(c["name"]), objective(info["best"])
        expected = 1.0 if np.allclose(a, b) else stats.wilcoxon(a, b).pvalue
        assert c["against_chosen"]["p_value"] == pytest.approx(expected, abs=1e-4)
        assert c["against_chosen"]["mean_difference"] == pytest.approx(np.mean(a - b), abs=1e-4)


def test_a_plan_that_learned_skull_stripped_scans_is_scored_stripped_as_deepwml_predict_shows_them(site, monkeypatch, capsys):
    """By default each plan sees the validation scans as deepwml_predict shows them: stripped to the anatomy model's
    brain for a plan that learned skull-stripped scans (the probabilities of deepwml_predict's own default run), as
    given for one that does not say; --no-skull-strip shows every plan the scans as given, and kept tables of one are
    never read for the other. (A toy anatomy model, its map replaced by a box inside the head.)"""
    from deepwml.anatomy.labels import DATASET_LABELS, WHITE_MATTER
    from deepwml.inference import pipeline
    from test_anatomy_model import anatomy_plan
    from test_skull_strip import learned_stripped

    labels = {"name": "Dataset998_Anat", "file_ending": ".nii.gz", "channel_names": {"0": "FLAIR"}, "labels": DATASET_LABELS}
    anatomy = write_model_dir(site / "anat" / "Dataset998_Anat" / "anatomy_tiny", anatomy_plan(), kind="random",
                              dataset_json=labels)

    def box(probs, props):
        inside = np.zeros(props["original_shape"], np.uint8)
        inside[:, 16:48, 16:48] = WHITE_MATTER
        return inside

    monkeypatch.setattr(pipeline, "anatomy_map", box)
    learned_stripped(_results(site) / "sharp")
    maps, original = {}, bc.case_outputs

    def spy(predictor, case, thin_slab, anatomy=None):
        probs, image, labels = original(predictor, case, thin_slab, anatomy)
        maps.setdefault((case.case_id, anatomy is not None and anatomy.strip), probs)
        return probs, image, labels

    monkeypatch.setattr(bc, "case_outputs", spy)
    assert _run("--no-ensembles", "--anatomy-model", str(anatomy)) == 0
    assert "(skull-stripped for sharp, as deepwml_predict shows them)" in capsys.readouterr().out
    seen = json.loads((_results(site) / bc.INFORMATION).read_text())["segmented_as"]
    assert {plan: s["skull_strip"] for plan, s in seen.items()} == {"sharp": True, "graded": False}
    assert sorted(k for k in maps if k[1]) == [(f"case{i}", True) for i in range(5)]
    single = site / "in" / "case0"
    single.mkdir(parents=True)
    (single / "case0.nii.gz").write_bytes((site / "raw" / DATASET / "imagesTr" / "case0_0000.nii.gz").read_bytes())
    assert predict_main(["-i", str(single), "-o", str(site / "predicted"), "-d", "999", "-p", "sharp", "-f", "0", "--no-qc",
                         "--save-probabilities", "--no-postprocessing", "--keep-outside-brain", "--backend", "torch",
                         "--no-bf16", "--device", "cpu", "--anatomy-model", str(anatomy)]) == 0
    assert "skull stripped: the lesion model saw only the anatomy model's brain" in capsys.readouterr().out
    np.testing.assert_allclose(maps["case0", True], read_image(site / "predicted" / "case0_prob.nii.gz").array, atol=1e-4)
    stripped = maps.pop(("case0", True))
    maps.clear()
    assert _run("--no-ensembles", "--no-skull-strip", "--anatomy-model", str(anatomy)) == 0
    seen = json.loads((_results(site) / bc.INFORMATION).read_text())["segmented_as"]
    assert {plan: s["skull_strip"] for plan, s in seen.items()} == {"sharp": False, "graded": False}
    assert len(maps) == 5 and not any(k[1] for k in maps)  # predicted anew, as given
    assert np.abs(maps["case0", False] - stripped).max() > 0.1
