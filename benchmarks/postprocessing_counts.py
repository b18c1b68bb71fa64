"""How long deepwml_find_postprocessing takes to count one case over its default grid (13 thresholds, 1960
candidates, the lesion contrast filter included), on two kinds of probability map of the same synthetic scans:
the shipped model's, and a barely trained model's stand-in (a steep function of each voxel's brightness, so that
half the head passes the lowest threshold as one lesion among thousands of specks, as a model after a few minutes
of training makes them). Prints the median of --runs per case; with --baseline, the same counting in another
DeepWML checkout in the same run, and whether both count the same. With --anatomy, every candidate mask also loses the
lesions the shipped anatomy model's map drops (outside the brain; faint in or against the cortex), as the search does
by default since 2026-12-07 (deepwml.calibration.fit_input.anatomy_rules).

    python benchmarks/postprocessing_counts.py [--cases 3] [--runs 3] [--anatomy] [--baseline OLD_CHECKOUT] [--work DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import numpy as np

from machine_load import load_line  # benchmarks/machine_load.py, next to this script

#: synthetic centres of the scans: fine and coarse matrices, with and without skull
CENTRES = (("CSVD#3", False), ("MS#1", False), ("NMOSD#2", True), ("CSVD#1", False))


def make_cases(work: Path, count: int, seed: int) -> List[Dict[str, str]]:
    """Write ``count`` synthetic scans with their labels and both probability maps below ``work``; their paths."""
    from deepwml.cli.predict import main as predict
    from deepwml.imageio import read_image, write_image
    from deepwml.synthetic.generate import generate_case

    cases = []
    for index in range(count):
        centre, stripped = CENTRES[index % len(CENTRES)]
        name = f"case{index}"
        paths = {k: str(work / k / f"{name}.nii.gz") for k in ("image", "label", "barely_trained")}
        paths["shipped"] = str(work / "shipped" / f"{name}_prob.nii.gz")
        paths["anatomy"] = str(work / "anatomy" / f"{name}_anatomy.nii.gz")
        if not Path(paths["barely_trained"]).is_file():
            case = generate_case(centre, index=index, seed=seed, skull_stripped=stripped)
            write_image(case.image, case.geometry, paths["image"])
            write_image(case.label, case.geometry, paths["label"])
            write_image(barely_trained(case.image), case.geometry, paths["barely_trained"])
        cases.append(paths)
    if any(not Path(c["shipped"]).is_file() for c in cases):
        if predict(["-i", str(work / "image"), "-o", str(work / "shipped"), "--save-probabilities", "--no-qc",
                    "--no-anatomy"]) != 0:
            sys.exit("deepwml_predict failed on the synthetic scans")
    if any(not Path(c["anatomy"]).is_file() for c in cases):
        if predict(["-i", str(work / "image"), "-o", str(work / "anatomy"), "--save-anatomy", "--no-qc"]) != 0:
            sys.exit("deepwml_predict failed on the synthetic scans")
    for c in cases:  # the stand-in's share of the scan at the lowest threshold, for the record
        c["share_at_0.2"] = float(np.mean(read_image(c["barely_trained"]).array >= 0.2))
    return cases


def barely_trained(image: np.ndarray) -> np.ndarray:
    """Lesion probabilities that rise steeply with brightness around the brain's median, voxel by voxel (noise and
    all): most of the brain above 0.2, specks and a few broad bright regions above 0.5."""
    positive = image[image > 0]
    median = float(np.median(positive[positive > 0.1 * np.median(positive)]))
    return (1 / (1 + np.exp(-12 * (image / median - 1.1)))).astype(np.float32)


def time_counts(cases: List[Dict[str, str]], runs: int, anatomy: bool = False) -> Dict[str, Dict[str, object]]:
    """Per case and map: the median seconds of ``runs`` countings and the counts (as lists); ``anatomy``: with the
    anatomy map's rules, as the search applies them by default."""
    from deepwml.calibration.fit_input import FitInput, anatomy_rules
    from deepwml.calibration.postprocessing_search import SearchGrid, case_counts
    from deepwml.constants import MIN_CORTEX_CONTRAST
    from deepwml.imageio import read_image
    from deepwml.inference.postprocessing import MaskSettings

    candidates = SearchGrid().candidates(MaskSettings(0.5, 0.0, 0.0, False, 0.0))
    out: Dict[str, Dict[str, object]] = {}
    for c in cases:
        image, label = read_image(c["image"]), read_image(c["label"]).array > 0
        voxel_ml = float(np.prod(image.geometry.spacing)) / 1000
        rules = None
        if anatomy:
            shown = FitInput(Path(c["anatomy"]).parent, drop_outside=True, cortex_contrast=MIN_CORTEX_CONTRAST)
            rules = anatomy_rules(shown, read_image(c["anatomy"], dtype=None).array, image.array, image.geometry)
        for kind in ("shipped", "barely_trained"):
            probs = read_image(c[kind]).array
            seconds = []
            for _ in range(runs):
                start = time.perf_counter()
                counts = case_counts(probs, label, None, voxel_ml, candidates, image.array, image.geometry, keep_lesions=rules)
                seconds.append(time.perf_counter() - start)
            out[f"{Path(c['image']).name} {kind}"] = {"seconds": statistics.median(seconds), "counts": counts.tolist()}
    return out


