"""--min-lesion-contrast: a predicted lesion is kept only when it stands out from the tissue around it on its own
slices; the filter travels through deepwml_predict, deepwml_ensemble, a model's stored postprocessing and its report."""
from __future__ import annotations

import json
from unittest import mock

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import ndimage

from conftest import tiny_case
from deepwml.cli.predict import main as predict_main
from deepwml.imageio import Geometry, read_image, write_image
from deepwml.inference import lesion_contrast
from deepwml.inference.lesion_contrast import (background_floor, lesion_contrasts, lesion_spreads, ring_disk, ring_radius,
                                              widen_box)
from deepwml.inference.lesion_report import filter_lesions, label_lesions
from deepwml.inference.postprocessing import MaskSettings, read_postprocessing
from deepwml.utils.errors import DeepWMLError
from deepwml_testing.toy_models import tiny_plan, write_model_dir

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _scan():
    """Tissue at 100 beside a stripped background strip; lesion 1 at 150 in the open, lesion 2 at 120 against the
    background, lesion 3 at 130 on a slice whose neighbour is at 300 right above it, lesion 4 filling a slice."""
    image = np.full((4, 40, 40), 100.0, np.float32)
    image[:, :, :5] = 0.0
    mask = np.zeros(image.shape, np.uint8)
    mask[0, 10:13, 20:23] = 1
    image[0, 10:13, 20:23] = 150.0
    mask[0, 20:23, 5:8] = 1
    image[0, 20:23, 5:8] = 120.0
    mask[1, 30:33, 30:33] = 1
    image[1, 30:33, 30:33] = 130.0
    image[2, 25:38, 25:38] = 300.0  # bright tissue on the next slice: not part of lesion 3's ring
    mask[3] = 1
    return image, mask


def test_a_lesion_s_contrast_is_its_mean_over_the_median_of_its_own_slices_tissue():
    """Ring: in-plane only, other lesions and background left out; a lesion with no tissue around it has none."""
    image, mask = _scan()
    labels, count = label_lesions(mask)
    contrast = lesion_contrasts(image, labels, count, ring_radius((5.0, 1.0, 1.0), 0), floor=10.0)
    assert count == 4
    by_voxel = {tuple(np.argwhere(labels == k)[0]): contrast[k - 1] for k in range(1, count + 1)}
    assert by_voxel[(0, 10, 20)] == pytest.approx(1.5)
    assert by_voxel[(0, 20, 5)] == pytest.approx(1.2)  # the zeros beside it are background, not dark tissue
    assert by_voxel[(1, 30, 30)] == pytest.approx(1.3)  # the 300s a slice away are not around it
    assert np.isnan(by_voxel[(3, 0, 0)])
    # on a grid whose thick axis is numpy's last, the ring lies in the other two
    assert ring_radius((1.0, 0.5, 6.0), 2, ring_mm=3.0) == (3, 6, 0)


def _contrasts_lesion_by_lesion(image, labels, count, radius, floor=-np.inf):
    """The reference: each lesion's ring dilated on its own, as lesion_contrasts measured it before it was
    vectorised."""
    image = np.asarray(image, np.float32)
    out = np.full(count, np.nan)
    if count == 0:
        return out
    tissue = (image > floor) & (labels == 0)
    disk = ring_disk(radius)
    means = np.atleast_1d(ndimage.mean(image, labels, np.arange(1, count + 1)))
    for index, box in enumerate(ndimage.find_objects(labels, max_label=count), start=1):
        if box is None:
            continue
        box = widen_box(box, image.shape, radius)
        ring = ndimage.binary_dilation(labels[box] == index, disk) & tissue[box]
        if ring.any():
            out[index - 1] = means[index - 1] / max(float(np.median(image[box][ring])), 1e-12)
    return out


def _spreads_lesion_by_lesion(image, labels, count, radius, floor=-np.inf):
    """The reference of lesion_spreads: each lesion's ring dilated on its own, its log intensities' median and median
    absolute deviation taken by numpy."""
    image = np.asarray(image, np.float32)
    logs = np.log(np.maximum(image, np.finfo(np.float32).tiny))
    tissue = (image > floor) & (labels == 0)
    out = np.full(count, np.nan)
    for index, box in enumerate(ndimage.find_objects(labels, max_label=count), start=1):
        if box is None:
            continue
        box = widen_box(box, image.shape, radius)
        lesion = labels[box] == index
        ring = logs[box][ndimage.binary_dilation(lesion, ring_disk(radius)) & tissue[box]]
        if ring.size >= lesion_contrast.MIN_RING_VOXELS:
            centre = np.median(ring)
            spread = max(float(np.median(np.abs(ring - centre))), lesion_contrast.MIN_LOG_SPREAD)
            out[index - 1] = (float(np.mean(logs[box][lesion], dtype=np.float64)) - centre) / spread
    return out


