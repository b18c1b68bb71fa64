"""The paper's 2D U-Net, built from ``plan.network``.

Encoder level i holds ``convs_per_block`` 3×3 convolutions (padding 1) + ReLU with ``features[i]`` channels,
2×2 max-pooling between levels; the last entry of ``features`` is the bottleneck. The decoder upsamples with
2×2 transposed convolutions, concatenates the skip connection and applies the same conv block. A 1×1 head maps
to one logit channel (sigmoid at inference). With ``deep_supervision`` extra 1×1 heads sit on the coarser
decoder levels; they are only returned in training mode with ``return_deep_supervision`` switched on, so
validation and prediction (eval mode) always receive one tensor ``[B, 1, H, W]``.
"""
from __future__ import annotations

from typing import List, Union

import torch
from torch import nn

from deepwml.planning.plan import NetworkPlan


def _norm(kind: str, channels: int) -> nn.Module:
    """The normalisation layer the plan asks for (identity for 'none', the paper)."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """``n`` × (3×3 conv, optional norm, ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, n: int, norm: str) -> None:
        layers: List[nn.Module] = []
        for i in range(n):
            # a bias right before a normalisation layer is cancelled by its mean subtraction
            layers.append(nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, padding=1, bias=norm == "none"))
            layers.append(_norm(norm, out_channels))
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class UNet2D(nn.Module):
    """Encoder–decoder with skip connections; depth = len(features)."""

    def __init__(self, features: List[int], convs_per_block: int = 2, norm: str = "none",
                 in_channels: int = 1, deep_supervision: bool = False) -> None:
        super().__init__()
        self.features = list(features)
        self.deep_supervision = deep_supervision
        #: training switches this on to receive the coarser heads' logits as well
        self.return_deep_supervision = False
        self.encoder = nn.ModuleList()
        c_in = in_channels
        for f in self.features:
            self.encoder.append(ConvBlock(c_in, f, convs_per_block, norm))
            c_in = f
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        # decoder level i (0 = finest) joins features[i+1] upsampled with the skip of features[i]
        for i in reversed(range(len(self.features) - 1)):
            self.up.append(nn.ConvTranspose2d(self.features[i + 1], self.features[i], 2, stride=2))
            self.decoder.append(ConvBlock(2 * self.features[i], self.features[i], convs_per_block, norm))
        self.head = nn.Conv2d(self.features[0], 1, 1)
        # one extra head per decoder level coarser than the finest, excluding the bottleneck
        n_extra = len(self.features) - 2 if deep_supervision else 0
        self.ds_heads = nn.ModuleList(nn.Conv2d(self.features[i + 1], 1, 1) for i in range(n_extra))
        self._init_weights()

    def _init_weights(self) -> None:
        """He initialisation: the paper's network has no normalisation, where PyTorch's default trains slowly."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Logits [B, 1, H, W]; with deep supervision switched on, a list from finest to coarsest."""
        skips = []
        for i, block in enumerate(self.encoder):
            if i:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip connection
        decoded = []
        for up, block in zip(self.up, self.decoder):
            x = block(torch.cat([skips.pop(), up(x)], dim=1))
            decoded.append(x)
        out = self.head(x)
        if not (self.return_deep_supervision and self.deep_supervision and self.training):
            return out
        # decoded[-2] is one level coarser than the finest, decoded[-3] two levels, ...
        coarser = [head(decoded[-2 - k]) for k, head in enumerate(self.ds_heads)]
        return [out] + coarser


def build_network(network_plan: NetworkPlan) -> nn.Module:
    """The U-Net described by ``plan.network`` (maps [B, in_channels, H, W] to logits [B, 1, H, W])."""
    return UNet2D(
        features=network_plan.features,
        convs_per_block=network_plan.convs_per_block,
        norm=network_plan.norm,
        in_channels=network_plan.in_channels,
        deep_supervision=network_plan.deep_supervision,
    )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
