"""A residual-encoder 2D U-Net family (``resenc_unet2d``), after nnU-Net's ResEnc presets.

Encoder: a 3×3 stem convolution, then per stage ``blocks_per_stage[s]`` residual blocks of two 3×3 convolutions
(the first block of every deeper stage strides by two; its shortcut is 2×2 average pooling + 1×1 convolution, as
nnU-Net's BasicBlockD). Decoder: the U-Net's (transposed-convolution upsampling, skip concatenation,
``convs_per_block`` 3×3 convolutions per level, nnU-Net's ResEnc uses one). ``network.options.blocks_per_stage``
defaults to nnU-Net's 1, 3, 4, 6, 6, ... pattern.
"""
from __future__ import annotations

import dataclasses
from typing import Any, List, Sequence

from deepwml.models.base import BACKWARD_TRANSIENTS, BYTES_FP32, NetworkSpec
from deepwml.models.registry import NORMS
from deepwml.models.unet2d_spec import conv_parameters, decoder_floats, decoder_parameters, norm_parameters

#: nnU-Net's ResEnc residual blocks per encoder stage (stages beyond the list repeat its last entry)
DEFAULT_BLOCKS = (1, 3, 4, 6, 6, 6, 6)


class ResEncUNet2DSpec(NetworkSpec):
    """Answers for a residual-encoder U-Net."""

    label = "ResEnc U-Net"

    def option_names(self) -> Sequence[str]:
        """Only ``blocks_per_stage``."""
        return ("blocks_per_stage",)

    @property
    def blocks(self) -> List[int]:
        """Residual blocks per encoder stage."""
        given = self.plan.options.get("blocks_per_stage")
        if given is not None:
            return list(given)
        n = len(self.plan.features)
        return [DEFAULT_BLOCKS[min(i, len(DEFAULT_BLOCKS) - 1)] for i in range(n)]

    def problems(self) -> List[str]:
        """The shared checks, and blocks_per_stage: one positive integer per entry of features."""
        p = super().problems()
        given = self.plan.options.get("blocks_per_stage")
        if given is not None and (
            not isinstance(given, list) or len(given) != len(self.plan.features)
            or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in given)
        ):
            p.append(f"network.options.blocks_per_stage must list one integer >= 1 per entry of network.features "
                     f"({len(self.plan.features)}), got {given!r}")
        return p

    def with_poolings(self, poolings: int) -> Any:
        """Features and blocks_per_stage cut to ``poolings`` + 1 stages."""
        plan = super().with_poolings(poolings)
        if "blocks_per_stage" in plan.options:
            plan = dataclasses.replace(plan, options={**plan.options, "blocks_per_stage": self.blocks[: poolings + 1]})
        return plan

    def parameter_count(self) -> int:
        """Exact count of the module's trainable weights."""
        net = self.plan
        f, norm = net.features, net.norm
        bias = NORMS.get(norm).conv_bias
        conv_norm = lambda c_in, c_out, k=3: conv_parameters(c_in, c_out, k, bias) + norm_parameters(norm, c_out)  # noqa: E731
        total = conv_norm(net.in_channels, f[0])
        c_in = f[0]
        for width, n_blocks in zip(f, self.blocks):
            for b in range(n_blocks):
                total += conv_norm(c_in, width) + conv_norm(width, width)
                if b == 0 and c_in != width:
                    total += conv_norm(c_in, width, 1)
                c_in = width
        return total + decoder_parameters(f, net.convs_per_block, norm, net.deep_supervision, net.out_channels)

    def activation_bytes_per_sample(self, patch_size: Sequence[int]) -> int:
        """fp32 memory of one sample for forward and backward, counted as the U-Net's model (see unet2d_spec):
        per convolution its output plus the normalisation's maps, per residual block its sum, per strided
        shortcut the pooled input and its 1×1 convolution."""
        net = self.plan
        pixels = patch_size[0] * patch_size[1]
        per_conv = 1 + NORMS.get(net.norm).saved_maps
        floats = pixels * net.features[0] * per_conv  # stem
        c_in = net.features[0]
        for level, (width, n_blocks) in enumerate(zip(net.features, self.blocks)):
            level_pixels = pixels / 4**level
            floats += level_pixels * n_blocks * (2 * per_conv + 1) * width
            if c_in != width:
                floats += level_pixels * (c_in + per_conv * width)
            c_in = width
        floats += decoder_floats(net.features, pixels, net.convs_per_block, per_conv)
        floats += pixels * (net.in_channels + net.out_channels)  # input and logits
        return int(floats * BYTES_FP32 * BACKWARD_TRANSIENTS)

    def build(self) -> Any:
        """The ResEnc U-Net module."""
        from deepwml.models.resenc import ResEncUNet2D

        return ResEncUNet2D(self)

    def describe(self) -> str:
        """One line for the log."""
        return f"{self.label} {self.plan.features}, blocks {self.blocks}, norm {self.plan.norm}"
