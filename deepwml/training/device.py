"""Where and in which precision training runs.

CUDA: automatic mixed precision, bf16 when the GPU has it, else fp16 with a GradScaler. CPU: bf16 autocast only
when the CPU computes bf16 natively (AMX-BF16 or AVX512-BF16); without those, oneDNN emulates bf16 and a
training step is several times *slower* than fp32 (measured on an AVX2-only EPYC: 8.4× slower), so fp32 is kept.
Convolutions run in channels_last on CPU (measured 2.3× faster than NCHW for the cpu_fast network).
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Optional

import torch

from deepwml.utils.cpu import BF16_CPU_FLAGS, cpu_flags, physical_cores, threads_restored  # noqa: F401 - their old home
from deepwml.utils.errors import DeepWMLError


@dataclass
class DeviceSetup:
    """The device and precision of one training process."""

    device: torch.device
    amp_dtype: Optional[torch.dtype]  # None: fp32
    channels_last: bool
    threads: int

    @property
    def uses_scaler(self) -> bool:
        """fp16 needs loss scaling; bf16 and fp32 do not."""
        return self.amp_dtype == torch.float16

    def autocast(self) -> ContextManager:
        """Autocast context for forward passes (a no-op in fp32)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def describe(self) -> str:
        """One line for the log."""
        precision = {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast + GradScaler"}[self.amp_dtype]
        layout = ", channels_last" if self.channels_last else ""
        threads = f", {self.threads} thread{'s' if self.threads != 1 else ''}" if self.device.type == "cpu" else ""
        return f"{self.device} ({precision}{layout}{threads})"


def cpu_has_native_bf16() -> bool:
    """True when this CPU computes bf16 in hardware and PyTorch's oneDNN backend can use it."""
    return torch.backends.mkldnn.is_available() and bool(cpu_flags() & set(BF16_CPU_FLAGS))


def setup_device(requested: str = "auto", allow_bf16: bool = True, local_rank: int = 0, local_world_size: int = 1,
                 threads: Optional[int] = None) -> DeviceSetup:
    """Resolve --device (auto|cpu|cuda|cuda:N) and pick precision, memory layout and (CPU) thread count."""
    requested = (requested or "auto").lower()
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeepWMLError("--device cuda was asked for, but PyTorch sees no CUDA device (use --device cpu or auto)")
        index = int(requested.split(":", 1)[1]) if ":" in requested else local_rank
        device = torch.device("cuda", index)
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        amp = torch.bfloat16 if allow_bf16 and torch.cuda.is_bf16_supported() else torch.float16
        return DeviceSetup(device, amp, channels_last=False, threads=torch.get_num_threads())
    if requested != "cpu":
        raise DeepWMLError(f"--device must be auto, cpu, cuda or cuda:N, got {requested!r}")
    # the ranks of a CPU DDP run share the machine's cores
    threads = threads or max(1, physical_cores() // max(1, local_world_size))
    torch.set_num_threads(threads)
    amp = torch.bfloat16 if allow_bf16 and cpu_has_native_bf16() else None
    return DeviceSetup(torch.device("cpu"), amp, channels_last=True, threads=threads)


def make_scaler(setup: DeviceSetup) -> torch.amp.GradScaler:
    """A GradScaler that is active only for fp16 (its state is saved in checkpoints either way)."""
    return torch.amp.GradScaler(setup.device.type, enabled=setup.uses_scaler)
