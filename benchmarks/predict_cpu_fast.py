"""End-to-end figures of a cpu_fast-shaped model (issue #15), each a ratio measured in one run.

* the whole ``deepwml_predict`` process on 10 synthetic scans (half 512², half 256², 16-20 slices), QC and lesion
  tables on, against the model-only floor on the same slices and, with ``--baseline SRC`` (another checkout of
  DeepWML, e.g. ``git worktree add /tmp/old v0.x``), against that version's process on the same files, runs
  interleaved so that load drifting on a shared machine hits both alike;
* optionally nnU-Net v2 on the same files (``--nnunet-cmd``, skipped when its program is not an executable;
  benchmarks/nnunet_baseline.py makes one);
* a cohort (``--cohort N``): cores kept busy (process CPU time / wall) and resident memory at case 10 and case N.
"""
from __future__ import annotations

import os
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from deepwml.imageio import Geometry, write_image
from deepwml.inference.inputs import discover_cases
from deepwml.inference.model_loading import build_fold_networks, check_model, load_fold_states
from deepwml.inference.pipeline import prepare_case
from deepwml.inference.predictor import SlicePredictor
from deepwml.inference.run import PredictRequest, predict
from deepwml.planning.plan import load_preset
from deepwml.synthetic.generate import generate_case
from deepwml.training.device import setup_device

REPO = Path(__file__).resolve().parents[1]


def toy_models():
    """deepwml_testing.toy_models: it sits at the repository root beside deepwml/ and is not installed."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from deepwml_testing import toy_models as module

    return module



def scan_set(n: int = 10, seed: int = 0) -> Iterator[Tuple[int, np.ndarray, np.ndarray, Geometry]]:
    """(patient index, image, label, geometry) of ``n`` synthetic MS#1 scans, half at 512², half at 256², with 16-20
    slices (picked by index)."""
    wanted = {512: n // 2, 256: n - n // 2}
    done, index = 0, 0
    while any(wanted.values()):
        index += 1
        case = generate_case("MS#1", index, seed=seed)
        size = case.image.shape[1]
        if wanted.get(size, 0) == 0:
            continue
        wanted[size] -= 1
        n_slices = 16 + done % 5
        done += 1
        pick = np.linspace(0, case.image.shape[0] - 1, n_slices).round().astype(int)
        g = case.geometry
        geometry = Geometry((g.size[0], g.size[1], n_slices), g.spacing, g.origin, g.direction)
        yield index, case.image[pick].astype(np.int16), case.label[pick], geometry


def write_scan_set(folder: Path, n: int = 10, seed: int = 0) -> List[Path]:
    """The images of :func:`scan_set`, as ``folder/caseNNN.nii.gz``."""
    return [write_image(image, geometry, folder / f"case{index:03d}.nii.gz")
            for index, image, _, geometry in scan_set(n, seed)]


def cpu_fast_model(folder: Path, kind: str = "builtin") -> Path:
    """The model to time: 'builtin', the shipped pretrained model (cpu_fast preset, trained: lesion counts and
    tables as on real use), or 'random', a PLAN folder of the cpu_fast preset with random weights (the network costs
    the same, but it marks thousands of one-voxel lesions per case, which makes the lesion tables a worst case)."""
    if kind == "builtin":
        from deepwml.pretrained import builtin_model_dir

        return builtin_model_dir()
    return toy_models().write_model_dir(folder / "Dataset990_Bench" / "cpu_fast", load_preset("cpu_fast"), folds=(0,), kind="random")


def timed_process(command: List[str], pythonpath: Optional[Path] = None) -> Tuple[float, float]:
    """(wall seconds, CPU seconds user+sys) of one child process, start to exit; ``pythonpath``: the checkout whose
    deepwml it imports (also its working folder: ``python -m`` puts the working folder first on sys.path, ahead of
    PYTHONPATH, so a run started in another checkout would import that one)."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                   cwd=None if pythonpath is None else str(pythonpath))
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def predict_command(inputs: Path, out: Path, model: Path, extra: Sequence[str] = ()) -> List[str]:
    """deepwml_predict as a user runs it (a fresh process: start-up is part of the figure)."""
    return [sys.executable, "-m", "deepwml.cli.predict", "-i", str(inputs), "-o", str(out), "-m", str(model), "--overwrite", *extra]


