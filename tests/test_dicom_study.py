"""DICOM as scanners and PACS export it: a study folder whose T2-FLAIR is chosen among T1, DWI, localiser and SEG
series; enhanced (multi-frame) objects read with the geometry of the classic series they hold, and their DICOM
SEG frames on the right source frames; compressed transfer syntaxes."""
from __future__ import annotations

import locale
import shutil
from pathlib import Path
from typing import List

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk

from conftest import oblique_direction, tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image
from deepwml.imageio.dicom_series import SeriesInfo
from deepwml.inference.inputs import discover_cases
from deepwml.utils.errors import ImageError
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from test_dicom import UID_ROOT, _flair_int16, write_dicom_series

AXIAL = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
SAGITTAL = (0, 0, -1.0, 1.0, 0, 0, 0, -1.0, 0)  # x -> posterior, y -> inferior, slices along left-right
STUDY = UID_ROOT + "60"


def _timing(te: float, ti: float = None) -> dict:
    tags = {"0018|0081": f"{te:g}"}
    if ti is not None:
        tags["0018|0082"] = f"{ti:g}"
    return tags


def _series(folder: Path, uid: str, description: str, number: int, tags: dict, seed: int = 0, direction=AXIAL) -> np.ndarray:
    """One classic series of a study (same study UID) in ``folder``; returns its int16 voxels."""
    array, geometry = _flair_int16(seed=seed, direction=direction)
    write_dicom_series(folder, array, geometry, uid, study_uid=STUDY, prefix=f"s{number}_", description=description,
                       extra_tags={"0020|0011": str(number), "0008|0020": "20240115", **tags})
    return array


def _study(folder: Path) -> np.ndarray:
    """A study as a PACS exports it, all series in one folder: localiser, T1, DWI, the T2-FLAIR and an earlier
    DeepWML SEG of it; returns the FLAIR's voxels."""
    _series(folder, UID_ROOT + "60.1", "localizer", 1, _timing(3), seed=1, direction=SAGITTAL)
    _series(folder, UID_ROOT + "60.2", "AX T1 FLAIR", 2, _timing(12, 860), seed=2)
    _series(folder, UID_ROOT + "60.3", "AX DWI b1000", 3, _timing(89), seed=3)
    flair = _series(folder, UID_ROOT + "60.4", "t2_tirm_tra_dark-fluid", 4, _timing(85, 2500), seed=4)
    pytest.importorskip("highdicom")
    from deepwml.inference.dicom_seg import write_dicom_seg

    write_dicom_seg((flair > 1000).astype(np.uint8), folder, folder / "zz_seg.dcm", "earlier run", UID_ROOT + "60.4")
    return flair


def test_the_flair_of_a_study_folder_is_read_and_the_choice_is_said(tmp_path, capsys):
    flair = _study(tmp_path / "study")
    image = read_image(tmp_path / "study")
    assert np.array_equal(image.array, flair.astype(np.float32))
    note = capsys.readouterr().err
    assert "'t2_tirm_tra_dark-fluid'" in note and "the only T2-FLAIR of 4 MR image series" in note and "--series-uid" in note
    # naming a series still reads that one
    t1 = read_image(tmp_path / "study", series_uid=UID_ROOT + "60.2")
    assert not np.array_equal(t1.array, image.array)


def test_two_flairs_or_none_are_errors_listing_the_series(tmp_path):
    folder = tmp_path / "two"
    _series(folder, UID_ROOT + "61.1", "AX FLAIR", 5, _timing(120, 2200), seed=1)
    _series(folder, UID_ROOT + "61.2", "AX FLAIR repeat", 9, _timing(120, 2200), seed=2)  # e.g. repeated for motion
    with pytest.raises(ImageError) as info:
        read_image(folder)
    message = str(info.value)
    assert str(folder) in message and "2 of its 2 MR image series look like a T2-FLAIR" in message
    assert "series 5 'AX FLAIR' (5 slices, 6 mm, axial)" in message and "series 9 'AX FLAIR repeat'" in message
    assert UID_ROOT + "61.2" in message and "--series-uid" in message

    folder = tmp_path / "none"
    _series(folder, UID_ROOT + "62.1", "AX T2 FSE", 2, _timing(100), seed=1)
    _series(folder, UID_ROOT + "62.2", "AX T1 SE", 3, _timing(10), seed=2)
    with pytest.raises(ImageError, match=r"none of its 2 MR image series is named or timed as a T2-FLAIR.*'AX T2 FSE'.*'AX T1 SE'"):
        read_image(folder)


