"""deepwml_train --pretrained: start from another model's weights, checked, recorded, resumable, and faster to learn."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional

import pytest
import torch

from deepwml.cli.train import main
from deepwml.training.checkpoint import load_checkpoint
from training_fixtures import DATASET, tiny_plan, write_preprocessed_dataset


pytestmark = pytest.mark.usefixtures("training_threads")


def _argv(pp: Path, res: Path, *extra: str):
    return ["-d", "950", "0", "-p", "tiny", "--preprocessed", str(pp), "--results", str(res), "--threads", "1", *extra]


def _plan_dir(res: Path) -> Path:
    return res / DATASET / "tiny"


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory) -> Path:
    """A model trained on one 'site' (cases 0..5), once for this file: its PLAN folder."""
    root = tmp_path_factory.mktemp("site_a")
    plan = tiny_plan(epochs=6, iterations=8, lr=1e-2)
    write_preprocessed_dataset(root / "pp_a", plan)
    threads = torch.get_num_threads()
    try:
        assert main(_argv(root / "pp_a", root / "res_a")) == 0
    finally:
        torch.set_num_threads(threads)
    return _plan_dir(root / "res_a")


@pytest.fixture
def source_model(trained_once: Path, tmp_path: Path) -> Path:
    """A private copy of the trained model (tests may add folds to it)."""
    import shutil

    return Path(shutil.copytree(trained_once, tmp_path / "source" / "tiny"))


def _site_b(tmp_path: Path, context_slices: int = 1, network: Optional[Dict[str, Any]] = None, **plan_kw) -> Path:
    """Another 'site' (cases 100..105) preprocessed with the same kind of plan (``context_slices`` > 1: in 2.5D;
    ``network``: other network settings)."""
    plan = tiny_plan(**{"epochs": 2, "iterations": 3, "lr": 1e-2, **plan_kw})
    plan.network.context_slices = plan.network.in_channels = context_slices
    for key, value in (network or {}).items():
        setattr(plan.network, key, value)
    write_preprocessed_dataset(tmp_path / "pp_b", plan, seed_offset=100)
    return tmp_path / "pp_b"


def test_fine_tuning_records_its_origin_and_uses_a_fine_tuning_rate(tmp_path, source_model, capsys):
    """The checkpoint says which weights a model started from (file and checksum); the rate is 0.1 x the plan's."""
    pp_b = _site_b(tmp_path)
    assert main(_argv(pp_b, tmp_path / "res_b", "--pretrained", str(source_model))) == 0
    assert "fine-tuning from" in capsys.readouterr().out
    ckpt = load_checkpoint(_plan_dir(tmp_path / "res_b") / "fold_0" / "checkpoint_latest.pth")
    origin = ckpt["pretrained"]
    src = source_model / "fold_0" / "checkpoint_best.pth"
    import hashlib

    assert origin["file"] == str(src.resolve()) and origin["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert origin["plan_name"] == "tiny" and origin["epoch"] >= 1
    assert ckpt["training_overrides"]["learning_rate"] == pytest.approx(1e-3)
    assert ckpt["history"][0]["lr"] <= 1e-3
    # a model trained from scratch says so
    assert main(_argv(pp_b, tmp_path / "res_c")) == 0
    assert load_checkpoint(_plan_dir(tmp_path / "res_c") / "fold_0" / "checkpoint_latest.pth")["pretrained"] is None


def test_a_network_that_differs_is_refused_naming_the_file_and_the_difference(tmp_path, source_model, capsys):
    """A narrower network, or one built otherwise (more convolutions per block), cannot start from these weights:
    one line naming the checkpoint and the difference, nothing trained."""
    for sub, network, expected in (("narrow", {"features": [8, 16, 16]}, ("at least as wide", "[8, 16, 16]")),
                                   ("convs", {"convs_per_block": 3}, ("network differs", "convs_per_block"))):
        pp_b = _site_b(tmp_path / sub, network=network)
        assert main(_argv(pp_b, tmp_path / sub / "res_b", "--pretrained", str(source_model))) == 2
        err = capsys.readouterr().err
        assert all(e in err for e in expected) and "checkpoint_best.pth" in err, err
        assert not (_plan_dir(tmp_path / sub / "res_b") / "fold_0" / "checkpoint_latest.pth").exists()


def test_pretrained_that_is_missing_or_ambiguous_is_one_line(tmp_path, source_model, capsys):
    """A wrong path, or a folder with several folds, names the path and what to give instead."""
    pp_b = _site_b(tmp_path)
    assert main(_argv(pp_b, tmp_path / "res_b", "--pretrained", str(tmp_path / "nope"))) == 2
    assert "not found" in capsys.readouterr().err
    (source_model / "fold_1").mkdir()
    (source_model / "fold_1" / "checkpoint_best.pth").write_bytes((source_model / "fold_0" / "checkpoint_best.pth").read_bytes())
    assert main(_argv(pp_b, tmp_path / "res_b", "--pretrained", str(source_model))) == 2
    assert "several folds" in capsys.readouterr().err
    # naming the fold folder (or the file) picks one
    assert main(_argv(pp_b, tmp_path / "res_b", "--pretrained", str(source_model / "fold_1"), "--epochs", "1")) == 0


def test_pretrained_builtin_that_is_an_ensemble_starts_from_its_first_member(tmp_path, source_model, monkeypatch, capsys):
    """The shipped model may be several folds averaged; --pretrained builtin fine-tunes the first one and says so."""
    import deepwml.pretrained as pretrained

    (source_model / "fold_1").mkdir()
    (source_model / "fold_1" / "checkpoint_best.pth").write_bytes(b"not read")
    monkeypatch.setattr(pretrained, "BUILTIN_DIR", source_model)
    pp_b = _site_b(tmp_path)
    assert main(_argv(pp_b, tmp_path / "res_b", "--pretrained", "builtin", "--epochs", "1")) == 0
    assert "ensemble; fine-tuning starts from its first member, fold_0" in capsys.readouterr().out
    origin = load_checkpoint(_plan_dir(tmp_path / "res_b") / "fold_0" / "checkpoint_latest.pth")["pretrained"]
    assert origin["source"] == "builtin" and origin["file"] == str((source_model / "fold_0" / "checkpoint_best.pth").resolve())


def test_a_fine_tuning_run_continues_bit_identically_without_repeating_pretrained(tmp_path, source_model):
    """Interrupted fine-tuning resumes with --continue alone: same weights, same rate, same origin."""
    pp_b = _site_b(tmp_path)
    assert main(_argv(pp_b, tmp_path / "straight", "--pretrained", str(source_model), "--epochs", "2")) == 0
    assert main(_argv(pp_b, tmp_path / "split", "--pretrained", str(source_model), "--epochs", "1")) == 0
    assert main(_argv(pp_b, tmp_path / "split", "--epochs", "2", "--continue")) == 0
    a = load_checkpoint(_plan_dir(tmp_path / "straight") / "fold_0" / "checkpoint_latest.pth")
    b = load_checkpoint(_plan_dir(tmp_path / "split") / "fold_0" / "checkpoint_latest.pth")
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert [e["lr"] for e in a["history"]] == [e["lr"] for e in b["history"]]
    assert a["pretrained"] == b["pretrained"]


def test_fine_tuning_learns_faster_than_training_from_scratch(tmp_path, source_model):
    """After the same few images on a new site, the fine-tuned model segments clearly better than a fresh one."""
    pp_b = _site_b(tmp_path, epochs=1, iterations=3)
    assert main(_argv(pp_b, tmp_path / "ft", "--pretrained", str(source_model))) == 0
    assert main(_argv(pp_b, tmp_path / "scratch")) == 0

    def dice(res: Path) -> float:
        return json.loads((_plan_dir(res) / "fold_0" / "validation" / "summary.json").read_text())["mean_dice"]

    fine_tuned, scratch = dice(tmp_path / "ft"), dice(tmp_path / "scratch")
    assert fine_tuned > 0.6 and fine_tuned > scratch + 0.2, (fine_tuned, scratch)


def test_a_2d_model_starts_a_25d_plan_with_its_first_convolution_widened(tmp_path, source_model, capsys):
    """--pretrained with a 2D model into a 2.5D plan trains, says what it widened and records it in the checkpoint."""
    pp_b = _site_b(tmp_path, context_slices=3, epochs=1)
    assert main(_argv(pp_b, tmp_path / "res_b", "--pretrained", str(source_model))) == 0
    assert "widened its first convolution (encoder.0.0.weight) from 1 to 3 context slices" in capsys.readouterr().out
    ckpt = load_checkpoint(_plan_dir(tmp_path / "res_b") / "fold_0" / "checkpoint_latest.pth")
    assert ckpt["pretrained"]["context_slices_inflated"] == [1, 3]
    assert ckpt["model"]["encoder.0.0.weight"].shape[1] == 3


def test_the_widened_network_computes_exactly_what_the_2d_model_did(source_model):
    """Before any fine-tuning the 2.5D network's output on a slice and its neighbours is the 2D model's on the slice."""
    from deepwml.models.base import build_network
    from deepwml.planning.plan import Plan
    from deepwml.training.pretrained_weights import load_pretrained

    two_d = Plan.load(source_model / "plans.json")
    wide = Plan.load(source_model / "plans.json")
    wide.network.context_slices, wide.network.in_channels = 3, 3
    weights, _ = load_pretrained(str(source_model), wide)
    net2, net3 = build_network(two_d.network).eval(), build_network(wide.network).eval()
    net2.load_state_dict(load_checkpoint(source_model / "fold_0" / "checkpoint_best.pth")["model"])
    net3.load_state_dict(weights.state)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net3(x), net2(x[:, 1:2]), atol=1e-5, rtol=1e-5)
        # the neighbours do reach the output once their weights move
        net3.encoder[0][0].weight.data[:, 0] += 0.1
        assert not torch.allclose(net3(x), net2(x[:, 1:2]), atol=1e-3)


