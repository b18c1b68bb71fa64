"""DistributedDataParallel under torchrun (single or multi node, from its environment variables).

Each rank trains on its own share of the plan's batch (global batch = ``plan.training.batch_size``), draws its
own data (the rank is part of every batch's seed), and DDP averages the gradients. Only rank 0 validates and
writes files; the other ranks wait at a barrier. Backend: nccl on CUDA, gloo on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, List

import torch
import torch.distributed as dist

from deepwml.utils.errors import DeepWMLError


@dataclass
class DistContext:
    """Rank and world size of this process (1 process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """The process that validates and writes."""
        return self.rank == 0


def context_from_env() -> DistContext:
    """Read torchrun's RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE (defaults: one process)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return DistContext(
        rank=int(os.environ.get("RANK", "0")),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        local_world_size=int(os.environ.get("LOCAL_WORLD_SIZE", str(world))),
    )


def init_process_group(ctx: DistContext, cuda: bool) -> None:
    """Join the torchrun process group (nothing to do for a single process)."""
    if not ctx.enabled or dist.is_initialized():
        return
    # validation on rank 0 can take minutes for a large validation set; the others wait at a barrier meanwhile
    dist.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(hours=2))


def local_batch_size(global_batch: int, ctx: DistContext) -> int:
    """This rank's share of the global batch (the first ``global % world`` ranks take one more)."""
    if global_batch < ctx.world_size:
        raise DeepWMLError(
            f"the plan's batch size {global_batch} is smaller than the number of processes {ctx.world_size}; "
            "use fewer processes or a larger training.batch_size"
        )
    return global_batch // ctx.world_size + int(ctx.rank < global_batch % ctx.world_size)


def wrap_model(model: torch.nn.Module, ctx: DistContext, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when running under torchrun."""
    if not ctx.enabled:
        return model
    ids = [device.index] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


def barrier(ctx: DistContext) -> None:
    """Wait for every rank."""
    if ctx.enabled:
        dist.barrier()


def broadcast_object(obj: Any, ctx: DistContext) -> Any:
    """Rank 0's ``obj`` on every rank (e.g. the checkpoint to resume from, also across nodes without shared disk)."""
    if not ctx.enabled:
        return obj
    box: List[Any] = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_ranks(value: float, ctx: DistContext) -> float:
    """The average of a number over all ranks (the logged training loss)."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        t = t.cuda()
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def shutdown(ctx: DistContext) -> None:
    """Leave the process group."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()
