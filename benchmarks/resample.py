"""In-plane resampling as prediction does it (two matrix products) against scipy's slice-by-slice reference, on one
thread: a 17-slice 512² stack to 256² (cubic spline + anti-aliasing, the cpu_fast preprocessing) and 256² back to
512² (linear, reverting probabilities). Prints the median of --runs and the largest relative difference.

    python benchmarks/resample.py [--runs 5]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from deepwml.preprocessing.resample import resize_slices, resize_slices_reference
from machine_load import load_line  # benchmarks/machine_load.py, next to this script


def main() -> None:
    """Time both resamplers on both directions."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(load_line())
    rng = np.random.default_rng(0)
    cases = {"512² -> 256², cubic + anti-aliasing": (rng.random((17, 512, 512), dtype=np.float32) * 1000, (256, 256), 3, True),
             "256² -> 512², linear": (rng.random((17, 256, 256), dtype=np.float32), (512, 512), 1, False)}
    for name, (stack, out_hw, order, anti_alias) in cases.items():
        resize_slices(stack[:1], out_hw, order, anti_alias)  # builds and caches the axis matrices
        times = {}
        for label, fn in (("reference (scipy per slice)", resize_slices_reference), ("matrix products", resize_slices)):
            runs = []
            for _ in range(args.runs):
                start = time.perf_counter()
                result = fn(stack, out_hw, order, anti_alias)
                runs.append(time.perf_counter() - start)
            times[label] = (statistics.median(runs), result)
        (slow, reference), (fast, result) = times.values()
        error = float(np.abs(result - reference).max() / np.abs(reference).max())
        print(f"{name}, 17 slices: reference {slow:.3f} s, matrix products {fast:.3f} s ({slow / fast:.1f}x); "
              f"largest difference {error:.1e} of the largest value")


if __name__ == "__main__":
    main()
