"""deepwml_calibrate and deepwml_find_postprocessing segment labelled scans as deepwml_predict does: the lesion model
sees them skull-stripped to the anatomy model's brain by default for a model that learned skull-stripped scans, and
a search's candidate masks lose the lesions the anatomy map's rules drop."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import PredictedCaseSpy
from deepwml.anatomy.labels import WHITE_MATTER
from deepwml.calibration.fit_input import FitInput, fit_input
from deepwml.cli import calibrate as calibrate_cli
from deepwml.cli import find_postprocessing as find_cli
from deepwml.cli import predict as predict_cli
from deepwml.imageio import read_image, write_image
from deepwml.inference import pipeline
from deepwml.inference.skull_strip import brain_region
from deepwml.utils.errors import DeepWMLError
from test_anatomy_model import models  # noqa: F401 - the fixture
from test_skull_strip import learned_stripped

#: in the head, outside the box the anatomy map is replaced by
SPOT = (2, 10, 24)


@pytest.fixture
def scans(tmp_path, models, monkeypatch):  # noqa: F811
    """(lesion model, anatomy model, image folder, label folder): the toy anatomy model's map replaced by a box of white
    matter, and a bright spot in the head outside it (which the lesion model calls lesion when it sees it)."""
    lesion, anatomy, inputs = models
    scan = read_image(inputs / "scan.nii.gz")
    box = np.zeros(scan.array.shape, np.uint8)
    box[:, 20:36, 16:32] = WHITE_MATTER
    monkeypatch.setattr(pipeline, "anatomy_map", lambda probs, props: box.copy())
    assert not brain_region(box, scan.geometry)[SPOT]
    z, y, x = SPOT
    bright = scan.array.copy()
    bright[z, y - 2:y + 3, x - 3:x + 4] = scan.array.max()
    write_image(bright, scan.geometry, inputs / "scan.nii.gz")
    label = np.zeros(scan.array.shape, np.uint8)
    label[1:4, 24:30, 20:26] = 1
    write_image(label, scan.geometry, tmp_path / "labels" / "scan.nii.gz")
    return lesion, anatomy, inputs, tmp_path / "labels"


class ProbabilitiesSpy:
    """Keeps the probabilities of every case a tuning command predicts."""

    def __init__(self, monkeypatch) -> None:
        import deepwml.calibration.fit as fit

        self.probs, self._predicted_case = [], fit._predicted_case
        monkeypatch.setattr(fit, "_predicted_case", self)

    def __call__(self, *args):
        case = self._predicted_case(*args)
        self.probs.append(case.probs)
        return case


def _predicted_map(tmp_path, lesion, anatomy, inputs, name, *options):
    """deepwml_predict's (uncalibrated) probability map of the scan, computed as the tuning commands compute it."""
    assert predict_cli.main(["-i", str(inputs), "-o", str(tmp_path / name), "-m", str(lesion), "--anatomy-model", str(anatomy),
                             "--no-qc", "--save-probabilities", "--no-postprocessing", "--keep-outside-brain",
                             "--backend", "torch", "--no-bf16", *options]) == 0
    return read_image(tmp_path / name / "scan_prob.nii.gz").array


