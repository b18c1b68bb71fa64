"""Does deepwml_predict tell a scan that is not a T2-FLAIR? The contrast check (deepwml.inference.flair_check) on
synthetic patients rendered as FLAIR and with other weightings, and on the real development scans.

Each synthetic patient is drawn from one random stream per weighting: as the generator draws it (FLAIR), and with the
tissues' signals of a T2-, T1- or PD-weighted scan (WEIGHTINGS: textbook signals relative to white matter, CSF
bright on T2, grey matter darker than white on T1; assumed, not measured), so the copies share brain, lesions,
stack and artefacts. deepwml_predict segments each set as a user would (the shipped models, or ``-m``); printed per
weighting: how many scans the check flags, its figure (summary.csv's bright_brain_share) and the lesion volume the
model reports. With ``--real`` also the real
development scans (MSLUB: 3D FLAIR, predicted on slabs, and as the thick stacks benchmarks/real_dev.py makes).

    python benchmarks/flair_check.py --work /tmp/flair_check               # 12 centres x 4 patients, seed 91
    python benchmarks/flair_check.py --work /tmp/flair_check --real

The work folder resumes (scans and finished predictions are kept).
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional

import numpy as np

import deepwml.synthetic.generate as generate
from deepwml.cli.common import run
from deepwml.imageio import write_image
from deepwml.inference.lesion_report import BRIGHT_SHARE_COLUMN
from deepwml.synthetic.centres import CENTRES
from deepwml.utils.commands import run_command
from deepwml.utils.errors import DeepWMLError
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
import real_dev  # benchmarks/real_dev.py
from skull_pairs import outside_repository  # benchmarks/skull_pairs.py

#: signals relative to white matter of the tissues the generator paints, for scans that are not FLAIRs
WEIGHTINGS: Dict[str, Dict[str, float]] = {
    "T2w": dict(grey=1.3, deep_grey=1.2, csf=2.6, flow=2.6, lesion=1.6, rim=1.3, fat=1.3, skin=0.9, marrow=1.0, soft=1.0),
    "T1w": dict(grey=0.72, deep_grey=0.85, csf=0.25, flow=0.25, lesion=0.85, rim=1.0, fat=1.8, skin=0.8, marrow=1.4, soft=0.7),
    "PDw": dict(grey=1.15, deep_grey=1.1, csf=1.25, flow=1.25, lesion=1.3, rim=1.1, fat=1.2, skin=0.9, marrow=1.0, soft=1.0),
}
ARMS = ("FLAIR",) + tuple(WEIGHTINGS)


@contextmanager
def weighted(name: str) -> Iterator[None]:
    """Within it, generate_case paints the tissues with weighting ``name``'s signals (FLAIR: as drawn)."""
    original = generate.sample_contrast
    if name != "FLAIR":
        generate.sample_contrast = lambda centre, rng: replace(original(centre, rng), **WEIGHTINGS[name])
    try:
        yield
    finally:
        generate.sample_contrast = original


def make_arm(folder: Path, name: str, centres: List[str], per_centre: int, seed: int) -> Path:
    """``folder``/images: the patients with weighting ``name`` (kept when written before)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with weighted(name):
        for centre in centres:
            for index in range(1, per_centre + 1):
                path = folder / "images" / f"{CENTRES[centre].case_prefix}_{index:03d}.nii.gz"
                if not path.is_file():
                    case = generate.generate_case(centre, index, seed)
                    write_image(case.image, case.geometry, path)
    return folder


def make_real(folder: Path, data: Path) -> Path:
    """``folder``/images: the real development scans as 3D volumes and as real_dev.py's thick stacks."""
    if not data.is_dir():
        raise DeepWMLError("not found: the real development scans (--real-data)", data)
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    for patient in sorted(p for p in data.iterdir() if (p / "flair.nii.gz").is_file()):
        if not (images / f"{patient.name}_3d.nii.gz").exists():
            shutil.copyfile(patient / "flair.nii.gz", images / f"{patient.name}_3d.nii.gz")
    stacks = folder / "stacks"
    if not (stacks / "images").is_dir() and real_dev.main(["--stacks-only", "--work", str(stacks), "--data", str(data)]) != 0:
        raise DeepWMLError("benchmarks/real_dev.py could not make the stacks (above)", data)
    for stack in sorted((stacks / "images").glob("*.nii.gz")):
        if not (images / stack.name).exists():
            shutil.copyfile(stack, images / stack.name)
    return folder


def arm_row(name: str, summary_csv: Path) -> str:
    """One table row: scans, how many the check flags, the bright share's range, the lesion volume reported."""
    import pandas as pd

    frame = pd.read_csv(summary_csv)
    frame = frame[frame["status"] == "ok"]
    flagged = frame["acquisition_warning"].astype("string").fillna("").str.contains("not like a T2-FLAIR")
    share = frame[BRIGHT_SHARE_COLUMN].astype(float)
    return (f"| {name} | {len(frame)} | {int(flagged.sum())} | {share.min():.4f} / {share.median():.4f} / {share.max():.4f} "
            f"| {np.median(frame['total_lesion_volume_ml']):.1f} ({frame['total_lesion_volume_ml'].min():.1f}-"
            f"{frame['total_lesion_volume_ml'].max():.1f}) |")


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (outside the repository; resumes)")
    p.add_argument("-m", "--model", help="a lesion model's PLAN folder (default: the shipped one)")
    p.add_argument("--centres", nargs="+", default=list(CENTRES), help="centres (default: all)")
    p.add_argument("--per-centre", type=int, default=4, help="patients per centre (default 4)")
    p.add_argument("--seed", type=int, default=91, help="generator seed (default 91; the shipped model trained on 0)")
    p.add_argument("--weightings", nargs="+", default=list(ARMS), help=f"arms (default all: {', '.join(ARMS)})")
    p.add_argument("--real", action="store_true", help="also the real development scans, 3D and as thick stacks")
    p.add_argument("--real-data", type=Path, default=real_dev.DEFAULT_DATA,
                   help=f"their folder (default {real_dev.DEFAULT_DATA})")
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    work = outside_repository(args.work)
    unknown = [c for c in args.centres if c not in CENTRES] + [w for w in args.weightings if w not in ARMS]
    if unknown or args.per_centre < 1:
        raise DeepWMLError(f"--centres must name centres of {', '.join(CENTRES)}, --weightings arms of {', '.join(ARMS)} "
                           f"and --per-centre be at least 1" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    print(f"# {load_line()}")
    env = dict(os.environ)
    model = ["-m", args.model] if args.model else []
    arms = {name: make_arm(work / name, name, args.centres, args.per_centre, args.seed) for name in args.weightings}
    if args.real:
        arms["real FLAIR (MSLUB 3D and stacks)"] = make_real(work / "real", args.real_data)
    rows = []
    for name, folder in arms.items():
        run_command("predict", ["-i", str(folder / "images"), "-o", str(folder / "pred"), "--no-qc", *model], env, "flair_check")
        rows.append(arm_row(name, folder / "pred" / "summary.csv"))
    print()
    print("| scans | n | flagged 'not like a T2-FLAIR' | bright_brain_share min / median / max | lesion ml, median (range) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
