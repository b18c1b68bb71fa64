"""The paper's 2D U-Net family (``unet2d``): parameters and training memory computed from ``plan.network``."""
from __future__ import annotations

from typing import Any, Sequence

from deepwml.models.base import BACKWARD_TRANSIENTS, BYTES_FP32, NetworkSpec
from deepwml.models.registry import NORMS


def conv_parameters(c_in: int, c_out: int, k: int, bias: bool) -> int:
    """Weights (and bias) of one k×k convolution."""
    return c_in * c_out * k * k + (c_out if bias else 0)


def norm_parameters(norm: str, channels: int) -> int:
    """Learned scale and shift of a normalisation layer (none for 'none')."""
    return 0 if norm == "none" else 2 * channels


def block_parameters(c_in: int, c_out: int, convs: int, norm: str) -> int:
    """``convs`` × (3×3 convolution, normalisation)."""
    bias = NORMS.get(norm).conv_bias
    total = 0
    for _ in range(convs):
        total += conv_parameters(c_in, c_out, 3, bias) + norm_parameters(norm, c_out)
        c_in = c_out
    return total


def decoder_parameters(features: Sequence[int], convs: int, norm: str, deep_supervision: bool, out_channels: int = 1) -> int:
    """Transposed-convolution upsampling, decoder blocks, the 1×1 head and the deep-supervision heads."""
    total = 0
    for deep, shallow in zip(features[:0:-1], features[-2::-1]):
        total += deep * shallow * 4 + shallow
        total += block_parameters(2 * shallow, shallow, convs, norm)
    total += conv_parameters(features[0], out_channels, 1, True)
    if deep_supervision:
        total += sum(conv_parameters(f, out_channels, 1, True) for f in features[1:-1])
    return total


def decoder_floats(features: Sequence[int], pixels: float, convs: int, per_conv: int) -> float:
    """Floats autograd keeps in the decoder: per level the upsampled map, the concatenation (2×) and the convolutions."""
    floats = 0.0
    for level, width in enumerate(features[:-1]):
        floats += pixels / 4**level * (width + 2 * width + convs * per_conv * width)
    return floats


class UNet2DSpec(NetworkSpec):
    """Encoder level i: ``convs_per_block`` 3×3 convolutions (+ norm) + ReLU with ``features[i]`` channels, 2×2
    max-pooling between levels; transposed-convolution decoder with skip connections; a 1×1 logit head."""

    label = "U-Net"

    def parameter_count(self) -> int:
        """Exact: biases only where no normalisation follows, norm scales and shifts, deep-supervision heads."""
        net = self.plan
        total, c_in = 0, net.in_channels
        for width in net.features:
            total += block_parameters(c_in, width, net.convs_per_block, net.norm)
            c_in = width
        return total + decoder_parameters(net.features, net.convs_per_block, net.norm, net.deep_supervision, net.out_channels)

    def activation_bytes_per_sample(self, patch_size: Sequence[int]) -> int:
        """fp32 memory one sample needs for forward and backward (what autograd keeps, plus backward's transients).

        Calibrated with PyTorch 2.13 fp32 on CPU (extra peak RSS per extra sample, in-place ReLU): the paper's
        U-Net at 256² without norm measured 261 MiB (estimate 263); cpu_fast's 16-256 U-Net with instance norm at
        192² measured 78 MiB (estimate 76).
        """
        net = self.plan
        pixels = patch_size[0] * patch_size[1]
        # per convolution autograd keeps its output; a normalisation adds its normalised map and its output (ReLU in place)
        per_conv = 1 + NORMS.get(net.norm).saved_maps
        floats = 0.0
        deepest = len(net.features) - 1
        for level, width in enumerate(net.features):
            level_pixels = pixels / 4**level
            floats += level_pixels * net.convs_per_block * per_conv * width
            if level < deepest:
                # max-pooling output plus its int64 indices (two floats' worth), a quarter of the pixels
                floats += level_pixels / 4 * width * 3
        floats += decoder_floats(net.features, pixels, net.convs_per_block, per_conv)
        floats += pixels * (net.in_channels + net.out_channels)  # input and logits
        return int(floats * BYTES_FP32 * BACKWARD_TRANSIENTS)

    def build(self) -> Any:
        """The U-Net module."""
        from deepwml.models.unet2d import UNet2D

        net = self.plan
        return UNet2D(net.features, net.convs_per_block, net.norm, net.in_channels, net.deep_supervision, spec=self,
                      out_channels=net.out_channels)
