"""One scan, one command: the wall time of a whole `deepwml_predict -i scan -o out` process with the shipped model
(issue #12: "a 25-slice case end to end in <= 3 s"), on each engine (`--backend auto`, which is ONNX Runtime on a
CPU, and `--backend torch`), beside the part of it that is only Python importing the modules each engine needs,
measured in fresh processes of their own, and a deepwml.Segmenter (docs/prediction.md, "Python") that keeps the models
loaded: its start, its first scan and each further scan, in a process of its own.

The scan is a synthetic 512² case (NMOSD#4, patient 1, seed 77), its central --slices slices (default 25, the
issue's case; 0: all 29), or your own with --scan (a file or a DICOM series folder). One untimed run first fills the user cache with the model's
ONNX graphs (what a user's first run does once). The variants alternate; medians of --runs.

    python benchmarks/predict_one_case.py [--runs 3] [--slices 25] [--work DIR] [--scan FILE_OR_DICOM_FOLDER]
    python benchmarks/predict_one_case.py --baseline OLD_CHECKOUT --runs 7   # default outputs here against there
    python benchmarks/predict_one_case.py --model PLAN_FOLDER --against-shipped --runs 7  # a model against the shipped one

With --baseline, only the default outputs are timed, in this checkout and in OLD_CHECKOUT (another DeepWML checkout,
run in its own folder so that its package is the one imported), alternately, and the ratio printed is the median of
the interleaved pairs' ratios: on a shared machine whose speed drifts, that is the figure to quote. --model times
another trained model (with its --checkpoint) instead of the shipped one; with --against-shipped, its default outputs
against the shipped model's in this checkout, alternately, the same way.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from machine_load import load_line  # benchmarks/machine_load.py, next to this script

from deepwml.imageio import Geometry

VARIANTS = {"default outputs": [], "--no-tta": ["--no-tta"], "--keep-outside-brain": ["--keep-outside-brain"],
            "--no-skull-strip": ["--no-skull-strip"],
            "--no-anatomy --no-qc": ["--no-anatomy", "--no-qc"],
            "--backend torch": ["--backend", "torch"], "--backend torch --no-anatomy --no-qc": ["--backend", "torch", "--no-anatomy", "--no-qc"]}
IMPORTS = {"imports only, ONNX Runtime": "import deepwml.cli.predict, deepwml.inference.run, onnxruntime",
           "imports only, torch": "import deepwml.cli.predict, deepwml.inference.run, deepwml.inference.predictor"}
#: deepwml.Segmenter in one process of its own: importing and loading the models, the first scan, then each further
#: one (the same scan again: what a script that keeps the models loaded pays per scan); printed as three numbers
SEGMENTER = """
import statistics, sys, time
started = time.perf_counter()
from deepwml import Segmenter
segmenter = Segmenter(*sys.argv[2:3], **({"checkpoint": sys.argv[3]} if len(sys.argv) > 3 else {}))
loaded = time.perf_counter()
segmenter.segment(sys.argv[1])
first = time.perf_counter()
again = []
for _ in range(3):
    t = time.perf_counter(); segmenter.segment(sys.argv[1]); again.append(time.perf_counter() - t)
print(loaded - started, first - loaded, statistics.median(again))
"""
SEGMENTER_ROWS = ("Segmenter: import, load models", "Segmenter: first scan", "Segmenter: each further scan")


def _wall(command: List[str], cwd: Optional[Path] = None) -> float:
    """Seconds from start to exit of ``command`` (run in ``cwd``); a failure stops the benchmark with its output."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started


def _segmenter_times(scan: Path, model: Optional[Path], checkpoint: str) -> List[float]:
    """(import + load, first scan, median of 3 further scans) of a deepwml.Segmenter in a process of its own."""
    done = subprocess.run([sys.executable, "-c", SEGMENTER, str(scan), *([str(model), checkpoint] if model else [])],
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"deepwml.Segmenter failed:\n{done.stderr[-2000:]}")
    return [float(v) for v in done.stdout.split()[-3:]]


def _central_slices(image: np.ndarray, geometry: Geometry, n: int) -> Tuple[np.ndarray, Geometry]:
    """The central ``n`` slices of a [S, H, W] scan and their geometry (origin moved to the first kept slice)."""
    if n <= 0 or n >= image.shape[0]:
        return image, geometry
    first = (image.shape[0] - n) // 2
    origin = np.asarray(geometry.origin) + geometry.direction_matrix @ (np.array([0.0, 0.0, first]) * np.asarray(geometry.spacing))
    return image[first:first + n], dataclasses.replace(geometry, size=(*geometry.size[:2], n), origin=tuple(float(v) for v in origin))


