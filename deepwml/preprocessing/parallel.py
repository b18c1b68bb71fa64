"""One case per worker with a progress bar: memory stays bounded by n_jobs cases whatever the dataset size."""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence

from joblib import Parallel, delayed
from tqdm import tqdm


def parallel_map(
    fn: Callable[..., Any], items: Sequence[Any], n_jobs: int = 1, desc: str = "", progress: Optional[bool] = None
) -> Iterator[Any]:
    """Yield ``fn(item)`` in input order, computed by ``n_jobs`` worker processes, with a tqdm bar on stderr.

    ``progress``: True forces the bar, None shows it only on a terminal (tqdm's rule), False hides it.
    """
    disable = None if progress is None else not progress
    if n_jobs == 1 or len(items) <= 1:
        # in-process: no worker start-up cost, and tracebacks stay readable
        results: Iterator[Any] = (_one_blas_thread(fn, item) for item in items)
    else:
        # one task per dispatch keeps at most n_jobs cases in memory at a time
        runner = Parallel(n_jobs=n_jobs, return_as="generator", pre_dispatch="n_jobs", batch_size=1)
        results = runner(delayed(fn)(item) for item in items)
    yield from tqdm(results, total=len(items), desc=desc, unit="case", disable=disable, dynamic_ncols=True)


def _one_blas_thread(fn: Callable[..., Any], item: Any) -> Any:
    """``fn(item)`` with numpy's BLAS on one thread, as in joblib's workers (one BLAS thread each when n_jobs fill the
    cores): OpenBLAS's float32 products round differently with one thread and with two (by ~4e-7 on AVX2 EPYC), so a
    cache made in-process differed from the same cache made by workers."""
    from deepwml.utils.cpu import blas_threads

    with blas_threads(1):
        return fn(item)
