"""deepwml_find_postprocessing: the search scores every candidate as deepwml_evaluate would score its masks, the
choice is stored in the model, deepwml_predict applies it unless told otherwise, and it travels with the model."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from conftest import PredictedCaseSpy, tiny_case
from deepwml.calibration.postprocessing_search import SearchGrid, case_counts, case_scores, choose
from deepwml.cli.calibrate import main as calibrate_main
from deepwml.cli.find_postprocessing import main as find_main
from deepwml.cli.predict import main as predict_main
from deepwml.evaluation.case_metrics import case_metrics, dice
from deepwml.imageio import read_image, write_image
from deepwml.inference.batches import probabilities_to_mask
from deepwml.inference.lesion_report import filter_lesions
from deepwml.inference.packaging import export_model, install_model
from deepwml.inference.postprocessing import MaskSettings
from deepwml_testing.toy_models import tiny_plan, write_model_dir

GRID = SearchGrid(thresholds=(0.3, 0.5, 0.7), min_lesion_ml=(0.0, 0.01, 0.05), min_lesion_peak=(0.0, 0.8, 0.9),
                  min_lesion_contrast=(0.0, 1.1, 1.2))


def _random_case(seed: int):
    """Smooth random probabilities with many small and a few large components, and a reference that overlaps some."""
    _, _, geometry = tiny_case(shape_zyx=(6, 48, 48), seed=seed)
    rng = np.random.default_rng(seed)
    probs = ndimage.gaussian_filter(rng.random((6, 48, 48)), (0.5, 1.5, 1.5))
    probs = (((probs - probs.min()) / np.ptp(probs)) ** 1.5).astype(np.float32)  # dozens of lesions at 0.5 and 0.7
    reference = ndimage.gaussian_filter(rng.random((6, 48, 48)), (0.5, 2, 2)) + 0.3 * probs > 0.5 + 0.3 * 0.5
    # a scan in which lesions stand out from the tissue around them by anything from nothing to about a half
    image = (100 * (1 + 0.6 * probs * rng.random(probs.shape) ** 0.5)).astype(np.float32)
    image[:, :, :3] = 0  # a strip of background, which no ring counts
    return probs, reference, geometry, image


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_candidate_scores_as_the_evaluator_scores_its_mask(seed):
    """For each candidate, the counts give the Dice and lesion recall, precision and F1 that deepwml_evaluate's
    case_metrics gives the mask deepwml_predict would write with those settings."""
    probs, reference, geometry, image = _random_case(seed)
    candidates = GRID.candidates(MaskSettings(0.5))
    scores = case_scores(case_counts(probs, reference, None, geometry.voxel_volume_ml, candidates, image, geometry))
    assert len(candidates) > 10 and any(scores["dice"] != scores["dice"][0])
    # the contrast filter changes what some candidates score
    plain = [i for i, c in enumerate(candidates) if c.min_lesion_contrast == 0]
    assert any(scores["lesion_f1"][i] != scores["lesion_f1"][j] for i in plain for j, c in enumerate(candidates)
               if c.min_lesion_contrast > 0 and c.threshold == candidates[i].threshold
               and (c.min_lesion_ml, c.min_lesion_peak) == (candidates[i].min_lesion_ml, candidates[i].min_lesion_peak))
    for i, c in enumerate(candidates):
        mask = filter_lesions(probabilities_to_mask(probs, c.threshold), geometry, probs, c.min_lesion_ml, c.min_lesion_peak,
                              image, c.min_lesion_contrast, c.min_lesion_spread)
        expected = case_metrics(reference, mask > 0, geometry)
        for name in ("dice", "lesion_recall", "lesion_precision", "lesion_f1"):
            assert scores[name][i] == pytest.approx(expected[name]), (c, name)


def test_ignored_voxels_count_neither_way():
    """A label's ignore voxels are left out of the Dice as the evaluator leaves them out of both masks."""
    probs, reference, geometry, image = _random_case(4)
    ignore = np.zeros(reference.shape, bool)
    ignore[:, :20] = True
    candidates = GRID.candidates(MaskSettings(0.5))
    scores = case_scores(case_counts(probs, reference, ignore, geometry.voxel_volume_ml, candidates, image, geometry))
    for i, c in enumerate(candidates):
        mask = filter_lesions(probabilities_to_mask(probs, c.threshold), geometry, probs, c.min_lesion_ml, c.min_lesion_peak,
                              image, c.min_lesion_contrast, c.min_lesion_spread)
        assert scores["dice"][i] == pytest.approx(dice(reference & ~ignore, (mask > 0) & ~ignore))


