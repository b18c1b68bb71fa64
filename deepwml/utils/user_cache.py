"""A per-user cache of derived arrays that take seconds to compute and never change for given inputs.

The synthetic generator derives distance maps and lesion sites from its brain template in about 4 s, once per
process; every worker of ``deepwml_make_synthetic -np N`` and every command that draws cases paid it again. The
cache keeps such arrays as an uncompressed .npz (read without pickle) under a key the caller derives from
everything the arrays depend on, so a stale entry is never read: a new key simply writes a new file.

Where: ``$DEEPWML_CACHE_DIR``, else ``$XDG_CACHE_HOME/deepwml``, else ``~/.cache/deepwml``. ``DEEPWML_CACHE_DIR=off``
(or empty) turns it off. A cache that cannot be read or written is never an error: the arrays are computed as
without it.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Union

import numpy as np

from deepwml.utils.atomic import atomic_path

ENV_VAR = "DEEPWML_CACHE_DIR"

Arrays = Dict[str, np.ndarray]


def cache_dir() -> Optional[Path]:
    """The cache folder, or None when the user turned the cache off."""
    if ENV_VAR in os.environ:
        value = os.environ[ENV_VAR].strip()
        return None if value.lower() in ("", "off", "0", "none") else Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = str(Path.home() / ".cache")
        except RuntimeError:  # no HOME and no password entry (some containers): no cache rather than an error
            return None
    return Path(base).expanduser() / "deepwml"


def cache_usable() -> bool:
    """True when the cache is on and its folder can be read (it exists) or made and written."""
    folder = cache_dir()
    if folder is None:
        return False
    if folder.is_dir():
        return os.access(folder, os.R_OK | os.X_OK)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(folder, os.W_OK)


def content_key(parts: Iterable[Union[bytes, str]]) -> str:
    """A hex digest of ``parts`` (file contents, versions, constants): the cache key of what depends on them."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8") if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return digest.hexdigest()


def cached_arrays(name: str, key: str, compute: Callable[[], Arrays]) -> Arrays:
    """``compute()``'s arrays for ``key``, read from the cache when present, else computed and stored (best effort)."""
    folder = cache_dir()
    if folder is None:
        return compute()
    path = folder / f"{name}-{key[:24]}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception:  # noqa: BLE001 - whatever a damaged entry raises (BadZipFile, OSError, ...): recompute it
            pass
    arrays = compute()
    _store(path, name, arrays)
    return arrays


def _store(path: Path, name: str, arrays: Arrays) -> None:
    """Write ``arrays`` to ``path`` atomically and drop older entries of ``name``; any OSError leaves the cache as it was."""
    try:
        with atomic_path(path, ".npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)
        for old in path.parent.glob(f"{name}-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        pass  # read-only home, quota, no such folder allowed: the cache is an optimisation only
