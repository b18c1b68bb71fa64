"""The same synthetic patients at their centre's field strength and at the other one: does a model tie a disease's
lesions to the scanner it saw them on?

In the paper's Table 1, and so in the generator, every MS and NMOSD centre scans at 3 T and most small-vessel centres
at 1.5 T, while issue #12's held-back MS site scans at 1.5 T. Each patient here is drawn twice from one random stream,
once with the vendor contrast of its centre and once with the other field strength's (3 T GE -> 1.5 T GE, 3 T Siemens
-> 1.5 T Philips, 1.5 T Philips -> 3 T Siemens, 1.5 T GE -> 3 T GE: deepwml.synthetic.acquisition's base contrasts,
with the patient's own spread around them), so the two copies share brain, lesions, masks, stack and artefacts and
differ only in the scanner's contrast, noise and bias. deepwml_predict segments both sets as a user would (the
shipped models' defaults, or ``-m``) and each case is scored (MICCAI-2017 WMH case metrics).

    python benchmarks/field_strength.py --work /tmp/field                    # MS#1-4, 8 patients each, seed 4000
    python benchmarks/field_strength.py --work /tmp/field --centres CSVD#2 CSVD#3 -m PLAN_DIR

The work folder resumes (scans and finished predictions are kept).
"""
from __future__ import annotations

import argparse
import os
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

import deepwml.synthetic.generate as generate
from deepwml.cli.common import run
from deepwml.imageio import write_image
from deepwml.synthetic.centres import CENTRES
from deepwml.utils.commands import run_command
from deepwml.utils.errors import DeepWMLError
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from skull_pairs import outside_repository, score_arm  # benchmarks/skull_pairs.py

#: (vendor, field strength) -> the scanner whose base contrast the other arm takes
OTHER_FIELD: Dict[Tuple[str, float], Tuple[str, float]] = {
    ("GE", 3.0): ("GE", 1.5), ("Siemens", 3.0): ("Philips", 1.5), ("Philips", 1.5): ("Siemens", 3.0), ("GE", 1.5): ("GE", 3.0),
}
ARMS = ("as drawn", "other field strength")


@contextmanager
def other_field_strength() -> Iterator[None]:
    """Within it, generate_case renders each scan with the other field strength's base contrast (same draws)."""
    original = generate.sample_contrast

    def swapped(centre, rng):
        vendor, field = OTHER_FIELD[(centre.vendor, centre.field_strength)]
        return original(replace(centre, vendor=vendor, field_strength=field), rng)

    generate.sample_contrast = swapped
    try:
        yield
    finally:
        generate.sample_contrast = original


def make_arm(folder: Path, centres: List[str], per_centre: int, seed: int, swap: bool) -> Path:
    """``folder``/imagesTr and labelsTr of the patients (kept when written before)."""
    (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
    (folder / "labelsTr").mkdir(exist_ok=True)
    with other_field_strength() if swap else nullcontext():
        for centre in centres:
            for index in range(1, per_centre + 1):
                name = f"{CENTRES[centre].case_prefix}_{index:03d}.nii.gz"
                if (folder / "labelsTr" / name).is_file():
                    continue
                case = generate.generate_case(centre, index, seed, case_id=name.split(".")[0])
                write_image(case.image, case.geometry, folder / "imagesTr" / name)
                # the mask last: its presence marks a finished pair
                write_image(case.label.astype(np.uint8), case.geometry, folder / "labelsTr" / name)
    return folder


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (outside the repository; resumes)")
    p.add_argument("-m", "--model", help="a lesion model's PLAN folder (default: the shipped one)")
    p.add_argument("--centres", nargs="+", default=["MS#1", "MS#2", "MS#3", "MS#4"], help="centres (default MS#1-4)")
    p.add_argument("--per-centre", type=int, default=8, help="patients per centre (default 8)")
    p.add_argument("--seed", type=int, default=4000, help="generator seed (default 4000; the shipped model trained on 0)")
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    work = outside_repository(args.work)
    unknown = [c for c in args.centres if c not in CENTRES]
    if unknown or args.per_centre < 1:
        raise DeepWMLError(f"--centres must name centres of {', '.join(CENTRES)} and --per-centre be at least 1"
                           + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    print(f"# {load_line()}")
    env = dict(os.environ)
    model = ["-m", args.model] if args.model else []
    scores = {}
    for arm in ARMS:
        folder = work / arm.replace(" ", "_")
        make_arm(folder, args.centres, args.per_centre, args.seed, swap=arm != ARMS[0])
        run_command("predict", ["-i", str(folder / "imagesTr"), "-o", str(folder / "pred"), "--no-qc", *model], env,
                    "field_strength")
        scores[arm] = score_arm(folder, folder / "pred")
    print()
    print("| arm | cases | mean Dice | lesion F1 | predicted ml | reference ml | Dice by centre |")
    print("|---|---|---|---|---|---|---|")
    for arm, rows in scores.items():
        figures = list(rows.values())
        by_centre = ", ".join(f"{CENTRES[c].name} {np.mean([f['dice'] for k, f in rows.items() if k.startswith(CENTRES[c].case_prefix + '_')]):.3f}"
                              for c in args.centres)
        print(f"| {arm} | {len(figures)} | {np.mean([f['dice'] for f in figures]):.3f} "
              f"| {np.nanmean([f['lesion_f1'] for f in figures]):.3f} | {sum(f['pred_volume_ml'] for f in figures):.1f} "
              f"| {sum(f['ref_volume_ml'] for f in figures):.1f} | {by_centre} |")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point: user errors print one line and exit 2."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