def test_empty_cases_score_as_the_evaluator_defines_them():
    """Nothing predicted and nothing to find is a perfect case; nothing predicted where there is lesion scores 0."""
    candidates = GRID.candidates(MaskSettings(0.5))
    probs = np.zeros((3, 16, 16), np.float32)
    empty = case_scores(case_counts(probs, np.zeros(probs.shape, bool), None, 0.01, candidates))
    assert np.all(empty["dice"] == 1) and np.all(empty["lesion_f1"] == 1)
    reference = np.zeros(probs.shape, bool)
    reference[1, 4:8, 4:8] = True
    missed = case_scores(case_counts(probs, reference, None, 0.01, candidates))
    assert np.all(missed["dice"] == 0) and np.all(missed["lesion_f1"] == 0)


def test_the_plan_threshold_is_kept_unless_beaten_by_the_margin():
    """The first candidate (the model's own) wins ties and small gains; a clear gain wins; the table is best first."""
    candidates = [MaskSettings(0.5), MaskSettings(0.6), MaskSettings(0.6, 0.01)]
    # counts: tp, fp, fn, n_ref, n_pred, n_ref_detected, n_pred_touching; one case
    base = [50, 50, 50, 4, 4, 2, 2]
    counts = np.array([[base, [52, 48, 48, 4, 4, 2, 2], [52, 48, 48, 4, 4, 2, 2]]])
    small = choose(counts, candidates, "dice", min_gain=0.05)
    assert small.chosen == candidates[0] and not small.changed
    clear = choose(counts, candidates, "dice", min_gain=0.001)
    assert clear.chosen == candidates[1]  # the same score without a filter is preferred
    assert clear.after["dice"] == pytest.approx(0.52) and clear.before["dice"] == pytest.approx(0.5)
    assert [row["threshold"] for row in clear.table][:2] == [0.6, 0.6] and clear.table[-1]["threshold"] == 0.5


# the model's own threshold, a low one whose single blob touches every lesion, a higher one that raises both figures;
# counts: tp, fp, fn, n_ref, n_pred, n_ref_detected, n_pred_touching (one case)
TRADE_CANDIDATES = [MaskSettings(0.5), MaskSettings(0.25), MaskSettings(0.55)]
OWN, BLOB, MODEST = [30, 70, 70, 10, 20, 4, 4], [90, 2000, 10, 10, 1, 10, 1], [35, 60, 65, 10, 16, 5, 5]


def test_both_never_buys_lesion_f1_with_dice():
    """'both' averages Dice and lesion F1, yet never takes a candidate that lowers either: a barely trained model's
    low threshold made one blob touching every lesion (F1 near 1, Dice near 0) and won the average. 'f1' may."""
    candidates = TRADE_CANDIDATES
    # own: Dice 0.3, lesion F1 0.27; blob: Dice 0.08, F1 1.0, the average 0.54 beats the others; modest: both up
    counts = np.array([[OWN, BLOB, MODEST]])
    both = choose(counts, candidates, "both")
    assert both.chosen == candidates[2] and both.after["dice"] > both.before["dice"]
    assert both.table[0]["threshold"] == 0.55 and [r["trades_away"] for r in both.table] == [False, False, True]
    assert both.passed_over[0] == candidates[1] and both.passed_over[1]["lesion_f1"] == 1.0
    assert choose(counts, candidates, "f1").chosen == candidates[1] and choose(counts, candidates, "f1").passed_over is None
    # nothing but the trade on offer: the model's own settings stay
    assert choose(counts[:, :2], candidates[:2], "both").chosen == candidates[0]
    # a fall within min_gain is no trade
    slight = np.array([[OWN, [30, 71, 70, 10, 10, 4, 4], MODEST]])
    assert not any(r["trades_away"] for r in choose(slight, candidates, "both", min_gain=0.01).table)


