"""Measure the REAL_FLAIR_FIGURES statistics on a generated synthetic dataset and print them next to the real ranges.

    python benchmarks/synthetic_realism.py [--scale 0.1] [--seed 0] [-np 2] [--centres MS#1,CSVD#2]

Cases are generated in memory with their ground-truth tissue masks (the same cases deepwml_make_synthetic writes
for that seed and scale); nothing is written to disk.
"""
from __future__ import annotations

import argparse
import time
from typing import Dict, List, Optional

from joblib import Parallel, delayed

from deepwml.synthetic import generate_case, plan_cases, select_centres
from deepwml.synthetic.dataset import CaseSpec
from deepwml.synthetic.realism import case_figures, summary_rows


def _measure(spec: CaseSpec) -> Dict[str, object]:
    """Generate one case with its truth masks and return its figures and generation CPU time."""
    start = time.process_time()
    case = generate_case(spec.centre, spec.index, spec.seed, spec.case_id, truth=True)
    seconds = time.process_time() - start
    figures = case_figures(case)
    figures["seconds"] = seconds
    return figures


def main(argv: Optional[List[str]] = None) -> int:
    """Generate, measure, print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--centres", default=None)
    p.add_argument("--diseases", default=None)
    p.add_argument("-np", "--num-processes", type=int, default=2)
    args = p.parse_args(argv)
    specs = plan_cases(select_centres(args.centres, args.diseases), args.scale, args.seed, 0.0)
    start = time.perf_counter()
    figures = Parallel(n_jobs=args.num_processes, batch_size=1)(delayed(_measure)(s) for s in specs)
    wall = time.perf_counter() - start
    print(f"{len(specs)} synthetic patients (scale {args.scale:g}, seed {args.seed}), generated and measured in {wall:.1f} s "
          f"with {args.num_processes} processes; generation alone {sum(f['seconds'] for f in figures):.1f} s CPU "
          f"({sum(f['seconds'] for f in figures) / len(figures):.2f} s per case, truth masks included)\n")
    print("| figure | synthetic | real (REAL_FLAIR_FIGURES.md) |\n|---|---|---|")
    for name, synthetic, real in summary_rows(figures):
        print(f"| {name} | {synthetic} | {real} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
