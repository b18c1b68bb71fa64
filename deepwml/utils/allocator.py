"""Keep freed big arrays mapped instead of returning them to the kernel, in training and in prediction.

glibc hands big allocations to mmap and unmaps them on free, so every training step re-maps (and page-faults) its
activations, and every step of a prediction (the probability map reverted, calibrated, thresholded; the masks, distance
maps and lesion labels of the rules) faults in fresh pages; nnU-Net on this kind of CPU spends ~40 % of its time in the
kernel for that. deepwml_train, deepwml_predict, deepwml_bids and deepwml_compare re-execute themselves once, before
any work, with jemalloc (decay off) when libjemalloc is installed, else with glibc tunables that raise the mmap and trim
thresholds. Measured on the cpu_fast network (2 cores, under load): page faults per training run 2.6 M → 0.34 M
(jemalloc) / 0.45 M (glibc tunables), CPU time −20 to −30 %; one 25-slice 512² scan through deepwml_predict
(benchmarks/README.md, "Prediction with the tuned allocator"): about a fifth less wall time. deepwml_listen, which runs
for days, keeps the default allocator so that memory freed after a large study goes back to the system.
Set DEEPWML_ALLOCATOR=default to opt out.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Dict, List, Optional

#: marks a process that has already been re-executed (or opted out)
ENV_FLAG = "DEEPWML_ALLOCATOR"

JEMALLOC_CANDIDATES = (
    "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2",
    "/usr/lib/aarch64-linux-gnu/libjemalloc.so.2",
    "/usr/lib64/libjemalloc.so.2",
    "/usr/lib/libjemalloc.so.2",
    "/usr/local/lib/libjemalloc.so.2",
)

GLIBC_TUNING = {
    "MALLOC_MMAP_THRESHOLD_": str(2**32),
    "MALLOC_TRIM_THRESHOLD_": str(2**36),
    "MALLOC_TOP_PAD_": str(2**30),
}


def find_jemalloc() -> Optional[str]:
    """Path of an installed libjemalloc.so.2, if any."""
    for path in JEMALLOC_CANDIDATES:
        if Path(path).is_file():
            return path
    return None


def tuned_environment(env: Dict[str, str]) -> Optional[Dict[str, str]]:
    """The environment to re-execute with, or None when nothing should change."""
    if env.get(ENV_FLAG) or sys.platform != "linux":
        return None
    new = dict(env)
    jemalloc = find_jemalloc()
    if jemalloc and "jemalloc" not in env.get("LD_PRELOAD", ""):
        new["LD_PRELOAD"] = ":".join(p for p in (jemalloc, env.get("LD_PRELOAD", "")) if p)
        new["MALLOC_CONF"] = env.get("MALLOC_CONF") or "dirty_decay_ms:-1,muzzy_decay_ms:-1"
        new[ENV_FLAG] = "jemalloc"
    else:
        for key, value in GLIBC_TUNING.items():
            new.setdefault(key, value)
        new[ENV_FLAG] = "glibc-tuned"
    return new


def reexec_with_tuned_allocator(argv: Optional[List[str]] = None) -> None:
    """Replace this process by itself with the tuned allocator (returns only when no re-exec is needed)."""
    env = tuned_environment(dict(os.environ))
    if env is None:
        return
    args = [sys.executable] + (argv if argv is not None else _original_argv())
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, args, env)


def _original_argv() -> List[str]:
    """The interpreter arguments that started this process ('-m module' or a script path, then the arguments)."""
    orig = getattr(sys, "orig_argv", None)
    if orig:
        return list(orig[1:])
    return list(sys.argv)


def allocator_in_use() -> str:
    """'jemalloc', 'glibc-tuned' or 'default' (for the log)."""
    return os.environ.get(ENV_FLAG) or "default"