def test_the_command_names_a_setting_passed_over_for_lowering_one_figure(site, monkeypatch, capsys):
    """The user is told which setting of a higher average was not taken and why, and how to have it anyway."""
    from deepwml.calibration import postprocessing_fit

    result = choose(np.array([[OWN, BLOB, MODEST]]), TRADE_CANDIDATES, "both")
    choice = postprocessing_fit.PostprocessingChoice(result, {"cases": ["a"], "tta": False})
    monkeypatch.setattr(postprocessing_fit, "find_postprocessing", lambda *a, **k: choice)
    assert _find(site, _model(site), "--dry-run") == 0
    captured = capsys.readouterr()
    assert "chose threshold 0.55" in captured.out
    assert "passed over threshold 0.25, of a higher average (mean Dice 0.082, lesion F1 1.000" in captured.err
    assert "--objective dice or f1" in captured.err


@pytest.fixture
def site(tmp_path) -> Path:
    """A toy model whose probabilities grade with brightness, and scans with lesions plus bright specks no one
    labelled: a higher threshold or a smallest-lesion filter does better than the plan's 0.5."""
    model = write_model_dir(tmp_path / "res" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0, 1), gain=1.5)
    rng = np.random.default_rng(5)
    for i in range(5):
        image, label, geometry = tiny_case(shape_zyx=(5, 64, 64), seed=20 + i, n_lesions=4)
        for _ in range(12):  # small bright specks (not lesion): small components a filter removes
            z, y, x = rng.integers(0, 5), rng.integers(12, 52), rng.integers(16, 48)
            image[z, y:y + 3, x:x + 3] += 60.0
        write_image(image, geometry, tmp_path / "images" / f"case{i}.nii.gz")
        write_image(label, geometry, tmp_path / "labels" / f"case{i}.nii.gz")
    assert model.is_dir()
    return tmp_path


def _model(site: Path) -> Path:
    return site / "res" / "Dataset999_Toy" / "tiny"


def _find(site: Path, model: Path, *extra: str) -> int:
    return find_main(["-m", str(model), "-i", str(site / "images"), "-l", str(site / "labels"), "--device", "cpu", *extra])


def _predict(site: Path, out: str, model: Path, *extra: str) -> Path:
    assert predict_main(["-i", str(site / "images"), "-o", str(site / out), "-m", str(model), "--no-qc", "--no-anatomy",
                         *extra]) == 0
    return site / out


def _mean_dice(site: Path, out: Path) -> float:
    return float(np.mean([dice(read_image(site / "labels" / f"case{i}.nii.gz").array > 0,
                               read_image(out / f"case{i}.nii.gz").array > 0) for i in range(5)]))


def _producer(out: Path) -> dict:
    """What the output folder records about the settings that made its masks."""
    return json.loads((out / ".deepwml_output.json").read_text())["predicted_with"]


def _stored(model: Path, fold: int = 0):
    return torch.load(model / f"fold_{fold}" / "checkpoint_best.pth", weights_only=True).get("postprocessing")


def test_chosen_postprocessing_is_stored_and_applied_by_predict(site, capsys):
    """The search beats the plan's threshold on these scans, stores its choice in every fold, and deepwml_predict's
    masks then score what the search said; --no-postprocessing gives back the plan's masks."""
    model = _model(site)
    plain = _predict(site, "plain", model)
    capsys.readouterr()
    assert _find(site, model, "--table", str(site / "table.csv")) == 0
    out = capsys.readouterr().out
    assert "chose threshold" in out and "stored in" in out
    stored = [_stored(model, f) for f in (0, 1)]
    assert stored[0] == stored[1] and stored[0]["record"]["cases"] == [f"case{i}" for i in range(5)]
    settings = MaskSettings(stored[0]["threshold"], stored[0]["min_lesion_ml"], stored[0]["min_lesion_peak"])
    assert settings != MaskSettings(0.5)
    chosen = _predict(site, "chosen", model)
    assert "the model's postprocessing: " + settings.describe() in capsys.readouterr().out
    assert _mean_dice(site, chosen) == pytest.approx(stored[0]["record"]["after"]["dice"], abs=3e-3)
    assert _mean_dice(site, chosen) > _mean_dice(site, plain) + 0.005
    producer = _producer(chosen)
    assert producer["threshold"] == settings.threshold and producer["min_lesion_ml"] == settings.min_lesion_ml
    again = _predict(site, "again", model, "--no-postprocessing")
    for i in range(5):
        np.testing.assert_array_equal(read_image(again / f"case{i}.nii.gz").array, read_image(plain / f"case{i}.nii.gz").array)
    assert (site / "table.csv").read_text().splitlines()[0].startswith("threshold,min_lesion_ml,min_lesion_peak,tta,min_lesion_contrast,dice")


