"""Int8 inference of a fold network on the CPU (issue #15): quantised at prediction time, kept only where it pays.

The network is quantised from its fp32 weights in memory (torch.ao FX graph mode, static, x86/fbgemm backend:
int8 weights per output channel, uint8 activations); a quantised module is never written or read, so nothing
beyond the weights-only checkpoint is ever loaded. Static quantisation needs the activations' ranges: they are
observed on a calibration batch of the slices being predicted (spread over the first case's head), and the same
batch decides. The int8 network replaces the fp32 one for the rest of the run only when its masks agree with
the fp32 masks at Dice >= MIN_DICE on that batch and, in mode ``auto``, it is at least MIN_SPEEDUP times faster
there; ``on`` skips the speed condition but never the agreement. ``off`` never quantises.

Only plain CPU fp32 inference of networks made of the layers in QUANTIZABLE (convolutions, transposed
convolutions, ReLU, max-pooling, batch norm, identity: the paper's U-Net) qualifies; anything else (instance
norm, CUDA, bf16 autocast, a graph FX cannot trace, a torch without the quantised engine) stays fp32.

torch 2.13 still ships torch.ao.quantization but marks it deprecated (it names torchao's pt2e API as its
successor); the warnings are silenced here and any failure of the path is a fall-back to fp32, never an error.
"""
from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from deepwml.inference.int8_mode import INT8_MODES, check_mode  # noqa: F401 - part of this module's interface
from deepwml.training.device import DeviceSetup

#: the int8 masks must agree with the fp32 masks at least this well on the calibration batch
MIN_DICE = 0.99
#: ``auto`` keeps int8 only when it computes the calibration batch at least this many times faster
MIN_SPEEDUP = 1.5
#: ``auto`` does not try int8 for a run of fewer (head) slices: calibrating costs about three fp32 batches
MIN_RUN_SLICES = 64
#: slices of the first stack the activation ranges are observed on (at least; more when the plan's batch is larger)
CALIBRATION_SLICES = 8
#: leaf layers the quantised graph can hold (an empty container, e.g. no deep-supervision heads, holds nothing)
QUANTIZABLE = (nn.Conv2d, nn.ConvTranspose2d, nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d, nn.Identity,
               nn.Sequential, nn.ModuleList, nn.ModuleDict)


@dataclass
class Int8Decision:
    """What the calibration batch said about one fold network."""

    fold: int
    use_int8: bool
    dice: float = float("nan")
    speedup: float = float("nan")
    slices: int = 0
    #: why the network stays fp32 ('' when it computes in int8)
    reason: str = ""

    def describe(self) -> str:
        """One line for the log."""
        measured = f"mask Dice {self.dice:.4f} vs fp32, {self.speedup:.2f}x the fp32 speed on {self.slices} calibration slices"
        if self.use_int8:
            return f"fold network {self.fold + 1} computes in int8 ({measured})"
        return f"fold network {self.fold + 1} stays fp32: {self.reason}" + (f" ({measured})" if self.slices else "")


def unsupported_reason(networks: Sequence[nn.Module], setup: DeviceSetup) -> Optional[str]:
    """Why these networks cannot compute in int8 in this setup; None when they may try."""
    if setup.device.type != "cpu":
        return f"int8 runs on the CPU only, this run uses {setup.device}"
    if setup.amp_dtype is not None:
        return "this run computes in bf16 autocast (int8 replaces fp32 only)"
    if "x86" not in torch.backends.quantized.supported_engines and "fbgemm" not in torch.backends.quantized.supported_engines:
        return "this torch has no x86/fbgemm quantised engine"
    for net in networks:
        other = sorted({type(m).__name__ for m in net.modules() if not list(m.children()) and not isinstance(m, QUANTIZABLE)})
        if other:
            return f"the network has layers int8 does not cover ({', '.join(other)})"
    return None


def _qconfig_mapping(fp32_layers: Sequence[str] = ()):
    """x86 defaults (per-channel int8 weights, uint8 activations with the range reduced to 7 bits for AVX2's 16-bit
    accumulation), with min/max activation observers: a histogram observer makes the calibration pass about twice
    as slow as an fp32 pass, and one batch gives it little to work with.

    Some layers stay fp32. Transposed convolutions: torch 2.13's x86/fbgemm int8 ConvTranspose2d returned wrong
    values here (relative error 2-3.5 against fp32 on its own, trained or random weights), and they are cheap (2×2
    kernels). ``fp32_layers``, the layers reading the input and writing the output: a z-scored image quantised to
    7 bits around zero and logits quantised to 7 bits (a toy U-Net's span -60..20, a step of 0.6 at the threshold)
    both move the mask's edges, and a convolution with one input or one output channel costs little.
    """
    from torch.ao.quantization import QConfig, get_default_qconfig_mapping
    from torch.ao.quantization.observer import MinMaxObserver

    mapping = get_default_qconfig_mapping("x86")
    default = mapping.global_qconfig
    observer = MinMaxObserver.with_args(dtype=torch.quint8, reduce_range=True)
    for kind, qconfig in list(mapping.object_type_qconfigs.items()):
        if qconfig is not None and qconfig.activation is default.activation:
            mapping.set_object_type(kind, QConfig(activation=observer, weight=qconfig.weight))
    mapping.set_global(QConfig(activation=observer, weight=default.weight)).set_object_type(nn.ConvTranspose2d, None)
    for name in fp32_layers:
        mapping.set_module_name(name, None)
    return mapping


