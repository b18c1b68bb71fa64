"""Benchmark: training speed and memory on this machine.

    python benchmarks/train.py                      # cpu_fast + paper, fp32 (+ bf16 where the CPU has it)
    python benchmarks/train.py --configs cpu_fast --precisions fp32,bf16 --allocators tuned,default

Prints, per network preset, precision and memory allocator: the median time of a pure training step
(forward + backward + Adam on one fixed batch, after warm-up) as images per second, and the peak resident memory
(ru_maxrss) of a fresh process. Then the augmentation loader on its own (images per second, with 0 and 1 worker
processes, on a phantom cache at the cpu_fast matrix with its augmentation) and real training steps fed by that
loader, as a ratio to the pure step time (what the loader costs). Each measurement runs in its own child process.
The machine's load average is printed with the figures: numbers taken while others use the CPU are marked as such.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np

from machine_load import load_line


def preset_batch(preset: str) -> int:
    """The preset's own batch size."""
    from deepwml.planning.plan import load_preset

    return load_preset(preset).training.batch_size


def _median_step(step, warmup: int, steps: int) -> float:
    """Median seconds of ``step()`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_step(preset: str, batch: int, precision: str, warmup: int, steps: int, threads: int) -> Dict[str, Any]:
    """Pure training step of a preset's network on a fixed random batch."""
    import torch

    from deepwml.planning.plan import load_preset
    from deepwml.training.losses import training_loss
    from deepwml.models import build_network
    from deepwml.models.base import network_spec

    torch.set_num_threads(threads)
    plan = load_preset(preset)
    h, w = plan.training.patch_size
    net = build_network(plan.network).to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    # the plan's input channels (2.5D: neighbouring slices), classes and loss, as the trainer gives them
    spec = network_spec(plan.network)
    x = torch.randn(batch, spec.input_spec.in_channels, h, w).contiguous(memory_format=torch.channels_last)
    if spec.num_classes > 2:
        y = torch.randint(0, spec.num_classes, (batch, 1, h, w)).float()
    else:
        y = (torch.rand(batch, 1, h, w) > 0.97).float()

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            out = net(x)
        loss = training_loss(out, y, plan.training.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    seconds = _median_step(step, warmup, steps)
    return {"seconds_per_step": seconds, "images_per_second": batch / seconds}


def _phantom_cache(root: Path, n_cases: int = 8, slices: int = 20):
    """A preprocessed cache of z-scored phantom slices with lesion blobs, as deepwml.preprocessing writes it."""
    from deepwml.planning.plan import load_preset
    from deepwml.utils.atomic import savez_compressed, write_json

    plan = load_preset("cpu_fast")
    size = plan.preprocessing.matrix[0]
    cache = root / "cache"
    rng = np.random.default_rng(0)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    head = (yy / 0.9) ** 2 + (xx / 0.75) ** 2 < 1
    ids = []
    for i in range(n_cases):
        label = np.zeros((slices, size, size), np.uint8)
        for _ in range(30):
            z, (cy, cx), r = rng.integers(slices), rng.uniform(-0.5, 0.5, 2), rng.uniform(0.01, 0.08)
            label[z][((yy - cy) ** 2 + (xx - cx) ** 2 < r**2) & head] = 1
        image = np.where(head, 0.0, -2.0)[None] + 1.5 * label + rng.normal(0, 0.4, label.shape)
        cid = f"bench{i:03d}"
        savez_compressed(cache / f"{cid}.npz", image=image.astype(np.float16), label=label, head=np.broadcast_to(head, label.shape).astype(np.uint8))
        write_json(cache / f"{cid}.json", {"case_id": cid, "preprocessing_hash": plan.preprocessing_hash()})
        ids.append(cid)
    return plan, cache, ids


def _loader_setup(root: Path, batch: int):
    """Slice index, batch spec factory and transform for the cpu_fast augmentation on the phantom cache."""
    from deepwml.preprocessing import load_case, unpack_case
    from deepwml.training.augmentation import build_transforms
    from deepwml.training.dataloader import BatchSpec
    from deepwml.training.sampling import build_slice_index

    plan, cache, ids = _phantom_cache(root)
    for cid in ids:
        unpack_case(cache, cid)
    index = build_slice_index((cid, load_case(cache, cid)[1]) for cid in ids)
    transform = build_transforms(plan.training.augmentation, plan.training.patch_size)

    def spec(epoch: int, n: int) -> BatchSpec:
        return BatchSpec(cache, index, tuple(plan.training.patch_size), batch, plan.training.foreground_oversampling, 0, 0, epoch, n)

    return plan, spec, transform


def measure_loader(workers: int, batches: int, threads: int) -> Dict[str, Any]:
    """Augmented batches per second of the loader alone."""
    import torch

    from deepwml.training.dataloader import epoch_batches

    torch.set_num_threads(threads)
    batch = preset_batch("cpu_fast")
    with tempfile.TemporaryDirectory() as tmp:
        _, spec, transform = _loader_setup(Path(tmp), batch)
        list(epoch_batches(spec(0, 2), transform, workers))  # warm-up: page cache, imports, worker start
        t = time.perf_counter()
        n = sum(1 for _ in epoch_batches(spec(1, batches), transform, workers))
        seconds = time.perf_counter() - t
    return {"images_per_second": n * batch / seconds, "seconds_per_batch": seconds / n}


def measure_fed_steps(workers: int, warmup: int, steps: int, threads: int) -> Dict[str, Any]:
    """cpu_fast training steps fed by the augmentation loader, and the same steps on one fixed batch."""
    import torch

    from deepwml.training.dataloader import epoch_batches
    from deepwml.training.losses import training_loss
    from deepwml.models import build_network

    torch.set_num_threads(threads)
    batch = preset_batch("cpu_fast")
    with tempfile.TemporaryDirectory() as tmp:
        plan, spec, transform = _loader_setup(Path(tmp), batch)
        net = build_network(plan.network).to(memory_format=torch.channels_last)
        opt = torch.optim.Adam(net.parameters(), lr=1e-3)

        def train_on(b: Dict[str, np.ndarray]) -> None:
            x = torch.from_numpy(b["data"]).contiguous(memory_format=torch.channels_last)
            loss = training_loss(net(x), torch.from_numpy(b["seg"]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        fixed = next(epoch_batches(spec(0, 1), transform, 0))
        pure = _median_step(lambda: train_on(fixed), warmup, steps)
        batches = epoch_batches(spec(1, warmup + steps), transform, workers)
        fed = _median_step(lambda: train_on(next(batches)), warmup, steps)
        batches.close()
    return {"pure_seconds_per_step": pure, "fed_seconds_per_step": fed, "loader_overhead_ratio": fed / pure}


def child(job: Dict[str, Any]) -> None:
    """Run one measurement and print it as one JSON line."""
    kind = job["kind"]
    if kind == "step":
        result = measure_step(job["preset"], job["batch"], job["precision"], job["warmup"], job["steps"], job["threads"])
    elif kind == "loader":
        result = measure_loader(job["workers"], job["batches"], job["threads"])
    else:
        result = measure_fed_steps(job["workers"], job["warmup"], job["steps"], job["threads"])
    workers = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({**job, **result, "peak_rss_mib": _peak_mib(), "worker_peak_rss_mib": workers}), flush=True)


def run_child(job: Dict[str, Any], allocator: str) -> Dict[str, Any]:
    """One measurement in a fresh process with the chosen allocator ('tuned' as deepwml_train uses, or 'default')."""
    from deepwml.utils.allocator import ENV_FLAG, tuned_environment

    env = dict(os.environ)
    env.pop(ENV_FLAG, None)
    env = (tuned_environment(env) or env) if allocator == "tuned" else dict(env, **{ENV_FLAG: "default"})
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        return {**job, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["allocator"] = env.get(ENV_FLAG, "default")
    return result


def main(argv: List[str] = None) -> int:
    """Run the benchmark grid and print the table."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="cpu_fast,paper", help="presets to time (default: cpu_fast,paper)")
    p.add_argument("--precisions", default=None,
                   help="fp32,bf16 (default: fp32, plus bf16 when the CPU computes bf16 natively; emulated bf16 is several times slower)")
    p.add_argument("--allocators", default="tuned,default", help="tuned (jemalloc or glibc tunables, as deepwml_train) and/or default")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", type=int, default=5, help="timed steps per figure (median)")
    p.add_argument("--paper-batch", type=int, default=None, help="batch size of the paper network (default: the preset's, 8)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: physical cores)")
    p.add_argument("--json", type=Path, default=None, help="also write all results to this JSON file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        child(json.loads(a.child))
        return 0

    from deepwml.training.device import cpu_has_native_bf16, physical_cores

    threads = a.threads or physical_cores()
    precisions = a.precisions.split(",") if a.precisions else (["fp32", "bf16"] if cpu_has_native_bf16() else ["fp32"])
    allocators = a.allocators.split(",")
    print(f"# {os.cpu_count()} CPUs, {threads} torch threads, native bf16: {cpu_has_native_bf16()}; {load_line()}")
    results = []
    print("\n| network | batch | precision | allocator | s/step | images/s | peak RSS MiB |\n|---|---|---|---|---|---|---|")
    for preset in a.configs.split(","):
        batch = a.paper_batch if preset == "paper" and a.paper_batch else preset_batch(preset)
        for precision in precisions:
            for allocator in allocators:
                job = {"kind": "step", "preset": preset, "batch": batch, "precision": precision, "warmup": a.warmup,
                       "steps": a.steps, "threads": threads}
                r = run_child(job, allocator)
                results.append(r)
                if "error" in r:
                    print(f"| {preset} | {batch} | {precision} | {allocator} | error: {r['error']} | | |")
                else:
                    print(f"| {preset} | {batch} | {precision} | {r['allocator']} | {r['seconds_per_step']:.2f} | "
                          f"{r['images_per_second']:.2f} | {r['peak_rss_mib']:.0f} |", flush=True)
    print("\n| augmentation loader (cpu_fast set, batch and matrix) | images/s | s/batch | peak RSS MiB (main / worker) |\n|---|---|---|---|")
    for workers in (0, 1):
        r = run_child({"kind": "loader", "workers": workers, "batches": 4 * (a.steps + 1), "threads": threads}, allocators[0])
        results.append(r)
        print(f"| {workers} worker process(es) | {r['images_per_second']:.1f} | {r['seconds_per_batch']:.3f} | "
              f"{r['peak_rss_mib']:.0f} / {r['worker_peak_rss_mib']:.0f} |", flush=True)
    r = run_child({"kind": "fed", "workers": 1, "warmup": a.warmup, "steps": a.steps, "threads": threads}, allocators[0])
    results.append(r)
    print(f"\ncpu_fast step fed by the loader (1 worker): {r['fed_seconds_per_step']:.2f} s vs {r['pure_seconds_per_step']:.2f} s "
          f"on a fixed batch → ratio {r['loader_overhead_ratio']:.2f}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