def test_an_interrupted_search_resumes_without_predicting_finished_cases(site, monkeypatch, tmp_path):
    """Each case's counts are kept (in the user cache) as it finishes: after an interrupt only the rest is predicted
    and the choice is the same; an edited label is scored again; with the cache off everything is predicted."""
    monkeypatch.setenv("DEEPWML_CACHE_DIR", str(tmp_path / "cache"))
    spy = PredictedCaseSpy(monkeypatch, stop_after=2)
    seen = spy.seen
    assert _find(site, _model(site), "--dry-run") != 0
    spy.stop_after = None
    seen.clear()
    assert _find(site, _model(site), "--dry-run", "--table", str(tmp_path / "resumed.csv")) == 0
    assert seen == ["case2", "case3", "case4"]
    seen.clear()
    label = site / "labels" / "case1.nii.gz"
    image = read_image(label)
    write_image(np.zeros_like(image.array), image.geometry, label)
    assert _find(site, _model(site), "--dry-run") == 0
    assert seen == ["case1"]
    write_image(image.array, image.geometry, label)  # as it was: same content, a new file, scored again
    assert list((tmp_path / "cache" / "postprocessing_search").glob("*/*.npz"))
    assert _find(site, _model(site)) == 0  # stored: the checkpoints change, so their kept counts go
    assert not list((tmp_path / "cache" / "postprocessing_search").glob("*/*.npz"))
    assert find_main(["-m", str(_model(site)), "--reset"]) == 0
    monkeypatch.setenv("DEEPWML_CACHE_DIR", "off")
    seen.clear()
    assert _find(site, _model(site), "--dry-run", "--table", str(tmp_path / "fresh.csv")) == 0
    assert seen == [f"case{i}" for i in range(5)]
    assert (tmp_path / "resumed.csv").read_text() == (tmp_path / "fresh.csv").read_text()


def test_cases_counted_in_worker_processes_choose_as_the_main_process_does(site, monkeypatch, tmp_path, capsys):
    """-np 2: the cases are counted in two spawned processes while the next is predicted; every candidate's scores,
    on the calibrated model's probabilities, are those counted in the main process (-np 1)."""
    monkeypatch.setenv("DEEPWML_CACHE_DIR", "off")
    model = _model(site)
    assert _find(site, model, "--dry-run", "--table", str(tmp_path / "uncalibrated.csv"), "-np", "2") == 0
    assert calibrate_main(["-m", str(model), "-i", str(site / "images"), "-l", str(site / "labels"), "--device", "cpu"]) == 0
    spy = PredictedCaseSpy(monkeypatch)
    assert _find(site, model, "--dry-run", "--table", str(tmp_path / "here.csv"), "-np", "1") == 0
    assert _find(site, model, "--dry-run", "--table", str(tmp_path / "workers.csv"), "-np", "2") == 0
    assert spy.seen == [f"case{i}" for i in range(5)] * 2
    assert (tmp_path / "workers.csv").read_text() == (tmp_path / "here.csv").read_text()
    # the workers scored the calibrated probabilities (the model's temperatures reached them)
    assert (tmp_path / "workers.csv").read_text() != (tmp_path / "uncalibrated.csv").read_text()
    capsys.readouterr()
    assert _find(site, model, "-np", "0") == 2
    assert "-np must be at least 1, not 0" in capsys.readouterr().err


def test_the_default_number_of_counting_processes_is_one_per_core_up_to_eight(monkeypatch):
    """Each worker holds a predicted case: a 64-core machine gets 8 by default, a 2-core one 2; -np is taken as given."""
    import deepwml.utils.cpu as cpu

    for cores, expected in ((64, 8), (2, 2), (1, 1)):
        monkeypatch.setattr(cpu, "physical_cores", lambda cores=cores: cores)
        assert cpu.worker_processes(None) == expected
    assert cpu.worker_processes(12) == 12