@pytest.mark.parametrize("post_name, post_tags", [
    ("AX FLAIR +C", {}),
    ("AX FLAIR", {"0018|0010": "Gadobutrol"}),  # the header records the agent; the name does not say
    ("t2_tirm_tra_dark-fluid_post_KM", {}),
], ids=["named", "agent-tag", "siemens-km"])
def test_of_a_flair_before_and_after_contrast_the_one_before_is_read(tmp_path, capsys, post_name, post_tags):
    folder = tmp_path / "study"
    pre = _series(folder, UID_ROOT + "65.1", "AX FLAIR pre-contrast", 4, _timing(120, 2400), seed=1)
    _series(folder, UID_ROOT + "65.2", post_name, 9, {**_timing(120, 2400), **post_tags}, seed=2)
    assert np.array_equal(read_image(folder).array, pre.astype(np.float32))
    note = capsys.readouterr().err
    assert "of 2 T2-FLAIRs among 2 MR image series, the only pre-contrast one" in note and "'AX FLAIR pre-contrast'" in note
    # the choice is listed with its reason when both are post-contrast
    both = tmp_path / "both"
    _series(both, UID_ROOT + "66.1", "AX FLAIR +C", 4, _timing(120, 2400), seed=1)
    _series(both, UID_ROOT + "66.2", post_name, 9, {**_timing(120, 2400), **post_tags}, seed=2)
    with pytest.raises(ImageError, match=r"2 of its 2 MR image series look like a T2-FLAIR.*contrast"):
        read_image(both)


def test_a_series_name_pattern_picks_the_series_in_every_study_of_a_batch(tmp_path, capsys):
    """Two FLAIRs alike in each study (the protocol's own and a repeat): --series with a name pattern reads the one
    the site's protocol names, in every study; a pattern matching two, none, or no valid pattern is an error."""
    batch = tmp_path / "batch"
    expected = {}
    for k, study in enumerate(("anna", "ben")):
        _series(batch / study, UID_ROOT + f"69.{k + 1}1", "AX FLAIR", 4, _timing(120, 2400), seed=10 + k)
        expected[study] = _series(batch / study, UID_ROOT + f"69.{k + 1}2", "AX FLAIR repeat", 9, _timing(120, 2400), seed=20 + k)
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    out = tmp_path / "out"
    assert predict_main(["-i", str(batch), "-o", str(out), "-m", str(model), "--series", "REPEAT", "--no-anatomy"]) == 0
    assert "the only MR image series named like 'REPEAT'" in capsys.readouterr().err
    for study, voxels in expected.items():
        assert read_image(batch / study, series_uid="REPEAT").array.tolist() == voxels.astype(np.float32).tolist()
        assert read_image(out / f"{study}.nii.gz", dtype=None).array.shape == voxels.shape
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 2 and summary.source_series.str.contains("'AX FLAIR repeat'").all()
    with pytest.raises(ImageError, match=r"2 MR image series are named like 'flair'.*'AX FLAIR'.*'AX FLAIR repeat'"):
        read_image(batch / "anna", series_uid="flair")
    with pytest.raises(ImageError, match=r"no MR image series is named like 'T1'"):
        read_image(batch / "anna", series_uid="T1")
    with pytest.raises(ImageError, match=r"neither a UID nor a valid series-name pattern"):
        read_image(batch / "anna", series_uid="flair(")
    with pytest.raises(ImageError, match=r"no DICOM series '1.2.3'"):
        read_image(batch / "anna", series_uid="1.2.3")


def test_a_reformat_loses_to_the_acquired_flair_and_a_sagittal_3d_flair_to_the_axial(tmp_path):
    folder = tmp_path / "study"
    axial = _series(folder, UID_ROOT + "63.1", "AX FLAIR", 3, _timing(140, 2500), seed=1)
    _series(folder, UID_ROOT + "63.2", "AX FLAIR MPR", 4, {"0008|0008": "DERIVED\\SECONDARY\\MPR", **_timing(140, 2500)}, seed=2)
    _series(folder, UID_ROOT + "63.3", "SAG CUBE FLAIR", 5, _timing(140, 1800), seed=3, direction=SAGITTAL)
    assert np.array_equal(read_image(folder).array, axial.astype(np.float32))


