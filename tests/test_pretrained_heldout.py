"""benchmarks/pretrained_heldout.py: the held-out figures split by matrix and by lesion load."""
from __future__ import annotations

from deepwml_testing.benchmarks import load_benchmark


def _benchmark():
    """benchmarks/pretrained_heldout.py as a module."""
    return load_benchmark("pretrained_heldout")


def test_split_table_pools_components_and_averages_case_figures_per_group():
    bench = _benchmark()
    row = {"matrix": "fine (>= 384)", "small_found": 1, "small": 4, "false": 2, "predicted": 5}
    rows = [{**row, "load": ">= 10 ml", "dice": 0.8, "f1": 0.6},
            {**row, "load": ">= 10 ml", "dice": 0.6, "f1": float("nan")},
            {**row, "load": "< 10 ml", "dice": 0.2, "f1": 0.4, "small_found": 0}]
    lines = bench.split_table(rows, "load", "lesion load").splitlines()
    assert lines[2] == "| >= 10 ml | 2 | 0.700 | 0.600 | 0.25 (2 / 8) | 4 / 10 |"
    assert lines[3] == "| < 10 ml | 1 | 0.200 | 0.400 | 0.00 (0 / 4) | 2 / 5 |"
    assert bench.split_table(rows, "matrix", "matrix").splitlines()[2].startswith("| fine (>= 384) | 3 | 0.533 |")
