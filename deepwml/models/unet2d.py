"""The paper's 2D U-Net (``unet2d``), built from ``plan.network``.

Encoder level i holds ``convs_per_block`` 3×3 convolutions (padding 1) + ReLU with ``features[i]`` channels,
2×2 max-pooling between levels; the last entry of ``features`` is the bottleneck. The decoder upsamples with
2×2 transposed convolutions, concatenates the skip connection and applies the same conv block. A 1×1 head maps
to one logit channel (sigmoid at inference). With ``deep_supervision`` extra 1×1 heads sit on the coarser
decoder levels; they are only returned in training mode with ``return_deep_supervision`` switched on, so
validation and prediction (eval mode) always receive one tensor ``[B, 1, H, W]``. A multi-class plan
(``network.num_classes`` > 2) has one logit channel per class instead (softmax at inference).

The module names (``encoder``, ``up``, ``decoder``, ``head``, ``ds_heads``) are the keys of every checkpoint
written so far: they must not change.
"""
from __future__ import annotations

from typing import List, Optional, Union

import torch
from torch import nn

from deepwml.models.base import DescribedNetwork, NetworkSpec
from deepwml.models.norms import level_norm
from deepwml.models.registry import NORMS


class ConvBlock(nn.Sequential):
    """``n`` × (3×3 conv, optional norm, ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, n: int, norm: str) -> None:
        spec = NORMS.get(norm)
        layers: List[nn.Module] = []
        for i in range(n):
            # a bias right before a normalisation layer is cancelled by its mean subtraction
            layers.append(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=spec.conv_bias))
            layers.append(spec.build(out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


def add_decoder(net: nn.Module, features: List[int], convs: int, norm: str, deep_supervision: bool, out_channels: int = 1) -> None:
    """Give ``net`` the U-Net decoder: ``up``, ``decoder``, ``head`` and ``ds_heads`` (in this order)."""
    net.up = nn.ModuleList()
    net.decoder = nn.ModuleList()
    # decoder level i (0 = finest) joins features[i+1] upsampled with the skip of features[i]
    for i in reversed(range(len(features) - 1)):
        net.up.append(nn.ConvTranspose2d(features[i + 1], features[i], 2, stride=2))
        net.decoder.append(ConvBlock(2 * features[i], features[i], convs, level_norm(norm, i, len(features))))
    net.head = nn.Conv2d(features[0], out_channels, 1)
    # one extra head per decoder level coarser than the finest, excluding the bottleneck
    n_extra = len(features) - 2 if deep_supervision else 0
    net.ds_heads = nn.ModuleList(nn.Conv2d(features[i + 1], out_channels, 1) for i in range(n_extra))


def he_init(net: nn.Module) -> None:
    """He initialisation: the paper's network has no normalisation, where PyTorch's default trains slowly."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def decode(net: nn.Module, x: torch.Tensor, skips: List[torch.Tensor]) -> Union[torch.Tensor, List[torch.Tensor]]:
    """Decoder of ``add_decoder`` from the bottleneck ``x`` and the skips (finest first; consumed)."""
    decoded = []
    for up, block in zip(net.up, net.decoder):
        x = block(torch.cat([skips.pop(), up(x)], dim=1))
        decoded.append(x)
    out = net.head(x)
    if not (net.return_deep_supervision and net.deep_supervision and net.training):
        return out
    # decoded[-2] is one level coarser than the finest, decoded[-3] two levels, ...
    coarser = [head(decoded[-2 - k]) for k, head in enumerate(net.ds_heads)]
    return [out] + coarser


class UNet2D(DescribedNetwork, nn.Module):
    """Encoder–decoder with skip connections; depth = len(features)."""

    def __init__(self, features: List[int], convs_per_block: int = 2, norm: str = "none",
                 in_channels: int = 1, deep_supervision: bool = False, spec: Optional[NetworkSpec] = None,
                 out_channels: int = 1) -> None:
        super().__init__()
        if spec is None:
            from deepwml.models.unet2d_spec import UNet2DSpec
            from deepwml.planning.plan import NetworkPlan

            spec = UNet2DSpec(NetworkPlan(architecture="unet2d", features=list(features), convs_per_block=convs_per_block,
                                          norm=norm, deep_supervision=deep_supervision, in_channels=in_channels,
                                          num_classes=2 if out_channels == 1 else out_channels))
        self.spec = spec
        self.features = list(features)
        self.deep_supervision = deep_supervision
        #: training switches this on to receive the coarser heads' logits as well
        self.return_deep_supervision = False
        self.encoder = nn.ModuleList()
        c_in = in_channels
        for level, f in enumerate(self.features):
            self.encoder.append(ConvBlock(c_in, f, convs_per_block, level_norm(norm, level, len(self.features))))
            c_in = f
        self.pool = nn.MaxPool2d(2)
        add_decoder(self, self.features, convs_per_block, norm, deep_supervision, out_channels)
        he_init(self)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Logits [B, out_channels, H, W]; with deep supervision switched on, a list from finest to coarsest."""
        skips = []
        for i, block in enumerate(self.encoder):
            if i:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip connection
        return decode(self, x, skips)
