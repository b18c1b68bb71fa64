"""Every norm of the shipped lesion network: their time, and how close a copy in another norm starts (#12's speed).

Instance norm costs ONNX Runtime two layout reorders per layer and changes with a crop (so the network sees the whole
256² slice, air included); batch norm has neither cost; ``batch_deep_instance`` (the shipped norm since 2026-12-05)
is batch norm at the finer levels and instance norm at the two coarsest. This prints, on this machine:

1. ONNX Runtime's time for a batch of 8 slices of the same U-Net with each norm (instance, batch,
   batch_deep_instance), at 256² and at a head-sized crop (224 × 192), medians of --runs taken in turns;
2. how close a copy of the model in each other norm gets with no training, as `deepwml_train --pretrained` makes it:
   the same convolutions and norm scales and shifts, batch norm's statistics kept where both have batch norm; where
   the copy has batch norm and the model had instance norm, the statistics averaged over the head slices of
   --calibration synthetic scans; Dice between its masks (probability >= 0.5) and the model's on --cases other scans.

A copy is a starting point for training (a distilled student, or fine-tuning on another preset), not a model to use.

    python benchmarks/batchnorm_conversion.py [--calibration 8] [--cases 12] [--runs 7] [--seed 4400]
        [-m PLAN_FOLDER [--checkpoint best|latest]]
"""
from __future__ import annotations

import argparse
import copy
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

CENTRES = ("MS#1", "MS#2", "NMOSD#1", "CSVD#1", "CSVD#3")


def _graph(net: torch.nn.Module) -> bytes:
    """``net`` as an ONNX graph with free batch, height and width."""
    buffer = io.BytesIO()
    torch.onnx.export(net.eval(), torch.zeros(1, 1, 256, 256), buffer, dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "b", 2: "h", 3: "w"}, "y": {0: "b", 2: "h", 3: "w"}})
    return buffer.getvalue()


