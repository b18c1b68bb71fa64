"""Does a lesion mask depend on how much of the head the stack covers? Predicts each image of a folder twice: whole,
and with ``--drop`` slices taken off each end of its slice axis (as a scan that stops higher, or starts lower, would
be acquired), and compares the two masks on the slices both hold.

The plan's z-score is taken over the whole scan's head, so slices through the skull base, orbits and neck, or their
absence, move the normalised intensities of every other slice. A network with instance norm after its first layer
undoes that (benchmarks/input_scaling.py); one with batch norm there follows it. A longitudinal comparison of two
visits whose coverage differs sees this as lesion change:

    python benchmarks/pretrained_heldout.py --work /tmp/ho          # synthetic scans with skull, orbits, sinuses
    python benchmarks/slice_coverage.py -i /tmp/ho/raw/Dataset511_SynthHeldout/imagesTr -m builtin --drop 3
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from deepwml.cli.common import run
from deepwml.imageio import Geometry, Image, read_image
from deepwml.imageio.files import is_image_file
from deepwml.inference.predictor import SlicePredictor
from deepwml.preprocessing.transforms import preprocess_arrays
from deepwml.utils.errors import DeepWMLError
from input_scaling import cpu_predictor  # benchmarks/input_scaling.py, next to this script


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-i", "--input", type=Path, required=True, help="folder of images (NIfTI, MHA, NRRD)")
    p.add_argument("-m", "--models", nargs="+", default=["builtin"], help="PLAN folders, or 'builtin' (default)")
    p.add_argument("--drop", type=int, default=3, help="slices taken off each end of the slice axis (default 3)")
    p.add_argument("--limit", type=int, default=None, help="the first N images only")
    return p


def stacks(path: Path, drop: int) -> Tuple[Image, Image]:
    """The image whole, and without ``drop`` slices at each end of its slice axis (the same voxels, origin moved)."""
    whole = read_image(path)
    geometry = whole.geometry
    axis, n = geometry.slice_axis, geometry.n_slices
    if n <= 2 * drop + 1:
        raise DeepWMLError(f"has {n} slices: too few to drop {drop} at each end", path)
    first = np.zeros((1, 3))
    first[0, axis] = drop
    size = list(geometry.size)
    size[axis] = n - 2 * drop
    index = [slice(None)] * 3
    index[geometry.slice_axis_numpy] = slice(drop, n - drop)
    cropped = Geometry(tuple(size), geometry.spacing, tuple(geometry.index_to_world(first)[0]), geometry.direction)
    return whole, Image(whole.array[tuple(index)], cropped, path)


def compare(predictor: SlicePredictor, plan, threshold: float, whole: Image, cropped: Image, drop: int) -> Tuple[int, int, int]:
    """Mask voxels on the shared slices, whole then cropped, and the voxels both masks hold there."""
    full = preprocess_arrays(whole, plan)
    part = preprocess_arrays(cropped, plan)
    mask_full = predictor.predict(full.image.astype(np.float32), full.head) >= threshold
    mask_part = predictor.predict(part.image.astype(np.float32), part.head) >= threshold
    # canonical order may flip the slice axis; dropping the same number at each end keeps the same slices either way
    shared = mask_full[drop:mask_full.shape[0] - drop]
    if shared.shape != mask_part.shape:
        raise DeepWMLError(f"masks of {shared.shape} and {mask_part.shape} voxels do not line up", whole.path)
    return int(shared.sum()), int(mask_part.sum()), int((shared & mask_part).sum())


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    if args.drop < 1:
        raise DeepWMLError(f"--drop must be at least 1 slice, not {args.drop}")
    images = sorted(p for p in args.input.expanduser().iterdir() if is_image_file(p)) if args.input.is_dir() else []
    if not images:
        raise DeepWMLError("holds no image files", args.input)
    images = images[: args.limit] if args.limit else images
    print(f"{len(images)} image(s); {args.drop} slice(s) dropped at each end; masks at each model's plan threshold, no TTA")
    print("| model | median ratio of mask voxels (cropped / whole) | 10th–90th percentile | median Dice | lowest Dice "
          "| all images pooled: ratio, Dice |")
    print("|---|---|---|---|---|---|")
    predictors = {name: cpu_predictor(name)[1:] for name in args.models}
    ratios = {name: [] for name in predictors}
    dices = {name: [] for name in predictors}
    pooled = {name: np.zeros(3) for name in predictors}
    for path in images:  # each image read once, predicted by every model
        whole, cropped = stacks(path, args.drop)
        for name, (predictor, plan) in predictors.items():
            counts = compare(predictor, plan, plan.inference.threshold, whole, cropped, args.drop)
            a, b, both = counts
            pooled[name] += counts
            if a + b:
                ratios[name].append(b / max(a, 1))
                dices[name].append(2.0 * both / (a + b))
    for name in predictors:
        if not ratios[name]:
            print(f"| {name} | no lesion predicted | – | – | – | – |")
            continue
        lo, hi = np.percentile(ratios[name], [10, 90])
        total = pooled[name]
        print(f"| {name} | {np.median(ratios[name]):.3f} | {lo:.3f}–{hi:.3f} | {np.median(dices[name]):.3f} | "
              f"{min(dices[name]):.3f} | {total[1] / max(total[0], 1):.3f}, {2 * total[2] / (total[0] + total[1]):.3f} |")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
