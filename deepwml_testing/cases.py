"""Synthetic scans that tests take as input (where the generator is not what they test): each drawn once per test run.

A case takes the generator seconds (2-3 s for a 512² scan), and the fine-tuning, Segmenter, anatomy and benchmark tests
draw the same few again and again. ``input_case`` keeps each in the process and in a folder the test processes share
(tests/conftest.py names it in DEEPWML_TEST_CASES for the run), and gives every caller its own copy: a test may change
the arrays it gets. Tests of the generator itself (same seed, same bytes; what a version changes) call generate_case.
"""
from __future__ import annotations

import copy
import functools
import hashlib
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Tuple

#: the environment variable naming the folder shared by one run's test processes
STORE_ENV = "DEEPWML_TEST_CASES"


def input_case(centre: str, index: int, seed: int, **options: Any) -> Any:
    """``generate_case(centre, index, seed, **options)``, drawn once per test run; a copy of its own for each caller."""
    return copy.deepcopy(_drawn(centre, int(index), int(seed), tuple(sorted(options.items()))))


@functools.lru_cache(maxsize=4)
def _drawn(centre: str, index: int, seed: int, options: Tuple[Tuple[str, Any], ...]) -> Any:
    """The case from the shared folder, else drawn now (and kept there)."""
    from deepwml.synthetic.generate import generate_case

    store = os.environ.get(STORE_ENV)
    path = None
    if store:
        key = hashlib.sha256(repr((centre, index, seed, options)).encode("utf-8")).hexdigest()[:24]
        path = Path(store) / f"{key}.pkl"
        if path.is_file():
            # written by this run's own test processes (below), never taken from elsewhere
            with open(path, "rb") as f:
                return pickle.load(f)
    case = generate_case(centre, index=index, seed=seed, **dict(options))
    if path is not None:
        # whole or not at all: another test process may read it the moment it appears
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            pickle.dump(case, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    return case
