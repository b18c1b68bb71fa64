"""deepwml_predict --white-matter-only: lesions the anatomy map places in the cortex or outside the brain are dropped."""
from __future__ import annotations

import numpy as np
import pytest

from deepwml.anatomy.labels import BACKGROUND, CORTEX, INFRATENTORIAL, VENTRICLE, WHITE_MATTER
from deepwml.cli import predict as predict_cli
from deepwml.imageio import Geometry, read_image
from deepwml.inference.lesion_report import label_lesions
from deepwml.inference.white_matter import white_matter_lesions
from test_anatomy_model import models  # noqa: F401 - the fixture


def test_only_cortical_and_extracerebral_lesions_are_dropped_and_each_one_whole():
    anatomy = np.full((5, 64, 64), WHITE_MATTER, np.uint8)
    anatomy[:, :4, :] = CORTEX
    anatomy[2, 20:30, 20:30] = VENTRICLE
    anatomy[0, 40:, :] = INFRATENTORIAL
    anatomy[:, :, 60:] = BACKGROUND
    mask = np.zeros(anatomy.shape, np.uint8)
    kept = {
        "juxtacortical": (2, slice(4, 8), slice(44, 50)),
        "periventricular": (2, slice(22, 26), slice(30, 36)),
        "deep": (4, slice(40, 44), slice(40, 44)),
        "infratentorial": (0, slice(50, 54), slice(10, 14)),
    }
    dropped = {
        "cortical": (4, slice(1, 4), slice(44, 50)),  # three quarters in the cortex, a row in white matter below
        "outside": (1, slice(30, 34), slice(60, 63)),
    }
    for index in list(kept.values()) + list(dropped.values()):
        mask[index] = 1
    mask[4, 4, 44:50] = 1  # the cortical lesion's part in white matter goes with it
    geometry = Geometry((64, 64, 5), (0.5, 0.5, 6.0), (0.0, 0.0, 0.0))
    out = white_matter_lesions(mask, anatomy, geometry)
    assert out.dtype == np.uint8 and out.shape == mask.shape
    for name, index in kept.items():
        assert out[index].all(), name
    for name, index in dropped.items():
        assert not out[index].any(), name
    assert out[4, 4, 44:50].sum() == 0
    assert label_lesions(out)[1] == len(kept)
    assert not white_matter_lesions(np.zeros_like(mask), anatomy, geometry).any()


def test_predict_white_matter_only_writes_a_subset_of_the_lesions_of_a_plain_run(tmp_path, models):  # noqa: F811
    lesion, anatomy, inputs = models
    args = ["-i", str(inputs), "-m", str(lesion), "--no-qc", "--anatomy-model", str(anatomy), "--save-anatomy"]
    assert predict_cli.main(args + ["-o", str(tmp_path / "plain")]) == 0
    assert predict_cli.main(args + ["-o", str(tmp_path / "wm"), "--white-matter-only"]) == 0
    plain = read_image(tmp_path / "plain" / "scan.nii.gz", dtype=None)
    wm = read_image(tmp_path / "wm" / "scan.nii.gz", dtype=None).array
    anat = read_image(tmp_path / "wm" / "scan_anatomy.nii.gz", dtype=None).array
    assert np.array_equal(wm, white_matter_lesions(plain.array, anat, plain.geometry))
    assert not (wm.astype(bool) & ~plain.array.astype(bool)).any()


@pytest.mark.parametrize("extra,message", [
    (["--white-matter-only"], "ships no anatomy model.*--anatomy-model"),
    (["--no-anatomy", "--white-matter-only"], "--no-anatomy contradicts .*--white-matter-only"),
    (["--skull-strip"], "ships no anatomy model.*--anatomy-model"),
    (["--no-anatomy", "--skull-strip"], "--no-anatomy contradicts .*--skull-strip"),
])
def test_an_option_that_needs_the_anatomy_map_without_one_is_one_clear_line(tmp_path, models, capsys, extra, message):  # noqa: F811
    lesion, _, inputs = models
    assert predict_cli.main(["-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(lesion)] + extra) == 2
    import re

    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "out").exists()
