"""Fine-tuning the shipped model on a site's few labelled real scans against training from scratch (issue #12).

Cross-validation over a site's own labelled scans (--data: a folder of patientNN/flair.nii.gz + wmh.nii.gz, as
benchmarks/real_dev.py reads; several folders are several sites). Not for the MSLUB development scans of
real_dev.py: their README forbids tuning a model on them (they only measure zero-shot progress), so that folder is
refused. Every scan becomes thick-slice axial stacks as there (one per --thickness and --inplane spacing), or, with
--as-acquired, is taken as it is (a clinical 2D scan and its mask on its own grid). --holdout N scans are held out
per fold (1: leave-one-scan-out; with several sites the held-out scans are drawn from the sites in turn, so 5 + 5
scans with --holdout 2 give 5 folds holding out one scan of each site and training on 8). For each fold, the OTHER
scans' stacks become a raw dataset (imagesTr/labelsTr, the held-out scans' stacks in imagesTs), planned and
preprocessed with the pretrained model's own plans.json (the network must match for --pretrained), and trained on
every case (fold 'all') twice for the same number of training images: from scratch, and from the pretrained weights
(deepwml_train --pretrained, its default fine-tuning learning rate). The held-out stacks are then segmented by both
and by the pretrained model zero-shot, and scored as real_dev.py scores them (MICCAI-2017 WMH case metrics against
the slab labels, or the scan's own mask). The trained models are only scored, never kept or shipped.

Prints one table per site and one over all (mean Dice, lesion F1, HD95, AVD over every held-out stack; Dice per
held-out scan; the site's training images each model saw; training time), issue #12's bar per site (zero-shot mean
Dice >= 0.65 with lesion F1 >= 0.5; fine-tuned ahead of from scratch) and, over every held-out stack, a paired
Wilcoxon test of fine-tuned against from-scratch Dice, the per-stack tables of each model, and times. Every step is a public command or its library entry point; the work folder resumes (finished trainings are
skipped, interrupted ones continue).

    python benchmarks/real_dev_finetune.py --data /site/labelled --work /tmp/realft --epochs 8 --iterations 25
    python benchmarks/real_dev_finetune.py --data /svd /ms --as-acquired --holdout 2 --epochs 20 --work /tmp/bar
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Collection, Dict, List, Optional, Sequence, Tuple

import numpy as np

from deepwml.cli.common import run
from deepwml.datasets.dataset_json import CaseMeta
from deepwml.datasets.dataset_writer import SourceCase, write_dataset
from deepwml.evaluation.masks import binarise
from deepwml.imageio import read_image, read_label, write_image
from deepwml.inference.run import PredictRequest, predict
from deepwml.planning.plan import Plan
from deepwml.synthetic.thick_slices import SlabSpec
from deepwml.training.pretrained_weights import FINETUNE_LR_FACTOR
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.commands import run_command
from deepwml.utils.errors import DeepWMLError
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from real_dev import DEFAULT_DATA, Scan, StackCase, _cell, _mean, check_work_folder, find_scans, make_stacks, score, table

DATASET_ID, NAME = 531, "MSLUBLeaveOut"
DATASET = f"Dataset{DATASET_ID}_{NAME}"
#: the compared models, in table order
ZERO_SHOT, SCRATCH, FINETUNED = "zero-shot", "from scratch", "fine-tuned"
#: each model's folder-name part (results_*, pred_*)
SLUG = {ZERO_SHOT: "zeroshot", SCRATCH: "scratch", FINETUNED: "finetuned"}
#: issue #12's bar on each site's held-out scans: zero-shot mean Dice and lesion F1 at least these
BAR_DICE, BAR_LESION_F1 = 0.65, 0.5


@dataclass
class ModelRun:
    """What one compared model did over all held-out scans: score rows and seconds spent."""

    rows: List[Dict] = field(default_factory=list)
    train_seconds: float = 0.0
    #: trainings run by this invocation (the others had finished before: their time is not known here)
    trained_now: int = 0
    predict_seconds: float = 0.0


def holdout_folds(scan_ids: Sequence[str], size: int = 1, site_of: Optional[Dict[str, str]] = None
                  ) -> List[Tuple[List[str], List[str]]]:
    """(held-out scans, training scans) per fold: ``size`` scans held out per fold, every scan exactly once.

    With several sites (``site_of``: scan -> site) the scans are taken from the sites in turn before they are cut
    into folds, so a fold holds out one scan of each site where it can; the last fold may hold fewer. At least one
    scan must be left to train on."""
    if size < 1:
        raise DeepWMLError(f"--holdout must be 1 or more scans per fold, not {size}")
    if len(scan_ids) <= size:
        raise DeepWMLError(f"holding out {size} scan(s) per fold needs at least {size + 1} scans, found {len(scan_ids)}")
    by_site: Dict[str, List[str]] = {}
    for s in scan_ids:
        by_site.setdefault((site_of or {}).get(s, ""), []).append(s)
    queues = list(by_site.values())
    order = [q[k] for k in range(max(map(len, queues))) for q in queues if k < len(q)]
    groups = [order[i:i + size] for i in range(0, len(order), size)]
    return [(held, [s for s in scan_ids if s not in held]) for held in groups]


def fold_name(held_out: Sequence[str]) -> str:
    """A fold's work folder: heldout_ and its held-out scans joined by '+'."""
    return "heldout_" + "+".join(held_out)


