"""--dicom-sr: the measurements as a DICOM Structured Report (TID 1500) a PACS or registry reads as numbers; each
lesion's outlines drawn back onto the referenced images give its mask, and its figures are the lesion table's."""
from __future__ import annotations

from pathlib import Path
from typing import Dict

import numpy as np
import pandas as pd
import pydicom
import pytest
from skimage.draw import polygon2mask

from conftest import oblique_direction, tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image
from deepwml.imageio.dicom import chosen_series
from deepwml.inference import dicom_sr
from deepwml.anatomy.location import LOCATIONS
from deepwml.inference.dicom_seg import LOCATION_SEGMENT_LABELS
from deepwml.inference.dicom_sr import (BRAIN_TRACKING, CASE_TRACKING, LOCAL_SCHEME, SR_SERIES_NUMBER, VENTRICLE_TRACKING,
                                      LesionOutlines, slice_outlines)
from deepwml.inference.lesion_report import lesion_id_labels
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from test_dicom import UID_ROOT, write_dicom_series
from test_dicom_findings import assert_nifti_gets_a_note

hd = pytest.importorskip("highdicom", reason="DICOM outputs need highdicom (pip install 'deepwml[dicom]')")

COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A threshold toy model (deterministic lesion masks)."""
    return write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")


def _series(folder: Path, seed: int = 4, n_lesions: int = 5, direction=oblique_direction(10)) -> Path:
    image, _, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), direction=direction, seed=seed,
                                   n_lesions=n_lesions)
    return write_dicom_series(folder, np.round(image * 10).astype(np.int16), geometry, UID_ROOT + f"95.{seed}")


def _measurements(group) -> Dict[str, float]:
    """A measurement group's numbers by concept meaning."""
    return {m.name.meaning: float(m.value) for m in group.get_measurements()}


def _drawn(group, slice_of: Dict, shape) -> np.ndarray:
    """The voxels inside a lesion group's outlines, each on the slice of the instance (or frame) it references."""
    out = np.zeros(shape, dtype=bool)
    for region in group.roi:
        ref = region.ContentSequence[0].ReferencedSOPSequence[0]
        frame = int(ref.ReferencedFrameNumber) if "ReferencedFrameNumber" in ref else None
        z = slice_of[(ref.ReferencedSOPInstanceUID, frame)]
        points = np.asarray(region.value, dtype=float)
        assert np.allclose(points[0], points[-1])  # a closed outline
        # DICOM pixel coordinates (column, row), the top-left pixel's centre at (0.5, 0.5)
        out[z] |= polygon2mask(shape[1:], points[:, ::-1] - 0.5)
    return out


def _plain_groups(sr) -> Dict[str, Dict[str, float]]:
    """The SR's measurement groups in order by tracking identifier: their numbers by concept meaning."""
    (measurements,) = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements"]
    out = {}
    for group in measurements.ContentSequence:
        items = group.ContentSequence
        name = next(i.TextValue for i in items if i.ValueType == "TEXT" and i.ConceptNameCodeSequence[0].CodeMeaning == "Tracking Identifier")
        out[name] = {i.ConceptNameCodeSequence[0].CodeMeaning: float(i.MeasuredValueSequence[0].NumericValue)
                     for i in items if i.ValueType == "NUM"}
    return out


