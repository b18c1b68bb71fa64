"""The planner: deterministic plans.json, depth from the patch, batch from the memory budget, clear plan errors."""
from __future__ import annotations

import copy
import json

import pytest

from conftest import write_tiny_dataset
from deepwml.cli.plan_and_preprocess import main
from deepwml.datasets import RawDataset
from deepwml.planning.fingerprint import compute_fingerprint, fingerprint_hash
from deepwml.planning.plan import Plan, load_preset
from deepwml.planning.planner import (
    activation_bytes_per_sample,
    batch_size_for_budget,
    count_parameters,
    n_poolings,
    plan_experiment,
)
from deepwml.utils.errors import PlanError


@pytest.fixture(scope="module")
def fingerprint(tmp_path_factory):
    """Fingerprint of a small dataset (64×64 slices of 0.9 mm)."""
    folder = write_tiny_dataset(tmp_path_factory.mktemp("raw"), n_train=4)
    return compute_fingerprint(RawDataset(folder))


def cli(tmp_path, *args):
    """Run deepwml_plan_and_preprocess on raw/preprocessed roots below tmp_path."""
    return main(["-d", "900", "--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pp"), "-np", "1", *args])


def test_paper_preset_keeps_the_papers_network_and_records_the_fingerprint(fingerprint):
    plan = plan_experiment(load_preset("paper"), fingerprint)
    assert plan.network.features == [64, 128, 256, 512, 1024]
    assert plan.training.patch_size == [256, 256]
    assert plan.fingerprint_hash == fingerprint_hash(fingerprint)
    assert plan.dataset == "Dataset900_Tiny"
    assert plan.data_summary["median_inplane_spacing_mm"] == [0.9, 0.9]
    # the classic U-Net of Ronneberger et al. has 31.0 M weights
    assert count_parameters(plan.network) == pytest.approx(31.03e6, rel=1e-3)


def test_target_spacing_comes_from_the_median_and_depth_from_the_patch(fingerprint):
    preset = copy.deepcopy(load_preset("paper"))
    preset.preprocessing.inplane_mode = "target_spacing"
    plan = plan_experiment(preset, fingerprint)
    assert plan.preprocessing.target_spacing == [0.9, 0.9]
    # 64-pixel slices pool three times down to 8 pixels: the fifth level would be 4 pixels
    assert plan.training.patch_size == [64, 64]
    assert plan.network.features == [64, 128, 256, 512]
    assert not plan.problems()
    preset.preprocessing.target_spacing = [1.8, 1.8]
    assert plan_experiment(preset, fingerprint).network.features == [64, 128, 256]


def test_depth_rule():
    assert n_poolings([256, 256], 4) == 4
    assert n_poolings([192, 160], 4) == 4
    assert n_poolings([96, 200], 4) == 3
    assert n_poolings([16, 16], 4) == 1


def test_batch_size_follows_the_memory_budget():
    net = load_preset("paper").network
    per_sample = activation_bytes_per_sample(net, [256, 256])
    # the paper's U-Net at 256²: measured 261 MiB per sample for fp32 forward + backward on CPU
    assert 240 * 2**20 < per_sample < 290 * 2**20
    sizes = [batch_size_for_budget(net, [256, 256], gb, cap=64) for gb in (1, 4, 8, 16, 32)]
    assert sizes == sorted(sizes) and sizes[0] == 1 and sizes[-1] > 16
    assert batch_size_for_budget(net, [256, 256], 1000, cap=8) == 8
    assert activation_bytes_per_sample(net, [128, 128]) == pytest.approx(per_sample / 4, rel=0.01)


def test_plans_json_is_byte_identical_for_the_same_data_and_seed(tmp_path):
    write_tiny_dataset(tmp_path / "raw", n_train=6)
    for out in ("pp", "pp2"):
        assert main(["-d", "900", "--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / out), "-np", "1", "--preset", "cpu_fast"]) == 0
    for name in ("cpu_fast/plans.json", "splits.json", "fingerprint.json"):
        a = (tmp_path / "pp" / "Dataset900_Tiny" / name).read_bytes()
        b = (tmp_path / "pp2" / "Dataset900_Tiny" / name).read_bytes()
        if name == "fingerprint.json":
            # identical but for the file stamps it keeps to notice changed raw files
            a, b = (json.loads(x) for x in (a, b))
            a.pop("sources"), b.pop("sources")
        assert a == b, name


def test_a_crop_margin_is_written_only_when_it_is_not_the_default_so_older_plans_keep_their_hash():
    """inference.crop_margin (added later) stays out of plans.json at 32, and a plan that sets it reads back."""
    plan = load_preset("cpu_fast_robust")
    assert "crop_margin" not in plan.to_dict()["inference"] and plan.inference.crop_margin == 32
    plan.inference.crop_margin = 8
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))).inference.crop_margin == 8


