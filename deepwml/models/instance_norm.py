"""Instance normalisation that stays in channels-last layout on the CPU.

torch's InstanceNorm2d has no channels-last CPU kernel: it converts every feature map to NCHW and back, which
cost about half of the cpu_fast network's time (issue #15). Instance normalisation is group normalisation with
one channel per group, and group_norm has a native channels-last CPU kernel, so channels-last CPU inputs take
that path: the same function with the same parameters (state_dict keys and values are unchanged), rounded a
little differently. Everything else (NCHW, CUDA, no affine) keeps torch's own layer.

Under CPU bf16 autocast the layer normalises in fp32: torch's CPU norm kernels run 2-3x slower on bf16 maps than on
fp32 ones (forward and backward, AVX512-BF16 EPYC), which made bf16 training of cpu_fast 1.5x slower than fp32;
the next convolution's autocast casts back to bf16 (benchmarks/README.md, "bf16 training and the norms").
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InstanceNorm2d(nn.InstanceNorm2d):
    """nn.InstanceNorm2d whose channels-last CPU forward runs as group_norm (one group per channel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise each channel of each sample over its height and width."""
        if self._upcast(x):
            x = x.float()
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

    def _upcast(self, x: torch.Tensor) -> bool:
        """Whether a reduced-precision CPU input (bf16 autocast) is normalised in fp32, where the kernels are faster."""
        return (x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16)
                and (self.weight is None or self.weight.dtype == torch.float32))
