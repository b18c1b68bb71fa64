"""Atomic writes: a temporary file in the target's folder, then os.replace, so no reader ever sees half a file.

Temporary names carry their writer: ``.NAME.pidPID@HOST.XXXXXXXX.tmpSUFFIX``. A writer killed with SIGKILL leaves
its temporary behind; :func:`remove_dead_temporaries` deletes those whose writer is gone while sparing the ones of
other live processes writing into the same folder (array jobs).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple, Union

import numpy as np

PathLike = Union[str, Path]


@contextlib.contextmanager
def atomic_path(target: PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    # the suffix matters for writers that pick the format from the file name (SimpleITK, np.savez)
    suffix = suffix or "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target.name), suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    # mkstemp creates 0600; give the result the permissions a plain open() would (0666 minus the umask)
    os.chmod(tmp, 0o666 & ~umask())
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


#: a temporary older than this is removed whoever wrote it: no single file write takes a day
STALE_SECONDS = 24 * 3600

# greedy '.*' so the owner tag found is the last one, even in a target name that looks like a tag itself
_OWNER = re.compile(r"^\..*\.pid(\d+)@([A-Za-z0-9-]+)\.[A-Za-z0-9_]+\.tmp")


def host_tag() -> str:
    """This machine's short host name, reduced to characters that are safe in a file name."""
    name = socket.gethostname().split(".")[0]
    return re.sub(r"[^A-Za-z0-9-]", "-", name)[:40] or "host"


def temp_prefix(name: str) -> str:
    """Prefix of a temporary for the file ``name``: hidden, and naming this process and host as its writer."""
    return f".{name}.pid{os.getpid()}@{host_tag()}."


def temp_owner(name: str) -> Optional[Tuple[int, str]]:
    """(pid, host) of the writer of a temporary named ``name``; None for names without an owner tag."""
    m = _OWNER.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` runs on this machine (another user's process counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_dead_temporaries(folder: PathLike, stale_seconds: float = STALE_SECONDS) -> List[Path]:
    """Delete hidden ``.*.tmp*`` temporaries in ``folder`` whose writer is gone; returns what was removed.

    Gone means: the writer's pid no longer runs on this host, or the temporary is older than ``stale_seconds``
    (temporaries of other hosts, whose processes cannot be checked, and untagged ones of older versions).
    A live process's temporary, on this host or a recent one from another host, is kept.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    here, now, removed = host_tag(), time.time(), []
    for path in sorted(folder.glob(".*.tmp*")):
        try:
            age = now - path.lstat().st_mtime
        except FileNotFoundError:
            continue  # its writer just renamed it into place
        owner = temp_owner(path.name)
        dead = owner is not None and owner[1] == here and not pid_alive(owner[0])
        if not (dead or age > stale_seconds):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)  # scratch folder of a detached-header image write
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(target: PathLike, obj: Any, indent: int = 2) -> None:
    """Write ``obj`` as JSON atomically."""
    with atomic_path(target, ".json") as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(obj, f, indent=indent, sort_keys=False, default=_json_default)
            f.write("\n")


def write_text(target: PathLike, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_bytes(target: PathLike, data: bytes) -> None:
    """Write a binary file atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def savez_compressed(target: PathLike, **arrays: np.ndarray) -> None:
    """np.savez_compressed, atomically."""
    with atomic_path(target, ".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


def read_json(path: PathLike) -> Any:
    """Read a JSON file, naming the file in the error if it is missing or malformed."""
    from deepwml.utils.errors import DeepWMLError

    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DeepWMLError("file not found", path) from None
    except json.JSONDecodeError as e:
        raise DeepWMLError(f"not valid JSON ({e})", path) from None


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
