"""int8 against fp32 inference on this CPU (issue #15 point 3): every figure a ratio of two measurements taken in
one run, interleaved, so that a machine shared with other work slows both alike.

* speed, model only: SlicePredictor.predict over the same preprocessed case, fp32 and int8 (deepwml_predict
  --int8 on) in turn, seconds per slice and their ratio; and what the run-time decision costs (fp32 and int8
  passes over the calibration batch, quantising), in seconds and in slices of run needed to repay it;
* agreement: the masks' Dice, int8 against fp32, per case on each scan's own grid, and pooled. Random weights
  say nothing about agreement, so it is measured with a trained model (-m PLAN_DIR --images SCAN ...) or, without
  one, a small U-Net without normalisation trained here for a few minutes on synthetic FLAIR (a weak model: read
  its reference Dice).

The int8 network here is always used, whatever the run-time check says, so that its disagreement can be measured;
the check's own figures (Dice and speed-up on the calibration batch) are printed beside.

    python benchmarks/int8.py                                  # paper network, random weights (~10 min on 2 cores)
    python benchmarks/int8.py -m RESULTS/Dataset501_Synth/paper --images RAW/.../imagesTs/*.nii.gz
    python benchmarks/int8.py --tiny                           # a small network: checks the script in a minute
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch

from deepwml.evaluation.case_metrics import dice
from deepwml.imageio import Image, read_image
from deepwml.inference import int8
from deepwml.inference.inputs import discover_cases
from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
from deepwml.inference.pipeline import prepare_case
from deepwml.inference.predictor import SlicePredictor
from deepwml.models import build_network
from deepwml.planning.plan import Plan, load_preset
from deepwml.preprocessing import revert_to_original
from deepwml.preprocessing.transforms import preprocess_arrays
from deepwml.training.device import physical_cores
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from predict import cpu_setup, small_model, synthetic_case
from predict_cpu_fast import toy_models


def predictors(nets: List[torch.nn.Module], plan: Plan) -> Tuple[SlicePredictor, SlicePredictor]:
    """An fp32 predictor and one that swaps every fold network for int8 on its first stack, agreeing or not."""
    fp32 = SlicePredictor(nets, plan, cpu_setup("fp32"))
    quantised = SlicePredictor(list(nets), plan, cpu_setup("fp32"), int8="on")
    return fp32, quantised


def forced_int8(fn):
    """Run ``fn`` with the run-time agreement condition switched off, so that int8 is used and measured."""
    saved = int8.MIN_DICE
    int8.MIN_DICE = -1.0
    try:
        return fn()
    finally:
        int8.MIN_DICE = saved


def seconds(fn) -> float:
    """Wall time of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def int8_excluded(model: Path) -> Optional[str]:
    """Why deepwml_predict never runs this trained model in int8 (None: it may)."""
    spec = check_model(model)
    return int8.unsupported_reason(build_fold_networks(spec, load_fold_states(spec)), cpu_setup("fp32"))


def speed(args: argparse.Namespace) -> None:
    """Model-only seconds per slice, fp32 and int8 interleaved, and the cost of the run-time decision."""
    if args.model:
        spec = check_model(Path(args.model))
        plan, nets = spec.plan, build_fold_networks(spec, load_fold_states(spec))
        what = f"model {args.model} (folds {' '.join(spec.folds)})"
    else:
        plan = toy_models().tiny_plan(matrix=64, features=(8, 16, 32)) if args.tiny else load_preset("paper")
        torch.manual_seed(0)
        nets = [build_network(plan.network).eval()]
        what = "random weights"
    if args.images:
        prepared = prepare_case(discover_cases(Path(args.images[0]))[0], plan)
        stack, head, source = prepared.image_pp, prepared.head, Path(args.images[0]).name
    else:
        image, _, geometry = synthetic_case("MS#1", 1, args.slices)
        result = preprocess_arrays(Image(image.astype(np.float32), geometry), plan)
        stack, head, source = result.image, result.head, f"synthetic MS#1 case, {args.slices} slices"
    n = int(head.any(axis=(1, 2)).sum())
    print(f"speed: plan {plan.name!r} (U-Net {plan.network.features}, norm {plan.network.norm}, matrix "
          f"{plan.preprocessing.matrix}, batch {plan.inference.batch_size}), {what}; {source}: {n} slices with head")
    fp32, quantised = predictors(nets, plan)
    fp32.forward(np.zeros((1, fp32.input_spec.in_channels, 64, 64), np.float32))  # oneDNN picks its kernels on first use
    first = forced_int8(lambda: seconds(lambda: quantised.predict(stack, head)))
    decision = quantised.int8_decisions[0]
    print(f"  run-time check on {decision.slices} calibration slices: mask Dice {decision.dice:.4f}, int8 "
          f"{decision.speedup:.2f}x the fp32 speed (its own single timing)")
    times = {"fp32": [], "int8": []}
    for _ in range(args.runs):
        times["fp32"].append(seconds(lambda: fp32.predict(stack, head)))
        times["int8"].append(seconds(lambda: quantised.predict(stack, head)))
    per_slice = {k: statistics.median(v) / n for k, v in times.items()}
    print(f"  model only, s/slice (median of {args.runs}, interleaved): fp32 {per_slice['fp32']:.3f}, "
          f"int8 {per_slice['int8']:.3f} -> int8 is {per_slice['fp32'] / per_slice['int8']:.2f}x faster")
    cost = first - statistics.median(times["int8"])
    saving = per_slice["fp32"] - per_slice["int8"]
    repay = f"repaid after ~{cost / saving:.0f} slices of run" if saving > 0 else "never repaid"
    print(f"  the decision (calibration + quantising, first stack) costs {cost:.1f} s = {cost / per_slice['fp32']:.1f} "
          f"fp32 slices: {repay} (auto tries int8 from {int8.MIN_RUN_SLICES} slices)")


