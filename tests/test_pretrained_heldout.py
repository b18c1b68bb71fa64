"""benchmarks/pretrained_heldout.py: the held-out figures split by matrix and by lesion load."""
from __future__ import annotations

from deepwml_testing.benchmarks import load_benchmark


def _benchmark():
    """benchmarks/pretrained_heldout.py as a module."""
    return load_benchmark("pretrained_heldout")


def test_split_table_pools_components_and_averages_case_figures_per_group():
    bench = _benchmark()
    row = {"matrix": "fine (>= 384)", "small_found": 1, "small": 4, "false": 2, "predicted": 5}
    rows = [{**row, "load": ">= 10 ml", "dice": 0.8, "f1": 0.6},
            {**row, "load": ">= 10 ml", "dice": 0.6, "f1": float("nan")},
            {**row, "load": "< 10 ml", "dice": 0.2, "f1": 0.4, "small_found": 0}]
    lines = bench.split_table(rows, "load", "lesion load").splitlines()
    assert lines[2] == "| >= 10 ml | 2 | 0.700 | 0.600 | 0.25 (2 / 8) | 4 / 10 |"
    assert lines[3] == "| < 10 ml | 1 | 0.200 | 0.400 | 0.00 (0 / 4) | 2 / 5 |"
    assert bench.split_table(rows, "matrix", "matrix").splitlines()[2].startswith("| fine (>= 384) | 3 | 0.533 |")


def test_case_rows_count_small_lesions_found_and_give_their_contrast_apart(tmp_path):
    """A bright small lesion the prediction finds and a faint one it misses: both are small, one found, and the
    contrast line reports each one's brightness against the tissue around it, as --min-lesion-contrast measures."""
    import numpy as np

    from deepwml.imageio import Geometry, write_image

    bench = _benchmark()
    geometry = Geometry((40, 40, 3), (0.5, 0.5, 5.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    image = np.full((3, 40, 40), 100.0, np.float32)
    label = np.zeros((3, 40, 40), np.uint8)
    image[1, 10:12, 10:12], label[1, 10:12, 10:12] = 160.0, 1  # bright, 4 voxels of 1.25 ul
    image[1, 28:30, 28:30], label[1, 28:30, 28:30] = 110.0, 1  # faint
    for folder, array in (("imagesTr", image), ("labelsTr", label)):
        write_image(array, geometry, tmp_path / "data" / folder / "case.nii.gz")
    found = np.zeros_like(label)
    found[1, 10:12, 10:12] = 1
    write_image(found, geometry, tmp_path / "pred" / "case.nii.gz")
    (row,) = bench.case_rows(tmp_path / "data", tmp_path / "pred")
    assert (row["small"], row["small_found"], row["false"], row["predicted"]) == (2, 1, 0, 1)
    assert row["small_found_contrast"] == [1.6] and row["small_missed_contrast"] == [1.1]
    assert bench.contrast_line([row]).endswith("found 1, median 1.60; missed 1, median 1.10")
