"""Fine-tuning the shipped model on a site's few labelled real scans against training from scratch (issue #12).

Leave-one-scan-out over a site's own labelled scans (--data: a folder of patientNN/flair.nii.gz + wmh.nii.gz, as
benchmarks/real_dev.py reads). Not for the MSLUB development scans of real_dev.py: their README forbids tuning a
model on them (they only measure zero-shot progress), so that folder is refused. Every scan becomes thick-slice axial stacks as there (one per --thickness and --inplane
spacing); for each scan in turn, the OTHER scans' stacks become a raw dataset (imagesTr/labelsTr, the held-out
scan's stacks in imagesTs), planned and preprocessed with the pretrained model's own plans.json (the network must
match for --pretrained), and trained on every case (fold 'all') twice for the same number of training images:
from scratch, and from the pretrained weights (deepwml_train --pretrained, its default fine-tuning learning rate).
The held-out stacks are then segmented by both and by the pretrained model zero-shot, and scored as real_dev.py
scores them (MICCAI-2017 WMH case metrics against the slab labels). The trained models are only scored, never
kept or shipped.

Prints one table (mean Dice, lesion F1, HD95, AVD over every held-out stack; Dice per held-out scan; the site's
training images each model saw; training time), the per-stack tables of each model, and times. Every step is a
public command or its library entry point; the work folder resumes (finished trainings are skipped, interrupted
ones continue).

    python benchmarks/real_dev_finetune.py --data /site/labelled --work /tmp/realft --epochs 8 --iterations 25
"""
from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from deepwml.cli.common import run
from deepwml.datasets.dataset_json import CaseMeta
from deepwml.datasets.dataset_writer import SourceCase, write_dataset
from deepwml.inference.run import PredictRequest, predict
from deepwml.planning.plan import Plan
from deepwml.synthetic.thick_slices import SlabSpec
from deepwml.utils.atomic import read_json, write_json
from deepwml.utils.commands import run_command
from deepwml.utils.errors import DeepWMLError
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from real_dev import DEFAULT_DATA, StackCase, _cell, _mean, check_work_folder, find_scans, make_stacks, score, table

DATASET_ID, NAME = 531, "MSLUBLeaveOut"
DATASET = f"Dataset{DATASET_ID}_{NAME}"
#: the compared models, in table order
ZERO_SHOT, SCRATCH, FINETUNED = "zero-shot", "from scratch", "fine-tuned"
#: each model's folder-name part (results_*, pred_*)
SLUG = {ZERO_SHOT: "zeroshot", SCRATCH: "scratch", FINETUNED: "finetuned"}
#: every stack's metadata (MSLUB: MS patients, one 3 T Siemens scanner)
META = CaseMeta(centre="MSLUB", disease="MS", vendor="Siemens", field_strength=3.0)


@dataclass
class ModelRun:
    """What one compared model did over all held-out scans: score rows and seconds spent."""

    rows: List[Dict] = field(default_factory=list)
    train_seconds: float = 0.0
    #: trainings run by this invocation (the others had finished before: their time is not known here)
    trained_now: int = 0
    predict_seconds: float = 0.0


def leave_one_out(scan_ids: Sequence[str]) -> List[Tuple[str, List[str]]]:
    """(held-out scan, training scans) for each scan in turn; at least two scans are needed."""
    if len(scan_ids) < 2:
        raise DeepWMLError(f"leave-one-scan-out needs at least two scans, found {len(scan_ids)}")
    return [(held, [s for s in scan_ids if s != held]) for held in scan_ids]


def inplane_suffix(inplane_mm: Optional[float]) -> str:
    """Case-id suffix of a stack resampled in-plane, e.g. _ip0p9 (none when the 1 mm grid is kept)."""
    return "" if inplane_mm is None else f"_ip{inplane_mm:g}".replace(".", "p")


