"""The network of a plan (``deepwml.models``' registry builds it); kept here for the code that imports it from training."""
from __future__ import annotations

from torch import nn

from deepwml.models.base import build_network
from deepwml.models.unet2d import ConvBlock, UNet2D

__all__ = ["ConvBlock", "UNet2D", "build_network", "count_parameters"]


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