def test_an_interrupt_keeps_the_cases_already_predicted_while_workers_count_them(site, monkeypatch, tmp_path):
    """With worker processes, the cases predicted before an interrupt are counted to the end and kept: a new run
    predicts only the rest and chooses as an uninterrupted one."""
    monkeypatch.setenv("DEEPWML_CACHE_DIR", str(tmp_path / "cache"))
    spy = PredictedCaseSpy(monkeypatch, stop_after=2)
    assert _find(site, _model(site), "--dry-run", "-np", "2") != 0
    spy.stop_after = None
    spy.seen.clear()
    assert _find(site, _model(site), "--dry-run", "-np", "2", "--table", str(tmp_path / "resumed.csv")) == 0
    assert spy.seen == ["case2", "case3", "case4"]
    monkeypatch.setenv("DEEPWML_CACHE_DIR", "off")
    assert _find(site, _model(site), "--dry-run", "-np", "1", "--table", str(tmp_path / "fresh.csv")) == 0
    assert (tmp_path / "resumed.csv").read_text() == (tmp_path / "fresh.csv").read_text()


def test_a_setting_given_for_the_run_wins_over_the_stored_one(site, capsys):
    """--threshold replaces the stored threshold only: the stored lesion filters still apply."""
    model = _model(site)
    assert _find(site, model) == 0
    stored = _stored(model)
    assert stored["min_lesion_ml"] > 0  # the specks are dropped by a smallest-lesion filter
    out = _predict(site, "t", model, "--threshold", "0.42")
    producer = _producer(out)
    assert producer["threshold"] == 0.42 and producer["min_lesion_ml"] == stored["min_lesion_ml"]
    assert producer["min_lesion_peak"] == stored["min_lesion_peak"]


def test_settings_chosen_with_tta_make_predict_use_tta_unless_no_tta(site, capsys, monkeypatch):
    """deepwml_calibrate --tta and deepwml_find_postprocessing --tta fit on flip-averaged probabilities and record
    it; deepwml_predict then predicts with TTA by default (its masks score what the search said) and --no-tta
    predicts each slice once; a folder made one way is not resumed the other."""
    model = _model(site)
    assert calibrate_main(["-m", str(model), "-i", str(site / "images"), "-l", str(site / "labels"), "--device", "cpu"]) == 0
    capsys.readouterr()
    # settings chosen with TTA on temperatures fitted without it: said, not refused
    assert _find(site, model, "--tta", "--dry-run") == 0
    assert "temperatures were fitted without TTA" in capsys.readouterr().err
    assert calibrate_main(["-m", str(model), "-i", str(site / "images"), "-l", str(site / "labels"), "--device", "cpu",
                           "--tta"]) == 0
    calibration = torch.load(model / "fold_0" / "checkpoint_best.pth", weights_only=True)["calibration"]
    assert calibration["tta"] is True
    capsys.readouterr()
    assert _find(site, model, "--tta") == 0
    assert "fitted" not in capsys.readouterr().err
    stored = _stored(model)
    assert stored["tta"] is True and stored["record"]["tta"] is True
    settings = MaskSettings(stored["threshold"], stored["min_lesion_ml"], stored["min_lesion_peak"], True)
    import deepwml.inference.predictor as torch_engine
    import deepwml.inference.run as run_module

    asked = []  # the TTA each run's lesion predictor was built with, whichever engine computes it

    def spy(cls):
        return lambda *a, **k: asked.append(k.get("tta")) or cls(*a, **k)

    monkeypatch.setattr(run_module, "GraphPredictor", spy(run_module.GraphPredictor))
    monkeypatch.setattr(torch_engine, "SlicePredictor", spy(torch_engine.SlicePredictor))
    default = _predict(site, "default", model)
    assert "the model's postprocessing: left-right flip TTA, " in capsys.readouterr().out
    assert _producer(default)["tta"] is True
    assert _mean_dice(site, default) == pytest.approx(stored["record"]["after"]["dice"], abs=3e-3)
    # the same masks as TTA and the stored settings asked for by hand
    by_hand = _predict(site, "by_hand", model, "--no-postprocessing", "--tta", "--threshold", str(settings.threshold),
                       "--min-lesion-ml", repr(settings.min_lesion_ml), "--min-lesion-peak", repr(settings.min_lesion_peak))
    once = _predict(site, "once", model, "--no-tta")
    assert asked == [True, True, False]
    assert _producer(once)["tta"] is False and _producer(once)["threshold"] == settings.threshold
    for i in range(5):
        np.testing.assert_array_equal(read_image(default / f"case{i}.nii.gz").array,
                                      read_image(by_hand / f"case{i}.nii.gz").array)
    capsys.readouterr()
    assert predict_main(["-i", str(site / "images"), "-o", str(default), "-m", str(model), "--no-qc", "--no-anatomy",
                         "--no-tta"]) != 0
    assert "tta" in capsys.readouterr().err