def test_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    write_tiny_dataset(tmp_path / "raw")
    assert main(["-d", "902", "--raw", str(tmp_path / "raw"), "--preprocessed", str(tmp_path / "pp")]) == 2
    err = capsys.readouterr().err
    assert "no dataset '902'" in err and "Dataset900_Tiny" in err and "Traceback" not in err


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["network"].update(widht=3), r"unknown key\(s\) network\.widht"),
        (lambda d: d["training"].update(patch_size=[200, 200]), r"training.patch_size \[200, 200\] is impossible for 4 poolings"),
        (lambda d: d["preprocessing"].update(orientation="ras"), r"preprocessing.orientation must be 'canonical'"),
        (lambda d: d.update(data_summary=[1]), r"data_summary must be an object"),
        (lambda d: d["inference"].update(crop_margin=-4), r"inference.crop_margin must be >= 0 pixels, got -4"),
    ],
)
def test_a_bad_plan_file_is_an_error_naming_file_and_key(tmp_path, capsys, edit, message):
    write_tiny_dataset(tmp_path / "raw")
    d = load_preset("paper").to_dict()
    edit(d)
    bad = tmp_path / "edited_plans.json"
    bad.write_text(json.dumps(d))
    assert cli(tmp_path, "--plan-file", str(bad)) == 2
    err = capsys.readouterr().err
    assert "edited_plans.json" in err and pytest.importorskip("re").search(message, err), err


def test_an_edited_plan_is_used_with_plan_file_and_not_silently_replaced(tmp_path, capsys):
    write_tiny_dataset(tmp_path / "raw")
    assert cli(tmp_path, "--preset", "cpu_fast") == 0
    plans = tmp_path / "pp" / "Dataset900_Tiny" / "cpu_fast" / "plans.json"
    edited = Plan.load(plans)
    edited.preprocessing.matrix = [96, 96]
    edited.training.patch_size = [96, 96]
    edited.save(plans)
    # re-planning from the preset would overwrite the user's edit: refused with advice
    assert cli(tmp_path, "--preset", "cpu_fast") == 2
    assert "--plan-file" in capsys.readouterr().err
    assert cli(tmp_path, "--plan-file", str(plans)) == 0
    from deepwml.preprocessing.cache import load_case

    image, label, props = load_case(plans.parent / "cache", "case000")
    assert image.shape[2:] == label.shape[1:] == (96, 96)
    assert props["preprocessing_hash"] == Plan.load(plans).preprocessing_hash()
    assert cli(tmp_path, "--preset", "cpu_fast", "--overwrite") == 0
    assert Plan.load(plans).preprocessing.matrix == load_preset("cpu_fast").preprocessing.matrix


def test_replanning_keeps_a_plans_json_that_differs_only_in_its_data_summary(tmp_path):
    """A newer planner may summarise differently (it counts parameters exactly now); the plan trained with stays."""
    write_tiny_dataset(tmp_path / "raw")
    assert cli(tmp_path, "--preset", "cpu_fast") == 0
    plans = tmp_path / "pp" / "Dataset900_Tiny" / "cpu_fast" / "plans.json"
    older = Plan.load(plans)
    older.data_summary["parameters"] = 485673  # what the planner before issue #13 wrote for cpu_fast
    older.save(plans)
    before = plans.read_bytes()
    assert cli(tmp_path, "--preset", "cpu_fast") == 0
    assert plans.read_bytes() == before  # same hash: checkpoints trained with it still continue


def test_verify_flag_stops_on_a_broken_dataset(tmp_path, capsys):
    folder = write_tiny_dataset(tmp_path / "raw")
    (folder / "labelsTr" / "case001.nii.gz").write_bytes(b"not an image")
    assert cli(tmp_path, "--verify") == 2
    out = capsys.readouterr()
    assert "case001.nii.gz" in out.out + out.err and "verification found" in out.err
    assert not (tmp_path / "pp" / "Dataset900_Tiny" / "paper").exists()


def test_unplannable_slices_are_a_plan_error(fingerprint):
    preset = copy.deepcopy(load_preset("paper"))
    preset.preprocessing.inplane_mode = "target_spacing"
    preset.preprocessing.target_spacing = [9.0, 9.0]
    with pytest.raises(PlanError, match="too small"):
        plan_experiment(preset, fingerprint)
