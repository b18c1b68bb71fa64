"""Normalisation layers a network plan names (``network.norm``), with what the other stages need to know of each."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional


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
    #: another registered norm the blocks of the DEEP_LEVELS coarsest levels use instead (encoder and decoder alike)
    deep: Optional[str] = None


#: how many of a U-Net's coarsest levels a norm's ``deep`` covers: at 256² the 32² and 16² levels
DEEP_LEVELS = 2


def level_norm(norm: str, level: int, depth: int) -> str:
    """The norm of the blocks at ``level`` (0 = finest) of a U-Net ``depth`` levels deep whose plan names ``norm``."""
    from deepwml.models.registry import NORMS

    deep = NORMS.get(norm).deep
    return deep if deep is not None and level >= depth - DEEP_LEVELS else norm


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
# Batch norm where the maps are large (its stored statistics cost nothing at prediction), instance norm at the
# coarse levels, which see the whole slice: there each slice's own statistics take out what a scan as a whole does
# differently from the training scans. A batch-norm student of the shipped network missed two obvious lesions of
# a phantom head that its own weights found as soon as the 16² and 32² levels normalised each slice by its own
# statistics (benchmarks/README.md, "A batch-norm student of the shipped network"). Like instance norm, not crop-safe.
BATCH_DEEP_INSTANCE = NormSpec(_batch, conv_bias=False, crop_safe=False, saved_maps=2, deep="instance")
