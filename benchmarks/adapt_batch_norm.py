"""Test-time batch-norm adaptation (AdaBN): does re-estimating a model's batch-norm statistics on each scan's own head
slices help it on real scans?

The shipped network has batch norm at its finer levels (since 2026-12-05), whose statistics were learnt on synthetic
scans. For each stack of a real_dev.py work folder this writes a copy of the model whose batch-norm running means and
variances are ``(1 - mix) x`` the stored ones ``+ mix x`` those of the scan's own head slices (a plain average over
batches of 8, as the network computes them in training mode; every other weight, the calibration and the stored
postprocessing unchanged), segments the stack with it through deepwml_predict (the torch engine; otherwise its defaults:
flip TTA, threshold, lesions outside the brain dropped) and scores the masks with real_dev.py --predictions, once per --mix:

    python benchmarks/real_dev.py --stacks-only --work DIR [STACK OPTIONS]
    python benchmarks/adapt_batch_norm.py --work DIR [--mix 0 0.5 1] [-m PLAN_FOLDER] [STACK OPTIONS]

``--mix 0`` is the model as it is (its scores equal real_dev.py's own run of it). Options this script does not know
are passed to real_dev.py (give the stack options used for --stacks-only). ``--no-score`` only writes the masks.
"""
from __future__ import annotations

import argparse
import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
from batchnorm_conversion import average_statistics, head_slices  # benchmarks/batchnorm_conversion.py, next to this script

STATISTICS = ("running_mean", "running_var")


def scan_statistics(net: torch.nn.Module, slices: torch.Tensor) -> Dict[str, torch.Tensor]:
    """The running means and variances every batch norm of ``net`` computes over ``slices`` ([S, C, H, W]) as a plain
    average of batches of 8; ``net`` itself is left unchanged."""
    probe = copy.deepcopy(net)
    names = [name for name, m in probe.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    average_statistics(probe, [slices], names)
    return {k: v for k, v in probe.state_dict().items() if k.endswith(STATISTICS)}


def mixed_state(stored: Dict[str, torch.Tensor], scan: Dict[str, torch.Tensor], mix: float) -> Dict[str, torch.Tensor]:
    """``stored`` with each batch-norm statistic replaced by ``(1 - mix) x stored + mix x scan``."""
    if not 0.0 <= mix <= 1.0:
        raise ValueError(f"--mix must lie in [0, 1], not {mix}")
    return {k: (1 - mix) * v + mix * scan[k] if k in scan else v for k, v in stored.items()}


def write_model(source: Path, checkpoint: Path, state: Dict[str, torch.Tensor], dest: Path) -> Path:
    """A PLAN folder at ``dest``: ``source``'s plan files and its checkpoint with ``state`` as the weights."""
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "fold_0").mkdir(parents=True)
    for name in ("plans.json", "dataset.json", "fingerprint.json"):
        if (source / name).is_file():
            shutil.copy(source / name, dest / name)
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    saved["model"] = state
    torch.save(saved, dest / "fold_0" / "checkpoint_latest.pth")
    return dest


def adapt_and_segment(images: Sequence[Path], model: Path, checkpoint: str, mixes: Sequence[float], work: Path) -> List[Path]:
    """For each mix, segment every image with its own adapted copy of ``model``; the folders of masks, one per mix."""
    from deepwml.cli.predict import main as predict_main
    from deepwml.imageio import read_image
    from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states

    spec = check_model(model, checkpoint=checkpoint)
    if len(spec.folds) != 1:
        raise SystemExit(f"{model}: adapts a one-network model only, not {len(spec.folds)} folds")
    net = build_fold_networks(spec, load_fold_states(spec))[0].eval()
    stored = net.state_dict()
    if not any(k.endswith(STATISTICS) for k in stored):
        raise SystemExit(f"{model}: its network has no batch norm to adapt (norm {spec.plan.network.norm!r})")
    source_checkpoint = spec.checkpoints[0]
    statistics = {image: scan_statistics(net, head_slices(read_image(image), spec.plan)) for image in images}  # per channel: small
    folders = []
    for mix in mixes:
        folder = work / f"mix_{mix:g}"
        (folder / "pred").mkdir(parents=True, exist_ok=True)
        folders.append(folder / "pred")
        for image in images:
            case = image.name.split(".")[0]
            state = mixed_state(stored, statistics[image], mix)
            adapted = write_model(model, source_checkpoint, state, folder / "models" / case)
            single = folder / "in" / case
            single.mkdir(parents=True, exist_ok=True)
            shutil.copy(image, single / image.name)
            # the torch engine: ONNX Runtime would export every adapted copy into the user's cache
            if predict_main(["-i", str(single), "-o", str(folder / "out" / case), "-m", str(adapted), "--checkpoint",
                             "latest", "--no-qc", "--overwrite", "--backend", "torch"]) != 0:
                raise SystemExit(f"deepwml_predict failed on {image}")
            shutil.copy(folder / "out" / case / image.name, folder / "pred" / image.name)
        print(f"mix {mix:g}: {len(images)} masks in {folder / 'pred'}", flush=True)
    return folders


def main(argv: Optional[List[str]] = None) -> int:
    """Adapt, segment and score."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="a real_dev.py --stacks-only work folder (DIR/images)")
    p.add_argument("--mix", type=float, nargs="+", default=[0.0, 0.5, 1.0], help="shares of the scan's statistics")
    p.add_argument("-m", "--model", default="builtin", help="a PLAN folder, or 'builtin' (default)")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="latest")
    p.add_argument("--no-score", action="store_true", help="write the masks, do not score them")
    args, stack_options = p.parse_known_args(argv)
    from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir

    for mix in args.mix:
        if not 0.0 <= mix <= 1.0:
            raise SystemExit(f"--mix must lie in [0, 1], not {mix}")
    images = sorted((args.work / "images").glob("*.nii.gz"))
    if not images:
        raise SystemExit(f"{args.work / 'images'}: no stacks (run real_dev.py --stacks-only --work {args.work} first)")
    model = builtin_model_dir() if args.model == BUILTIN_ALIAS else Path(args.model)
    folders = adapt_and_segment(images, model, args.checkpoint, args.mix, args.work / "adabn")
    if args.no_score:
        return 0
    real_dev = Path(__file__).resolve().parent / "real_dev.py"
    for mix, folder in zip(args.mix, folders):
        print(f"\n## mix {mix:g} (share of each scan's own batch-norm statistics)", flush=True)
        subprocess.run([sys.executable, str(real_dev), "--predictions", str(folder), "--work", str(args.work),
                        *stack_options], check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
