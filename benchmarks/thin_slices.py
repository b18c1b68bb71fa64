"""Thin-slice (3D-like) synthetic FLAIR through deepwml_predict at several --thin-slab-mm settings: does showing a
thick-slice model each thin slice as a slab around it help, and how wide a slab?

The generator's patients are drawn as usual (centre, scanner, lesions, head) but acquired in thin slices covering
150 mm (deepwml.synthetic.generate's ``thin_slices_mm``: 1 mm by default), each with its mask on that grid. Every
setting predicts the same volumes (``0``: as given; ``auto``: the model's own slab; a width in mm) and is scored per
case with the MICCAI-2017 WMH case metrics (deepwml.evaluation.case_metrics; lesions 26-connected). Printed per
setting: mean Dice, lesion F1, recall and precision, mean HD95, predicted and reference volume, and the mean of Dice
and lesion F1 (the objective deepwml_find_postprocessing maximises).

    python benchmarks/thin_slices.py --work /tmp/thin                       # the shipped model, 20 volumes, 0 / auto / 5
    python benchmarks/thin_slices.py --work /tmp/thin --slabs 0 2 3 4 5 -m PLAN_DIR

Real 3D FLAIR: `python benchmarks/real_dev.py --builtin --native --thin-slab-mm X` scores the MSLUB scans as they
come. The work folder resumes (volumes and finished predictions are kept).
"""
from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from deepwml.cli.common import run, thin_slab_setting
from deepwml.evaluation.case_metrics import case_metrics
from deepwml.imageio import read_image, write_image
from deepwml.inference.run import PredictRequest, predict
from deepwml.inference.thin_slices import model_thin_slab
from deepwml.pretrained import builtin_model_dir
from deepwml.synthetic.centres import CENTRES
from deepwml.synthetic.generate import case_id_for, generate_case
from deepwml.utils.errors import DeepWMLError
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from skull_pairs import outside_repository  # benchmarks/skull_pairs.py
#: centres drawn by default: every disease, MS and small-vessel disease at all four of their centres
DEFAULT_CENTRES = ("MS#1", "MS#2", "MS#3", "MS#4", "NMOSD#1", "NMOSD#2", "CSVD#1", "CSVD#2", "CSVD#3", "CSVD#4")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (outside the repository; resumes)")
    p.add_argument("-m", "--model", help="a lesion model's PLAN folder (default: the shipped one)")
    p.add_argument("--slabs", nargs="+", default=["0", "auto", "5"],
                   help="deepwml_predict --thin-slab-mm settings to compare (default: 0 auto 5)")
    p.add_argument("--seed", type=int, default=3000, help="generator seed (default 3000)")
    p.add_argument("--per-centre", type=int, default=2, help="patients per centre (default 2)")
    p.add_argument("--centres", default=",".join(DEFAULT_CENTRES), help="comma-separated generator centres")
    p.add_argument("--thickness", type=float, default=1.0, help="slice thickness of the volumes in mm (default 1)")
    p.add_argument("-np", "--num-processes", type=int, default=2, help="volumes generated in parallel (default 2)")
    return p


def _slab(text: str) -> Optional[float]:
    """A --slabs entry read as deepwml_predict reads --thin-slab-mm (None: auto)."""
    try:
        return thin_slab_setting(text)
    except argparse.ArgumentTypeError:
        raise DeepWMLError(f"--slabs takes 'auto' or widths in mm, not {text!r}") from None


def _make_one(job: Tuple[str, int, int, float, str]) -> str:
    """Generate and write one thin volume and its mask (skipped when written already); returns its case id."""
    centre, index, seed, thickness, folder = job
    case_id = case_id_for(centre, index)
    image_path, label_path = Path(folder) / "images" / f"{case_id}.nii.gz", Path(folder) / "labels" / f"{case_id}.nii.gz"
    if not label_path.is_file():
        case = generate_case(centre, index, seed, thin_slices_mm=thickness)
        write_image(case.image, case.geometry, image_path)
        write_image(case.label.astype(np.uint8), case.geometry, label_path)  # written last: marks the case done
    return case_id


def make_volumes(work: Path, centres: Sequence[str], per_centre: int, seed: int, thickness: float, processes: int) -> List[str]:
    """The thin volumes in work/images and their masks in work/labels; returns the case ids."""
    unknown = [c for c in centres if c not in CENTRES]
    if unknown:
        raise DeepWMLError(f"unknown centre(s) {', '.join(unknown)}; choose from {', '.join(CENTRES)}")
    for sub in ("images", "labels"):
        (work / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(c, i, seed, thickness, str(work)) for c in centres for i in range(1, per_centre + 1)]
    with ProcessPoolExecutor(max(1, processes)) as pool:
        return sorted(pool.map(_make_one, jobs))


def folder_name(slab: Optional[float]) -> str:
    """Prediction folder of one setting."""
    return "pred_auto" if slab is None else f"pred_{slab:g}mm"


def score(work: Path, cases: Sequence[str], predictions: Path) -> Dict[str, Dict]:
    """Case id -> case metrics of one setting's masks."""
    rows = {}
    for case_id in cases:
        ref = read_image(work / "labels" / f"{case_id}.nii.gz")
        rows[case_id] = case_metrics(ref.array > 0, read_image(predictions / f"{case_id}.nii.gz").array > 0, ref.geometry)
    return rows


def table_row(name: str, rows: Dict[str, Dict]) -> str:
    """One setting's line of the table."""
    figures = list(rows.values())
    dice = np.mean([f["dice"] for f in figures])
    f1 = np.nanmean([f["lesion_f1"] for f in figures])
    return (f"| {name} | {len(figures)} | {dice:.3f} | {f1:.3f} | {np.nanmean([f['lesion_recall'] for f in figures]):.3f} "
            f"| {np.nanmean([f['lesion_precision'] for f in figures]):.3f} | {np.nanmean([f['hd95_mm'] for f in figures]):.1f} "
            f"| {sum(f['pred_volume_ml'] for f in figures):.1f} | {sum(f['ref_volume_ml'] for f in figures):.1f} "
            f"| {(dice + f1) / 2:.3f} |")


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    work = outside_repository(args.work)
    slabs = [_slab(s) for s in args.slabs]
    print(f"# {load_line()}")
    cases = make_volumes(work, [c.strip() for c in args.centres.split(",") if c.strip()], args.per_centre, args.seed,
                         args.thickness, args.num_processes)
    print(f"{len(cases)} synthetic volumes, {args.thickness:g} mm slices, generator seed {args.seed}")
    model = Path(args.model).expanduser() if args.model else None
    auto_mm = model_thin_slab(model or builtin_model_dir())
    print()
    print("| --thin-slab-mm | cases | mean Dice | lesion F1 | lesion recall | lesion precision | HD95 mm | predicted ml "
          "| reference ml | (Dice + F1) / 2 |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for slab in slabs:
        out = work / folder_name(slab)
        report = predict(PredictRequest(input=work / "images", output=out, model_dir=model, write_qc=False, thin_slab_mm=slab))
        if report.failed:
            raise DeepWMLError(f"{len(report.failed)} case(s) failed: {report.failed[0].case_id}: {report.failed[0].error}", out)
        name = f"auto ({auto_mm:g} mm)" if slab is None else f"{slab:g}"
        print(table_row(name, score(work, cases, out)))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
