"""Does a scan's stored intensity offset change its lesions? Each scan is written again with an offset added (the same
for every voxel), with every voxel made negative, z-scored, and z-scored over its voxels other than 0 with those left
at 0 (a stripped brain normalised within itself), as shared research data often are; deepwml_predict
(default settings: skull stripping, lesion contrast filter, cortex bound) predicts all of them, and each copy's lesion
volume and Dice against the mask of the scan as stored are printed (deepwml.inference.signal_level).

    python benchmarks/stored_offsets.py --work /tmp/offsets                         # 6 generator scans (seed 5000)
    python benchmarks/stored_offsets.py --work /tmp/offsets -i STACKS/images        # your scans instead
    python benchmarks/real_dev.py --site ms --stacks-only --work /tmp/ms            # e.g. real brains in a synthetic head

The work folder resumes (copies and finished predictions are kept).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from deepwml.cli import predict as predict_cli
from deepwml.cli.common import run
from deepwml.evaluation.case_metrics import dice
from deepwml.imageio import read_image, write_image
from deepwml.imageio.files import is_image_file, split_ending
from deepwml.synthetic.generate import generate_case
from deepwml.utils.errors import DeepWMLError
from machine_load import load_line  # benchmarks/machine_load.py, next to this script
from skull_pairs import outside_repository

#: generator scans used without -i: (centre, skull stripped)
GENERATED = (("MS#2", False), ("CSVD#3", False), ("NMOSD#1", False), ("MS#4", True), ("CSVD#1", True), ("MS#1", True))
#: copy name -> how its intensities come from the scan's (float64)
COPIES = {
    "as stored": lambda a: a,
    "+ 0.5 x range": lambda a: a + 0.5 * np.ptp(a),
    "all negative": lambda a: a - 1.5 * a.max(),
    "z-scored": lambda a: (a - a.mean()) / a.std(),
    # a stripped brain z-scored within itself, its background left at 0 (as research pipelines normalise "nonzero"
    # voxels); on a scan with noisy air, nearly the plain z-score
    "z-scored where not 0": lambda a: np.where(a != 0, (a - a[a != 0].mean()) / a[a != 0].std(), 0.0),
}


def build_parser() -> argparse.ArgumentParser:
    """Arguments of the benchmark."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, required=True, help="work folder (outside the repository; resumes)")
    p.add_argument("-i", "--input", type=Path, help="folder of scans (default: 6 generator scans, seed --seed)")
    p.add_argument("--seed", type=int, default=5000, help="generator seed without -i (default 5000)")
    p.add_argument("-m", "--model", help="deepwml_predict -m (default: the shipped model)")
    return p


def source_scans(work: Path, folder: Optional[Path], seed: int) -> List[Path]:
    """The scans to copy: the folder's images, or generator scans written once into work/scans."""
    if folder is not None:
        scans = sorted(p for p in folder.expanduser().iterdir() if is_image_file(p)) if folder.is_dir() else []
        if not scans:
            raise DeepWMLError("holds no image files", folder)
        return scans
    out = []
    for index, (centre, stripped) in enumerate(GENERATED, start=1):
        path = work / "scans" / f"{centre.replace('#', '')}_{'stripped' if stripped else 'skull'}.nii.gz"
        if not path.is_file():
            case = generate_case(centre, index=index, seed=seed, skull_stripped=stripped)
            write_image(case.image, case.geometry, path)
        out.append(path)
    return out


def write_copies(scans: List[Path], work: Path) -> Dict[str, List[str]]:
    """Each scan's copies into work/copies (kept when there); scan stem -> its copies' case ids, in COPIES' order."""
    cases = {}
    for scan in scans:
        stem = split_ending(scan)[0]
        image = None
        cases[stem] = []
        for k, change in enumerate(COPIES.values()):
            case_id = f"{stem}__{k}"
            path = work / "copies" / f"{case_id}.nii.gz"
            if not path.is_file():
                image = image or read_image(scan)
                array = image.array if k == 0 else change(image.array.astype(np.float64)).astype(np.float32)
                write_image(array, image.geometry, path)
            cases[stem].append(case_id)
    return cases


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    work = outside_repository(args.work)
    print(load_line())
    cases = write_copies(source_scans(work, args.input, args.seed), work)
    model = ["-m", args.model] if args.model else []
    if predict_cli.main(["-i", str(work / "copies"), "-o", str(work / "predictions"), "--no-qc", *model]) != 0:
        raise DeepWMLError("deepwml_predict failed on some copies (above)", work / "predictions")
    names = list(COPIES)
    print("\n| scan | " + " | ".join(f"{n}: ml (Dice)" for n in names) + " |")
    print("|---" * (len(names) + 1) + "|")
    worst = {n: 1.0 for n in names[1:]}
    for stem, ids in cases.items():
        masks = [read_image(work / "predictions" / f"{i}.nii.gz") for i in ids]
        voxel_ml = masks[0].geometry.voxel_volume_ml
        ref = masks[0].array > 0
        cells = []
        for name, mask in zip(names, masks):
            m = mask.array > 0
            agreement = dice(ref, m)
            cells.append(f"{m.sum() * voxel_ml:.2f}" + ("" if name == names[0] else f" ({agreement:.3f})"))
            if name != names[0]:
                worst[name] = min(worst[name], agreement)
        print(f"| {stem} | " + " | ".join(cells) + " |")
    print("\nlowest Dice against the scan as stored: " + ", ".join(f"{n} {d:.3f}" for n, d in worst.items()))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