def find_site_scans(folders: Sequence[Path], flair: str = "flair.nii.gz", mask: str = "wmh.nii.gz"
                    ) -> Tuple[List[Scan], Dict[str, str]]:
    """The scans of every --data folder (a site each; ``flair`` and ``mask``: the files' paths inside each scan's
    folder) and the site of each; with several sites a scan's id is prefixed with its site's folder name (two sites
    may both have a patient01); two sites of one name are refused."""
    names = [f.expanduser().resolve().name for f in folders]
    if len(set(names)) != len(names):
        raise DeepWMLError(f"two --data folders share a name ({', '.join(names)}); each site needs its own folder name")
    scans, site_of = [], {}
    for folder, site in zip(folders, names):
        for scan in find_scans(folder.expanduser(), flair, mask):
            scan_id = f"{site}_{scan.scan_id}" if len(folders) > 1 else scan.scan_id
            scans.append(Scan(scan_id, scan.flair, scan.mask))
            site_of[scan_id] = site
    return scans, site_of


def acquired_cases(scans: Sequence[Scan], images_dir: Path, labels_dir: Path,
                   ignore_label: Optional[int] = None) -> List[StackCase]:
    """Each scan as it was acquired (--as-acquired): image and mask copied into the work folder as NIfTI, scored on
    the scan's own grid against its own mask (1 lesion, 0 not; ``ignore_label`` voxels are trained and scored as
    neither, as the MICCAI-2017 evaluator treats its label 2); a mask off the FLAIR's grid or with other values is
    refused naming it."""
    cases = []
    for scan in scans:
        flair, mask = read_image(scan.flair), read_label(scan.mask)
        problems = flair.geometry.mismatches(mask.geometry)
        if problems:
            raise DeepWMLError(f"mask is not on the FLAIR's grid: {'; '.join(problems)}", scan.mask)
        label, ignore = binarise(mask.array, ignore_label, "reference", scan.scan_id, scan.mask)
        write_image(flair.array, flair.geometry, images_dir / f"{scan.scan_id}.nii.gz")
        stored = np.where(ignore, ignore_label or 0, label).astype(np.uint8)
        write_image(stored, flair.geometry, labels_dir / f"{scan.scan_id}.nii.gz")
        cases.append(StackCase(scan.scan_id, round(float(flair.geometry.slice_thickness), 2), scan.scan_id, label,
                               flair.geometry, ignore=ignore if ignore.any() else None))
    return cases


def inplane_suffix(inplane_mm: Optional[float]) -> str:
    """Case-id suffix of a stack resampled in-plane, e.g. _ip0p9 (none when the 1 mm grid is kept)."""
    return "" if inplane_mm is None else f"_ip{inplane_mm:g}".replace(".", "p")


def fold_sources(stacks: Sequence[StackCase], held_out: Collection[str], images: Path, labels: Path,
                 site_of: Optional[Dict[str, str]] = None) -> List[SourceCase]:
    """Raw-dataset cases of one fold: the held-out scans' stacks as test cases (Ts), every other stack for training;
    each case's centre is its site (``site_of``, else 'site')."""
    return [SourceCase(c.case_id, images / f"{c.case_id}.nii.gz", labels / f"{c.case_id}.nii.gz",
                       CaseMeta(centre=(site_of or {}).get(c.scan_id, "site"),
                                extra={"slice_thickness": c.thickness, "scan": c.scan_id}),
                       split="Ts" if c.scan_id in held_out else "Tr")
            for c in stacks]