def in_checkout(checkout: Path, cases_file: Path, runs: int, anatomy: bool = False) -> Dict[str, Dict[str, object]]:
    """time_counts run by another checkout's code (in its own folder, so that its package is the one imported)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--time-only", str(cases_file), "--runs",
                        str(runs), "--result", result.name] + (["--anatomy"] if anatomy else []), cwd=checkout, check=True,
                       env=dict(os.environ, PYTHONPATH=str(checkout.resolve())))
        return json.loads(Path(result.name).read_text())


def main() -> None:
    """Make the maps, count them here (and in the baseline), print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3)
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--anatomy", action="store_true", help="with the anatomy map's rules, as the search by default")
    parser.add_argument("--baseline", type=Path, default=None, help="another DeepWML checkout, timed in the same run")
    parser.add_argument("--work", type=Path, default=None, help="keep the scans and maps here (reused by a second run)")
    parser.add_argument("--time-only", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.time_only is not None:  # the baseline's side
        args.result.write_text(json.dumps(time_counts(json.loads(args.time_only.read_text()), args.runs, args.anatomy)))
        return
    if args.baseline is not None and not (args.baseline / "deepwml" / "calibration" / "postprocessing_search.py").is_file():
        sys.exit(f"--baseline {args.baseline}: not a DeepWML checkout (no deepwml/calibration/postprocessing_search.py)")
    with tempfile.TemporaryDirectory() as scratch:
        work = (args.work or Path(scratch)).resolve()
        cases = make_cases(work, args.cases, args.seed)
        cases_file = work / "cases.json"
        cases_file.write_text(json.dumps(cases))
        print(load_line())
        here = time_counts(cases, args.runs, args.anatomy)
        there = in_checkout(args.baseline, cases_file, args.runs, args.anatomy) if args.baseline is not None else None
    shares = {f"{Path(c['image']).name} barely_trained": c["share_at_0.2"] for c in cases}
    print(f"counting one case over the default grid, median of {args.runs}:")
    for key, mine in here.items():
        line = f"  {key}: {mine['seconds']:.2f} s"
        if key in shares:
            line += f" ({shares[key]:.0%} of the scan at probability >= 0.2)"
        if there is not None:
            theirs = there[key]
            same = "same counts" if theirs["counts"] == mine["counts"] else "COUNTS DIFFER"
            line += f"; baseline {theirs['seconds']:.2f} s ({theirs['seconds'] / mine['seconds']:.2f}x), {same}"
        print(line)


if __name__ == "__main__":
    main()
