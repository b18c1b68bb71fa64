"""Lesions with no voxel in the anatomy model's brain are dropped by default (deepwml.inference.outside_brain)."""
from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from deepwml.anatomy.labels import BACKGROUND, VENTRICLE, WHITE_MATTER
from deepwml.cli import predict as predict_cli
from deepwml.imageio import Geometry, read_image, write_image
from deepwml.inference import pipeline
from deepwml.inference.lesion_report import label_lesions
from deepwml.inference.outside_brain import drop_outside_brain
from deepwml.inference.skull_strip import brain_region
from test_anatomy_model import models  # noqa: F401 - the fixture

AXIAL = Geometry((64, 64, 5), (0.5, 0.5, 6.0), (0.0, 0.0, 0.0))


def brain_on_the_left(shape=(5, 64, 64)) -> np.ndarray:
    """An anatomy map whose brain fills columns 0-31 of slices 0-3 (slice 4: no brain), a ventricle inside it."""
    anatomy = np.full(shape, BACKGROUND, np.uint8)
    anatomy[:4, :, :32] = WHITE_MATTER
    anatomy[:4, 20:30, 10:20] = VENTRICLE
    return anatomy


def test_only_lesions_without_a_voxel_in_the_grown_brain_are_dropped_and_each_one_whole():
    anatomy = brain_on_the_left()
    mask = np.zeros(anatomy.shape, np.uint8)
    kept = {
        "deep": (1, slice(5, 9), slice(5, 9)),
        "in the ventricle": (2, slice(22, 26), slice(12, 16)),
        "straddling the edge": (0, slice(40, 44), slice(28, 40)),  # mostly outside, four columns inside
        "within the 3 mm margin": (3, slice(10, 12), slice(36, 38)),  # 2-3 mm (4-5 columns of 0.5 mm) beyond the edge
    }
    dropped = {
        "10 mm out": (1, slice(50, 54), slice(52, 56)),
        "on a slice with no brain": (4, slice(5, 9), slice(5, 9)),
    }
    for index in list(kept.values()) + list(dropped.values()):
        mask[index] = 1
    out = drop_outside_brain(mask, anatomy, AXIAL)[0]
    assert out.dtype == np.uint8 and out.shape == mask.shape
    for name, index in kept.items():
        assert out[index].all(), name
    for name, index in dropped.items():
        assert not out[index].any(), name
    assert label_lesions(out)[1] == len(kept)
    assert drop_outside_brain(mask, anatomy, AXIAL)[1] == len(dropped)
    # a lesion just beyond the margin goes: 4 mm out
    far = np.zeros_like(mask)
    far[3, 10:12, 40:42] = 1
    assert not drop_outside_brain(far, anatomy, AXIAL)[0].any()


def test_a_map_without_brain_or_a_mask_without_lesions_changes_nothing():
    mask = np.zeros((5, 64, 64), np.uint8)
    mask[1, 50:54, 52:56] = 1
    # the anatomy model found no brain (a phantom, a wrong series): the map is what is wrong, not the lesions
    assert np.array_equal(drop_outside_brain(mask, np.zeros_like(mask), AXIAL)[0], mask)
    empty = np.zeros_like(mask)
    assert not drop_outside_brain(empty, brain_on_the_left(), AXIAL)[0].any()


def test_the_slice_axis_is_taken_from_the_geometry():
    """Slices along numpy's last axis (a volume stored sagittal-first): the margin is grown in those slices' planes."""
    geometry = Geometry((5, 64, 64), (6.0, 0.5, 0.5), (0.0, 0.0, 0.0))
    assert geometry.slice_axis_numpy == 2
    anatomy = np.moveaxis(brain_on_the_left(), 0, 2)
    mask = np.zeros(anatomy.shape, np.uint8)
    mask[10:12, 36:38, 3] = 1  # within the margin in its slice
    mask[50:54, 52:56, 1] = 1  # 10 mm out
    out = drop_outside_brain(mask, anatomy, geometry)[0]
    assert out[10:12, 36:38, 3].all() and not out[50:54, 52:56, 1].any()


