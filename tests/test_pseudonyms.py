"""deepwml_predict --pseudonymise KEY: outputs named by keyed pseudonyms, with nothing naming the scans inside them."""
from __future__ import annotations

import csv
import stat
from pathlib import Path

import pytest

from deepwml.cli.predict import main as predict_main
from deepwml.inference.pseudonyms import load_or_create_key, pseudonym
from deepwml.utils.errors import DeepWMLError
from test_dicom_findings import _series
from test_patient_report import _write_case, model_dir  # noqa: F401 - the fixture

pytest.importorskip("highdicom", reason="DICOM inputs with series labels need highdicom's test helpers")


def _outputs(out: Path) -> list:
    """Every file name below an output folder, hidden ones included."""
    return sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())


def test_cases_are_named_by_keyed_pseudonyms_and_nothing_inside_names_the_scan(tmp_path, model_dir):  # noqa: F811
    """A patient-named DICOM folder and a file: outputs carry only P + 12 hex digits, stable under one key and
    different under another; the report and summary hold neither path, folder name nor the series label; the key
    (owner-only) and pseudonyms.csv beside it say who is who."""
    inputs = tmp_path / "in"
    _series(inputs / "DOE_JANE_1957", seed=4)
    _write_case(inputs, "smith_john.nii.gz", seed=1)
    key = tmp_path / "keys" / "site.key"
    key.parent.mkdir()
    out = tmp_path / "out"
    assert predict_main(["-i", str(inputs), "-o", str(out), "-m", str(model_dir), "--pseudonymise", str(key), "--report"]) == 0
    secret, created = load_or_create_key(key)
    assert not created and len(secret) == 32 and stat.S_IMODE(key.stat().st_mode) == 0o600
    names = {pseudonym(secret, "DOE_JANE_1957"), pseudonym(secret, "smith_john")}
    assert all(n.startswith("P") and len(n) == 13 for n in names)
    files = _outputs(out)
    assert {f"{n}.nii.gz" for n in names} <= set(files) and {f"report/{n}.html" for n in names} <= set(files)
    for name in files:
        assert "DOE" not in name and "smith" not in name, name
        if name.endswith((".csv", ".html", ".json", ".txt")):
            text = (out / name).read_text(errors="replace")
            assert "DOE_JANE" not in text and "smith_john" not in text and str(inputs) not in text, name
    with open(out / "summary.csv", newline="") as f:
        assert [r["source_series"] for r in csv.DictReader(f)] == ["", ""]  # the DICOM series label left out
    with open(key.parent / "pseudonyms.csv", newline="") as f:
        rows = {r["pseudonym"]: r for r in csv.DictReader(f)}
    assert {rows[n]["case_id"] for n in names} == {"DOE_JANE_1957", "smith_john"}
    assert rows[pseudonym(secret, "smith_john")]["source"].endswith("smith_john.nii.gz")
    assert stat.S_IMODE((key.parent / "pseudonyms.csv").stat().st_mode) == 0o600
    # the same key names them alike again (a second run finds them done); another key names them otherwise
    assert predict_main(["-i", str(inputs), "-o", str(out), "-m", str(model_dir), "--pseudonymise", str(key)]) == 0
    assert _outputs(out) == files
    other = tmp_path / "keys" / "other.key"
    out2 = tmp_path / "out2"
    assert predict_main(["-i", str(inputs), "-o", str(out2), "-m", str(model_dir), "--pseudonymise", str(other)]) == 0
    assert not names & {p.name.split(".")[0] for p in out2.glob("P*.nii.gz")}


def test_pseudonymise_refuses_dicom_outputs_a_key_in_the_output_folder_and_a_file_that_is_no_key(tmp_path, model_dir, capsys):  # noqa: F811
    """DICOM objects carry the patient's identity by design; the output folder is what gets shared; a key must be one:
    each refusal is one line and writes nothing."""
    _write_case(tmp_path / "in", "a.nii.gz")
    out = tmp_path / "out"
    base = ["-i", str(tmp_path / "in"), "-o", str(out), "-m", str(model_dir), "--pseudonymise"]
    bad = tmp_path / "bad.key"
    bad.write_text("not a key\n")
    for extra, message in (([str(tmp_path / "k.key"), "--dicom-seg"], "--dicom-seg name or carry it"),
                           ([str(out / "k.key")], "the key lies inside the output folder"),
                           ([str(bad)], "not a DeepWML pseudonym key"),
                           ([str(tmp_path / "missing" / "k.key")], "the key's folder does not exist")):
        assert predict_main(base + extra) == 2, extra
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists() and not (tmp_path / "k.key").exists()


def test_a_failed_case_s_error_shows_input_not_its_path(tmp_path, model_dir):  # noqa: F811
    """An unreadable scan fails alone; its summary row's error names <input>, not the patient's file."""
    inputs = tmp_path / "in"
    _write_case(inputs, "a.nii.gz")
    (inputs / "ROE_RICHARD.nii.gz").write_bytes(b"\x1f\x8b not really a gzip")
    out = tmp_path / "out"
    key = tmp_path / "site.key"
    assert predict_main(["-i", str(inputs), "-o", str(out), "-m", str(model_dir), "--pseudonymise", str(key)]) == 1
    summary = (out / "summary.csv").read_text()
    assert "ROE_RICHARD" not in summary and "<input>" in summary and "failed" in summary


def test_a_key_is_made_once_and_read_back():
    """pseudonym() is a keyed hash: the same name and key, the same pseudonym; another key, another one."""
    assert pseudonym(b"k" * 32, "patient01") == pseudonym(b"k" * 32, "patient01")
    assert pseudonym(b"k" * 32, "patient01") != pseudonym(b"j" * 32, "patient01")
    with pytest.raises(DeepWMLError):
        load_or_create_key(Path("/nonexistent-folder-deepwml/k.key"))


def test_runs_side_by_side_share_one_key_and_one_list(tmp_path, model_dir):  # noqa: F811
    """--num-parts runs started together with no key yet: one key is made, every part names its cases with it, and
    pseudonyms.csv lists every case (the key's lock serialises making the key and adding to the list)."""
    import threading

    from deepwml.inference.pseudonyms import MAP_NAME

    for k in range(4):
        _write_case(tmp_path / "in", f"case{k}.nii.gz", seed=k)
    key = tmp_path / "site.key"
    codes = []

    def part(k: int) -> None:
        codes.append(predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model_dir),
                                   "--pseudonymise", str(key), "--num-parts", "2", "--part-id", str(k), "-np", "1"]))

    threads = [threading.Thread(target=part, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert codes == [0, 0]
    secret, _ = load_or_create_key(key)
    expected = {pseudonym(secret, f"case{k}") for k in range(4)}
    assert {p.name.split(".")[0] for p in (tmp_path / "out").glob("P*.nii.gz")} == expected
    with open(tmp_path / MAP_NAME, newline="") as f:
        assert {r["pseudonym"] for r in csv.DictReader(f)} == expected
