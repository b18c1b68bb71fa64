"""Normalisation layers a network plan names (``network.norm``), with what the other stages need to know of each."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass(frozen=True)
class NormSpec:
    """One kind of normalisation layer."""

    #: channels -> nn.Module (torch is imported only when a layer is built)
    build: Callable[[int], Any]
    #: a convolution right before it keeps its bias (a normalisation's mean subtraction would cancel it)
    conv_bias: bool
    #: whether predicting a crop of a slice gives the same values as the whole slice (instance norm's
    #: statistics change with the crop; batch norm in eval mode uses stored statistics)
    crop_safe: bool
    #: feature maps autograd keeps per normalised convolution output, for the memory estimate
    saved_maps: int


def _identity(channels: int) -> Any:
    """No normalisation (the paper)."""
    from torch import nn

    return nn.Identity()


def _batch(channels: int) -> Any:
    """Batch normalisation."""
    from torch import nn

    return nn.BatchNorm2d(channels)


def _instance(channels: int) -> Any:
    """Instance normalisation with a learned scale and shift (nnU-Net's default)."""
    from deepwml.models.instance_norm import InstanceNorm2d

    return InstanceNorm2d(channels, affine=True)


NONE = NormSpec(_identity, conv_bias=True, crop_safe=True, saved_maps=0)
BATCH = NormSpec(_batch, conv_bias=False, crop_safe=True, saved_maps=2)
INSTANCE = NormSpec(_instance, conv_bias=False, crop_safe=False, saved_maps=2)
