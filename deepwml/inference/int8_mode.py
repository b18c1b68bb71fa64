"""The --int8 modes (deepwml.inference.int8), checked without importing torch."""
from __future__ import annotations

from deepwml.utils.errors import DeepWMLError

INT8_MODES = ("auto", "on", "off")


def check_mode(mode: str) -> str:
    """The int8 mode; anything else is an error naming the choices."""
    if mode not in INT8_MODES:
        raise DeepWMLError(f"--int8 must be one of {', '.join(INT8_MODES)}, got {mode!r}")
    return mode
