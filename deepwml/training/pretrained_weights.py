"""Start training from another model's weights (``deepwml_train --pretrained builtin|PATH``): find, check, record.

The weights come from the shipped model, a trained or installed PLAN folder, a fold folder or one checkpoint file,
always read weights-only. The network section of that model's plan must equal this plan's (same layers, same
shapes); preprocessing differences are reported, because a network sees what preprocessing made of the scan.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from deepwml.planning.plan import Plan
from deepwml.pretrained import BUILTIN_ALIAS, builtin_model_dir
from deepwml.training.checkpoint import BEST, LATEST, load_checkpoint
from deepwml.utils.errors import DeepWMLError

#: fine-tuning starts at this fraction of the plan's learning rate unless --lr says otherwise
FINETUNE_LR_FACTOR = 0.1


@dataclass
class PretrainedWeights:
    """Weights to start from and where they came from (stored in every checkpoint of the run as ``pretrained``)."""

    state: Dict[str, torch.Tensor]
    origin: Dict[str, Any]


def _checkpoint_file(spec: str) -> Tuple[Path, List[str]]:
    """The checkpoint file that ``spec`` names (builtin, a PLAN folder, a fold folder or a .pth file), and a note
    when it is one member of the shipped ensemble."""
    path = builtin_model_dir() if spec == BUILTIN_ALIAS else Path(spec).expanduser()
    if path.is_file():
        return path, []
    if not path.is_dir():
        raise DeepWMLError("--pretrained: not found (give 'builtin', a model's PLAN folder, a fold folder or a checkpoint file)", path)
    folds = [path] if path.name.startswith("fold_") else sorted(p for p in path.glob("fold_*") if p.is_dir())
    notes = []
    if spec == BUILTIN_ALIAS and len(folds) > 1:
        # the shipped model may be an ensemble; one network is fine-tuned, so start from its first member
        notes.append(f"the shipped model is an ensemble; fine-tuning starts from its first member, {folds[0].name}")
        folds = folds[:1]
    files = [f / name for f in folds for name in (BEST, LATEST) if (f / name).is_file()]
    if not files:
        raise DeepWMLError(f"--pretrained: no fold_K/{BEST} or {LATEST} below this folder", path)
    if len({f.parent for f in files}) > 1:
        names = ", ".join(sorted({f.parent.name for f in files}))
        raise DeepWMLError(f"--pretrained: several folds here ({names}); name one, e.g. {folds[0]}", path)
    return files[0], notes


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes (what a run records of the weights it learnt from)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def differences(a: Dict[str, Any], b: Dict[str, Any]) -> List[str]:
    """Keys whose values differ, as 'key: a -> b'."""
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def load_pretrained(spec: str, plan: Plan) -> Tuple[PretrainedWeights, List[str]]:
    """Weights for ``plan``'s network from ``spec``, and notes on preprocessing that differs; mismatches are errors."""
    path, notes = _checkpoint_file(spec)
    ckpt = load_checkpoint(path)
    if "model" not in ckpt or not isinstance(ckpt.get("plan"), dict):
        raise DeepWMLError("--pretrained: not a DeepWML checkpoint (needs 'model' and 'plan')", path)
    theirs = ckpt["plan"]
    network_diff = differences(theirs.get("network", {}), plan.to_dict()["network"])
    if network_diff:
        raise DeepWMLError(
            "--pretrained: its network differs from this plan's (" + "; ".join(network_diff) + "); plan with the same "
            "network section (e.g. the same preset) to fine-tune from it",
            path,
        )
    notes += [f"preprocessing differs from the pretrained model's: {d}"
              for d in differences(theirs.get("preprocessing", {}), plan.to_dict()["preprocessing"])]
    origin = {
        "source": spec,
        "file": str(path.resolve()),
        "sha256": file_sha256(path),
        "plan_name": theirs.get("name"),
        "plan_hash": ckpt.get("plan_hash"),
        "epoch": ckpt.get("epoch"),
    }
    return PretrainedWeights(ckpt["model"], origin), notes
