"""The preprocessing cache: its file format, cheap re-runs, fast loading, and safety when killed at any moment."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_dataset
from deepwml.cli.plan_and_preprocess import main
from deepwml.constants import IGNORE_LABEL
from deepwml.imageio import Geometry, read_label
from deepwml.planning.plan import Plan
from deepwml.preprocessing.cache import case_paths, load_case, load_head, unpack_case
from deepwml.preprocessing.transforms import revert_to_original


def run_cli(tmp_path: Path, *args: str) -> int:
    """deepwml_plan_and_preprocess in-process on roots below tmp_path (cpu_fast preset, one worker)."""
    argv = ["-d", "900", "--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pp"), "-np", "1", "--preset", "cpu_fast"]
    return main(argv + list(args))


def cache_dir(tmp_path: Path) -> Path:
    """The cpu_fast cache of the tiny dataset."""
    return tmp_path / "pp" / "Dataset900_Tiny" / "cpu_fast" / "cache"


def test_cache_files_hold_what_the_contract_says(tmp_path):
    raw = write_tiny_dataset(tmp_path / "raw", n_train=4, labels={"background": 0, "lesion": 1, "ignore": 2})
    label = read_label(raw / "labelsTr" / "case001.nii.gz").array
    label[:, :4, :4] = 2
    from deepwml.imageio import write_image

    write_image(label, read_label(raw / "labelsTr" / "case001.nii.gz").geometry, raw / "labelsTr" / "case001.nii.gz")
    assert run_cli(tmp_path) == 0
    folder = tmp_path / "pp" / "Dataset900_Tiny"
    assert json.loads((folder / "dataset.json").read_text())["name"] == "Dataset900_Tiny"
    plan = Plan.load(folder / "cpu_fast" / "plans.json")
    with np.load(cache_dir(tmp_path) / "case001.npz") as data:
        assert set(data.files) == {"image", "label", "head"}
        image, lab, head = data["image"], data["label"], data["head"]
    assert image.dtype == np.float16 and lab.dtype == np.uint8 and head.dtype == np.uint8
    assert image.shape == (1, *lab.shape) and lab.shape == head.shape == (6, *plan.preprocessing.matrix)
    assert set(np.unique(lab)) == {0, 1, IGNORE_LABEL} and set(np.unique(head)) == {0, 1}
    props = json.loads((cache_dir(tmp_path) / "case001.json").read_text())
    assert props["preprocessing_hash"] == plan.preprocessing_hash()
    assert props["meta"]["centre"] == "B" and props["case_id"] == "case001"
    assert props["lesion_slices"] == [int(k) for k in np.flatnonzero((lab == 1).any(axis=(1, 2)))]
    # the props undo the preprocessing: the raw label (ignore as 255) comes back on the raw grid
    back = revert_to_original(lab, props)
    assert np.array_equal(back == 1, label == 1) and np.array_equal(back == IGNORE_LABEL, label == 2)
    assert Geometry.from_dict(props["geometry"]) == read_label(raw / "labelsTr" / "case001.nii.gz").geometry


def test_rerun_skips_finished_cases_and_overwrite_redoes_them(tmp_path, capsys):
    write_tiny_dataset(tmp_path / "raw", n_train=5)
    assert run_cli(tmp_path) == 0
    npz = cache_dir(tmp_path) / "case002.npz"
    stamp = npz.stat().st_mtime_ns
    capsys.readouterr()
    assert run_cli(tmp_path) == 0
    out = capsys.readouterr().out
    assert "fingerprint reused" in out and "0 preprocessed, 5 already done" in out
    assert npz.stat().st_mtime_ns == stamp
    # a case whose CASE.json carries another plan's hash is redone, the others are not
    props = json.loads((cache_dir(tmp_path) / "case002.json").read_text())
    props["preprocessing_hash"] = "stale"
    (cache_dir(tmp_path) / "case002.json").write_text(json.dumps(props))
    assert run_cli(tmp_path) == 0
    assert "1 preprocessed, 4 already done" in capsys.readouterr().out
    assert run_cli(tmp_path, "--overwrite") == 0
    assert "5 preprocessed, 0 already done" in capsys.readouterr().out


def test_load_case_and_unpacked_memory_maps_agree(tmp_path):
    write_tiny_dataset(tmp_path / "raw", n_train=4)
    assert run_cli(tmp_path) == 0
    image, label, props = load_case(cache_dir(tmp_path), "case000")
    assert isinstance(image, np.ndarray) and not isinstance(image, np.memmap)
    unpack_case(cache_dir(tmp_path), "case000")
    mm_image, mm_label, mm_props = load_case(cache_dir(tmp_path), "case000")
    assert isinstance(mm_image, np.memmap) and isinstance(mm_label, np.memmap)
    assert np.array_equal(mm_image, image) and np.array_equal(mm_label, label) and mm_props == props
    assert (1, *load_head(cache_dir(tmp_path), "case000").shape) == image.shape
    # rewriting the case removes the stale unpacked copies
    assert run_cli(tmp_path, "--overwrite") == 0
    assert not case_paths(cache_dir(tmp_path), "case000")["npy_image"].exists()


def test_a_second_run_on_the_same_plan_is_refused_while_the_first_holds_the_lock(tmp_path, capsys):
    import fcntl

    write_tiny_dataset(tmp_path / "raw", n_train=4)
    plan_dir = tmp_path / "pp" / "Dataset900_Tiny" / "cpu_fast"
    plan_dir.mkdir(parents=True)
    with open(plan_dir / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        assert run_cli(tmp_path) == 2
    assert "another deepwml_plan_and_preprocess" in capsys.readouterr().err
    assert run_cli(tmp_path) == 0


def assert_no_corrupt_files(folder: Path) -> None:
    """Every visible file below ``folder`` is complete: JSON parses, npz archives load with all arrays."""
    for path in folder.rglob("*"):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".npz":
            with np.load(path) as data:
                assert {"image", "label", "head"} <= set(data.files)
                assert data["image"].shape == (1, *data["label"].shape)
    for props in done_cases(folder / "Dataset900_Tiny" / "paper" / "cache"):
        assert props.with_suffix(".npz").is_file(), f"{props} without its arrays"


def done_cases(cache: Path) -> list:
    """CASE.json files (not the hidden temporaries of a writer that was killed)."""
    return [p for p in cache.glob("*.json") if not p.name.startswith(".")]


def killed_when(proc: subprocess.Popen, ready, timeout: float = 120) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true (or it has ended, or the timeout passed)."""
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and not ready() and proc.poll() is None:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()


