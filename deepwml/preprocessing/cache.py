"""The preprocessed cache: PLAN/cache/CASE.npz (+ CASE.json), written atomically, read fast by the trainer.

The image is [C, S, H, W]; caches written before channels existed hold [S, H, W] and are read as C = 1, so they
stay valid (their preprocessing hash is unchanged).

Write order makes every state safe to resume from: the old CASE.json and unpacked .npy files go first,
then the new CASE.npz, then the new CASE.json. A case counts as done only when CASE.json holds the current
preprocessing_hash, so a run killed at any moment redoes at most the cases it was working on.
"""
from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from deepwml.preprocessing.network_input import as_channels
from deepwml.preprocessing.transforms import Preprocessed
from deepwml.utils.atomic import atomic_path, read_json, savez_compressed, write_json
from deepwml.utils.errors import DeepWMLError

PathLike = Union[str, Path]
ARRAYS = ("image", "label", "head")


def case_paths(cache_dir: PathLike, case_id: str) -> Dict[str, Path]:
    """Every file the cache may hold for one case."""
    cache_dir = Path(cache_dir)
    paths = {"npz": cache_dir / f"{case_id}.npz", "json": cache_dir / f"{case_id}.json"}
    paths.update({f"npy_{name}": cache_dir / f"{case_id}_{name}.npy" for name in ARRAYS})
    return paths


def is_done(cache_dir: PathLike, case_id: str, preprocessing_hash: str) -> bool:
    """True when the case is cached for this preprocessing hash (CASE.json is written last)."""
    paths = case_paths(cache_dir, case_id)
    if not (paths["json"].is_file() and paths["npz"].is_file()):
        return False
    try:
        return read_json(paths["json"]).get("preprocessing_hash") == preprocessing_hash
    except DeepWMLError:
        return False


def write_case(cache_dir: PathLike, case_id: str, result: Preprocessed, meta: Dict[str, Any]) -> None:
    """Write one preprocessed case (arrays, then properties) atomically."""
    paths = case_paths(cache_dir, case_id)
    for key in ("json", "npy_image", "npy_label", "npy_head"):
        paths[key].unlink(missing_ok=True)
    arrays = {"image": result.image, "head": result.head}
    if result.label is not None:
        arrays["label"] = result.label
    savez_compressed(paths["npz"], **arrays)
    props = dict(result.props, case_id=case_id, meta=meta)
    props["lesion_slices"] = _lesion_slices(result.label)
    write_json(paths["json"], props)


def _lesion_slices(label: Optional[np.ndarray]) -> List[int]:
    """Indices of slices holding lesion pixels (the trainer's foreground oversampling draws from them)."""
    if label is None:
        return []
    return [int(k) for k in np.flatnonzero((label == 1).any(axis=(1, 2)))]


def load_props(cache_dir: PathLike, case_id: str) -> Dict[str, Any]:
    """CASE.json of a cached case."""
    return read_json(case_paths(cache_dir, case_id)["json"])


def load_case(cache_dir: PathLike, case_id: str, mmap: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray], Dict[str, Any]]:
    """(image [C,S,H,W], label [S,H,W] or None, props); memory-mapped from unpacked .npy files when present."""
    paths = case_paths(cache_dir, case_id)
    props = load_props(cache_dir, case_id)
    if mmap and paths["npy_image"].is_file():
        image = np.load(paths["npy_image"], mmap_mode="r")
        label = np.load(paths["npy_label"], mmap_mode="r") if paths["npy_label"].is_file() else None
        return as_channels(image), label, props
    arrays = _load_npz(paths["npz"])
    return as_channels(arrays["image"]), arrays.get("label"), props


def load_head(cache_dir: PathLike, case_id: str) -> np.ndarray:
    """The cached head mask of a case (uint8 [S,H,W])."""
    paths = case_paths(cache_dir, case_id)
    if paths["npy_head"].is_file():
        return np.load(paths["npy_head"], mmap_mode="r")
    return _load_npz(paths["npz"])["head"]


def _load_npz(path: Path) -> Dict[str, np.ndarray]:
    """All arrays of a CASE.npz, with an error naming the file when it cannot be read."""
    try:
        with np.load(path) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DeepWMLError(f"unreadable cache file ({e}); re-run deepwml_plan_and_preprocess", path) from None


def unpack_case(cache_dir: PathLike, case_id: str) -> None:
    """Write uncompressed CASE_image.npy / CASE_label.npy / CASE_head.npy for memory-mapping (skipped if present)."""
    paths = case_paths(cache_dir, case_id)
    if paths["npy_image"].is_file() and paths["npy_image"].stat().st_mtime_ns >= paths["npz"].stat().st_mtime_ns:
        return
    arrays = _load_npz(paths["npz"])
    # the image goes last: load_case takes a present CASE_image.npy to mean the unpacking is complete
    for name in ("label", "head", "image"):
        if name in arrays:
            with atomic_path(paths[f"npy_{name}"], ".npy") as tmp:
                np.save(tmp, arrays[name])


def cached_case_ids(cache_dir: PathLike) -> List[str]:
    """Ids of all cases with a CASE.json in ``cache_dir``, sorted."""
    cache_dir = Path(cache_dir)
    if not cache_dir.is_dir():
        return []
    return sorted(p.stem for p in cache_dir.glob("*.json") if not p.name.startswith("."))


def remove_stale_temporaries(folder: PathLike) -> int:
    """Delete temporary files a killed writer left behind (hidden '.NAME.*.tmp*'); returns how many.

    Call it only while holding the plan's lock, so that no live writer owns them.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    stale = list(folder.glob(".*.tmp*"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)


def read_cache_summary(cache_dir: PathLike) -> Dict[str, Any]:
    """Number of cached cases and their total size on disk (for the command's closing line)."""
    files = [p for p in Path(cache_dir).glob("*") if p.is_file() and not p.name.startswith(".")]
    return {"cases": len(cached_case_ids(cache_dir)), "bytes": int(sum(p.stat().st_size for p in files))}
