"""Brain and ventricle volumes from the anatomy map, the lesion share of the brain, and whether the brain runs past
the scan (summary.csv, findings, report page, BIDS table)."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from deepwml.anatomy.labels import CORTEX, INFRATENTORIAL, VENTRICLE, WHITE_MATTER
from deepwml.anatomy.volumes import brain_coverage, tissue_volumes
from deepwml.imageio import Geometry
from deepwml.inference.findings import findings_lines
from deepwml.inference.lesion_report import ANATOMY_SUMMARY_COLUMNS, summarize_case

AXIAL_UP = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)  # slice index rises towards the vertex (LPS +z)
AXIAL_DOWN = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
SAGITTAL = (0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0)  # slice index runs left-right


def _head(areas) -> np.ndarray:
    """An anatomy map [slices, 40, 40] whose slice k holds areas[k] brain pixels (white matter, then cortex; the
    first slice 5 more, infratentorial) and, on the middle slice, 10 ventricle pixels."""
    anatomy = np.zeros((len(areas), 40, 40), np.uint8)
    for k, area in enumerate(areas):
        flat = anatomy[k].reshape(-1)
        flat[:area] = WHITE_MATTER
        flat[area // 2:area] = CORTEX
    anatomy[0, 39, :5] = INFRATENTORIAL
    anatomy[len(areas) // 2, 30, :10] = VENTRICLE
    return anatomy


def test_volumes_count_the_parenchyma_without_the_ventricles_and_the_lesion_share_is_of_it():
    anatomy = _head([100, 800, 1000, 900, 200])
    geometry = Geometry((40, 40, 5), (0.5, 0.5, 6.0), (0.0, 0.0, 0.0), AXIAL_UP)  # 1.5 microlitre voxels
    got = tissue_volumes(anatomy, geometry, lesion_ml=0.9)
    brain_ml = (3000 + 5) * 0.0015
    assert got["brain_volume_ml"] == round(brain_ml, 1) and got["ventricle_volume_ml"] == round(10 * 0.0015, 2)
    assert got["lesion_percent_of_brain"] == pytest.approx(100 * 0.9 / brain_ml, abs=1e-3)
    assert got["brain_coverage"] == "complete"  # end slices hold 10.5 % and 20 % of the largest slice's brain
    assert list(got) == [c for c in ANATOMY_SUMMARY_COLUMNS if c in got]


@pytest.mark.parametrize("areas,direction,expected", [
    ([1000, 800, 900, 200], AXIAL_UP, "cut at the bottom"),  # first slice, and index rises upwards: the bottom
    ([1000, 800, 900, 200], AXIAL_DOWN, "cut at the top"),
    ([200, 800, 900, 400], AXIAL_UP, "cut at the top"),  # 400 of 900: more than a third
    ([200, 800, 900, 290], AXIAL_UP, "complete"),
    ([500, 800, 900, 400], AXIAL_DOWN, "cut at both ends"),
    ([500, 800, 900, 100], SAGITTAL, "cut at the first slice"),
    ([0, 0, 0, 0], AXIAL_UP, "no brain"),
])
def test_coverage_names_the_end_where_the_brain_runs_past_the_scan(areas, direction, expected):
    anatomy = _head(areas)
    if not any(areas):
        anatomy[:] = 0
    geometry = Geometry((40, 40, len(areas)), (0.5, 0.5, 6.0), (0.0, 0.0, 0.0), direction)
    assert brain_coverage(anatomy, geometry) == expected


def test_no_brain_gives_no_share_and_the_findings_say_so_the_cut_is_a_caution():
    geometry = Geometry((40, 40, 4), (0.5, 0.5, 6.0), (0.0, 0.0, 0.0), AXIAL_UP)
    empty = tissue_volumes(np.zeros((4, 40, 40), np.uint8), geometry, lesion_ml=0.0)
    assert empty["brain_volume_ml"] == 0 and math.isnan(empty["lesion_percent_of_brain"])
    mask = np.zeros((4, 40, 40), np.uint8)
    mask[1, 5:9, 5:9] = 1
    anatomy = _head([1000, 800, 900, 200])
    summary = summarize_case("scan", mask, geometry, pd.DataFrame({"lesion_id": [1]}), anatomy)
    lines = findings_lines(summary, "the shipped model")
    brain = [line for line in lines if line.startswith("Brain parenchyma on the scanned slices")]  # 16 of 2905 voxels
    assert brain == ["Brain parenchyma on the scanned slices 4 ml (lesions 0.55 % of it), lateral ventricles 0.0 ml; "
                     "the brain is cut at the bottom of the scan: its scanned part only"]
    summary.anatomy.update(empty)
    assert "No brain parenchyma found on the scanned slices by the anatomy model" in findings_lines(summary, "m")