def test_a_model_with_more_context_or_other_channels_cannot_start_a_plan(tmp_path):
    """Narrowing 2.5D to 2D, or changing image channels, is refused with the file named and why."""
    from deepwml.training.pretrained_weights import inflate_context
    from deepwml.utils.errors import DeepWMLError

    state = {"encoder.0.0.weight": torch.zeros(8, 3, 3, 3)}
    src = tmp_path / "model.pth"
    for theirs, ours in (({"in_channels": 3, "context_slices": 3}, {"in_channels": 1}),
                         ({"in_channels": 1}, {"in_channels": 6, "context_slices": 3})):
        with pytest.raises(DeepWMLError, match="cannot start this plan") as e:
            inflate_context(state, theirs, ours, src)
        assert str(src) in str(e.value)


def test_a_model_starts_a_wider_plan_computing_what_it_did(tmp_path, source_model, capsys):
    """--pretrained into the same plan at more features per level: it trains, says so, records it, and before any
    training the wider network's logits are the narrow model's (exactly without the symmetry-breaking noise)."""
    from deepwml.models.base import build_network
    from deepwml.models.widen import widen_unet2d
    from deepwml.planning.plan import Plan
    from deepwml.training.pretrained_weights import load_pretrained

    narrow = Plan.load(source_model / "plans.json")
    wide = Plan.load(source_model / "plans.json")
    wide.network.features = [16, 24, 64]  # 2x, 1.5x (uneven copies) and 2x the tiny plan's 8-16-32
    state = load_checkpoint(source_model / "fold_0" / "checkpoint_best.pth")["model"]
    net_n, net_w = build_network(narrow.network).eval(), build_network(wide.network).eval()
    net_n.load_state_dict(state)
    x = torch.randn(2, 1, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        net_w.load_state_dict(widen_unet2d(state, narrow.network.features, wide.network.features, noise=0.0))
        torch.testing.assert_close(net_w(x), net_n(x), atol=1e-4, rtol=1e-4)
        weights, notes = load_pretrained(str(source_model), wide)
        net_w.load_state_dict(weights.state)
        gap = (net_w(x) - net_n(x)).abs().max()
        # 1 % noise on the copies' weights moves the logits by a few to ~10 % of their spread, depending on the trained
        # weights (which differ between CPUs: bf16 autocast where it is native); 0.1 was hit on an AMX Xeon
        assert 0 < gap < 0.2 * net_n(x).std(), gap
    # the copies of a channel are not identical, or they would learn identically and the width would be wasted
    w = weights.state["encoder.1.0.weight"]
    assert not torch.allclose(w[0], w[16])
    assert weights.origin["features_widened"] == [[8, 16, 32], [16, 24, 64]]
    assert any("widened from features [8, 16, 32] to [16, 24, 64]" in n for n in notes)

    pp_b = _site_b(tmp_path, epochs=1, features=(16, 24, 64))
    assert main(_argv(pp_b, tmp_path / "res_b", "--pretrained", str(source_model))) == 0
    assert "widened from features [8, 16, 32] to [16, 24, 64]" in capsys.readouterr().out
    ckpt = load_checkpoint(_plan_dir(tmp_path / "res_b") / "fold_0" / "checkpoint_latest.pth")
    assert ckpt["pretrained"]["features_widened"] == [[8, 16, 32], [16, 24, 64]]
    assert ckpt["model"]["encoder.0.0.weight"].shape[0] == 16


def test_widening_keeps_every_layer_kind_exact():
    """Plain, batch- and instance-normalised networks, with deep supervision heads, widen to the same function."""
    from deepwml.models.unet2d import UNet2D
    from deepwml.models.widen import widen_unet2d

    for norm in ("none", "batch", "instance"):
        torch.manual_seed(0)
        narrow = UNet2D([4, 8, 16], norm=norm, deep_supervision=True)
        if norm == "batch":  # running statistics that are not the defaults, so copying them matters
            narrow.train()
            with torch.no_grad():
                narrow(torch.randn(4, 1, 32, 32) * 3 + 1)
        narrow.eval()
        wide = UNet2D([8, 10, 48], norm=norm, deep_supervision=True).eval()
        wide.load_state_dict(widen_unet2d(narrow.state_dict(), [4, 8, 16], [8, 10, 48], noise=0.0))
        narrow.return_deep_supervision = wide.return_deep_supervision = True
        narrow.train(), wide.train()  # the deep supervision heads answer only in training mode
        if norm == "batch":
            narrow.eval(), wide.eval()
        x = torch.randn(2, 1, 32, 32)
        with torch.no_grad():
            a, b = narrow(x), wide(x)
        for u, v in zip(a if isinstance(a, list) else [a], b if isinstance(b, list) else [b]):
            torch.testing.assert_close(v, u, atol=1e-4, rtol=1e-4)


def test_a_narrower_or_deeper_plan_or_another_architecture_cannot_be_widened_into(tmp_path):
    """Fewer channels, another depth or a residual encoder are refused with the file named and why."""
    from deepwml.training.pretrained_weights import widen
    from deepwml.utils.errors import DeepWMLError

    src = tmp_path / "model.pth"
    base = {"architecture": "unet2d", "features": [8, 16, 32]}
    for ours in ({**base, "features": [8, 8, 32]}, {**base, "features": [8, 16, 32, 64]},
                 {**base, "architecture": "resenc_unet2d", "features": [16, 32, 64]}):
        with pytest.raises(DeepWMLError, match="at least as wide") as e:
            widen({}, base, ours, src)
        assert str(src) in str(e.value)


def _shipped_checkpoint() -> dict:
    """The shipped lesion model's checkpoint."""
    from deepwml.pretrained import builtin_model_dir

    return load_checkpoint(next((builtin_model_dir() / "fold_0").glob("checkpoint_*.pth")))


def _norm_notes(shipped_norm: str, norm: str, weights, notes) -> list:
    """``notes`` without the norm bridge's, which is there exactly when the shipped model's norm differs from ``norm``."""
    if shipped_norm == norm:
        assert "norm_bridged" not in weights.origin
        return notes
    assert weights.origin["norm_bridged"] == [shipped_norm, norm]
    return [n for n in notes if "norms become" not in n]


def test_the_flat_contrast_preset_is_cpu_fast_robust_with_a_wider_gamma_and_the_shipped_model_starts_it():
    """plans/cpu_fast_robust_flat.json changes only the gamma augmentation's lower end (0.7 -> 0.5): the shipped
    model's weights start it with no note but the norm bridge's when the shipped network normalises otherwise (every
    convolution, scale and shift unchanged), since its preprocessing is the same."""
    from deepwml.planning.plan import load_preset
    from deepwml.training.pretrained_weights import load_pretrained

    robust, flat = load_preset("cpu_fast_robust"), load_preset("cpu_fast_robust_flat")
    a, b = robust.to_dict(), flat.to_dict()
    assert flat.name == "cpu_fast_robust_flat" and b["network"] == a["network"]
    assert b["preprocessing"] == a["preprocessing"] and b["inference"] == a["inference"]
    assert flat.training.augmentation.gamma == [0.5, 1.5] and robust.training.augmentation.gamma == [0.7, 1.5]
    b["training"]["augmentation"]["gamma"] = a["training"]["augmentation"]["gamma"]
    assert b["training"] == a["training"]
    shipped = _shipped_checkpoint()
    weights, notes = load_pretrained("builtin", flat)
    assert _norm_notes(shipped["plan"]["network"]["norm"], flat.network.norm, weights, notes) == []
    assert weights.origin["plan_name"] == shipped["plan"]["name"]
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    assert all(torch.equal(weights.state[k], v) for k, v in shipped["model"].items() if not k.endswith(statistics))


def test_the_shipped_model_starts_the_384_matrix_plan_with_a_preprocessing_note():
    """plans/cpu_fast_robust_384.json is cpu_fast_robust at a finer matrix: the shipped weights start it unchanged
    (bar the norm bridge's statistics when the shipped network normalises otherwise), and the user is told that the
    preprocessing differs (benchmarks/README.md, "A finer matrix")."""
    from deepwml.planning.plan import load_preset
    from deepwml.training.pretrained_weights import load_pretrained

    robust, fine = load_preset("cpu_fast_robust"), load_preset("cpu_fast_robust_384")
    assert fine.to_dict()["network"] == robust.to_dict()["network"]
    assert fine.preprocessing.matrix == [384, 384] and fine.training.patch_size == [384, 384]
    weights, notes = load_pretrained("builtin", fine)
    shipped = _shipped_checkpoint()
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    assert all(torch.equal(weights.state[k], v) for k, v in shipped["model"].items() if not k.endswith(statistics))
    assert _norm_notes(shipped["plan"]["network"]["norm"], fine.network.norm, weights, notes) == [
        "preprocessing differs from the pretrained model's: matrix: [256, 256] -> [384, 384]"]


def test_the_shipped_model_starts_the_25d_preset_widened_and_through_the_norm_bridge():
    """plans/cpu_fast_robust_25d.json is cpu_fast_robust with 3 context slices: the shipped 2D weights start it with
    the first convolution widened (its own slice's weights kept, the neighbours at zero) and, when the shipped network
    normalises otherwise, its norms bridged; every other weight carries over."""
    from deepwml.planning.plan import load_preset
    from deepwml.training.pretrained_weights import load_pretrained

    plan = load_preset("cpu_fast_robust_25d")
    shipped = _shipped_checkpoint()
    weights, notes = load_pretrained("builtin", plan)
    rest = _norm_notes(shipped["plan"]["network"]["norm"], plan.network.norm, weights, notes)
    assert len(rest) == 1 and rest[0].startswith("widened its first convolution (encoder.0.0.weight) from 1 to 3")
    assert weights.origin["context_slices_inflated"] == [1, 3]
    first = weights.state["encoder.0.0.weight"]
    assert torch.equal(first[:, 1:2], shipped["model"]["encoder.0.0.weight"]) and not first[:, [0, 2]].any()
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    assert all(torch.equal(weights.state[k], v) for k, v in shipped["model"].items()
               if not k.endswith(statistics) and k != "encoder.0.0.weight")


def _assert_batch_of_one_normalised_alike(in_network, in_state, bn_network, bn_state) -> None:
    """An instance-norm network and a batch-norm one in training mode compute the same for each single slice."""
    from deepwml.models.base import build_network

    net_in, net_bn = build_network(in_network).eval(), build_network(bn_network).train()
    net_in.load_state_dict(in_state)
    net_bn.load_state_dict(bn_state)
    x = torch.randn(3, 1, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for one in x.split(1):
            torch.testing.assert_close(net_bn(one), net_in(one), atol=1e-4, rtol=1e-4)


def test_an_instance_norm_model_starts_a_batch_norm_plan_computing_what_it_did_per_slice(tmp_path, source_model, capsys):
    """--pretrained from an instance-norm model into the same plan with batch norm (e.g. a cheaper student of the
    shipped model): every weight carries over, batch norm's statistics start at their defaults, and in training mode
    a batch of one slice is normalised exactly as the instance norms did; it trains, says so and records it."""
    from deepwml.planning.plan import Plan
    from deepwml.training.pretrained_weights import load_pretrained

    src_plan = Plan.load(source_model / "plans.json")
    bn_plan = Plan.load(source_model / "plans.json")
    bn_plan.network.norm = "batch"
    state = load_checkpoint(source_model / "fold_0" / "checkpoint_best.pth")["model"]
    weights, notes = load_pretrained(str(source_model), bn_plan)
    assert all(torch.equal(weights.state[k], v) for k, v in state.items())
    extra = sorted(set(weights.state) - set(state))
    assert extra and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in extra)
    assert weights.origin["norm_bridged"] == ["instance", "batch"]
    assert any("instance norms become batch norms" in n for n in notes)
    _assert_batch_of_one_normalised_alike(src_plan.network, state, bn_plan.network, weights.state)

    pp_b = _site_b(tmp_path, epochs=1, network={"norm": "batch"})
    assert main(_argv(pp_b, tmp_path / "res_b", "--pretrained", str(source_model))) == 0
    assert "instance norms become batch norms" in capsys.readouterr().out
    ckpt = load_checkpoint(_plan_dir(tmp_path / "res_b") / "fold_0" / "checkpoint_latest.pth")
    assert ckpt["pretrained"]["norm_bridged"] == ["instance", "batch"]
    assert ckpt["model"]["encoder.0.1.num_batches_tracked"] > 0


def test_a_batch_norm_model_starts_an_instance_norm_plan_computing_what_it_did_in_training(tmp_path, source_model,
                                                                                         capsys):
    """--pretrained from a batch-norm model (e.g. a batch-norm student of the shipped model) into the same plan with
    instance norm (cpu_fast, the 2.5D and wider presets): the statistics are dropped, every other weight carries
    over, and a slice is normalised exactly as the batch norms did a batch of that one slice in training; it trains
    and records it."""
    from deepwml.planning.plan import Plan
    from deepwml.training.pretrained_weights import load_pretrained

    pp_bn = _site_b(tmp_path / "bn", epochs=1, network={"norm": "batch"})
    assert main(_argv(pp_bn, tmp_path / "bn" / "res", "--pretrained", str(source_model))) == 0
    bn_model = _plan_dir(tmp_path / "bn" / "res")
    bn_state = load_checkpoint(bn_model / "fold_0" / "checkpoint_latest.pth")["model"]
    in_plan = Plan.load(bn_model / "plans.json")
    in_plan.network.norm = "instance"
    weights, notes = load_pretrained(str(bn_model), in_plan)
    dropped = sorted(set(bn_state) - set(weights.state))
    assert dropped and all(k.endswith(("running_mean", "running_var", "num_batches_tracked")) for k in dropped)
    assert all(torch.equal(weights.state[k], bn_state[k]) for k in weights.state)
    assert weights.origin["norm_bridged"] == ["batch", "instance"]
    assert any("batch norms become instance norms" in n for n in notes)
    bn_network = Plan.load(bn_model / "plans.json").network
    _assert_batch_of_one_normalised_alike(in_plan.network, weights.state, bn_network, bn_state)

    pp_in = _site_b(tmp_path / "in", epochs=1)
    capsys.readouterr()
    assert main(_argv(pp_in, tmp_path / "in" / "res", "--pretrained", str(bn_model))) == 0
    assert "batch norms become instance norms" in capsys.readouterr().out
    ckpt = load_checkpoint(_plan_dir(tmp_path / "in" / "res") / "fold_0" / "checkpoint_latest.pth")
    assert ckpt["pretrained"]["norm_bridged"] == ["batch", "instance"]
    assert not any(k.endswith("running_mean") for k in ckpt["model"])


_BRIDGE_PAIRS = [(a, b) for a in ("instance", "batch", "batch_deep_instance")
                 for b in ("instance", "batch", "batch_deep_instance") if a != b]


@pytest.mark.parametrize("theirs,ours", _BRIDGE_PAIRS)
def test_every_norm_with_scales_and_shifts_starts_every_other_computing_the_same_for_a_slice_in_training(theirs, ours):
    """instance, batch and batch_deep_instance move into one another: every convolution, scale and shift carries
    over, stored statistics stay where both networks have batch norm, go where this plan normalises each slice by its
    own and start at their defaults where it gains batch norm; in training mode a batch of one slice is normalised
    alike (what the first fine-tuning steps see)."""
    from deepwml.models.base import build_network
    from deepwml.planning.plan import NetworkPlan
    from deepwml.training.pretrained_weights import NORM_BRIDGES, bridge_norm

    assert (theirs, ours) in NORM_BRIDGES
    plans = {n: NetworkPlan(features=[4, 8, 16, 32, 64], norm=n) for n in (theirs, ours)}
    source = build_network(plans[theirs])
    generator = torch.Generator().manual_seed(0)
    for m in source.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics a trained network would have
            m.running_mean.normal_(generator=generator)
            m.running_var.uniform_(0.5, 2.0, generator=generator)
    state = source.state_dict()
    out, note = bridge_norm(state, (theirs, ours), plans[ours], Path("model.pth"))
    fresh = build_network(plans[ours]).state_dict()
    assert out.keys() == fresh.keys()
    for k, v in out.items():
        torch.testing.assert_close(v, state[k] if k in state else fresh[k])
    kept = [k for k in out if k.endswith("running_mean") and k in state]
    assert bool(kept) == ("batch" in theirs and "batch" in ours)
    assert note.startswith(f"its {theirs} norms become {ours} norms")
    net_a, net_b = build_network(plans[theirs]).train(), build_network(plans[ours]).train()
    net_a.load_state_dict(state)
    net_b.load_state_dict(out)
    x = torch.randn(1, 1, 32, 32, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(net_b(x), net_a(x), atol=1e-4, rtol=1e-4)


def test_a_norm_bridge_refuses_weights_of_another_network():
    from deepwml.planning.plan import NetworkPlan
    from deepwml.models.base import build_network
    from deepwml.training.pretrained_weights import bridge_norm
    from deepwml.utils.errors import DeepWMLError

    state = build_network(NetworkPlan(features=[4, 8, 16], norm="instance")).state_dict()
    with pytest.raises(DeepWMLError, match="model.pth.*not those of this plan's network with instance norm"):
        bridge_norm(state, ("instance", "batch_deep_instance"), NetworkPlan(features=[4, 8, 16, 32], norm="batch"),
                    Path("model.pth"))


@pytest.mark.parametrize("preset,norm", [("cpu_fast_robust_bn", "batch"), ("cpu_fast_robust_deep_in", "batch_deep_instance")])
def test_the_other_norm_presets_are_cpu_fast_robust_with_that_norm_and_the_shipped_model_starts_them(preset, norm):
    """plans/cpu_fast_robust_bn.json and cpu_fast_robust_deep_in.json differ from cpu_fast_robust only in name,
    description and norm; the shipped weights start them (through the norm bridge when their norms differ), every
    convolution, scale and shift unchanged."""
    from deepwml.planning.plan import load_preset
    from deepwml.training.pretrained_weights import load_pretrained

    robust, other = load_preset("cpu_fast_robust"), load_preset(preset)
    a, b = robust.to_dict(), other.to_dict()
    assert other.network.norm == norm and robust.network.norm == "instance"
    for d in (a, b):
        d.pop("name"), d.pop("description"), d["network"].pop("norm")
    assert a == b
    weights, notes = load_pretrained("builtin", other)
    shipped = _shipped_checkpoint()
    state, shipped_norm = shipped["model"], shipped["plan"]["network"]["norm"]
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    assert all(torch.equal(weights.state[k], v) for k, v in state.items() if not k.endswith(statistics))
    assert _norm_notes(shipped_norm, norm, weights, notes) == [] and len(notes) == (shipped_norm != norm)
