"""deepwml_evaluate with references kept as DICOM SEG (CASE.dcm: a reader's outlines from a PACS or viewer): each SEG
is placed on its prediction's grid by its frames' positions and scores exactly as the same mask given as a file."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import oblique_direction, tiny_case
from deepwml.cli.evaluate import main as evaluate_main
from deepwml.cli.predict import main as predict_main
from deepwml.evaluation.cases import pair_cases
from deepwml.evaluation.masks import load_case_masks
from deepwml.imageio import read_image, write_image
from deepwml.imageio.dicom_seg_masks import seg_mask_on_grid
from deepwml.inference.dicom_seg import write_dicom_seg
from deepwml.utils.errors import DeepWMLError, ImageError
from deepwml_testing.toy_models import tiny_plan, write_model_dir
from test_dicom import UID_ROOT, write_dicom_series

pytest.importorskip("highdicom", reason="DICOM SEG needs highdicom (pip install 'deepwml[dicom]')")


def _case(tmp_path: Path, name: str, seed: int, direction) -> tuple:
    """A DICOM series, its reference mask (the synthetic label) on the series' grid, and its folder."""
    image, label, geometry = tiny_case(shape_zyx=(5, 64, 56), spacing_xyz=(0.9, 0.9, 6.5), direction=direction, seed=seed, n_lesions=5)
    folder = write_dicom_series(tmp_path / "dicom" / name, np.round(image * 10).astype(np.int16), geometry, UID_ROOT + f"97.{seed}")
    return folder, (label > 0).astype(np.uint8)


@pytest.mark.filterwarnings("ignore")
def test_seg_references_score_as_the_same_masks_given_as_files(tmp_path):
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,), kind="threshold")
    cases = {"p1": _case(tmp_path, "p1", 4, oblique_direction(12)), "p2": _case(tmp_path, "p2", 5, oblique_direction(0))}
    out = tmp_path / "pred"
    assert predict_main(["-i", str(tmp_path / "dicom"), "-o", str(out), "-m", str(model), "--save-probabilities"]) == 0
    seg_refs, file_refs = tmp_path / "ref_seg", tmp_path / "ref_files"
    for name, (folder, label) in cases.items():
        grid = read_image(out / f"{name}.nii.gz", dtype=None).geometry
        write_dicom_seg(label, folder, seg_refs / f"{name}.dcm", "reader")
        write_image(label, grid, file_refs / f"{name}.nii.gz")
        # the SEG placed by its frames' positions is the reader's mask, slice for slice
        assert np.array_equal(seg_mask_on_grid(seg_refs / f"{name}.dcm", grid), label)
    seg_refs.mkdir(exist_ok=True)
    (seg_refs / "notes.txt").write_text("ignored, as in any reference folder\n")
    assert evaluate_main(["-ref", str(seg_refs), "-pred", str(out), "-o", str(tmp_path / "ev_seg")]) == 0
    assert evaluate_main(["-ref", str(file_refs), "-pred", str(out), "-o", str(tmp_path / "ev_files")]) == 0
    by_seg = pd.read_csv(tmp_path / "ev_seg" / "per_case.csv")
    by_file = pd.read_csv(tmp_path / "ev_files" / "per_case.csv")
    assert len(by_seg) == 2 and by_seg["ref_volume_ml"].gt(0).all()
    pd.testing.assert_frame_equal(by_seg, by_file)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "ev_seg" / "per_slice.csv"), pd.read_csv(tmp_path / "ev_files" / "per_slice.csv"))
    # the calibration section (probability maps beside the predictions) reads the SEG on the maps' grid
    calibration = [json.loads((tmp_path / f / "summary.json").read_text())["calibration"] for f in ("ev_seg", "ev_files")]
    assert calibration[0]["n_cases"] == 2 and calibration[0] == calibration[1]


@pytest.mark.filterwarnings("ignore")
def test_a_seg_off_the_prediction_grid_or_a_dcm_that_is_no_seg_is_an_error_naming_it(tmp_path):
    folder, label = _case(tmp_path, "p1", 4, oblique_direction(12))
    seg = write_dicom_seg(label, folder, tmp_path / "ref" / "p1.dcm", "reader")
    series = read_image(folder)
    pred = tmp_path / "pred"
    # the prediction of another series: same size, shifted by half a slice
    g = series.geometry
    shifted = type(g)(g.size, g.spacing, tuple(np.asarray(g.origin) + 0.5 * g.spacing[2] * g.direction_matrix[:, 2]), g.direction)
    write_image(label, shifted, pred / "p1.nii.gz")
    with pytest.raises(ImageError, match="frames lie off the grid's slices") as e:
        load_case_masks("p1", seg, pred / "p1.nii.gz")
    assert str(seg) in str(e.value)
    cropped = type(g)((50, g.size[1], g.size[2]), g.spacing, g.origin, g.direction)
    write_image(np.ascontiguousarray(label[:, :, :50]), cropped, pred / "p1.nii.gz")
    with pytest.raises(ImageError, match="not on the grid of the mask it is compared with: frames of 64×56 pixels, slices of 64×50"):
        load_case_masks("p1", seg, pred / "p1.nii.gz")
    # no prediction to give the grid
    with pytest.raises(ImageError, match="no prediction"):
        load_case_masks("p1", seg, None)
    # a .dcm reference that is an image slice, not a SEG
    shutil.copy(next(folder.iterdir()), tmp_path / "ref" / "p2.dcm")
    write_image(label, g, pred / "p2.nii.gz")
    with pytest.raises(DeepWMLError, match=r"p2.dcm is not a DICOM SEG"):
        pair_cases(tmp_path / "ref", pred)
