"""Hostile output folders for deepwml_predict (issue #11, points 2, 3 and 6): an -o that cannot or must not be used
is refused with one line before the model is read and before anything is created; outputs that would collide are
refused up front; temporaries of killed runs are removed, those of live writers are kept.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import write_image
from deepwml.inference.output_folder import MARKER_NAME
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from deepwml.utils.atomic import host_tag

EXIT_CASES_FAILED, EXIT_USER_ERROR = 1, 2


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A threshold toy model as a trained PLAN folder (outside every input and output folder)."""
    return write_model_dir(tmp_path / "model" / "Dataset999_Toy" / "tiny", tiny_plan(), kind="threshold")


def _scan(path: Path, seed: int = 0) -> Path:
    """A tiny FLAIR-like scan (3 slices of 48x48) at ``path``."""
    image, _, geometry = tiny_case(shape_zyx=(3, 48, 48), seed=seed)
    return write_image(image, geometry, path)


def _inputs(folder: Path, *names: str) -> Path:
    """A folder of tiny scans named ``names`` (with their endings)."""
    for i, name in enumerate(names):
        _scan(folder / name, seed=i)
    return folder


def _predict(*args) -> int:
    return predict_main([str(a) for a in args])


def _one_line_error(capsys, *fragments: str) -> str:
    """stderr is exactly one 'error:' line, without traceback, holding every fragment."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _tree(folder: Path) -> list:
    """Every path below ``folder`` (hidden ones too), to show nothing was created."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- the output folder, checked before any work (issue point 2) ------------------------------------------------

def test_output_that_is_a_file_is_refused_before_the_model_is_read(tmp_path, capsys):
    """A hostile user passes an existing file as -o (and a model that does not exist: it must not be looked at)."""
    inputs = _inputs(tmp_path / "in", "a.nii.gz")
    out = tmp_path / "results.txt"
    out.write_text("keep me")
    assert _predict("-i", inputs, "-o", out, "-m", tmp_path / "no_model") == EXIT_USER_ERROR
    _one_line_error(capsys, str(out), "is a file, not a folder", "choose a folder path for -o")
    assert out.read_text() == "keep me"
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "gone")  # -o a symlink whose target was deleted: mkdir would fail later
    assert _predict("-i", inputs, "-o", dangling, "-m", tmp_path / "no_model") == EXIT_USER_ERROR
    _one_line_error(capsys, str(dangling), "broken symbolic link", "choose another -o")
    assert not (tmp_path / "gone").exists()


def test_output_below_a_file_is_refused_and_nothing_is_made(tmp_path, capsys, model_dir):
    """-o names a folder below an existing file (a typo'd path through a file)."""
    inputs = _inputs(tmp_path / "in", "a.nii.gz")
    blocker = tmp_path / "notes.txt"
    blocker.write_text("x")
    out = blocker / "deeper" / "out"
    before = _tree(tmp_path)
    assert _predict("-i", inputs, "-o", out, "-m", model_dir) == EXIT_USER_ERROR
    _one_line_error(capsys, str(blocker), "is a file", str(out), "choose another -o")
    assert _tree(tmp_path) == before


def _unwritable_parent(tmp_path: Path) -> Path:
    """A folder this process cannot create files in: chmod 0555 for a normal user; for root (whom chmod does not
    stop) /sys, where even root cannot create files."""
    if os.geteuid() != 0:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o555)
        return locked
    if not Path("/sys").is_dir() or os.access("/sys", os.W_OK) and _root_can_write("/sys"):
        pytest.skip("running as root and no folder here refuses root's writes")
    return Path("/sys")


def _root_can_write(folder: str) -> bool:
    """Whether a file can really be created in ``folder`` (probe, removed again)."""
    probe = Path(folder) / f".deepwml_probe_test_{os.getpid()}"
    try:
        probe.touch()
    except OSError:
        return False
    probe.unlink()
    return True


def test_output_in_a_folder_that_cannot_be_written_is_refused_up_front(tmp_path, capsys, model_dir):
    """-o lies in a folder the user may not write to (read-only share, another user's folder)."""
    inputs = _inputs(tmp_path / "in", "a.nii.gz")
    parent = _unwritable_parent(tmp_path)
    out = parent / f"deepwml_out_{os.getpid()}"
    try:
        assert _predict("-i", inputs, "-o", out, "-m", model_dir) == EXIT_USER_ERROR
        _one_line_error(capsys, str(parent), "cannot write here", "choose an output folder you can write to")
        assert not out.exists() and not [p for p in parent.iterdir() if p.name.startswith(".deepwml_probe")]
    finally:
        if parent != Path("/sys"):
            parent.chmod(0o755)


def test_output_that_is_the_input_folder_is_refused(tmp_path, capsys, model_dir):
    """-o equals -i, spelled differently (a trailing '/.'), so a string comparison would miss it."""
    inputs = _inputs(tmp_path / "in", "a.nii.gz", "b.nii.gz")
    before = _tree(inputs)
    assert _predict("-i", inputs, "-o", f"{inputs}/.", "-m", model_dir) == EXIT_USER_ERROR
    _one_line_error(capsys, str(inputs), "is the input folder", "choose an -o outside it")
    assert _tree(inputs) == before


