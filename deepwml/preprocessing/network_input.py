"""What the network sees of a cached [C, S, H, W] stack: each slice with its channels and, in 2.5D, its neighbours.

Training batches, training validation and prediction all build their input with :func:`stack_slices`, so a model
sees the same arrangement everywhere: channel-major (image channel c, slice offset j ∈ −(k−1)/2 … (k−1)/2 → input
channel c·k + j + (k−1)/2), and beyond the ends of the stack either the end slice repeated ('edge') or zeros ('zero').
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from deepwml.utils.errors import DeepWMLError

#: the whole extent of an in-plane axis
WHOLE = slice(None)


def as_channels(image: np.ndarray) -> np.ndarray:
    """[C, S, H, W] as it is; a single-channel [S, H, W] (caches written before channels existed) as [1, S, H, W]."""
    if image.ndim == 3:
        return image[None]
    if image.ndim != 4:
        raise ValueError(f"an image stack is [S, H, W] or [C, S, H, W], got shape {image.shape}")
    return image


def context_offsets(context_slices: int) -> np.ndarray:
    """Slice offsets of the k input slices around the centre one: -(k-1)/2 .. (k-1)/2."""
    half = context_slices // 2
    return np.arange(-half, half + 1)


def stack_slices(image: np.ndarray, slices: Sequence[int], context_slices: int = 1, padding: str = "edge",
                 rows: slice = WHOLE, cols: slice = WHOLE) -> np.ndarray:
    """Network input float32 [N, C·k, h, w] for ``slices`` of ``image`` ([S,H,W] or [C,S,H,W]), cropped to rows × cols."""
    image = as_channels(image)
    n_slices = image.shape[1]
    idx = np.asarray(slices, dtype=np.int64)[:, None] + context_offsets(context_slices)[None]
    outside = (idx < 0) | (idx >= n_slices)
    gathered = np.asarray(image[:, np.clip(idx, 0, n_slices - 1).ravel(), rows, cols], dtype=np.float32)
    c, _, h, w = gathered.shape
    gathered = gathered.reshape(c, len(idx), context_slices, h, w)
    if padding == "zero":
        gathered[:, outside] = 0.0
    elif padding != "edge":
        raise DeepWMLError(f"network.context_padding must be 'edge' or 'zero', got {padding!r}")
    return np.ascontiguousarray(gathered.transpose(1, 0, 2, 3, 4).reshape(len(idx), c * context_slices, h, w))


def require_channels(image: np.ndarray, expected: int, what: str) -> None:
    """A stack with another number of image channels than the model takes is an error naming ``what``."""
    got = as_channels(image).shape[0]
    if got != expected:
        raise DeepWMLError(f"{what} has {got} image channel(s) but the model takes {expected}; "
                           "the plan's preprocessing.channels and the data's channel_names must agree")