def test_the_sr_reports_each_lesion_as_the_table_does_and_its_outlines_redraw_the_mask(tmp_path, model_dir):
    source = _series(tmp_path / "dicom" / "patient7")
    out = tmp_path / "out"
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model_dir), "--dicom-sr", "--dicom-seg"]) == 0
    mask = read_image(out / "patient7.nii.gz", dtype=None)
    table = pd.read_csv(out / "patient7_lesions.csv")
    summary = pd.read_csv(out / "summary.csv").iloc[0]
    assert len(table) >= 3

    sr = hd.sr.srread(out / "patient7_sr.dcm")
    scan = pydicom.dcmread(next(source.iterdir()), stop_before_pixels=True)
    seg = pydicom.dcmread(out / "patient7_seg.dcm", stop_before_pixels=True)
    assert sr.SOPClassUID == COMPREHENSIVE_3D_SR and int(sr.SeriesNumber) == SR_SERIES_NUMBER
    assert (sr.PatientID, sr.StudyInstanceUID) == (scan.PatientID, scan.StudyInstanceUID)
    assert sr.SeriesInstanceUID not in (scan.SeriesInstanceUID, seg.SeriesInstanceUID)
    assert [s.CodingSchemeDesignator for s in sr.CodingSchemeIdentificationSequence] == [LOCAL_SCHEME]

    groups = sr.content.get_volumetric_roi_measurement_groups()
    located = [g for g in groups if str(g.tracking_identifier) in LOCATION_SEGMENT_LABELS.values()]
    lesions = groups[len(located):]
    # a group per location class of the table, on that class's segment of the SEG, with summary.csv's figures
    classes = [name for name in LOCATIONS if name in set(table.location)]
    assert len(classes) >= 2 and [str(g.tracking_identifier) for g in located] == [LOCATION_SEGMENT_LABELS[n] for n in classes]
    segment_number = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    for group, name in zip(located, classes):
        ref = group.referenced_segment[0].ReferencedSOPSequence[0]
        assert (ref.ReferencedSOPInstanceUID, int(ref.ReferencedSegmentNumber)) == (
            seg.SOPInstanceUID, segment_number[LOCATION_SEGMENT_LABELS[name]])
        figures = _measurements(group)
        assert figures["Number of lesions (observable entity)"] == summary[f"{name}_count"] == (table.location == name).sum()
        assert figures["Volume"] == pytest.approx(summary[f"{name}_volume_ml"])
        assert figures["Volume"] == pytest.approx(table.volume_ml[table.location == name].sum(), abs=1e-3)
        classes_of = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
        assert classes_of["DeepWML lesion location class"] == name
    # the whole case comes first; the SEG split by location has no segment of every lesion, so it stands alone
    plain = _plain_groups(sr)
    assert list(plain)[0] == CASE_TRACKING and CASE_TRACKING not in [str(g.tracking_identifier) for g in groups]
    totals = plain[CASE_TRACKING]
    assert totals["Number of lesions (observable entity)"] == summary.lesion_count == len(table)
    assert totals["Volume"] == pytest.approx(summary.total_lesion_volume_ml)
    assert totals["Fazekas periventricular grade (estimate)"] == summary.fazekas_periventricular
    assert totals["Supratentorial lesion volume within 10 mm of the ventricles"] == pytest.approx(summary.volume_within_10mm_of_ventricles_ml)
    assert totals["Supratentorial lesion volume beyond 10 mm of the ventricles"] == pytest.approx(summary.volume_beyond_10mm_of_ventricles_ml)
    assert totals["Lesions itemised in this report"] == len(table)
    assert totals["Lesion volume as a percentage of the brain parenchyma volume"] == pytest.approx(summary.lesion_percent_of_brain)
    # the brain's and the ventricles' volumes stand alone after the lesion groups, the brain's with its coverage
    assert list(plain)[-2:] == [BRAIN_TRACKING, VENTRICLE_TRACKING]
    assert plain[BRAIN_TRACKING] == {"Volume": pytest.approx(summary.brain_volume_ml)}
    assert plain[VENTRICLE_TRACKING] == {"Volume": pytest.approx(summary.ventricle_volume_ml)}
    (measurements,) = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements"]
    coverage = [i.ConceptCodeSequence[0].CodeMeaning for i in measurements.ContentSequence[-2].ContentSequence
                if i.ValueType == "CODE" and i.ConceptNameCodeSequence[0].CodeMeaning == "Brain coverage of the scanned slices"]
    assert coverage == [summary.brain_coverage]

    assert [str(g.tracking_identifier) for g in lesions] == [f"lesion {k}" for k in table.lesion_id]
    slice_of = {(uid, None): z for z, uid in enumerate(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID
                                                        for f in chosen_series(source).files)}
    labels, _ = lesion_id_labels(mask.array > 0, mask.geometry.slice_axis_numpy)
    for group, row in zip(lesions, table.itertuples(index=False)):
        figures = _measurements(group)
        assert figures["Volume"] == pytest.approx(row.volume_ml)
        assert figures["Long axis"] == pytest.approx(row.long_axis_mm)
        assert figures["Probability"] == pytest.approx(row.mean_probability)
        assert figures["DeepWML lesion confidence"] == pytest.approx(row.confidence)
        classes = {q.name.meaning: q.value.meaning for q in group.get_qualitative_evaluations()}
        assert classes["DeepWML lesion location class"] == row.location
        assert group.finding_type.meaning == "White Matter T2 Hyperintensity"
        assert np.array_equal(_drawn(group, slice_of, labels.shape), labels == row.lesion_id), f"lesion {row.lesion_id}"