@pytest.mark.parametrize("seed", range(4))
def test_lesion_spreads_match_the_lesion_by_lesion_rings(seed, monkeypatch):
    """The spread contrast from the ratio's pairs (and from its dilated rings) is the one each ring gives on its own;
    a ring of under five voxels gives none."""
    rng = np.random.default_rng(seed)
    shape = [(5, 30, 24), (26, 4, 31), (22, 28, 3)][seed % 3]
    slice_axis = seed % 3
    radius = tuple(0 if a == slice_axis else int(r) for a, r in enumerate(rng.integers(1, 5, 3)))
    image = (rng.gamma(4.0, 25.0, shape) + 1).astype(np.float32)
    mask = ndimage.binary_opening(rng.random(shape) < 0.35) | (rng.random(shape) < 0.05)
    labels, count = ndimage.label(mask)
    floor = float(rng.choice([-np.inf, 40.0]))
    expected = _spreads_lesion_by_lesion(image, labels, count, radius, floor)
    assert (~np.isnan(expected)).sum() > 5
    np.testing.assert_allclose(lesion_spreads(image, labels, count, radius, floor), expected, rtol=1e-5, atol=1e-5, equal_nan=True)
    monkeypatch.setattr(lesion_contrast, "PAIRS_AT_ONCE", int(rng.integers(1, 400)))
    np.testing.assert_allclose(lesion_spreads(image, labels, count, radius, floor), expected, rtol=1e-5, atol=1e-5, equal_nan=True)
    monkeypatch.setattr(lesion_contrast, "DILATE_FROM_PAIRS", 1)
    monkeypatch.setattr(lesion_contrast, "DILATE_PAIRS_PER_VOXEL", 0.0)
    np.testing.assert_allclose(lesion_spreads(image, labels, count, radius, floor), expected, rtol=1e-5, atol=1e-5, equal_nan=True)


@pytest.mark.parametrize("seed", range(3))
def test_both_figures_from_one_pass_over_the_rings_are_those_of_each_alone(seed, monkeypatch):
    """lesion_measures (the contrast filter with its spread bound, in predict and at every threshold of a search) finds
    the rings once and gives each figure exactly as computed alone, from pairs, in pieces and from dilated rings."""
    from deepwml.inference.lesion_contrast import lesion_measures

    rng = np.random.default_rng(seed)
    shape = [(5, 30, 24), (26, 4, 31), (22, 28, 3)][seed]
    radius = tuple(0 if a == seed else int(r) for a, r in enumerate(rng.integers(1, 5, 3)))
    image = (rng.gamma(4.0, 25.0, shape) + 1).astype(np.float32)
    labels, count = ndimage.label(ndimage.binary_opening(rng.random(shape) < 0.35) | (rng.random(shape) < 0.05))
    floor = float(rng.choice([-np.inf, 40.0]))
    for pieces, least, per_voxel in ((1 << 21, 1 << 16, 1.0), (int(rng.integers(1, 400)), 1 << 16, 1.0), (1 << 21, 1, 0.0)):
        monkeypatch.setattr(lesion_contrast, "PAIRS_AT_ONCE", pieces)
        monkeypatch.setattr(lesion_contrast, "DILATE_FROM_PAIRS", least)
        monkeypatch.setattr(lesion_contrast, "DILATE_PAIRS_PER_VOXEL", per_voxel)
        ratio, spread = lesion_measures(image, labels, count, radius, floor)
        np.testing.assert_array_equal(ratio, lesion_contrasts(image, labels, count, radius, floor))
        np.testing.assert_array_equal(spread, lesion_spreads(image, labels, count, radius, floor))
        assert (~np.isnan(ratio)).sum() > 5 and (~np.isnan(spread)).sum() > 5
        assert lesion_measures(image, labels, count, radius, floor, spreads=False)[1] is None