@pytest.mark.parametrize(
    "description, te, ti, expected",
    [
        ("t2_tirm_tra_dark-fluid", 81, 2500, True),  # Siemens
        ("AX T2 FLAIR", 120, 2200, True),  # GE
        ("T2W_FLAIR", 140, None, True),  # Philips, timing not in the header
        ("fluid attenuated IR", None, None, True),
        ("AX 2D IR", 120, 2500, True),  # named neither way: timed as a T2-FLAIR
        ("AX T1 FLAIR", 12, 860, False),
        ("T1FLAIR", None, None, False),
        ("FLAIR", 12, 800, False),  # named FLAIR, timed as a T1-FLAIR
        ("STIR", 60, 150, False),
        ("AX DWI", 89, None, False),
        ("t1_fl2d_tra", 2.5, None, False),
        ("", None, None, False),
    ],
)
def test_what_counts_as_a_t2_flair(description, te, ti, expected):
    info = SeriesInfo("1.2.3", ("a",), description=description, echo_time_ms=te, inversion_time_ms=ti)
    assert info.is_t2_flair is expected


# ---- enhanced (multi-frame) objects -----------------------------------------------------------------------------

def _headers(folder: Path) -> List[pydicom.Dataset]:
    """The classic series' files completed with what a legacy-converted enhanced object requires."""
    out = []
    for path in sorted(folder.iterdir()):
        ds = pydicom.dcmread(path)
        defaults = {"Manufacturer": "Test", "StudyDate": "20200101", "StudyTime": "120000", "AccessionNumber": "1",
                    "ReferringPhysicianName": "", "StudyID": "1", "PatientBirthDate": "", "PatientSex": "O",
                    "SeriesNumber": 4, "ScanningSequence": "IR", "SequenceVariant": "NONE", "ScanOptions": "",
                    "MRAcquisitionType": "2D", "EchoTrainLength": 1, "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
                    "PhotometricInterpretation": "MONOCHROME2"}
        for keyword, value in defaults.items():
            if keyword not in ds or ds.get(keyword) in (None, ""):
                setattr(ds, keyword, value)
        out.append(ds)
    return out


def _multiframe(classic: Path, target: Path) -> Path:
    """Convert a classic series into one legacy-converted enhanced MR file (highdicom stores the frames top-down)."""
    hd = pytest.importorskip("highdicom")
    image = hd.legacy.LegacyConvertedEnhancedMRImage(
        _headers(classic), series_instance_uid=UID_ROOT + "70.1", series_number=40, sop_instance_uid=UID_ROOT + "70.1.1",
        instance_number=1,
    )
    target.mkdir(parents=True, exist_ok=True)
    image.save_as(target / "enhanced.dcm")
    return target / "enhanced.dcm"


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("direction", [AXIAL, oblique_direction(15)], ids=["axial", "oblique"])
def test_a_multiframe_object_reads_as_the_classic_series_it_holds(tmp_path, direction):
    array, geometry = _flair_int16(seed=5, direction=direction)
    classic = write_dicom_series(tmp_path / "classic", array, geometry, UID_ROOT + "71.1")
    path = _multiframe(classic, tmp_path / "enhanced")
    frames = pydicom.dcmread(path, stop_before_pixels=True)
    assert int(frames.NumberOfFrames) == array.shape[0]
    # stored top-down, the opposite of the classic series' ascending slices: the reader must turn the stack
    heights = [float(np.dot(geometry.direction_matrix[:, 2], g.PlanePositionSequence[0].ImagePositionPatient))
               for g in frames.PerFrameFunctionalGroupsSequence]
    assert heights == sorted(heights, reverse=True)
    image, reference = read_image(path.parent), read_image(classic)
    assert np.array_equal(image.array, reference.array)
    assert not image.geometry.mismatches(reference.geometry, tol=1e-4), image.geometry.mismatches(reference.geometry, tol=1e-4)


def _edit_frames(path: Path, edit) -> Path:
    ds = pydicom.dcmread(path)
    edit(ds)
    ds.save_as(path)
    return path.parent


