"""deepwml_install_model (not built yet)."""
from __future__ import annotations

import argparse
from typing import List, Optional

from deepwml.cli.common import run
from deepwml.utils.errors import NotBuiltYet


def build_parser() -> argparse.ArgumentParser:
    """Arguments of deepwml_install_model."""
    return argparse.ArgumentParser(prog="deepwml_install_model", description="deepwml_install_model: this stage is not built yet.")


def _main(argv: Optional[List[str]]) -> int:
    build_parser().parse_args(argv)
    raise NotBuiltYet("deepwml_install_model")


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point."""
    return run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