def test_a_flatter_scanner_leaves_the_spread_contrast_and_lowers_the_ratio():
    """Intensities scaled and raised to a power (a scanner with flatter contrast): the ratio falls towards 1, the
    spread contrast stays."""
    rng = np.random.default_rng(0)
    image = rng.normal(100.0, 4.0, (3, 40, 40)).astype(np.float32)
    labels = np.zeros(image.shape, np.int32)
    labels[1, 10:14, 10:14] = 1
    image[1, 10:14, 10:14] += 30.0
    flat = (300.0 * (image / 100.0) ** 0.6).astype(np.float32)
    spreads = [lesion_spreads(x, labels, 1, (0, 3, 3))[0] for x in (image, flat)]
    ratios = [lesion_contrasts(x, labels, 1, (0, 3, 3))[0] for x in (image, flat)]
    assert spreads[0] > 5 and spreads[1] == pytest.approx(spreads[0], rel=1e-4)
    assert ratios[0] == pytest.approx(1.3, abs=0.02) and ratios[1] == pytest.approx(1.3 ** 0.6, abs=0.02)


@pytest.mark.parametrize("seed", range(6))
def test_lesion_contrasts_match_the_lesion_by_lesion_rings_exactly(seed, monkeypatch):
    """Rings that overlap, reach the volume's edge, are empty or cut by the floor, of odd and even sizes, on any
    slice axis, with lesions split across pieces of pairs: the same numbers as dilating each lesion on its own."""
    rng = np.random.default_rng(seed)
    shape = [(5, 30, 24), (26, 4, 31), (22, 28, 3)][seed % 3]
    slice_axis = seed % 3
    radius = tuple(0 if a == slice_axis else int(r) for a, r in enumerate(rng.integers(1, 5, 3)))
    # integer intensities: many ties, so even rings' two middle values often differ and often do not
    image = rng.integers(0, 12, shape).astype(np.float32) * np.float32(1.37)
    mask = ndimage.binary_opening(rng.random(shape) < 0.35) | (rng.random(shape) < 0.05)
    on_slice = lambda k: tuple(k if a == slice_axis else slice(None) for a in range(3))  # noqa: E731
    mask[on_slice(-2)], mask[on_slice(-1)] = False, True  # a lesion filling the last slice: no ring
    labels, count = ndimage.label(mask)
    labels[labels == count // 2] = 0  # a number without a lesion
    floor = float(rng.choice([-np.inf, 2.0, 6.0]))
    with np.errstate(invalid="ignore"):  # ndimage.mean of the number without a lesion
        expected = _contrasts_lesion_by_lesion(image, labels, count, radius, floor)
    assert np.isnan(expected[labels[on_slice(-1)].max() - 1]) and (~np.isnan(expected)).sum() > 5
    np.testing.assert_array_equal(lesion_contrasts(image, labels, count, radius, floor), expected)
    # a few border voxels' pairs at a time: lesions' pairs spread over several pieces
    monkeypatch.setattr(lesion_contrast, "PAIRS_AT_ONCE", int(rng.integers(1, 400)))
    np.testing.assert_array_equal(lesion_contrasts(image, labels.astype(np.int16), count, radius, floor), expected)
    # each ring dilated on its own instead of from pairs: every lesion's, those whose pairs outnumber their box's
    # voxels, none
    dilate = mock.Mock(wraps=ndimage.binary_dilation)
    monkeypatch.setattr(lesion_contrast.ndimage, "binary_dilation", dilate)
    for least, per_voxel, dilations in ((1, 0.0, lambda n: n > 5), (1, 1.0, lambda n: n < count), (np.inf, 0.0, lambda n: n == 0)):
        dilate.reset_mock()
        monkeypatch.setattr(lesion_contrast, "DILATE_FROM_PAIRS", least)
        monkeypatch.setattr(lesion_contrast, "DILATE_PAIRS_PER_VOXEL", per_voxel)
        np.testing.assert_array_equal(lesion_contrasts(image, labels, count, radius, floor), expected)
        assert dilations(dilate.call_count)
    np.testing.assert_array_equal(lesion_contrasts(image, labels, 0, radius, floor), np.zeros(0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int16, np.uint8])
@pytest.mark.parametrize("size", [1, 2, 7, 1000, 1001, 3 << 20, (3 << 20) + 1])
def test_the_background_floor_is_a_tenth_of_np_median_exactly(dtype, size):
    """Its quicker median is np.median's: the middle value, or the mean of the middle two in the values' dtype."""
    rng = np.random.default_rng(size)
    image = rng.normal(60.0, 40.0, size).astype(dtype)
    image[: size // 3] = 0
    if dtype in (np.float32, np.float64) and size > 2:
        image[1] = np.inf  # a positive voxel, as np.median counts it
    positive = image[image > 0]
    assert background_floor(image) == float(0.1 * np.median(positive))


def test_filter_lesions_drops_faint_lesions_and_never_judges_one_without_a_ring():
    """min_contrast C keeps exactly the lesions at C or more times their ring (and those with no ring); the same
    answer on a geometry whose thick axis is another numpy axis."""
    image, mask = _scan()
    geometry = Geometry((40, 40, 4), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0), AXIAL)
    kept = filter_lesions(mask, geometry, image=image, min_contrast=1.25)
    assert kept[0, 11, 21] == 1 and kept[0, 21, 6] == 0 and kept[1, 31, 31] == 1 and kept[3].all()
    assert filter_lesions(mask, geometry, image=image, min_contrast=1.5)[0, 11, 21] == 1  # exactly the minimum: kept
    assert filter_lesions(mask, geometry, image=image, min_contrast=1.6)[0, 11, 21] == 0
    np.testing.assert_array_equal(filter_lesions(mask, geometry, image=image, min_contrast=0.0), mask)
    # the same scan stored with its slices along numpy's last axis
    turned = Geometry((4, 40, 40), (5.0, 1.0, 1.0), (0.0, 0.0, 0.0), AXIAL)
    np.testing.assert_array_equal(
        filter_lesions(np.moveaxis(mask, 0, 2), turned, image=np.moveaxis(image, 0, 2), min_contrast=1.25),
        np.moveaxis(kept, 0, 2))
    with pytest.raises(DeepWMLError, match="needs the scan"):
        filter_lesions(mask, geometry, min_contrast=1.2)


@pytest.mark.parametrize("field,settings,said,bad", [
    ("min_lesion_contrast", MaskSettings(0.55, tta=True, min_lesion_contrast=1.15),
     "lesions under 1.15 x the tissue around them dropped", (-1.0, 4.0, float("nan"), "1.2", True)),
    ("min_lesion_spread", MaskSettings(0.55, tta=True, min_lesion_contrast=1.2, min_lesion_spread=2.25),
     "lesions under 1.2 x the tissue around them and under 2.25 ring spreads above it dropped",
     (-1.0, 11.0, float("nan"), "2", True)),
])
def test_a_stored_contrast_setting_is_read_checked_and_absent_means_off(tmp_path, field, settings, said, bad):
    """Checkpoints keep the filter and its spread bound as plain numbers; one from before a setting existed has none
    (read as off); a wrong one is refused, naming the file."""
    path = tmp_path / "checkpoint_best.pth"
    assert read_postprocessing({"postprocessing": settings.as_record()}, path, 1) == settings
    assert said in settings.describe()
    if field == "min_lesion_spread":  # written only when set: a record without it is the one from before it existed
        assert field not in MaskSettings(0.55, min_lesion_contrast=1.15).as_record()
    older = {k: v for k, v in settings.as_record().items() if k != field}
    assert getattr(read_postprocessing({"postprocessing": older}, path, 1), field) == 0.0
    for value in bad:
        with pytest.raises(DeepWMLError, match=field) as e:
            read_postprocessing({"postprocessing": dict(older, **{field: value})}, path, 1)
        assert "checkpoint_best.pth" in str(e.value)


def test_a_spread_bound_keeps_a_faint_lesion_that_stands_clear_of_a_quiet_ring():
    """With min_spread S the contrast filter drops a faint lesion only when it also stands less than S ring spreads
    above its ring: of two lesions 1.08 x their ring, the one on quiet tissue stays and the one on noisy tissue goes."""
    rng = np.random.default_rng(1)
    image = np.full((2, 40, 80), 100.0, np.float32)
    image[:, :, :40] += rng.normal(0.0, 1.0, (2, 40, 40)).astype(np.float32)  # quiet tissue on the left
    image[:, :, 40:] += rng.normal(0.0, 20.0, (2, 40, 40)).astype(np.float32)  # noisy tissue on the right
    mask = np.zeros(image.shape, np.uint8)
    mask[0, 18:22, 18:22], mask[0, 18:22, 58:62] = 1, 1
    image[0, 18:22, 18:22], image[0, 18:22, 58:62] = 108.0, 108.0
    geometry = Geometry((80, 40, 2), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0), AXIAL)
    assert not filter_lesions(mask, geometry, image=image, min_contrast=1.15).any()
    kept = filter_lesions(mask, geometry, image=image, min_contrast=1.15, min_spread=2.25)
    assert kept[0, 20, 20] == 1 and kept[0, 20, 60] == 0
    # without a contrast filter the spread bound drops nothing
    np.testing.assert_array_equal(filter_lesions(mask, geometry, image=image, min_spread=2.25), mask)


