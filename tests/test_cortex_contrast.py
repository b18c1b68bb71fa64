"""Lesions in or against the cortex no brighter than bright normal cortex are dropped by default
(deepwml.inference.cortex_contrast, deepwml_predict --min-cortex-contrast)."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from deepwml.anatomy.labels import BACKGROUND, CORTEX, VENTRICLE, WHITE_MATTER
from deepwml.cli import predict as predict_cli
from deepwml.constants import MIN_CORTEX_CONTRAST
from deepwml.imageio import Geometry, read_image
from deepwml.inference import pipeline
from deepwml.inference.cortex_contrast import RULE_LOCATIONS, check_cortex_contrast, drop_faint_cortical
from deepwml.inference.output_folder import CORTEX_RULE_LOCATIONS
from deepwml.inference.lesion_report import label_lesions
from deepwml.utils.errors import DeepWMLError
from test_anatomy_model import models  # noqa: F401 - the fixture
from test_outside_brain import two_blobs_with_map

AXIAL = Geometry((64, 64, 5), (0.5, 0.5, 6.0), (0.0, 0.0, 0.0))


def cortex_and_white_matter(shape=(5, 64, 64)):
    """(anatomy map: cortex in columns 0-31, white matter in 32-63, a ventricle in the white matter; a scan: cortex
    100, white matter 80, ventricle 30, with noise)."""
    anatomy = np.full(shape, WHITE_MATTER, np.uint8)
    anatomy[..., :32] = CORTEX
    anatomy[:, 40:50, 44:54] = VENTRICLE
    image = np.where(anatomy == CORTEX, 100.0, 80.0) - 50.0 * (anatomy == VENTRICLE)
    image = image + np.random.default_rng(0).normal(0, 2, shape)
    return anatomy, image.astype(np.float32)


def test_only_lesions_in_the_cortex_under_the_bound_are_dropped_each_one_whole():
    anatomy, image = cortex_and_white_matter()
    mask = np.zeros(anatomy.shape, np.uint8)
    lesions = {
        "faint, in the cortex": ((1, slice(5, 9), slice(5, 9)), 110.0),  # 1.10 x the cortex: bright normal cortex
        "bright, in the cortex": ((3, slice(5, 9), slice(5, 9)), 130.0),  # 1.30 x: a lesion
        "faint, in white matter": ((1, slice(5, 9), slice(40, 44)), 110.0),  # deep white matter is not judged here
        "faint, beside the ventricle": ((3, slice(36, 40), slice(46, 50)), 100.0),
        # white matter touching the cortex (juxtacortical): judged as the cortex is
        "faint, against the cortex": ((2, slice(20, 24), slice(32, 35)), 110.0),
        "bright, against the cortex": ((4, slice(20, 24), slice(32, 35)), 130.0),
    }
    for where, value in lesions.values():
        mask[where] = 1
        image[where] = value
    out, dropped = drop_faint_cortical(mask, anatomy, image, AXIAL, 1.15)
    assert dropped == 2 and out.dtype == np.uint8
    expected = mask.copy()
    expected[lesions["faint, in the cortex"][0]] = 0
    expected[lesions["faint, against the cortex"][0]] = 0
    assert np.array_equal(out, expected)
    # the bound is the caller's: at 1.35 the bright ones are normal cortex too, at 1.05 none is
    assert drop_faint_cortical(mask, anatomy, image, AXIAL, 1.35)[1] == 4
    assert drop_faint_cortical(mask, anatomy, image, AXIAL, 1.05)[1] == 0
    # 0 turns it off; a map without cortex (outside the lesions) or an empty mask changes nothing
    assert drop_faint_cortical(mask, anatomy, image, AXIAL, 0.0)[1] == 0
    assert np.array_equal(drop_faint_cortical(mask, np.full_like(anatomy, WHITE_MATTER), image, AXIAL, 1.15)[0], mask)
    assert drop_faint_cortical(np.zeros_like(mask), anatomy, image, AXIAL, 1.15)[1] == 0


def test_the_cortex_it_compares_with_leaves_out_the_predicted_lesions():
    """A scan whose cortex is mostly lesion (as the model marks it) is compared with the cortex that is not."""
    anatomy, image = cortex_and_white_matter()
    mask = np.zeros(anatomy.shape, np.uint8)
    mask[:, :, :24] = 1  # three quarters of the cortex marked, at 1.1 x the rest: normal cortex all the same
    image[:, :, :24] = 110.0
    out, dropped = drop_faint_cortical(mask, anatomy, image, AXIAL, 1.15)
    assert dropped == 1 and not out.any()
    # with nothing of the cortex left outside the lesions there is nothing to compare with: kept
    mask[:, :, :32] = 1
    out, dropped = drop_faint_cortical(mask, anatomy, image, AXIAL, 1.15)
    assert dropped == 0 and np.array_equal(out, mask)


@pytest.mark.parametrize("value", [0.5, 3.5, float("nan"), -1.0])
def test_a_bound_that_is_not_0_or_from_1_to_3_is_refused(value):
    with pytest.raises(DeepWMLError, match="--min-cortex-contrast must be 0"):
        check_cortex_contrast(value)
    assert check_cortex_contrast(0.0) == 0.0 and check_cortex_contrast(1.2) == 1.2


def test_the_command_line_refuses_a_bound_it_cannot_use(tmp_path, capsys):
    with pytest.raises(SystemExit):
        predict_cli.build_parser().parse_args(["-i", "x", "-o", "y", "--min-cortex-contrast", "0.8"])
    assert "expected 0 (off) or a bound from 1 to 3" in capsys.readouterr().err
    assert predict_cli.build_parser().parse_args(["-i", "x", "-o", "y"]).min_cortex_contrast == MIN_CORTEX_CONTRAST


@pytest.fixture
def half_cortex_run(tmp_path, models, monkeypatch):  # noqa: F811
    """deepwml_predict's arguments for the fixture's scan with an anatomy map whose head is cortex on its left half
    and white matter on its right, and two bright blobs (1.8 x the head) the toy model marks, one in each half."""
    def half_cortex(shape):
        _, y, x = shape
        yy, xx = np.meshgrid(np.linspace(-1, 1, y), np.linspace(-1, 1, x), indexing="ij")
        head = (yy / 0.85) ** 2 + (xx / 0.7) ** 2 < 1  # the tiny case's head (tests/conftest.py)
        labels = np.full(shape, BACKGROUND, np.uint8)
        labels[:, head & (xx < 0)] = CORTEX
        labels[:, head & (xx >= 0)] = WHITE_MATTER
        return labels

    return two_blobs_with_map(models, monkeypatch, half_cortex)


def test_predict_drops_faint_lesions_in_the_cortex_records_the_bound_and_counts_them(tmp_path, half_cortex_run, capsys):
    assert predict_cli.main(half_cortex_run + ["-o", str(tmp_path / "default")]) == 0
    assert f"lesions in or against its cortex under {MIN_CORTEX_CONTRAST:g} x the cortex's median dropped" in capsys.readouterr().out
    marker = json.loads((tmp_path / "default" / ".deepwml_output.json").read_text())["predicted_with"]
    assert marker["min_cortex_contrast"] == MIN_CORTEX_CONTRAST and marker["anatomy_weights_sha256"]
    assert marker["cortex_rule_locations"] == CORTEX_RULE_LOCATIONS == ", ".join(RULE_LOCATIONS)
    # 1.8 x the head stands out of the cortex: kept by default; at 2 x it is taken for cortex, the other blob stays
    default = read_image(tmp_path / "default" / "scan.nii.gz", dtype=None).array
    assert default[2, 20:26, 10:16].all() and default[2, 20:26, 30:36].all()
    assert pd.read_csv(tmp_path / "default" / "summary.csv").loc[0, "lesions_dropped_faint_in_cortex"] == 0
    assert predict_cli.main(half_cortex_run + ["-o", str(tmp_path / "strict"), "--min-cortex-contrast", "2"]) == 0
    strict = read_image(tmp_path / "strict" / "scan.nii.gz", dtype=None).array
    assert not strict[2, 20:26, 10:16].any() and strict[2, 20:26, 30:36].all()
    anatomy = read_image(tmp_path / "strict" / "scan_anatomy.nii.gz", dtype=None).array
    gone = (default > 0) & (strict == 0)
    assert np.all(anatomy[gone] == CORTEX)  # nothing in the white matter went
    dropped = label_lesions(default)[1] - label_lesions(strict)[1]
    assert dropped >= 1
    # summary.csv counts them, and keeps the count when a second run resumes the folder
    for _ in range(2):
        assert pd.read_csv(tmp_path / "strict" / "summary.csv").loc[0, "lesions_dropped_faint_in_cortex"] == dropped
        assert predict_cli.main(half_cortex_run + ["-o", str(tmp_path / "strict"), "--min-cortex-contrast", "2"]) == 0
    # another bound is another mask: the folder refuses to mix them
    assert predict_cli.main(half_cortex_run + ["-o", str(tmp_path / "strict"), "--min-cortex-contrast", "0"]) != 0
    assert "min_cortex_contrast 2.0 -> 0.0" in capsys.readouterr().err
    # and so is the bound's reach: a folder predicted before it judged juxtacortical lesions is not resumed
    marker_path = tmp_path / "strict" / ".deepwml_output.json"
    older = json.loads(marker_path.read_text())
    del older["predicted_with"]["cortex_rule_locations"]
    marker_path.write_text(json.dumps(older))
    assert predict_cli.main(half_cortex_run + ["-o", str(tmp_path / "strict"), "--min-cortex-contrast", "2"]) != 0
    assert "cortex_rule_locations 'cortical' -> 'cortical, juxtacortical'" in capsys.readouterr().err
    # 0 keeps them, as does a run without the anatomy map (nothing to compare with, nothing recorded)
    assert predict_cli.main(half_cortex_run + ["-o", str(tmp_path / "off"), "--min-cortex-contrast", "0"]) == 0
    assert np.array_equal(read_image(tmp_path / "off" / "scan.nii.gz", dtype=None).array, default)
    assert "lesions_dropped_faint_in_cortex" not in pd.read_csv(tmp_path / "off" / "summary.csv").columns


def test_the_report_and_the_qc_picture_say_what_the_cortex_bound_dropped(tmp_path, half_cortex_run, monkeypatch):
    titles = []
    real = pipeline.write_qc_montage
    monkeypatch.setattr(pipeline, "write_qc_montage", lambda *a, **k: titles.append(a[4]) or real(*a, **k))
    run = [a for a in half_cortex_run if a != "--no-qc"] + ["--report", "html"]
    assert predict_cli.main(run + ["-o", str(tmp_path / "strict"), "--min-cortex-contrast", "2"]) == 0
    assert predict_cli.main(run + ["-o", str(tmp_path / "off"), "--min-cortex-contrast", "0"]) == 0
    pages = [next((tmp_path / name).rglob("*.html")).read_text() for name in ("strict", "off")]
    assert "<dt>Lesions in or against the cortex</dt><dd>kept when at least 2 × the cortex&#x27;s median intensity" in pages[0] \
        or "<dt>Lesions in or against the cortex</dt><dd>kept when at least 2 × the cortex's median intensity" in pages[0]
    assert "<dt>Lesions in or against the cortex</dt><dd>kept</dd>" in pages[1]
    assert "no brighter than normal cortex dropped" in titles[0] and "cortex" not in titles[1]


def test_the_dicom_node_and_the_bids_app_pass_the_bound_to_every_prediction(tmp_path, monkeypatch):
    from deepwml.bids import participant
    from deepwml.cli import bids_app, listen

    for extra, bound in (([], MIN_CORTEX_CONTRAST), (["--min-cortex-contrast", "0"], 0.0)):
        request = listen._request(listen.build_parser().parse_args([str(tmp_path / "node"), *extra]))
        assert request.min_cortex_contrast == bound
    seen = []

    def stop(bids_dir, output_dir, request, **kwargs):
        seen.append(request.min_cortex_contrast)
        raise DeepWMLError("stopped here")

    monkeypatch.setattr(participant, "selected_scans", lambda *a: [])
    monkeypatch.setattr(participant, "run_participant_level", stop)
    (tmp_path / "bids").mkdir()
    for extra in ([], ["--min-cortex-contrast", "1.3"]):
        assert bids_app.main([str(tmp_path / "bids"), str(tmp_path / "out"), "participant", *extra]) != 0
    assert seen == [MIN_CORTEX_CONTRAST, 1.3]
