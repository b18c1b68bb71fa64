"""DeepWML: white-matter-lesion segmentation on routine clinical 2D FLAIR.

From Python: ``from deepwml import Segmenter; result = Segmenter().segment("scan.nii.gz")`` (docs/prediction.md, "Python").
"""
from typing import Any

__version__ = "0.1.0"

#: imported on first use: every command imports this package, and most of them need no network
_LAZY = {"Segmenter": "deepwml.inference.segmenter", "Segmentation": "deepwml.inference.segmenter",
         "write_summary": "deepwml.inference.segmenter"}


def __getattr__(name: str) -> Any:
    """``deepwml.Segmenter``, ``deepwml.Segmentation`` and ``deepwml.write_summary``, imported when first asked for."""
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'deepwml' has no attribute {name!r}")