def test_the_tuning_commands_fit_the_probabilities_deepwml_predict_makes_skull_stripped_or_not(tmp_path, scans, monkeypatch,
                                                                                               capsys):
    """For a model that learned skull-stripped scans, both commands by default see the scan stripped to the anatomy
    model's brain, as deepwml_predict does by default (the same probabilities); with --no-skull-strip, as
    deepwml_predict --no-skull-strip sees it. What they saw is said and stored with the fit."""
    lesion, anatomy, inputs, labels = scans
    learned_stripped(lesion)
    stripped = _predicted_map(tmp_path, lesion, anatomy, inputs, "stripped")
    given = _predicted_map(tmp_path, lesion, anatomy, inputs, "given", "--no-skull-strip")
    assert given[SPOT] > 0.5 > stripped[SPOT]  # the spot outside the brain is lesion only when it is seen
    spy = ProbabilitiesSpy(monkeypatch)
    common = ["-m", str(lesion), "-i", str(inputs), "-l", str(labels), "--anatomy-model", str(anatomy), "--device", "cpu"]
    assert find_cli.main(common + ["--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"(scans skull-stripped to the brain of the anatomy model {anatomy}; masks without lesions outside the brain" in out
    assert "as deepwml_predict segments them)" in out
    assert find_cli.main(common + ["--dry-run", "--no-skull-strip"]) == 0
    assert "(scans as given; masks without lesions outside the brain" in capsys.readouterr().out
    assert calibrate_cli.main(common) == 0
    out = capsys.readouterr().out
    assert f"lesion voxels; scans skull-stripped to the brain of the anatomy model {anatomy}, as deepwml_predict segments them)" in out
    by_default, as_given, calibrated = spy.probs
    np.testing.assert_allclose(by_default, stripped, atol=1e-4)
    np.testing.assert_allclose(as_given, given, atol=1e-4)
    np.testing.assert_allclose(calibrated, stripped, atol=1e-4)
    record = torch.load(lesion / "fold_0" / "checkpoint_best.pth", weights_only=True)["calibration"]
    assert record["skull_strip"] is True and record["anatomy_model"] == str(anatomy)
    assert find_cli.main(common) == 0
    record = torch.load(lesion / "fold_0" / "checkpoint_best.pth", weights_only=True)["postprocessing"]["record"]
    assert record["skull_strip"] is True and record["outside_brain_dropped"] is True and record["min_cortex_contrast"] > 1


def test_a_model_that_does_not_record_stripped_scans_is_fitted_on_the_scans_as_given_unless_asked(tmp_path, scans,
                                                                                                  monkeypatch, capsys):
    """As deepwml_predict: a model that does not say what it learned sees the scans as given, and the last line says
    why; --skull-strip strips for it."""
    lesion, anatomy, inputs, labels = scans
    given = _predicted_map(tmp_path, lesion, anatomy, inputs, "given")
    spy = ProbabilitiesSpy(monkeypatch)
    common = ["-m", str(lesion), "-i", str(inputs), "-l", str(labels), "--anatomy-model", str(anatomy), "--device", "cpu",
              "--dry-run"]
    assert calibrate_cli.main(common) == 0
    assert ("not skull-stripped: the model does not record whether it learned skull-stripped scans (--skull-strip "
            "strips anyway)") in capsys.readouterr().out
    assert calibrate_cli.main(common + ["--skull-strip"]) == 0
    np.testing.assert_allclose(spy.probs[0], given, atol=1e-4)
    assert spy.probs[1][SPOT] < 0.5 < spy.probs[0][SPOT]


def _plain_row(table):
    """The search table's row of the plan's threshold without any lesion filter (the model's own masks)."""
    import pandas as pd

    rows = pd.read_csv(table)
    plain = rows[(rows["threshold"] == 0.5) & (rows["min_lesion_ml"] == 0) & (rows["min_lesion_peak"] == 0)
                 & (rows["min_lesion_contrast"] == 0) & (rows["min_lesion_spread"].fillna(0) == 0)]
    assert len(plain) == 1
    return plain.iloc[0]


def test_the_search_scores_the_masks_deepwml_predict_writes_with_the_anatomy_rules_or_without(tmp_path, scans):
    """The anatomy map's rules cut every candidate mask as predict cuts its mask: the model's own masks score what
    deepwml_predict's mask of the scan scores (the spot outside the brain dropped), and with --keep-outside-brain what
    predict --keep-outside-brain's scores (the spot kept, a false lesion)."""
    from deepwml.evaluation.case_metrics import dice

    lesion, anatomy, inputs, labels = scans  # a model that does not record stripped scans: the scan as given
    common = ["-m", str(lesion), "-i", str(inputs), "-l", str(labels), "--anatomy-model", str(anatomy), "--device", "cpu",
              "--dry-run"]
    masks = {}
    for name, options in (("default", []), ("kept", ["--keep-outside-brain"])):
        assert predict_cli.main(["-i", str(inputs), "-o", str(tmp_path / name), "-m", str(lesion), "--anatomy-model",
                                 str(anatomy), "--no-qc", "--backend", "torch", "--no-bf16", *options]) == 0
        masks[name] = read_image(tmp_path / name / "scan.nii.gz")
    # the reference: the default mask without its largest lesion, so that neither run scores 1
    from deepwml.evaluation.lesions import label_lesions

    found, count = label_lesions(masks["default"].array > 0)
    assert count >= 2
    largest = np.argmax(np.bincount(found.ravel())[1:]) + 1
    reference = (found > 0) & (found != largest)
    write_image(reference.astype(np.uint8), masks["default"].geometry, labels / "scan.nii.gz")
    scores = {}
    for name, options in (("default", []), ("kept", ["--keep-outside-brain"])):
        mask = masks[name].array > 0
        assert find_cli.main(common + ["--table", str(tmp_path / f"{name}.csv"), *options]) == 0
        scores[name] = _plain_row(tmp_path / f"{name}.csv")["dice"]
        assert scores[name] == pytest.approx(dice(reference, mask), abs=5e-5)  # the table rounds to 4 decimals
        assert mask[SPOT] == (name == "kept")
    assert scores["default"] > scores["kept"]


def test_the_input_is_decided_as_deepwml_predict_decides_it(tmp_path, models):  # noqa: F811
    """What learned, which anatomy model, and what was asked: the same decision as predict's, and a clear error where
    predict gives one (stripping asked for without an anatomy model; a folder that is no anatomy model)."""
    lesion, anatomy, _ = models  # the fixture's install ships no anatomy model
    assert fit_input(lesion) == FitInput()  # no anatomy model: nothing to strip with, no rule, nothing to say
    assert not fit_input(lesion, anatomy_model=anatomy, anatomy=True).strip
    rules = fit_input(lesion, anatomy_model=anatomy)
    assert rules.drop_outside and rules.cortex_contrast > 1 and rules.runs_anatomy(True) and not rules.runs_anatomy(False)
    kept = fit_input(lesion, None, anatomy, keep_outside_brain=True, min_cortex_contrast=0)
    assert not kept.mask_rules and not kept.runs_anatomy(True)
    with pytest.raises(DeepWMLError, match="--min-cortex-contrast"):
        fit_input(lesion, None, anatomy, min_cortex_contrast=0.5)
    with pytest.raises(DeepWMLError, match="--no-anatomy contradicts"):
        fit_input(lesion, True, None, anatomy=False)
    note = fit_input(lesion, anatomy_model=anatomy)
    assert not note.strip and "does not record" in note.note
    learned_stripped(lesion, 0)
    assert "learned no skull-stripped scans" in fit_input(lesion, anatomy_model=anatomy).note
    assert fit_input(lesion, True, anatomy).strip and fit_input(lesion, True, anatomy).required
    learned_stripped(lesion, 3)
    chosen = fit_input(lesion, anatomy_model=anatomy)
    assert chosen.anatomy_dir == anatomy and not chosen.required and chosen.note == ""
    assert not fit_input(lesion, False, anatomy).strip and fit_input(lesion, False, anatomy).mask_rules
    assert fit_input(lesion, None, None, anatomy=False) == FitInput()
    with pytest.raises(DeepWMLError, match="ships no anatomy model"):
        fit_input(lesion, True)
    with pytest.raises(DeepWMLError, match="not an anatomy model"):
        fit_input(lesion, None, lesion)


def test_results_kept_for_the_scans_as_given_are_not_reused_for_them_stripped(tmp_path, scans, monkeypatch):
    """A search keeps each case's counts to resume: a kept result of the other input is never taken, its own is."""
    lesion, anatomy, inputs, labels = scans
    learned_stripped(lesion)
    monkeypatch.setenv("DEEPWML_CACHE_DIR", str(tmp_path / "cache"))
    spy = PredictedCaseSpy(monkeypatch)
    common = ["-m", str(lesion), "-i", str(inputs), "-l", str(labels), "--anatomy-model", str(anatomy), "--device", "cpu",
              "--dry-run"]
    assert find_cli.main(common + ["--no-skull-strip"]) == 0
    assert find_cli.main(common) == 0
    assert spy.seen == ["scan", "scan"]
    assert find_cli.main(common) == 0 and find_cli.main(common + ["--no-skull-strip"]) == 0
    assert spy.seen == ["scan", "scan"]
