"""Move a trained model between sites: export a PLAN folder's folds to one zip, install such a zip safely.

The zip holds ``DatasetNNN_Name/PLAN/{plans.json, dataset.json, fingerprint.json, manifest.json,
fold_K/checkpoint_*.pth}``. Checkpoints are slimmed to weights and plan identity (no optimizer, no RNG state),
so the receiving site loads them with ``torch.load(weights_only=True)`` and never unpickles foreign code.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Optional, Sequence, Union

import torch

import deepwml
from deepwml.datasets.raw_dataset import DATASET_DIR
from deepwml.inference.model_loading import CHECKPOINT_FILES, ModelSpec, check_model, fold_name, load_checkpoint, load_fold_states
from deepwml.planning.plan import Plan
from deepwml.utils.atomic import atomic_path
from deepwml.utils.errors import DeepWMLError

MANIFEST = "manifest.json"
MODEL_FILES = ("plans.json", "dataset.json", "fingerprint.json")
FORMAT_VERSION = 1
#: kept from a training checkpoint; everything else (optimizer, scaler, RNG states) stays at the training site
SLIM_KEYS = ("model", "plan", "plan_hash", "epoch", "best_ema_dice", "deepwml_version")


def _slim(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """Weights and plan identity only, as plain Python/tensor values that the safe loader accepts."""
    out = {}
    for key in SLIM_KEYS:
        if key not in ckpt:
            continue
        value = ckpt[key]
        if hasattr(value, "item") and not isinstance(value, torch.Tensor):
            value = value.item()  # numpy scalars need full unpickling
        out[key] = value
    return out


def export_model(
    model_dir: Path, out_zip: Path, folds: Optional[Sequence[Union[int, str]]] = None, checkpoint: str = "best"
) -> Dict[str, Any]:
    """Write ``out_zip`` (atomically) from a PLAN folder; returns the manifest."""
    spec = check_model(model_dir, folds, checkpoint)
    states = load_fold_states(spec)  # refuses folds whose plan does not match plans.json
    del states
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise DeepWMLError(f"model folder lacks {', '.join(missing)}", model_dir)
    prefix = PurePosixPath(model_dir.parent.name) / model_dir.name
    manifest = {
        "format_version": FORMAT_VERSION,
        "deepwml_version": deepwml.__version__,
        "dataset": model_dir.parent.name,
        "plan": model_dir.name,
        "plan_hash": spec.plan.hash(),
        "folds": list(spec.folds),
        "checkpoint": checkpoint,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    with atomic_path(out_zip, ".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for name in MODEL_FILES:
                zf.write(model_dir / name, str(prefix / name))
            for name, path in zip(spec.folds, spec.checkpoints):
                with zf.open(str(prefix / fold_name(name) / path.name), "w") as f:
                    torch.save(_slim(load_checkpoint(path)), f)
            zf.writestr(str(prefix / MANIFEST), _json(manifest))
    return manifest


def _json(obj: Any) -> str:
    """Indented JSON text."""
    import json

    return json.dumps(obj, indent=2) + "\n"


def _member_problem(name: str) -> Optional[str]:
    """Why a zip member name is unsafe to extract (zip-slip), or None."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        return "is an absolute path"
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if ".." in parts:
        return "contains '..'"
    return None


def _read_manifest(zf: zipfile.ZipFile, zip_path: Path) -> tuple:
    """(manifest, 'DatasetNNN_Name/PLAN' prefix) after checking every member is safe and inside that prefix."""
    names = [i.filename for i in zf.infolist()]
    for name in names:
        why = _member_problem(name)
        if why:
            raise DeepWMLError(f"refusing to install: member {name!r} {why}", zip_path)
    manifests = [n for n in names if PurePosixPath(n).name == MANIFEST]
    if len(manifests) != 1:
        raise DeepWMLError("not a DeepWML model: expected exactly one manifest.json (made by deepwml_export_model)", zip_path)
    prefix = PurePosixPath(manifests[0]).parent
    if len(prefix.parts) != 2 or not DATASET_DIR.match(prefix.parts[0]):
        raise DeepWMLError(f"manifest sits at {manifests[0]!r}; expected DatasetNNN_Name/PLAN/manifest.json", zip_path)
    # directory entries above the prefix (some zip tools add them) are harmless; any other file outside is not
    outside = [
        n for n in names
        if PurePosixPath(n).parts[:2] != prefix.parts and not (n.endswith("/") and prefix.parts[: len(PurePosixPath(n).parts)] == PurePosixPath(n).parts)
    ]
    if outside:
        raise DeepWMLError(f"refusing to install: members outside {prefix}/: {', '.join(outside[:3])}", zip_path)
    import json

    try:
        manifest = json.loads(zf.read(manifests[0]))
    except ValueError as e:
        raise DeepWMLError(f"manifest.json is not valid JSON ({e})", zip_path) from None
    return manifest, prefix


def install_model(zip_path: Path, results: Path, overwrite: bool = False) -> Path:
    """Unpack a model zip into ``results``/DatasetNNN_Name/PLAN after checking it; returns the PLAN folder."""
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise DeepWMLError("model zip not found", zip_path)
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise DeepWMLError("not a zip file", zip_path) from None
    with zf:
        manifest, prefix = _read_manifest(zf, zip_path)
        target = results.joinpath(*prefix.parts)
        if target.exists() and not overwrite:
            raise DeepWMLError("a model is already installed here; add --overwrite to replace it", target)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.install.", dir=target.parent))
        try:
            for info in zf.infolist():
                if info.is_dir():
                    continue
                dest = staging.joinpath(*PurePosixPath(info.filename).parts[2:])
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
            _verify_installed(staging, manifest, zip_path)
            _replace_dir(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _verify_installed(folder: Path, manifest: Dict[str, Any], zip_path: Path) -> ModelSpec:
    """The unpacked model must load safely and match its manifest's plan hash and folds."""
    checkpoint = manifest.get("checkpoint", "best")
    if checkpoint not in CHECKPOINT_FILES:
        raise DeepWMLError(f"manifest names an unknown checkpoint {checkpoint!r}", zip_path)
    spec = check_model(folder, manifest.get("folds"), checkpoint)
    plan_hash = Plan.load(folder / "plans.json").hash()
    if manifest.get("plan_hash") != plan_hash:
        raise DeepWMLError("plans.json does not match the manifest's plan hash: the zip was altered", zip_path)
    load_fold_states(spec, trusted=False)
    return spec


def _replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` in place of ``target``; an old model is moved aside first and only deleted once the new one is in."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old.{os.getpid()}"
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
