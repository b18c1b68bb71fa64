"""DICOM SEG out (issue #14 point 6): a series written by the test, predicted with the toy model, its SEG read back
frame by frame against the source slices and the NIfTI mask; and BIDS-derivative output names for NIfTI inputs."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from conftest import oblique_direction, tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image
from deepwml.inference.bids_names import output_names
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from test_dicom import UID_ROOT, write_dicom_series

hd = pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom (pip install 'deepwml[dicom]')")

AXIAL = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A threshold toy model (deterministic lesion masks)."""
    return write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")


def _predict(*args) -> int:
    return predict_main([str(a) for a in args])


def _series(folder: Path, direction, seed: int = 4, n_lesions: int = 5) -> Path:
    image, _, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), direction=direction, seed=seed, n_lesions=n_lesions)
    return write_dicom_series(folder, np.round(image * 10).astype(np.int16), geometry, UID_ROOT + f"80.{seed}")


@pytest.mark.parametrize("direction", [AXIAL, oblique_direction(12)], ids=["axial", "oblique"])
def test_seg_frames_land_on_their_source_slices_and_equal_the_mask(tmp_path, model_dir, direction):
    _series(tmp_path / "dicom" / "patient7", direction)
    assert _predict("-i", tmp_path / "dicom", "-o", tmp_path / "out", "-m", model_dir, "--dicom-seg") == 0
    mask = read_image(tmp_path / "out" / "patient7.nii.gz", dtype=None).array
    assert mask.any() and not mask.all(axis=(1, 2)).any()
    sources = {ds.SOPInstanceUID: ds for ds in (pydicom.dcmread(p) for p in (tmp_path / "dicom" / "patient7").iterdir())}
    # the NIfTI mask's slice z lies on the source file whose position is z-th along the slice normal
    normal = np.cross(*np.reshape(next(iter(sources.values())).ImageOrientationPatient, (2, 3)))
    by_position = sorted(sources.values(), key=lambda ds: float(np.dot(normal, ds.ImagePositionPatient)))
    z_of = {ds.SOPInstanceUID: z for z, ds in enumerate(by_position)}

    seg = hd.seg.segread(tmp_path / "out" / "patient7_seg.dcm")
    first = by_position[0]
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert (seg.FrameOfReferenceUID, seg.StudyInstanceUID, seg.PatientID) == (first.FrameOfReferenceUID, first.StudyInstanceUID, first.PatientID)
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == first.SeriesInstanceUID
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID
    frames = seg.pixel_array.reshape(-1, *mask.shape[1:]) > 0
    drawn, seen = np.zeros(mask.shape, bool), []
    for k, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        uid = group.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        z = z_of[uid]
        position = group.PlanePositionSequence[0].ImagePositionPatient
        assert np.allclose(np.asarray(position, float), np.asarray(sources[uid].ImagePositionPatient, float), atol=1e-4)
        # the segments (one per location class with the anatomy map) part the mask: no voxel in two
        assert not (drawn[z] & frames[k]).any() and frames[k].any(), f"frame {k} (slice {z})"
        drawn[z] |= frames[k]
        seen.append((int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber), z))
    # the frames of each segment's slices that hold its lesions, once each; united, the mask
    assert len(seen) == len(set(seen)) and np.array_equal(drawn, mask > 0)


def test_seg_of_an_empty_mask_is_valid_with_empty_frames(tmp_path, model_dir):
    _series(tmp_path / "dicom" / "calm", AXIAL, seed=5, n_lesions=0)
    assert _predict("-i", tmp_path / "dicom", "-o", tmp_path / "out", "-m", model_dir, "--dicom-seg") == 0
    assert not read_image(tmp_path / "out" / "calm.nii.gz", dtype=None).array.any()
    seg = hd.seg.segread(tmp_path / "out" / "calm_seg.dcm")
    assert seg.NumberOfFrames == 5 and not seg.pixel_array.any()


def test_series_without_frame_of_reference_fails_alone_with_the_reason(tmp_path, model_dir, capsys):
    """A hostile (or old) series lacking the Frame of Reference UID cannot carry a SEG; the other case still runs."""
    bad = _series(tmp_path / "dicom" / "nofor", AXIAL, seed=6)
    for path in bad.iterdir():
        ds = pydicom.dcmread(path)
        del ds.FrameOfReferenceUID
        ds.save_as(path)
    _series(tmp_path / "dicom" / "good", AXIAL, seed=7)
    assert _predict("-i", tmp_path / "dicom", "-o", tmp_path / "out", "-m", model_dir, "--dicom-seg") == 1
    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    assert summary.loc["good", "status"] == "ok" and (tmp_path / "out" / "good_seg.dcm").is_file()
    assert summary.loc["nofor", "status"] == "failed" and "Frame of Reference" in summary.loc["nofor", "error"]
    assert not (tmp_path / "out" / "nofor.nii.gz").exists()  # no mask: the case is not marked done
    assert "nofor" in capsys.readouterr().err


