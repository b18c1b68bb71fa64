"""The preprocessing cache: its file format, cheap re-runs, fast loading, and safety when killed at any moment."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    assert image.shape == lab.shape == head.shape == (6, 192, 192)
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
    assert load_head(cache_dir(tmp_path), "case000").shape == image.shape
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
                assert data["image"].shape == data["label"].shape
    for props in folder.rglob("cache/*.json"):
        assert props.with_suffix(".npz").is_file(), f"{props} without its arrays"


@pytest.mark.slow
def test_killed_run_leaves_no_corrupt_file_and_resumes(tmp_path):
    write_tiny_dataset(tmp_path / "raw", n_train=24, shape_zyx=(12, 256, 256))
    command = [
        sys.executable, "-m", "deepwml.cli.plan_and_preprocess", "-d", "900", "--raw", str(tmp_path / "raw"),
        "--preprocessed", str(tmp_path / "pp"), "-np", "1", "--preset", "paper",
    ]  # fmt: skip
    cache = tmp_path / "pp" / "Dataset900_Tiny" / "paper" / "cache"
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(cache.glob("*.json"))) < 2 and proc.poll() is None:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done_before = len(list(cache.glob("*.json")))
    assert 2 <= done_before < 24, "the run was not interrupted part-way"
    assert_no_corrupt_files(tmp_path / "pp")
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"{24 - done_before} preprocessed, {done_before} already done" in result.stdout
    assert_no_corrupt_files(tmp_path / "pp")
    assert len(list(cache.glob("*.npz"))) == 24
    assert not list(cache.glob(".*")), "temporary files left behind"
