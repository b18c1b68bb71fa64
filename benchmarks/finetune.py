"""Fine-tuning a pretrained model on a new site's few labelled scans against training from scratch (issue #12).

A "site" is one synthetic centre drawn with a seed the pretrained model never saw: ``--train-cases`` scans to
learn from, ``--test-cases`` other scans of the same centre to score on. Both runs see exactly the same number of
training images (same epochs x iterations x batch); the zero-shot pretrained model is scored too.

    python benchmarks/finetune.py --work /tmp/finetune                 # the shipped model (builtin)
    python benchmarks/finetune.py --work /tmp/ft --pretrained RESULTS/Dataset510_SynthPretrain/cpu_fast --centre MS#3

Prints a Markdown table (per-slice median Dice, case mean Dice, lesion F1) and the time of each run. Every step
is a public command; the work folder resumes.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import SimpleITK as sitk
from scipy import ndimage
from skimage.filters import threshold_otsu

from deepwml.cli.common import run
from deepwml.training.pretrained_weights import FINETUNE_LR_FACTOR
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.commands import run_command
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from results_table import headline, print_table  # benchmarks/results_table.py

DATASET_ID, NAME = 520, "SiteFinetune"
DATASET = f"Dataset{DATASET_ID}_{NAME}"


def _run(module: str, args: List[str], env: Dict[str, str]) -> float:
    """Run one public command; returns its wall time."""
    start = time.perf_counter()
    run_command(module, args, env, "finetune")
    return time.perf_counter() - start


def tissue_median(image: np.ndarray) -> float:
    """Median of the voxels above the Otsu threshold of the non-zero ones: the head's tissue, not air or CSF."""
    values = image[image > 0]
    return float(np.median(values[values > threshold_otsu(values)]))


def shift_image(image: np.ndarray, contrast: float, noise: float, rng: np.random.Generator) -> np.ndarray:
    """A flatter, noisier scanner: m * (I / m) ** contrast about the tissue median m, then Rician noise of noise x m."""
    m = tissue_median(image)
    out = m * np.power(np.clip(image, 0, None) / m, contrast)
    if noise > 0:
        out = np.hypot(out + rng.normal(0, noise * m, out.shape), rng.normal(0, noise * m, out.shape))
    return out.astype(np.float32)


def dilate_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Each slice's lesions grown ``pixels`` in-plane (a 4-connected step each), as a generous rater outlines them."""
    if pixels <= 0:
        return mask
    step = np.zeros((1, 3, 3), bool)
    step[0, 1, :] = step[0, :, 1] = True
    return ndimage.binary_dilation(mask > 0, structure=step, iterations=pixels).astype(mask.dtype)


def _rewrite(path: Path, change) -> None:
    """``change`` applied to one NIfTI's voxels, same geometry, written beside it and renamed over it."""
    img = sitk.ReadImage(str(path))
    out = sitk.GetImageFromArray(change(sitk.GetArrayFromImage(img)))
    out.CopyInformation(img)
    tmp = path.with_name(".tmp_" + path.name)
    sitk.WriteImage(out, str(tmp))
    tmp.replace(path)


def shift_site(raw: Path, contrast: float, noise: float, dilate: int, seed: int) -> None:
    """Rewrite the site's images and masks in place as its scanner and raters make them (each file once: a marker records how)."""
    marker = raw / "site_shift.json"
    wanted = {"contrast": contrast, "noise": noise, "dilate_masks": dilate, "seed": seed}
    state = read_json(marker) if marker.is_file() else {"settings": wanted, "done": []}
    if state["settings"] != wanted:
        raise SystemExit(f"{raw} was shifted with {state['settings']}, not {wanted}: use another --work")
    done = set(state["done"])
    images = ("imagesTr", "imagesTs") if (contrast != 1.0 or noise > 0) else ()
    labels = ("labelsTr", "labelsTs") if dilate > 0 else ()
    for folders, change in ((images, None), (labels, lambda a: dilate_mask(a, dilate))):
        for path in sorted(p for folder in folders for p in (raw / folder).glob("*.nii.gz")):
            key = f"{path.parent.name}/{path.name}"
            if key in done:
                continue
            if change is None:  # each scan its own noise stream, so a resumed run draws what a whole one would
                rng = np.random.default_rng([seed, len(key), *key.encode()])
                _rewrite(path, lambda a, rng=rng: shift_image(a.astype(np.float64), contrast, noise, rng))
            else:
                _rewrite(path, change)
            done.add(key)
            write_json(marker, {"settings": wanted, "done": sorted(done)})
    write_json(marker, {"settings": wanted, "done": sorted(done)})


