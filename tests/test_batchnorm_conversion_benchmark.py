"""benchmarks/batchnorm_conversion.py: times every norm on ONNX Runtime and compares a copy of the shipped network in
each other norm with the original, carrying every convolution and norm scale over."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
from deepwml.pretrained import builtin_model_dir
from deepwml.training.pretrained_weights import BRIDGED_NORMS
from deepwml_testing.benchmarks import load_benchmark


def test_a_copy_in_another_norm_keeps_every_weight_and_names_the_statistics_it_defaulted():
    bench = load_benchmark("batchnorm_conversion")
    spec = check_model(builtin_model_dir(), checkpoint="latest")
    shipped = build_fold_networks(spec, load_fold_states(spec))[0]
    own = spec.plan.network.norm
    for norm in (n for n in BRIDGED_NORMS if n != own):
        _check_copy(bench, spec, shipped, own, norm)


def _check_copy(bench, spec, shipped, own: str, norm: str) -> None:
    """A copy of ``shipped`` in ``norm`` and back."""
    other, defaulted = bench.norm_copy(shipped, spec.plan.network, norm)
    assert not other.training
    theirs, ours = shipped.state_dict(), other.state_dict()
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    for name in set(theirs) | set(ours):
        if name in theirs and name in ours:
            assert torch.equal(ours[name], theirs[name]), name
        else:
            assert name.endswith(statistics), name
    # defaulted: exactly the copy's batch norms where the shipped network normalised each slice by itself
    def batch_norms(net):
        return {name for name, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)}

    assert defaulted == sorted(batch_norms(other) - batch_norms(shipped))
    assert bool(defaulted) == (norm != "instance" and own != "batch")
    # back again: the shipped network's own norm, every weight it has (statistics at their defaults if it has to)
    back, _ = bench.norm_copy(other, replace(spec.plan.network, norm=norm), own)
    assert all(torch.equal(back.state_dict()[k], v) for k, v in theirs.items() if not k.endswith(statistics))


def test_estimating_statistics_changes_only_the_named_batch_norms():
    bench = load_benchmark("batchnorm_conversion")
    spec = check_model(builtin_model_dir(), checkpoint="latest")
    shipped = build_fold_networks(spec, load_fold_states(spec))[0]
    other, defaulted = bench.norm_copy(shipped, spec.plan.network, "batch")
    before = {k: v.clone() for k, v in other.state_dict().items()}
    bench._estimate_statistics(other, bench.synthetic_cases(1, 4400, 1), spec.plan, defaulted[:1])
    changed = {k for k, v in other.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith(defaulted[0] + ".") for k in changed) and not other.training


def test_a_short_run_prints_every_norm_s_timings_and_the_agreement(capsys):
    bench = load_benchmark("batchnorm_conversion")
    assert bench.main(["--calibration", "1", "--cases", "1", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "norm (shipped)" in out and out.count("224x192:") == len(BRIDGED_NORMS)
    for norm in BRIDGED_NORMS:
        assert f"  {norm} norm" in out
    lines = [line for line in out.splitlines() if "copy against the shipped network, no training: median Dice" in line]
    assert len(lines) == len(BRIDGED_NORMS) - 1
    for line in lines:
        dice = float(line.split("median Dice ")[1].split()[0])
        assert 0.0 <= dice <= 1.0 and "over 1 scans (" in line


def test_a_model_without_a_bridged_norm_is_refused_naming_it(tmp_path):
    from deepwml_testing.toy_models import tiny_plan, write_model_dir

    bench = load_benchmark("batchnorm_conversion")
    model = write_model_dir(tmp_path / "paperlike", tiny_plan(norm="none"))
    with pytest.raises(SystemExit, match="paperlike: the model's norm is 'none'; this compares only instance, batch"):
        bench.main(["-m", str(model), "--checkpoint", "best"])
