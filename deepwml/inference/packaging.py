"""Move a trained model between sites: export a PLAN folder's folds to one zip, install such a zip safely.

The zip holds ``DatasetNNN_Name/PLAN/{plans.json, dataset.json, fingerprint.json, manifest.json,
fold_K/checkpoint_*.pth}``; the manifest (format 2) lists every other file with its sha256 and size. Checkpoints
are slimmed to weights and plan identity (no optimizer, no RNG state). Installing extracts exactly the listed files
into a staging folder, verifies them (checksums, plan hash, weights-only loading, weights that fit the plan) and
only then moves the folder into place; nothing in a zip can run code (trust model in docs/prediction.md).
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch

import deepwml
from deepwml.datasets.raw_dataset import DATASET_DIR
from deepwml.inference.model_loading import ModelSpec, build_fold_networks, check_model, fold_name, load_checkpoint, load_fold_states
from deepwml.inference.model_zip import FORMAT_VERSION, MANIFEST, MODEL_FILES, ModelZip, extract_member, file_record, open_model_zip, read_model_zip
from deepwml.planning.plan import Plan
from deepwml.training.checkpoint import plain_values
from deepwml.utils.atomic import atomic_path, umask
from deepwml.utils.errors import DeepWMLError

#: kept from a training checkpoint; everything else (optimizer, scaler, RNG states) stays at the training site
SLIM_KEYS = ("model", "plan", "plan_hash", "epoch", "best_ema_dice", "deepwml_version", "pretrained", "temperature",
             "calibration", "postprocessing")


def _slim(ckpt: Dict[str, Any]) -> Dict[str, Any]:
    """Weights and plan identity only, as tensors and plain Python values."""
    return plain_values({key: ckpt[key] for key in SLIM_KEYS if key in ckpt})


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
    dataset, plan = _zip_names(model_dir)
    prefix = PurePosixPath(dataset) / plan
    manifest: Dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "deepwml_version": deepwml.__version__,
        "dataset": dataset,
        "plan": plan,
        "plan_hash": spec.plan.hash(),
        "folds": list(spec.folds),
        "checkpoint": checkpoint,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "files": {},
    }
    with atomic_path(out_zip, ".zip") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:

            def add(name: str, data: bytes) -> None:
                zf.writestr(str(prefix / name), data)
                manifest["files"][name] = file_record(data)

            for name in MODEL_FILES:
                add(name, (model_dir / name).read_bytes())
            for name, path in zip(spec.folds, spec.checkpoints):
                buffer = io.BytesIO()
                torch.save(_slim(load_checkpoint(path)), buffer)
                add(f"{fold_name(name)}/{path.name}", buffer.getvalue())
            zf.writestr(str(prefix / MANIFEST), _json(manifest))
    return manifest


#: a plan folder's name as a zip member part: one plain path component
PLAN_DIR = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")


def _zip_names(model_dir: Path) -> Tuple[str, str]:
    """(dataset, plan) folder names in the zip: the PLAN folder's own, or, for an installed model kept under other
    names (the shipped one lives at pretrained/wmh_flair2d), those its manifest records."""
    if DATASET_DIR.match(model_dir.parent.name):
        return model_dir.parent.name, model_dir.name
    try:
        recorded = json.loads((model_dir / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        recorded = None
    if isinstance(recorded, dict):
        dataset, plan = recorded.get("dataset"), recorded.get("plan")
        if isinstance(dataset, str) and DATASET_DIR.match(dataset) and isinstance(plan, str) and PLAN_DIR.match(plan):
            return dataset, plan
    return model_dir.parent.name, model_dir.name


def _json(obj: Any) -> str:
    """Indented JSON text."""
    return json.dumps(obj, indent=2) + "\n"


def install_model(zip_path: Path, results: Path, overwrite: bool = False) -> Path:
    """Unpack a model zip into ``results``/DatasetNNN_Name/PLAN after checking it; returns the PLAN folder.

    On any refusal nothing is left behind: no staging folder, no new empty folders, an installed model untouched.
    """
    zip_path = Path(zip_path)
    with open_model_zip(zip_path) as zf:
        model = read_model_zip(zf, zip_path)
        target = Path(results).joinpath(*model.prefix.parts)
        if target.exists() and not overwrite:
            raise DeepWMLError("a model is already installed here; add --overwrite to replace it", target)
        created = _make_folders(target.parent)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.install.", dir=target.parent))
        except OSError as e:
            _remove_empty(created)
            raise DeepWMLError(f"cannot install here ({e.strerror or e})", target.parent) from None
        done = False
        try:
            _extract(zf, model, staging, zip_path)
            _verify_installed(staging, model, zip_path)
            # mkdtemp makes a private (0700) folder; an installed model is readable like any folder mkdir makes
            os.chmod(staging, 0o777 & ~umask())
            replace_dir(staging, target)
            done = True
        finally:
            shutil.rmtree(staging, ignore_errors=True)
            if not done:
                _remove_empty(created)
    return target


def _extract(zf: zipfile.ZipFile, model: ModelZip, staging: Path, zip_path: Path) -> None:
    """Write exactly the manifest and the files it lists into ``staging``, each checked against its record."""
    (staging / MANIFEST).write_bytes(model.manifest_bytes)
    for relative, (info, record) in model.members.items():
        dest = staging.joinpath(*PurePosixPath(relative).parts)
        dest.parent.mkdir(parents=True, exist_ok=True)
        extract_member(zf, info, record, info.file_size, zip_path, dest)


def _verify_installed(folder: Path, model: ModelZip, zip_path: Path) -> ModelSpec:
    """The unpacked model must match its manifest's plan hash and load weights-only into the plan's network."""
    try:
        spec = check_model(folder, model.manifest["folds"], model.manifest.get("checkpoint", "best"))
        if model.manifest.get("plan_hash") != Plan.load(folder / "plans.json").hash():
            raise DeepWMLError("plans.json does not match the manifest's plan hash: the zip was altered", zip_path)
        build_fold_networks(spec, load_fold_states(spec))
    except DeepWMLError as e:
        # name the zip member, not the staging folder that is about to disappear
        if e.path and Path(e.path).is_relative_to(folder):
            member = model.prefix.joinpath(*Path(e.path).relative_to(folder).parts)
            raise DeepWMLError(f"refusing to install: member {str(member)!r}: {e.problem}", zip_path) from None
        raise
    return spec


def _make_folders(folder: Path) -> List[Path]:
    """mkdir -p ``folder``; returns the folders it created, outermost first."""
    missing = [p for p in [folder, *folder.parents] if not p.exists()][::-1]
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        _remove_empty(missing)
        raise DeepWMLError(f"cannot create the install folder ({e.strerror or e})", folder) from None
    return missing


def _remove_empty(created: List[Path]) -> None:
    """rmdir the folders an install created, innermost first, where nothing else appeared meanwhile."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            pass


def replace_dir(new: Path, target: Path) -> None:
    """Put ``new`` in place of ``target``; an old model is moved aside first and only deleted once the new one is in."""
    old = None
    if target.exists():
        old = target.parent / f".{target.name}.old.{os.getpid()}"
        os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        if old is not None:
            os.replace(old, target)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def install_as_folder(model_dir: Path, folds: Sequence[Union[int, str]], checkpoint: str, card: str, target: Path) -> None:
    """Export ``folds`` of a PLAN folder (weights only, checksummed) and install them at ``target`` with ``card`` as its
    MODEL_CARD.md; an old model there is replaced only once the new one is complete."""
    with tempfile.TemporaryDirectory(prefix="deepwml_install_") as tmp:
        zip_path = Path(tmp) / "model.zip"
        export_model(model_dir, zip_path, list(folds), checkpoint)
        installed = install_model(zip_path, Path(tmp) / "results")
        (installed / "MODEL_CARD.md").write_text(card, encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.new.", dir=target.parent))
        try:
            shutil.copytree(installed, staging, dirs_exist_ok=True)
            os.chmod(staging, 0o777 & ~umask())
            replace_dir(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
