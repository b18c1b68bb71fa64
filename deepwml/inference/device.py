"""Device and precision for prediction (minimal; training has no shared device helper yet)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from deepwml.utils.errors import DeepWMLError


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' (CUDA when present, else CPU), 'cpu', 'cuda' or 'cuda:N'; an absent GPU is a clear error."""
    name = (name or "auto").lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise DeepWMLError(f"--device {name}: no CUDA GPU is available to this PyTorch build; use --device cpu")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeepWMLError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) present")
        return device
    raise DeepWMLError(f"--device must be auto, cpu, cuda or cuda:N, got {name!r}")


def cpu_has_fast_bf16() -> bool:
    """True when the CPU computes bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than fp32."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, p, lambda: False)()) for p in probes)


@dataclass(frozen=True)
class Precision:
    """Autocast settings for one device."""

    device_type: str
    dtype: torch.dtype
    enabled: bool

    @property
    def name(self) -> str:
        """'bf16', 'fp16' or 'fp32'."""
        if not self.enabled:
            return "fp32"
        return {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]

    def autocast(self) -> torch.autocast:
        """The autocast context for the forward pass."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


def choose_precision(device: torch.device, allow_reduced: bool = True, force_bf16: bool = False) -> Precision:
    """bf16 autocast on CPUs with hardware bf16 (or when forced), AMP fp16 on CUDA, else fp32."""
    if device.type == "cuda":
        return Precision("cuda", torch.float16, allow_reduced)
    enabled = allow_reduced and (force_bf16 or cpu_has_fast_bf16())
    return Precision("cpu", torch.bfloat16, enabled)


def available_cpus() -> int:
    """CPUs this process may run on (respects affinity masks of cluster schedulers)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS
        return max(1, os.cpu_count() or 1)
