"""Does the lesion mask depend on how the input was normalised? Predicts each image of a folder twice with a model:
once as the plan preprocesses it, once with the network's input changed to a * x + b (the same for every voxel, as a
different normalisation's mean and standard deviation would change it), and prints the mask's voxel counts.

A network whose first layer is followed by instance normalisation undoes such a change (up to the zero padding at
the border and the clipping before it), so the intensity normalisation is not what makes such a mask depend on the
skull around the brain (benchmarks/README.md, real-data development check, `--add-head`); a network with batch norm
there (the model shipped since 2026-12-05) follows the change, and this measures by how much:

    python benchmarks/real_dev.py --builtin --add-head --thickness 6.5 --work /tmp/rd_head
    python benchmarks/input_scaling.py -i /tmp/rd_head/images
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from deepwml.cli.common import run
from deepwml.imageio import read_image
from deepwml.imageio.files import is_image_file
from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states, resolve_model_dir
from deepwml.inference.predictor import SlicePredictor
from deepwml.planning.plan import Plan
from deepwml.preprocessing.transforms import preprocess_arrays
from deepwml.training.device import setup_device
from deepwml.utils.errors import DeepWMLError


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-i", "--input", type=Path, required=True, help="folder of images (NIfTI, MHA, NRRD)")
    p.add_argument("-m", "--model", default="builtin", help="a PLAN folder, or 'builtin' (default)")
    p.add_argument("--scale", type=float, default=0.6, help="a (default 0.6)")
    p.add_argument("--shift", type=float, default=0.8, help="b (default 0.8)")
    p.add_argument("--threshold", type=float, default=None, help="mask threshold (default: the model's plan)")
    return p


def cpu_predictor(model: str) -> Tuple[Path, SlicePredictor, Plan]:
    """The folder, a CPU slice predictor and the plan of a PLAN folder or 'builtin' (the shipped model)."""
    from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir

    folder = builtin_model_dir() if model == BUILTIN_ALIAS else resolve_model_dir(model_dir=Path(model))
    spec = check_model(folder)
    return folder, SlicePredictor(build_fold_networks(spec, load_fold_states(spec)), spec.plan, setup_device("cpu")), spec.plan


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    images = sorted(p for p in args.input.expanduser().iterdir() if is_image_file(p)) if args.input.is_dir() else []
    if not images:
        raise DeepWMLError("holds no image files", args.input)
    if args.scale <= 0:
        raise DeepWMLError(f"--scale must be positive (a negative one inverts the contrast), not {args.scale}")
    folder, predictor, plan = cpu_predictor(args.model)
    threshold = plan.inference.threshold if args.threshold is None else args.threshold
    print(f"model: {folder}; input a * x + b with a = {args.scale:g}, b = {args.shift:g}; threshold {threshold:g}")
    print("| image | mask voxels, as preprocessed | mask voxels, a * x + b | ratio | voxels that differ |")
    print("|---|---|---|---|---|")
    ratios = []
    for path in images:
        prepared = preprocess_arrays(read_image(path), plan)
        x = prepared.image.astype(np.float32)
        plain = predictor.predict(x, prepared.head) >= threshold
        moved = predictor.predict(args.scale * x + args.shift, prepared.head) >= threshold
        ratio = moved.sum() / max(int(plain.sum()), 1)
        ratios.append(ratio)
        print(f"| {path.name} | {int(plain.sum())} | {int(moved.sum())} | {ratio:.3f} | {int((plain != moved).sum())} |")
    print(f"\nmedian ratio {np.median(ratios):.3f} over {len(ratios)} image(s)")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
