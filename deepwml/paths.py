"""Data roots, as nnU-Net users know them: environment variables, overridable by flags, with a printed default."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional, Union

ROOT_VARIABLES = {
    "raw": "DEEPWML_RAW",
    "preprocessed": "DEEPWML_PREPROCESSED",
    "results": "DEEPWML_RESULTS",
}

#: Used when neither a flag nor the environment variable names a root.
DEFAULT_BASE = Path.home() / "deepwml_data"

_announced: set = set()


def data_root(kind: str, override: Optional[Union[str, Path]] = None, quiet: bool = False) -> Path:
    """Return the root folder for ``kind`` ('raw', 'preprocessed' or 'results'): flag, else env var, else default."""
    if kind not in ROOT_VARIABLES:
        raise ValueError(f"unknown data root {kind!r}; expected one of {sorted(ROOT_VARIABLES)}")
    if override:
        return Path(override).expanduser().resolve()
    env = os.environ.get(ROOT_VARIABLES[kind])
    if env:
        return Path(env).expanduser().resolve()
    path = (DEFAULT_BASE / kind).resolve()
    if not quiet and kind not in _announced:
        _announced.add(kind)
        print(f"[deepwml] {ROOT_VARIABLES[kind]} is not set; using {path}", file=sys.stderr)
    return path


def raw_root(override: Optional[Union[str, Path]] = None) -> Path:
    """Root of raw datasets (DEEPWML_RAW)."""
    return data_root("raw", override)


def preprocessed_root(override: Optional[Union[str, Path]] = None) -> Path:
    """Root of plans and preprocessed caches (DEEPWML_PREPROCESSED)."""
    return data_root("preprocessed", override)


def results_root(override: Optional[Union[str, Path]] = None) -> Path:
    """Root of trained models (DEEPWML_RESULTS)."""
    return data_root("results", override)


def add_root_arguments(parser, kinds=("raw", "preprocessed", "results")) -> None:
    """Add --raw/--preprocessed/--results flags to an argparse parser."""
    for kind in kinds:
        parser.add_argument(
            f"--{kind}",
            dest=f"{kind}_root",
            default=None,
            metavar="DIR",
            help=f"{kind} data root (default: ${ROOT_VARIABLES[kind]}, else {DEFAULT_BASE / kind})",
        )
