"""Bad and unusual inputs to the evaluator: each failure is a DeepWMLError naming the case or file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deepwml.cli.evaluate import main as cli_main
from deepwml.evaluation.cases import pair_cases
from deepwml.evaluation.masks import load_case_masks
from deepwml.imageio import Geometry, write_image
from deepwml.utils.errors import DeepWMLError, ImageError

SHAPE = (3, 12, 12)
GEOMETRY = Geometry((12, 12, 3), (0.9, 0.9, 6.0), (0.0, 0.0, 0.0))


def lesion_mask() -> np.ndarray:
    """A small square lesion on the middle slice."""
    m = np.zeros(SHAPE, np.uint8)
    m[1, 4:8, 4:8] = 1
    return m


def write_pair(tmp_path: Path, cases: tuple = ("a", "b"), ref_ending: str = ".nii.gz", pred_ending: str = ".nii.gz") -> tuple:
    """Reference and prediction folders with identical masks for ``cases``."""
    ref, pred = tmp_path / "ref", tmp_path / "pred"
    for cid in cases:
        write_image(lesion_mask(), GEOMETRY, ref / f"{cid}{ref_ending}")
        write_image(lesion_mask(), GEOMETRY, pred / f"{cid}{pred_ending}")
    return ref, pred


def test_pairs_ignore_probability_maps_csvs_and_subfolders(tmp_path):
    ref, pred = write_pair(tmp_path, pred_ending=".mha")
    write_image(np.zeros(SHAPE, np.float32), GEOMETRY, pred / "a_prob.nii.gz")
    (pred / "a_lesions.csv").write_text("lesion,volume\n")
    (pred / "summary.csv").write_text("case\n")
    (pred / "qc").mkdir()
    (pred / "qc" / "a.png").write_bytes(b"png")
    (pred / ".b.mha.tmp.mha").write_bytes(b"")  # an unfinished atomic write
    pairs, missing = pair_cases(ref, pred)
    assert [(p.case_id, p.prediction.name) for p in pairs] == [("a", "a.mha"), ("b", "b.mha")]
    assert missing == []


def test_missing_prediction_is_an_error_naming_the_case(tmp_path):
    ref, pred = write_pair(tmp_path)
    write_image(lesion_mask(), GEOMETRY, ref / "c.nii.gz")
    with pytest.raises(DeepWMLError, match=r"no prediction: c;.*--missing-as-empty"):
        pair_cases(ref, pred)


def test_missing_as_empty_scores_an_empty_prediction_with_a_warning(tmp_path, capsys):
    ref, pred = write_pair(tmp_path)
    write_image(lesion_mask(), GEOMETRY, ref / "c.nii.gz")
    pairs, missing = pair_cases(ref, pred, missing_as_empty=True)
    assert missing == ["c"] and pairs[2].prediction is None
    assert "warning" in capsys.readouterr().err
    masks = load_case_masks("c", pairs[2].reference, None)
    assert masks.reference.sum() == 16 and not masks.prediction.any()


def test_extra_prediction_is_an_error_naming_the_case(tmp_path):
    ref, pred = write_pair(tmp_path)
    write_image(lesion_mask(), GEOMETRY, pred / "zz.nii.gz")
    with pytest.raises(DeepWMLError, match="without a reference mask: zz"):
        pair_cases(ref, pred)


def test_one_case_in_two_formats_is_ambiguous(tmp_path):
    ref, pred = write_pair(tmp_path)
    write_image(lesion_mask(), GEOMETRY, pred / "a.nrrd")
    with pytest.raises(DeepWMLError, match="case 'a' has 2 prediction files"):
        pair_cases(ref, pred)


def test_empty_or_absent_reference_folder(tmp_path):
    (tmp_path / "ref").mkdir()
    (tmp_path / "pred").mkdir()
    with pytest.raises(DeepWMLError, match="holds no mask files"):
        pair_cases(tmp_path / "ref", tmp_path / "pred")
    with pytest.raises(DeepWMLError, match="reference folder does not exist"):
        pair_cases(tmp_path / "nope", tmp_path / "pred")


def test_prediction_on_another_grid_names_case_and_file(tmp_path):
    ref, pred = write_pair(tmp_path)
    shifted = Geometry((12, 12, 3), (0.9, 0.9, 5.0), (0.0, 0.0, 0.0))
    write_image(lesion_mask(), shifted, pred / "a.nii.gz")
    with pytest.raises(ImageError, match=r"case 'a': prediction is not on the reference grid \(spacing") as e:
        load_case_masks("a", ref / "a.nii.gz", pred / "a.nii.gz")
    assert str(pred / "a.nii.gz") in str(e.value)


@pytest.mark.parametrize("value, dtype", [(3, np.uint8), (0.5, np.float32), (255, np.uint8)])
def test_non_binary_prediction_is_an_error(tmp_path, value, dtype):
    ref, pred = write_pair(tmp_path)
    bad = lesion_mask().astype(dtype)
    bad[0, 0, 0] = value
    write_image(bad, GEOMETRY, pred / "a.nii.gz")
    with pytest.raises(ImageError, match="case 'a': prediction mask has values other than 0, 1"):
        load_case_masks("a", ref / "a.nii.gz", pred / "a.nii.gz")


def test_float_masks_with_0_and_1_are_fine(tmp_path):
    ref, pred = write_pair(tmp_path)
    write_image(lesion_mask().astype(np.float32), GEOMETRY, pred / "a.nii.gz")
    masks = load_case_masks("a", ref / "a.nii.gz", pred / "a.nii.gz")
    assert masks.prediction.dtype == bool and np.array_equal(masks.prediction, masks.reference)


def test_ignore_value_is_removed_from_reference_and_prediction(tmp_path):
    ref, pred = write_pair(tmp_path)
    reference = lesion_mask()
    reference[2, 0:3, 0:3] = 2  # ignored region
    prediction = lesion_mask()
    prediction[2, 0:3, 0:3] = 1  # predicted lesion inside the ignored region: not a false positive
    write_image(reference, GEOMETRY, ref / "a.nii.gz")
    write_image(prediction, GEOMETRY, pred / "a.nii.gz")
    with pytest.raises(ImageError, match="reference mask has values other than 0, 1 .*--ignore-label"):
        load_case_masks("a", ref / "a.nii.gz", pred / "a.nii.gz")
    masks = load_case_masks("a", ref / "a.nii.gz", pred / "a.nii.gz", ignore_label=2)
    assert masks.n_ignored == 9
    assert np.array_equal(masks.prediction, masks.reference) and masks.reference.sum() == 16


@pytest.mark.parametrize("values, dtype, says", [
    ((255,), np.uint8, "a 0/255 mask, or lesions numbered one by one), make it a 0/1 mask"),
    ((0.98, 0.02), np.float32, "threshold it at 0.5, or resample it with nearest neighbour"),
])
def test_a_reference_that_is_no_0_1_mask_says_what_it_looks_like_and_what_to_do(tmp_path, values, dtype, says):
    ref, pred = write_pair(tmp_path)
    reference = lesion_mask().astype(dtype)
    for k, value in enumerate(values):
        reference[1, 4 + k, 4:8] = value
    write_image(reference, GEOMETRY, ref / "a.nii.gz")
    with pytest.raises(ImageError, match="case 'a': reference mask has values other than 0, 1") as caught:
        load_case_masks("a", ref / "a.nii.gz", pred / "a.nii.gz")
    assert says in str(caught.value) and str(ref / "a.nii.gz") in str(caught.value)


def test_unreadable_file_names_the_file(tmp_path):
    ref, pred = write_pair(tmp_path)
    (pred / "a.nii.gz").write_bytes(b"this is not an image")
    with pytest.raises(ImageError) as e:
        load_case_masks("a", ref / "a.nii.gz", pred / "a.nii.gz")
    assert str(pred / "a.nii.gz") in str(e.value)


def test_cli_exits_2_with_one_line_naming_the_problem(tmp_path, capsys):
    ref, pred = write_pair(tmp_path)
    write_image(lesion_mask(), GEOMETRY, pred / "zz.nii.gz")
    code = cli_main(["-ref", str(ref), "-pred", str(pred), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "zz" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "report.html").exists()


def test_cli_unknown_dataset_is_a_clear_error(tmp_path, capsys):
    ref, pred = write_pair(tmp_path)
    (tmp_path / "raw").mkdir()
    code = cli_main(["-ref", str(ref), "-pred", str(pred), "-o", str(tmp_path / "out"), "-d", "777", "--raw", str(tmp_path / "raw")])
    assert code == 2 and "no dataset '777'" in capsys.readouterr().err


def test_a_folder_deepwml_predict_wrote_with_every_image_output_is_evaluated(tmp_path):
    """Probability, uncertainty, anatomy and lesion-id maps beside the masks are deepwml_predict's own outputs, not
    predictions of unknown cases: the folder is evaluated as it was written."""
    from conftest import write_tiny_dataset

    from deepwml.cli.predict import main as predict_main
    from deepwml.evaluation import evaluate_folders

    folder = write_tiny_dataset(tmp_path / "raw", n_train=2, n_test=0)
    assert predict_main(["-i", str(folder / "imagesTr"), "-o", str(tmp_path / "pred"), "--save-probabilities",
                         "--save-uncertainty", "--save-anatomy", "--save-lesion-ids", "--no-qc", "--device", "cpu"]) == 0
    written = {p.name for p in (tmp_path / "pred").iterdir()}
    assert {"case000_anatomy.nii.gz", "case000_lesionids.nii.gz", "case000_uncertainty.nii.gz"} <= written
    summary = evaluate_folders(folder / "labelsTr", tmp_path / "pred", tmp_path / "report")
    assert summary["cases"]["n_cases"] == 2 and summary["missing_predictions"] == []