def fold_sources(stacks: Sequence[StackCase], held_out: str, images: Path, labels: Path) -> List[SourceCase]:
    """Raw-dataset cases of one fold: the held-out scan's stacks as test cases (Ts), every other stack for training."""
    return [SourceCase(c.case_id, images / f"{c.case_id}.nii.gz", labels / f"{c.case_id}.nii.gz",
                       replace(META, extra={"slice_thickness": c.thickness, "scan": c.scan_id}),
                       split="Ts" if c.scan_id == held_out else "Tr")
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


def _predict(images: Path, out: Path, model: Path, folds: Optional[List[str]], checkpoint: str, args: argparse.Namespace) -> float:
    """Segment every image of ``images`` into ``out`` with deepwml_predict's library entry point; its seconds."""
    report = predict(PredictRequest(input=images, output=out, model_dir=model, folds=folds, checkpoint=checkpoint,
                                    device=args.device, workers=args.num_workers, overwrite=True, write_qc=False))
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


def run_fold(work: Path, held_out: str, stacks: Sequence[StackCase], model: Path, plan_name: str,
             args: argparse.Namespace, runs: Dict[str, ModelRun]) -> float:
    """One held-out scan: raw dataset, plan + preprocess, both trainings, three predictions, scores; prep seconds."""
    fold_dir = work / f"heldout_{held_out}"
    raw = fold_dir / "raw" / DATASET
    if not (raw / "dataset.json").is_file():
        result = write_dataset(fold_sources(stacks, held_out, work / "stacks" / "images", work / "stacks" / "labels"),
                               fold_dir / "raw", DATASET_ID, NAME, description=f"MSLUB stacks, {held_out} held out")
        if result.problems:
            raise DeepWMLError(f"the stacks made a dataset with problems: {'; '.join(map(str, result.problems))}", raw)
    start = time.perf_counter()
    run_command("plan_and_preprocess", ["-d", str(DATASET_ID), "--raw", str(fold_dir / "raw"), "--preprocessed",
                                        str(fold_dir / "preprocessed"), "--plan-file", str(model / "plans.json"),
                                        "--test-fraction", "0", "-np", str(args.num_workers)], None, fold_dir.name)
    prep = time.perf_counter() - start
    held = [c for c in stacks if c.scan_id == held_out]
    for name, extra in ((SCRATCH, []), (FINETUNED, ["--pretrained", args.pretrained])):
        results = fold_dir / f"results_{SLUG[name]}"
        seconds = _train(fold_dir, results, plan_name, extra, args)
        if seconds is not None:
            runs[name].train_seconds += seconds
            runs[name].trained_now += 1
        pred = fold_dir / f"pred_{SLUG[name]}"
        runs[name].predict_seconds += _predict(raw / "imagesTs", pred, results / DATASET / plan_name, ["all"], "latest", args)
        runs[name].rows += score(held, pred)[0]
    pred = fold_dir / f"pred_{SLUG[ZERO_SHOT]}"
    runs[ZERO_SHOT].predict_seconds += _predict(raw / "imagesTs", pred, model, None, "best", args)
    runs[ZERO_SHOT].rows += score(held, pred)[0]
    return prep


def summary_table(runs: Dict[str, ModelRun], scan_ids: Sequence[str], images: int) -> str:
    """Markdown: one row per model; means over every held-out stack, Dice per held-out scan, site images, training s.

    ``images``: training images of one training (epochs x iterations x batch); each fold trains its own model.
    """
    head = ["model", "Dice", "lesion F1", "HD95 mm", "AVD %", *(f"Dice {s}" for s in scan_ids), "site training images",
            "training s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in runs.items():
        cells = [_cell(_mean(r.rows, k), f) for k, f in
                 (("dice", "{:.3f}"), ("lesion_f1", "{:.2f}"), ("hd95_mm", "{:.1f}"), ("avd_percent", "{:.0f}"))]
        cells += [_cell(_mean([x for x in r.rows if x["scan"] == s], "dice"), "{:.3f}") for s in scan_ids]
        trained = name != ZERO_SHOT
        seconds = "-" if not r.trained_now else f"{r.train_seconds:.0f}" + (
            "" if r.trained_now == len(scan_ids) else f" ({r.trained_now} of {len(scan_ids)} trainings; the rest earlier)")
        cells += [str(images if trained else 0), seconds]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder outside the repository (resumable)")
    p.add_argument("--data", type=Path, required=True,
                   help="folder of patientNN/flair.nii.gz + wmh.nii.gz of your site (not the MSLUB development scans)")
    p.add_argument("--pretrained", default="builtin", help="builtin or a trained model's PLAN folder (default builtin)")
    p.add_argument("--epochs", type=int, default=8, help="epochs of each training (default 8)")
    p.add_argument("--iterations", type=int, default=25, help="iterations per epoch (default 25)")
    p.add_argument("--thickness", type=float, nargs="+", default=[5.0, 6.5, 8.0], help="slice thicknesses in mm (default 5 6.5 8)")
    p.add_argument("--gap", type=float, default=0.0, help="gap between slabs in mm (default 0)")
    p.add_argument("--inplane", type=float, nargs="+", default=None,
                   help="in-plane spacings in mm, one stack each per thickness, e.g. 0.9 0.47 (default: keep 1 mm)")
    p.add_argument("--seed", type=int, default=0, help="seed of both trainings (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("-np", "--num-workers", type=int, default=2, help="preprocessing processes and prediction threads (default 2)")
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    start = time.perf_counter()
    if args.data.expanduser().resolve() == DEFAULT_DATA.resolve():
        # the development scans' README: "do not tune a model on them"
        raise DeepWMLError("the MSLUB development scans measure zero-shot progress only and must not be trained on; "
                           "pass your own labelled scans", args.data)
    scans = find_scans(args.data.expanduser())
    folds = leave_one_out([s.scan_id for s in scans])
    check_work_folder(args.work)
    work = args.work.expanduser().resolve()
    model = pretrained_dir(args.pretrained)
    plan = Plan.load(model / "plans.json")
    check_options(work / "options.json", {
        "data": str(args.data.expanduser().resolve()), "pretrained": str(model), "epochs": args.epochs,
        "iterations": args.iterations, "thickness": args.thickness, "gap": args.gap, "inplane": args.inplane,
        "seed": args.seed})
    print(f"# {load_line()}")
    print(f"data: {args.data} ({len(scans)} scans, each held out in turn); pretrained: {model} (plan {plan.name})")
    t0 = time.perf_counter()
    stacks: List[StackCase] = []
    for inplane in args.inplane or [None]:
        spec_for = {t: SlabSpec(t, args.gap, inplane) for t in args.thickness}
        stacks += make_stacks(scans, spec_for, work / "stacks" / "images", work / "stacks" / "labels", inplane_suffix(inplane))
    t_stacks = time.perf_counter() - t0
    runs = {name: ModelRun() for name in (ZERO_SHOT, SCRATCH, FINETUNED)}
    t_prep = sum(run_fold(work, held, stacks, model, plan.name, args, runs) for held, _ in folds)
    images = args.epochs * args.iterations * plan.training.batch_size
    per_scan = len(stacks) // len(scans)
    print(f"\nleave-one-scan-out, {len(scans)} folds: {per_scan * (len(scans) - 1)} training stacks and {per_scan} "
          f"held-out stacks per fold ({', '.join(f'{t:g}' for t in args.thickness)} mm; in-plane "
          f"{' / '.join(f'{x:g}' for x in args.inplane) + ' mm' if args.inplane else 'kept (1 mm)'}); "
          f"{args.epochs} epochs x {args.iterations} iterations x batch {plan.training.batch_size} per training, seed {args.seed}\n")
    print(summary_table(runs, [s.scan_id for s in scans], images))
    for name, r in runs.items():
        print(f"\n{name}, every held-out stack:\n")
        print(table(r.rows, args.thickness))
    print(f"\ntime: {time.perf_counter() - start:.1f} s in all; stacks {t_stacks:.1f} s, plan + preprocess {t_prep:.1f} s, "
          + ", ".join(f"{name}: " + (f"training {r.train_seconds:.0f} s, " if name != ZERO_SHOT else "")
                      + f"prediction {r.predict_seconds:.1f} s" for name, r in runs.items()))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