@pytest.mark.parametrize("seed", range(4))
def test_the_lesions_kept_are_those_touching_the_skull_strip_brain_region(seed):
    """The boxes the function measures in give exactly the lesions that touch brain_region (--skull-strip's region),
    on scattered specks and an irregular brain with a hole, both slice axes."""
    rng = np.random.default_rng(seed)
    anatomy = np.zeros((6, 80, 72), np.uint8)
    yy, xx = np.mgrid[:80, :72]
    for z in range(5):  # slice 5 without brain
        anatomy[z][((yy - 40) / rng.uniform(20, 30)) ** 2 + ((xx - 36) / rng.uniform(15, 25)) ** 2 < 1] = WHITE_MATTER
    anatomy[2, 38:42, 34:38] = BACKGROUND  # a hole, filled as brain_region fills it
    mask = (rng.random(anatomy.shape) < 0.01).astype(np.uint8)
    mask[:, 2:5, 2:5] = 1  # a column of lesion in a corner
    for geometry, anat, m in ((Geometry((72, 80, 6), (0.7, 0.9, 5.0), (0.0, 0.0, 0.0)), anatomy, mask),
                              (Geometry((6, 72, 80), (5.0, 0.7, 0.9), (0.0, 0.0, 0.0)),
                               np.moveaxis(anatomy, 0, 2), np.moveaxis(mask, 0, 2))):
        labels, count = label_lesions(m)
        region = brain_region(anat, geometry)
        expected = np.isin(labels, np.unique(labels[region & (labels > 0)])) & (labels > 0)
        out = drop_outside_brain(m, anat, geometry)[0]
        assert np.array_equal(out.astype(bool), expected)
        assert 0 < label_lesions(out)[1] < count


def two_blobs_with_map(models, monkeypatch, labels_for) -> list:  # noqa: F811
    """deepwml_predict's arguments for the fixture's scan with two bright blobs the toy threshold model marks, one in
    each half of the same slice, and an anatomy map of ``labels_for(shape)`` in place of the anatomy model's. The
    lesion model sees the scan as given (--no-skull-strip): the rules after it are what these tests judge, and
    stripping would blank a blob outside the map's brain before the model could mark it."""
    lesion, anatomy, inputs = models
    image = read_image(inputs / "scan.nii.gz")
    array = np.array(image.array)
    array[2, 20:26, 10:16] += 80.0
    array[2, 20:26, 30:36] += 80.0
    write_image(array, image.geometry, inputs / "scan.nii.gz")

    def fixed_map(probs, props):
        labels = real_map(probs, props)
        labels[:] = labels_for(labels.shape)
        return labels

    real_map = pipeline.anatomy_map
    monkeypatch.setattr(pipeline, "anatomy_map", fixed_map)
    return ["-i", str(inputs), "-m", str(lesion), "--no-qc", "--no-skull-strip", "--anatomy-model", str(anatomy),
            "--save-anatomy"]


