"""deepwml_testing.cases: a synthetic input scan drawn once per run, shared by the test processes, a copy per caller."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

import deepwml.synthetic.generate as generate
from deepwml_testing import cases


def test_a_case_is_drawn_once_kept_for_the_other_processes_and_each_caller_gets_a_copy(tmp_path, monkeypatch):
    drawn = []

    def fake(centre, index, seed, **options):
        drawn.append((centre, index, seed, options))
        return {"image": np.full((2, 3), float(index)), "options": options}

    monkeypatch.setattr(generate, "generate_case", fake)
    monkeypatch.setenv(cases.STORE_ENV, str(tmp_path))
    cases._drawn.cache_clear()
    first = cases.input_case("MS#1", 1, 3, truth=True)
    first["image"][:] = -1  # a test changing its copy changes no other test's
    again = cases.input_case("MS#1", index=1, seed=3, truth=True)
    assert drawn == [("MS#1", 1, 3, {"truth": True})] and np.array_equal(again["image"], np.ones((2, 3)))
    assert cases.input_case("MS#1", 2, 3, truth=True)["image"][0, 0] == 2 and len(drawn) == 2
    # another process (a fresh memory) reads what this one kept, whole, and draws nothing
    assert len(list(tmp_path.glob("*.pkl"))) == 2 and not list(tmp_path.glob("*.tmp"))
    cases._drawn.cache_clear()
    assert np.array_equal(cases.input_case("MS#1", 1, 3, truth=True)["image"], np.ones((2, 3))) and len(drawn) == 2
    cases._drawn.cache_clear()


def test_the_test_processes_of_a_run_share_one_folder_that_the_run_removes(tmp_path):
    """tests/conftest.py names one folder for the run; both xdist workers inherit it, and it is gone afterwards."""
    seen = tmp_path / "seen"
    seen.mkdir()
    probe = tmp_path / "test_probe.py"
    probe.write_text("import os\nfrom pathlib import Path\n\n"
                     "def _note():\n    worker = os.environ['PYTEST_XDIST_WORKER']\n"
                     f"    Path({str(seen)!r}, worker).write_text(os.environ['{cases.STORE_ENV}'])\n\n"
                     "def test_a():\n    _note()\n\ndef test_b():\n    _note()\n")
    env = {k: v for k, v in os.environ.items() if k not in (cases.STORE_ENV, "PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT")}
    # this checkout's conftest as a plugin of a run of the probe alone, on two workers that each take one test
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-n", "2", "--dist", "each", "-p", "no:cacheprovider",
                          "-c", os.devnull, "--rootdir", str(tmp_path), "-p", "tests.conftest", str(probe)],
                         capture_output=True, text=True, env=env, cwd=str(Path(__file__).resolve().parent.parent))
    assert run.returncode == 0, run.stdout + run.stderr
    stores = {f.read_text() for f in seen.iterdir()}
    assert len(list(seen.iterdir())) == 2 and len(stores) == 1 and not os.path.exists(stores.pop())
