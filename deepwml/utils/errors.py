"""Exceptions a user can cause; each names the file and the problem."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union


class DeepWMLError(Exception):
    """A problem the user can fix; printed as one line by the command-line tools, no traceback."""

    def __init__(self, message: str, path: Optional[Union[str, Path]] = None) -> None:
        self.path = str(path) if path is not None else None
        self.problem = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class ImageError(DeepWMLError):
    """An image that cannot be read or is unfit (2D, 4D, NaN, truncated...)."""


class DatasetError(DeepWMLError):
    """A raw dataset, dataset.json or dataset name that is wrong."""


class PlanError(DeepWMLError):
    """A plan file that does not validate or does not match the data."""
