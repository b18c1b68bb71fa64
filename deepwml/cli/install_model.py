"""deepwml_install_model: unpack a model zip from deepwml_export_model into the results folder."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import List, Optional

from deepwml.cli.common import add_version_argument, run, run_installed
from deepwml.paths import add_root_arguments, results_root


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_install_model."""
    p = argparse.ArgumentParser(
        prog="deepwml_install_model",
        description=(
            "Install a model zip into RESULTS/DatasetNNN_Name/PLAN, then predict with "
            "'deepwml_predict -m RESULTS/DatasetNNN_Name/PLAN' or '-d DatasetNNN_Name -p PLAN'. Only the files the "
            "manifest lists are extracted, each checked against its sha256; a zip with any other member, a link, an "
            "absolute path or '..' is refused. The plan hash is checked and checkpoints are loaded weights-only "
            "(nothing in a zip runs code). A refused zip leaves nothing behind."
        ),
    )
    p.add_argument("zip", help="model zip written by deepwml_export_model")
    add_root_arguments(p, kinds=("results",))
    p.add_argument("--overwrite", action="store_true", help="replace a model already installed under the same name")
    add_version_argument(p)
    return p


def _main(argv: Optional[List[str]]) -> int:
    args = build_parser().parse_args(argv)
    # torch comes with this: imported once the arguments are known, so that --help answers at once
    from deepwml.inference.packaging import install_model

    from deepwml.inference.onnx_backend import prepare_graphs

    target = install_model(Path(args.zip).expanduser(), results_root(args.results_root), overwrite=args.overwrite)
    # the export a first prediction would pay (a second or two) is paid here, once
    print(f"deepwml_install_model: installed {target}; {prepare_graphs(target)}; predict with: "
          f"deepwml_predict -i INPUT -o OUTPUT -m {target}")
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
