"""Training batches: slices sampled from the cache, augmented in worker processes (batchgenerators).

Every batch is a pure function of (seed, rank, epoch, batch number): its slices, crops and augmentation are
drawn from a generator seeded with exactly these. So the batches do not depend on how many workers make them,
an interrupted run resumed with ``--continue`` sees the same data as an uninterrupted one, and every DDP rank
draws different data. Workers memory-map the unpacked cache and keep only a few cases open, so a worker's
memory does not grow with the dataset.
"""
from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from queue import Empty
from typing import Dict, Iterator, Optional, Tuple

import numpy as np

from deepwml.preprocessing.network_input import stack_slices
from deepwml.training.preprocessed import case_arrays
from deepwml.training.sampling import SliceIndex, crop_box, extract_patch, sample_slices
from deepwml.utils.errors import DeepWMLError

#: cases a worker keeps open (memory maps are cheap; decompressed .npz are not)
OPEN_CASES = 4


class WorkerDied(DeepWMLError):
    """An augmentation worker process failed or vanished."""


@dataclass
class BatchSpec:
    """What every batch of one epoch on one rank is drawn from."""

    cache_dir: Path
    index: SliceIndex
    patch_size: Tuple[int, int]
    batch_size: int
    foreground_fraction: float
    seed: int
    rank: int
    epoch: int
    num_batches: int
    #: the network's input (deepwml.models InputSpec): image channels and 2.5D neighbours
    channels: int = 1
    context_slices: int = 1
    context_padding: str = "edge"


def batch_rng(seed: int, rank: int, epoch: int, batch: int) -> np.random.Generator:
    """The generator a batch is drawn with."""
    return np.random.default_rng([seed, rank, epoch, batch])


class SliceBatchLoader:
    """Makes the batches of one epoch; with ``n`` workers, worker ``t`` makes batches t, t+n, t+2n, ..."""

    def __init__(self, spec: BatchSpec, transform=None, num_workers: int = 1) -> None:
        self.spec = spec
        self.transform = transform
        self.num_workers = max(1, num_workers)
        self.thread_id = 0
        self._made = 0
        self._open: "OrderedDict[str, Tuple[np.ndarray, np.ndarray]]" = OrderedDict()

    def set_thread_id(self, thread_id: int) -> None:
        """Called by batchgenerators inside each worker process before it draws batches."""
        self.thread_id = thread_id
        _die_with_parent()
        # workers share the cores with the training step: one thread each
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    def __iter__(self) -> "SliceBatchLoader":
        return self

    def __next__(self) -> Dict[str, np.ndarray]:
        b = self.thread_id + self._made * self.num_workers
        if b >= self.spec.num_batches:
            raise StopIteration
        self._made += 1
        return self.make_batch(b)

    def _case(self, case_id: str) -> Tuple[np.ndarray, np.ndarray]:
        """A case's arrays from a small most-recently-used set."""
        if case_id in self._open:
            self._open.move_to_end(case_id)
        else:
            image, label = case_arrays(self.spec.cache_dir, case_id)
            self._open[case_id] = (image, label)
            if len(self._open) > OPEN_CASES:
                self._open.popitem(last=False)
        return self._open[case_id]

    def make_batch(self, b: int) -> Dict[str, np.ndarray]:
        """Batch number ``b`` of the epoch: sampled, cropped and (if a transform is set) augmented."""
        s = self.spec
        rng = batch_rng(s.seed, s.rank, s.epoch, b)
        data = np.empty((s.batch_size, s.channels * s.context_slices, *s.patch_size), np.float32)
        seg = np.empty((s.batch_size, 1, *s.patch_size), np.float32)
        for i, (g, centre) in enumerate(sample_slices(s.index, s.batch_size, s.foreground_fraction, rng)):
            image, label = self._case(s.index.case_ids[s.index.slice_case[g]])
            z = s.index.slice_z[g]
            planes = stack_slices(image, [z], s.context_slices, s.context_padding)[0]
            box = crop_box(planes.shape[1:], s.patch_size, centre, rng)
            for c, plane in enumerate(planes):
                # each input channel is padded with its own background
                data[i, c] = extract_patch(plane, box, float(plane.min()))
            seg[i, 0] = extract_patch(np.asarray(label[z]), box, 0)
        batch = {"data": data, "seg": seg}
        if self.transform is not None:
            with global_rngs_seeded(int(rng.integers(2**32)), int(rng.integers(2**32))):
                batch = self.transform(**batch)
        return batch