def test_dicom_seg_without_highdicom_is_refused_before_anything_runs(tmp_path, model_dir, monkeypatch, capsys):
    import deepwml.inference.dicom_seg as dicom_seg

    monkeypatch.setattr(dicom_seg, "highdicom_available", lambda: False)
    _series(tmp_path / "dicom" / "p", AXIAL)
    assert _predict("-i", tmp_path / "dicom", "-o", tmp_path / "out", "-m", model_dir, "--dicom-seg") == 2
    assert "needs highdicom" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bids_names_rule():
    assert output_names("sub-01_ses-2_acq-tse_FLAIR", bids=True).mask == "sub-01_ses-2_acq-tse_desc-wmh_mask"
    names = output_names("sub-01_desc-preproc_FLAIR", bids=True)  # the input's desc- is replaced, not kept
    assert (names.mask, names.probabilities, names.uncertainty, names.lesions) == (
        "sub-01_desc-wmh_mask", "sub-01_label-WMH_probseg", "sub-01_desc-wmh_uncertainty", "sub-01_desc-wmh_lesions")
    assert output_names("sub-01", bids=True).mask == "sub-01_desc-wmh_mask"
    for plain in ("patient7", "sub01_FLAIR", "sub-01_ses-2_two_suffixes", "sub-01_ses_FLAIR"):
        assert output_names(plain, bids=True).mask == plain, plain
    assert output_names("sub-01_FLAIR").mask == "sub-01_FLAIR"  # only when asked


def test_bids_names_for_nifti_inputs_and_plain_names_for_others(tmp_path, model_dir):
    image, _, geometry = tiny_case(shape_zyx=(6, 72, 60), spacing_xyz=(0.9, 0.8, 6.0), seed=1, n_lesions=4)
    write_image(image, geometry, tmp_path / "in" / "sub-01_ses-2_FLAIR.nii.gz")
    write_image(image, geometry, tmp_path / "in" / "scan.nii.gz")
    args = ["-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--bids-names", "--save-probabilities", "--save-uncertainty"]
    assert _predict(*args) == 0
    out = tmp_path / "out"
    for name in ("sub-01_ses-2_desc-wmh_mask.nii.gz", "sub-01_ses-2_label-WMH_probseg.nii.gz",
                 "sub-01_ses-2_desc-wmh_uncertainty.nii.gz", "sub-01_ses-2_desc-wmh_lesions.csv",
                 "qc/sub-01_ses-2_FLAIR.png", "scan.nii.gz", "scan_prob.nii.gz", "scan_lesions.csv"):  # fmt: skip
        assert (out / name).is_file(), name
    assert not (out / "sub-01_ses-2_FLAIR.nii.gz").exists()
    summary = pd.read_csv(out / "summary.csv")
    assert summary["case_id"].tolist() == ["scan", "sub-01_ses-2_FLAIR"] and (summary["status"] == "ok").all()
    mask = read_image(out / "sub-01_ses-2_desc-wmh_mask.nii.gz", dtype=None)
    assert np.array_equal(mask.array, read_image(out / "scan.nii.gz", dtype=None).array)
    # resume finds the BIDS-named outputs
    stamp = (out / "sub-01_ses-2_desc-wmh_mask.nii.gz").stat().st_mtime_ns
    assert _predict(*args) == 0
    assert (out / "sub-01_ses-2_desc-wmh_mask.nii.gz").stat().st_mtime_ns == stamp


def _segment_voxels(seg, source: Path, number: int) -> np.ndarray:
    """One segment of a SEG on the series' (z, rows, cols) grid, slice z the series' z-th file as DeepWML reads it."""
    from deepwml.imageio.dicom import chosen_series

    uids = [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in chosen_series(source).files]
    return seg.get_pixels_by_source_instance(uids, segment_numbers=[number], assert_missing_frames_are_empty=True)[..., 0] > 0


