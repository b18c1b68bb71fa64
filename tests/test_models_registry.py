"""deepwml.models: registries instead of string chains, networks that describe themselves, old checkpoints still load."""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch

from deepwml.models import LOSSES, LR_SCHEDULES, NETWORKS, NORMS, OPTIMIZERS, build_network, network_spec
from deepwml.models import registry as registry_module
from deepwml.planning.plan import NetworkPlan, Plan, load_preset
from deepwml.planning.planner import activation_bytes_per_sample, count_parameters, plan_experiment
from deepwml.training.checkpoint import read_checkpoint
from deepwml.training.network import count_parameters as module_parameters
from deepwml.utils.errors import DeepWMLError, PlanError

DATA = Path(__file__).parent / "data"
#: the repository's preset file (load_preset finds the installed copy, which a worktree may not have yet)
CPU_RESENC = Path(__file__).parents[1] / "plans" / "cpu_resenc.json"
REGISTRIES = {"network.architecture": NETWORKS, "network.norm": NORMS, "training.loss": LOSSES,
              "training.optimizer": OPTIMIZERS, "training.lr_schedule": LR_SCHEDULES}


def _keys_digest(net: torch.nn.Module) -> str:
    """sha256 of the state_dict's sorted (key, shape) pairs."""
    return hashlib.sha256(json.dumps(sorted((k, list(v.shape)) for k, v in net.state_dict().items())).encode()).hexdigest()


# ---- what users rely on: old plans, checkpoints and the shipped model's network stay loadable ------------------

def test_a_checkpoint_saved_by_the_previous_build_network_loads_and_predicts_the_same():
    """tests/data/unet2d_main_f286536.pth was written by main at f286536 (its build_network, seed 1, eval mode)."""
    saved = read_checkpoint(DATA / "unet2d_main_f286536.pth")
    for name, entry in saved["networks"].items():
        plan = NetworkPlan(**entry["network"])
        net = build_network(plan).eval()
        net.load_state_dict(entry["model"], strict=True)
        with torch.no_grad():
            # fp32 kernels differ by ISA (AVX2 vs AVX-512: ~1.4e-6 here); a changed network differs by far more
            torch.testing.assert_close(net(saved["input"]), entry["output"], rtol=0, atol=1e-5, msg=name)
        # same modules in the same order: the same seed gives the very same initial weights
        torch.manual_seed(1)
        fresh = build_network(plan).state_dict()
        assert all(torch.equal(fresh[k], v) for k, v in entry["model"].items()), name


def test_the_presets_keep_their_state_dict_keys_and_plan_hashes():
    """Digests computed with main at f286536: the cpu_fast model being trained there must load after this change."""
    expected = {
        "paper": ("719ed80322085b1c680ee3fc9771ba460e082a8893bc4beeddab21ba591fa273",
                  "6f0a7071f801265e0107cbaf6520802581da045c9228ec42764e9bacdca2bc12"),
        "cpu_fast": ("8d4ef6145fbfbf53ff1df1035cd38c222776a08d2b5e31dcff11d8454effb280",
                     "cfa070212ec4a00d1e355291c764494e8a020e74baa5b8e6e645e441b6701193"),
    }
    for name, (keys, plan_hash) in expected.items():
        plan = load_preset(name)
        assert _keys_digest(build_network(plan.network)) == keys, name
        assert plan.hash() == plan_hash, name
        assert "options" not in plan.to_dict()["network"]