def _timings(graphs: Dict[str, bytes], shapes: Sequence[Tuple[int, int]], runs: int) -> Dict[Tuple[str, Tuple[int, int]], float]:
    """Median seconds of ONNX Runtime (2 threads) for a batch of 8 slices of each shape, for each graph; the graphs
    and shapes take turns within every run, so that a drift of the machine's speed falls on all of them alike."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.log_severity_level = 2, 3
    sessions = {name: ort.InferenceSession(g, options, providers=["CPUExecutionProvider"]) for name, g in graphs.items()}
    inputs = {shape: np.random.default_rng(0).standard_normal((8, 1, *shape)).astype(np.float32) for shape in shapes}
    times: Dict[Tuple[str, Tuple[int, int]], List[float]] = {(n, shape): [] for n in sessions for shape in shapes}
    for k in range(runs + 1):  # the first round warms up and is not counted
        for (name, shape), spent in times.items():
            started = time.perf_counter()
            sessions[name].run(None, {"x": inputs[shape]})
            if k:
                spent.append(time.perf_counter() - started)
    return {key: statistics.median(spent) for key, spent in times.items()}


def norm_copy(net: torch.nn.Module, plan_network: Any, norm: str) -> Tuple[torch.nn.Module, List[str]]:
    """``net`` with ``norm`` instead of its plan's, as deepwml_train --pretrained makes it
    (deepwml.training.pretrained_weights.bridge_norm), and the batch norms whose statistics it had to default."""
    from deepwml.models import build_network
    from deepwml.training.pretrained_weights import bridge_norm

    spec = copy.deepcopy(plan_network)
    spec.norm = norm
    other = build_network(spec)
    theirs = net.state_dict()
    state, _ = bridge_norm(theirs, (plan_network.norm, norm), spec, Path("the network"))
    other.load_state_dict(state)
    defaulted = sorted({k[: -len(".running_mean")] for k in state if k.endswith(".running_mean") and k not in theirs})
    return other.eval(), defaulted


def head_slices(image: Any, plan: Any) -> torch.Tensor:
    """The preprocessed head slices of a deepwml Image as a [S, 1, H, W] batch."""
    from deepwml.preprocessing.transforms import preprocess_arrays

    result = preprocess_arrays(image, plan)
    keep = result.head.any(axis=(1, 2))
    return torch.from_numpy(np.ascontiguousarray(result.image[0][keep], dtype=np.float32))[:, None]


def _case_slices(case: Any, plan: Any) -> torch.Tensor:
    """The preprocessed head slices of a synthetic case."""
    from deepwml.imageio import Image

    return head_slices(Image(case.image.astype(np.float32), case.geometry), plan)


def synthetic_cases(n: int, seed: int, first: int) -> List[Any]:
    """``n`` synthetic scans, the centres in turn, patients numbered from ``first``."""
    from deepwml.synthetic.generate import generate_case

    return [generate_case(CENTRES[i % len(CENTRES)], index=first + i // len(CENTRES), seed=seed) for i in range(n)]


def average_statistics(net: torch.nn.Module, stacks: Iterable[torch.Tensor], modules: Sequence[str]) -> None:
    """Set the running statistics of the batch norms named in ``modules`` to a plain average over the batches of 8
    slices of each of ``stacks``; every other layer as it is, ``net`` left in eval mode."""
    named = dict(net.named_modules())
    net.eval()
    for name in modules:
        named[name].reset_running_stats()
        named[name].momentum = None  # a plain average over every batch
        named[name].train()
    with torch.no_grad():
        for x in stacks:
            for i in range(0, len(x), 8):
                net(x[i:i + 8])
    net.eval()


def _estimate_statistics(net: torch.nn.Module, cases: Sequence[Any], plan: Any, modules: Sequence[str]) -> None:
    """The running statistics of the batch norms named in ``modules`` averaged over the head slices of ``cases``."""
    average_statistics(net, (_case_slices(case, plan) for case in cases), modules)


def main(argv: Optional[List[str]] = None) -> int:
    """Time both norms, copy the shipped network into the other, compare the masks."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calibration", type=int, default=8, help="synthetic scans whose head slices set the statistics")
    p.add_argument("--cases", type=int, default=12, help="other synthetic scans the masks are compared on")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--seed", type=int, default=4400, help="generator seed of the scans")
    p.add_argument("-m", "--model", type=Path, default=None,
                   help="a trained model's PLAN folder instead of the shipped one (e.g. a batch-norm student)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="latest", help="--model's checkpoint")
    args = p.parse_args(argv)
    from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
    from deepwml.pretrained import builtin_model_dir
    from deepwml.training.pretrained_weights import BRIDGED_NORMS

    torch.set_num_threads(2)
    spec = check_model(args.model or builtin_model_dir(), checkpoint=args.checkpoint)
    model = build_fold_networks(spec, load_fold_states(spec))[0].eval()
    own = spec.plan.network.norm
    if own not in BRIDGED_NORMS:
        raise SystemExit(f"{args.model}: the model's norm is {own!r}; this compares only {', '.join(BRIDGED_NORMS)}")
    copies = {norm: norm_copy(model, spec.plan.network, norm) for norm in BRIDGED_NORMS if norm != own}
    label, whose = ("shipped", "the shipped network") if args.model is None else ("the model", "the model")
    print(f"ONNX Runtime, 8 slices, 2 threads, median of {args.runs} runs taking turns")
    shapes = ((256, 256), (224, 192))
    names = {f"{own} norm ({label})": model, **{f"{norm} norm": net for norm, (net, _) in copies.items()}}
    seconds = _timings({name: _graph(copy.deepcopy(net)) for name, net in names.items()}, shapes, args.runs)
    for name in names:
        print(f"  {name:34s} " + ", ".join(f"{h}x{w}: {seconds[(name, (h, w))]:.3f} s" for h, w in shapes))
    calibration = synthetic_cases(args.calibration, args.seed, 1)
    for net, defaulted in copies.values():
        if defaulted:
            _estimate_statistics(net, calibration, spec.plan, defaulted)
    dices: Dict[str, List[float]] = {norm: [] for norm in copies}
    with torch.no_grad():
        for case in synthetic_cases(args.cases, args.seed, 1 + -(-args.calibration // len(CENTRES))):
            x = _case_slices(case, spec.plan)
            a = torch.sigmoid(model(x)).numpy() >= 0.5
            parts = []
            for norm, (net, _) in copies.items():
                b = torch.sigmoid(net(x)).numpy() >= 0.5
                total = int(a.sum() + b.sum())
                dices[norm].append(2.0 * int((a & b).sum()) / total if total else 1.0)
                parts.append(f"{norm}-norm copy {int(b.sum())} (Dice {dices[norm][-1]:.3f})")
            print(f"  {case.case_id}: {label} {int(a.sum())} voxels, " + ", ".join(parts))
    for norm, (_, defaulted) in copies.items():
        statistics_from = (f"{len(defaulted)} batch norms' statistics from {args.calibration} scans" if defaulted
                           else "no statistics to estimate")
        print(f"{norm}-norm copy against {whose}, no training: median Dice {statistics.median(dices[norm]):.3f} over "
              f"{len(dices[norm])} scans ({statistics_from})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