@contextlib.contextmanager
def global_rngs_seeded(numpy_seed: int, python_seed: int) -> Iterator[None]:
    """Seed numpy's and Python's global generators for the block, then give the caller's states back.

    batchgenerators' transforms draw from those global generators (they take no Generator), so they are lent
    this batch's seeds only while the transform runs: with --num-workers 0 the batches are made in the trainer's
    process, whose generator states (saved in checkpoints) must not change because a batch was made.
    """
    numpy_state, python_state = np.random.get_state(), random.getstate()
    np.random.seed(numpy_seed)
    random.seed(python_seed)
    try:
        yield
    finally:
        np.random.set_state(numpy_state)
        random.setstate(python_state)


def _die_with_parent() -> None:
    """Linux: have the kernel kill this worker when the trainer dies (SIGKILL, OOM), instead of leaving it spinning."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def worker_count(requested: Optional[int], cuda: bool) -> int:
    """Augmentation workers: the plan's number, else a few per GPU, else one beside the CPU training step."""
    if requested is not None:
        return max(0, int(requested))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus - 1)) if cuda else 1


def epoch_batches(spec: BatchSpec, transform, num_workers: int,
                  stall_timeout: float = 300.0) -> Iterator[Dict[str, np.ndarray]]:
    """The ``spec.num_batches`` batches of one epoch, in order; made in ``num_workers`` processes (0: here)."""
    if num_workers == 0:
        loader = SliceBatchLoader(spec, transform, 1)
        yield from loader
        return
    yield from _from_workers(spec, transform, num_workers, stall_timeout)


def _from_workers(spec: BatchSpec, transform, num_workers: int, stall_timeout: float) -> Iterator[Dict[str, np.ndarray]]:
    """Run batchgenerators' MultiThreadedAugmenter; a dead or stalled worker becomes a WorkerDied error.

    Batches are read from its output queue directly (``_start``, ``_processes``, ``pin_memory_queue``,
    ``abort_event`` of batchgenerators 0.25) because its public ``__next__`` waits forever on a stalled worker.
    """
    from batchgenerators.dataloading.multi_threaded_augmenter import MultiThreadedAugmenter

    workers = min(num_workers, spec.num_batches)
    # the loader applies the transform itself so that it runs right after this batch's seeding
    augmenter = MultiThreadedAugmenter(SliceBatchLoader(spec, transform, workers), None, workers, num_cached_per_queue=2)
    try:
        augmenter._start()
        for _ in range(spec.num_batches):
            yield _next_batch(augmenter, stall_timeout)
    finally:
        augmenter._finish(timeout=5)


def _next_batch(augmenter, stall_timeout: float) -> Dict[str, np.ndarray]:
    """One batch from the augmenter's output queue, checking that its workers are alive while waiting."""
    deadline = time.monotonic() + stall_timeout
    while True:
        dead = [i for i, p in enumerate(augmenter._processes) if not p.is_alive()]
        if augmenter.abort_event.is_set() or dead:
            codes = ", ".join(f"worker {i}: exit code {augmenter._processes[i].exitcode}" for i in dead)
            raise WorkerDied(
                "a data augmentation worker failed" + (f" ({codes})" if codes else "")
                + "; its traceback (if any) is printed above. Re-run with --num-workers 0 to see the error in this process"
            )
        try:
            item = augmenter.pin_memory_queue.get(timeout=0.05)
        except Empty:
            if time.monotonic() > deadline:
                raise WorkerDied(f"no training batch from the augmentation workers for {stall_timeout:.0f} s") from None
            continue
        if isinstance(item, str):  # 'end' markers: a worker ran out of batches early
            raise WorkerDied("augmentation workers ended before the epoch was complete")
        return item
