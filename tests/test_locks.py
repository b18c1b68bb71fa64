"""Locks between processes (deepwml.utils.locks): exclusive, dropped when the holder dies, and on any OS: no module of
the prediction or preprocessing path needs fcntl, which Windows does not have."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import pytest

from deepwml.utils.locks import LockHeld, held

HOLD = "import sys, time; from deepwml.utils.locks import held\nwith held(sys.argv[1]):\n    print('held', flush=True); time.sleep(60)\n"


def test_a_lock_held_by_another_process_is_refused_at_once_and_freed_when_that_process_dies(tmp_path):
    lock = tmp_path / ".lock"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.perf_counter()
        with pytest.raises(LockHeld):
            with held(lock, wait=False):
                pass
        assert time.perf_counter() - started < 5  # refused at once, not after a wait
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    with held(lock, wait=False):  # the OS dropped the killed holder's lock
        assert lock.exists()


def test_prediction_and_preprocessing_run_where_fcntl_does_not_exist(tmp_path):
    """As on Windows: with fcntl unimportable, the commands' modules import and a run's locks are taken."""
    code = ("import sys; sys.modules['fcntl'] = None\n"
            "import deepwml.cli.predict, deepwml.inference.run, deepwml.inference.pseudonyms, deepwml.preprocessing.run, "
            "deepwml.cli.plan_and_preprocess, deepwml.inference.segmenter\n"
            "from pathlib import Path\n"
            "from deepwml.inference.pseudonyms import key_lock\n"
            "from deepwml.preprocessing.run import plan_lock\n"
            f"folder = Path({str(tmp_path)!r})\n"
            "with key_lock(folder / 'key'), plan_lock(folder / 'plan'):\n"
            "    print('locked')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "locked", done.stderr
