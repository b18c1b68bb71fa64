"""Augmented batches from worker processes: reproducible, label values intact, failing workers are errors."""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from batchgenerators.transforms.abstract_transforms import AbstractTransform

from deepwml.constants import IGNORE_LABEL
from deepwml.planning.plan import AugmentationPlan
from deepwml.training.augmentation import build_transforms
from deepwml.training.dataloader import BatchSpec, WorkerDied, epoch_batches
from deepwml.training.preprocessed import PreprocessedDataset
from deepwml.training.sampling import build_slice_index
from deepwml.utils.errors import DeepWMLError
from training_fixtures import DATASET, write_preprocessed_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> PreprocessedDataset:
    root = tmp_path_factory.mktemp("pp")
    write_preprocessed_dataset(root)
    return PreprocessedDataset(root, DATASET, "tiny")


def _spec(ds: PreprocessedDataset, epoch: int = 0, batches: int = 5, rank: int = 0) -> BatchSpec:
    ids = ds.fold_cases(0).train
    index = build_slice_index((cid, ds.load(cid)[1]) for cid in ids)
    return BatchSpec(ds.cache_dir, index, (32, 32), 4, 0.5, 0, rank, epoch, batches)


EXTENDED = AugmentationPlan(rotation_deg=15.0, scale=[0.8, 1.2], elastic_alpha=[0.0, 50.0], gamma=[0.7, 1.5],
                            noise_variance=[0.0, 0.1], blur_sigma=[0.5, 1.0], brightness=[0.8, 1.2],
                            contrast=[0.8, 1.2], low_resolution=[0.5, 1.0], p_per_sample=0.8)


def test_batches_do_not_depend_on_the_number_of_workers(dataset):
    transform = build_transforms(EXTENDED, (32, 32))
    here = list(epoch_batches(_spec(dataset), transform, 0))
    workers = list(epoch_batches(_spec(dataset), transform, 2))
    assert len(here) == len(workers) == 5
    for a, b in zip(here, workers):
        assert np.array_equal(a["data"], b["data"]) and np.array_equal(a["seg"], b["seg"])


def test_making_batches_in_process_leaves_the_callers_global_generators_alone(dataset):
    """With --num-workers 0 batches are made in the trainer's process, whose generator states go into checkpoints."""
    import random

    transform = build_transforms(EXTENDED, (32, 32))
    np.random.seed(123)
    random.seed(456)
    numpy_state, python_state = np.random.get_state(), random.getstate()
    first = list(epoch_batches(_spec(dataset), transform, 0))
    after = np.random.get_state()
    assert after[0] == numpy_state[0] and np.array_equal(after[1], numpy_state[1]) and after[2] == numpy_state[2]
    assert random.getstate() == python_state
    # and the batches still do not depend on the caller's states
    np.random.seed(7)
    random.seed(8)
    again = list(epoch_batches(_spec(dataset), transform, 0))
    assert all(np.array_equal(a["data"], b["data"]) for a, b in zip(first, again))


def test_epochs_and_ranks_draw_different_data(dataset):
    first = next(epoch_batches(_spec(dataset, epoch=0), None, 0))["data"]
    assert not np.array_equal(first, next(epoch_batches(_spec(dataset, epoch=1), None, 0))["data"])
    assert not np.array_equal(first, next(epoch_batches(_spec(dataset, rank=1), None, 0))["data"])


def test_augmented_labels_keep_exact_values_and_the_ignore_label(dataset):
    transform = build_transforms(EXTENDED, (32, 32))
    segs = np.concatenate([b["seg"] for b in epoch_batches(_spec(dataset, batches=30), transform, 0)])
    assert set(np.unique(segs).tolist()) == {0.0, 1.0, float(IGNORE_LABEL)}


@pytest.mark.parametrize("own, p_per_sample, scaled", [(1.0, 0.0, 64), (0.0, 1.0, 0)])
def test_an_entry_with_its_own_probability_ignores_p_per_sample(own, p_per_sample, scaled):
    """probabilities.brightness 1 scales every sample although p_per_sample is 0; 0 scales none although it is 1."""
    aug = AugmentationPlan(mirror_lr=False, rotation_deg=0.0, brightness=[1.5, 2.0], p_per_sample=p_per_sample,
                           probabilities={"brightness": own})
    transform = build_transforms(aug, (8, 8))
    rng = np.random.default_rng(0)
    data = rng.uniform(1.0, 2.0, (64, 1, 8, 8)).astype(np.float32)
    out = transform(data=data.copy(), seg=np.zeros_like(data))["data"]
    ratio = out.reshape(64, -1).mean(axis=1) / data.reshape(64, -1).mean(axis=1)
    assert int(np.sum(ratio >= 1.5 - 1e-6)) == scaled
    assert np.all((ratio >= 1.5 - 1e-6) | np.isclose(ratio, 1.0))


def test_batches_hold_lesions_at_the_foreground_fraction(dataset):
    segs = [b["seg"] for b in epoch_batches(_spec(dataset, batches=10), None, 0)]
    with_lesion = np.mean([(s[i] == 1).any() for s in segs for i in range(len(s))])
    assert with_lesion >= 0.5


class RaisingTransform(AbstractTransform):
    """Fails on the second batch."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, **data_dict):
        self.calls += 1
        if self.calls > 1:
            raise ValueError("broken transform")
        return data_dict


class ExitingTransform(AbstractTransform):
    """Kills its worker process outright, as the OOM killer would."""

    def __call__(self, **data_dict):
        os._exit(9)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("transform", [RaisingTransform(), ExitingTransform()], ids=["raises", "os._exit"])
def test_a_dying_worker_is_a_clear_error_not_a_hang(dataset, transform):
    started = time.monotonic()
    with pytest.raises(WorkerDied) as err:
        for _ in epoch_batches(_spec(dataset, batches=20), transform, 2, stall_timeout=30):
            pass
    assert time.monotonic() - started < 20
    assert isinstance(err.value, DeepWMLError)
    assert "--num-workers 0" in str(err.value)


def test_workers_memory_map_the_unpacked_cache(dataset):
    dataset.unpack(dataset.fold_cases(0).train)
    image, label = dataset.load(dataset.fold_cases(0).train[0])
    assert isinstance(image, np.memmap) and isinstance(label, np.memmap)
    assert Path(image.filename).suffix == ".npy"


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as dead)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux /proc")
def test_workers_die_with_a_killed_trainer(dataset):
    script = f"""
import multiprocessing, sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_training_dataloader import _spec
from deepwml.training.preprocessed import PreprocessedDataset
batches = __import__("deepwml.training.dataloader", fromlist=["x"]).epoch_batches(
    _spec(PreprocessedDataset({str(dataset.folder.parent)!r}, {DATASET!r}, "tiny"), batches=1000), None, 1)
next(batches)
print(multiprocessing.active_children()[0].pid, flush=True)
time.sleep(120)
"""
    import signal
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    worker = None
    try:
        worker = int(proc.stdout.readline())
        assert _alive(worker)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(worker), "an orphaned augmentation worker kept running"
    finally:
        proc.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
