"""Per-case results of a tuning run on predictions (count tables of deepwml_find_postprocessing and
deepwml_find_best_configuration), kept on disk as each case finishes so that an interrupted run resumes.

A run's folder is named by a key of everything its results depend on (checkpoints, candidates, ignore value, device);
each case's file by its id and a key of its image and label files (path, size, modification time), so an edited
label or a re-trained fold is predicted again and a stale result is never read. A damaged entry is recomputed.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np

from deepwml.inference.inputs import InputCase
from deepwml.utils.atomic import savez_compressed

Tables = Dict[str, np.ndarray]


def run_key(what: Dict[str, Any]) -> str:
    """A short digest of a JSON-able description of what a run's results depend on."""
    return hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]


def file_stamp(path: Path) -> list:
    """A file's path, size and modification time (what changes when it is replaced or edited)."""
    st = Path(path).stat()
    return [str(Path(path).resolve()), st.st_size, st.st_mtime_ns]


def checkpoint_stamps(checkpoints: Any) -> list:
    """The stamps of a model's fold checkpoints."""
    return [file_stamp(p) for p in checkpoints]


class CaseCache:
    """One run's per-case tables below ``folder`` (None: nothing is kept)."""

    def __init__(self, folder: Optional[Path]) -> None:
        self.folder = folder
        if folder is not None:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError:  # a read-only place: the run works, it just cannot resume
                self.folder = None

    def _path(self, case: InputCase, label: Path) -> Optional[Path]:
        """Where ``case``'s tables are kept, under a key of its files."""
        if self.folder is None:
            return None
        key = run_key([file_stamp(p) for p in [*case.input_files(), label]])
        return self.folder / f"{case.case_id}-{key[:12]}.npz"

    def load(self, case: InputCase, label: Path) -> Optional[Tables]:
        """The tables kept for ``case``, None when there are none (or they cannot be read)."""
        path = self._path(case, label)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except Exception:  # noqa: BLE001 - a damaged entry (BadZipFile, OSError, ...) is computed again
            return None

    def save(self, case: InputCase, label: Path, tables: Tables) -> None:
        """Keep ``case``'s tables (written beside the file and renamed; best effort)."""
        path = self._path(case, label)
        if path is None:
            return
        try:
            savez_compressed(path, **tables)
        except OSError:
            pass