def _plateau_case(folder):
    """tiny_case's head with one of its lesions standing on a broad, slightly bright plateau (low contrast)."""
    image, _, geometry = tiny_case(shape_zyx=(6, 72, 60), spacing_xyz=(0.9, 0.8, 6.0), seed=3, n_lesions=4)
    z = 2
    image[z, 10:26, 34:50] += 20.0  # the plateau: 120 where the head is 100, under the toy model's threshold
    image[z, 16:20, 40:44] = 150.0  # a lesion on it: 1.25 x its ring, where the others are ~1.6 x theirs
    return write_image(image, geometry, folder / "scan.nii.gz")


def test_predict_min_lesion_contrast_drops_the_faint_lesions_and_records_it(tmp_path, capsys):
    """deepwml_predict --min-lesion-contrast C: the mask, lesion table and summary lose exactly the lesions under C
    times their ring; the report and the output folder's record say so; resuming without it is refused; a bad value
    is one line and writes nothing."""
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,))
    path = _plateau_case(tmp_path / "in")
    run = lambda out, *extra: predict_main(["-i", str(path), "-o", str(tmp_path / out), "-m", str(model), "--no-qc",  # noqa: E731
                                            "--no-anatomy",
                                            *map(str, extra)])
    assert run("all") == 0
    image = read_image(path)
    labels, count = label_lesions(read_image(tmp_path / "all" / "scan.nii.gz", dtype=None).array)
    radius = ring_radius(tuple(reversed(image.geometry.spacing)), image.geometry.slice_axis_numpy)
    contrast = lesion_contrasts(image.array, labels, count, radius, background_floor(image.array))
    # the plateau's lesion is among the faint ones, the lesions in the open stand out
    assert count >= 3 and contrast[labels[2, 18, 42] - 1] < 1.35 and np.nanmax(contrast) > 1.45, contrast
    assert run("sure", "--min-lesion-contrast", 1.35, "--report") == 0
    mask = read_image(tmp_path / "sure" / "scan.nii.gz", dtype=None).array
    kept = contrast >= 1.35
    np.testing.assert_array_equal(mask > 0, np.concatenate([[False], kept])[labels])
    assert len(pd.read_csv(tmp_path / "sure" / "scan_lesions.csv")) == pd.read_csv(tmp_path / "sure" / "summary.csv").iloc[0][
        "lesion_count"] == kept.sum() < count
    assert "1.35 × the tissue around it" in (tmp_path / "sure" / "report" / "scan.html").read_text(encoding="utf-8")
    record = json.loads((tmp_path / "sure" / ".deepwml_output.json").read_text())["predicted_with"]
    assert record["min_lesion_contrast"] == 1.35
    capsys.readouterr()
    assert run("sure", "--report") == 2
    assert "min_lesion_contrast 1.35 -> 0.0" in capsys.readouterr().err
    for bad in ("-0.1", "nan", "5"):
        assert run("bad", "--min-lesion-contrast", bad) == 2
        assert "--min-lesion-contrast must be a ratio from 0 (off) to 3" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_predict_min_lesion_spread_keeps_the_faint_lesions_that_stand_clear_of_their_ring(tmp_path, capsys):
    """deepwml_predict --min-lesion-contrast C --min-lesion-spread S: a lesion under C goes only when also under S
    spreads; the report and the output folder's record say so; a bad value is one line and writes nothing."""
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,))
    path = _plateau_case(tmp_path / "in")
    run = lambda out, *extra: predict_main(["-i", str(path), "-o", str(tmp_path / out), "-m", str(model), "--no-qc",  # noqa: E731
                                            "--no-anatomy", *map(str, extra)])
    assert run("all") == 0
    image = read_image(path)
    labels, count = label_lesions(read_image(tmp_path / "all" / "scan.nii.gz", dtype=None).array)
    radius = ring_radius(tuple(reversed(image.geometry.spacing)), image.geometry.slice_axis_numpy)
    floor = background_floor(image.array)
    contrast = lesion_contrasts(image.array, labels, count, radius, floor)
    spread = lesion_spreads(image.array, labels, count, radius, floor)
    bound = float(np.nanmedian(spread[contrast < 1.5]))
    assert run("both", "--min-lesion-contrast", 1.5, "--min-lesion-spread", bound, "--report") == 0
    kept = ~((contrast < 1.5) & ~(spread >= bound))
    assert 0 < kept.sum() and (contrast < 1.5).sum() > (~kept).sum()  # the bound keeps some of the faint lesions
    mask = read_image(tmp_path / "both" / "scan.nii.gz", dtype=None).array
    np.testing.assert_array_equal(mask > 0, np.concatenate([[False], kept])[labels])
    assert f"unless {bound:g} ring spreads above it" in (tmp_path / "both" / "report" / "scan.html").read_text(encoding="utf-8")
    record = json.loads((tmp_path / "both" / ".deepwml_output.json").read_text())["predicted_with"]
    assert record["min_lesion_spread"] == pytest.approx(bound)
    capsys.readouterr()
    for bad in ("-1", "nan", "11"):
        assert run("bad", "--min-lesion-contrast", 1.5, "--min-lesion-spread", bad) == 2
        assert "--min-lesion-spread must be a number of ring spreads from 0 (off) to 10" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_model_s_stored_contrast_filter_applies_by_default_and_yields_to_the_run_s(tmp_path, capsys):
    """A stored min_lesion_contrast is what deepwml_predict applies (and says), unless the run gives its own."""
    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,))
    ckpt_path = model / "fold_0" / "checkpoint_best.pth"
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["postprocessing"] = dict(MaskSettings(0.5, min_lesion_contrast=1.35).as_record(), record={})
    torch.save(ckpt, ckpt_path)
    path = _plateau_case(tmp_path / "in")
    base = ["-i", str(path), "-m", str(model), "--no-qc", "--no-anatomy", "--backend", "torch"]
    assert predict_main(base + ["-o", str(tmp_path / "stored")]) == 0
    assert "lesions under 1.35 x the tissue around them dropped" in capsys.readouterr().out
    assert predict_main(base + ["-o", str(tmp_path / "off"), "--min-lesion-contrast", "0"]) == 0
    stored = read_image(tmp_path / "stored" / "scan.nii.gz", dtype=None).array
    off = read_image(tmp_path / "off" / "scan.nii.gz", dtype=None).array
    assert label_lesions(off)[1] > label_lesions(stored)[1] and (stored <= off).all() and off[2, 18, 42] and not stored[2, 18, 42]


