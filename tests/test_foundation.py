"""Data roots, dataset discovery by id or name, dataset.json schema, plan validation, console scripts."""
from __future__ import annotations

import configparser
import json
import subprocess
import sys
from pathlib import Path

import pytest

from deepwml import paths
from deepwml.datasets import DatasetJson, RawDataset, case_id_problem, dataset_folder_name, find_dataset_folder
from deepwml.planning.plan import Plan, load_preset
from deepwml.utils.errors import DatasetError, PlanError

REPO = Path(__file__).resolve().parents[1]


def test_roots_come_from_flag_then_environment_then_printed_default(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("DEEPWML_RAW", str(tmp_path / "env_raw"))
    assert paths.raw_root() == (tmp_path / "env_raw").resolve()
    assert paths.raw_root(tmp_path / "flag") == (tmp_path / "flag").resolve()
    monkeypatch.delenv("DEEPWML_RESULTS", raising=False)
    monkeypatch.setattr(paths, "_announced", set())
    assert paths.results_root() == (paths.DEFAULT_BASE / "results").resolve()
    assert "DEEPWML_RESULTS is not set" in capsys.readouterr().err


def test_dataset_found_by_id_or_name(tiny_dataset):
    root = tiny_dataset.parent
    assert find_dataset_folder(root, "900") == tiny_dataset
    assert find_dataset_folder(root, 900) == tiny_dataset
    assert find_dataset_folder(root, "Dataset900_Tiny") == tiny_dataset
    with pytest.raises(DatasetError, match="no dataset '901'.*Dataset900_Tiny"):
        find_dataset_folder(root, "901")
    (root / "Dataset900_Other").mkdir()
    with pytest.raises(DatasetError, match="ambiguous"):
        find_dataset_folder(root, "900")


def test_raw_dataset_lists_cases_with_metadata(tiny_dataset):
    ds = RawDataset(tiny_dataset)
    train, test = ds.cases("Tr"), ds.cases("Ts")
    assert [c.case_id for c in train] == ["case000", "case001", "case002", "case003"]
    assert len(test) == 1 and test[0].label is not None
    assert train[1].meta.centre == "B" and train[1].meta.disease == "CSVD"
    assert dataset_folder_name(5, "X") == "Dataset005_X"


@pytest.mark.parametrize("bad", ["a/b", "..x", "a\\b", ".hidden", ""])
def test_unsafe_case_ids_are_named(bad):
    assert case_id_problem(bad)


def test_dataset_json_schema_errors_name_the_file(tmp_path):
    path = tmp_path / "dataset.json"
    path.write_text(json.dumps({"name": "x", "file_ending": ".png", "channel_names": {"0": "T1"}, "labels": {"background": 0, "lesion": 2}}))
    with pytest.raises(DatasetError) as e:
        DatasetJson.load(path)
    msg = str(e.value)
    assert str(path) in msg and ".png" in msg and "FLAIR" in msg and "lesion to 1" in msg


def test_presets_validate_and_bad_plans_are_rejected(tmp_path):
    for name in ("paper", "cpu_fast"):
        plan = load_preset(name)
        assert plan.name == name
    paper = load_preset("paper")
    assert paper.network.features == [64, 128, 256, 512, 1024] and paper.preprocessing.matrix == [256, 256]
    assert paper.training.learning_rate == 1e-4 and paper.training.epochs == 200
    d = paper.to_dict()
    d["training"]["patch_size"] = [250, 256]
    with pytest.raises(PlanError, match="multiple of 16"):
        Plan.from_dict(d)
    d = paper.to_dict()
    d["network"]["widht"] = 3
    bad = tmp_path / "plans.json"
    bad.write_text(json.dumps(d))
    with pytest.raises(PlanError, match=r"plans.json.*unknown key.*network\.widht"):
        Plan.load(bad)


@pytest.mark.parametrize("key, value, words", [
    ("scale", [0.9], r"scale must be \[low, high\]"),
    ("gamma", [1.5, 0.7], r"gamma must be \[low, high\] with low <= high"),
    ("gamma", [-0.7, 1.5], r"gamma must hold values > 0"),
    ("noise_variance", [-0.1, 0.1], r"noise_variance must hold values >= 0"),
    ("low_resolution", [0.5, 2.0], r"low_resolution must hold values > 0 and <= 1"),
    ("brightness", [0.0, 1.2], r"brightness must hold values > 0"),
    ("p_per_sample", 1.5, r"p_per_sample must lie in \[0, 1\]"),
    ("rotation_deg", -10.0, r"rotation_deg must lie in \[0, 180\]"),
])
def test_augmentation_values_that_cannot_work_are_plan_errors(tmp_path, key, value, words):
    """A range batchgenerators would index past, or use silently to train on nonsense, fails when the plan is read."""
    d = load_preset("cpu_fast").to_dict()
    d["training"]["augmentation"][key] = value
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(d))
    with pytest.raises(PlanError, match=r"plans.json.*training\.augmentation\." + words):
        Plan.load(path)
    d["training"]["augmentation"][key] = {"p_per_sample": 0.5, "rotation_deg": 15.0, "low_resolution": [0.5, 1.0]}.get(key, [0.8, 1.2])
    Plan.from_dict(d)