def test_output_deep_inside_the_input_folder_is_refused_and_not_made(tmp_path, capsys, model_dir):
    """-o is a new folder two levels below the input folder: the next run would read the masks as scans."""
    inputs = _inputs(tmp_path / "in", "a.nii.gz")
    out = inputs / "derived" / "deepwml"
    assert _predict("-i", inputs, "-o", out, "-m", model_dir) == EXIT_USER_ERROR
    _one_line_error(capsys, str(out), f"lies inside the input folder {inputs}", "choose an -o outside it")
    assert _tree(inputs) == ["a.nii.gz"]


def test_output_inside_the_input_through_symlinks_is_refused(tmp_path, capsys, model_dir):
    """-o reaches into the input folder through a symlink elsewhere, and -i itself is given through a symlink."""
    inputs = _inputs(tmp_path / "in", "a.nii.gz")
    (tmp_path / "elsewhere").symlink_to(inputs)
    out = tmp_path / "elsewhere" / "out"
    assert _predict("-i", inputs, "-o", out, "-m", model_dir) == EXIT_USER_ERROR
    _one_line_error(capsys, str(out), "inside the input folder")
    (tmp_path / "in_link").symlink_to(inputs)
    assert _predict("-i", tmp_path / "in_link", "-o", inputs / "out", "-m", model_dir) == EXIT_USER_ERROR
    _one_line_error(capsys, str(inputs / "out"), "inside the input folder")
    assert _tree(inputs) == ["a.nii.gz"]


def test_a_qc_file_in_the_way_is_refused_before_any_case_runs(tmp_path, capsys, model_dir):
    """The output folder holds a file named qc where the QC pictures' folder must go."""
    inputs = _inputs(tmp_path / "in", "a.nii.gz", "b.nii.gz")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "qc").write_text("not a folder")
    assert _predict("-i", inputs, "-o", tmp_path / "out", "-m", model_dir) == EXIT_USER_ERROR
    _one_line_error(capsys, str(tmp_path / "out" / "qc"), "in the way of the QC folder")
    assert _tree(tmp_path / "out") == ["qc"]


def test_an_earlier_output_folder_inside_the_input_is_not_taken_for_a_dicom_series(tmp_path, capsys, model_dir):
    """A user moves last week's output folder into the scans folder, then runs again: it must not become a
    (failed) DICOM case, nor vanish without a word; from before the marker existed it is still recognised."""
    inputs = _inputs(tmp_path / "in", "a.nii.gz", "b.nii.gz")
    assert _predict("-i", inputs, "-o", tmp_path / "out", "-m", model_dir) == 0
    assert (tmp_path / "out" / MARKER_NAME).is_file()
    shutil.move(tmp_path / "out", inputs / "last_week")
    shutil.copytree(inputs / "last_week", inputs / "older_version")
    (inputs / "older_version" / MARKER_NAME).unlink()  # outputs written before the marker existed
    capsys.readouterr()
    assert _predict("-i", inputs, "-o", tmp_path / "again", "-m", model_dir) == 0
    captured = capsys.readouterr()
    assert pd.read_csv(tmp_path / "again" / "summary.csv")["case_id"].tolist() == ["a", "b"]
    assert captured.err.count("skipped 2 earlier DeepWML output folder(s)") == 1
    assert "last_week" in captured.err and "older_version" in captured.err
    # the output folder itself given as -i is refused: its files are masks, not scans
    assert _predict("-i", inputs / "last_week", "-o", tmp_path / "third", "-m", model_dir) == EXIT_USER_ERROR
    _one_line_error(capsys, str(inputs / "last_week"), "is an output folder of deepwml_predict", "give the folder of scans to -i")
    assert not (tmp_path / "third").exists()


# --- outputs that collide (issue point 3) ----------------------------------------------------------------------

def test_a_case_named_like_another_cases_probabilities_is_refused_up_front(tmp_path, capsys, model_dir):
    """Cases A and A_prob with --save-probabilities: A's probabilities and A_prob's mask are one file."""
    inputs = _inputs(tmp_path / "in", "A.nii.gz", "A_prob.nii.gz")
    out = tmp_path / "out"
    assert _predict("-i", inputs, "-o", out, "-m", model_dir, "--save-probabilities") == EXIT_USER_ERROR
    _one_line_error(capsys, str(out), "cases A and A_prob", "A_prob.nii.gz", "rename one of the inputs", "--save-probabilities")
    assert not out.exists()
    # the same endings differing (A.mha, A_prob.nii.gz) are still one case's mask to anyone reading the folder
    (inputs / "A.nii.gz").unlink()
    _scan(inputs / "A.mha")
    assert _predict("-i", inputs, "-o", out, "-m", model_dir, "--save-probabilities") == EXIT_USER_ERROR
    _one_line_error(capsys, "cases A and A_prob", "A_prob.mha", "A_prob.nii.gz")
    assert not out.exists()
    # without probabilities the two cases do not collide and both are predicted
    assert _predict("-i", inputs, "-o", out, "-m", model_dir) == 0
    assert {"A.mha", "A_prob.nii.gz"} <= set(os.listdir(out))


