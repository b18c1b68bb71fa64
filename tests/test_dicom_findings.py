"""--dicom-findings: the findings above the outlined slices as a DICOM Secondary Capture in the scan's study, for the
PACS viewers that show no SEG; its text, its orientation labels, and the run's handling of it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from conftest import oblique_direction, tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import Geometry, read_image
from deepwml.inference.dicom_capture import SC_SERIES_NUMBER, picture_orientation
from deepwml.inference.findings import findings_lines
from deepwml.inference.lesion_report import CaseSummary
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from test_dicom import UID_ROOT, write_dicom_series

pytest.importorskip("highdicom", reason="DICOM outputs need highdicom (pip install 'deepwml[dicom]')")

AXIAL = (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture
def model_dir(tmp_path) -> Path:
    """A threshold toy model (deterministic lesion masks)."""
    return write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")


def _series(folder: Path, seed: int = 4, n_lesions: int = 5, direction=AXIAL) -> Path:
    image, _, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), direction=direction, seed=seed, n_lesions=n_lesions)
    return write_dicom_series(folder, np.round(image * 10).astype(np.int16), geometry, UID_ROOT + f"90.{seed}")


def test_the_findings_picture_files_with_the_scan_and_shows_text_and_outlines(tmp_path, model_dir, capsys):
    source = _series(tmp_path / "dicom" / "patient7", direction=oblique_direction(10))
    out = tmp_path / "out"
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model_dir), "--dicom-findings"]) == 0
    mask = read_image(out / "patient7.nii.gz", dtype=None).array
    assert mask.any()
    capture = pydicom.dcmread(out / "patient7_findings.dcm")
    scan = pydicom.dcmread(next(source.iterdir()), stop_before_pixels=True)
    assert capture.SOPClassUID == SECONDARY_CAPTURE
    # same patient and study, its own series, sorted after the scan's and the SEG's
    assert (capture.PatientID, capture.PatientName, capture.StudyInstanceUID) == (scan.PatientID, scan.PatientName, scan.StudyInstanceUID)
    assert capture.SeriesInstanceUID not in (scan.SeriesInstanceUID,) and int(capture.SeriesNumber) == SC_SERIES_NUMBER
    assert capture.BurnedInAnnotation == "YES" and list(capture.PatientOrientation) == ["L", "P"]
    pixels = capture.pixel_array
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8
    top, rest = pixels[:60], pixels[60:]
    assert (top == 255).all(axis=2).sum() > 200  # the findings, white on black
    # the lesion outlines of the montage, in their location classes' colours (the model has an anatomy map), as
    # CASE_lesions.csv classes them
    from deepwml.inference.qc import LOCATION_COLOURS

    classes = set(pd.read_csv(out / "patient7_lesions.csv")["location"])
    drawn = {name for name, colour in LOCATION_COLOURS.items() if (np.abs(rest.astype(int) - colour).max(axis=2) <= 2).sum() > 20}
    assert drawn == classes and classes
    # a second run finds the case done; a NIfTI input gets no capture and one note
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model_dir), "--dicom-findings"]) == 0
    assert "0 case(s) predicted, 1 already done" in capsys.readouterr().out
    assert_nifti_gets_a_note(tmp_path, model_dir, "--dicom-findings", capsys)


def assert_nifti_gets_a_note(tmp_path: Path, model_dir: Path, flag: str, capsys) -> None:
    """A DICOM output asked for a NIfTI input: no DICOM file, one note."""
    from deepwml.imageio import write_image

    nifti = tmp_path / "nifti"
    nifti.mkdir()
    image, _, geometry = tiny_case(seed=3)
    write_image(image, geometry, nifti / "p.nii.gz")
    assert predict_main(["-i", str(nifti), "-o", str(tmp_path / "out2"), "-m", str(model_dir), flag]) == 0
    assert f"{flag} applies to DICOM series inputs; there are none" in capsys.readouterr().err
    assert not list((tmp_path / "out2").glob("*.dcm"))


def test_an_empty_mask_still_gets_its_findings(tmp_path, model_dir):
    _series(tmp_path / "dicom" / "calm", seed=5, n_lesions=0)
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(tmp_path / "out"), "-m", str(model_dir), "--dicom-findings"]) == 0
    capture = pydicom.dcmread(tmp_path / "out" / "calm_findings.dcm")
    assert capture.pixel_array.shape[1] >= 960


@pytest.mark.parametrize("flag", ["--dicom-findings", "--dicom-sr"])
def test_dicom_outputs_without_highdicom_are_refused_before_anything_runs(tmp_path, model_dir, monkeypatch, capsys, flag):
    import deepwml.inference.dicom_seg as dicom_seg

    monkeypatch.setattr(dicom_seg, "highdicom_available", lambda: False)
    _series(tmp_path / "dicom" / "p")
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(tmp_path / "out"), "-m", str(model_dir), flag]) == 2
    assert f"{flag} needs highdicom" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_findings_text():
    anatomy = {"unclassified_count": 0, "infratentorial_count": 1, "periventricular_count": 4, "cortical_count": 0,
               "juxtacortical_count": 2, "deep_count": 5, "fazekas_periventricular": 2, "fazekas_deep": 1,
               "mcdonald_dis_regions": 3}
    summary = CaseSummary("p", "ok", total_lesion_volume_ml=3.456, lesion_count=12, slices=23, slices_with_lesion=9,
                          acquisition_warning="1 mm slices: the model knows 3-8 mm", anatomy=anatomy)
    lines = findings_lines(summary, "model paper")
    assert lines[0] == "White-matter lesions (automatic): 12 lesions, 3.46 ml, on 9 of 23 slices"
    assert lines[1] == "Locations: infratentorial 1, periventricular 4, juxtacortical 2, deep 5"
    assert lines[2].startswith("Fazekas estimate: periventricular 2, deep 1; McDonald 2017 brain regions") and "3 of 3" in lines[2]
    assert lines[3] == "Caution: 1 mm slices: the model knows 3-8 mm"
    assert lines[-1].startswith("Model paper, DeepWML ") and "not a medical device" in lines[-1]
    # figures with the volumes by the 10 mm rule (an older run's have none, as above) say them after the locations
    anatomy.update(volume_within_10mm_of_ventricles_ml=2.1, volume_beyond_10mm_of_ventricles_ml=1.2345)
    assert findings_lines(summary, "model paper")[2] == \
        "Supratentorial lesion volume within / beyond 10 mm of the ventricles: 2.10 / 1.23 ml"
    # without an anatomy map: totals, then the model
    assert len(findings_lines(CaseSummary("p", "ok", total_lesion_volume_ml=0.0, lesion_count=1, slices=5), "m")) == 2


@pytest.mark.parametrize("direction, expected", [
    ((1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0), ("L", "P")),  # axial
    ((1.0, 0, 0, 0, 0, 1.0, 0, -1.0, 0), ("L", "F")),  # coronal: index z along world y
    ((0, 0, 1.0, 1.0, 0, 0, 0, 1.0, 0), ("P", "F")),  # sagittal: index z along world x
])
def test_the_pictures_orientation_labels_follow_the_montage(direction, expected):
    geometry = Geometry((40, 40, 20), (0.9, 0.9, 6.0), (0.0, 0.0, 0.0), direction)
    assert picture_orientation(geometry) == expected


def test_a_case_labels_its_lesions_once_for_every_output_that_numbers_them(tmp_path, model_dir, monkeypatch):
    import highdicom as hd

    import deepwml.inference.lesion_ids as lesion_ids

    calls = []
    labels = lesion_ids.lesion_id_labels
    monkeypatch.setattr(lesion_ids, "lesion_id_labels", lambda *a, **k: calls.append(1) or labels(*a, **k))
    _series(tmp_path / "dicom" / "patient3", seed=6, n_lesions=6)
    out = tmp_path / "out"
    # QC picture, report, SR, findings picture and the lesion-id map all number the lesions
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model_dir), "--dicom-findings",
                         "--dicom-sr", "--report", "--save-lesion-ids"]) == 0
    assert len(calls) == 1
    ids = read_image(out / "patient3_lesionids.nii.gz", dtype=None).array
    mask = read_image(out / "patient3.nii.gz", dtype=None).array
    groups = hd.sr.srread(out / "patient3_sr.dcm").content.get_volumetric_roi_measurement_groups()
    # the one labelling is what each output shows: every mask voxel numbered, an SR lesion group per number
    assert ((ids > 0) == (mask > 0)).all() and len(groups) == int(ids.max()) >= 2