def test_dry_run_and_reset(site, capsys):
    """--dry-run changes no byte; --reset removes a stored choice; calibrating again removes it with a note."""
    model = _model(site)
    path = model / "fold_0" / "checkpoint_best.pth"
    before = path.read_bytes()
    assert _find(site, model, "--dry-run") == 0
    assert path.read_bytes() == before and "dry run" in capsys.readouterr().out
    assert _find(site, model) == 0 and _stored(model) is not None
    assert find_main(["-m", str(model), "--reset"]) == 0 and _stored(model) is None
    assert _find(site, model) == 0
    capsys.readouterr()
    assert calibrate_main(["-m", str(model), "-i", str(site / "images"), "-l", str(site / "labels"), "--device", "cpu"]) == 0
    assert "removed the model's stored postprocessing" in capsys.readouterr().err and _stored(model) is None


def test_a_model_that_cannot_be_beaten_keeps_its_threshold(site, capsys):
    """With a margin no candidate reaches, the plan's threshold is what is stored and applied."""
    model = _model(site)
    assert _find(site, model, "--min-gain", "0.9") == 0
    assert "kept the plan's threshold 0.5" in capsys.readouterr().out
    assert {k: _stored(model)[k] for k in ("threshold", "min_lesion_ml", "min_lesion_peak")} == {
        "threshold": 0.5, "min_lesion_ml": 0.0, "min_lesion_peak": 0.0}


def test_postprocessing_travels_through_export_and_install_and_the_onnx_engine(site):
    """An exported model installs elsewhere with its postprocessing, and ONNX Runtime applies it as torch does."""
    model = _model(site)
    assert _find(site, model) == 0
    export_model(model, site / "m.zip")
    installed = install_model(site / "m.zip", site / "siteB")
    assert _stored(installed) == _stored(model)
    a = _predict(site, "a", model, "--backend", "torch", "--no-bf16")
    b = _predict(site, "b", installed, "--backend", "onnx")
    producer = _producer(b)
    assert producer["threshold"] == _stored(model)["threshold"]
    for i in range(5):
        mine, theirs = read_image(a / f"case{i}.nii.gz").array, read_image(b / f"case{i}.nii.gz").array
        assert np.mean(mine != theirs) < 1e-3


@pytest.mark.parametrize("value,message", [
    ("0.5", "must be a record"),
    ({"threshold": 1.5, "min_lesion_ml": 0.0, "min_lesion_peak": 0.0}, "threshold must lie in (0, 1)"),
    ({"threshold": 0.5, "min_lesion_ml": -1.0, "min_lesion_peak": 0.0}, "min_lesion_ml"),
    ({"threshold": 0.5, "min_lesion_ml": 0.0, "min_lesion_peak": float("nan")}, "min_lesion_peak"),
    ({"threshold": True, "min_lesion_ml": 0.0, "min_lesion_peak": 0.0}, "threshold"),
    ({"threshold": 0.5, "min_lesion_ml": 0.0, "min_lesion_peak": 0.0, "tta": "yes"}, "tta must be true or false"),
])
@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_malformed_stored_postprocessing_is_refused_naming_the_checkpoint(site, value, message, backend, capsys):
    """A model from elsewhere whose postprocessing is not three sane numbers is one line naming the file."""
    model = _model(site)
    path = model / "fold_0" / "checkpoint_best.pth"
    ckpt = torch.load(path, weights_only=True)
    ckpt["postprocessing"] = value
    torch.save(ckpt, path)
    assert predict_main(["-i", str(site / "images"), "-o", str(site / "out"), "-m", str(model), "--no-qc", "--no-anatomy",
                         "--backend", backend]) != 0
    err = capsys.readouterr().err
    assert message in err and "checkpoint_best.pth" in err and "Traceback" not in err
    assert not (site / "out" / "case0.nii.gz").exists()


def test_folds_with_different_postprocessing_are_refused(site, capsys):
    model = _model(site)
    for fold, t in ((0, 0.4), (1, 0.6)):
        path = model / f"fold_{fold}" / "checkpoint_best.pth"
        ckpt = torch.load(path, weights_only=True)
        ckpt["postprocessing"] = {"threshold": t, "min_lesion_ml": 0.0, "min_lesion_peak": 0.0}
        torch.save(ckpt, path)
    assert predict_main(["-i", str(site / "images"), "-o", str(site / "out"), "-m", str(model), "--no-qc", "--no-anatomy"]) != 0
    assert "different postprocessing" in capsys.readouterr().err
    assert predict_main(["-i", str(site / "images"), "-o", str(site / "out"), "-m", str(model), "--no-qc", "--no-anatomy",
                         "--no-postprocessing"]) == 0


