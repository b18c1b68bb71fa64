"""deepwml_predict says when it segments scans otherwise than the model's stored temperatures and postprocessing were
fitted on them (skull-stripped or as given, lesions outside the brain, the cortex bound), and stays silent for fits
that recorded nothing (the shipped model's) or that it does not use."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from deepwml.calibration.fit_input import FitInput
from deepwml.cli import calibrate as calibrate_cli
from deepwml.cli import find_postprocessing as find_cli
from deepwml.inference.run import PredictRequest, predict
from deepwml.inference.fit_agreement import (CALIBRATION, POSTPROCESSING, RunSegmentation, checkpoint_fits, differences,
                                             fit_notes)
from test_anatomy_model import models  # noqa: F401 - the fixture
from test_fit_input import scans  # noqa: F401 - the fixture

PREDICT_DEFAULT = RunSegmentation(skull_strip=True, outside_brain_dropped=True, min_cortex_contrast=1.15)


def _fits(calibration: FitInput = None, postprocessing: FitInput = None) -> dict:
    """A checkpoint's stored fits as deepwml_calibrate and deepwml_find_postprocessing record them."""
    ckpt = {}
    if calibration is not None:
        ckpt["calibration"] = {"temperature_below": 1.5, **calibration.record(masks=False)}
    if postprocessing is not None:
        ckpt["postprocessing"] = {"threshold": 0.5, "record": {"objective": "both", **postprocessing.record()}}
    return checkpoint_fits(ckpt)


def test_a_fit_recorded_as_the_run_segments_gives_no_note_and_each_difference_is_named():
    as_predict = FitInput(Path("anatomy"), strip=True, drop_outside=True, cortex_contrast=1.15)
    fits = _fits(as_predict, as_predict)
    assert fits[CALIBRATION] == {"skull_strip": True}
    assert fits[POSTPROCESSING] == {"skull_strip": True, "outside_brain_dropped": True, "min_cortex_contrast": 1.15}
    assert fit_notes([fits], PREDICT_DEFAULT, calibrated=True, stored_postprocessing=True) == []
    # --no-skull-strip: both fits were made on stripped scans
    given = RunSegmentation(False, True, 1.15)
    notes = fit_notes([fits], given, calibrated=True, stored_postprocessing=True)
    assert len(notes) == 2 and all("skull-stripped scans (this run: as given)" in n for n in notes)
    assert "temperatures" in notes[0] and "deepwml_calibrate" in notes[0]
    assert "threshold and lesion filters" in notes[1] and "deepwml_find_postprocessing" in notes[1]
    # --no-anatomy: no strip and neither rule; the temperatures care only about what the network was shown
    bare = RunSegmentation(False, False, 0.0)
    assert differences(fits[POSTPROCESSING], bare) == [
        "skull-stripped scans (this run: as given)", "lesions outside the brain dropped (this run: kept)",
        "cortical and juxtacortical lesions under 1.15 x the cortex dropped (this run: none dropped)"]
    assert differences(fits[CALIBRATION], RunSegmentation(True, False, 0.0)) == []
    # another cortex bound, and a fit made with none
    assert differences(fits[POSTPROCESSING], RunSegmentation(True, True, 1.2)) == [
        "cortical and juxtacortical lesions under 1.15 x the cortex dropped (this run: under 1.2 x)"]
    plain = _fits(postprocessing=FitInput())
    assert differences(plain[POSTPROCESSING], PREDICT_DEFAULT) == [
        "scans as given (this run: skull-stripped)", "lesions outside the brain kept (this run: dropped)",
        "no cortex bound (this run: under 1.15 x)"]


def test_fits_that_record_nothing_or_are_not_used_give_no_note():
    # the shipped model's fits predate the record: nothing is claimed about them
    shipped = checkpoint_fits({"calibration": {"temperature_below": 1.6}, "postprocessing": {"threshold": 0.55, "record": {}}})
    assert shipped == {CALIBRATION: {}, POSTPROCESSING: {}}
    assert fit_notes([shipped], RunSegmentation(False, False, 0.0), calibrated=True, stored_postprocessing=True) == []
    assert checkpoint_fits({}) == {CALIBRATION: {}, POSTPROCESSING: {}}
    # an uncalibrated model, or every mask setting given on the command line: the stored fits are not what cuts
    stripped = _fits(FitInput(Path("a"), strip=True), FitInput(Path("a"), strip=True))
    given = RunSegmentation(False, False, 0.0)
    assert fit_notes([stripped], given, calibrated=False, stored_postprocessing=False) == []
    assert len(fit_notes([stripped], given, calibrated=False, stored_postprocessing=True)) == 1
    # the folds are fitted together: the first fold that says counts
    assert len(fit_notes([shipped, stripped], given, calibrated=True, stored_postprocessing=True)) == 2


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_predict_names_what_it_does_otherwise_than_the_stored_fits(tmp_path, scans, backend, capsys):  # noqa: F811
    """Fitted by deepwml_calibrate --skull-strip and deepwml_find_postprocessing --keep-outside-brain, the toy model
    (which learned no stripped scans, so predict shows them as given) is predicted by default: both notes, from the
    weights torch reads and from the ONNX Runtime cache entry alike; predicted as it was fitted: none."""
    if backend == "onnx":
        pytest.importorskip("onnxruntime")
        pytest.importorskip("onnx")
    lesion, anatomy, inputs, labels = scans
    common = ["-m", str(lesion), "-i", str(inputs), "-l", str(labels), "--anatomy-model", str(anatomy), "--device", "cpu"]
    assert calibrate_cli.main(common + ["--skull-strip"]) == 0
    assert find_cli.main(common + ["--skull-strip", "--keep-outside-brain"]) == 0
    fits = checkpoint_fits(torch.load(lesion / "fold_0" / "checkpoint_best.pth", weights_only=True))
    assert fits[POSTPROCESSING]["outside_brain_dropped"] is False and fits[CALIBRATION]["skull_strip"] is True
    capsys.readouterr()

    def run(name: str, **options):
        report = predict(PredictRequest(input=inputs, output=tmp_path / name, model_dir=lesion, anatomy_model=anatomy,
                                        write_qc=False, backend=backend, **options))
        assert report.predicted == 1
        return report.fit_notes, capsys.readouterr().err

    notes, err = run("default")
    assert len(notes) == 2 and all(f"[deepwml_predict] note: {n}" in err for n in notes)
    assert "skull-stripped scans (this run: as given)" in notes[0]
    assert "lesions outside the brain kept (this run: dropped)" in notes[1]
    notes, err = run("as_fitted", skull_strip=True, keep_outside_brain=True)
    assert notes == [] and "note: the model's" not in err
    # every mask setting on the command line: only the temperatures are the stored ones
    notes, _ = run("own_settings", threshold=0.5, min_lesion_ml=0.0, min_lesion_peak=0.0, min_lesion_contrast=0.0,
                   min_lesion_spread=0.0, tta=False)
    assert len(notes) == 1 and "temperatures" in notes[0]