def _score(work: Path, name: str, model: List[str], env: Dict[str, str]) -> Dict[str, float]:
    """Predict the site's test scans with ``model`` (CLI arguments) and evaluate; headline figures."""
    raw = work / "raw" / DATASET
    pred, report = work / f"pred_{name}", work / f"report_{name}"
    _run("predict", ["-i", str(raw / "imagesTs"), "-o", str(pred), *model, "--no-qc"], env)
    _run("evaluate", ["-ref", str(raw / "labelsTs"), "-pred", str(pred), "-d", str(DATASET_ID), "-o", str(report)], env)
    return headline(report)


def main(argv: Optional[List[str]] = None) -> int:
    """Make the site, train both ways, score, print."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (resumable)")
    p.add_argument("--pretrained", default="builtin", help="builtin or a PLAN/fold folder or checkpoint (default builtin)")
    p.add_argument("--centre", default="CSVD#2", help="the new site's centre (default CSVD#2)")
    p.add_argument("--scale", type=float, default=0.5, help="fraction of the centre's patients to draw (default 0.5)")
    p.add_argument("--test-fraction", type=float, default=0.5, help="share of them kept as the site's test scans")
    p.add_argument("--seed", type=int, default=77, help="seed of the site's scans (the shipped model used 0)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--iterations", type=int, default=20)
    p.add_argument("--preset", default="cpu_fast", help="plan preset of both runs (default cpu_fast; the shipped model's is cpu_fast_robust)")
    p.add_argument("--lr-factors", type=float, nargs="+", default=[FINETUNE_LR_FACTOR],
                   help=f"fine-tune at these multiples of the plan's learning rate (default {FINETUNE_LR_FACTOR})")
    p.add_argument("--train-seed", type=int, default=0, help="seed of every training (default 0; another one: another --work)")
    p.add_argument("--tta", action="store_true", help="also score each trained model with left-right flip TTA")
    p.add_argument("--site-contrast", type=float, default=1.0, help="the site's contrast exponent about the tissue median (< 1: flatter)")
    p.add_argument("--site-noise", type=float, default=0.0, help="Rician noise added, as a share of the tissue median")
    p.add_argument("--dilate-masks", type=int, default=0, help="the site's raters outline lesions this many pixels wider")
    args = p.parse_args(argv)
    print(load_line())
    work = args.work.resolve()
    env = dict(os.environ, DEEPWML_RAW=str(work / "raw"), DEEPWML_PREPROCESSED=str(work / "pp"), DEEPWML_RESULTS=str(work / "res"))
    _run("make_synthetic", ["--raw", str(work / "raw"), "--dataset-id", str(DATASET_ID), "--name", NAME, "--centres", args.centre,
                            "--scale", str(args.scale), "--seed", str(args.seed), "--test-fraction", str(args.test_fraction)], env)
    shift_site(work / "raw" / DATASET, args.site_contrast, args.site_noise, args.dilate_masks, args.seed)
    plan = args.preset
    _run("plan_and_preprocess", ["-d", str(DATASET_ID), "--preset", plan, "--test-fraction", "0"], env)
    train = ["-d", str(DATASET_ID), "all", "-p", plan, "--epochs", str(args.epochs), "--iterations", str(args.iterations),
             "--seed", str(args.train_seed)]
    base_lr = read_json(work / "pp" / DATASET / plan / "plans.json")["training"]["learning_rate"]
    runs = [("scratch", [])]
    for factor in args.lr_factors:
        name = "fine-tuned" if factor == FINETUNE_LR_FACTOR else f"fine-tuned, {factor:g} x lr"
        runs.append((name, ["--pretrained", args.pretrained, "--lr", f"{base_lr * factor:.6g}"]))
    rows, seconds = {}, {}
    for name, extra in runs:
        results = work / ("res_" + name.replace(", ", "_").replace(" ", ""))
        env_run = dict(env, DEEPWML_RESULTS=str(results))
        fold = results / DATASET / plan / "fold_all"
        if not (fold / "validation" / "summary.json").is_file():
            seconds[name] = _run("train", train + extra + (["--continue"] if (fold / "checkpoint_latest.pth").is_file() else []), env_run)
        model = ["-m", str(results / DATASET / plan), "-f", "all", "--checkpoint", "latest"]
        rows[name] = _score(work, results.name[4:], model, env_run)
        if args.tta:
            rows[f"{name}, flip TTA"] = _score(work, results.name[4:] + "_tta", model + ["--tta"], env_run)
    rows["zero-shot pretrained"] = _score(work, "zeroshot", ["-m", args.pretrained], env)
    images = args.epochs * args.iterations * 8
    n_train = read_json(work / "raw" / DATASET / "dataset.json")["numTraining"]
    shift = f"; site contrast {args.site_contrast:g}, noise {args.site_noise:g}, masks dilated {args.dilate_masks} px"
    print(f"\n{args.centre}, seed {args.seed}: {n_train} training scans, {images} training images per run, plan {plan}{shift}\n")
    print_table("model", rows, seconds)
    return 0


if __name__ == "__main__":
    sys.exit(run(main))
