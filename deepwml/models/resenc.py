"""The residual-encoder 2D U-Net module (``resenc_unet2d``; see deepwml.models.resenc_spec)."""
from __future__ import annotations

from typing import List, Union

import torch
from torch import nn

from deepwml.models.base import DescribedNetwork
from deepwml.models.norms import level_norm
from deepwml.models.registry import NORMS
from deepwml.models.unet2d import add_decoder, decode, he_init


def conv_norm(c_in: int, c_out: int, norm: str, kernel: int = 3, stride: int = 1) -> nn.Sequential:
    """Convolution (padding keeps the size) + normalisation."""
    spec = NORMS.get(norm)
    return nn.Sequential(nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=spec.conv_bias),
                         spec.build(c_out))


class ResidualBlock(nn.Module):
    """conv-norm-ReLU, conv-norm, plus the shortcut, ReLU; a strided block pools its shortcut (nnU-Net's BasicBlockD)."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv1 = conv_norm(c_in, c_out, norm, stride=stride)
        self.conv2 = conv_norm(c_out, c_out, norm)
        self.act = nn.ReLU(inplace=True)
        shortcut: List[nn.Module] = []
        if stride > 1:
            shortcut.append(nn.AvgPool2d(stride))
        if c_in != c_out:
            shortcut.append(conv_norm(c_in, c_out, norm, kernel=1))
        self.shortcut = nn.Sequential(*shortcut)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """relu(conv2(relu(conv1(x))) + shortcut(x))."""
        return self.act(self.conv2(self.act(self.conv1(x))) + self.shortcut(x))


class ResEncUNet2D(DescribedNetwork, nn.Module):
    """Stem, residual encoder stages, U-Net decoder; logits [B, out_channels, H, W]."""

    def __init__(self, spec) -> None:
        super().__init__()
        self.spec = spec
        net = spec.plan
        self.features = list(net.features)
        self.deep_supervision = net.deep_supervision
        #: training switches this on to receive the coarser heads' logits as well
        self.return_deep_supervision = False
        depth = len(self.features)
        self.stem = nn.Sequential(conv_norm(net.in_channels, self.features[0], level_norm(net.norm, 0, depth)),
                                  nn.ReLU(inplace=True))
        self.encoder = nn.ModuleList()
        c_in = self.features[0]
        for level, (width, n_blocks) in enumerate(zip(self.features, spec.blocks)):
            norm = level_norm(net.norm, level, depth)
            blocks = [ResidualBlock(c_in if b == 0 else width, width, 2 if (level and b == 0) else 1, norm)
                      for b in range(n_blocks)]
            self.encoder.append(nn.Sequential(*blocks))
            c_in = width
        add_decoder(self, self.features, net.convs_per_block, net.norm, net.deep_supervision, net.out_channels)
        he_init(self)

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, List[torch.Tensor]]:
        """Logits [B, out_channels, H, W]; with deep supervision switched on, a list from finest to coarsest."""
        x = self.stem(x)
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        skips.pop()  # the bottleneck is not a skip connection
        return decode(self, x, skips)
