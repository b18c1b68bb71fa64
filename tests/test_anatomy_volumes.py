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
    """An anatomy map [slices, 40, 40] whose slice k holds areas[k] brain pixels (white matter, then cortex, row by row
    a pixel inside the field's edges; the first slice 5 more, infratentorial) and, on the middle slice, 10 ventricle
    pixels."""
    anatomy = np.zeros((len(areas), 40, 40), np.uint8)
    for k, area in enumerate(areas):
        flat = anatomy[k, 1:-1, 1:-1].copy().reshape(-1)
        flat[:area] = WHITE_MATTER
        flat[area // 2:area] = CORTEX
        anatomy[k, 1:-1, 1:-1] = flat.reshape(38, 38)
    anatomy[0, 38, 1:6] = INFRATENTORIAL
    anatomy[len(areas) // 2, 30, 1:11] = VENTRICLE
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


def _disk_head(n_slices: int = 5, size: int = 60, centre=(30, 30), radius: int = 20) -> np.ndarray:
    """An anatomy map [slices, size, size] holding a disk of white matter (1 mm pixels) on every slice."""
    yy, xx = np.mgrid[:size, :size]
    disk = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    anatomy = np.zeros((n_slices, size, size), np.uint8)
    anatomy[:, disk] = WHITE_MATTER
    anatomy[[0, -1]] = 0  # the brain ends within the stack
    anatomy[0, 30, 30] = anatomy[-1, 30, 30] = WHITE_MATTER
    return anatomy


RAS_STORED = (1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # rows from posterior to anterior, as MNI-space NIfTI


@pytest.mark.parametrize("crop,direction,expected", [
    ((slice(None), slice(20, None), slice(None)), RAS_STORED, "cut at the back"),  # row 0 is posterior: 35 mm on it
    ((slice(None), slice(20, None), slice(None)), AXIAL_UP, "cut at the front"),  # identity: row 0 is anterior
    ((slice(None), slice(None), slice(None, 46)), AXIAL_UP, "cut on the left"),  # the last column: +x, left (LPS)
    ((slice(None), slice(None), slice(14, None)), AXIAL_UP, "cut on the right"),
    ((slice(None), slice(20, None), slice(None, 46)), RAS_STORED, "cut at the back and on the left"),
    ((slice(None), slice(10, 50), slice(10, 50)), AXIAL_UP, "complete"),  # cropped to the brain's box: it touches
    ((slice(None), slice(11, None), slice(None)), AXIAL_UP, "complete"),  # 1 mm into it: 13 mm along the edge
])
def test_coverage_names_the_side_where_the_field_of_view_cuts_the_brain(crop, direction, expected):
    """A field of view too small for the head cuts the brain in-plane: the side is named by the world direction of
    the edge; a scan cropped to the brain's box (the brain touches each edge at a point) is complete."""
    anatomy = _disk_head()[crop]
    geometry = Geometry(anatomy.shape[::-1], (1.0, 1.0, 6.0), (0.0, 0.0, 0.0), direction)
    assert brain_coverage(anatomy, geometry) == expected


def test_an_in_plane_cut_joins_a_cut_at_the_end_slices_and_the_findings_name_both():
    anatomy = _disk_head()[:, 20:, :]
    anatomy[0] = anatomy[2]  # the first slice holds a whole slice's brain: it runs past the bottom (index rises up)
    geometry = Geometry(anatomy.shape[::-1], (1.0, 1.0, 6.0), (0.0, 0.0, 0.0), RAS_STORED)
    assert brain_coverage(anatomy, geometry) == "cut at the bottom and at the back"
    sagittal = Geometry(anatomy.shape[::-1], (1.0, 1.0, 6.0), (0.0, 0.0, 0.0), SAGITTAL)  # rows run along z
    assert brain_coverage(anatomy, sagittal) == "cut at the first slice and at the bottom"
    mask = np.zeros(anatomy.shape, np.uint8)
    mask[2, 20:24, 20:24] = 1
    summary = summarize_case("scan", mask, geometry, pd.DataFrame({"lesion_id": [1]}), anatomy)
    line = next(line for line in findings_lines(summary, "m") if line.startswith("Brain parenchyma"))
    assert line.endswith("the brain is cut at the bottom and at the back of the scan: its scanned part only")