def test_without_the_anatomy_map_the_case_group_lies_on_the_seg_s_one_segment(tmp_path, model_dir):
    _series(tmp_path / "dicom" / "patient7")
    out = tmp_path / "out"
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model_dir), "--dicom-sr", "--dicom-seg",
                         "--no-anatomy"]) == 0
    seg = pydicom.dcmread(out / "patient7_seg.dcm", stop_before_pixels=True)
    groups = hd.sr.srread(out / "patient7_sr.dcm").content.get_volumetric_roi_measurement_groups()
    assert str(groups[0].tracking_identifier) == CASE_TRACKING
    assert all(str(g.tracking_identifier).startswith("lesion ") for g in groups[1:])  # no location groups
    ref = groups[0].referenced_segment[0].ReferencedSOPSequence[0]
    assert (ref.ReferencedSOPInstanceUID, int(ref.ReferencedSegmentNumber)) == (seg.SOPInstanceUID, 1)
    assert _measurements(groups[0])["Number of lesions (observable entity)"] == len(pd.read_csv(out / "patient7_lesions.csv"))


def test_without_a_seg_the_location_groups_stand_alone_with_the_summary_figures(tmp_path, model_dir):
    _series(tmp_path / "dicom" / "patient7")
    out = tmp_path / "out"
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model_dir), "--dicom-sr"]) == 0
    summary = pd.read_csv(out / "summary.csv").iloc[0]
    classes = [name for name in LOCATIONS if summary[f"{name}_count"] > 0]
    assert classes
    groups = _plain_groups(hd.sr.srread(out / "patient7_sr.dcm"))
    # the case, then the location classes, then each lesion (outlined, TID 1411), then the brain and ventricles
    assert list(groups) == [CASE_TRACKING] + [LOCATION_SEGMENT_LABELS[n] for n in classes] + [
        f"lesion {k}" for k in range(1, int(summary.lesion_count) + 1)] + [BRAIN_TRACKING, VENTRICLE_TRACKING]
    for name in classes:
        figures = groups[LOCATION_SEGMENT_LABELS[name]]
        assert figures["Number of lesions (observable entity)"] == summary[f"{name}_count"]
        assert figures["Volume"] == pytest.approx(summary[f"{name}_volume_ml"])


def test_without_a_seg_the_case_stands_alone_and_an_empty_mask_reports_no_lesion(tmp_path, model_dir, capsys):
    _series(tmp_path / "dicom" / "calm", seed=5, n_lesions=0)
    out = tmp_path / "out"
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model_dir), "--dicom-sr"]) == 0
    assert not (out / "calm_seg.dcm").exists()
    sr = hd.sr.srread(out / "calm_sr.dcm")
    # no outlined lesion; the whole case as a measurement group of its own (TID 1501)
    assert not sr.content.get_volumetric_roi_measurement_groups()
    (measurements,) = [item for item in sr.ContentSequence if item.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurements"]
    group, brain, ventricles = measurements.ContentSequence  # the case, then the brain's and ventricles' volumes
    numbers = {i.ConceptNameCodeSequence[0].CodeMeaning: float(i.MeasuredValueSequence[0].NumericValue)
               for i in group.ContentSequence if i.ValueType == "NUM"}
    assert numbers["Number of lesions (observable entity)"] == 0 and numbers["Volume"] == 0
    assert numbers["Lesion volume as a percentage of the brain parenchyma volume"] == 0
    # a second run finds the case done
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model_dir), "--dicom-sr"]) == 0
    assert "0 case(s) predicted, 1 already done" in capsys.readouterr().out
    # a NIfTI input gets no SR and one note
    assert_nifti_gets_a_note(tmp_path, model_dir, "--dicom-sr", capsys)


@pytest.mark.filterwarnings("ignore")
def test_outlines_on_a_multiframe_source_reference_its_frames(tmp_path, model_dir):
    from test_dicom_study import _multiframe

    classic = _series(tmp_path / "classic", seed=6)
    _multiframe(classic, tmp_path / "dicom" / "patient8")
    out = tmp_path / "out"
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model_dir), "--dicom-sr"]) == 0
    mask = read_image(out / "patient8.nii.gz", dtype=None)
    table = pd.read_csv(out / "patient8_lesions.csv")
    assert len(table) >= 2
    source = pydicom.dcmread(tmp_path / "dicom" / "patient8" / "enhanced.dcm", stop_before_pixels=True)
    # frame k (1-based) lies on the mask slice at its position
    normal = np.asarray(mask.geometry.direction_matrix)[:, 2]
    slice_of = {}
    for k, g in enumerate(source.PerFrameFunctionalGroupsSequence, start=1):
        position = np.asarray(g.PlanePositionSequence[0].ImagePositionPatient, float)
        slice_of[(source.SOPInstanceUID, k)] = int(round(normal @ (position - np.asarray(mask.geometry.origin)) / mask.geometry.spacing[2]))
    assert sorted(slice_of.values()) != list(slice_of.values())  # stored top-down: the frame order is not the slice order
    labels, _ = lesion_id_labels(mask.array > 0, mask.geometry.slice_axis_numpy)
    lesions = hd.sr.srread(out / "patient8_sr.dcm").content.get_volumetric_roi_measurement_groups()
    for group, row in zip(lesions, table.itertuples(index=False)):
        assert np.array_equal(_drawn(group, slice_of, labels.shape), labels == row.lesion_id), f"lesion {row.lesion_id}"