@pytest.fixture
def left_brain_run(tmp_path, models, monkeypatch):  # noqa: F811
    """deepwml_predict's arguments for the fixture's scan with an anatomy map whose brain is the scan's left half."""
    def half_brain(shape):
        labels = np.full(shape, BACKGROUND, np.uint8)
        labels[..., : shape[-1] // 2] = WHITE_MATTER
        return labels

    return two_blobs_with_map(models, monkeypatch, half_brain)


def test_predict_drops_lesions_outside_the_brain_by_default_and_keeps_them_when_asked(tmp_path, left_brain_run, capsys):
    assert predict_cli.main(left_brain_run + ["-o", str(tmp_path / "default")]) == 0
    assert "lesions outside the anatomy model's brain dropped" in capsys.readouterr().out
    assert predict_cli.main(left_brain_run + ["-o", str(tmp_path / "kept"), "--keep-outside-brain"]) == 0
    assert "outside" not in capsys.readouterr().out
    kept = read_image(tmp_path / "kept" / "scan.nii.gz", dtype=None)
    default = read_image(tmp_path / "default" / "scan.nii.gz", dtype=None).array
    anatomy = read_image(tmp_path / "default" / "scan_anatomy.nii.gz", dtype=None).array
    assert kept.array[2, 20:26, 30:36].all() and kept.array[2, 20:26, 10:16].all()
    assert not default[2, 20:26, 30:36].any() and default[2, 20:26, 10:16].all()
    assert np.array_equal(default, drop_outside_brain(kept.array, anatomy, kept.geometry)[0])
    # the lesion table counts what the mask holds
    assert sum(1 for _ in open(tmp_path / "default" / "scan_lesions.csv")) - 1 == label_lesions(default)[1]
    marker = json.loads((tmp_path / "default" / ".deepwml_output.json").read_text())["predicted_with"]
    assert marker["outside_brain_dropped"] is True and marker["anatomy_weights_sha256"]
    # summary.csv counts them, and keeps the count when a second run resumes the folder
    dropped = label_lesions(kept.array)[1] - label_lesions(default)[1]
    assert dropped > 0
    for _ in range(2):
        summary = pd.read_csv(tmp_path / "default" / "summary.csv")
        assert summary.loc[0, "lesions_dropped_outside_brain"] == dropped
        assert predict_cli.main(left_brain_run + ["-o", str(tmp_path / "default")]) == 0
    assert "lesions_dropped_outside_brain" not in pd.read_csv(tmp_path / "kept" / "summary.csv").columns


def test_without_an_anatomy_model_nothing_is_dropped(tmp_path, left_brain_run):
    assert predict_cli.main(left_brain_run[:-3] + ["-o", str(tmp_path / "none"), "--no-anatomy"]) == 0
    assert read_image(tmp_path / "none" / "scan.nii.gz", dtype=None).array[2, 20:26, 30:36].all()
    marker = json.loads((tmp_path / "none" / ".deepwml_output.json").read_text())["predicted_with"]
    assert marker["outside_brain_dropped"] is False


def test_resuming_a_folder_made_the_other_way_is_one_clear_line(tmp_path, left_brain_run, capsys):
    out = str(tmp_path / "out")
    assert predict_cli.main(left_brain_run + ["-o", out, "--keep-outside-brain"]) == 0
    capsys.readouterr()
    assert predict_cli.main(left_brain_run + ["-o", out]) == 2
    err = capsys.readouterr().err
    assert re.search(r"outside_brain_dropped False -> True.*--overwrite", err)


def test_the_dicom_node_passes_keep_outside_brain_to_every_prediction(tmp_path):
    from deepwml.cli import listen

    for extra, kept in (([], False), (["--keep-outside-brain"], True)):
        request = listen._request(listen.build_parser().parse_args([str(tmp_path / "node"), *extra]))
        assert request.keep_outside_brain is kept


def test_the_report_says_whether_lesions_outside_the_brain_were_dropped(tmp_path, left_brain_run):
    for name, extra, said in (("default", [], "dropped (no voxel in the brain the anatomy model finds)"),
                              ("kept", ["--keep-outside-brain"], "<dt>Lesions outside the brain</dt><dd>kept</dd>")):
        assert predict_cli.main(left_brain_run + ["-o", str(tmp_path / name), "--report", "html"] + extra) == 0
        (page,) = (tmp_path / name).rglob("*.html")
        assert said in page.read_text()


def test_the_qc_picture_says_how_many_lesions_outside_the_brain_were_dropped(tmp_path, left_brain_run, monkeypatch):
    """A reader who misses a lesion at the brain's edge learns from the picture's title that some were dropped."""
    titles = []
    real = pipeline.write_qc_montage
    monkeypatch.setattr(pipeline, "write_qc_montage", lambda *a, **k: titles.append(a[4]) or real(*a, **k))
    run = [a for a in left_brain_run if a != "--no-qc"]
    assert predict_cli.main(run + ["-o", str(tmp_path / "default")]) == 0
    assert predict_cli.main(run + ["-o", str(tmp_path / "kept"), "--keep-outside-brain"]) == 0
    kept, default = (label_lesions(read_image(tmp_path / name / "scan.nii.gz", dtype=None).array)[1] for name in ("kept", "default"))
    assert kept > default and titles[0].endswith(f"; {kept - default} outside the brain dropped")
    assert "outside" not in titles[1]
    assert (tmp_path / "default" / "qc" / "scan.png").is_file()