def test_ensemble_contrast_filter_needs_the_scans(tmp_path):
    """deepwml_ensemble --min-lesion-contrast reads each lesion's surroundings from the scans: without --images, one
    clear error before anything is written."""
    from deepwml.inference.ensemble import ensemble

    model = write_model_dir(tmp_path / "results" / "Dataset999_Toy" / "tiny", tiny_plan(), folds=(0,))
    path = _plateau_case(tmp_path / "in")
    for run in ("a", "b"):
        assert predict_main(["-i", str(path), "-o", str(tmp_path / run), "-m", str(model), "--no-qc", "--no-anatomy",
                             "--save-probabilities"]) == 0
    with pytest.raises(DeepWMLError, match="give the scans with --images"):
        ensemble([tmp_path / "a", tmp_path / "b"], tmp_path / "out", min_lesion_contrast=1.35, progress=False)
    assert not (tmp_path / "out").exists()
    report = ensemble([tmp_path / "a", tmp_path / "b"], tmp_path / "out", min_lesion_contrast=1.35, progress=False,
                      images=tmp_path / "in")
    assert not report.failed
    one = read_image(tmp_path / "a" / "scan.nii.gz", dtype=None).array
    both = read_image(tmp_path / "out" / "scan.nii.gz", dtype=None).array
    assert label_lesions(both)[1] < label_lesions(one)[1] and one[2, 18, 42] and not both[2, 18, 42]
