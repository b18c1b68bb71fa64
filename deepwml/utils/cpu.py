"""What the CPU offers (feature flags, physical cores) and torch's thread count, without importing torch.

Prediction on ONNX Runtime (deepwml.inference.onnx_backend) never imports torch, which alone takes about 2 s; the
helpers it shares with the torch path live here for that reason.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator, Optional

#: CPU flags (Linux /proc/cpuinfo) meaning native bf16 matrix arithmetic
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set:
    """The CPU feature flags of the first core (empty where /proc/cpuinfo does not exist)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_list_length(text: str) -> int:
    """Number of CPUs in a Linux CPU list such as '0-3,8'."""
    n = 0
    for part in text.strip().split(","):
        first, _, last = part.partition("-")
        n += int(last) - int(first) + 1 if last else 1
    return n


def physical_cores() -> int:
    """Cores this process may run on, counting hyper-threads once."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        per_core = _cpu_list_length(Path("/sys/devices/system/cpu/cpu0/topology/thread_siblings_list").read_text())
    except (OSError, ValueError):
        per_core = 1
    return max(1, cpus // max(1, per_core))


#: worker processes a command starts by default at most: each holds a case in memory, and past this the disk or the
#: main process, not the cores, sets the pace
MAX_DEFAULT_WORKERS = 8


def worker_processes(requested: Optional[int]) -> int:
    """A command's ``-np``: as given (at least 1), or one per core this process may use, at most MAX_DEFAULT_WORKERS."""
    if requested is None:
        return min(physical_cores(), MAX_DEFAULT_WORKERS)
    if requested < 1:
        from deepwml.utils.errors import DeepWMLError

        raise DeepWMLError(f"-np must be at least 1, not {requested}")
    return int(requested)


def blas_thread_count() -> int:
    """The fewest threads any loaded BLAS library computes with now (1 when none is loaded): a block limited to it
    adds no threads to an enclosing ``blas_threads`` limit."""
    from threadpoolctl import threadpool_info

    return min([p["num_threads"] for p in threadpool_info() if p.get("user_api") == "blas"], default=1)


@contextlib.contextmanager
def blas_threads(threads: int) -> Iterator[None]:
    """numpy's BLAS (OpenBLAS, MKL) computes with at most ``threads`` threads inside the block, and as before after it.

    Prediction shares the cores out between its case workers, and resamples with numpy's matrix products when torch
    is not loaded (ONNX Runtime). OpenBLAS would start a thread per core for every product, in every worker, and its
    threads spin while waiting: on 10 scans with two workers that took 9.0 s against 7.4 s with one thread each.
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=max(1, int(threads)), user_api="blas"):
        yield


@contextlib.contextmanager
def threads_restored() -> Iterator[None]:
    """Give torch's global CPU thread count back after the block (setup_device sets it for the process).

    Prediction is also called as a library function (the demo, the pretrained recipe, benchmarks, a user's
    script): it must not leave the caller's torch with another thread count. A caller that has not imported torch
    has no thread count to keep, and the block is not made to import it.
    """
    torch = sys.modules.get("torch")
    threads = torch.get_num_threads() if torch is not None else None
    try:
        yield
    finally:
        if threads is not None:
            torch.set_num_threads(threads)
