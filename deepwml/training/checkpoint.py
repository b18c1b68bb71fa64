"""Checkpoints (format in docs/CONTRACTS.md), written atomically: torch.save to a temporary file, then rename."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Dict, Union

import numpy as np
import torch

import deepwml
from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import DeepWMLError

LATEST = "checkpoint_latest.pth"
BEST = "checkpoint_best.pth"


def rng_state() -> Dict[str, Any]:
    """Python, numpy and torch generator states."""
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def save_checkpoint(path: Union[str, Path], checkpoint: Dict[str, Any]) -> None:
    """Write a checkpoint dict atomically (a reader never sees half a file, Ctrl-C leaves the old one)."""
    checkpoint = dict(checkpoint, deepwml_version=deepwml.__version__)
    with atomic_path(path, ".pth") as tmp:
        torch.save(checkpoint, tmp)


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a checkpoint onto the CPU, naming the file if it is missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise DeepWMLError("no checkpoint here to continue from; train without --continue first", path)
    try:
        # our own files hold numpy RNG states and plain dicts besides tensors
        return torch.load(path, map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, EOFError, ValueError) as e:
        raise DeepWMLError(f"unreadable checkpoint ({e})", path) from None


def check_same_plan(checkpoint: Dict[str, Any], plan_hash: str, path: Union[str, Path]) -> None:
    """A checkpoint may only be continued with the plan it was trained with."""
    if checkpoint.get("plan_hash") != plan_hash:
        name = (checkpoint.get("plan") or {}).get("name", "?")
        raise DeepWMLError(
            f"was trained with another plan (plan {name!r}, hash {str(checkpoint.get('plan_hash'))[:12]}) than the current "
            f"plans.json (hash {plan_hash[:12]}); train again without --continue or restore that plan",
            path,
        )


def model_state(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """state_dict of a model, unwrapped from DistributedDataParallel, in plain contiguous layout (portable)."""
    module = model.module if hasattr(model, "module") else model
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}
