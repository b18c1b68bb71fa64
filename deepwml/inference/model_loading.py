"""Find a trained model (PLAN folder), check that its folds belong to its plan, and load their networks."""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple, Union

from deepwml.datasets import find_dataset_folder
from deepwml.inference.fit_agreement import checkpoint_fits
from deepwml.inference.postprocessing import MaskSettings, read_postprocessing
from deepwml.planning.plan import Plan
from deepwml.utils.errors import DeepWMLError

if TYPE_CHECKING:  # torch is imported where weights are read: prediction on ONNX Runtime never needs it
    import torch
    from torch import nn

CHECKPOINT_FILES = {"best": "checkpoint_best.pth", "latest": "checkpoint_latest.pth"}
FOLD_DIR = re.compile(r"^fold_(\d+|all)$")


def resolve_model_dir(
    model_dir: Optional[Union[str, Path]] = None,
    dataset: Optional[str] = None,
    plan: Optional[str] = None,
    results_root: Optional[Path] = None,
) -> Path:
    """The PLAN folder of a trained model: given directly (-m) or as results/DatasetNNN_Name/PLAN (-d/-p)."""
    if model_dir is not None:
        if dataset is not None or plan is not None:
            raise DeepWMLError("give either -m MODEL_DIR or -d DATASET -p PLAN, not both")
        folder = Path(model_dir).expanduser()
    else:
        if dataset is None or plan is None:
            raise DeepWMLError("name the model with -m MODEL_DIR (a PLAN folder) or with -d DATASET -p PLAN")
        if results_root is None:
            raise DeepWMLError("no results folder given")
        folder = find_dataset_folder(results_root, dataset) / plan
    if not folder.is_dir():
        raise DeepWMLError("model folder not found (expected a PLAN folder holding plans.json and fold_K/)", folder)
    if not (folder / "plans.json").is_file():
        raise DeepWMLError("model folder holds no plans.json; -m must name the PLAN folder (DatasetNNN_Name/PLAN)", folder)
    return folder


def fold_name(fold: Union[int, str]) -> str:
    """Folder name of a fold: 0 -> 'fold_0', 'all' -> 'fold_all'."""
    return f"fold_{fold}"


def available_folds(model_dir: Path, checkpoint: str = "best") -> List[str]:
    """Folds below ``model_dir`` that hold the requested checkpoint, in numeric order ('all' last)."""
    names = []
    for p in model_dir.iterdir():
        m = FOLD_DIR.match(p.name)
        if m and (p / CHECKPOINT_FILES[checkpoint]).is_file():
            names.append(m.group(1))
    return sorted(names, key=lambda n: (n == "all", int(n) if n.isdigit() else 0))


