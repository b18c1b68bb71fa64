"""Predict cases side by side on a CPU: each worker thread takes one case at a time through reading, the network(s)
and writing, and the cores are shared out between the workers (torch threads per worker = cores // workers).

Why not one network with every core and the reading and writing beside it (deepwml.inference.pipeline, still
used on a GPU and on one core): a narrow network such as cpu_fast (1.5 GFLOP per slice) gains little from a second
OpenMP thread, and the reader and writer threads, which need a core of their own, preempt the OpenMP team, whose
threads then wait on each other at every layer. Two workers of one thread each keep both cores on useful work:
while one case is read, resampled or written (numpy and scipy, mostly holding the GIL), the other's network runs
(torch releases the GIL). On the 10-scan set of issue #15 the run took 5.62 s and 10.4 CPU s this way against 6.63 s
and 11.1 CPU s in the pipeline, measured in one run (benchmarks/predict_stages.py).
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

from deepwml.inference.anatomy import AnatomyModel
from deepwml.inference.inputs import InputCase
from deepwml.inference.lesion_report import CaseSummary, failed_case
from deepwml.inference.pipeline import (CasePipeline, RunOptions, debug_trace, describe_error, network_outputs, prepare_case,
                                        write_case)
from deepwml.inference.batches import StackPredictor
from deepwml.planning.plan import Plan

#: at most this many cases at once unless asked for more: each holds a case and the network's activations in memory
MAX_AUTO_WORKERS = 4


def case_worker_plan(requested: Optional[int], setup: Any, n_cases: int) -> Tuple[int, int]:
    """(case workers, threads each) for a CPU run; 1 worker means the reader -> network -> writer pipeline.
    ``setup``: a torch DeviceSetup or ONNX Runtime's (deepwml.inference.onnx_backend), read for its device and threads.

    ``requested`` None: one worker per core (at most MAX_AUTO_WORKERS), never more than there are cases.
    """
    cores = max(1, int(setup.threads))
    if setup.device.type != "cpu":
        return 1, cores
    workers = min(cores, MAX_AUTO_WORKERS) if requested is None else max(1, int(requested))
    workers = max(1, min(workers, n_cases))
    return workers, max(1, cores // workers)


def predict_case(case: InputCase, predictor: StackPredictor, plan: Plan, options: RunOptions,
                 anatomy: Optional[AnatomyModel] = None) -> CaseSummary:
    """Read, predict and write one case; a failure anywhere is its summary row, never an exception."""
    try:
        prepared = prepare_case(case, plan, options.series_uid, anatomy, options.skull_strip, options.thin_slab_mm,
                                options.reviewed_mask_path(case))
        prepared, probs, anatomy_probs = network_outputs(prepared, predictor, plan, anatomy, options.skull_strip_required)
        return write_case(prepared, probs, options, anatomy_probs)
    except Exception as e:  # noqa: BLE001 - one bad case must not stop the batch
        debug_trace(e)
        return failed_case(case.case_id, describe_error(e))


class CaseWorkers(CasePipeline):
    """Runs cases on ``workers`` threads, each case start to finish on one of them; memory holds ``workers`` cases.
    It takes what the pipeline takes; only the schedule differs."""

    def run(self, cases: Sequence[InputCase], on_done: Optional[Callable[[CaseSummary], None]] = None) -> List[CaseSummary]:
        """Predict ``cases`` (finishing in any order); returns one summary per case, in the order given."""
        results: Dict[str, CaseSummary] = {}
        queue = list(reversed(cases))
        running: Set[Future] = set()
        with ThreadPoolExecutor(self.workers, thread_name_prefix="deepwml-case") as pool:
            try:
                while queue or running:
                    # a new case starts only when a worker is free: Ctrl-C then waits for at most `workers` cases
                    while queue and len(running) < self.workers:
                        running.add(pool.submit(predict_case, queue.pop(), self.predictor, self.plan, self.options, self.anatomy))
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        summary = future.result()
                        results[summary.case_id] = summary
                        if on_done is not None:
                            on_done(summary)
            except BaseException:
                # Ctrl-C: start nothing new; the cases in progress finish (their files are written atomically)
                queue.clear()
                raise
        return [results[c.case_id] for c in cases]