@pytest.mark.filterwarnings("ignore")
def test_a_multiframe_object_with_two_stacks_or_orientations_or_rescales_is_an_error(tmp_path):
    array, geometry = _flair_int16(seed=6)
    classic = write_dicom_series(tmp_path / "classic", array, geometry, UID_ROOT + "72.1")

    def same_position(ds):
        groups = ds.PerFrameFunctionalGroupsSequence
        groups[1].PlanePositionSequence[0].ImagePositionPatient = groups[0].PlanePositionSequence[0].ImagePositionPatient

    folder = _edit_frames(_multiframe(classic, tmp_path / "stacks"), same_position)
    with pytest.raises(ImageError, match="enhanced.dcm.*repeat another slice's position.*several stacks or echoes"):
        read_image(folder)

    def tilted_frame(ds):
        shared = ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
        item = pydicom.Dataset()
        item.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        frame = ds.PerFrameFunctionalGroupsSequence[2]
        frame.PlaneOrientationSequence = pydicom.Sequence([item])
        assert shared.ImageOrientationPatient != item.ImageOrientationPatient

    folder = _edit_frames(_multiframe(classic, tmp_path / "tilted"), tilted_frame)
    with pytest.raises(ImageError, match="enhanced.dcm.*different orientations"):
        read_image(folder)

    def rescale_per_frame(ds):
        for k, frame in enumerate(ds.PerFrameFunctionalGroupsSequence):
            item = pydicom.Dataset()
            item.RescaleSlope, item.RescaleIntercept, item.RescaleType = 1 + k, 0, "US"
            frame.PixelValueTransformationSequence = pydicom.Sequence([item])

    folder = _edit_frames(_multiframe(classic, tmp_path / "rescale"), rescale_per_frame)
    with pytest.raises(ImageError, match="enhanced.dcm.*5 different rescale slopes"):
        read_image(folder)

    def zoomed_frame(ds):
        item = pydicom.Dataset()
        item.PixelSpacing, item.SliceThickness = [0.4, 0.45], 6.0
        ds.PerFrameFunctionalGroupsSequence[3].PixelMeasuresSequence = pydicom.Sequence([item])

    folder = _edit_frames(_multiframe(classic, tmp_path / "zoomed"), zoomed_frame)
    with pytest.raises(ImageError, match="enhanced.dcm.*2 different pixel spacings"):
        read_image(folder)


@pytest.mark.filterwarnings("ignore")
def test_multiframe_frames_stored_interleaved_are_put_in_place(tmp_path):
    """Frames stored 1, 3, 5, 2, 4 (as an interleaved acquisition may keep them): ITK alone would stack them in that
    order with a 1 mm spacing; the frames' positions put each where it lies."""
    array, geometry = _flair_int16(seed=9, direction=oblique_direction(8))
    classic = write_dicom_series(tmp_path / "classic", array, geometry, UID_ROOT + "76.1")
    path = _multiframe(classic, tmp_path / "enhanced")

    def interleave(ds):
        order = [0, 2, 4, 1, 3]
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[order]).tobytes()
        groups = list(ds.PerFrameFunctionalGroupsSequence)
        ds.PerFrameFunctionalGroupsSequence = pydicom.Sequence([groups[k] for k in order])

    image, reference = read_image(_edit_frames(path, interleave)), read_image(classic)
    assert np.array_equal(image.array, reference.array)
    assert not image.geometry.mismatches(reference.geometry, tol=1e-4), image.geometry.mismatches(reference.geometry, tol=1e-4)


@pytest.mark.filterwarnings("ignore")
def test_a_truncated_multiframe_object_is_an_error_naming_it(tmp_path, capsys):
    array, geometry = _flair_int16(seed=11)
    classic = write_dicom_series(tmp_path / "classic", array, geometry, UID_ROOT + "78.1")
    path = _multiframe(classic, tmp_path / "enhanced")
    path.write_bytes(path.read_bytes()[:-3000])  # the last frames' pixels cut off, as by an interrupted transfer
    with pytest.raises(ImageError, match="enhanced.dcm.*(unreadable multi-frame DICOM|decoded the multi-frame)"):
        read_image(path.parent)
    # through deepwml_predict: the case fails with the reason, the run goes on and says so
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    assert predict_main(["-i", str(path.parent), "-o", str(tmp_path / "out"), "-m", str(model)]) == 1
    assert "enhanced" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore")