def load_checkpoint(path: Path) -> Dict[str, Any]:
    """Read a checkpoint on the CPU with the weights-only loader; nothing in a model folder ever runs code."""
    import torch

    from deepwml.training.checkpoint import read_checkpoint

    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "plan_hash" not in ckpt:
        raise DeepWMLError("not a DeepWML checkpoint (needs 'model' and 'plan_hash')", path)
    model = ckpt["model"]
    if not isinstance(model, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        raise DeepWMLError("not a DeepWML checkpoint ('model' is not a mapping of names to tensors)", path)
    return ckpt


def installed_checkpoint(model_dir: Path, checkpoint: str) -> str:
    """The checkpoint to read from ``model_dir``: an installed model (deepwml_install_model, the shipped model) holds
    one network per fold, the checkpoint its manifest names, so that one whatever was asked; else ``checkpoint``."""
    path = model_dir / "manifest.json"
    if not path.is_file() or any((p / CHECKPOINT_FILES[checkpoint]).is_file() for p in model_dir.glob("fold_*")):
        return checkpoint
    try:
        held = json.loads(path.read_text()).get("checkpoint")
    except (OSError, ValueError, AttributeError):
        return checkpoint  # not a manifest this loader knows: the errors below name the missing files
    return held if held in CHECKPOINT_FILES else checkpoint


@dataclass
class ModelSpec:
    """A checked model: its plan and one checkpoint file per fold."""

    folder: Path
    plan: Plan
    folds: List[str]
    checkpoints: List[Path]
    checkpoint: str
    #: each fold's record of the model's temperatures below and above the threshold (deepwml_calibrate; (1, 1): not
    #: calibrated), filled by load_fold_states
    temperatures: Optional[List[Tuple[float, float]]] = None
    #: each fold's stored postprocessing (deepwml_find_postprocessing; None: none), filled with the temperatures
    postprocessing: Optional[List[Optional[MaskSettings]]] = None
    #: each fold's record of how its stored fits segmented their scans (deepwml.inference.fit_agreement.checkpoint_fits)
    fits: Optional[List[Dict[str, Dict[str, Any]]]] = None

    def calibration(self) -> Tuple[float, float]:
        """The temperatures deepwml_predict applies to this model's (fold-averaged) probabilities; folds calibrated
        apart (or not at all beside calibrated ones) are refused."""
        found = set(self.temperatures or [(1.0, 1.0)])
        if len(found) > 1:
            raise DeepWMLError("the folds carry different temperatures; calibrate them together with deepwml_calibrate "
                               "(or predict with one fold)", self.folder)
        return found.pop()

    def stored_postprocessing(self) -> Optional[MaskSettings]:
        """The threshold and lesion filters chosen for this model's folds together (None: none stored); folds that
        carry different ones are refused."""
        found = set(self.postprocessing or [None])
        if len(found) > 1:
            raise DeepWMLError("the folds carry different postprocessing; choose it for them together with "
                               "deepwml_find_postprocessing (or predict with one fold, or with --no-postprocessing)",
                               self.folder)
        return found.pop()


def check_model(model_dir: Path, folds: Optional[Sequence[Union[int, str]]] = None, checkpoint: str = "best") -> ModelSpec:
    """Check the folds exist and were trained with the PLAN folder's plans.json; errors say which fold is wrong."""
    if checkpoint not in CHECKPOINT_FILES:
        raise DeepWMLError(f"--checkpoint must be one of {', '.join(CHECKPOINT_FILES)}, got {checkpoint!r}")
    checkpoint = installed_checkpoint(model_dir, checkpoint)
    plan = Plan.load(model_dir / "plans.json")
    names = [str(f) for f in folds] if folds else available_folds(model_dir, checkpoint)
    if not names:
        found = sorted(p.name for p in model_dir.glob("fold_*"))
        raise DeepWMLError(
            f"no fold holds {CHECKPOINT_FILES[checkpoint]} (fold folders: {', '.join(found) or 'none'}); train a fold first"
            + (" or use --checkpoint latest" if found else ""),
            model_dir,
        )
    paths = []
    for name in names:
        path = model_dir / fold_name(name) / CHECKPOINT_FILES[checkpoint]
        if not path.is_file():
            other = "latest" if checkpoint == "best" else "best"
            hint = f" (it has {CHECKPOINT_FILES[other]}: use --checkpoint {other})" if (path.parent / CHECKPOINT_FILES[other]).is_file() else ""
            raise DeepWMLError(f"fold {name} is missing: no {path.name}{hint}", path.parent)
        paths.append(path)
    return ModelSpec(model_dir, plan, names, paths, checkpoint)


def load_fold_states(spec: ModelSpec) -> List[Dict[str, torch.Tensor]]:
    """Load every fold's weights after checking each was trained with the same plan as plans.json."""
    expected = spec.plan.hash()
    checkpoints = [load_checkpoint(p) for p in spec.checkpoints]
    hashes = {name: str(ckpt["plan_hash"]) for name, ckpt in zip(spec.folds, checkpoints)}
    if len(set(hashes.values())) > 1:
        listing = ", ".join(f"fold {n}: {h[:12]}" for n, h in hashes.items())
        raise DeepWMLError(f"the folds were trained with different plans ({listing}); ensemble only folds of one plan", spec.folder)
    for name, path in zip(spec.folds, spec.checkpoints):
        if hashes[name] != expected:
            raise DeepWMLError(
                f"checkpoint was trained with plan {hashes[name][:12]} but plans.json is plan {expected[:12]}: "
                "plans.json changed after training, or the checkpoint belongs to another plan",
                path,
            )
    spec.temperatures = [_temperature(ckpt, path, spec.plan.network.out_channels)
                         for ckpt, path in zip(checkpoints, spec.checkpoints)]
    spec.postprocessing = [read_postprocessing(ckpt, path, spec.plan.network.out_channels)
                           for ckpt, path in zip(checkpoints, spec.checkpoints)]
    spec.fits = [checkpoint_fits(ckpt) for ckpt in checkpoints]
    return [ckpt["model"] for ckpt in checkpoints]


def weights_digest(state: Dict[str, torch.Tensor]) -> str:
    """Short sha256 of a network's weights (names, dtypes, shapes and bytes): the same network wherever its folder
    lies and whatever else its checkpoint holds (a calibration, a training log), another one once re-trained."""
    import torch

    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        h.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)};".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def _temperature(ckpt: Dict[str, Any], path: Path, out_channels: int) -> Tuple[float, float]:
    """The checkpoint's logit temperatures (below, above the threshold; deepwml_calibrate), (1, 1) when it was never
    calibrated; anything but one or two numbers in 0.01..100, or a temperature on a multi-class model, is refused."""
    value = ckpt.get("temperature", 1.0)
    pair = [value, value] if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    if (not isinstance(pair, (list, tuple)) or len(pair) != 2
            or not all(isinstance(t, (int, float)) and not isinstance(t, bool) and 0.01 <= float(t) <= 100.0 for t in pair)):
        raise DeepWMLError(f"checkpoint's temperature must be one or two numbers between 0.01 and 100, got {value!r}", path)
    if out_channels != 1 and tuple(pair) != (1, 1):
        raise DeepWMLError("checkpoint has a temperature, but temperatures calibrate lesion models (one output channel)", path)
    return float(pair[0]), float(pair[1])


def build_fold_networks(spec: ModelSpec, states: List[Dict[str, torch.Tensor]]) -> List[nn.Module]:
    """One network per fold in eval mode, with its weights."""
    from deepwml.models import build_network

    networks = []
    for _name, path, state in zip(spec.folds, spec.checkpoints, states):
        net = build_network(spec.plan.network)
        try:
            net.load_state_dict(state)
        except RuntimeError as e:
            raise DeepWMLError(f"weights do not fit the plan's network ({str(e).splitlines()[0][:200]})", path) from None
        networks.append(net.eval())
    return networks
