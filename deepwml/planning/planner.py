"""The experiment planner: a preset plus the fingerprint gives the dataset's plans.json.

Dataset-derived values: the in-plane target spacing (median of the data, when the preset asks for
'target_spacing' and leaves it empty), the patch size (the fixed matrix, or the median resampled slice
rounded up to the network's size multiple), the network depth (pool while the bottleneck stays at least
``MIN_BOTTLENECK`` pixels) and the batch size (as many samples as the memory budget holds). What a network
needs (parameters, memory per sample, size multiple, how to make it shallower) is asked from its family in
``deepwml.models``, never computed here.
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Sequence

import numpy as np

from deepwml.models.base import BYTES_FP32, network_spec
from deepwml.planning.fingerprint import fingerprint_hash
from deepwml.planning.plan import NetworkPlan, Plan
from deepwml.utils.errors import PlanError

#: stop pooling before a feature map would get smaller than this many pixels
MIN_BOTTLENECK = 8
#: Adam keeps weights, gradients and two moments
PARAMETER_COPIES = 4
#: the allocator, cuDNN/oneDNN workspaces and the data loader need headroom beyond the estimate
MEMORY_SAFETY = 0.8


def n_poolings(patch_size: Sequence[int], max_poolings: int) -> int:
    """Poolings the patch allows: the smallest side must stay at least MIN_BOTTLENECK pixels."""
    smallest = min(patch_size)
    if smallest < MIN_BOTTLENECK:
        return 0
    return int(min(max_poolings, math.floor(math.log2(smallest / MIN_BOTTLENECK))))


def round_up_patch(shape_hw: Sequence[float], multiple: int) -> List[int]:
    """Each side rounded up to a multiple of ``multiple`` (the network's size multiple)."""
    return [int(math.ceil(s / multiple) * multiple) for s in shape_hw]


def count_parameters(network: NetworkPlan) -> int:
    """Trainable weights of the network ``plan.network`` describes (its family counts them)."""
    return network_spec(network).parameter_count()


def activation_bytes_per_sample(network: NetworkPlan, patch_size: Sequence[int]) -> int:
    """fp32 memory one sample needs for forward and backward (its family's estimate, see deepwml.models)."""
    return network_spec(network).activation_bytes_per_sample(patch_size)


def batch_size_for_budget(network: NetworkPlan, patch_size: Sequence[int], budget_gb: float, cap: int) -> int:
    """The largest batch (at most ``cap``, at least 1) whose estimated training memory fits the budget."""
    spec = network_spec(network)
    budget = budget_gb * 1024**3 * MEMORY_SAFETY - spec.parameter_count() * BYTES_FP32 * PARAMETER_COPIES
    fits = int(budget // spec.activation_bytes_per_sample(patch_size))
    return int(max(1, min(cap, fits)))


#: the built-in loss of the other kind of plan: the planner gives a multi-class dataset the softmax counterpart of a
#: binary preset's loss, and a binary dataset the sigmoid counterpart of a multi-class preset's
LOSS_FOR_CLASSES = {"bce_dice": "ce_dice", "bce": "ce", "ce_dice": "bce_dice", "ce": "bce"}


def plan_experiment(preset: Plan, fingerprint: Dict[str, Any], num_classes: int = 2) -> Plan:
    """Fill the dataset-derived values of ``preset`` from ``fingerprint`` and the dataset's number of classes
    (dataset.json "labels" without ignore); the result validates."""
    plan = copy.deepcopy(preset)
    summary = fingerprint["dataset_summary"]
    pp, net, tr = plan.preprocessing, plan.network, plan.training
    if (num_classes > 2) != (net.num_classes > 2) and tr.loss in LOSS_FOR_CLASSES:
        tr.loss = LOSS_FOR_CLASSES[tr.loss]
    net.num_classes = num_classes
    plan.dataset = fingerprint["dataset"]
    plan.fingerprint_hash = fingerprint_hash(fingerprint)
    pp.channels = plan_channels(fingerprint, pp.normalization, pp.channels)
    net.in_channels = plan.n_channels * net.context_slices
    max_poolings = network_spec(net).max_poolings()
    if pp.inplane_mode == "fixed_matrix":
        slice_shape = list(pp.matrix)
    else:
        if pp.target_spacing is None:
            pp.target_spacing = [float(s) for s in summary["median_inplane_spacing"]]
        fov = np.asarray(summary["median_shape"][1:], dtype=float) * np.asarray(summary["median_inplane_spacing"], dtype=float)
        slice_shape = (fov / np.asarray(pp.target_spacing, dtype=float)).tolist()
    poolings = n_poolings(slice_shape, max_poolings)
    if poolings < 1:
        raise PlanError(f"slices of {slice_shape} pixels are too small for a U-Net (need at least {2 * MIN_BOTTLENECK} pixels)")
    plan.network = net = network_spec(net).with_poolings(poolings)
    tr.patch_size = round_up_patch(slice_shape, network_spec(net).size_multiple)
    tr.batch_size = batch_size_for_budget(net, tr.patch_size, tr.memory_budget_gb, cap=tr.batch_size)
    plan.data_summary = _data_summary(fingerprint, plan)
    problems = plan.problems()
    if problems:
        raise PlanError("the planned configuration is invalid: " + "; ".join(problems))
    return plan


def plan_channels(fingerprint: Dict[str, Any], scheme: str, preset_channels: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """preprocessing.channels for the data's channel_names: empty for FLAIR alone (the plan stays as before channels
    existed); else one entry per channel, the preset's scheme for a channel it names, otherwise ``scheme``."""
    names = fingerprint.get("channel_names") or {"0": "FLAIR"}
    if names == {"0": "FLAIR"}:
        return []
    chosen = {c.get("name"): c.get("normalization") for c in preset_channels}
    ordered = [names[str(i)] for i in range(len(names))]
    return [{"name": name, "normalization": scheme if i == 0 else chosen.get(name, scheme)} for i, name in enumerate(ordered)]


def _data_summary(fingerprint: Dict[str, Any], plan: Plan) -> Dict[str, Any]:
    """What the planner saw, recorded in the plan for the reader (editing it changes nothing)."""
    s = fingerprint["dataset_summary"]
    return {
        "n_cases": fingerprint["n_cases"],
        "slice_axis_rule": "coarsest spacing (a 3D scan: the axis nearest the head's long axis); never resampled; reoriented to slice axis first (permutation/flips only)",
        "slice_axes": s["slice_axes"],
        "orientations": s["orientations"],
        "slice_thickness_range_mm": s["slice_thickness_range"],
        "median_inplane_spacing_mm": s["median_inplane_spacing"],
        "median_shape": s["median_shape"],
        "head_intensity_percentiles": s.get("head_intensity_percentiles"),
        "estimated_memory_per_sample_mb": round(activation_bytes_per_sample(plan.network, plan.training.patch_size) / 1024**2, 1),
        "parameters": count_parameters(plan.network),
    }
