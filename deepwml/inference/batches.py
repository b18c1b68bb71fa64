"""Which slices go through a network together, cropped to which box, and the loop that fills a stack's probabilities
from them; shared by the torch predictor (deepwml.inference.predictor) and ONNX Runtime (deepwml.inference.onnx_backend),
so it imports neither.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Protocol, Tuple

import numpy as np

from deepwml.planning.plan import InferencePlan
from deepwml.preprocessing.network_input import stack_slices


class StackPredictor(Protocol):
    """What prediction asks of a model's networks (torch's SlicePredictor, ONNX Runtime's GraphPredictor)."""

    def predict(self, image_pp: np.ndarray, head: Optional[np.ndarray] = None) -> np.ndarray:
        """Probabilities of a preprocessed stack [C, S, H, W] (see predict_stack)."""


#: background kept around the head box, in pixels, so that the convolutions near the head see real context (a
#: plan's inference.crop_margin, whose default this is)
CROP_MARGIN = InferencePlan.crop_margin


@dataclass(frozen=True)
class Region:
    """One batch for the network: which slices, and the in-plane box they are cropped to."""

    slices: np.ndarray
    rows: slice
    cols: slice


def _padded_span(lo: int, hi: int, size: int, margin: int, multiple: int) -> slice:
    """[lo, hi) widened by ``margin`` and out to the U-Net's pooling grid (``multiple``), kept inside [0, size).

    The start is a multiple of ``multiple`` so that every pooling window of the crop is one of the whole slice's:
    a crop on another phase pools other pixels together, which changes the output everywhere, not only near the
    crop's edge (tests/test_inference_model.py shows both)."""
    lo, hi = max(0, lo - margin) // multiple * multiple, -(-min(size, hi + margin) // multiple) * multiple
    hi = min(hi, size)
    return slice(0, size) if (lo, hi) == (0, size) else slice(lo, hi)


def inference_batches(
    head: Optional[np.ndarray], shape: Tuple[int, int, int], network: Any, batch_size: int, margin: int = CROP_MARGIN
) -> List[Region]:
    """Batches of neighbouring slices that hold head, each cropped to the head box of its own slices.

    ``network`` is the network (or its spec, deepwml.models): it says whether cropping is safe and what its
    sizes must divide by.

    Boxes are per batch, not per stack: the widest slice fills most of the field of view, but the slices
    through the cerebellum and the vertex, batched together with their neighbours, need far less.
    """
    s, h, w = shape
    has_head = None if head is None else head.any(axis=(1, 2))
    if has_head is None or not has_head.any():
        slices = np.arange(s)
        crop = False
    else:
        slices = np.flatnonzero(has_head)
        crop = network.crop_safe
    multiple = network.size_multiple
    batches = []
    for start in range(0, len(slices), batch_size):
        idx = slices[start:start + batch_size]
        rows, cols = slice(0, h), slice(0, w)
        if crop:
            sub = head[idx]
            r, c = np.flatnonzero(sub.any(axis=(0, 2))), np.flatnonzero(sub.any(axis=(0, 1)))
            rows = _padded_span(int(r[0]), int(r[-1]) + 1, h, margin, multiple)
            cols = _padded_span(int(c[0]), int(c[-1]) + 1, w, margin, multiple)
        batches.append(Region(idx, rows, cols))
    return batches


#: how far under the exact bound the mirror floor is kept, so that float rounding in the averaging, the linear
#: resampling back to the input's grid and the calibration can never matter
MIRROR_FLOOR_MARGIN = 0.01


def mirror_floor(raw_threshold: float) -> Optional[float]:
    """The first pass's slice maximum below which flip TTA's mirrored pass cannot change a binary mask thresholded at
    ``raw_threshold`` (the network's probability, before calibration); None when every slice can change.

    The mask is the mean of the two passes, (p + p') / 2, resampled linearly (a weighted mean) and calibrated (an
    increasing map): with p' <= 1 a slice whose first pass stays below 2 t - 1 stays below t whatever the mirrored
    pass says, so its mirrored pass is skipped and the mask is the one full TTA gives."""
    floor = 2.0 * float(raw_threshold) - 1.0 - MIRROR_FLOOR_MARGIN
    return floor if floor > 0.0 else None


def slices_to_mirror(first_pass_max: np.ndarray, floor: Optional[float]) -> np.ndarray:
    """Indices of a batch's slices whose mirrored pass can change the mask (``first_pass_max``: each slice's
    highest first-pass probability; no ``floor``: every slice)."""
    first_pass_max = np.asarray(first_pass_max)
    if floor is None:
        return np.arange(first_pass_max.shape[0])
    return np.flatnonzero(first_pass_max >= floor)


def probabilities_to_mask(probs: np.ndarray, threshold: float) -> np.ndarray:
    """Binary uint8 mask: probability at or above ``threshold`` (prediction and training validation alike)."""
    return (probs >= threshold).astype(np.uint8)


def predict_stack(image_pp: np.ndarray, head: Optional[np.ndarray], forward: Callable[[np.ndarray], np.ndarray],
                  network: Any, spec: Any, batch_size: int, out_channels: int, margin: int = CROP_MARGIN) -> np.ndarray:
    """Probabilities of a preprocessed stack [C, S, H, W]: [S, H, W] (binary) or [S, classes, H, W], zero (background)
    outside the batches ``inference_batches`` makes of ``head`` (None: every slice, uncropped); ``forward`` maps one
    batch's network input (as the input spec ``spec`` says: channels, neighbouring slices) to its probabilities."""
    s, h, w = image_pp.shape[1:]
    binary = out_channels == 1
    probs = np.zeros((s, h, w) if binary else (s, out_channels, h, w), dtype=np.float32)
    if not binary:
        probs[:, 0] = 1.0
    for region in inference_batches(head, (s, h, w), network, batch_size, margin):
        batch = stack_slices(image_pp, region.slices, spec.context_slices, spec.padding, region.rows, region.cols)
        where = (region.slices, region.rows, region.cols) if binary else (region.slices, slice(None), region.rows, region.cols)
        probs[where] = forward(batch)
    return probs
