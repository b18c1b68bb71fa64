"""What every command shares: user errors as one line without a traceback, exit codes, device flag."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional

from deepwml.utils.errors import DeepWMLError

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def run(main_fn: Callable[[Optional[List[str]]], int], argv: Optional[List[str]] = None) -> int:
    """Call ``main_fn`` and turn user errors into one clear line and a non-zero exit code."""
    try:
        return int(main_fn(argv) or 0)
    except DeepWMLError as e:
        print(f"{_prog()}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"{_prog()}: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED


def _prog() -> str:
    import os

    return os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "deepwml"


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """--device auto|cpu|cuda[:N]."""
    parser.add_argument(
        "--device",
        default="auto",
        help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N (default: auto)",
    )


def add_dataset_argument(parser: argparse.ArgumentParser, required: bool = True) -> None:
    """-d DATASET by id (501) or name (Dataset501_Synth)."""
    parser.add_argument(
        "-d", "--dataset", required=required, help="dataset id (e.g. 501) or folder name (e.g. Dataset501_Synth)"
    )
