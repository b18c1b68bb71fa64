"""deepwml_train_pretrained: make the shipped pretrained model (synthesise, plan, train, score, install), resumably."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_device_argument, run


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_train_pretrained."""
    from deepwml.pretrained.recipe import Recipe

    d = Recipe()
    p = argparse.ArgumentParser(
        prog="deepwml_train_pretrained",
        description="Reproduce DeepWML's shipped model: synthetic data (generator version of this install), the "
        "preset, training, a held-out synthetic set of another seed, and the model card. Hours on a CPU; run the "
        "same command again to resume after an interruption.",
    )
    p.add_argument("--workdir", type=Path, required=True, help="where data, caches and the training run go")
    p.add_argument("--install", action="store_true", help="install the result as this package's shipped model (deepwml/pretrained/)")
    p.add_argument("--install-to", type=Path, default=None, help="install the result as a PLAN folder here instead")
    p.add_argument("--seed", type=int, default=d.seed, help=f"synthetic data and training seed (default {d.seed})")
    p.add_argument("--scale", type=float, default=d.scale, help=f"fraction of the 492 synthetic patients (default {d.scale})")
    p.add_argument("--preset", default=d.preset, help=f"plan preset (default {d.preset})")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"epochs (default {d.epochs})")
    p.add_argument("--iterations", type=int, default=d.iterations, help=f"iterations per epoch (default {d.iterations})")
    p.add_argument("--heldout-seed", type=int, default=d.heldout_seed, help=f"seed of the held-out synthetic set (default {d.heldout_seed})")
    p.add_argument("--heldout-scale", type=float, default=d.heldout_scale, help=f"scale of the held-out set (default {d.heldout_scale})")
    p.add_argument("-np", "--num-processes", dest="n_jobs", type=int, default=2, help="worker processes for data preparation")
    add_device_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    from deepwml.pretrained import BUILTIN_DIR
    from deepwml.pretrained.recipe import Recipe, run_recipe

    a = build_parser().parse_args(argv)
    recipe = Recipe(seed=a.seed, scale=a.scale, preset=a.preset, epochs=a.epochs, iterations=a.iterations,
                    heldout_seed=a.heldout_seed, heldout_scale=a.heldout_scale)
    target = a.install_to
    if a.install and target is None:
        target = BUILTIN_DIR
    run_recipe(recipe, a.workdir, target, n_jobs=a.n_jobs, device=a.device)
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