def masks_on_grid(predictor: SlicePredictor, prepared, plan: Plan) -> np.ndarray:
    """The case's mask on its own grid."""
    probs = predictor.predict(prepared.image_pp, prepared.head)
    return revert_to_original(probs, prepared.props, order=1) >= plan.inference.threshold


def agreement_with_model(model: Path, images: List[Path]) -> None:
    """int8 against fp32 masks of a trained model on the given scans (labels from a sibling labels* folder)."""
    spec = check_model(model)
    nets = build_fold_networks(spec, load_fold_states(spec))
    fp32, quantised = predictors(nets, spec.plan)
    pooled = np.zeros(3, dtype=np.int64)
    print(f"agreement: model {model} (U-Net {spec.plan.network.features}, norm {spec.plan.network.norm}), "
          f"{len(images)} scan(s); int8 calibrated on the first, as in a run")
    for path in images:
        prepared = prepare_case(discover_cases(path)[0], spec.plan)
        a = masks_on_grid(fp32, prepared, spec.plan)
        b = forced_int8(lambda: masks_on_grid(quantised, prepared, spec.plan))  # noqa: B023 (called at once)
        label_path = path.parent.parent / path.parent.name.replace("images", "labels") / path.name
        reference = ""
        if label_path.is_file():
            label = read_image(label_path, dtype=None).array == 1
            reference = f"; Dice against the reference: fp32 {dice(label, a):.3f}, int8 {dice(label, b):.3f}"
        pooled += [np.count_nonzero(a), np.count_nonzero(b), np.count_nonzero(a & b)]
        print(f"  {path.name}: Dice(int8 mask, fp32 mask) {dice(a, b):.4f}{reference}")
    print(f"  run-time check on the first scan: {quantised.int8_decisions[0].describe()}")
    print(f"  pooled: Dice(int8, fp32) {2 * pooled[2] / max(1, pooled[0] + pooled[1]):.4f} "
          f"({pooled[0]} vs {pooled[1]} lesion voxels)")


def agreement_small_model(args: argparse.Namespace) -> None:
    """Without a trained model: a small U-Net (no normalisation) trained here, int8 vs fp32 on a held-out case."""
    plan, net, (x, y, head), took = small_model((16, 32, 64, 128), args.train_iterations)
    print(f"agreement: U-Net {plan.network.features} (no norm) at {plan.preprocessing.matrix}, trained "
          f"{args.train_iterations} iterations here on 4 synthetic cases ({took:.0f} s incl. data)")
    fp32, quantised = predictors([net], plan)
    a = fp32.predict(x, head) >= plan.inference.threshold
    b = forced_int8(lambda: quantised.predict(x, head)) >= plan.inference.threshold
    print(f"  held-out case: Dice(fp32 mask, reference) {dice(y == 1, a):.3f}; Dice(int8 mask, fp32 mask) "
          f"{dice(a, b):.4f} ({np.count_nonzero(a)} vs {np.count_nonzero(b)} lesion pixels); run-time check: "
          f"{quantised.int8_decisions[0].describe()}")


def main(argv: Optional[List[str]] = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-m", "--model", help="a trained PLAN folder (default: the paper network with random weights)")
    parser.add_argument("--images", nargs="+", default=[], help="scans: the first is timed, all are compared")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each precision; the median is printed")
    parser.add_argument("--slices", type=int, default=25, help="slices of the synthetic case (without --images)")
    parser.add_argument("--train-iterations", type=int, default=400, help="training of the agreement model (without -m)")
    parser.add_argument("--tiny", action="store_true", help="a small network, few slices and iterations: checks the script")
    parser.add_argument("--skip-agreement", action="store_true")
    args = parser.parse_args(argv)
    if args.tiny:
        args.slices, args.train_iterations, args.runs = min(args.slices, 8), min(args.train_iterations, 20), min(args.runs, 2)
    torch.set_num_threads(physical_cores())
    print(f"deepwml benchmark: int8 - torch {torch.__version__}, quantised engine {torch.backends.quantized.engine}, "
          f"{physical_cores()} core(s), {torch.get_num_threads()} threads; {load_line()}")
    reason = int8_excluded(Path(args.model)) if args.model else None
    if reason:
        # e.g. the shipped model: instance norm has no int8 kernel, so prediction keeps it in fp32 / bf16
        print(f"{args.model}: int8 does not apply ({reason}); deepwml_predict runs it without; nothing to compare")
        return
    speed(args)
    if args.model and args.images:
        agreement_with_model(Path(args.model), [Path(p) for p in args.images])
    elif not args.skip_agreement:
        agreement_small_model(args)
    print(f"after the run: {load_line()}")


if __name__ == "__main__":
    main()