def test_a_multiframe_rescale_is_applied(tmp_path):
    array, geometry = _flair_int16(seed=7)
    classic = write_dicom_series(tmp_path / "classic", array, geometry, UID_ROOT + "73.1")

    def rescale(ds):
        item = ds.SharedFunctionalGroupsSequence[0].PixelValueTransformationSequence[0]
        item.RescaleSlope, item.RescaleIntercept = 2, 5

    folder = _edit_frames(_multiframe(classic, tmp_path / "enhanced"), rescale)
    assert np.array_equal(read_image(folder).array, array.astype(np.float32) * 2 + 5)


@pytest.mark.filterwarnings("ignore")
def test_a_multiframe_series_gets_its_mask_and_a_seg_on_its_frames(tmp_path):
    hd = pytest.importorskip("highdicom")
    image, _, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), direction=oblique_direction(10), seed=4, n_lesions=5)
    classic = write_dicom_series(tmp_path / "classic", np.round(image * 10).astype(np.int16), geometry, UID_ROOT + "74.1")
    _multiframe(classic, tmp_path / "dicom" / "patient7")
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(tmp_path / "out"), "-m", str(model), "--dicom-seg"]) == 0
    mask = read_image(tmp_path / "out" / "patient7.nii.gz", dtype=None)
    reference = read_image(classic)
    assert not mask.geometry.mismatches(reference.geometry, tol=1e-4)
    assert mask.array.any() and not mask.array.all(axis=(1, 2)).any()

    source = pydicom.dcmread(tmp_path / "dicom" / "patient7" / "enhanced.dcm", stop_before_pixels=True)
    position_of_frame = [np.asarray(g.PlanePositionSequence[0].ImagePositionPatient, float) for g in source.PerFrameFunctionalGroupsSequence]
    seg = hd.seg.segread(tmp_path / "out" / "patient7_seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source.SeriesInstanceUID
    frames = seg.pixel_array.reshape(-1, *mask.array.shape[1:]) > 0
    drawn = np.zeros(mask.array.shape, bool)  # the segments (one per location class) part the mask
    for k, group in enumerate(seg.PerFrameFunctionalGroupsSequence):
        reference_item = group.DerivationImageSequence[0].SourceImageSequence[0]
        assert reference_item.ReferencedSOPInstanceUID == source.SOPInstanceUID
        frame = int(reference_item.ReferencedFrameNumber) - 1
        position = np.asarray(group.PlanePositionSequence[0].ImagePositionPatient, float)
        assert np.allclose(position, position_of_frame[frame], atol=1e-4)
        # the mask's slice at that position
        z = int(round(np.asarray(mask.geometry.direction_matrix)[:, 2] @ (position - np.asarray(mask.geometry.origin)) / mask.geometry.spacing[2]))
        assert frames[k].any() and not (frames[k] & drawn[z]).any(), f"SEG frame {k} (source frame {frame + 1}, slice {z})"
        drawn[z] |= frames[k]
    assert np.array_equal(drawn, mask.array > 0)


def test_a_folder_of_study_folders_predicts_each_study_s_flair(tmp_path, capsys):
    for name in ("anna", "ben"):
        _study(tmp_path / "studies" / name)
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    assert predict_main(["-i", str(tmp_path / "studies"), "-o", str(tmp_path / "out"), "-m", str(model), "--dicom-seg",
                         "--report"]) == 0
    for name in ("anna", "ben"):
        mask = read_image(tmp_path / "out" / f"{name}.nii.gz", dtype=None)
        assert mask.array.shape == (5, 48, 40)
        seg = pydicom.dcmread(tmp_path / "out" / f"{name}_seg.dcm", stop_before_pixels=True)
        assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == UID_ROOT + "60.4"
        # the reader's page names the series that was segmented
        page = (tmp_path / "out" / "report" / f"{name}.html").read_text(encoding="utf-8")
        assert "<dt>DICOM series</dt><dd>series 4 &#x27;t2_tirm_tra_dark-fluid&#x27; (5 slices, 6 mm, axial)" in page
        assert "study date 2024-01-15" in page
    # summary.csv records, per case, the series that was read

    summary = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    for name in ("anna", "ben"):
        assert summary.loc[name, "source_series"].startswith("series 4 't2_tirm_tra_dark-fluid' (5 slices, 6 mm, axial): ")
    # ... also when a second run finds the cases done
    assert predict_main(["-i", str(tmp_path / "studies"), "-o", str(tmp_path / "out"), "-m", str(model)]) == 0
    again = pd.read_csv(tmp_path / "out" / "summary.csv").set_index("case_id")
    assert again.loc["anna", "source_series"] == summary.loc["anna", "source_series"]
    assert capsys.readouterr().err.count("the only T2-FLAIR of 4 MR image series") >= 2


def _nested_study(folder: Path) -> np.ndarray:
    """A study exported one folder per series, a level deeper (EXAM/SERIES/files); returns the FLAIR's voxels."""
    _series(folder / "exam1" / "SE001", UID_ROOT + "60.1", "localizer", 1, _timing(3), seed=1, direction=SAGITTAL)
    _series(folder / "exam1" / "SE002", UID_ROOT + "60.2", "AX T1 FLAIR", 2, _timing(12, 860), seed=2)
    return _series(folder / "exam1" / "SE004", UID_ROOT + "60.4", "AX T2 FLAIR", 4, _timing(120, 2400), seed=4)


def test_a_study_exported_one_folder_per_series_is_one_case(tmp_path, capsys):
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    # the study's folder of series folders given: one case named after it, not a case per series (one study, not
    # all of them FLAIRs); the folder above it: a folder of studies, a case per study
    flair = _nested_study(tmp_path / "carla")
    assert [c.case_id for c in discover_cases(tmp_path / "carla" / "exam1")] == ["exam1"]
    assert [c.case_id for c in discover_cases(tmp_path / "carla")] == ["exam1"]
    assert np.array_equal(read_image(tmp_path / "carla").array, flair.astype(np.float32))
    # a folder of such studies: a case per study
    _nested_study(tmp_path / "studies" / "dora")
    _study(tmp_path / "studies" / "emil")
    assert [c.case_id for c in discover_cases(tmp_path / "studies")] == ["dora", "emil"]
    assert predict_main(["-i", str(tmp_path / "studies"), "-o", str(tmp_path / "out"), "-m", str(model)]) == 0
    for name in ("dora", "emil"):
        assert read_image(tmp_path / "out" / f"{name}.nii.gz", dtype=None).array.shape == flair.shape
    assert capsys.readouterr().err.count("choose another with --series-uid") >= 2


def _media_export(flat: Path, target: Path) -> None:
    """A CD / PACS media export of the files in ``flat``: DICOMDIR beside PT00000i/ST00000j/SE00000k/IM00000l
    (written by pydicom's FileSet)."""
    from pydicom.fileset import FileSet

    media = FileSet()
    for path in sorted(flat.iterdir()):
        ds = pydicom.dcmread(path)
        if ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4":
            continue  # the earlier SEG: pydicom's default records need more than it has
        ds.StudyID, ds.StudyTime = "1", "120000"
        ds.InstanceNumber = ds.get("InstanceNumber") or 1
        media.add(ds)
    media.write(target)


def test_a_dicomdir_export_gives_a_case_per_study_named_by_patient_and_date(tmp_path, capsys):
    flair = _study(tmp_path / "flat")
    # the same patient a year later, and another patient, on the same CD
    later = _series(tmp_path / "flat", UID_ROOT + "67.1", "AX FLAIR", 5, {**_timing(120, 2400), "0020|000d": UID_ROOT + "67",
                                                                          "0008|0020": "20250301"}, seed=6)
    other = _series(tmp_path / "flat", UID_ROOT + "68.1", "AX FLAIR", 6, {**_timing(120, 2400), "0020|000d": UID_ROOT + "68",
                                                                          "0010|0020": "MRN 77/2", "0008|0020": "20240115"}, seed=7)
    export = tmp_path / "export"
    _media_export(tmp_path / "flat", export)
    assert (export / "DICOMDIR").is_file() and (export / "PT000000").is_dir()
    # a CD also carries a viewer: not a scan, and no failed case
    (export / "VIEWER").mkdir()
    (export / "VIEWER" / "viewer.exe").write_bytes(b"MZ" + bytes(100))
    cases = discover_cases(export)
    assert [c.case_id for c in cases] == ["MRN_77_2_20240115", "P001_20240115", "P001_20250301"]
    expected = {"MRN_77_2_20240115": other, "P001_20240115": flair, "P001_20250301": later}
    for case in cases:
        assert np.array_equal(read_image(case.source).array, expected[case.case_id].astype(np.float32)), case.case_id
    # a broken DICOMDIR: the folders decide, and the note says so
    (export / "DICOMDIR").write_bytes(b"not a DICOMDIR")
    shutil.rmtree(export / "VIEWER")
    assert [c.case_id for c in discover_cases(export)] == ["PT000000", "PT000001"]
    assert "DICOMDIR cannot be read" in capsys.readouterr().err


def test_a_folder_of_flair_series_of_one_patient_stays_a_case_per_series(tmp_path):
    _series(tmp_path / "flairs" / "pre", UID_ROOT + "64.1", "AX FLAIR", 3, _timing(120, 2400), seed=1)
    _series(tmp_path / "flairs" / "post", UID_ROOT + "64.2", "AX FLAIR +C", 9, _timing(120, 2400), seed=2)
    assert [c.case_id for c in discover_cases(tmp_path / "flairs")] == ["post", "pre"]


def test_files_without_the_dicom_preamble_are_read(tmp_path):
    """Old exports write the data set alone (no 128-byte preamble, no 'DICM', no file meta): still a series."""
    array, geometry = _flair_int16(seed=10)
    classic = write_dicom_series(tmp_path / "classic", array, geometry, UID_ROOT + "77.1")
    bare = tmp_path / "bare"
    bare.mkdir()
    for path in sorted(classic.iterdir()):
        ds = pydicom.dcmread(path)
        if ds.file_meta.TransferSyntaxUID != pydicom.uid.ImplicitVRLittleEndian:
            pytest.skip("the test writer's files are not implicit VR little endian")
        ds.preamble = None
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        ds.save_as(bare / path.stem, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert (bare / "slice000").read_bytes()[:2] == b"\x08\x00"
    image = read_image(bare)
    assert np.array_equal(image.array, array.astype(np.float32))
    assert not image.geometry.mismatches(read_image(classic).geometry, tol=1e-4)


@pytest.mark.parametrize("compressor, syntax", [("JPEG", "1.2.840.10008.1.2.4.70"), ("JPEG2000", "1.2.840.10008.1.2.4.90")])
def test_lossless_compressed_series_read_exactly(tmp_path, compressor, syntax):
    array, geometry = _flair_int16(seed=8)
    classic = write_dicom_series(tmp_path / "classic", array, geometry, UID_ROOT + "75.1")
    compressed = tmp_path / "compressed"
    compressed.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetUseCompression(True)
    writer.SetCompressor(compressor)
    saved_locale = locale.setlocale(locale.LC_ALL)  # GDCM's writer leaves LC_CTYPE at "C" (see write_dicom_series)
    for path in sorted(classic.iterdir()):
        writer.SetFileName(str(compressed / path.name))
        writer.Execute(sitk.ReadImage(str(path)))
    locale.setlocale(locale.LC_ALL, saved_locale)
    assert str(pydicom.dcmread(next(compressed.iterdir()), stop_before_pixels=True).file_meta.TransferSyntaxUID) == syntax
    image = read_image(compressed)
    assert np.array_equal(image.array, array.astype(np.float32))
    assert not image.geometry.mismatches(read_image(classic).geometry, tol=1e-4)


@pytest.mark.parametrize("sop_class, read", [("1.2.840.10008.5.1.4.1.1.2", False), ("1.2.840.10008.5.1.4.1.1.7", True)],
                         ids=["CT", "secondary-capture"])
def test_a_lone_series_of_another_modality_is_refused_naming_it(tmp_path, sop_class, read):
    """A folder (or a study routed to a DeepWML node) holding only a CT series is refused, not read as a FLAIR; an
    only series stored as Secondary Capture, as some exports store MR slices, is still read."""
    array, geometry = _flair_int16(seed=5)
    folder = write_dicom_series(tmp_path / "s", array, geometry, UID_ROOT + "62.1", description="HEAD")
    for path in folder.iterdir():
        ds = pydicom.dcmread(path)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        ds.save_as(path)
    if read:
        assert np.array_equal(read_image(folder).array, array.astype(np.float32))
    else:
        with pytest.raises(ImageError, match=r"s: folder holds one DICOM series and it is not an MR image \(CT Image "
                           r"Storage\): series .*'HEAD' .*; DeepWML reads FLAIR MRI"):
            read_image(folder)