def check_options(path: Path, options: Dict) -> None:
    """Record the options of a new work folder; refuse to resume one made with other options (stale stacks, models)."""
    if path.is_file():
        old = read_json(path)
        changed = sorted(k for k in set(old) | set(options) if old.get(k) != options.get(k))
        if changed:
            diff = "; ".join(f"{k}: {old.get(k)!r} then, {options.get(k)!r} now" for k in changed)
            raise DeepWMLError(f"this work folder was made with other options ({diff}); give a new --work folder", path)
        return
    write_json(path, options)


def pretrained_dir(spec: str) -> Path:
    """The pretrained model's PLAN folder: the shipped one for 'builtin', else the folder given."""
    from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir

    folder = builtin_model_dir() if spec == BUILTIN_ALIAS else Path(spec).expanduser().resolve()
    if not (folder / "plans.json").is_file():
        raise DeepWMLError("--pretrained: not a model's PLAN folder (no plans.json)", folder)
    return folder


def _predict(images: Path, out: Path, model: Path, folds: Optional[List[str]], checkpoint: str, args: argparse.Namespace,
             tta: Optional[bool] = None) -> float:
    """Segment every image of ``images`` into ``out`` with deepwml_predict's library entry point (``tta`` None: as
    the model is set to); its seconds."""
    report = predict(PredictRequest(input=images, output=out, model_dir=model, folds=folds, checkpoint=checkpoint,
                                    device=args.device, workers=args.num_workers, overwrite=True, write_qc=False, tta=tta))
    if report.failed:
        raise DeepWMLError(f"prediction failed for {', '.join(r.case_id for r in report.failed)}", out)
    return report.seconds


def _train(fold_dir: Path, results: Path, plan_name: str, extra: List[str], args: argparse.Namespace) -> Optional[float]:
    """Train fold 'all' unless finished (continuing an interrupted run); its seconds, None when it was already done."""
    out = results / DATASET / plan_name / "fold_all"
    if (out / "validation" / "summary.json").is_file():
        return None
    resume = ["--continue"] if (out / "checkpoint_latest.pth").is_file() else []
    cmd = ["-d", str(DATASET_ID), "all", "-p", plan_name, "--preprocessed", str(fold_dir / "preprocessed"),
           "--results", str(results), "--epochs", str(args.epochs), "--iterations", str(args.iterations),
           "--seed", str(args.seed), "--device", args.device, *extra, *resume]
    start = time.perf_counter()
    run_command("train", cmd, None, fold_dir.name)
    return time.perf_counter() - start


def run_fold(work: Path, held_out: Sequence[str], stacks: Sequence[StackCase], model: Path, plan_name: str,
             args: argparse.Namespace, runs: Dict[str, ModelRun], site_of: Optional[Dict[str, str]] = None) -> float:
    """One fold: raw dataset, plan + preprocess, both trainings, three predictions, scores of the held-out scans;
    prep seconds."""
    fold_dir = work / fold_name(held_out)
    raw = fold_dir / "raw" / DATASET
    if not (raw / "dataset.json").is_file():
        sources = fold_sources(stacks, held_out, work / "stacks" / "images", work / "stacks" / "labels", site_of)
        labels = None if args.ignore_label is None else {"background": 0, "lesion": 1, "ignore": args.ignore_label}
        result = write_dataset(sources, fold_dir / "raw", DATASET_ID, NAME, labels=labels,
                               description=f"a site's labelled scans, {', '.join(held_out)} held out")
        if result.problems:
            raise DeepWMLError(f"the stacks made a dataset with problems: {'; '.join(map(str, result.problems))}", raw)
    start = time.perf_counter()
    run_command("plan_and_preprocess", ["-d", str(DATASET_ID), "--raw", str(fold_dir / "raw"), "--preprocessed",
                                        str(fold_dir / "preprocessed"), "--plan-file", str(model / "plans.json"),
                                        "--test-fraction", "0", "-np", str(args.num_workers)], None, fold_dir.name)
    prep = time.perf_counter() - start
    held = [c for c in stacks if c.scan_id in held_out]
    rate = Plan.load(model / "plans.json").training.learning_rate * args.lr_factor
    for name, extra in ((SCRATCH, []), (FINETUNED, ["--pretrained", args.pretrained, "--lr", f"{rate:.6g}"])):
        results = fold_dir / f"results_{SLUG[name]}"
        seconds = _train(fold_dir, results, plan_name, extra, args)
        if seconds is not None:
            runs[name].train_seconds += seconds
            runs[name].trained_now += 1
        pred = fold_dir / f"pred_{SLUG[name]}"
        runs[name].predict_seconds += _predict(raw / "imagesTs", pred, results / DATASET / plan_name, ["all"], "latest", args,
                                               True if args.tta else None)
        runs[name].rows += score(held, pred)[0]
    pred = fold_dir / f"pred_{SLUG[ZERO_SHOT]}"
    runs[ZERO_SHOT].predict_seconds += _predict(raw / "imagesTs", pred, model, None, "best", args)
    runs[ZERO_SHOT].rows += score(held, pred)[0]
    return prep


