"""Instance norm in channels-last on the CPU: torch's InstanceNorm2d against DeepWML's group_norm path (issue #15).

Prints, for the shipped network (cpu_fast widths, instance norm), the median time of a forward pass and of a
training step (forward + backward) in three set-ups measured interleaved in one run, the ratios to torch's layer in
channels-last, and how far the outputs are apart (logits and thresholded masks).

    python benchmarks/instance_norm.py [--size 256] [--batch 8] [--runs 5]
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine_load import load_line  # noqa: E402  benchmarks/machine_load.py, next to this script


def with_torch_norm(net: nn.Module) -> nn.Module:
    """A copy of ``net`` whose instance norms are torch's own layer (the code before issue #15)."""
    net = copy.deepcopy(net)
    for module in list(net.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.InstanceNorm2d):
                plain = nn.InstanceNorm2d(child.num_features, eps=child.eps, affine=child.affine)
                plain.load_state_dict(child.state_dict())
                setattr(module, name, plain)
    return net


def timed(fn: Callable[..., object], *args: object) -> float:
    """Seconds one call of ``fn(*args)`` takes."""
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def train_step(net: nn.Module, x: torch.Tensor, target: torch.Tensor) -> None:
    """One forward + backward pass in training mode."""
    net.train().zero_grad(set_to_none=True)
    nn.functional.binary_cross_entropy_with_logits(net(x), target).backward()


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256, help="slice size in pixels (default 256)")
    parser.add_argument("--batch", type=int, default=8, help="slices per batch (default 8)")
    parser.add_argument("--runs", type=int, default=5, help="timed repetitions of each set-up (default 5)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
    from deepwml.pretrained import builtin_model_dir

    print(f"# {load_line()}")
    torch.set_num_threads(args.threads)
    spec = check_model(builtin_model_dir())
    ours = build_fold_networks(spec, load_fold_states(spec))[0]
    setups = {
        "torch InstanceNorm2d, channels_last": (with_torch_norm(ours), torch.channels_last),
        "torch InstanceNorm2d, NCHW": (with_torch_norm(ours), torch.contiguous_format),
        "DeepWML (group_norm), channels_last": (ours, torch.channels_last),
    }
    torch.manual_seed(0)
    x = torch.randn(args.batch, 1, args.size, args.size)
    target = (torch.rand_like(x) > 0.95).float()
    logits: Dict[str, torch.Tensor] = {}
    forward: Dict[str, List[float]] = {k: [] for k in setups}
    step: Dict[str, List[float]] = {k: [] for k in setups}
    for name, (net, layout) in setups.items():
        net.to(memory_format=layout)
        with torch.inference_mode():
            logits[name] = net.eval()(x.contiguous(memory_format=layout))  # also the warm-up
    for _ in range(args.runs):
        for name, (net, layout) in setups.items():
            xi, ti = x.contiguous(memory_format=layout), target.contiguous(memory_format=layout)
            with torch.inference_mode():
                forward[name].append(timed(net.eval(), xi))
            step[name].append(timed(train_step, net, xi, ti))
    base = list(setups)[0]
    print(f"shipped network, batch {args.batch} x {args.size}², {args.threads} threads, median of {args.runs} interleaved runs")
    print("| set-up | forward s | ratio | train step s | ratio | max |logit diff| vs first | mask agreement |")
    print("|---|---|---|---|---|---|---|")
    ref_mask = logits[base] >= 0
    for name in setups:
        f, s = statistics.median(forward[name]), statistics.median(step[name])
        diff = float((logits[name] - logits[base]).abs().max())
        agree = float(((logits[name] >= 0) == ref_mask).float().mean())
        print(
            f"| {name} | {f:.3f} | {f / statistics.median(forward[base]):.2f} | {s:.3f} | "
            f"{s / statistics.median(step[base]):.2f} | {diff:.2e} | {agree:.6f} |"
        )


if __name__ == "__main__":
    main()
