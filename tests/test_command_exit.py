"""The installed commands end without the interpreter's teardown (1.1 s after a short deepwml_train:
benchmarks/command_exit.py), and stop their worker processes first, as the interpreter's exit would."""
from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from test_foundation import _console_scripts

REPO = Path(__file__).resolve().parents[1]
#: deepwml_send imports neither torch nor a worker pool, and deepwml_listen serves for days: they end as any Python
#: program does
ORDINARY_EXIT = {"deepwml_send", "deepwml_listen"}


@pytest.mark.parametrize("name,target", [s for s in _console_scripts() if s[0] not in ORDINARY_EXIT])
def test_every_working_command_and_its_python_m_form_end_through_run_installed(name, target, monkeypatch):
    """The console script and ``python -m deepwml.cli.X`` (how the demo and the recipe run their stages) both call
    entry(), which hands the module's own main to run_installed."""
    module_name, function = target.split(":")
    assert function == "entry", f"{name} is installed as {target}"
    module = importlib.import_module(module_name)
    assert 'if __name__ == "__main__":\n    entry()' in Path(module.__file__).read_text(encoding="utf-8")
    called = []
    monkeypatch.setattr(module, "run_installed", lambda main, tuned_allocator=False: called.append(main))
    module.entry()
    assert called == [module.main]


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its new parent to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ending_without_teardown_stops_joblibs_workers_and_daemonic_children_and_keeps_the_exit_code(tmp_path):
    """A command that used joblib (its pool of workers outlives each Parallel call) and started a daemonic helper
    process: os._exit alone would leave them running for minutes; exit_without_teardown stops them first."""
    script = textwrap.dedent("""
        import multiprocessing, os, sys, time
        from joblib import Parallel, delayed
        pids = set(Parallel(n_jobs=2)(delayed(os.getpid)() for _ in range(8)))
        helper = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(600,), daemon=True)
        helper.start()
        print(" ".join(str(p) for p in sorted(pids | {helper.pid})), flush=True)
        sys.stdout.write("written before the end")
        from deepwml.cli.common import exit_without_teardown
        exit_without_teardown(3)
    """)
    # into a file, not a pipe: a worker left running would hold a pipe open and keep run() waiting
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "w") as stdout, open(err, "w") as stderr:
        code = subprocess.run([sys.executable, "-c", script], stdout=stdout, stderr=stderr, timeout=120, cwd=REPO).returncode
    assert code == 3, err.read_text()
    first, last = out.read_text().splitlines()
    assert last == "written before the end"  # stdout flushed
    pids = [int(p) for p in first.split()]
    assert len(pids) >= 2 and os.getpid() not in pids
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)], "worker processes outlived the command"
