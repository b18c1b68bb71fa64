"""Lesion probabilities for a preprocessed [S, H, W] stack: batched slices, fold ensemble, optional flip TTA.

Only the head's bounding box is sent through the network when the plan allows it (no instance norm, whose
statistics would change with the crop): slices without head are skipped outright and rows/columns outside the
box (plus a margin that keeps the convolutions' context) are never computed.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from deepwml.planning.plan import Plan
from deepwml.training.device import DeviceSetup

#: background kept around the head box, in pixels, so that the convolutions near the head see real context
CROP_MARGIN = 32


@dataclass(frozen=True)
class Region:
    """The part of a [S, H, W] stack the network runs on: which slices, and one in-plane box for all of them."""

    slices: np.ndarray
    rows: slice
    cols: slice


def _padded_span(lo: int, hi: int, size: int, margin: int, multiple: int) -> slice:
    """[lo, hi) widened by ``margin`` and to a multiple of ``multiple`` (the U-Net's poolings), kept inside [0, size)."""
    lo, hi = max(0, lo - margin), min(size, hi + margin)
    length = -(-(hi - lo) // multiple) * multiple
    if length >= size:
        return slice(0, size)
    lo = min(lo, size - length)
    return slice(lo, lo + length)


def inference_region(head: Optional[np.ndarray], shape: Tuple[int, int, int], plan: Plan, margin: int = CROP_MARGIN) -> Region:
    """Slices that hold head and, where the plan allows cropping, the in-plane box around the head."""
    s, h, w = shape
    full = Region(np.arange(s), slice(0, h), slice(0, w))
    if head is None or not head.any():
        return full
    has_head = head.any(axis=(1, 2))
    slices = np.flatnonzero(has_head)
    if plan.network.norm == "instance":
        return Region(slices, full.rows, full.cols)
    rows = np.flatnonzero(head.any(axis=(0, 2)))
    cols = np.flatnonzero(head.any(axis=(0, 1)))
    multiple = 2 ** (len(plan.network.features) - 1)
    return Region(
        slices,
        _padded_span(int(rows[0]), int(rows[-1]) + 1, h, margin, multiple),
        _padded_span(int(cols[0]), int(cols[-1]) + 1, w, margin, multiple),
    )


def _pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Tuple[int, int]]:
    """Pad H and W at the far end to a multiple of the U-Net's downsampling factor (target-spacing plans vary)."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
    return x, (h, w)


class SlicePredictor:
    """Runs one or several fold networks over slices and averages their sigmoid probabilities."""

    def __init__(
        self,
        networks: Sequence[nn.Module],
        plan: Plan,
        setup: DeviceSetup,
        tta: bool = False,
        batch_size: Optional[int] = None,
        crop: bool = True,
    ) -> None:
        self.plan = plan
        self.setup = setup
        self.device = setup.device
        self.tta = tta
        self.batch_size = int(batch_size or plan.inference.batch_size)
        self.crop = crop
        self.multiple = 2 ** (len(plan.network.features) - 1)
        # channels_last lets oneDNN pick its fastest CPU convolution kernels (the device setup knows where it pays)
        layout = torch.channels_last if setup.channels_last else torch.contiguous_format
        self.layout = layout
        self.networks: List[nn.Module] = [n.to(self.device).eval().to(memory_format=layout) for n in networks]

    @torch.inference_mode()
    def forward(self, batch: np.ndarray) -> np.ndarray:
        """Mean probability over folds (and flips) for a [B, H, W] batch of preprocessed slices."""
        x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))[:, None].to(self.device)
        x, (h, w) = _pad_to_multiple(x, self.multiple)
        x = x.contiguous(memory_format=self.layout)
        inputs = [x, torch.flip(x, dims=(-1,))] if self.tta else [x]
        total = torch.zeros(x.shape[0], 1, h, w, device=self.device, dtype=torch.float32)
        for net in self.networks:
            for k, xi in enumerate(inputs):
                with self.setup.autocast():
                    logits = net(xi)
                prob = torch.sigmoid(logits.float())[..., :h, :w]
                # the second input is mirrored left-right; mirror its answer back before averaging
                total += torch.flip(prob, dims=(-1,)) if k else prob
        total /= len(self.networks) * len(inputs)
        return total[:, 0].cpu().numpy()

    def predict(self, image_pp: np.ndarray, head: Optional[np.ndarray] = None) -> np.ndarray:
        """Probabilities [S, H, W] float32 for a preprocessed stack; zero outside the head region."""
        image_pp = np.asarray(image_pp)
        probs = np.zeros(image_pp.shape, dtype=np.float32)
        region = inference_region(head if self.crop else None, image_pp.shape, self.plan)
        for start in range(0, len(region.slices), self.batch_size):
            idx = region.slices[start:start + self.batch_size]
            batch = image_pp[idx, region.rows, region.cols]
            probs[idx, region.rows, region.cols] = self.forward(batch)
        return probs
