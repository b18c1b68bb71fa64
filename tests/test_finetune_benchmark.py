"""benchmarks/finetune.py's site unlike the generator: a flatter, noisier scanner and raters who outline wider."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from deepwml_testing.benchmarks import load_benchmark


@pytest.fixture(scope="module")
def ft():
    """benchmarks/finetune.py as a module."""
    return load_benchmark("finetune")


def _head(rng: np.random.Generator) -> np.ndarray:
    """Air around tissue at 100 with a lesion at 140 and CSF at 40."""
    image = np.zeros((3, 40, 40))
    image[:, 5:35, 5:35] = 100 + rng.normal(0, 1, (3, 30, 30))
    image[:, 10:14, 10:14] = 140
    image[:, 20:24, 20:24] = 40
    return image


def test_a_flatter_scanner_keeps_the_tissue_median_and_brings_lesions_and_csf_closer_to_it(ft):
    image = _head(np.random.default_rng(0))
    out = ft.shift_image(image, 0.6, 0.0, np.random.default_rng(1))
    m = ft.tissue_median(image)
    assert abs(m - 100) < 1
    assert abs(ft.tissue_median(out) - m) < 1
    assert out[0, 11, 11] == pytest.approx(m * (140 / m) ** 0.6, rel=1e-4)
    assert 40 < out[0, 21, 21] < 100 and out[0, 21, 21] == pytest.approx(m * (40 / m) ** 0.6, rel=1e-4)
    assert np.all(out[:, :5] == 0) and out.dtype == np.float32


def test_site_noise_is_rician_and_scaled_to_the_tissue(ft):
    image = _head(np.random.default_rng(0))
    out = ft.shift_image(image, 1.0, 0.05, np.random.default_rng(1))
    air = out[:, :4, :4]
    assert np.all(air >= 0) and 2 < air.mean() < 10  # |complex noise| of sigma 5 has mean about 6.3
    assert abs(np.std(out[:, 25:35, 5:15] - image[:, 25:35, 5:15]) - 5) < 1.5


def test_generous_raters_grow_each_slice_in_plane_only(ft):
    mask = np.zeros((3, 9, 9), np.uint8)
    mask[1, 4, 4] = 1
    grown = ft.dilate_mask(mask, 1)
    assert grown.dtype == np.uint8 and grown[1].sum() == 5 and grown[0].sum() == grown[2].sum() == 0
    assert ft.dilate_mask(mask, 2)[1].sum() == 13
    assert ft.dilate_mask(mask, 0) is mask


def _write(path, array) -> None:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing((0.5, 0.5, 6.0))
    sitk.WriteImage(img, str(path))


def test_the_site_is_shifted_once_and_a_different_shift_of_the_same_folder_is_refused(ft, tmp_path):
    raw = tmp_path / "raw"
    for folder in ("imagesTr", "imagesTs", "labelsTr", "labelsTs"):
        (raw / folder).mkdir(parents=True)
    image = _head(np.random.default_rng(0)).astype(np.float32)
    mask = np.zeros(image.shape, np.uint8)
    mask[:, 11, 11] = 1
    _write(raw / "imagesTr" / "a_0000.nii.gz", image)
    _write(raw / "labelsTr" / "a.nii.gz", mask)
    ft.shift_site(raw, 0.6, 0.0, 1, seed=3)
    once = sitk.ReadImage(str(raw / "imagesTr" / "a_0000.nii.gz"))
    assert once.GetSpacing() == (0.5, 0.5, 6.0)
    assert sitk.GetArrayFromImage(once)[0, 11, 11] < 135
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "labelsTr" / "a.nii.gz"))).sum() == 3 * 5
    ft.shift_site(raw, 0.6, 0.0, 1, seed=3)  # resumed: not shifted twice
    assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "imagesTr" / "a_0000.nii.gz"))),
                          sitk.GetArrayFromImage(once))
    with pytest.raises(SystemExit, match="was shifted with"):
        ft.shift_site(raw, 0.8, 0.0, 1, seed=3)


def test_an_interrupted_shift_resumes_with_the_files_it_had_not_reached(ft, tmp_path):
    raw = tmp_path / "raw"
    (raw / "imagesTr").mkdir(parents=True)
    image = _head(np.random.default_rng(0)).astype(np.float32)
    for name in ("a", "b"):
        _write(raw / "imagesTr" / f"{name}.nii.gz", image)
    whole = tmp_path / "whole"
    (whole / "imagesTr").mkdir(parents=True)
    for name in ("a", "b"):
        _write(whole / "imagesTr" / f"{name}.nii.gz", image)
    ft.shift_site(whole, 0.7, 0.02, 0, seed=5)
    ft.shift_site(raw, 0.7, 0.02, 0, seed=5)
    state = ft.read_json(raw / "site_shift.json")
    ft.write_json(raw / "site_shift.json", dict(state, done=["imagesTr/a.nii.gz"]))  # stopped after a
    _write(raw / "imagesTr" / "b.nii.gz", image)
    ft.shift_site(raw, 0.7, 0.02, 0, seed=5)
    for name in ("a", "b"):
        assert np.array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(raw / "imagesTr" / f"{name}.nii.gz"))),
                              sitk.GetArrayFromImage(sitk.ReadImage(str(whole / "imagesTr" / f"{name}.nii.gz"))))
