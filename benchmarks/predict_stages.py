"""Where a cpu_fast prediction run's time goes (issue #15): imports, then CPU seconds and wall seconds per stage
(reading, preprocessing, networks, reverting, lesion table, QC picture, writing), for the two CPU arrangements of
deepwml_predict measured in one run: `-np 1` (one case at a time with every core, reading and writing in
background threads) and the default case workers (one case per core, one thread each).

Each arrangement runs in a fresh process (imports included) on the 10-scan set of predict_cpu_fast.py with the
shipped model; the runs are interleaved and the medians printed.

    python benchmarks/predict_stages.py [--runs 3] [--anatomy]
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

STAGES = {  # (module, class or None, function) -> stage name; wrapped where the pipeline looks them up
    ("deepwml.inference.pipeline", None, "read_channels"): "read",
    ("deepwml.inference.pipeline", None, "preprocess_arrays"): "preprocess",
    ("deepwml.inference.anatomy", "AnatomyModel", "prepare"): "preprocess (anatomy plan)",
    ("deepwml.inference.predictor", "SlicePredictor", "predict"): "networks",
    ("deepwml.inference.pipeline", None, "revert_to_original"): "revert to the input grid",
    ("deepwml.inference.pipeline", None, "anatomy_map"): "anatomy map on the input grid",
    ("deepwml.inference.pipeline", None, "lesion_table"): "lesion table (+ locations, confidence)",
    ("deepwml.inference.pipeline", None, "write_qc_montage"): "QC picture",
    ("deepwml.inference.pipeline", None, "write_image"): "write images",
    ("deepwml.inference.pipeline", None, "write_csv"): "write CSV",
}


def child(inputs: Path, out: Path, workers: str, anatomy: bool) -> None:
    """One run in this process: print imports and per-stage CPU and wall seconds as JSON."""
    start, cpu0 = time.perf_counter(), time.process_time()
    import importlib

    from deepwml.inference.run import PredictRequest, predict
    from deepwml.pretrained import builtin_model_dir

    figures: Dict[str, Any] = {"imports wall": time.perf_counter() - start, "imports cpu": time.process_time() - cpu0}
    cpu: Dict[str, float] = collections.defaultdict(float)
    wall: Dict[str, float] = collections.defaultdict(float)
    lock = threading.Lock()

    def timed(fn: Callable, name: str) -> Callable:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            c, w = time.thread_time(), time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    cpu[name] += time.thread_time() - c
                    wall[name] += time.perf_counter() - w
        return wrapper

    for (module, owner, function), name in STAGES.items():
        target = importlib.import_module(module)
        target = getattr(target, owner) if owner else target
        setattr(target, function, timed(getattr(target, function), name))
    run_start, run_cpu = time.perf_counter(), time.process_time()
    predict(PredictRequest(input=inputs, output=out, model_dir=builtin_model_dir(), overwrite=True, anatomy=anatomy,
                           workers=None if workers == "auto" else int(workers)))
    figures["run wall"], figures["run cpu"] = time.perf_counter() - run_start, time.process_time() - run_cpu
    figures["stages cpu"], figures["stages wall"] = dict(cpu), dict(wall)
    print(json.dumps(figures))


def main() -> None:
    """Interleave the two arrangements, each in its own process, and print the medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--anatomy", action="store_true", help="with the anatomy model (deepwml_predict's default)")
    parser.add_argument("--child", nargs=4, metavar=("INPUTS", "OUT", "WORKERS", "ANATOMY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        inputs, out, workers, anatomy = args.child
        child(Path(inputs), Path(out), workers, anatomy == "1")
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from machine_load import load_line
    from predict_cpu_fast import write_scan_set

    print(load_line())
    scratch = Path(tempfile.mkdtemp(prefix="deepwml-stages-"))
    write_scan_set(scratch / "in")
    results: Dict[str, List[Dict[str, Any]]] = {"-np 1 (reader -> network -> writer)": [], "case workers (default)": []}
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    for _ in range(args.runs):
        for name, workers in zip(results, ("1", "auto")):
            command = [sys.executable, __file__, "--child", str(scratch / "in"), str(scratch / "out"), workers, "1" if args.anatomy else "0"]
            done = subprocess.run(command, env=env, check=True, capture_output=True, text=True)
            results[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"10 scans (5 at 512², 5 at 256², 180 slices), shipped model, {'with' if args.anatomy else 'without'} the anatomy "
          f"model, QC + lesion tables; median of {args.runs}; CPU s / wall s summed over the cases")
    names = sorted({stage for runs in results.values() for r in runs for stage in r["stages cpu"]})
    header = f"{'':40s}" + "".join(f"{n:>38s}" for n in results)
    print(header)

    def row(label: str, get: Callable[[Dict[str, Any]], float], get_wall: Callable[[Dict[str, Any]], float]) -> None:
        cells = "".join(f"{statistics.median(get(r) for r in runs):17.2f} CPU s {statistics.median(get_wall(r) for r in runs):10.2f} wall s"
                        for runs in results.values())
        print(f"{label:40s}{cells}")

    row("imports (before the first case)", lambda r: r["imports cpu"], lambda r: r["imports wall"])
    for stage in names:
        row(f"  {stage}", lambda r, s=stage: r["stages cpu"].get(s, 0.0), lambda r, s=stage: r["stages wall"].get(s, 0.0))
    row("the run (predict())", lambda r: r["run cpu"], lambda r: r["run wall"])
    print("stage CPU is the calling thread's: with -np 1 the network's second OpenMP thread is in the run's CPU only")


if __name__ == "__main__":
    main()
