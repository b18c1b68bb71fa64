"""Shared fixtures: tiny raw datasets written by the tests themselves (no downloads, no shipped data)."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import pytest

from deepwml.datasets import CaseMeta, DatasetJson
from deepwml.imageio import Geometry, write_image

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def pytest_configure(config) -> None:
    """Under pytest-xdist, each test process keeps to cores of its own (worker k of N: every N-th core from the k-th).

    DeepWML sizes its thread pools by the cores a process may run on (deepwml.utils.cpu), and so do ONNX Runtime,
    OpenMP and OpenBLAS; two workers on two cores each started two spinning threads for every network and every
    command they ran, and the suite spent its time in their contention. Pinned, each worker and the commands it starts
    see one core and use one thread. A single test process is left as it is.
    """
    import os

    _share_input_cases(config)
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or count < 2 or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < count:
        return
    mine = cpus[int(worker[2:]) % count::count]
    os.sched_setaffinity(0, mine)
    os.environ["OMP_NUM_THREADS"] = str(len(mine))
    from threadpoolctl import threadpool_limits

    threadpool_limits(len(mine))  # numpy's BLAS, loaded with the package before this hook


def _share_input_cases(config) -> None:
    """One folder for the run's synthetic input scans (deepwml_testing.cases), made by the process that starts the
    test processes (they inherit its environment) and removed when the run ends."""
    import os
    import shutil
    import tempfile

    from deepwml_testing.cases import STORE_ENV

    if os.environ.get(STORE_ENV) or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    folder = tempfile.mkdtemp(prefix="deepwml_test_cases.")
    os.environ[STORE_ENV] = folder

    def remove() -> None:
        os.environ.pop(STORE_ENV, None)
        shutil.rmtree(folder, ignore_errors=True)

    config.add_cleanup(remove)


def oblique_direction(deg: float = 12.0) -> Tuple[float, ...]:
    """A rotation about x by ``deg`` degrees: a tilted axial stack."""
    a = np.deg2rad(deg)
    r = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    return tuple(r.ravel())


def tiny_case(
    shape_zyx: Sequence[int] = (6, 64, 64),
    spacing_xyz: Sequence[float] = (0.9, 0.9, 6.0),
    direction: Sequence[float] = AXIAL,
    seed: int = 0,
    n_lesions: int = 3,
) -> Tuple[np.ndarray, np.ndarray, Geometry]:
    """A bright ellipse 'head' with darker 'ventricles' and a few bright lesion blobs; returns image, label, geometry."""
    rng = np.random.default_rng(seed)
    z, y, x = shape_zyx
    zz, yy, xx = np.meshgrid(np.arange(z), np.linspace(-1, 1, y), np.linspace(-1, 1, x), indexing="ij")
    head = (yy / 0.85) ** 2 + (xx / 0.7) ** 2 < 1
    ventricles = (yy / 0.25) ** 2 + (xx / 0.1) ** 2 < 1
    image = np.where(head, 100.0, 5.0) - 60.0 * ventricles
    label = np.zeros(shape_zyx, np.uint8)
    for _ in range(n_lesions):
        cz = rng.integers(0, z)
        cy, cx = rng.uniform(-0.5, 0.5, 2)
        r = rng.uniform(0.06, 0.15)
        blob = ((yy[cz] - cy) ** 2 + (xx[cz] - cx) ** 2) < r**2
        label[cz][blob & head[cz]] = 1
    image = image + 60.0 * label + rng.normal(0, 3, shape_zyx)
    geometry = Geometry(tuple(reversed(shape_zyx)), tuple(spacing_xyz), (-30.0, -40.0, 10.0), tuple(direction))
    return image.astype(np.float32), label, geometry


def write_tiny_dataset(
    root: Path,
    name: str = "Dataset900_Tiny",
    n_train: int = 4,
    n_test: int = 1,
    ending: str = ".nii.gz",
    centres: Sequence[str] = ("A", "B"),
    diseases: Sequence[str] = ("MS", "CSVD"),
    labels: Optional[Dict[str, int]] = None,
    **case_kwargs,
) -> Path:
    """Write a valid raw dataset of tiny cases below ``root``; returns its folder."""
    folder = Path(root) / name
    meta = DatasetJson(name=name, file_ending=ending, labels=labels or {"background": 0, "lesion": 1})
    for i in range(n_train + n_test):
        split = "Tr" if i < n_train else "Ts"
        cid = f"case{i:03d}"
        image, label, geometry = tiny_case(seed=i, **case_kwargs)
        write_image(image, geometry, folder / f"images{split}" / f"{cid}{ending}")
        write_image(label, geometry, folder / f"labels{split}" / f"{cid}{ending}")
        meta.cases[cid] = CaseMeta(
            centre=centres[i % len(centres)], disease=diseases[i % len(diseases)], vendor="GE", scanner="X", field_strength=3.0
        )
    meta.num_training, meta.num_test = n_train, n_test
    meta.save(folder / "dataset.json")
    return folder


@pytest.fixture(scope="session", autouse=True)
def _user_cache_in_a_session_folder(tmp_path_factory):
    """Derived arrays (deepwml.utils.user_cache) go to a folder of this test session, not the user's ~/.cache; the
    commands the tests start inherit it, so the template is derived once per session rather than once per process."""
    import os

    from deepwml.utils.user_cache import ENV_VAR

    previous = os.environ.get(ENV_VAR)
    base = tmp_path_factory.getbasetemp()
    # pytest-xdist workers each have a base folder below one shared by the run: one cache for all of them
    os.environ[ENV_VAR] = str((base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "deepwml-cache")
    yield
    if previous is None:
        os.environ.pop(ENV_VAR, None)
    else:
        os.environ[ENV_VAR] = previous


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    """A valid 5-case raw dataset (4 training, 1 test) in a temporary raw root."""
    return write_tiny_dataset(tmp_path / "raw")


@pytest.fixture
def training_threads(monkeypatch):
    """Training tests share two cores with other work: the default allocator, and torch's thread count restored."""
    import torch

    monkeypatch.setenv("DEEPWML_ALLOCATOR", "default")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class PredictedCaseSpy:
    """Stands in for deepwml.calibration.fit._predicted_case: lists the cases predicted (``seen``) and, while
    ``stop_after`` is set, raises KeyboardInterrupt once that many were predicted (an interrupted tuning run)."""

    def __init__(self, monkeypatch, stop_after=None) -> None:
        import deepwml.calibration.fit as fit

        self.seen, self.stop_after, self._predicted_case = [], stop_after, fit._predicted_case
        monkeypatch.setattr(fit, "_predicted_case", self)

    def __call__(self, predictor, case, *rest):
        if self.stop_after is not None and len(self.seen) == self.stop_after:
            raise KeyboardInterrupt
        self.seen.append(case.case_id)
        return self._predicted_case(predictor, case, *rest)
