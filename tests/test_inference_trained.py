"""The whole chain with the real stages: plan + preprocess, train one fold briefly, predict, export, install, predict."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from conftest import write_tiny_dataset
from deepwml.cli.export_model import main as export_main
from deepwml.cli.install_model import main as install_main
from deepwml.cli.plan_and_preprocess import main as plan_main
from deepwml.cli.predict import main as predict_main
from deepwml.cli.train import main as train_main
from deepwml.imageio import read_image
from deepwml_testing.toy_models import tiny_plan


@pytest.mark.slow
def test_a_trained_fold_predicts_here_and_after_installing_elsewhere(tmp_path, monkeypatch):
    for kind in ("raw", "preprocessed", "results"):
        monkeypatch.setenv(f"DEEPWML_{kind.upper()}", str(tmp_path / kind))
    write_tiny_dataset(tmp_path / "raw", n_train=6, n_test=2)
    preset = tiny_plan()
    preset.training.epochs, preset.training.iterations_per_epoch, preset.training.num_workers = 1, 2, 0
    preset.save(tmp_path / "tiny.json")
    assert plan_main(["-d", "900", "--preset", str(tmp_path / "tiny.json"), "-np", "1"]) == 0
    assert train_main(["-d", "900", "-p", "tiny", "0", "--num-workers", "0"]) == 0
    # the fold records the cases it never trained on, and deepwml_calibrate fits on exactly those
    import torch

    from deepwml.cli.calibrate import main as calibrate_main
    from deepwml.utils.atomic import read_json

    val = read_json(tmp_path / "preprocessed" / "Dataset900_Tiny" / "splits.json")["folds"][0]["val"]
    fold = tmp_path / "results" / "Dataset900_Tiny" / "tiny" / "fold_0"
    assert val and torch.load(fold / "checkpoint_latest.pth", weights_only=False)["validation_cases"] == val
    assert calibrate_main(["-d", "900", "-p", "tiny", "--device", "cpu"]) == 0
    assert torch.load(fold / "checkpoint_best.pth", weights_only=False)["calibration"]["cases"] == val
    images = tmp_path / "raw" / "Dataset900_Tiny" / "imagesTs"
    common = ["-i", str(images), "--save-probabilities", "--tta", "--no-qc"]
    assert predict_main(common + ["-o", str(tmp_path / "here"), "-d", "900", "-p", "tiny"]) == 0
    summary = pd.read_csv(tmp_path / "here" / "summary.csv")
    assert summary["case_id"].tolist() == ["case006", "case007"] and (summary["status"] == "ok").all()
    for case_id in summary["case_id"]:
        mask = read_image(tmp_path / "here" / f"{case_id}.nii.gz", dtype=None)
        assert not mask.geometry.mismatches(read_image(images / f"{case_id}.nii.gz").geometry)
    assert export_main(["-d", "900", "-p", "tiny", "-o", str(tmp_path / "model.zip")]) == 0
    assert install_main([str(tmp_path / "model.zip"), "--results", str(tmp_path / "site_b")]) == 0
    assert predict_main(common + ["-o", str(tmp_path / "there"), "-m", str(tmp_path / "site_b" / "Dataset900_Tiny" / "tiny")]) == 0
    for case_id in summary["case_id"]:
        here = read_image(tmp_path / "here" / f"{case_id}_prob.nii.gz").array
        there = read_image(tmp_path / "there" / f"{case_id}_prob.nii.gz").array
        assert np.array_equal(here, there)
