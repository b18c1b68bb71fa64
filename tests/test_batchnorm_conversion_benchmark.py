"""benchmarks/batchnorm_conversion.py: times both norms on ONNX Runtime and compares a batch-norm copy of the shipped
network with the original, carrying every convolution and norm scale over."""
from __future__ import annotations

import torch

from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
from deepwml.pretrained import builtin_model_dir
from deepwml_testing.benchmarks import load_benchmark


def test_the_copy_keeps_every_weight_but_the_norm_statistics():
    bench = load_benchmark("batchnorm_conversion")
    spec = check_model(builtin_model_dir(), checkpoint="latest")
    shipped = build_fold_networks(spec, load_fold_states(spec))[0]
    copy = bench.batchnorm_copy(shipped, spec.plan.network)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in copy.modules()) > 0
    theirs = shipped.state_dict()
    for name, value in copy.state_dict().items():
        if name in theirs:
            assert torch.equal(value, theirs[name]), name
        else:
            assert name.endswith(("running_mean", "running_var", "num_batches_tracked")), name


def test_a_short_run_prints_both_timings_and_the_agreement(capsys):
    bench = load_benchmark("batchnorm_conversion")
    assert bench.main(["--calibration", "1", "--cases", "1", "--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "instance norm (shipped)" in out and "batch norm" in out and out.count("224x192:") == 2
    dice = float(out.split("no training: median Dice ")[1].split()[0])
    assert 0.0 <= dice <= 1.0 and "over 1 scans (statistics from 1)" in out