def model_floor(inputs: Path, model: Path, workers: int = 1) -> Tuple[float, int]:
    """Seconds the network alone needs for every slice of every scan (preprocessed beforehand), and the slice count:
    one scan at a time with every core (``workers`` 1), or ``workers`` scans side by side sharing the cores out, as
    deepwml_predict's case workers do."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    spec = check_model(model)
    setup = setup_device("cpu")
    predictor = SlicePredictor(build_fold_networks(spec, load_fold_states(spec)), spec.plan, setup)
    stacks = [prepare_case(c, spec.plan) for c in discover_cases(inputs)]
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, setup.threads // workers))
    try:
        predictor.predict(stacks[0].image_pp[:, :1], stacks[0].head[:1])  # oneDNN picks its kernels on first use
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(lambda p: predictor.predict(p.image_pp, p.head), stacks))
        return time.perf_counter() - start, sum(p.image_pp.shape[1] for p in stacks)
    finally:
        torch.set_num_threads(threads)


def end_to_end(scratch: Path, runs: int, baseline: Optional[Path], nnunet_cmd: Optional[str], model_kind: str = "builtin") -> None:
    """Whole-process figures on the 10-scan set, new against old (and nnU-Net), and against the model-only floor."""
    inputs, model = scratch / "cf_in", cpu_fast_model(scratch / "cf_model", model_kind)
    write_scan_set(inputs)
    # the default run predicts the anatomy map too (issue #14) when an anatomy model is installed; without it the
    # figure compares with checkouts older than the anatomy model
    versions: Dict[str, Tuple[Path, Tuple[str, ...]]] = {"this checkout": (REPO, ()),
                                                         "--no-anatomy": (REPO, ("--no-anatomy",))}
    folds = list(check_model(model).folds)
    if len(folds) > 1:
        # an ensemble (the shipped model is one): what averaging its members costs, measured in the same run
        versions[f"-f {folds[0]} only"] = (REPO, ("--no-anatomy", "-f", folds[0]))
    if baseline is not None:
        versions["baseline"] = (baseline, ())
    timings: Dict[str, List[Tuple[float, float]]] = {name: [] for name in versions}
    for _ in range(runs):
        for name, (source, extra) in versions.items():  # interleaved
            timings[name].append(timed_process(predict_command(inputs, scratch / "cf_out", model, extra), source))
    floor, slices = model_floor(inputs, model)
    side_by_side, _ = model_floor(inputs, model, workers=2)
    print(f"cpu_fast end to end ({'the shipped model' if model_kind == 'builtin' else 'random weights'}, {model}, folds {' '.join(folds)}): "
          f"10 scans (5 at 512², 5 at 256²), {slices} slices, QC + lesion tables (+ anatomy map "
          f"and locations unless --no-anatomy), whole process, median of {runs}")
    medians = {name: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t)) for name, t in timings.items()}
    for name, (wall, cpu) in medians.items():
        print(f"  {name:13s}: {wall:6.1f} s wall ({wall / slices:.3f} s/slice), {cpu:6.1f} CPU s, "
              f"{cpu / wall:.2f} cores busy; {wall / floor:.1f}x the model-only floor")
    print(f"  model-only floor: {floor:.1f} s ({floor / slices:.4f} s/slice, network alone on preprocessed slices, one scan at "
          f"a time with every core); two scans side by side, one thread each: {side_by_side:.1f} s")
    if baseline is not None:
        (new_wall, new_cpu), (old_wall, old_cpu) = medians["this checkout"], medians["baseline"]
        print(f"  baseline / this checkout: {old_wall / new_wall:.2f}x wall, {old_cpu / new_cpu:.2f}x CPU")
    nnunet(inputs, scratch, nnunet_cmd, medians["this checkout"][0])


def nnunet(inputs: Path, scratch: Path, command: Optional[str], ours: float) -> None:
    """nnU-Net v2 on the same files (its own input naming), when installed and a command is given."""
    if not command:
        print("  nnU-Net v2: skipped (no --nnunet-cmd)")
        return
    argv = shlex.split(command)
    # the command may set nnU-Net's folders first: `env nnUNet_raw=... /venv/bin/nnUNetv2_predict ...`
    program = next((a for a in argv if a != "env" and "=" not in a), "")
    if shutil.which(program) is None:
        print(f"  nnU-Net v2: skipped (--nnunet-cmd: no executable {program!r}; benchmarks/nnunet_baseline.py makes one)")
        return
    folder = scratch / "nnunet_in"
    folder.mkdir(exist_ok=True)
    for path in sorted(inputs.glob("*.nii.gz")):
        (folder / path.name.replace(".nii.gz", "_0000.nii.gz")).symlink_to(path)
    wall, cpu = timed_process(argv + ["-i", str(folder), "-o", str(scratch / "nnunet_out")])
    print(f"  nnU-Net v2 ({command}): {wall:.1f} s wall, {cpu:.1f} CPU s; {wall / ours:.1f}x this checkout")


def _rss_mib() -> float:
    """Resident memory of this process now (Linux /proc)."""
    with open("/proc/self/statm", encoding="ascii") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cohort(scratch: Path, n: int) -> None:
    """Predict ``n`` small scans in this process: cores busy and resident memory at case 10 and at case n."""
    base = scratch / "cohort_base"
    scans = write_scan_set(base, 2)
    inputs, model = scratch / "cohort_in", cpu_fast_model(scratch / "cohort_model")
    inputs.mkdir()
    for k in range(n):
        (inputs / f"s{k:04d}.nii.gz").symlink_to(scans[k % len(scans)])
    out = scratch / "cohort_out"
    samples: List[Tuple[int, float]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.wait(0.25):
            done = len(list(out.glob("s*.nii.gz"))) if out.is_dir() else 0
            samples.append((done, _rss_mib()))

    watcher = threading.Thread(target=watch, daemon=True)
    cpu0, start = os.times(), time.perf_counter()
    watcher.start()
    report = predict(PredictRequest(input=inputs, output=out, model_dir=model, overwrite=True))
    stop.set()
    watcher.join()
    wall, cpu1 = time.perf_counter() - start, os.times()
    cpu = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)

    def rss_at(count: int) -> float:
        return next((rss for done, rss in samples if done >= count), samples[-1][1] if samples else float("nan"))

    print(f"cohort: {report.predicted} scans (256² and 512², 16-17 slices) in {wall:.1f} s = {wall / n:.2f} s per scan; "
          f"{cpu / wall:.2f} of {os.cpu_count()} cores busy (process CPU time / wall); resident memory "
          f"{rss_at(10):.0f} MiB at case 10, {rss_at(n):.0f} MiB at case {n}")
