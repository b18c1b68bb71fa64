"""Cases predicted side by side on a CPU (deepwml.inference.case_workers, deepwml_predict -np): the same files as one
case at a time, failures kept to their case, cores shared out, and the installed command's exit."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image
from deepwml.inference.case_workers import MAX_AUTO_WORKERS, case_worker_plan
from deepwml.training.device import DeviceSetup
from deepwml_testing.toy_models import tiny_plan, write_model_dir

REPO = Path(__file__).resolve().parents[1]


def _setup(kind: str, cores: int) -> DeviceSetup:
    return DeviceSetup(torch.device(kind), None, channels_last=kind == "cpu", threads=cores)


def test_workers_default_to_one_per_core_and_never_outnumber_the_cases():
    assert case_worker_plan(None, _setup("cpu", 2), 10) == (2, 1)
    assert case_worker_plan(None, _setup("cpu", 16), 10) == (MAX_AUTO_WORKERS, 16 // MAX_AUTO_WORKERS)
    assert case_worker_plan(None, _setup("cpu", 8), 3) == (3, 2)  # three cases: the spare cores go to their networks
    assert case_worker_plan(None, _setup("cpu", 2), 1) == (1, 2)  # one case: every core on its network
    assert case_worker_plan(1, _setup("cpu", 2), 10) == (1, 2)  # -np 1: one case at a time, reading overlapped
    assert case_worker_plan(6, _setup("cpu", 2), 10) == (6, 1)
    assert case_worker_plan(None, _setup("cpu", 1), 10) == (1, 1)
    assert case_worker_plan(None, _setup("cuda", 8), 10)[0] == 1  # a GPU keeps the reader -> model -> writer pipeline


def _inputs(folder: Path, n: int = 4) -> None:
    for i in range(n):
        image, _, geometry = tiny_case(shape_zyx=(4 + i, 48, 40), seed=i, n_lesions=4)
        write_image(image, geometry, folder / f"c{i}.nii.gz")
    good = (folder / "c0.nii.gz").read_bytes()
    (folder / "broken.nii.gz").write_bytes(good[: len(good) // 2])


@pytest.mark.parametrize("workers", ["2", "3"])
def test_cases_side_by_side_write_what_one_at_a_time_writes(tmp_path, workers, capsys):
    """A user's cohort with one broken file: every good case gets the same mask, lesion table and summary row with
    -np 1 as with several workers, and the broken one fails alone."""
    model = write_model_dir(tmp_path / "m" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    _inputs(tmp_path / "in")
    threads = torch.get_num_threads()
    for name, np_arg in (("one", "1"), ("many", workers)):
        assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / name), "-m", str(model), "-np", np_arg]) == 1
        assert torch.get_num_threads() == threads  # the caller's thread count comes back
    assert f"{workers} cases at a time" in capsys.readouterr().out
    one, many = (pd.read_csv(tmp_path / n / "summary.csv") for n in ("one", "many"))
    pd.testing.assert_frame_equal(one, many)
    assert one.set_index("case_id").loc["broken", "status"] == "failed"
    assert (one["status"] == "ok").sum() == 4 and one["lesion_count"].sum() > 0
    for i in range(4):
        a, b = (read_image(tmp_path / n / f"c{i}.nii.gz", dtype=None).array for n in ("one", "many"))
        assert np.array_equal(a, b)
        pd.testing.assert_frame_equal(*(pd.read_csv(tmp_path / n / f"c{i}_lesions.csv") for n in ("one", "many")))


def test_numpys_blas_uses_each_workers_share_of_the_cores_during_a_run_only(tmp_path, monkeypatch):
    """Two case workers on ONNX Runtime resample with numpy's BLAS: one thread each while the cases run (OpenBLAS
    would otherwise spin a thread per core in each worker), the caller's setting again afterwards."""
    from threadpoolctl import threadpool_info

    import deepwml.inference.case_workers as case_workers

    model = write_model_dir(tmp_path / "m" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    _inputs(tmp_path / "in", n=2)
    seen = []
    predict_case = case_workers.predict_case

    def recording(*args, **kwargs):
        seen.append({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})
        return predict_case(*args, **kwargs)

    monkeypatch.setattr(case_workers, "predict_case", recording)
    before = {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "-np", "2",
                         "--backend", "onnx", "--no-qc"]) == 1  # the broken file fails
    assert seen and all(threads == {1} for threads in seen), seen
    assert {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"} == before


def test_zero_workers_is_refused_before_anything_is_written(tmp_path, capsys):
    model = write_model_dir(tmp_path / "m" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    _inputs(tmp_path / "in", 1)
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "-np", "0"]) == 2
    assert "--num-workers must be at least 1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _command(*args: str) -> subprocess.CompletedProcess:
    """deepwml_predict as installed (deepwml.cli.predict:entry) in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "deepwml.cli.predict", *args], env=env, capture_output=True, text=True, timeout=600)


def test_the_installed_command_ends_with_its_exit_code_and_every_message_written(tmp_path):
    """The command skips the interpreter's teardown: its last lines, exit codes and files must all still be there."""
    model = write_model_dir(tmp_path / "m" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    _inputs(tmp_path / "in", 2)
    done = _command("-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model))
    assert done.returncode == 1, done.stderr  # the broken file
    assert "2 case(s) predicted" in done.stdout and "broken.nii.gz" in done.stderr
    assert len(pd.read_csv(tmp_path / "out" / "summary.csv")) == 3
    refused = _command("-i", str(tmp_path / "missing"), "-o", str(tmp_path / "out2"), "-m", str(model))
    assert refused.returncode == 2 and "error" in refused.stderr and str(tmp_path / "missing") in refused.stderr


@pytest.mark.parametrize("command", ["predict", "compare"])
def test_a_native_crash_of_the_installed_command_prints_the_python_stack(command):
    """Should torch, oneDNN or ITK crash the process, the user gets every thread's stack on stderr, not silence."""
    code = (f"import ctypes, deepwml.cli.{command} as c\n"
            "def crashing_main():\n"
            "    return ctypes.string_at(0)  # a read from address 0, as a native crash would\n"
            "c.main = crashing_main\n"
            "c.entry()\n")
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "Segmentation fault" in done.stderr and "crashing_main" in done.stderr, done.stderr
