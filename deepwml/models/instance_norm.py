"""Instance normalisation that stays in channels-last layout on the CPU.

torch's InstanceNorm2d has no channels-last CPU kernel: it converts every feature map to NCHW and back, which
cost about half of the cpu_fast network's time (issue #15). Instance normalisation is group normalisation with
one channel per group, and group_norm has a native channels-last CPU kernel, so channels-last CPU inputs take
that path: the same function with the same parameters (state_dict keys and values are unchanged), rounded a
little differently. Everything else (NCHW, CUDA, no affine) keeps torch's own layer.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InstanceNorm2d(nn.InstanceNorm2d):
    """nn.InstanceNorm2d whose channels-last CPU forward runs as group_norm (one group per channel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each channel of each sample over its height and width."""
        if self._fast_path(x):
            return F.group_norm(x, x.shape[1], self.weight, self.bias, self.eps)
        return super().forward(x)

    def _fast_path(self, x: torch.Tensor) -> bool:
        """Whether ``x`` can take the channels-last group_norm kernel with identical semantics."""
        return (
            x.device.type == "cpu"
            and x.dim() == 4
            and self.affine
            and not self.track_running_stats
            and x.shape[0] > 0
            and x.is_contiguous(memory_format=torch.channels_last)
            and not x.is_contiguous()
        )
