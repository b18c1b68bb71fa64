"""One scan, one command: the wall time of a whole `deepwml_predict -i scan -o out` process with the shipped model
(issue #12: "a 25-slice case end to end in <= 3 s"), on each engine (`--backend auto`, which is ONNX Runtime on a
CPU, and `--backend torch`), beside the part of it that is only Python importing the modules each engine needs,
measured in fresh processes of their own.

The scan is a synthetic 512² case (NMOSD#4, patient 1, seed 77: 29 slices, more than the 25 asked for), or your
own with --scan (a file or a DICOM series folder). One untimed run first fills the user cache with the model's
ONNX graphs (what a user's first run does once). The variants alternate; medians of --runs.

    python benchmarks/predict_one_case.py [--runs 3] [--work DIR] [--scan FILE_OR_DICOM_FOLDER]
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import List, Optional

from machine_load import load_line  # benchmarks/machine_load.py, next to this script

VARIANTS = {"default outputs": [], "--no-anatomy --no-qc": ["--no-anatomy", "--no-qc"],
            "--backend torch": ["--backend", "torch"], "--backend torch --no-anatomy --no-qc": ["--backend", "torch", "--no-anatomy", "--no-qc"]}
IMPORTS = {"imports only, ONNX Runtime": "import deepwml.cli.predict, deepwml.inference.run, onnxruntime",
           "imports only, torch": "import deepwml.cli.predict, deepwml.inference.run, deepwml.inference.predictor"}


def _wall(command: List[str]) -> float:
    """Seconds from start to exit of ``command``; a failure stops the benchmark with its output."""
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main(argv: Optional[List[str]] = None) -> int:
    """Write the scan, time the variants and the imports alternately, print medians."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--work", type=Path, default=None, help="folder for the scan and outputs (default: a temporary one)")
    p.add_argument("--scan", type=Path, default=None, help="time this scan (file or DICOM series folder) instead")
    args = p.parse_args(argv)
    from deepwml.imageio import read_image, write_image

    # read once before anything is made: a bad scan stops here, named
    scan, shape = (args.scan, read_image(args.scan).array.shape) if args.scan else (None, None)
    work = args.work or Path(tempfile.mkdtemp(prefix="deepwml_one_case_"))
    if scan is None:
        from deepwml.synthetic.generate import generate_case

        case = generate_case("NMOSD#4", index=1, seed=77)
        scan, shape = write_image(case.image, case.geometry, work / "in" / "scan.nii.gz"), case.image.shape
    print(load_line())
    print(f"scan: {shape[0]} slices of {shape[2]}x{shape[1]}; shipped model")
    times = {name: [] for name in [*VARIANTS, *IMPORTS]}
    out = work / "predict_one_case_out"  # a name of its own: it is emptied before every run
    _wall([sys.executable, "-m", "deepwml.cli.predict", "-i", str(scan), "-o", str(out)])  # fills the user cache
    for _ in range(args.runs):
        for name, extra in VARIANTS.items():
            shutil.rmtree(out, ignore_errors=True)
            times[name].append(_wall([sys.executable, "-m", "deepwml.cli.predict", "-i", str(scan), "-o", str(out), *extra]))
        for name, code in IMPORTS.items():
            times[name].append(_wall([sys.executable, "-c", code]))
    for name, values in times.items():
        print(f"{name:38s} median {statistics.median(values):.2f} s  ({' / '.join(f'{v:.2f}' for v in values)})")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    from deepwml.cli.common import run

    sys.exit(run(main))