def test_location_segments_part_the_mask_by_the_tables_classes_each_in_its_qc_colour(tmp_path):
    """A reader toggles periventricular, deep ... lesions apart in a viewer, and their union is the mask."""
    from deepwml.anatomy.location import LOCATIONS
    from deepwml.imageio.dicom_seg_masks import read_seg_mask
    from deepwml.inference.dicom_seg import LOCATION_SEGMENT_LABELS, build_dicom_seg, location_label_map, source_headers
    from deepwml.inference.qc import LOCATION_COLOURS

    source = _series(tmp_path / "series", AXIAL)
    ids = np.zeros((5, 64, 56), np.uint16)
    ids[1, 10:14, 10:14] = 1
    ids[1:3, 30:33, 20:26] = 2
    ids[3, 40:42, 40:45] = 3
    ids[4, 5:7, 5:7] = 4
    locations = ["periventricular", "deep", "periventricular", "infratentorial"]
    labels, classes = location_label_map(ids, locations)
    # classes in LOCATIONS order, each label the voxels of its lesions
    assert classes == [n for n in LOCATIONS if n in locations] == ["infratentorial", "periventricular", "deep"]
    assert np.array_equal(labels == 2, np.isin(ids, [1, 3]))
    assert np.array_equal(labels == 3, ids == 2) and np.array_equal(labels == 1, ids == 4) and not labels[ids == 0].any()
    with pytest.raises(ValueError):
        location_label_map(ids, locations[:3])  # a lesion the table does not place is a bug

    path = tmp_path / "case_seg.dcm"
    build_dicom_seg(labels, source_headers(source), "DeepWML toy", locations=classes).save_as(path)
    seg = hd.seg.segread(path)
    described = {int(s.SegmentNumber): s for s in seg.SegmentSequence}
    assert [str(described[k].SegmentLabel) for k in sorted(described)] == [LOCATION_SEGMENT_LABELS[n] for n in classes]
    assert LOCATION_SEGMENT_LABELS["deep"] == "Deep white matter lesions"
    for number, name in enumerate(classes, start=1):
        assert np.array_equal(_segment_voxels(seg, source, number), labels == number), name
        # the QC picture's colour (CIELab in the file, back to RGB within rounding)
        lab = hd.color.CIELabColor.from_dicom_value(described[number].RecommendedDisplayCIELabValue)
        assert np.allclose(lab.to_rgb(), LOCATION_COLOURS[name], atol=2), name
    regions = {k: str(s.AnatomicRegionSequence[0].CodeMeaning) for k, s in described.items()}
    assert regions == {1: "Brain", 2: "Cerebral White Matter", 3: "Cerebral White Matter"}
    # read back as a lesion mask (every lesion segment united): the mask exactly
    assert np.array_equal(read_seg_mask(path, source) > 0, ids > 0)
    # a reader deletes lesion 4 from its segment (what a viewer's eraser does): the mask read back loses it alone
    edited = hd.seg.segread(path)
    frames = edited.pixel_array.copy()
    infratentorial = [k for k, g in enumerate(edited.PerFrameFunctionalGroupsSequence)
                      if int(g.SegmentIdentificationSequence[0].ReferencedSegmentNumber) == 1]
    frames[infratentorial] = 0
    edited.PixelData = np.packbits(frames.reshape(-1), bitorder="little").tobytes()  # BINARY: bits packed across frames
    edited.save_as(tmp_path / "edited_seg.dcm")
    assert np.array_equal(read_seg_mask(tmp_path / "edited_seg.dcm", source) > 0, (ids > 0) & (ids != 4))


def test_predict_writes_a_segment_per_location_class_of_its_table_and_one_segment_without_the_anatomy_map(tmp_path, model_dir):
    from deepwml.inference.dicom_seg import LOCATION_SEGMENT_LABELS, SEGMENT_LABEL
    from deepwml.inference.lesion_report import lesion_id_labels

    source = _series(tmp_path / "dicom" / "patient7", AXIAL)
    assert _predict("-i", tmp_path / "dicom", "-o", tmp_path / "out", "-m", model_dir, "--dicom-seg") == 0
    table = pd.read_csv(tmp_path / "out" / "patient7_lesions.csv")
    mask = read_image(tmp_path / "out" / "patient7.nii.gz", dtype=None)
    labels, _ = lesion_id_labels(mask.array > 0, mask.geometry.slice_axis_numpy)
    seg = hd.seg.segread(tmp_path / "out" / "patient7_seg.dcm")
    by_label = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    classes = sorted(set(table.location))
    assert len(classes) >= 2 and sorted(by_label) == sorted(LOCATION_SEGMENT_LABELS[c] for c in classes)
    for name in classes:
        expected = np.isin(labels, table.lesion_id[table.location == name])
        assert np.array_equal(_segment_voxels(seg, source, by_label[LOCATION_SEGMENT_LABELS[name]]), expected), name

    assert _predict("-i", tmp_path / "dicom", "-o", tmp_path / "plain", "-m", model_dir, "--dicom-seg", "--no-anatomy") == 0
    seg = hd.seg.segread(tmp_path / "plain" / "patient7_seg.dcm")
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == [SEGMENT_LABEL]
    assert "RecommendedDisplayCIELabValue" not in seg.SegmentSequence[0]
