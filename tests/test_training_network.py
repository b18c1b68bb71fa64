"""The U-Net built from plan.network: the paper's size, shapes, normalisation and deep supervision."""
from __future__ import annotations

import pytest
import torch

from deepwml.planning.plan import NetworkPlan, load_preset
from deepwml.training.network import build_network, count_parameters


def test_paper_network_has_the_papers_31_million_parameters():
    net = build_network(load_preset("paper").network)
    # the classic U-Net 64…1024 with two 3×3 convolutions per block: 31.03 M
    assert 30.9e6 < count_parameters(net) < 31.1e6


@pytest.mark.parametrize("norm", ["none", "batch", "instance", "batch_deep_instance"])
@pytest.mark.parametrize("convs", [1, 3])
def test_output_is_one_logit_channel_at_input_size(norm, convs):
    net = build_network(NetworkPlan(features=[4, 8, 16], convs_per_block=convs, norm=norm))
    out = net(torch.randn(2, 1, 32, 48))
    assert out.shape == (2, 1, 32, 48)
    norms = [m for m in net.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d))]
    assert len(norms) == (0 if norm == "none" else convs * 5)  # 3 encoder + 2 decoder blocks


@pytest.mark.parametrize("architecture", ["unet2d", "resenc_unet2d"])
def test_batch_deep_instance_normalises_the_two_coarsest_levels_per_slice_and_the_finer_ones_with_batch_norm(architecture):
    """At the 1/8 and 1/16 levels (encoder and decoder) instance norm, which sees the whole slice; batch norm above."""
    net = build_network(NetworkPlan(architecture=architecture, features=[4, 8, 16, 32, 64], norm="batch_deep_instance"))
    kinds = {}
    for name, m in net.named_modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.InstanceNorm2d)):
            part, level = name.split(".")[:2] if not name.startswith("stem") else ("encoder", "0")
            # decoder block k sits at level depth - 2 - k
            level = int(level) if part == "encoder" else 5 - 2 - int(level)
            kinds.setdefault((part, level), set()).add(type(m).__name__)
    assert {k: v for k, v in kinds.items() if v == {"InstanceNorm2d"}}.keys() == {("encoder", 3), ("encoder", 4),
                                                                                    ("decoder", 3)}
    assert all(v == {"BatchNorm2d"} for k, v in kinds.items() if k[1] < 3)


def test_depth_and_convolutions_follow_the_plan():
    net = build_network(NetworkPlan(features=[4, 8, 16, 32], convs_per_block=3))
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == 3 * (4 + 3)
    assert all(c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules()) == 3


def test_deep_supervision_returns_coarser_heads_only_when_switched_on():
    net = build_network(NetworkPlan(features=[4, 8, 16, 32], deep_supervision=True))
    x = torch.randn(1, 1, 64, 64)
    assert net(x).shape == (1, 1, 64, 64)  # prediction always gets one tensor
    net.return_deep_supervision = True
    shapes = [o.shape[-1] for o in net(x)]
    assert shapes == [64, 32, 16]
    assert net.eval()(x).shape == (1, 1, 64, 64)  # validation and prediction run in eval mode


def test_channels_last_gives_the_same_logits():
    torch.manual_seed(0)
    net = build_network(NetworkPlan(features=[4, 8], norm="instance")).eval()
    x = torch.randn(2, 1, 16, 16)
    ref = net(x)
    net_cl = net.to(memory_format=torch.channels_last)
    out = net_cl(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(ref, out, atol=1e-5)