@pytest.mark.parametrize("probabilities, words", [
    ({"brightnes": 1.0}, r"probabilities: 'brightnes' is not an augmentation entry"),
    ({"brightness": 1.5}, r"probabilities\.brightness must be a probability in \[0, 1\]"),
    ({"gamma": True}, r"probabilities\.gamma must be a probability"),
    ({"elastic_alpha": 0.5}, r"probabilities\.elastic_alpha is given but training\.augmentation\.elastic_alpha is off"),
])
def test_per_entry_probabilities_that_cannot_work_are_plan_errors(tmp_path, probabilities, words):
    """A misspelt entry, a value outside [0, 1] or a probability for a transform that is off fails when the plan is read."""
    d = load_preset("cpu_fast_robust").to_dict()
    d["training"]["augmentation"]["probabilities"] = probabilities
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(d))
    with pytest.raises(PlanError, match=r"plans.json.*training\.augmentation\." + words):
        Plan.load(path)


def test_per_entry_probabilities_are_written_only_when_given_so_older_plans_keep_their_hash():
    """Shipped models record their plan's hash; the new key must not change it while it is empty."""
    shipped = Plan.load(REPO / "deepwml" / "pretrained" / "wmh_flair2d" / "plans.json")
    manifest = json.loads((REPO / "deepwml" / "pretrained" / "wmh_flair2d" / "manifest.json").read_text())
    assert "probabilities" not in shipped.to_dict()["training"]["augmentation"]
    assert shipped.hash() == manifest["plan_hash"]
    d = shipped.to_dict()
    d["training"]["augmentation"]["probabilities"] = {"brightness": 1.0}
    changed = Plan.from_dict(d)
    assert changed.training.augmentation.probabilities == {"brightness": 1.0}
    assert changed.to_dict()["training"]["augmentation"]["probabilities"] == {"brightness": 1.0}
    assert changed.hash() != shipped.hash()


def _console_scripts():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = [ln.strip() for ln in cfg["options.entry_points"]["console_scripts"].splitlines() if ln.strip()]
    return [tuple(part.strip() for part in ln.split("=")) for ln in lines]


#: what a command's --help must not wait for: together several seconds to import on a 2-core machine
HEAVY_MODULES = ("torch", "matplotlib", "pandas", "scipy.stats", "skimage")

@pytest.mark.parametrize("name,target", _console_scripts())
def test_every_console_script_answers_help_at_once(name, target):
    """Each command's --help works through ``python -m`` and imports nothing heavy (torch and the like come only
    once the arguments are known), so that it answers at once."""
    module = target.split(":")[0]
    # -X importtime lists every module imported, whichever way the command ends (the installed ones skip teardown)
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", module, "--help"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert name in out.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in out.stderr.splitlines() if line.startswith("import time:")}
    assert len(imported) > 10  # the listing is there
    assert not imported & set(HEAVY_MODULES), f"{name} --help imports {sorted(imported & set(HEAVY_MODULES))}"


@pytest.mark.parametrize("name,target", _console_scripts())
def test_every_console_script_says_its_version(name, target, capsys):
    """--version names the command and DeepWML's version (the one its reports, checkpoints and DICOM objects record)."""
    import importlib

    import deepwml

    module = importlib.import_module(target.split(":")[0])
    parser = module.build_parser()
    parser.prog = name
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out.strip() == f"{name} (DeepWML {deepwml.__version__})"
    assert "--version" in parser.format_help()


def test_atomic_writes_have_ordinary_permissions(tmp_path):
    import os
    import stat

    from deepwml.utils.atomic import write_text

    old = os.umask(0o022)
    try:
        write_text(tmp_path / "a.txt", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o644
