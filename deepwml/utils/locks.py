"""Exclusive locks between processes on a lock file, on any OS (filelock: flock on Linux and macOS, the C runtime's
locking on Windows, where there is no fcntl); the OS drops a lock when its process dies, even by SIGKILL."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator


class LockHeld(Exception):
    """Another process holds the lock asked for without waiting."""


@contextlib.contextmanager
def held(path: Path, wait: bool = True) -> Iterator[None]:
    """Hold the exclusive lock of the file ``path`` (made when missing) for the block; ``wait`` False: raise
    LockHeld at once when another process holds it."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path), timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except Timeout:
        raise LockHeld(str(path)) from None
    try:
        yield
    finally:
        lock.release()