def test_without_scans_the_folds_validation_cases_are_predicted_out_of_fold(site, monkeypatch, capsys):
    """-d -p without -i/-l: each fold's validation cases from its checkpoint record, each predicted by that fold only."""
    import deepwml.calibration.fit as fit

    raw = site / "raw" / "Dataset999_Toy"
    for i in range(5):
        for kind, ending in (("images", "_0000"), ("labels", "")):
            (raw / f"{kind}Tr").mkdir(parents=True, exist_ok=True)
            (raw / f"{kind}Tr" / f"case{i}{ending}.nii.gz").write_bytes((site / kind / f"case{i}.nii.gz").read_bytes())
    (site / "pre" / "Dataset999_Toy").mkdir(parents=True)
    for fold, val in ((0, ["case0", "case1", "case2"]), (1, ["case3", "case4"])):
        path = _model(site) / f"fold_{fold}" / "checkpoint_best.pth"
        ckpt = torch.load(path, weights_only=True)
        ckpt.update(dataset="Dataset999_Toy", fold=fold, validation_cases=val)
        torch.save(ckpt, path)
    for kind, folder in (("RAW", "raw"), ("PREPROCESSED", "pre"), ("RESULTS", "res")):
        monkeypatch.setenv(f"DEEPWML_{kind}", str(site / folder))
    seen, predicted_case = [], fit._predicted_case

    def spy(predictor, case, *args):
        seen.append((case.case_id, len(predictor.networks)))
        return predicted_case(predictor, case, *args)

    monkeypatch.setattr(fit, "_predicted_case", spy)
    assert find_main(["-d", "999", "-p", "tiny", "--device", "cpu"]) == 0
    assert "validation case(s) of its folds" in capsys.readouterr().out
    assert seen == [(f"case{i}", 1) for i in range(5)]
    assert "out of fold" in _stored(_model(site))["record"]["source"]
    # a copy (whose slim checkpoints no longer name their validation cases) is chosen for from the model's records
    assert find_main(["-d", "999", "-p", "tiny", "--device", "cpu", "-o", str(site / "copy")]) == 0
    assert _stored(site / "copy")["record"]["cases"] == _stored(_model(site))["record"]["cases"]


def test_a_folder_made_with_other_settings_is_not_resumed_and_the_report_names_the_source(site, capsys):
    """Masks made without the stored postprocessing are not mixed with masks made with it; the patient report says the
    threshold was chosen for the model."""
    model = _model(site)
    assert _find(site, model) == 0
    _predict(site, "out", model, "--no-postprocessing")
    capsys.readouterr()
    assert predict_main(["-i", str(site / "images"), "-o", str(site / "out"), "-m", str(model), "--no-qc",
                         "--no-anatomy"]) != 0
    assert "--overwrite" in capsys.readouterr().err
    report = _predict(site, "report", model, "--report", "html")
    page = (report / "report" / "case0.html").read_text()
    assert "deepwml_find_postprocessing" in page and f"probability ≥ {_stored(model)['threshold']:g}" in page


