"""Checkpoints (format in docs/CONTRACTS.md): tensors and plain Python values only, written atomically, and read
with torch's weights-only unpickler, so that loading a file never runs code from it, whoever made the file."""
from __future__ import annotations

import pickle
import random
import re
from pathlib import Path
from typing import Any, Dict, List, Union

import numpy as np
import torch

import deepwml
from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import DeepWMLError

LATEST = "checkpoint_latest.pth"
BEST = "checkpoint_best.pth"
#: what --continue needs besides the weights
RESUME_KEYS = ("model", "optimizer", "epoch", "rng", "plan_hash")
REFUSED = (
    "holds pickled objects other than tensors and plain values ({what}); DeepWML never unpickles code, so the file "
    "is refused: use a checkpoint written by deepwml_train or a model exported with deepwml_export_model"
)


def rng_state() -> Dict[str, Any]:
    """Python, numpy and torch generator states, as tuples, ints, floats, strings and tensors only."""
    kind, key, pos, has_gauss, cached = np.random.get_state(legacy=True)
    numpy_state = {"bit_generator": str(kind), "key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}
    return {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what ``rng_state`` returned (or the numpy tuple that checkpoints of DeepWML 0.x held)."""
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        numpy_state = (numpy_state["bit_generator"], numpy_state["key"].numpy().astype(np.uint32), numpy_state["pos"],
                       numpy_state["has_gauss"], numpy_state["cached_gaussian"])
    np.random.set_state(numpy_state)
    torch.set_rng_state(state["torch"])


def plain_values(value: Any, where: str = "checkpoint") -> Any:
    """``value`` with numpy scalars as Python numbers and numpy arrays as tensors: what the weights-only loader reads.

    Anything else that is not a tensor, a plain value or a list/tuple/dict of those is a programming error.
    """
    if isinstance(value, np.generic):  # before float: np.float64 is a float subclass that pickles as numpy
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str, bytes, torch.Tensor, torch.dtype, torch.device)):
        return value
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value))
    if isinstance(value, dict):
        return {k: plain_values(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [plain_values(v, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if isinstance(value, list) else tuple(items)
    raise TypeError(f"{where}: a checkpoint holds only tensors and plain values, not {type(value).__name__}")


def save_checkpoint(path: Union[str, Path], checkpoint: Dict[str, Any]) -> None:
    """Write a checkpoint dict atomically (a reader never sees half a file, Ctrl-C leaves the old one)."""
    checkpoint = plain_values(dict(checkpoint, deepwml_version=deepwml.__version__))
    with atomic_path(path, ".pth") as tmp:
        torch.save(checkpoint, tmp)


def _numpy_array_globals() -> List[Any]:
    """numpy's array and scalar rebuilders, under their numpy 1 and numpy 2 names, and the dtypes DeepWML 0.x stored.

    Checkpoints of DeepWML 0.x held numpy RNG states and numpy scalars. These globals rebuild arrays and numbers
    of plain data from bytes and nothing else (an object array's items still pass the weights-only unpickler).
    """
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy 1
        from numpy.core import multiarray
    names: List[Any] = [np.ndarray, np.dtype]
    names += [type(np.dtype(t)) for t in (np.uint32, np.int32, np.int64, np.float32, np.float64, np.bool_)]
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        names += [(multiarray._reconstruct, f"{module}._reconstruct"), (multiarray.scalar, f"{module}.scalar")]
    return names


def read_checkpoint(path: Union[str, Path]) -> Any:
    """``torch.load(weights_only=True)`` onto the CPU; a file that needs more is refused with one line naming it."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_array_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DeepWMLError("checkpoint not found", path) from None
    except pickle.UnpicklingError as e:
        text = str(e)
        if "Weights only load failed" in text or "WeightsUnpickler" in text:
            raise DeepWMLError(REFUSED.format(what=_refused_what(text)), path) from None
        raise DeepWMLError(f"unreadable checkpoint ({_first_line(e)})", path) from None
    except Exception as e:  # noqa: BLE001 - torch raises KeyError, OSError, RuntimeError... for a damaged file
        raise DeepWMLError(f"unreadable checkpoint ({_first_line(e)})", path) from None


def _refused_what(text: str) -> str:
    """The global or operation torch's weights-only unpickler refused, from its long message."""
    found = re.search(r"GLOBAL (\S+?)[ ,]", text)
    if found:
        return f"it needs {found.group(1)}"
    detail = text.split("WeightsUnpickler error:", 1)[-1].strip().splitlines()
    return detail[0][:160] if detail else "refused by the weights-only loader"


def _first_line(e: BaseException) -> str:
    """Exception type and the first line of its message, short."""
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[0][:200]}" if lines else type(e).__name__


def load_checkpoint(path: Union[str, Path]) -> Dict[str, Any]:
    """Read a training checkpoint (weights-only), naming the file if it is missing, unreadable or not a dict."""
    path = Path(path)
    if not path.is_file():
        raise DeepWMLError("no checkpoint here to continue from; train without --continue first", path)
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict):
        raise DeepWMLError(f"not a DeepWML checkpoint (a {type(checkpoint).__name__}, not a dict)", path)
    return checkpoint


def check_resumable(checkpoint: Dict[str, Any], path: Union[str, Path]) -> None:
    """--continue needs the full training state, not an exported (slimmed) checkpoint."""
    missing = [key for key in RESUME_KEYS if key not in checkpoint]
    if missing:
        raise DeepWMLError(
            f"not a training checkpoint (lacks {', '.join(missing)}); --continue needs the {LATEST} that deepwml_train "
            "wrote", path,
        )


def check_same_plan(checkpoint: Dict[str, Any], plan_hash: str, path: Union[str, Path]) -> None:
    """A checkpoint may only be continued with the plan it was trained with."""
    if checkpoint.get("plan_hash") != plan_hash:
        plan = checkpoint.get("plan")
        name = plan.get("name", "?") if isinstance(plan, dict) else "?"
        raise DeepWMLError(
            f"was trained with another plan (plan {name!r}, hash {str(checkpoint.get('plan_hash'))[:12]}) than the current "
            f"plans.json (hash {plan_hash[:12]}); train again without --continue or restore that plan",
            path,
        )


def model_state(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    """state_dict of a model, unwrapped from DistributedDataParallel, in plain contiguous layout (portable)."""
    module = model.module if hasattr(model, "module") else model
    return {k: v.detach().contiguous() for k, v in module.state_dict().items()}
