"""A scan unlike the model's training scans (thin or 3D slices, coronal slices, very fine or coarse pixels) is predicted
but flagged in summary.csv, on the terminal and in the patient report; routine axial 2D FLAIR is not flagged."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from conftest import tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import read_image, write_image
from deepwml.imageio.geometry import Geometry
from deepwml.inference.acquisition import TrainedAcquisition, acquisition_warning, axial_tilt_deg, trained_acquisition
from deepwml_testing.toy_models import tiny_plan, write_model_dir

TRAINED = TrainedAcquisition((4.0, 8.0), (0.41, 0.94))


def _geometry(spacing=(0.9, 0.9, 6.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1)) -> Geometry:
    return Geometry((256, 256, 20), tuple(float(s) for s in spacing), (0.0, 0.0, 0.0), tuple(float(d) for d in direction))


def _rotation_about_x(deg: float):
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return (1, 0, 0, 0, c, -s, 0, s, c)


@pytest.mark.parametrize("geometry", [
    _geometry(),                                              # routine 2D FLAIR
    _geometry((0.47, 0.47, 7.5)),                             # 512² vascular site
    _geometry((0.9, 0.9, 3.0)),                               # the paper's thinnest slices
    _geometry(direction=_rotation_about_x(25)),               # oblique axial along the AC-PC line
])
def test_routine_axial_flair_is_not_flagged(geometry):
    assert acquisition_warning(geometry, TRAINED) == ""


@pytest.mark.parametrize("geometry,words", [
    (_geometry((1.0, 1.0, 1.0)), "slices 1 mm thick; the model learned 4-8 mm"),
    (_geometry((0.9, 0.9, 12.0)), "slices 12 mm thick"),
    (_geometry(direction=(1, 0, 0, 0, 0, 1, 0, 1, 0)), "slices are not axial (slice normal 90 degrees"),
    (_geometry(direction=_rotation_about_x(60)), "slice normal 60 degrees"),
    (_geometry((1.8, 1.8, 6.0)), "pixels 1.8 x 1.8 mm; the model learned 0.41-0.94 mm"),
    (_geometry((0.2, 0.2, 6.0)), "pixels 0.2 x 0.2 mm"),
])
def test_what_differs_is_named(geometry, words):
    warning = acquisition_warning(geometry, TRAINED)
    assert words in warning and warning.startswith("unlike the scans the model learned from")


def test_a_sagittal_3d_flair_is_flagged_as_thin_not_as_sagittal():
    """Its axial planes are read (deepwml.imageio.geometry.THREE_D_MAX_SPACING_MM), so only its thinness is unlike."""
    sagittal = Geometry((256, 256, 150), (1.0, 1.0, 1.2), (0.0, 0.0, 0.0), (0, 0, 1, 1, 0, 0, 0, 1, 0))
    warning = acquisition_warning(sagittal, TRAINED)
    assert "slices 1 mm thick" in warning and "not axial" not in warning


def test_a_3d_volume_stored_in_sagittal_partitions_is_segmented_as_its_axial_copy(tmp_path):
    """The same voxels stored once as axial planes and once as sagittal partitions (1.2 mm, the file's third axis
    running left-right) give the same mask, voxel for voxel once the axes are put back."""
    model = write_model_dir(tmp_path / "model" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    image, _, _ = tiny_case(shape_zyx=(30, 48, 40), spacing_xyz=(1.2, 1.0, 1.0), seed=5, n_lesions=6)
    axial = Geometry((40, 48, 30), (1.2, 1.0, 1.0), (0.0, 0.0, 0.0))
    # numpy (z, y, x) = (S-I, A-P, L-R) -> (L-R, S-I, A-P): index x along A-P, y along S-I, z along L-R
    sagittal = Geometry((48, 30, 40), (1.0, 1.0, 1.2), (0.0, 0.0, 0.0), (0, 0, 1, 1, 0, 0, 0, 1, 0))
    write_image(image, axial, tmp_path / "in" / "axial.nii.gz")
    write_image(image.transpose(2, 0, 1), sagittal, tmp_path / "in" / "sagittal.nii.gz")
    assert predict_main(["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc",
                         "--no-anatomy"]) == 0
    from_axial = read_image(tmp_path / "out" / "axial.nii.gz").array
    from_sagittal = read_image(tmp_path / "out" / "sagittal.nii.gz").array
    assert from_axial.any() and np.array_equal(from_sagittal.transpose(1, 2, 0), from_axial)
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False).set_index("case_id")
    assert summary.loc["sagittal", "slices"] == summary.loc["axial", "slices"] == 30


def test_tilt_is_measured_from_the_head_axis():
    assert axial_tilt_deg(_geometry()) == pytest.approx(0.0, abs=1e-6)
    assert axial_tilt_deg(_geometry(direction=_rotation_about_x(30))) == pytest.approx(30.0, abs=1e-6)


def test_a_model_without_training_ranges_claims_nothing(tmp_path):
    """No fingerprint.json, or one without the ranges: no warning at all, rather than a guess."""
    assert trained_acquisition(tmp_path) is None
    (tmp_path / "fingerprint.json").write_text(json.dumps({"note": "hand-made"}))
    assert trained_acquisition(tmp_path) is None
    assert acquisition_warning(_geometry((1.0, 1.0, 1.0)), None) == ""


def test_the_shipped_model_records_its_training_ranges():
    from deepwml.pretrained import builtin_model_dir

    trained = trained_acquisition(builtin_model_dir())
    assert trained is not None and trained.slice_thickness_mm[0] >= 3.0 and trained.inplane_spacing_mm[1] < 1.0


def test_prediction_flags_a_thin_slice_scan_and_keeps_routine_ones_clean(tmp_path, capsys):
    """Both scans are predicted; only the 1 mm one carries the warning, in summary.csv, on the terminal and in its
    report; a resumed run keeps the column."""
    model = write_model_dir(tmp_path / "model" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,))
    (model / "fingerprint.json").write_text(json.dumps({"dataset_summary": {
        "slice_thickness_range": [4.0, 8.0], "inplane_spacing_range": [0.41, 0.94]}}))
    for name, spacing in (("routine", (0.9, 0.9, 6.0)), ("thin", (0.9, 0.9, 1.0))):
        image, _, geometry = tiny_case(shape_zyx=(6, 64, 64), seed=3)
        write_image(image, Geometry(geometry.size, spacing, geometry.origin, geometry.direction),
                    tmp_path / "in" / f"{name}.nii.gz")
    args = ["-i", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "-m", str(model), "--no-qc", "--no-anatomy"]
    assert predict_main(args + ["--report"]) == 0
    err = capsys.readouterr().err
    assert "thin: unlike the scans the model learned from: slices 1 mm thick" in err and "routine:" not in err
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False).set_index("case_id")
    assert (summary["status"] == "ok").all() and summary.loc["routine", "acquisition_warning"] == ""
    assert "slices 1 mm thick" in summary.loc["thin", "acquisition_warning"]
    assert "slices 1 mm thick" in (tmp_path / "out" / "report" / "thin.html").read_text(encoding="utf-8")
    routine = (tmp_path / "out" / "report" / "routine.html").read_text(encoding="utf-8")
    assert "unlike the scans" not in routine and "not calibrated: confidence may overstate certainty" in routine
    assert predict_main(args) == 0  # everything done: the rows are rebuilt from the masks on disk
    again = pd.read_csv(tmp_path / "out" / "summary.csv", keep_default_na=False).set_index("case_id")
    assert np.array_equal(again["acquisition_warning"].to_numpy(), summary["acquisition_warning"].to_numpy())
