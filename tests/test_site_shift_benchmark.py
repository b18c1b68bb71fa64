"""benchmarks/site_shift.py: the shifts it is given, and the shifted copies of a site's test scans it scores."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from deepwml.utils.errors import DeepWMLError
from deepwml_testing.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def ss():
    """benchmarks/site_shift.py as a module."""
    return load_benchmark("site_shift")


def test_shifts_are_read_in_any_order_and_named_by_what_they_change(ss):
    assert ss.parse_shift("none") == (1.0, 0.0, 0)
    assert ss.parse_shift("dilate=1,contrast=0.6") == (0.6, 0.0, 1)
    assert ss.shift_name(ss.parse_shift("noise=0.03, contrast=0.7")) == "contrast0.7_noise0.03"
    assert ss.shift_name(ss.parse_shift("none")) == "none"


@pytest.mark.parametrize("bad, message", [("gamma=0.5", "is not one of"), ("contrast", "is not one of"),
                                           ("contrast=flat", "needs a number"), ("contrast=0", "contrast > 0"),
                                           ("dilate=-1", "dilate >= 0")])
def test_a_shift_it_cannot_make_is_refused_naming_it(ss, bad, message):
    with pytest.raises(DeepWMLError, match=message):
        ss.parse_shift(bad)


def _write(path, array) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((0.5, 0.5, 6.0))
    sitk.WriteImage(img, str(path))


def _read(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_a_shifted_copy_changes_the_copy_only_and_is_made_once(ss, tmp_path):
    raw = tmp_path / "raw"
    image = np.zeros((2, 30, 30), np.float32)
    image[:, 5:25, 5:25] = 100 + np.random.default_rng(0).normal(0, 1, (2, 20, 20))
    image[:, 10:12, 10:12] = 150
    image[:, 18:22, 18:22] = 40  # CSF, so that the tissue median is the tissue's
    mask = np.zeros(image.shape, np.uint8)
    mask[:, 10:12, 10:12] = 1
    _write(raw / "imagesTs" / "a_0000.nii.gz", image)
    _write(raw / "labelsTs" / "a.nii.gz", mask)
    folder = ss.shifted_copy(raw, (0.6, 0.0, 1), tmp_path / "work", seed=77)
    assert folder.name == "shift_contrast0.6_dilate1"
    shifted = _read(folder / "imagesTs" / "a_0000.nii.gz")
    assert shifted[0, 10, 10] == pytest.approx(100 * 1.5 ** 0.6, rel=0.02)
    assert _read(folder / "labelsTs" / "a.nii.gz").sum() == 2 * 12
    assert np.array_equal(_read(raw / "imagesTs" / "a_0000.nii.gz"), image)  # the drawn scans stay as drawn
    assert _read(raw / "labelsTs" / "a.nii.gz").sum() == 2 * 4
    ss.shifted_copy(raw, (0.6, 0.0, 1), tmp_path / "work", seed=77)  # reused, not shifted again
    assert np.array_equal(_read(folder / "imagesTs" / "a_0000.nii.gz"), shifted)
    assert ss.shifted_copy(raw, (1.0, 0.0, 0), tmp_path / "work", seed=77).name == "shift_none"
    assert np.array_equal(_read(tmp_path / "work" / "shift_none" / "imagesTs" / "a_0000.nii.gz"), image)


def test_two_models_whose_plan_folders_share_a_name_get_rows_and_predictions_of_their_own(ss, tmp_path):
    a, b = tmp_path / "a" / "Dataset510_X" / "plan", tmp_path / "b" / "Dataset510_X" / "plan"
    a.mkdir(parents=True)
    b.mkdir(parents=True)
    (name_a, key_a, args_a), (name_b, key_b, args_b) = ss.model_arguments(str(a)), ss.model_arguments(str(b))
    assert name_a != name_b and key_a != key_b
    assert args_a == ["-m", str(a.resolve()), "--checkpoint", "best"] and args_b[:2] == ["-m", str(b.resolve())]
    assert ss.model_arguments("builtin") == ("shipped", "builtin", ["-m", "builtin"])
    assert ss.model_arguments("builtin", "latest") == ("shipped", "builtin", ["-m", "builtin"])


def test_the_last_checkpoint_of_a_model_is_scored_apart_from_its_best(ss, tmp_path):
    """A fine-tuning recipe ships (and calibrates) its last checkpoint, deepwml_predict reads the best by default:
    --checkpoint latest predicts with the last one, into folders and rows of its own; best keeps the keys of runs
    made before the option existed."""
    import hashlib

    plan = tmp_path / "Dataset510_X" / "plan"
    plan.mkdir(parents=True)
    name_b, key_b, args_b = ss.model_arguments(str(plan), "best")
    name_l, key_l, args_l = ss.model_arguments(str(plan), "latest")
    assert args_l == ["-m", str(plan.resolve()), "--checkpoint", "latest"] and args_b[-1] == "best"
    assert key_b == hashlib.sha1(str(plan.resolve()).encode()).hexdigest()[:12]
    assert key_l != key_b and name_l != name_b and name_l.endswith("(latest)")
    with pytest.raises(SystemExit):
        ss.main(["--work", str(tmp_path / "w"), "-m", str(plan), "--checkpoint", "last"])
    with pytest.raises(DeepWMLError, match="not a folder"):
        ss.model_arguments(str(tmp_path / "missing"))