def test_validating_a_plan_does_not_import_torch(tmp_path):
    import subprocess

    code = ("import sys; from deepwml.planning.plan import load_preset; load_preset(sys.argv[1]).problems(); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(CPU_RESENC)], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ---- registries: one list of choices, no silent fallback --------------------------------------------------------

def test_every_builtin_entry_resolves():
    for key, reg in REGISTRIES.items():
        for name in reg.names():
            assert reg.get(name) is not None, (key, name)


@pytest.mark.parametrize("section,key", [("network", "architecture"), ("network", "norm"), ("training", "loss"),
                                         ("training", "optimizer"), ("training", "lr_schedule")])
def test_an_unknown_name_is_an_error_naming_the_file_the_key_and_the_known_names(tmp_path, section, key):
    d = load_preset("cpu_fast").to_dict()
    d[section][key] = "made_up"
    path = tmp_path / "plans.json"
    path.write_text(json.dumps(d))
    with pytest.raises(PlanError) as e:
        Plan.load(path)
    known = REGISTRIES[f"{section}.{key}"].names()
    assert str(path) in str(e.value) and f"{section}.{key} 'made_up'" in str(e.value)
    assert all(n in str(e.value) for n in known)
    with pytest.raises(PlanError, match="made_up"):
        REGISTRIES[f"{section}.{key}"].get("made_up")


def test_a_plan_with_more_input_channels_than_the_cache_holds_is_refused_up_front():
    plan = load_preset("cpu_fast")
    plan.network.in_channels = 2
    assert any("network.in_channels must be 1" in p for p in plan.problems())


def test_a_name_registered_twice_is_an_error_unless_replaced():
    with pytest.raises(DeepWMLError, match="already registered"):
        LOSSES.register("bce", lambda logits, target: logits.sum())


def test_a_users_loss_and_network_from_a_plugin_module_train_through_the_registry(tmp_path, monkeypatch):
    """docs/extending.md: a module named in $DEEPWML_PLUGINS registers entries; plans then name them."""
    (tmp_path / "my_deepwml_plugin.py").write_text(
        "from deepwml.models import LOSSES, NETWORKS\n"
        "from deepwml.models.unet2d_spec import UNet2DSpec\n"
        "import torch.nn.functional as F\n"
        "@LOSSES.register('plain_bce')\n"
        "def plain_bce(logits, target):\n"
        "    return F.binary_cross_entropy_with_logits(logits.float(), (target == 1).float())\n"
        "class WideFirst(UNet2DSpec):\n"
        "    label = 'wide-first U-Net'\n"
        "NETWORKS.register('wide_first', WideFirst)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(registry_module.PLUGIN_ENV, "my_deepwml_plugin")
    monkeypatch.setattr(registry_module, "_plugins_loaded", False)
    try:
        plan = load_preset("cpu_fast")
        plan.training.loss, plan.network.architecture = "plain_bce", "wide_first"
        assert plan.problems() == []
        net = build_network(plan.network)
        assert net.spec.describe().startswith("wide-first U-Net")
        loss = LOSSES.get("plain_bce")(net(torch.zeros(1, 1, 32, 32)), torch.ones(1, 1, 32, 32))
        assert loss.item() > 0
    finally:
        LOSSES.unregister("plain_bce")
        NETWORKS.unregister("wide_first")


def test_a_plugin_that_fails_to_import_is_one_line_naming_it(monkeypatch):
    monkeypatch.setenv(registry_module.PLUGIN_ENV, "no_such_deepwml_plugin")
    monkeypatch.setattr(registry_module, "_plugins_loaded", False)
    with pytest.raises(DeepWMLError, match="plugin no_such_deepwml_plugin .* failed to import: ModuleNotFoundError"):
        LOSSES.names()
    monkeypatch.setattr(registry_module, "_plugins_loaded", True)


# ---- networks describe themselves ------------------------------------------------------------------------------

@pytest.mark.parametrize("architecture", ["unet2d", "resenc_unet2d"])
@pytest.mark.parametrize("norm,deep_supervision,convs", [("none", False, 2), ("instance", True, 1), ("batch", True, 3),
                                                         ("batch_deep_instance", True, 2)])
def test_the_family_counts_the_parameters_of_the_module_it_builds(architecture, norm, deep_supervision, convs):
    plan = NetworkPlan(architecture=architecture, features=[4, 8, 16, 32], norm=norm, deep_supervision=deep_supervision,
                       convs_per_block=convs)
    net = build_network(plan)
    assert count_parameters(plan) == module_parameters(net)
    assert net.size_multiple == 8 and net.input_spec.in_channels == 1
    assert net.crop_safe is (norm not in ("instance", "batch_deep_instance"))
    x = torch.randn(2, 1, 24, 40)
    net.return_deep_supervision = True
    out = net(x)
    shapes = [tuple(o.shape) for o in out] if deep_supervision else [tuple(out.shape)]
    assert shapes[0] == (2, 1, 24, 40) and len(shapes) == (3 if deep_supervision else 1)
    assert tuple(net.eval()(x).shape) == (2, 1, 24, 40)  # eval mode: one tensor for prediction


def test_the_calibrated_unet_memory_figures_are_reproduced():
    """Measured 261 MiB/sample (paper, 256²) and 78 MiB (cpu_fast widths 16-256, 192²); the estimates were 263 and 76."""
    paper = load_preset("paper").network
    assert activation_bytes_per_sample(paper, [256, 256]) / 2**20 == pytest.approx(263.2, abs=0.1)
    fast = load_preset("cpu_fast").network
    fast.features = [16, 32, 64, 128, 256]
    assert activation_bytes_per_sample(fast, [192, 192]) / 2**20 == pytest.approx(75.7, abs=0.1)
    assert build_network(paper).memory_per_sample([256, 256]) == activation_bytes_per_sample(paper, [256, 256])


def test_resenc_preset_validates_plans_and_is_made_shallower_with_its_blocks(fingerprint_64):
    preset = Plan.load(CPU_RESENC)
    spec = network_spec(preset.network)
    assert spec.blocks == preset.network.options["blocks_per_stage"]
    preset.preprocessing.inplane_mode = "target_spacing"
    plan = plan_experiment(preset, fingerprint_64)
    # 64-pixel slices of the data's spacing pool three times: both lists lose their last stage
    assert plan.network.features == preset.network.features[:4]
    assert plan.network.options["blocks_per_stage"] == preset.network.options["blocks_per_stage"][:4]
    assert plan.problems() == []
    plan.network.options = {"blocks_per_stage": [1, 2]}
    assert any("blocks_per_stage must list one integer >= 1 per entry" in p for p in plan.problems())
    plan.network.options = {"blocks": [1, 2, 2, 2]}
    assert any("network.options blocks not known to resenc_unet2d (known: blocks_per_stage)" in p for p in plan.problems())
    unet = load_preset("cpu_fast")
    unet.network.options = {"blocks_per_stage": [1, 1, 1, 1, 1]}
    assert any("not known to unet2d (known: none)" in p for p in unet.problems())


@pytest.fixture(scope="module")
def fingerprint_64(tmp_path_factory):
    from conftest import write_tiny_dataset
    from deepwml.datasets import RawDataset
    from deepwml.planning.fingerprint import compute_fingerprint

    return compute_fingerprint(RawDataset(write_tiny_dataset(tmp_path_factory.mktemp("raw"), n_train=2)))
