"""A brain cut by the field of view is named in summary.csv's brain_coverage (deepwml.anatomy.volumes), end to end:
benchmarks/field_of_view.py crops a scan to its brain's box and cuts it 10 mm into the brain at each side."""
from __future__ import annotations

import pandas as pd
import pytest

from deepwml.imageio import read_image, write_image
from deepwml.synthetic.generate import generate_case
from deepwml_testing.benchmarks import load_benchmark


@pytest.mark.slow
def test_the_benchmark_names_each_cut_side_and_leaves_the_brain_box_as_the_whole_scan(tmp_path, capsys):
    """deepwml_predict with the shipped models on a skull-stripped generator scan and its copies: the copy cropped to
    the brain's box is called as the whole scan, each 10 mm cut names its side, the brain volume shrinks with a cut;
    the copies keep the scan's world position; a second run reuses everything."""
    bench = load_benchmark("field_of_view")
    case = generate_case("CSVD#1", index=1, seed=4344, skull_stripped=True)
    write_image(case.image, case.geometry, tmp_path / "scans" / "one.nii.gz")
    args = ["--work", str(tmp_path / "work"), "-i", str(tmp_path / "scans"), "--cuts", "10"]
    assert bench.main(args) == 0
    out = capsys.readouterr().out
    box = next(line for line in out.splitlines() if line.startswith("| box |"))
    cut = next(line for line in out.splitlines() if line.startswith("| cut 10 mm |"))
    assert box.split(" | ")[1:3] == ["1", "1"] and cut.split(" | ")[1:3] == ["4", "4"]
    rows = pd.read_csv(tmp_path / "work" / "copies_predicted" / "summary.csv").set_index("case_id")
    for side in ("back", "front", "left", "right"):
        assert side in rows.loc[f"one__{side}10", "brain_coverage"]
        assert rows.loc[f"one__{side}10", "brain_volume_ml"] < rows.loc["one__box", "brain_volume_ml"]
    # a copy is the scan's own voxels where it keeps them, at their place in the world
    whole, back = read_image(tmp_path / "scans" / "one.nii.gz"), read_image(tmp_path / "work" / "copies" / "one__back10.nii.gz")
    corner = back.geometry.index_to_world([0, 0, 0])
    index = (corner - whole.geometry.index_to_world([0, 0, 0])) @ whole.geometry.direction_matrix / whole.geometry.spacing
    i, j, k = (int(round(v)) for v in index)
    assert back.array[0, 0, 0] == whole.array[k, j, i] and back.array.shape[0] == whole.array.shape[0]
    assert bench.main(args) == 0
    again = capsys.readouterr().out
    assert "0 case(s) predicted, 1 already done" in again and "0 case(s) predicted, 5 already done" in again


def test_a_cut_of_0_mm_is_refused(tmp_path):
    bench = load_benchmark("field_of_view")
    assert bench.main(["--work", str(tmp_path / "w"), "--cuts", "4", "0"]) == 2
