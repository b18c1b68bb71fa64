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
import signal
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Callable, Deque, Dict, Iterable, Iterator, Optional, Tuple

import numpy as np

from deepwml.calibration.case_cache import CaseCache
from deepwml.calibration.fit_input import FitInput, anatomy_rules
from deepwml.calibration.postprocessing_search import case_counts
from deepwml.calibration.temperature import Temperatures, calibrate_probabilities
from deepwml.imageio import Geometry
from deepwml.inference.postprocessing import MaskSettings
from deepwml.utils.cpu import blas_threads
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


@dataclass
class PlansCase:
    """A validation case as several plans' networks see it (deepwml_find_best_configuration): each plan's calibrated
    probabilities on the case's grid and, where its masks follow the anatomy map's rules, that map."""

    case_id: str
    probs: Dict[str, np.ndarray]
    anatomy: Dict[str, Optional[np.ndarray]]
    lesion: np.ndarray
    ignore: np.ndarray
    image: np.ndarray
    geometry: Geometry


@dataclass(frozen=True)
class ConfigurationCounts:
    """Each configuration's count table of a case (picklable: worker processes run it)."""

    #: (name, plans) of each configuration: one plan, or plans whose maps are averaged
    configurations: Tuple[Tuple[str, Tuple[str, ...]], ...]
    candidates: Dict[str, Tuple[MaskSettings, ...]]
    shown: Dict[str, FitInput]

    def __call__(self, case: PlansCase) -> Tables:
        """{configuration name: COUNTS per candidate}: a plan's masks cut by its anatomy rules, an ensemble's by none
        (deepwml_ensemble applies none)."""
        tables = {}
        for name, plans in self.configurations:
            # deepwml_ensemble's average of the calibrated maps deepwml_predict --save-probabilities writes
            averaged = case.probs[plans[0]] if len(plans) == 1 else np.mean([case.probs[p] for p in plans], axis=0)
            labels, shown = case.anatomy.get(plans[0]), self.shown[plans[0]]
            rules = (anatomy_rules(shown, labels, case.image, case.geometry)
                     if len(plans) == 1 and labels is not None and shown.mask_rules else None)
            tables[name] = case_counts(averaged, case.lesion, case.ignore, case.geometry.voxel_volume_ml,
                                       self.candidates[name], case.image, case.geometry, rules)
        return tables


def _ignore_interrupts() -> None:
    """A worker leaves Ctrl-C to the main process, which then waits for the cases being counted and keeps them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _reduced(reduce: Callable[[Any], Tables], case: Any) -> Tables:
    """``reduce(case)`` with numpy's BLAS on one thread, the same in a worker and in the main process."""
    with blas_threads(1):
        return reduce(case)


class CaseReducer:
    """Cases reduced in ``workers`` spawned processes (in this one when 1), handed back in the order they came.

    Use as a context manager; ``add`` a predicted case (or tables kept from an earlier run), then take ``ready()``
    after each and ``ready(drain=True)`` at the end. Items are (key, tables, computed here)."""

    def __init__(self, reduce: Callable[[Any], Tables], workers: int = 1) -> None:
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

    def add(self, key: Any, case: Any = None, kept: Optional[Tables] = None) -> None:
        """Queue ``case`` for reduction, or ``kept`` tables (no work) under ``key``."""
        if case is None:
            self._pending.append((key, kept, False))
        elif self.workers == 1:
            self._pending.append((key, _reduced(self.reduce, case), True))
        else:
            if self._pool is None:  # started with the first case to reduce: a fully kept run starts no process
                self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                                 initializer=_ignore_interrupts)
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
        error (at most ``workers`` of them), so that a run started again need not predict them again. A second
        Ctrl-C while waiting for them stops the wait."""
        while self._pending:
            key, value, computed = self._pending.popleft()
            if not computed:
                continue
            try:
                yield key, value.result() if isinstance(value, Future) else value
            except Exception:  # noqa: BLE001 - its reduction failed or its worker died: that case is done again
                continue

    @staticmethod
    def _result(future: "Future[Tables]") -> Tables:
        """A worker's tables; a worker that died (killed for memory) is said in words."""
        try:
            return future.result()
        except BrokenProcessPool as e:
            raise DeepWMLError("a worker process counting the cases died (out of memory?); run again with fewer "
                               "processes (-np 1 counts in the main process)") from e


def reduced_in_order(work: Iterable[Tuple[Any, Any, Optional[Tables], Any]], reduce: Callable[[Any], Tables],
                     workers: int, cache: CaseCache, bar: Any) -> Iterator[Tuple[str, Tables]]:
    """(case id, tables) for each (case, label file, kept tables or None, predicted case) of ``work`` (a generator
    that predicts a case as it is advanced), in its order: kept tables as they are, predicted cases reduced in
    ``workers`` processes, each new table written to ``cache`` as it comes back and counted on ``bar``. After an
    interrupt or an error the cases already predicted are kept when their reduction ends well."""
    def done(items: Iterator[Tuple[Any, Tables, bool]]) -> Iterator[Tuple[str, Tables]]:
        """Each finished item as (case id, tables), new tables kept in the cache first."""
        for (case, label_path), tables, computed in items:
            if computed:
                cache.save(case, label_path, tables)
            bar.update()
            yield case.case_id, tables

    with CaseReducer(reduce, workers) as reducer:
        try:
            for case, label_path, kept, predicted in work:
                reducer.add((case, label_path), predicted, kept)
                yield from done(reducer.ready())
            yield from done(reducer.ready(drain=True))
        except BaseException:
            for (case, label_path), tables in reducer.salvage():
                cache.save(case, label_path, tables)
            raise
