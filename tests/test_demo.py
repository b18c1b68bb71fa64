"""The demo runs the whole public pipeline end to end and resumes from where it stopped."""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest


@pytest.mark.slow
def test_demo_runs_every_stage_and_a_second_run_resumes(tmp_path):
    work = tmp_path / "demo"
    command = [sys.executable, "-m", "deepwml.cli.demo", "--workdir", str(work), "--minutes", "1", "--scale", "0.02", "--device", "cpu"]
    first = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    report = work / "report"
    assert (report / "report.html").is_file() and (report / "per_slice.csv").is_file()
    assert "Table 2" in first.stdout and str(report / "report.html") in first.stdout
    test_ids = json.loads((work / "test_cases.json").read_text())
    assert test_ids and all((work / "predictions" / f"{cid}.nii.gz").is_file() for cid in test_ids)
    assert (work / "results" / "Dataset501_Synth" / "cpu_fast" / "fold_0" / "checkpoint_best.pth").is_file()
    # the fold's validation cases chose the model's postprocessing, which the predictions name
    assert "deepwml_find_postprocessing: on " in first.stdout and "validation case(s)" in first.stdout
    assert "the model's postprocessing: threshold" in first.stdout
    # the demo's model against the shipped one on the same test cases, pair by pair
    against = json.loads((report / "summary.json").read_text())["against"]
    assert against["n_cases"] == len(test_ids) and "dice" in against["cases"]
    assert "Against" in first.stdout and all((work / "predictions_shipped_model" / f"{cid}.nii.gz").is_file() for cid in test_ids)

    # a second run finds every stage done: no new data, no re-preprocessing, no re-prediction
    started = time.monotonic()
    second = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "0 preprocessed" in second.stdout or "already done" in second.stdout
    assert f"0 case(s) predicted, {len(test_ids)} already done" in second.stdout + second.stderr
    assert "training already finished" in second.stdout
    assert time.monotonic() - started < 150
