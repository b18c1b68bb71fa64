"""Is it a FLAIR at all? A scan with bright CSF (T2-weighted) is predicted but flagged in summary.csv, the terminal and
on resume; a FLAIR is not; the figure counts bright voxels at the brain's surface outside the lesions only."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepwml.imageio import Geometry
from deepwml.inference.flair_check import (BRIGHT_FACTOR, MAX_BRIGHT_SHARE, bright_share, check_region, contrast_fields,
                                           contrast_warning, outer_shell, with_map_warnings)
from deepwml.inference.lesion_report import ANATOMY_SUMMARY_COLUMNS, BRIGHT_SHARE_COLUMN
from deepwml_testing.benchmarks import load_benchmark


def _head() -> tuple:
    """A 40 mm box of brain (anatomy white matter) on a 3-slice 1 mm grid, its image at 100 and the geometry."""
    anatomy = np.zeros((3, 60, 60), np.uint8)
    anatomy[:, 10:50, 10:50] = 1
    image = np.where(anatomy > 0, 100.0, 0.0).astype(np.float32)
    return anatomy, image, Geometry((60, 60, 3), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))


def test_the_share_counts_bright_voxels_at_the_brain_surface_outside_the_lesions():
    anatomy, image, geometry = _head()
    mask = np.zeros(anatomy.shape, bool)
    brain = 3 * 40 * 40  # the region's voxels above 0 (the margin around the brain holds 0 here)
    assert bright_share(image, anatomy, geometry, mask) == 0.0
    image[1, 11:15, 20:25] = 100 * BRIGHT_FACTOR + 1  # 20 bright voxels at the surface (the outer 8 mm)
    image[1, 28:32, 28:33] = 100 * BRIGHT_FACTOR + 1  # and 20 deep: lesion the model missed, never CSF of the sulci
    image[1, 20, 12] = 100 * BRIGHT_FACTOR - 1  # not brighter than the factor
    assert bright_share(image, anatomy, geometry, mask) == pytest.approx(20 / brain)
    mask[1, 11:15, 20:23] = True  # 12 of the surface ones are lesion: not counted
    assert bright_share(image, anatomy, geometry, mask) == pytest.approx(8 / brain)
    # bright voxels in the 3 mm margin around the brain (CSF the anatomy model left out) count; those beyond do not
    image[1, 8, 20:30] = 500.0
    image[1, 3, 20:30] = 500.0
    assert bright_share(image, anatomy, geometry, mask) == pytest.approx(18 / (brain + 10))
    assert contrast_fields(image, anatomy, geometry, mask) == {BRIGHT_SHARE_COLUMN: round(18 / (brain + 10), 4)}
    assert bright_share(image, np.zeros_like(anatomy), geometry, mask) is None  # no brain found
    cortex_only = np.where(anatomy > 0, 3, 0).astype(np.uint8)
    assert bright_share(image, cortex_only, geometry, mask) is None  # no white matter to measure against
    assert contrast_fields(image, np.zeros_like(anatomy), geometry, mask) == {}
    assert BRIGHT_SHARE_COLUMN in ANATOMY_SUMMARY_COLUMNS


def test_the_region_is_the_brain_grown_3_mm_in_plane_and_its_shell_the_outer_8_mm():
    anatomy, _, geometry = _head()
    region, box = check_region(anatomy, geometry.in_plane_pixels)
    whole = np.zeros(anatomy.shape, bool)
    whole[box] = region
    expected = np.zeros(anatomy.shape, bool)
    expected[:, 7:53, 7:53] = True  # a square margin on this 1 mm grid, never across slices
    assert np.array_equal(whole, expected)
    inner = np.zeros(anatomy.shape, bool)
    inner[:, 15:45, 15:45] = True
    assert np.array_equal(outer_shell(expected, geometry.in_plane_pixels), expected & ~inner)
    # the same head stored with its slices along the last array axis: the same region, transposed
    sideways = Geometry((3, 60, 60), (5.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    assert sideways.slice_axis_numpy == 2
    region, box = check_region(np.moveaxis(anatomy, 0, 2), sideways.in_plane_pixels)
    turned = np.zeros((60, 60, 3), bool)
    turned[box] = region
    assert np.array_equal(turned, np.moveaxis(expected, 0, 2))
    assert np.array_equal(outer_shell(turned, sideways.in_plane_pixels), np.moveaxis(expected & ~inner, 0, 2))


def test_the_warning_joins_the_acquisition_warning_only_above_the_limit():
    assert contrast_warning({BRIGHT_SHARE_COLUMN: MAX_BRIGHT_SHARE}) == ""
    assert contrast_warning({}) == "" and contrast_warning({BRIGHT_SHARE_COLUMN: float("nan")}) == ""
    assert contrast_warning({BRIGHT_SHARE_COLUMN: None}) == "" and contrast_warning({BRIGHT_SHARE_COLUMN: "x"}) == ""
    said = contrast_warning({BRIGHT_SHARE_COLUMN: 0.05})
    assert said.startswith("not like a T2-FLAIR: 5.0% of the brain") and "T2-" in said
    assert contrast_warning({BRIGHT_SHARE_COLUMN: MAX_BRIGHT_SHARE + 1e-4}).startswith("not like a T2-FLAIR")
    assert with_map_warnings("", {BRIGHT_SHARE_COLUMN: 0.05}) == said
    assert with_map_warnings("slices 1 mm thick", {BRIGHT_SHARE_COLUMN: 0.05}) == f"slices 1 mm thick; {said}"
    assert with_map_warnings("slices 1 mm thick", {BRIGHT_SHARE_COLUMN: 0.0}) == "slices 1 mm thick"


@pytest.mark.slow
def test_a_t2_weighted_scan_is_flagged_and_stays_flagged_on_resume_a_flair_is_not(tmp_path, capfd):
    """The benchmark's two arms on one patient, with the shipped models as a user runs them; the second run resumes."""
    bench = load_benchmark("flair_check")
    args = ["--work", str(tmp_path / "work"), "--centres", "MS#2", "--per-centre", "1", "--weightings", "FLAIR", "T2w"]
    assert bench.main(args) == 0
    printed = capfd.readouterr().out
    rows = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in printed.splitlines() if line.startswith("| ")}
    assert [cell.strip() for cell in rows["FLAIR"][:2]] == ["1", "0"] and [cell.strip() for cell in rows["T2w"][:2]] == ["1", "1"]
    flair = pd.read_csv(tmp_path / "work" / "FLAIR" / "pred" / "summary.csv").iloc[0]
    t2 = pd.read_csv(tmp_path / "work" / "T2w" / "pred" / "summary.csv").iloc[0]
    assert flair[BRIGHT_SHARE_COLUMN] <= MAX_BRIGHT_SHARE < t2[BRIGHT_SHARE_COLUMN]
    assert "not like a T2-FLAIR" in t2["acquisition_warning"]
    assert "not like a T2-FLAIR" not in str(flair["acquisition_warning"])
    # resumed: the case is done, and its row keeps the figure and the warning
    assert bench.main(args) == 0
    again = pd.read_csv(tmp_path / "work" / "T2w" / "pred" / "summary.csv").iloc[0]
    assert again[BRIGHT_SHARE_COLUMN] == t2[BRIGHT_SHARE_COLUMN] and again["acquisition_warning"] == t2["acquisition_warning"]
    assert "1 already done" in capfd.readouterr().out
    # a bad arm is one line
    assert bench.main(["--work", str(tmp_path / "w2"), "--weightings", "DWI"]) == 2
    assert bench.main(["--work", str(Path(bench.__file__).resolve().parents[1] / "x")]) == 2  # inside the repository