def test_a_mask_of_more_lesions_than_the_sr_itemises_lists_the_largest_and_counts_them_all(tmp_path, model_dir, monkeypatch):
    # a model far outside its data can return thousands of specks: the SR stays bounded (it took minutes before)
    _series(tmp_path / "dicom" / "patient9", seed=4)
    monkeypatch.setattr(dicom_sr, "SR_MAX_LESIONS", 2)
    out = tmp_path / "out"
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model_dir), "--dicom-sr", "--dicom-seg"]) == 0
    table = pd.read_csv(out / "patient9_lesions.csv")
    summary = pd.read_csv(out / "summary.csv").iloc[0]
    assert len(table) >= 3
    sr = hd.sr.srread(out / "patient9_sr.dcm")
    lesions = [g for g in sr.content.get_volumetric_roi_measurement_groups() if str(g.tracking_identifier).startswith("lesion ")]
    totals = _plain_groups(sr)[CASE_TRACKING]
    # the totals still count every lesion; the case says how many have a group of their own
    assert totals["Number of lesions (observable entity)"] == len(table)
    assert totals["Volume"] == pytest.approx(summary.total_lesion_volume_ml)
    assert totals["Lesions itemised in this report"] == 2
    assert [str(g.tracking_identifier) for g in lesions] == ["lesion 1", "lesion 2"]  # the two largest
    mask = read_image(out / "patient9.nii.gz", dtype=None)
    labels, _ = lesion_id_labels(mask.array > 0, mask.geometry.slice_axis_numpy)
    slice_of = {(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID, None): z
                for z, f in enumerate(chosen_series(tmp_path / "dicom" / "patient9").files)}
    for group, k in zip(lesions, (1, 2)):
        assert _measurements(group)["Volume"] == pytest.approx(table.volume_ml[k - 1])
        assert np.array_equal(_drawn(group, slice_of, labels.shape), labels == k)


def test_lesions_are_itemised_largest_first_within_the_outline_budget_passing_over_a_sprawling_one(tmp_path):
    source = _series(tmp_path / "dicom" / "p", seed=7, n_lesions=0)
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in chosen_series(source).files]
    mask = np.zeros((5, 64, 56), bool)
    mask[1, 10, 2:42:4] = True  # ten specks on one slice ...
    mask[2, 10, 2:42] = True  # ... joined in 3D by a bar on the next: one lesion of 11 outlines, the largest
    mask[3, 30:35, 20:25] = True  # 25 voxels
    mask[4, 40:43, 10:13] = True  # 9
    mask[0, 50:52, 40:42] = True  # 4
    mask[0, 20, 50] = True  # 1
    outlines = LesionOutlines(mask, headers)
    assert outlines.count == 5 and len(outlines.outlines(1)) == 11
    ids = [1, 2, 3, 4, 5]
    assert outlines.itemised(ids) == ids
    assert outlines.itemised(ids, max_lesions=2) == [1, 2]
    # the sprawling lesion does not fit the budget: the others still do, in their order, until it is spent
    assert outlines.itemised(ids, max_outlines=5) == [2, 3, 4, 5]
    assert outlines.itemised(ids, max_outlines=3) == [2, 3, 4]
    assert outlines.itemised(ids, max_outlines=0) == []
    # regions are the outlines, each on the instance of its slice
    assert [r.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID for r in outlines.regions(2)] == [headers[3].SOPInstanceUID]


def test_outlines_hold_exactly_the_region_pixels_and_leave_holes_out():
    rng = np.random.default_rng(0)
    for _ in range(20):
        region = rng.random((30, 40)) > 0.6
        region[0, :] = region[:, -1] = True  # touching the border
        drawn = np.zeros_like(region)
        for outline in slice_outlines(region):
            drawn |= polygon2mask(region.shape, outline[:, ::-1] - 0.5)
        from scipy import ndimage

        filled = ndimage.binary_fill_holes(region)
        # every pixel of the region is inside an outline, nothing outside its filled shape is
        assert not (region & ~drawn).any() and not (drawn & ~filled).any()
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False
    assert len(slice_outlines(ring)) == 1
    one = np.zeros((5, 5), bool)
    one[2, 3] = True
    (outline,) = slice_outlines(one)
    # a single pixel: a diamond through its edge midpoints around its centre (3.5, 2.5)
    assert np.allclose(outline.mean(axis=0)[None], np.array([[3.5, 2.5]]), atol=0.2)

