"""benchmarks/field_strength.py: the same patients at the other field strength differ in the scanner alone."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import deepwml.synthetic.generate as generate
from deepwml_testing.benchmarks import load_benchmark


def test_the_other_field_strength_keeps_the_patient_and_changes_only_the_scan(tmp_path):
    """Inside the context each scan takes the other field strength's base contrast from the same draws: the same
    lesion mask, stack and metadata, another image; outside it the generator is as before. The benchmark's files
    resume."""
    bench = load_benchmark("field_strength")
    drawn = generate.generate_case("MS#3", 1, 5)
    with bench.other_field_strength():
        other = generate.generate_case("MS#3", 1, 5)
    again = generate.generate_case("MS#3", 1, 5)
    np.testing.assert_array_equal(other.label, drawn.label)
    assert other.geometry == drawn.geometry and other.meta.extra == drawn.meta.extra
    assert not np.array_equal(other.image, drawn.image)
    np.testing.assert_array_equal(again.image, drawn.image)
    folder = bench.make_arm(tmp_path / "arm", ["MS#3"], 1, 5, swap=True)
    first = (folder / "imagesTr" / "MS3_001.nii.gz").stat().st_mtime_ns
    bench.make_arm(tmp_path / "arm", ["MS#3"], 1, 5, swap=True)
    assert (folder / "imagesTr" / "MS3_001.nii.gz").stat().st_mtime_ns == first


def test_bad_settings_are_one_line(tmp_path, capsys):
    bench = load_benchmark("field_strength")
    assert bench.main(["--work", str(tmp_path), "--centres", "MS#9"]) == 2
    assert "unknown: MS#9" in capsys.readouterr().err
    assert bench.main(["--work", str(Path(bench.__file__).resolve().parents[1] / "x")]) == 2  # inside the repository
    assert "outside the repository" in capsys.readouterr().err
