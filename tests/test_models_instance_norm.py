"""The channels-last instance norm (issue #15): the same function as torch's layer, without layout conversions."""
from __future__ import annotations

import pytest
import torch

from deepwml.models.instance_norm import InstanceNorm2d


def _pair(channels: int = 6):
    """Our layer with random affine parameters and torch's layer holding the same state."""
    torch.manual_seed(0)
    ours = InstanceNorm2d(channels, affine=True)
    torch.nn.init.normal_(ours.weight)
    torch.nn.init.normal_(ours.bias)
    ref = torch.nn.InstanceNorm2d(channels, affine=True)
    ref.load_state_dict(ours.state_dict())
    return ours, ref


def test_channels_last_cpu_input_takes_group_norm_and_matches_torch_values_and_gradients():
    """A channels-last batch is normalised exactly as torch's InstanceNorm2d does (within fp32 rounding), forward and
    backward, and the output stays channels-last so the next convolution needs no conversion."""
    ours, ref = _pair()
    x = torch.randn(3, 6, 20, 28) * 4 + 3
    upstream = torch.randn(3, 6, 20, 28)
    x_cl = x.contiguous(memory_format=torch.channels_last).requires_grad_()
    x_ref = x.clone().requires_grad_()
    assert ours._fast_path(x_cl) and not ours._fast_path(x)
    y = ours(x_cl)
    assert y.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y, ref(x_ref), atol=1e-5, rtol=1e-5)
    (y * upstream).sum().backward()
    (ref(x_ref) * upstream).sum().backward()
    torch.testing.assert_close(x_cl.grad, x_ref.grad, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours.weight.grad, ref.weight.grad, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("layout", ["nchw", "no_affine"])
def test_other_inputs_keep_torchs_own_layer(layout):
    """NCHW inputs and layers without affine parameters run torch's layer unchanged (bit for bit)."""
    ours, ref = _pair()
    if layout == "no_affine":
        ours, ref = InstanceNorm2d(6), torch.nn.InstanceNorm2d(6)
    x = torch.randn(2, 6, 9, 11)
    if layout == "no_affine":
        x = x.contiguous(memory_format=torch.channels_last)
    assert not ours._fast_path(x)
    assert torch.equal(ours(x), ref(x))


def test_state_dict_is_torchs():
    """Checkpoints written with torch's InstanceNorm2d load into networks built with ours and back."""
    ours, ref = _pair()
    assert ours.state_dict().keys() == ref.state_dict().keys()
    assert isinstance(ours, torch.nn.InstanceNorm2d)


@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
def test_under_cpu_bf16_autocast_the_norm_computes_in_fp32_and_gradients_reach_the_bf16_input(layout):
    """bf16 training on a CPU (autocast) normalises in fp32, where torch's CPU norm kernels are several times faster
    than on bf16 maps: the output is fp32 and equals the fp32 layer on the same (bf16-rounded) maps, and the gradient
    reaches the bf16 input as bf16 so the convolution before it trains as usual."""
    ours, ref = _pair()
    memory = torch.channels_last if layout == "channels_last" else torch.contiguous_format
    x = (torch.randn(2, 6, 16, 12) * 3 + 1).to(torch.bfloat16).contiguous(memory_format=memory).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = ours(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, ref(x.detach().float()), atol=1e-5, rtol=1e-5)
    y.sum().backward()
    assert x.grad is not None and x.grad.dtype == torch.bfloat16 and ours.weight.grad is not None


def test_a_network_cast_to_bf16_keeps_its_norms_in_bf16():
    """A layer whose own weights are bf16 (model.bfloat16(), not autocast) is not upcast: its input and weights
    stay one dtype."""
    ours, _ = _pair()
    ours = ours.bfloat16()
    x = torch.randn(2, 6, 8, 8, dtype=torch.bfloat16).contiguous(memory_format=torch.channels_last)
    assert ours(x).dtype == torch.bfloat16
