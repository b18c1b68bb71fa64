"""What cropping a network to the head costs in agreement and buys in time, per crop margin (plan inference.crop_margin).

A network with batch norm (or none) may be fed each batch of slices cropped to the head box plus a margin
(deepwml.inference.batches); instance norm never is. The deepest convolutions of a U-Net reach far beyond a pixel, so
a crop changes the probabilities near the head's edge, the more so the narrower the margin. For each margin this
predicts every scan cropped and as whole slices (ONNX Runtime, 2 threads, no TTA, no calibration: the network alone)
and prints: how far the cropped masks (the plan's threshold; a multi-class model's argmax) are from the whole slices'
(median and lowest Dice of a binary model, voxels that differ, the largest probability difference in the head), and
the median time of one scan's network pass against the whole slices', taken in turns.

    python benchmarks/crop_margin.py -m PLAN_FOLDER [-f 0] [--checkpoint latest] [-i SCAN ...] [--margins 0 8 16 32]
    python benchmarks/crop_margin.py --anatomy            # the shipped anatomy model

Without -i, --cases synthetic scans are made (the generator's centres in turn).
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

def _stacks(spec: Any, scans: Sequence[Path], cases: int, seed: int) -> List[Tuple[str, Any]]:
    """(name, preprocessed case) of each scan, or of ``cases`` synthetic scans when none is given."""
    from deepwml.imageio import Image, read_image
    from deepwml.preprocessing.transforms import preprocess_arrays

    if scans:
        return [(Path(s).name, preprocess_arrays(read_image(s), spec.plan)) for s in scans]
    from batchnorm_conversion import synthetic_cases  # benchmarks/batchnorm_conversion.py, next to this script

    return [(case.case_id, preprocess_arrays(Image(case.image.astype(np.float32), case.geometry), spec.plan))
            for case in synthetic_cases(cases, seed, 1)]


def _labels(probs: np.ndarray, threshold: float) -> np.ndarray:
    """A binary model's mask or a multi-class model's argmax."""
    return probs >= threshold if probs.ndim == 3 else probs.argmax(axis=1)


def agreement(cropped: np.ndarray, whole: np.ndarray, head: np.ndarray, threshold: float) -> Dict[str, float]:
    """How far a cropped prediction is from the whole slices': Dice of the masks (binary) or the share of head voxels
    with the same label (multi-class), voxels that differ, largest probability difference in the head."""
    head = np.asarray(head, dtype=bool)
    a, b = _labels(cropped, threshold), _labels(whole, threshold)
    differ = int((a != b).sum())
    if cropped.ndim == 3:
        total = int(a.sum() + b.sum())
        score = 2.0 * int((a & b).sum()) / total if total else 1.0
    else:
        score = float((a == b)[head].mean())
    heads = head if cropped.ndim == 3 else head[:, None]
    gap = float(np.abs(cropped - whole)[np.broadcast_to(heads, cropped.shape)].max()) if head.any() else 0.0
    return {"score": score, "differ": differ, "gap": gap}


def main(argv: Optional[List[str]] = None) -> int:
    """Predict each scan whole and at each margin; print agreement and time per margin."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("-m", "--model", type=Path, help="a PLAN folder whose network has batch norm or none")
    which.add_argument("--anatomy", action="store_true", help="the shipped anatomy model")
    p.add_argument("-f", "--folds", nargs="+", default=None)
    p.add_argument("--checkpoint", choices=("best", "latest"), default="latest")
    p.add_argument("-i", "--input", nargs="+", type=Path, default=[], help="scans (NIfTI); default: synthetic ones")
    p.add_argument("--cases", type=int, default=6, help="synthetic scans when no -i (default 6)")
    p.add_argument("--seed", type=int, default=4500, help="generator seed of the synthetic scans")
    p.add_argument("--margins", nargs="+", type=int, default=[0, 8, 16, 32])
    p.add_argument("--runs", type=int, default=3, help="timed passes per scan and margin (default 3)")
    args = p.parse_args(argv)
    from deepwml.inference.model_loading import check_model
    from deepwml.inference.onnx_backend import GraphPredictor, fold_graphs
    from deepwml.models import network_spec
    from deepwml.pretrained import ANATOMY_DIR

    spec = check_model(ANATOMY_DIR if args.anatomy else args.model, args.folds, checkpoint=args.checkpoint)
    if not network_spec(spec.plan.network).crop_safe:
        print(f"{spec.plan.network.norm} norm: this network is never cropped (its statistics would change with the crop)")
        return 1
    graphs = fold_graphs(spec)
    plans = {m: dataclasses.replace(spec.plan, inference=dataclasses.replace(spec.plan.inference, crop_margin=m))
             for m in args.margins}
    whole = GraphPredictor(graphs, spec.plan, threads=2, crop=False)
    cropped = {m: GraphPredictor(graphs, plans[m], threads=2) for m in args.margins}
    threshold = spec.plan.inference.threshold
    stacks = _stacks(spec, args.input, args.cases, args.seed)
    rows: Dict[int, List[Dict[str, float]]] = {m: [] for m in args.margins}
    seconds: Dict[Any, List[float]] = {key: [] for key in ["whole", *args.margins]}
    for _, case in stacks:
        reference = whole.predict(case.image)
        for m in args.margins:
            rows[m].append(agreement(cropped[m].predict(case.image, case.head), reference, case.head, threshold))
        for _ in range(args.runs):  # in turns, so that a drift of the machine's speed falls on every margin alike
            for key in seconds:
                started = time.perf_counter()
                whole.predict(case.image) if key == "whole" else cropped[key].predict(case.image, case.head)
                seconds[key].append(time.perf_counter() - started)
    per_case = {key: statistics.median(v) for key, v in seconds.items()}
    binary = spec.plan.network.out_channels == 1
    print(f"{spec.folder}: {len(stacks)} scans, ONNX Runtime 2 threads, no TTA; median network pass per scan over "
          f"{args.runs} runs each: whole slices {per_case['whole']:.3f} s")
    print("margin  " + ("Dice to whole: median  lowest" if binary else "same label in head: median  lowest")
          + "  voxels differ  largest |dp| in head  time per scan  ratio")
    for m in args.margins:
        scores = [r["score"] for r in rows[m]]
        print(f"{m:6d}  {statistics.median(scores):22.4f}  {min(scores):6.4f}  {sum(r['differ'] for r in rows[m]):13d}  "
              f"{max(r['gap'] for r in rows[m]):20.4f}  {per_case[m]:11.3f} s  {per_case[m] / per_case['whole']:5.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
