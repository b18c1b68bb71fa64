"""benchmarks/batchnorm_conversion.py: times both norms on ONNX Runtime and compares a copy of the shipped network in
the other norm with the original, carrying every convolution and norm scale over."""
from __future__ import annotations

from dataclasses import replace

import torch

from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
from deepwml.pretrained import builtin_model_dir
from deepwml_testing.benchmarks import load_benchmark


def test_the_copy_keeps_every_weight_but_the_norm_statistics():
    bench = load_benchmark("batchnorm_conversion")
    spec = check_model(builtin_model_dir(), checkpoint="latest")
    shipped = build_fold_networks(spec, load_fold_states(spec))[0]
    other, norm = bench.norm_copy(shipped, spec.plan.network)
    assert {norm, spec.plan.network.norm} == {"instance", "batch"}
    theirs, ours = shipped.state_dict(), other.state_dict()
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    for name in set(theirs) | set(ours):
        if name in theirs and name in ours:
            assert torch.equal(ours[name], theirs[name]), name
        else:
            assert name.endswith(statistics), name
    # back again: the shipped network's own norm, every weight it has (statistics at their defaults if batch norm)
    back, back_norm = bench.norm_copy(other, replace(spec.plan.network, norm=norm))
    assert back_norm == spec.plan.network.norm
    assert all(torch.equal(back.state_dict()[k], v) for k, v in theirs.items() if not k.endswith(statistics))


def test_a_short_run_prints_both_timings_and_the_agreement(capsys):
    bench = load_benchmark("batchnorm_conversion")
    assert bench.main(["--calibration", "1", "--cases", "1", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "norm (shipped)" in out and "instance norm" in out and "batch norm" in out and out.count("224x192:") == 2
    dice = float(out.split("no training: median Dice ")[1].split()[0])
    assert 0.0 <= dice <= 1.0 and "over 1 scans (" in out