def _edge_layers(graph: torch.fx.GraphModule) -> List[str]:
    """Names of the layers that read the network's input or whose result it returns (the U-Net's first convolution
    and 1×1 head)."""
    nodes = list(graph.graph.nodes)
    inputs = [user for node in nodes if node.op == "placeholder" for user in node.users]
    outputs = [node.args[0] for node in nodes if node.op == "output"]
    return [n.target for n in inputs + outputs if isinstance(n, torch.fx.Node) and n.op == "call_module"]


def _without_identities(net: nn.Module) -> torch.fx.GraphModule:
    """The traced network without its nn.Identity layers (norm 'none'), so that each convolution meets its ReLU
    and the pair fuses into one int8 kernel."""
    graph = torch.fx.symbolic_trace(net)
    for node in list(graph.graph.nodes):
        if node.op == "call_module" and isinstance(graph.get_submodule(node.target), nn.Identity):
            node.replace_all_uses_with(node.args[0])
            graph.graph.erase_node(node)
    graph.graph.lint()
    graph.recompile()
    graph.delete_all_unused_submodules()
    return graph


def quantize(net: nn.Module, calibration: torch.Tensor) -> nn.Module:
    """An int8 copy of the eval-mode fp32 ``net``, its activation ranges observed on ``calibration``; ``net`` is
    left as it is. Raises whatever torch raises when the graph cannot be traced or quantised."""
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    with warnings.catch_warnings():
        # torch.ao.quantization's deprecation notices are not the user's to act on
        warnings.simplefilter("ignore")
        graph = _without_identities(copy.deepcopy(net).eval())
        prepared = prepare_fx(graph, _qconfig_mapping(_edge_layers(graph)), (calibration,))
        with torch.no_grad():
            prepared(calibration)
        quantized = convert_fx(prepared)
        # the first call of a quantised network is several times slower than the next (one-off set-up); one slice
        # pays for it, so that the timing below compares like with like
        with torch.inference_mode():
            quantized(calibration[:1])
    return quantized


def agreement(reference: np.ndarray, other: np.ndarray) -> float:
    """Dice of two masks or label maps over their foreground (equal non-zero labels); 1.0 when both are empty."""
    total = np.count_nonzero(reference) + np.count_nonzero(other)
    if total == 0:
        return 1.0
    return 2.0 * float(np.count_nonzero((reference == other) & (reference != 0))) / total


def _timed(fn: Callable[[], torch.Tensor]) -> Tuple[torch.Tensor, float]:
    """fn()'s result (computed under inference mode) and its wall time in seconds."""
    start = time.perf_counter()
    with torch.inference_mode():
        result = fn()
    return result, time.perf_counter() - start


def choose(
    net: nn.Module,
    fold: int,
    batch: torch.Tensor,
    probabilities: Callable[[nn.Module, torch.Tensor], torch.Tensor],
    to_mask: Callable[[torch.Tensor], np.ndarray],
    mode: str,
) -> Tuple[nn.Module, Int8Decision]:
    """The network to predict with (``net`` or its int8 copy) and the decision, from ``batch`` (network input):
    fp32 and int8 probabilities of it, their masks' agreement and their times."""
    _timed(lambda: probabilities(net, batch[:1]))  # the same one-slice warm-up as the int8 network's
    reference, fp32_seconds = _timed(lambda: probabilities(net, batch))
    try:
        quantized = quantize(net, batch)
    except Exception as e:  # noqa: BLE001 - a graph torch cannot quantise is simply computed in fp32
        return net, Int8Decision(fold, False, reason=f"quantisation failed ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
    result, int8_seconds = _timed(lambda: probabilities(quantized, batch))
    decision = Int8Decision(fold, False, agreement(to_mask(reference), to_mask(result)),
                            fp32_seconds / max(int8_seconds, 1e-9), len(batch))
    if decision.dice < MIN_DICE:
        decision.reason = f"its masks do not agree with fp32 at Dice >= {MIN_DICE}"
    elif mode == "auto" and decision.speedup < MIN_SPEEDUP:
        decision.reason = f"int8 is not {MIN_SPEEDUP}x faster here"
    else:
        decision.use_int8 = True
        return quantized, decision
    return net, decision
