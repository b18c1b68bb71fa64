"""Benchmark: cases per second and peak memory of fingerprint + preprocessing on a synthetic dataset.

    python benchmarks/preprocess.py --cases 40 -np 2 --preset paper

The dataset comes from ``deepwml.synthetic.generate_dataset`` (multi-centre synthetic FLAIR), or, where that
is not installed, from a simple built-in phantom with three 'centres' of clinical-size stacks (512²×16,
256²×20, 320×288×24). The measured
work runs in a fresh child process so that generating the data does not count toward its memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np

from machine_load import load_line

#: (centre, disease, shape zyx, spacing xyz) of the fallback phantom's acquisitions
FALLBACK_CENTRES = [
    ("S1", "CSVD", (16, 512, 512), (0.47, 0.47, 7.5)),
    ("S2", "MS", (20, 256, 256), (0.9, 0.9, 6.5)),
    ("S3", "NMOSD", (24, 320, 288), (0.72, 0.72, 5.0)),
]


def phantom_case(shape_zyx, spacing_xyz, seed: int):
    """An elliptic 'head' with dark ventricles and bright lesion blobs (image float32, label uint8)."""
    rng = np.random.default_rng(seed)
    z, y, x = shape_zyx
    yy, xx = np.meshgrid(np.linspace(-1, 1, y), np.linspace(-1, 1, x), indexing="ij")
    head = (yy / 0.85) ** 2 + (xx / 0.7) ** 2 < 1
    ventricles = (yy / 0.25) ** 2 + (xx / 0.1) ** 2 < 1
    label = np.zeros(shape_zyx, np.uint8)
    for _ in range(int(rng.integers(10, 40))):
        cz, (cy, cx), r = rng.integers(0, z), rng.uniform(-0.5, 0.5, 2), rng.uniform(0.01, 0.06)
        label[cz][((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) & head] = 1
    image = np.where(head, 100.0, 5.0) - 60.0 * ventricles + 40.0 * label + rng.normal(0, 5, shape_zyx)
    return image.astype(np.float32), label


def make_fallback_dataset(root: Path, n_cases: int, seed: int = 0) -> Path:
    """Write ``n_cases`` phantom training cases spread over three centres; returns the dataset folder."""
    from deepwml.datasets import CaseMeta, DatasetJson
    from deepwml.imageio import Geometry, write_image

    name = "Dataset990_BenchPhantom"
    folder = root / name
    meta = DatasetJson(name=name, file_ending=".nii.gz")
    for i in range(n_cases):
        centre, disease, shape, spacing = FALLBACK_CENTRES[i % len(FALLBACK_CENTRES)]
        cid = f"{centre}_{i:03d}"
        image, label = phantom_case(shape, spacing, seed + i)
        geometry = Geometry(tuple(reversed(shape)), spacing, (-100.0, -120.0, -40.0))
        write_image(image, geometry, folder / "imagesTr" / f"{cid}.nii.gz")
        write_image(label, geometry, folder / "labelsTr" / f"{cid}.nii.gz")
        meta.cases[cid] = CaseMeta(centre=centre, disease=disease)
    meta.num_training = n_cases
    meta.save(folder / "dataset.json")
    return folder


def make_dataset(root: Path, n_cases: int, n_jobs: int) -> Path:
    """The synthetic multi-centre dataset when deepwml.synthetic provides one, else the phantom."""
    try:
        from deepwml.synthetic import generate_dataset, plan_cases, select_centres
    except ImportError:
        print("deepwml.synthetic is not available; using the built-in phantom", file=sys.stderr)
        return make_fallback_dataset(root, n_cases)
    # the generator sizes the dataset by a fraction of the paper's cohort: take the smallest that gives n_cases
    scale = 0.005
    while sum(spec.split == "Tr" for spec in plan_cases(select_centres(None, None), scale, 0, 0.2)) < n_cases:
        scale *= 1.1
    return Path(generate_dataset(root, dataset_id=990, name="BenchSynth", scale=scale, seed=0, n_jobs=n_jobs, progress=False))


def measure(dataset: Path, n_jobs: int, preset: str) -> Dict[str, Any]:
    """Fingerprint + plan + preprocessing of ``dataset`` in this process; timings and peak memory."""
    from joblib.externals.loky import get_reusable_executor

    from deepwml.datasets import RawDataset
    from deepwml.planning.fingerprint import load_or_compute_fingerprint, training_cases
    from deepwml.planning.plan import load_preset
    from deepwml.planning.planner import plan_experiment
    from deepwml.preprocessing.run import Options, preprocess_dataset

    raw = RawDataset(dataset)
    cases = training_cases(raw)
    out = Path(tempfile.mkdtemp(prefix="deepwml_bench_pp_")) / raw.name
    opts = Options(dataset=raw.name, raw_root=dataset.parent, preprocessed_root=out.parent, n_jobs=n_jobs, overwrite=True, progress=False)
    started = time.perf_counter()
    fingerprint, _ = load_or_compute_fingerprint(raw, out / "fingerprint.json", n_jobs, overwrite=True, progress=False)
    fingerprint_s = time.perf_counter() - started
    plan = plan_experiment(load_preset(preset), fingerprint)
    started = time.perf_counter()
    preprocess_dataset(raw, cases, plan, out / plan.name / "cache", opts, log=lambda *_: None)
    preprocess_s = time.perf_counter() - started
    # workers count toward RUSAGE_CHILDREN only once they have exited and been reaped
    get_reusable_executor().shutdown(wait=True)
    cache_mib = sum(p.stat().st_size for p in (out / plan.name / "cache").iterdir()) / 1024**2
    shutil.rmtree(out.parent, ignore_errors=True)
    kib = 1024  # ru_maxrss is in KiB on Linux
    return {
        "cases": len(cases),
        "n_jobs": n_jobs,
        "preset": preset,
        "fingerprint_s": fingerprint_s,
        "preprocess_s": preprocess_s,
        "peak_main_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kib,
        "peak_worker_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib,
        "cache_mib": cache_mib,
    }


def main(argv: Optional[List[str]] = None) -> int:
    """Generate the data, measure in a child process, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=40, help="training cases to generate (default 40)")
    parser.add_argument("-np", "--n-jobs", type=int, default=2)
    parser.add_argument("--preset", default="paper")
    parser.add_argument("--dataset", type=Path, default=None, help="benchmark an existing raw dataset folder instead")
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure_only:
        print(json.dumps(measure(args.dataset, args.n_jobs, args.preset)))
        return 0
    scratch = None if args.dataset else Path(tempfile.mkdtemp(prefix="deepwml_bench_raw_"))
    try:
        dataset = args.dataset or make_dataset(scratch, args.cases, args.n_jobs)
        print(f"# {load_line()}")
        child = [sys.executable, __file__, "--measure-only", "--dataset", str(dataset), "-np", str(args.n_jobs), "--preset", args.preset]
        r = json.loads(subprocess.run(child, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    total = r["fingerprint_s"] + r["preprocess_s"]
    print(f"dataset: {dataset.name} ({r['cases']} training cases), preset {r['preset']}, {r['n_jobs']} workers")
    print(f"fingerprint:   {r['fingerprint_s']:6.1f} s  {r['cases'] / r['fingerprint_s']:5.2f} cases/s")
    print(f"preprocessing: {r['preprocess_s']:6.1f} s  {r['cases'] / r['preprocess_s']:5.2f} cases/s")
    print(f"together:      {total:6.1f} s  {r['cases'] / total:5.2f} cases/s")
    print(f"peak memory: main process {r['peak_main_mib']:.0f} MiB, largest worker {r['peak_worker_mib']:.0f} MiB")
    print(f"cache on disk: {r['cache_mib']:.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