def main(argv: Optional[List[str]] = None) -> int:
    """Write the scan, time the variants and the imports alternately, print medians."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=None, help="folder for the scan and outputs (default: a temporary one)")
    p.add_argument("--scan", type=Path, default=None, help="time this scan (file or DICOM series folder) instead")
    p.add_argument("--slices", type=int, default=25, help="central slices of the synthetic scan to keep (0: all 29)")
    p.add_argument("--baseline", type=Path, default=None,
                   help="another DeepWML checkout: time the default outputs here and there, interleaved, and their ratio")
    p.add_argument("--model", type=Path, default=None, help="a trained model's PLAN folder to time instead of the shipped one")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help="--model's checkpoint (default best)")
    p.add_argument("--against-shipped", action="store_true",
                   help="with --model: its default outputs against the shipped model's, interleaved, and their ratio")
    args = p.parse_args(argv)
    if args.against_shipped and (args.model is None or args.baseline is not None):
        sys.exit("--against-shipped needs --model (and no --baseline)")
    if args.model is not None and not (args.model / "plans.json").is_file():
        sys.exit(f"--model {args.model}: not a trained model's PLAN folder (no plans.json in it)")
    if args.baseline is not None and not (args.baseline / "deepwml" / "cli" / "predict.py").is_file():
        sys.exit(f"--baseline {args.baseline}: not a DeepWML checkout (no deepwml/cli/predict.py in it)")
    from deepwml.imageio import read_image, write_image

    # read once before anything is made: a bad scan stops here, named
    scan, shape = (args.scan, read_image(args.scan).array.shape) if args.scan else (None, None)
    work = args.work or Path(tempfile.mkdtemp(prefix="deepwml_one_case_"))
    if scan is None:
        from deepwml.synthetic.generate import generate_case

        case = generate_case("NMOSD#4", index=1, seed=77)
        image, geometry = _central_slices(case.image, case.geometry, args.slices)
        scan, shape = write_image(image, geometry, work / "in" / "scan.nii.gz"), image.shape
    print(load_line())
    print(f"scan: {shape[0]} slices of {shape[2]}x{shape[1]}; " + (f"model {args.model} ({args.checkpoint})" if args.model else "shipped model"))
    out = (work / "predict_one_case_out").resolve()  # a name of its own: it is emptied before every run
    # absolute paths: with --baseline the command also runs in the other checkout's folder
    command = [sys.executable, "-m", "deepwml.cli.predict", "-i", str(Path(scan).resolve()), "-o", str(out)]
    model = ["-m", str(args.model.resolve()), "--checkpoint", args.checkpoint] if args.model is not None else []
    here = Path(__file__).resolve().parents[1]
    scratch = work if args.work is None else None
    if args.baseline is not None:
        return _interleaved([("this checkout", command + model, here), (str(args.baseline), command + model, args.baseline.resolve())],
                            out, args.runs, scratch)
    if args.against_shipped:
        return _interleaved([(f"model {args.model.name}", command + model, here), ("shipped model", command, here)],
                            out, args.runs, scratch)
    times = {name: [] for name in [*VARIANTS, *IMPORTS, *SEGMENTER_ROWS]}
    _wall(command)  # fills the user cache
    for _ in range(args.runs):
        for name, extra in VARIANTS.items():
            shutil.rmtree(out, ignore_errors=True)
            times[name].append(_wall([sys.executable, "-m", "deepwml.cli.predict", "-i", str(scan), "-o", str(out), *model, *extra]))
        for name, code in IMPORTS.items():
            times[name].append(_wall([sys.executable, "-c", code]))
        for name, value in zip(SEGMENTER_ROWS, _segmenter_times(scan, args.model, args.checkpoint)):
            times[name].append(value)
    for name, values in times.items():
        print(f"{name:38s} median {statistics.median(values):.2f} s  ({' / '.join(f'{v:.2f}' for v in values)})")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _interleaved(runs_of: List[Tuple[str, List[str], Path]], out: Path, runs: int, scratch: Optional[Path]) -> int:
    """Two (name, command, folder to run it in) alternately: medians, and the median ratio of the pairs (first /
    second)."""
    for _, command, folder in runs_of:  # one untimed run each: each one's graphs into the user cache
        shutil.rmtree(out, ignore_errors=True)
        _wall(command, cwd=folder)
    pairs: List[Tuple[float, float]] = []
    for _ in range(runs):
        pair = []
        for _, command, folder in runs_of:
            shutil.rmtree(out, ignore_errors=True)
            pair.append(_wall(command, cwd=folder))
        pairs.append((pair[0], pair[1]))
    (first, _, _), (second, _, _) = runs_of
    for name, values in ((first, [a for a, _ in pairs]), (second, [b for _, b in pairs])):
        print(f"default outputs, {name:30s} median {statistics.median(values):.2f} s  ({' / '.join(f'{v:.2f}' for v in values)})")
    print(f"{first} / {second}: {statistics.median(a / b for a, b in pairs):.2f} (median of {runs} interleaved pairs)")
    if scratch is not None:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from deepwml.cli.common import run

    sys.exit(run(main))
