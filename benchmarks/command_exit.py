"""What ending without the interpreter's teardown saves each command (deepwml.cli.common.run_installed): every stage
of the demo and of the pretrained recipe runs as ``python -m deepwml.cli.X``, and a user's shell runs the installed
script; both now call entry(). Each command is timed as a whole process both ways, alternately, on a toy dataset made
in --work (three synthetic cases, one per disease, at the smallest scale):

- "python -m" : the command as installed now (entry(): its work, then exit without teardown);
- "teardown"  : the same main() ended as a Python program ends (SystemExit: modules, torch's and oneDNN's caches and
                every object torn down), which is how every command but deepwml_predict, deepwml_compare and
                deepwml_bids ended before.

Medians of --runs; each run writes into fresh output folders.

    python benchmarks/command_exit.py --work DIR [--runs 5]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

from machine_load import load_line  # benchmarks/machine_load.py, next to this script

from deepwml.utils.commands import run_command

CENTRES = "CSVD#1,NMOSD#3,MS#1"
#: ended as a Python program ends: main() with the command line in sys.argv (so deepwml_train re-executes itself with
#: the tuned allocator as the installed command does), then SystemExit
TEARDOWN = "import sys; sys.argv = [sys.argv[0]] + sys.argv[2:]; from deepwml.cli.{module} import main; raise SystemExit(main())"


def _commands(work: Path, out: Path) -> Dict[str, List[str]]:
    """Each command's module and arguments, writing below ``out`` (emptied before every run)."""
    raw = work / "raw" / "Dataset530_Toy"
    return {
        "make_synthetic": ["--raw", str(out / "raw"), "--dataset-id", "531", "--name", "Toy", "--scale", "0.01",
                           "--seed", "1", "--test-fraction", "0", "-np", "2", "--centres", CENTRES],
        "plan_and_preprocess": ["-d", "530", "--preset", "cpu_fast", "--test-fraction", "0", "-np", "2",
                                "--preprocessed", str(out / "preprocessed")],
        "train": ["-d", "530", "0", "-p", "cpu_fast", "--epochs", "1", "--iterations", "1", "--device", "cpu",
                  "--results", str(out / "results")],
        "evaluate": ["-ref", str(raw / "labelsTr"), "-pred", str(work / "predicted"), "-d", "530", "-o", str(out / "report")],
        "calibrate": ["-m", str(out / "model"), "-f", "0", "--checkpoint", "best", "-i", str(raw / "imagesTr"),
                      "-l", str(raw / "labelsTr"), "--device", "cpu"],
    }


def _setup(work: Path, env: Dict[str, str]) -> None:
    """The toy dataset, its cache, one fold trained for one iteration and its predictions (once per work folder)."""
    if (work / "predicted" / "summary.csv").is_file():
        return
    steps = [("make_synthetic", ["--raw", str(work / "raw"), "--dataset-id", "530", "--name", "Toy", "--scale", "0.01",
                                 "--seed", "0", "--test-fraction", "0", "-np", "2", "--centres", CENTRES]),
             ("plan_and_preprocess", ["-d", "530", "--preset", "cpu_fast", "--test-fraction", "0", "-np", "2"]),
             ("train", ["-d", "530", "0", "-p", "cpu_fast", "--epochs", "1", "--iterations", "1", "--device", "cpu"]),
             ("predict", ["-i", str(work / "raw" / "Dataset530_Toy" / "imagesTr"), "-o", str(work / "predicted"),
                          "-d", "530", "-p", "cpu_fast", "-f", "0", "--no-qc", "--device", "cpu"])]
    for module, args in steps:
        run_command(module, args, env, "command_exit setup")


def _timed(command: List[str], env: Dict[str, str]) -> float:
    """Seconds from start to exit of ``command``; a failure stops the benchmark with its output."""
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{' '.join(command[:4])} ... failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main() -> None:
    """Time each command both ways and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, required=True, help="work folder (the toy dataset is kept for reruns)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    work = args.work.resolve()
    env = dict(os.environ, DEEPWML_RAW=str(work / "raw"), DEEPWML_PREPROCESSED=str(work / "preprocessed"),
               DEEPWML_RESULTS=str(work / "results"))
    _setup(work, env)
    print(load_line())
    out = work / "out"
    times: Dict[str, Dict[str, List[float]]] = {}
    for run in range(args.runs):
        for module, arguments in _commands(work, out).items():
            for way in ("python -m", "teardown"):
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir(parents=True)
                if module == "calibrate":  # it writes into the model folder: a fresh copy each time
                    shutil.copytree(work / "results" / "Dataset530_Toy" / "cpu_fast", out / "model")
                command = ([sys.executable, "-m", f"deepwml.cli.{module}"] if way == "python -m"
                           else [sys.executable, "-c", TEARDOWN.format(module=module), module])
                times.setdefault(module, {}).setdefault(way, []).append(_timed(command + arguments, env))
        print(f"run {run + 1}/{args.runs} done", flush=True)
    print(f"{'command':28s} {'python -m (s)':>14s} {'teardown (s)':>13s} {'saved (s)':>10s}")
    for module, ways in times.items():
        fast, slow = statistics.median(ways["python -m"]), statistics.median(ways["teardown"])
        saved = statistics.median([b - a for a, b in zip(ways["python -m"], ways["teardown"])])
        print(f"{'deepwml_' + module:28s} {fast:14.2f} {slow:13.2f} {saved:10.2f}")


if __name__ == "__main__":
    main()