@pytest.mark.parametrize("command", ["find", "calibrate"])
def test_the_shipped_model_is_tuned_only_as_a_copy(site, monkeypatch, command, capsys):
    """-m builtin without -o is refused before any work (the package's model is every user's); with -o the copy holds
    the result and a card saying so, the shipped model keeps every byte, and the copy predicts."""
    import deepwml.pretrained

    monkeypatch.setattr(deepwml.pretrained, "BUILTIN_DIR", _model(site))
    main = find_main if command == "find" else calibrate_main
    before = {p: p.read_bytes() for p in _model(site).rglob("*.pth")}
    scans = ["-i", str(site / "images"), "-l", str(site / "labels"), "--device", "cpu"]
    assert main(["-m", "builtin", *scans]) == 2
    assert "give -o NEW_FOLDER" in capsys.readouterr().err
    (site / "taken").mkdir()
    assert main(["-m", "builtin", *scans, "-o", str(site / "taken")]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main(["-m", "builtin", *scans, "-o", str(site / "mine")]) == 0
    assert str(site / "mine") in capsys.readouterr().out
    assert {p: p.read_bytes() for p in _model(site).rglob("*.pth")} == before
    assert "## Tuned copy" in (site / "mine" / "MODEL_CARD.md").read_text()
    copies = list((site / "mine").rglob("*.pth"))
    key = "postprocessing" if command == "find" else "temperature"
    assert len(copies) == 2 and all(torch.load(c, weights_only=True)[key] is not None for c in copies)
    assert not [p for p in site.iterdir() if p.name.startswith(".mine")]
    _predict(site, "out", site / "mine")


def test_a_model_installed_under_other_names_is_tuned_as_a_copy_with_its_recorded_names(site, monkeypatch, capsys):
    """The shipped model lives at pretrained/wmh_flair2d, not DatasetNNN_Name/PLAN: its -o copy (and an export) takes
    the dataset and plan names its manifest records."""
    import shutil

    import deepwml.pretrained

    export_model(_model(site), site / "m.zip")
    shipped = site / "pretrained" / "wmh_flair2d"
    shutil.copytree(install_model(site / "m.zip", site / "installed"), shipped)
    monkeypatch.setattr(deepwml.pretrained, "BUILTIN_DIR", shipped)
    assert calibrate_main(["-m", "builtin", "-i", str(site / "images"), "-l", str(site / "labels"), "--device", "cpu",
                           "-o", str(site / "mine")]) == 0
    manifest = json.loads((site / "mine" / "manifest.json").read_text())
    assert (manifest["dataset"], manifest["plan"]) == ("Dataset999_Toy", "tiny")
    assert export_model(shipped, site / "again.zip")["dataset"] == "Dataset999_Toy"
    _predict(site, "out", site / "mine")


@pytest.mark.parametrize("min_ml,min_peak", [(0.01, 0.0), (0.0, 0.7), (0.02, 0.8)])
def test_lesion_filters_drop_what_a_whole_volume_reckoning_drops(min_ml, min_peak):
    """filter_lesions (labelled in the lesions' box, peaks over lesion voxels only) keeps exactly the lesions that
    labelling the whole volume and scipy's per-label maximum keep."""
    from deepwml.evaluation.lesions import label_lesions

    probs, _, geometry, _ = _random_case(7)
    mask = probabilities_to_mask(probs, 0.5)
    labels, n = label_lesions(mask > 0)
    peak = np.asarray(ndimage.maximum(probs, labels, index=np.arange(1, n + 1)), np.float32)
    volume = np.bincount(labels.ravel(), minlength=n + 1)[1:] * geometry.voxel_volume_ml
    keep = np.concatenate([[False], (volume >= min_ml * (1 - 1e-9)) & (peak >= np.float32(min_peak))])
    assert n > 5 and 0 < keep.sum() < n
    np.testing.assert_array_equal(filter_lesions(mask, geometry, probs, min_ml, min_peak), keep[labels].astype(np.uint8))


def test_fitting_computes_in_fp32_on_any_cpu(monkeypatch):
    """Temperatures and postprocessing are fitted on the fp32 probabilities deepwml_predict's CPU engine computes,
    also where torch would autocast to bf16: the same choice on every CPU."""
    import argparse

    import deepwml.training.device as device
    from deepwml.cli.labelled_scans import fitting_device

    monkeypatch.setattr(device, "cpu_has_native_bf16", lambda: True)
    assert device.setup_device("cpu").amp_dtype == torch.bfloat16
    assert fitting_device(argparse.Namespace(device="cpu")).amp_dtype is None


def test_the_dicom_node_and_the_bids_app_pass_tta_or_no_tta_or_the_model_s_choice(tmp_path):
    """deepwml_listen and deepwml_bids take --tta / --no-tta as deepwml_predict does; neither leaves it to the model."""
    from deepwml.cli import listen

    for extra, tta in (([], None), (["--tta"], True), (["--no-tta"], False)):
        request = listen._request(listen.build_parser().parse_args([str(tmp_path / "node"), *extra]))
        assert request.tta is tta
    with pytest.raises(SystemExit):  # both at once is an argument error
        listen.build_parser().parse_args([str(tmp_path / "node"), "--tta", "--no-tta"])
    from deepwml.cli import bids_app

    for extra, tta in (([], None), (["--tta"], True), (["--no-tta"], False)):
        args = bids_app.build_parser().parse_args([str(tmp_path / "bids"), str(tmp_path / "out"), "participant", *extra])
        assert args.tta is tta
