"""deepwml_demo: the whole pipeline on synthetic data, with the public commands, resumable."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_device_argument, add_version_argument, run, run_installed


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_demo."""
    p = argparse.ArgumentParser(
        prog="deepwml_demo",
        description="Synthesise a multi-centre FLAIR dataset, plan and preprocess it, train fold 0, choose its mask "
        "threshold and lesion filters on the fold's validation cases, predict the held-out test set with it and with "
        "the model shipped in DeepWML, and evaluate both (compared case by case). Run it again with the same "
        "--workdir to resume after an interruption.",
    )
    p.add_argument("--workdir", type=Path, default=Path("deepwml_demo_work"), help="where everything is written (default: ./deepwml_demo_work)")
    p.add_argument("--minutes", type=float, default=15.0, help="time budget in minutes; training gets what is left after data preparation, at least 1 minute (a quarter of a budget under 4) (default: 15)")
    add_device_argument(p)
    p.add_argument("--scale", type=float, default=0.1, help="fraction of the paper's 492 patients to synthesise (default: 0.1, at least one per centre)")
    p.add_argument("--plan", default=None, help="plan preset (default: cpu_fast on a CPU, paper on a GPU)")
    p.add_argument("-np", "--num-processes", dest="n_jobs", type=int, default=2, help="worker processes for data preparation (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic dataset (default: 0)")
    add_version_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    from deepwml.demo.pipeline import DemoSettings, run_demo

    a = build_parser().parse_args(argv)
    run_demo(DemoSettings(workdir=a.workdir, minutes=a.minutes, device=a.device, scale=a.scale, plan=a.plan, n_jobs=a.n_jobs, seed=a.seed))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


def entry() -> None:
    """The installed command (and ``python -m``): main(), then exit without the interpreter's teardown
    (deepwml.cli.common.run_installed)."""
    run_installed(main)


if __name__ == "__main__":
    entry()