@pytest.mark.slow
@pytest.mark.parametrize("moment", ["fingerprint", "cache"])
def test_killed_run_leaves_no_corrupt_file_and_resumes(tmp_path, moment):
    write_tiny_dataset(tmp_path / "raw", n_train=16, shape_zyx=(10, 256, 256))
    command = [
        sys.executable, "-m", "deepwml.cli.plan_and_preprocess", "-d", "900", "--raw", str(tmp_path / "raw"),
        "--preprocessed", str(tmp_path / "pp"), "-np", "1", "--preset", "paper",
    ]  # fmt: skip
    folder = tmp_path / "pp" / "Dataset900_Tiny"
    cache = folder / "paper" / "cache"
    if moment == "fingerprint":
        # nothing is written while fingerprinting, so its progress bar on stderr says when it runs; 16 cases take seconds
        proc = subprocess.Popen(command + ["--progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        seen = bytearray()
        reader = threading.Thread(
            target=lambda: [seen.extend(chunk) for chunk in iter(lambda: os.read(proc.stderr.fileno(), 4096), b"")], daemon=True
        )
        reader.start()
        killed_when(proc, lambda: b"fingerprint" in seen)
        reader.join(timeout=10)  # the pipe ends with the killed process
        proc.stderr.close()
        assert b"fingerprint" in seen and not folder.exists(), "the run was not interrupted while fingerprinting"
    else:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed_when(proc, lambda: len(done_cases(cache)) >= 2)
    done_before = len(done_cases(cache))
    assert done_before < 16, "the run was not interrupted part-way"
    assert_no_corrupt_files(tmp_path / "pp")
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{16 - done_before} preprocessed, {done_before} already done" in result.stdout
    assert_no_corrupt_files(tmp_path / "pp")
    assert len(done_cases(cache)) == len(list(cache.glob("[!.]*.npz"))) == 16
    assert not list(folder.rglob(".*.tmp*")), "temporary files left behind"


@pytest.mark.slow
def test_two_workers_give_the_same_result_and_pass_errors_back(tmp_path, capsys):
    write_tiny_dataset(tmp_path / "raw", n_train=6)
    assert run_cli(tmp_path) == 0
    serial = {p.name: p.read_bytes() for p in cache_dir(tmp_path).glob("*.json")}
    fingerprint = (tmp_path / "pp" / "Dataset900_Tiny" / "fingerprint.json").read_text()
    assert run_cli(tmp_path, "--overwrite", "-np", "2") == 0
    assert {p.name: p.read_bytes() for p in cache_dir(tmp_path).glob("*.json")} == serial
    assert (tmp_path / "pp" / "Dataset900_Tiny" / "fingerprint.json").read_text() == fingerprint
    # a broken label found by a worker process is reported as one line naming the file
    (tmp_path / "raw" / "Dataset900_Tiny" / "labelsTr" / "case004.nii.gz").write_bytes(b"garbage")
    capsys.readouterr()
    assert run_cli(tmp_path, "--overwrite", "-np", "2") == 2
    err = capsys.readouterr().err
    assert "labelsTr/case004.nii.gz" in err and "Traceback" not in err
