"""deepwml_export_model: pack a trained model (plans, dataset.json, fingerprint, fold checkpoints) into one zip."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_dataset_argument, add_version_argument, run, run_installed
from deepwml.paths import add_root_arguments, results_root


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_export_model."""
    p = argparse.ArgumentParser(
        prog="deepwml_export_model",
        description=(
            "Write a model zip that another site installs with deepwml_install_model. It holds plans.json, "
            "dataset.json, fingerprint.json, a manifest (DeepWML version, folds, plan hash) and one checkpoint per "
            "fold, slimmed to the weights (no optimizer or RNG state)."
        ),
    )
    add_dataset_argument(p)
    p.add_argument("-p", "--plan", required=True, help="plan name (the PLAN folder of the trained model)")
    p.add_argument("-f", "--folds", nargs="+", help="folds to include (default: every fold that has the checkpoint)")
    p.add_argument("-o", "--output", required=True, help="the zip file to write, e.g. model.zip")
    p.add_argument("--checkpoint", choices=("best", "latest"), default="best", help="which checkpoint of each fold (default: best)")
    add_root_arguments(p, kinds=("results",))
    add_version_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    # torch comes with these: imported once the arguments are known, so that --help answers at once
    from deepwml.inference.model_loading import resolve_model_dir
    from deepwml.inference.packaging import export_model

    model_dir = resolve_model_dir(dataset=args.dataset, plan=args.plan, results_root=results_root(args.results_root))
    out = Path(args.output).expanduser()
    manifest = export_model(model_dir, out, args.folds, args.checkpoint)
    print(
        f"deepwml_export_model: wrote {out} ({manifest['dataset']}/{manifest['plan']}, folds {' '.join(manifest['folds'])}, "
        f"{manifest['checkpoint']} checkpoints, plan {manifest['plan_hash'][:12]})"
    )
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
