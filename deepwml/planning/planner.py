"""The experiment planner: a preset plus the fingerprint gives the dataset's plans.json.

Dataset-derived values: the in-plane target spacing (median of the data, when the preset asks for
'target_spacing' and leaves it empty), the patch size (the fixed matrix, or the median resampled slice
rounded up to what the network can pool), the network depth (pool while the bottleneck stays at least
``MIN_BOTTLENECK`` pixels) and the batch size (as many samples as the memory budget holds).
"""
from __future__ import annotations

import copy
import math
from typing import Any, Dict, List, Sequence

import numpy as np

from deepwml.planning.fingerprint import fingerprint_hash
from deepwml.planning.plan import NetworkPlan, Plan
from deepwml.utils.errors import PlanError

#: stop pooling before a feature map would get smaller than this many pixels
MIN_BOTTLENECK = 8
BYTES_FP32 = 4
#: gradients alive at the same time during backward, relative to the stored activations (calibrated, see below)
BACKWARD_TRANSIENTS = 1.12
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


def round_up_patch(shape_hw: Sequence[float], poolings: int) -> List[int]:
    """Each side rounded up to a multiple of 2**poolings."""
    step = 2**poolings
    return [int(math.ceil(s / step) * step) for s in shape_hw]


def count_parameters(network: NetworkPlan) -> int:
    """Weights of the 2D U-Net with 3×3 convolutions, 2×2 transposed-convolution upsampling, 1×1 output."""
    f = network.features
    total = 0
    c_in = network.in_channels
    for width in f:
        total += _block_parameters(c_in, width, network.convs_per_block)
        c_in = width
    for deep, shallow in zip(f[:0:-1], f[-2::-1]):
        total += deep * shallow * 4 + shallow
        total += _block_parameters(2 * shallow, shallow, network.convs_per_block)
    return total + f[0] + 1


def _block_parameters(c_in: int, c_out: int, convs: int) -> int:
    """Weights and biases of ``convs`` 3×3 convolutions."""
    total = 0
    for _ in range(convs):
        total += c_in * c_out * 9 + c_out
        c_in = c_out
    return total


def activation_bytes_per_sample(network: NetworkPlan, patch_size: Sequence[int]) -> int:
    """fp32 memory one sample needs for forward and backward (what autograd keeps, plus backward's transients).

    Calibrated with PyTorch 2.13 fp32 on CPU (extra peak RSS per extra sample, in-place ReLU): the paper's
    U-Net at 256² without norm measured 261 MiB (estimate 263); cpu_fast's 16-256 U-Net with instance norm at
    192² measured 78 MiB (estimate 76).
    """
    pixels = patch_size[0] * patch_size[1]
    # per convolution autograd keeps its output; a normalisation adds its normalised map and its output (ReLU in place)
    per_conv = 1 + 2 * (network.norm != "none")
    floats = 0.0
    deepest = len(network.features) - 1
    for level, width in enumerate(network.features):
        level_pixels = pixels / 4**level
        floats += level_pixels * network.convs_per_block * per_conv * width
        if level < deepest:
            # max-pooling output plus its int64 indices (two floats' worth), a quarter of the pixels
            floats += level_pixels / 4 * width * 3
            # decoder: upsampled map, concatenation (2×), its convolutions
            floats += level_pixels * (width + 2 * width + network.convs_per_block * per_conv * width)
    floats += pixels * 2  # input and logits
    return int(floats * BYTES_FP32 * BACKWARD_TRANSIENTS)


def batch_size_for_budget(network: NetworkPlan, patch_size: Sequence[int], budget_gb: float, cap: int) -> int:
    """The largest batch (at most ``cap``, at least 1) whose estimated training memory fits the budget."""
    budget = budget_gb * 1024**3 * MEMORY_SAFETY - count_parameters(network) * BYTES_FP32 * PARAMETER_COPIES
    fits = int(budget // activation_bytes_per_sample(network, patch_size))
    return int(max(1, min(cap, fits)))


def plan_experiment(preset: Plan, fingerprint: Dict[str, Any]) -> Plan:
    """Fill the dataset-derived values of ``preset`` from ``fingerprint``; the result validates."""
    plan = copy.deepcopy(preset)
    summary = fingerprint["dataset_summary"]
    pp, net, tr = plan.preprocessing, plan.network, plan.training
    plan.dataset = fingerprint["dataset"]
    plan.fingerprint_hash = fingerprint_hash(fingerprint)
    max_poolings = len(net.features) - 1
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
    net.features = net.features[: poolings + 1]
    tr.patch_size = round_up_patch(slice_shape, poolings)
    tr.batch_size = batch_size_for_budget(net, tr.patch_size, tr.memory_budget_gb, cap=tr.batch_size)
    plan.data_summary = _data_summary(fingerprint, plan)
    problems = plan.problems()
    if problems:
        raise PlanError("the planned configuration is invalid: " + "; ".join(problems))
    return plan


def _data_summary(fingerprint: Dict[str, Any], plan: Plan) -> Dict[str, Any]:
    """What the planner saw, recorded in the plan for the reader (editing it changes nothing)."""
    s = fingerprint["dataset_summary"]
    return {
        "n_cases": fingerprint["n_cases"],
        "slice_axis_rule": "coarsest spacing; never resampled; reoriented to slice axis first (permutation/flips only)",
        "slice_axes": s["slice_axes"],
        "orientations": s["orientations"],
        "slice_thickness_range_mm": s["slice_thickness_range"],
        "median_inplane_spacing_mm": s["median_inplane_spacing"],
        "median_shape": s["median_shape"],
        "head_intensity_percentiles": s.get("head_intensity_percentiles"),
        "estimated_memory_per_sample_mb": round(activation_bytes_per_sample(plan.network, plan.training.patch_size) / 1024**2, 1),
        "parameters": count_parameters(plan.network),
    }
