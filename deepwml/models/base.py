"""What every stage needs to know about a network, answered by the network's own family.

A network family registers a :class:`NetworkSpec` subclass in ``deepwml.models.NETWORKS``. The spec is made from
``plan.network`` without torch (the plan validates with it, the planner sizes patches and batches with it) and
builds the ``nn.Module``; the module carries its spec, so the trainer, the predictor and validation ask the
network itself (:class:`DescribedNetwork`) for its input, its size multiple, whether cropping is safe and its
memory per sample instead of recomputing them from the plan.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, List, Sequence

from deepwml.models.registry import NETWORKS, NORMS

if TYPE_CHECKING:  # pragma: no cover
    from deepwml.planning.plan import NetworkPlan

BYTES_FP32 = 4
#: gradients alive at the same time during backward, relative to the stored activations (calibrated on the U-Net,
#: see deepwml.models.unet2d_spec)
BACKWARD_TRANSIENTS = 1.12
#: what stands in for the neighbours of the first and last slice in 2.5D input
CONTEXT_PADDINGS = ("edge", "zero")


@dataclass(frozen=True)
class InputSpec:
    """What one sample fed to the network holds."""

    #: image channels per slice (FLAIR only: 1)
    channels: int = 1
    #: neighbouring slices stacked as channels (1: plain 2D); channel-major: image channel c, slice offset
    #: j in -(k-1)/2 .. (k-1)/2 is input channel c * k + j + (k-1)/2 (deepwml.preprocessing.network_input)
    context_slices: int = 1
    #: 'edge' (the end slice repeated) or 'zero' beyond the ends of the stack
    padding: str = "edge"

    @property
    def in_channels(self) -> int:
        """Channels of the network's input tensor."""
        return self.channels * self.context_slices


class NetworkSpec:
    """A network family's answers for one ``plan.network``; subclasses implement the abstract parts."""

    #: one word for the log ("U-Net", "ResEnc U-Net")
    label = "network"

    def __init__(self, plan: "NetworkPlan") -> None:
        self.plan = plan

    # ---- validation ---------------------------------------------------------------------------------------
    def problems(self) -> List[str]:
        """Every setting of ``plan.network`` this family cannot build (empty: fine)."""
        p: List[str] = []
        net = self.plan
        if len(net.features) < 2 or min(net.features) < 1:
            p.append(f"network.features must list at least two positive widths, got {net.features}")
        message = NORMS.problem(net.norm)
        if message:
            p.append(message)
        if net.convs_per_block < 1:
            p.append("network.convs_per_block must be >= 1")
        k = net.context_slices
        if k < 1 or k % 2 == 0:
            p.append(f"network.context_slices must be an odd number >= 1 (the slice and as many neighbours on either side), got {k}")
        elif net.in_channels < 1 or net.in_channels % k:
            p.append(f"network.in_channels must be a positive multiple of network.context_slices {k}, got {net.in_channels}")
        if net.context_padding not in CONTEXT_PADDINGS:
            p.append(f"network.context_padding must be one of {', '.join(CONTEXT_PADDINGS)}, got {net.context_padding!r}")
        unknown = sorted(set(net.options) - set(self.option_names()))
        if unknown:
            known = ", ".join(self.option_names()) or "none"
            p.append(f"network.options {', '.join(unknown)} not known to {net.architecture} (known: {known})")
        return p

    def option_names(self) -> Sequence[str]:
        """Keys this family reads from ``network.options``."""
        return ()

    # ---- what the other stages ask ------------------------------------------------------------------------
    @property
    def input_spec(self) -> InputSpec:
        """The sample the network takes."""
        k = self.plan.context_slices
        return InputSpec(channels=self.plan.in_channels // k, context_slices=k, padding=self.plan.context_padding)

    @property
    def size_multiple(self) -> int:
        """Height and width of an input must divide by this."""
        return 2**self.poolings

    @property
    def num_classes(self) -> int:
        """Classes including background (2: binary, one sigmoid logit; more: softmax over ``out_channels``)."""
        return self.plan.num_classes

    @property
    def out_channels(self) -> int:
        """Logit channels of the head."""
        return self.plan.out_channels

    @property
    def poolings(self) -> int:
        """Downsampling steps by two."""
        return len(self.plan.features) - 1

    @property
    def crop_safe(self) -> bool:
        """Whether predicting a crop of a slice gives the values of the whole slice."""
        return NORMS.get(self.plan.norm).crop_safe

    def max_poolings(self) -> int:
        """The most downsampling steps the plan's network allows (the planner may use fewer)."""
        return len(self.plan.features) - 1

    def with_poolings(self, poolings: int) -> "NetworkPlan":
        """A copy of the network plan with ``poolings`` downsampling steps (the planner's depth rule)."""
        return dataclasses.replace(self.plan, features=list(self.plan.features[: poolings + 1]))

    def parameter_count(self) -> int:
        """Trainable weights of the built network."""
        raise NotImplementedError

    def activation_bytes_per_sample(self, patch_size: Sequence[int]) -> int:
        """fp32 memory one sample of ``patch_size`` needs for forward and backward."""
        raise NotImplementedError

    def build(self) -> Any:
        """The ``nn.Module`` (a :class:`DescribedNetwork`), mapping [B, in_channels, H, W] to logits [B, out_channels, H, W]."""
        raise NotImplementedError

    def describe(self) -> str:
        """One line for the log."""
        return f"{self.label} {self.plan.features}, norm {self.plan.norm}"


class DescribedNetwork:
    """Mixin of every registered ``nn.Module``: it answers from the spec it was built from."""

    spec: NetworkSpec

    @property
    def input_spec(self) -> InputSpec:
        """The sample the network takes."""
        return self.spec.input_spec

    @property
    def size_multiple(self) -> int:
        """Height and width of an input must divide by this."""
        return self.spec.size_multiple

    @property
    def crop_safe(self) -> bool:
        """Whether predicting a crop of a slice gives the values of the whole slice."""
        return self.spec.crop_safe

    @property
    def num_classes(self) -> int:
        """Classes including background (2: binary, sigmoid; more: softmax)."""
        return self.spec.num_classes

    def memory_per_sample(self, patch_size: Sequence[int]) -> int:
        """fp32 bytes one training sample of ``patch_size`` needs (forward + backward)."""
        return self.spec.activation_bytes_per_sample(patch_size)


def network_spec(plan: "NetworkPlan") -> NetworkSpec:
    """The registered family's spec for ``plan.network`` (a PlanError names an unknown architecture)."""
    return NETWORKS.get(plan.architecture)(plan)


def build_network(plan: "NetworkPlan") -> Any:
    """The network ``plan.network`` describes."""
    return network_spec(plan).build()