def test_case_ids_differing_only_in_letter_case_are_refused(tmp_path, capsys, model_dir):
    """Inputs Case.nii.gz and case.mha: one mask file on macOS/Windows/SMB, where the second overwrites the first."""
    inputs = _inputs(tmp_path / "in", "Case.nii.gz", "case.mha", "other.nii.gz")
    out = tmp_path / "out"
    assert _predict("-i", inputs, "-o", out, "-m", model_dir, "--no-qc") == EXIT_USER_ERROR
    _one_line_error(capsys, str(out), "cases Case and case", "Case.nii.gz", "case.mha", "rename one of the inputs")
    assert not out.exists()
    # array jobs: the clash is refused in the part that holds only one of the two cases, too
    assert _predict("-i", inputs, "-o", out, "-m", model_dir, "--num-parts", 3, "--part-id", 2) == EXIT_USER_ERROR
    _one_line_error(capsys, "cases Case and case")
    assert not out.exists()


def test_the_other_cases_are_still_predicted_when_one_cases_output_cannot_be_written(tmp_path, capsys, model_dir):
    """A folder squats where one case's mask must go: that case fails alone, the others complete."""
    inputs = _inputs(tmp_path / "in", "a.nii.gz", "b.nii.gz", "c.nii.gz")
    out = tmp_path / "out"
    (out / "b.nii.gz").mkdir(parents=True)
    assert _predict("-i", inputs, "-o", out, "-m", model_dir) == EXIT_CASES_FAILED
    err = capsys.readouterr().err
    assert "1 case(s) failed" in err and "b:" in err and str(out / "b.nii.gz") in err
    summary = pd.read_csv(out / "summary.csv").set_index("case_id")
    assert summary["status"].to_dict() == {"a": "ok", "b": "failed", "c": "ok"}
    assert (out / "a.nii.gz").is_file() and (out / "c.nii.gz").is_file() and (out / "qc" / "c.png").is_file()
    assert not [p for p in out.rglob(".*.tmp*")], "temporary files left behind"


# --- temporaries of killed runs (issue point 6) ----------------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    from deepwml.utils.atomic import atomic_path
    with atomic_path(sys.argv[1], ".png") as tmp:
        tmp.write_bytes(b"half a picture")
        print(tmp, flush=True)
        sys.stdin.readline()  # the write finishes when the test closes stdin
    """
)


def _writer(target: Path) -> tuple:
    """A real process in the middle of an atomic write of ``target``; returns (process, its temporary path)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(target)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    tmp = Path(proc.stdout.readline().strip())
    assert tmp.is_file() and tmp.name.startswith(f".{target.name}.pid{proc.pid}@"), tmp
    return proc, tmp


def test_temporaries_of_a_run_killed_mid_write_are_removed_by_the_next_run(tmp_path, capsys, model_dir):
    """A writer is SIGKILLed while writing a QC picture and a mask; the next run clears both hidden leftovers."""
    inputs = _inputs(tmp_path / "in", "a.nii.gz", "b.nii.gz")
    out = tmp_path / "out"
    leftovers = []
    for target in (out / "qc" / "a.png", out / "a.nii.gz"):
        proc, tmp = _writer(target)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert tmp.exists() and not target.exists()
        leftovers.append(tmp)
    old = out / ".b.nii.gz.tmp.nii.gz"  # an untagged temporary from an older version, two days old
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    assert _predict("-i", inputs, "-o", out, "-m", model_dir) == 0
    assert "removed 3 temporary file(s) of killed runs" in capsys.readouterr().out
    assert not any(p.exists() for p in (*leftovers, old))
    assert not [p for p in out.rglob(".*.tmp*")]
    assert (out / "qc" / "a.png").is_file() and (out / "a.nii.gz").is_file()


def test_a_live_writers_temporary_in_a_shared_output_folder_is_kept(tmp_path, capsys, model_dir):
    """Two array jobs share -o: one is still writing when the other starts; its temporary must survive, and so
    must a fresh one of a process on another host (its pid cannot be checked from here)."""
    inputs = _inputs(tmp_path / "in", "a.nii.gz", "b.nii.gz")
    out = tmp_path / "out"
    target = out / "qc" / "zz_other_part.png"
    proc, tmp = _writer(target)
    try:
        other_host = out / f".c.nii.gz.pid{os.getpid()}@not-{host_tag()}.abcd1234.tmp.nii.gz"
        other_host.write_bytes(b"being written elsewhere")
        assert _predict("-i", inputs, "-o", out, "-m", model_dir, "--num-parts", 2, "--part-id", 0) == 0
        assert "temporary file(s)" not in capsys.readouterr().out
        assert tmp.is_file() and other_host.is_file()
        proc.stdin.close()  # the other part finishes its write undisturbed
        assert proc.wait(timeout=60) == 0 and target.read_bytes() == b"half a picture" and not tmp.exists()
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