def summary_table(runs: Dict[str, ModelRun], scan_ids: Sequence[str], images: int, folds: Optional[int] = None) -> str:
    """Markdown: one row per model; means over every held-out stack of ``scan_ids``, Dice per held-out scan, site
    images, training s (over all ``folds``, default one per scan).

    ``images``: training images of one training (epochs x iterations x batch); each fold trains its own model.
    """
    folds = len(scan_ids) if folds is None else folds
    runs = {name: ModelRun([x for x in r.rows if x["scan"] in scan_ids], r.train_seconds, r.trained_now, r.predict_seconds)
            for name, r in runs.items()}
    head = ["model", "Dice", "lesion F1", "HD95 mm", "AVD %", *(f"Dice {s}" for s in scan_ids), "site training images",
            "training s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in runs.items():
        cells = [_cell(_mean(r.rows, k), f) for k, f in
                 (("dice", "{:.3f}"), ("lesion_f1", "{:.2f}"), ("hd95_mm", "{:.1f}"), ("avd_percent", "{:.0f}"))]
        cells += [_cell(_mean([x for x in r.rows if x["scan"] == s], "dice"), "{:.3f}") for s in scan_ids]
        trained = name != ZERO_SHOT
        seconds = "-" if not r.trained_now else f"{r.train_seconds:.0f}" + (
            "" if r.trained_now == folds else f" ({r.trained_now} of {folds} trainings; the rest earlier)")
        cells += [str(images if trained else 0), seconds]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def bar_lines(runs: Dict[str, ModelRun], sites: Dict[str, List[str]]) -> List[str]:
    """Issue #12's bar per site: zero-shot mean Dice >= BAR_DICE with lesion F1 >= BAR_LESION_F1, and the fine-tuned
    model's mean Dice ahead of the from-scratch one's, over the site's held-out stacks."""
    lines = []
    for site, scan_ids in sites.items():
        rows = {name: [x for x in r.rows if x["scan"] in scan_ids] for name, r in runs.items()}
        dice, f1 = _mean(rows[ZERO_SHOT], "dice"), _mean(rows[ZERO_SHOT], "lesion_f1")
        tuned, scratch = _mean(rows[FINETUNED], "dice"), _mean(rows[SCRATCH], "dice")
        zero_ok, tuned_ok = dice >= BAR_DICE and f1 >= BAR_LESION_F1, tuned > scratch
        lines.append(f"{site or 'site'} ({len(scan_ids)} scans): zero-shot Dice {dice:.3f}, lesion F1 {f1:.2f} "
                     f"(bar {BAR_DICE} / {BAR_LESION_F1}: {'met' if zero_ok else 'not met'}); fine-tuned Dice {tuned:.3f} "
                     f"against from scratch {scratch:.3f} ({'ahead' if tuned_ok else 'not ahead'})")
    return lines


def paired_line(runs: Dict[str, ModelRun]) -> str:
    """Fine-tuned against from scratch over every held-out stack of every site, paired by stack: a Wilcoxon
    signed-rank test of the per-stack Dice (deepwml_evaluate --against's test)."""
    from deepwml.evaluation.paired import paired_wilcoxon

    def by_stack(run: ModelRun) -> Dict[Tuple, float]:
        return {(x["scan"], x.get("thickness"), x.get("matrix")): x["dice"] for x in run.rows if not x.get("failed")}

    tuned, scratch = by_stack(runs[FINETUNED]), by_stack(runs[SCRATCH])
    keys = sorted(set(tuned) & set(scratch), key=str)
    r = paired_wilcoxon([tuned[k] for k in keys], [scratch[k] for k in keys], "higher")
    verdict = (f"Wilcoxon signed-rank p {r['p']:.3g}, the differences favour {'fine-tuning' if r['favours'] == 'this' else 'from scratch' if r['favours'] == 'other' else 'neither'}"
               if r["testable"] else f"not testable: {r['reason']}")
    return (f"fine-tuned against from scratch, {r['n']} held-out stacks paired: median Dice difference "
            f"{'n/a' if r['median_difference'] is None else format(r['median_difference'], '+.3f')}; {verdict}")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder outside the repository (resumable)")
    p.add_argument("--data", type=Path, nargs="+", required=True,
                   help="folder of patientNN/flair.nii.gz + wmh.nii.gz of your site (not the MSLUB development scans); "
                        "several folders: several sites, scored apart")
    p.add_argument("--flair-name", default="flair.nii.gz", metavar="PATH",
                   help="the FLAIR's path inside each scan's folder (default flair.nii.gz; the WMH challenge's "
                        "layout: pre/FLAIR.nii.gz)")
    p.add_argument("--mask-name", default="wmh.nii.gz", metavar="PATH",
                   help="the mask's path inside each scan's folder (default wmh.nii.gz)")
    p.add_argument("--as-acquired", action="store_true",
                   help="the scans are clinical 2D (thick-slice) scans: train and score on them as they are, no stacks "
                        "(--thickness, --gap and --inplane do not apply)")
    p.add_argument("--ignore-label", type=int, default=None, metavar="V",
                   help="with --as-acquired: mask value to leave out of training and scoring (2 for masks in the "
                        "MICCAI-2017 WMH challenge's format, 'other pathology'); without it a mask holds only 0 and 1")
    p.add_argument("--holdout", type=int, default=1, metavar="N",
                   help="scans held out per fold, drawn from the sites in turn (default 1: leave-one-scan-out)")
    p.add_argument("--pretrained", default="builtin", help="builtin or a trained model's PLAN folder (default builtin)")
    p.add_argument("--epochs", type=int, default=8, help="epochs of each training (default 8)")
    p.add_argument("--iterations", type=int, default=25, help="iterations per epoch (default 25)")
    p.add_argument("--thickness", type=float, nargs="+", default=None, help="slice thicknesses in mm (default 5 6.5 8)")
    p.add_argument("--gap", type=float, default=None, help="gap between slabs in mm (default 0)")
    p.add_argument("--inplane", type=float, nargs="+", default=None,
                   help="in-plane spacings in mm, one stack each per thickness, e.g. 0.9 0.47 (default: keep 1 mm)")
    p.add_argument("--seed", type=int, default=0, help="seed of both trainings (default 0)")
    p.add_argument("--lr-factor", type=float, default=FINETUNE_LR_FACTOR,
                   help=f"fine-tune at this multiple of the plan's learning rate (default {FINETUNE_LR_FACTOR:g}, as deepwml_finetune "
                        "and deepwml_train --pretrained do)")
    p.add_argument("--tta", action="store_true",
                   help="predict both trained models with left-right flip TTA, as deepwml_finetune's models predict "
                        "(default: without, as deepwml_train leaves them; the zero-shot model always predicts as it is set to)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("-np", "--num-workers", type=int, default=2, help="preprocessing processes and prediction threads (default 2)")
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    for folder in args.data:
        if folder.expanduser().resolve() == DEFAULT_DATA.resolve():
            # the development scans' README: "do not tune a model on them"
            raise DeepWMLError("the MSLUB development scans measure zero-shot progress only and must not be trained on; "
                               "pass your own labelled scans", folder)
    if args.as_acquired and (args.thickness or args.gap is not None or args.inplane):
        raise DeepWMLError("--as-acquired takes the scans as they are: --thickness, --gap and --inplane make stacks "
                           "from 3D scans and do not apply")
    if args.ignore_label is not None and not (args.as_acquired and 2 <= args.ignore_label <= 255):
        raise DeepWMLError("--ignore-label needs --as-acquired and a mask value from 2 to 255")
    thickness = args.thickness or [5.0, 6.5, 8.0]
    gap = 0.0 if args.gap is None else args.gap
    scans, site_of = find_site_scans(args.data, args.flair_name, args.mask_name)
    folds = holdout_folds([s.scan_id for s in scans], args.holdout, site_of)
    check_work_folder(args.work)
    work = args.work.expanduser().resolve()
    model = pretrained_dir(args.pretrained)
    plan = Plan.load(model / "plans.json")
    check_options(work / "options.json", {
        "data": [str(d.expanduser().resolve()) for d in args.data], "pretrained": str(model), "epochs": args.epochs,
        "iterations": args.iterations, "as_acquired": args.as_acquired, "holdout": args.holdout,
        "ignore_label": args.ignore_label, "flair_name": args.flair_name, "mask_name": args.mask_name,
        "thickness": None if args.as_acquired else thickness, "gap": None if args.as_acquired else gap,
        "inplane": args.inplane, "seed": args.seed,
        # (work folders from before --lr-factor fine-tuned at the default: their options have no such key)
        **({"lr_factor": args.lr_factor} if args.lr_factor != FINETUNE_LR_FACTOR else {})})
    sites: Dict[str, List[str]] = {}
    for s in scans:
        sites.setdefault(site_of[s.scan_id], []).append(s.scan_id)
    print(f"# {load_line()}")
    print(f"data: {', '.join(f'{site} ({len(ids)} scans)' for site, ids in sites.items())}, {args.holdout} held out per "
          f"fold; pretrained: {model} (plan {plan.name})")
    t0 = time.perf_counter()
    images_dir, labels_dir = work / "stacks" / "images", work / "stacks" / "labels"
    stacks: List[StackCase] = []
    if args.as_acquired:
        stacks = acquired_cases(scans, images_dir, labels_dir, args.ignore_label)
        thickness = sorted({c.thickness for c in stacks})
    for inplane in ([] if args.as_acquired else args.inplane or [None]):
        spec_for = {t: SlabSpec(t, gap, inplane) for t in thickness}
        stacks += make_stacks(scans, spec_for, images_dir, labels_dir, inplane_suffix(inplane))
    t_stacks = time.perf_counter() - t0
    runs = {name: ModelRun() for name in (ZERO_SHOT, SCRATCH, FINETUNED)}
    t_prep = sum(run_fold(work, held, stacks, model, plan.name, args, runs, site_of) for held, _ in folds)
    images = args.epochs * args.iterations * plan.training.batch_size
    per_scan = len(stacks) // len(scans)
    what = ("scans as acquired" if args.as_acquired else
            f"stacks of {', '.join(f'{t:g}' for t in thickness)} mm; in-plane "
            f"{' / '.join(f'{x:g}' for x in args.inplane) + ' mm' if args.inplane else 'kept (1 mm)'}")
    print(f"\n{len(folds)} folds of up to {args.holdout} held-out scan(s): {per_scan} stack(s) per scan ({what}), "
          f"trained on the other scans' stacks; {args.epochs} epochs x {args.iterations} iterations x batch "
          f"{plan.training.batch_size} per training, seed {args.seed}\n")
    for site, ids in (sites.items() if len(sites) > 1 else []):
        print(f"{site}:\n\n{summary_table(runs, ids, images, len(folds))}\n")
    print(("all sites:\n\n" if len(sites) > 1 else "") + summary_table(runs, [s.scan_id for s in scans], images, len(folds)))
    print("\nissue #12 bar, per site:\n" + "\n".join(bar_lines(runs, sites)) + "\n" + paired_line(runs))
    for name, r in runs.items():
        print(f"\n{name}, every held-out stack:\n")
        print(table(r.rows, thickness))
    print(f"\ntime: {time.perf_counter() - start:.1f} s in all; stacks {t_stacks:.1f} s, plan + preprocess {t_prep:.1f} s, "
          + ", ".join(f"{name}: " + (f"training {r.train_seconds:.0f} s, " if name != ZERO_SHOT else "")
                      + f"prediction {r.predict_seconds:.1f} s" for name, r in runs.items()))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
