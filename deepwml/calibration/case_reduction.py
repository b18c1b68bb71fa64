"""A tuning command's labelled cases reduced beside the networks: while the main process predicts the next case,
worker processes reduce the cases already predicted (deepwml_find_postprocessing: each case to the count table of
every candidate, deepwml.calibration.postprocessing_search). The tables come back in case order, and at most
``workers`` predicted cases wait in memory beside the one being predicted.

Why processes: the counting is numpy and scipy.ndimage (labelling, erosion, distance transforms), which hold the
GIL, and it is most of a search's time: 77 % of the demo's `deepwml_find_postprocessing` (py-spy, 2026-12-07), the
networks 8 %. Why spawned: the main process runs torch's OpenMP threads, which a forked child must not inherit.
This module does not import torch, so a worker starts with numpy and scipy alone.
"""
from __future__ import annotations

import multiprocessing
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterator, Optional, Tuple

import numpy as np

from deepwml.calibration.fit_input import FitInput, anatomy_rules
from deepwml.calibration.postprocessing_search import case_counts
from deepwml.calibration.temperature import Temperatures, calibrate_probabilities
from deepwml.imageio import Geometry
from deepwml.inference.postprocessing import MaskSettings
from deepwml.utils.cpu import blas_threads, physical_cores
from deepwml.utils.errors import DeepWMLError

Tables = Dict[str, np.ndarray]


@dataclass
class PredictedCase:
    """A labelled case's uncalibrated lesion probabilities on its own grid, as deepwml_predict computes its map."""

    case_id: str
    probs: np.ndarray
    lesion: np.ndarray
    ignore: np.ndarray
    voxel_ml: float
    #: the scan on the same grid and that grid (what a lesion contrast filter compares lesions with)
    image: Optional[np.ndarray] = None
    geometry: Optional[Geometry] = None
    #: the anatomy map on the same grid (None: the fit runs no anatomy model)
    anatomy: Optional[np.ndarray] = None


@dataclass(frozen=True)
class SearchCounts:
    """A case's count table as deepwml_find_postprocessing scores it (picklable: worker processes run it)."""

    candidates: Tuple[MaskSettings, ...]
    #: the model's calibration: thresholds cut the probabilities deepwml_predict cuts
    temperatures: Temperatures
    shown: FitInput

    def __call__(self, case: PredictedCase) -> Tables:
        """{'counts': the case's COUNTS per candidate}, with the anatomy map's rules cutting every candidate's mask."""
        probs = calibrate_probabilities(case.probs, self.temperatures)
        rules = (anatomy_rules(self.shown, case.anatomy, case.image, case.geometry)
                 if case.anatomy is not None and self.shown.mask_rules else None)
        return {"counts": case_counts(probs, case.lesion, case.ignore, case.voxel_ml, self.candidates, case.image,
                                      case.geometry, rules)}


def reduction_workers(requested: Optional[int]) -> int:
    """Worker processes for ``-np``: the cores this process may use when None; 1 reduces in this process."""
    if requested is None:
        return physical_cores()
    if requested < 1:
        raise DeepWMLError(f"-np must be at least 1, not {requested}")
    return int(requested)


def _reduced(reduce: Callable[[PredictedCase], Tables], case: PredictedCase) -> Tables:
    """``reduce(case)`` with numpy's BLAS on one thread, the same in a worker and in the main process."""
    with blas_threads(1):
        return reduce(case)


class CaseReducer:
    """Cases reduced in ``workers`` spawned processes (in this one when 1), handed back in the order they came.

    Use as a context manager; ``add`` a predicted case (or tables kept from an earlier run), then take ``ready()``
    after each and ``ready(drain=True)`` at the end. Items are (key, tables, computed here)."""

    def __init__(self, reduce: Callable[[PredictedCase], Tables], workers: int = 1) -> None:
        self.reduce, self.workers = reduce, max(1, int(workers))
        self._pool: Optional[ProcessPoolExecutor] = None
        self._pending: Deque[Tuple[Any, Any, bool]] = deque()

    def __enter__(self) -> "CaseReducer":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._pool is not None:
            # an interrupt or an error: the cases still counting are dropped, not waited for
            self._pool.shutdown(wait=exc[0] is None, cancel_futures=True)
            self._pool = None

    def add(self, key: Any, case: Optional[PredictedCase] = None, kept: Optional[Tables] = None) -> None:
        """Queue ``case`` for reduction, or ``kept`` tables (no work) under ``key``."""
        if case is None:
            self._pending.append((key, kept, False))
        elif self.workers == 1:
            self._pending.append((key, _reduced(self.reduce, case), True))
        else:
            if self._pool is None:  # started with the first case to reduce: a fully kept run starts no process
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"))
            self._pending.append((key, self._pool.submit(_reduced, self.reduce, case), True))

    def ready(self, drain: bool = False) -> Iterator[Tuple[Any, Tables, bool]]:
        """The leading items that are done, in order; waits while more than ``workers`` cases are queued (memory), or
        for every item with ``drain``."""
        while self._pending:
            key, value, computed = self._pending[0]
            waiting = isinstance(value, Future) and not value.done()
            if waiting and not drain and len(self._pending) <= self.workers:
                return
            self._pending.popleft()
            yield key, (self._result(value) if isinstance(value, Future) else value), computed

    def salvage(self) -> Iterator[Tuple[Any, Tables]]:
        """After an interrupt or an error: the queued cases that were or still are being reduced and finish without
        error (at most ``workers`` of them), so that a run started again need not predict them again."""
        while self._pending:
            key, value, computed = self._pending.popleft()
            if not computed:
                continue
            try:
                yield key, value.result() if isinstance(value, Future) else value
            except BaseException:  # noqa: BLE001 - a worker hit by the same Ctrl-C, or died: that case is done again
                continue

    @staticmethod
    def _result(future: "Future[Tables]") -> Tables:
        """A worker's tables; a worker that died (killed for memory) is said in words."""
        try:
            return future.result()
        except BrokenProcessPool as e:
            raise DeepWMLError("a worker process counting the cases died (out of memory?); run again with fewer "
                               "processes (-np 1 counts in the main process)") from e
