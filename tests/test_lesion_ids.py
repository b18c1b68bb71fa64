"""deepwml_predict --save-lesion-ids: every lesion under its lesion-table id on the input's grid, and an ITK-SNAP
label description naming each label."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from deepwml.imageio import read_image
from test_patient_report import _predict, _write_case, model_dir  # noqa: F401 - model_dir is a fixture

LINE = re.compile(r'^\s*(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s+([01])\s+([01])\s+"([^"]*)"$')


def _labels(path):
    """{label value: (rgb, name)} of an ITK-SNAP label description file (comment lines skipped)."""
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("#") or not line.strip():
            continue
        m = LINE.match(line)
        assert m, f"not a label description line: {line!r}"
        rows[int(m[1])] = ((int(m[2]), int(m[3]), int(m[4])), m[8])
    return rows


def test_each_lesion_carries_its_table_id_and_the_label_file_names_it(tmp_path, model_dir):  # noqa: F811
    _write_case(tmp_path / "in", "a.nii.gz", seed=1, n_lesions=6)
    _write_case(tmp_path / "in", "b.nii.gz", seed=2, n_lesions=0)
    out = tmp_path / "out"
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--no-qc", "--save-lesion-ids") == 0
    mask = read_image(out / "a.nii.gz", dtype=None)
    ids = read_image(out / "a_lesionids.nii.gz", dtype=None)
    assert ids.array.dtype == np.uint16 and not ids.geometry.mismatches(mask.geometry)
    assert np.array_equal(ids.array > 0, mask.array > 0)  # the mask, no more and no less
    table = pd.read_csv(out / "a_lesions.csv")
    assert len(table) > 1
    for _, row in table.iterrows():
        voxels = ids.array == row["lesion_id"]
        assert voxels.sum() == row["voxels"]
        # one lesion, one label: the label's voxels are the lesion whose first slice the table gives
        slices = np.flatnonzero(voxels.any(axis=(1, 2)))
        assert (slices[0], slices[-1]) == (row["first_slice"], row["last_slice"])
    labels = _labels(out / "a_lesionids.txt")
    assert sorted(labels) == [0, *table["lesion_id"]]
    assert labels[0][1] == "background"
    for _, row in table.iterrows():
        assert labels[row["lesion_id"]][1].startswith(f"lesion {row['lesion_id']}: {row['volume_ml']:.3f} ml")
        assert f"confidence {row['confidence']:.2f}" in labels[row["lesion_id"]][1]
    assert labels[1][0] != labels[2][0]  # neighbours in the table get other colours
    # a case without lesion: an empty map and a file naming the background only
    assert not read_image(out / "b_lesionids.nii.gz", dtype=None).array.any()
    assert list(_labels(out / "b_lesionids.txt")) == [0]

    # the files count as outputs for resuming: a case that lacks one is predicted again, a complete one is not
    (out / "a_lesionids.txt").unlink()
    stamp = (out / "b_lesionids.nii.gz").stat().st_mtime_ns
    assert _predict("-i", tmp_path / "in", "-o", out, "-m", model_dir, "--no-qc", "--save-lesion-ids") == 0
    assert (out / "a_lesionids.txt").is_file() and (out / "b_lesionids.nii.gz").stat().st_mtime_ns == stamp


def test_bids_names_and_a_case_named_like_another_case_s_lesion_ids(tmp_path, model_dir, capsys):  # noqa: F811
    _write_case(tmp_path / "in", "sub-01_ses-1_FLAIR.nii.gz", seed=1)
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--no-qc", "--save-lesion-ids",
                    "--bids-names") == 0
    assert (tmp_path / "out" / "sub-01_ses-1_desc-lesionids_dseg.nii.gz").is_file()
    assert (tmp_path / "out" / "sub-01_ses-1_desc-lesionids_dseg.txt").is_file()
    _write_case(tmp_path / "in2", "x.nii.gz", seed=1)
    _write_case(tmp_path / "in2", "x_lesionids.nii.gz", seed=2)
    assert _predict("-i", tmp_path / "in2", "-o", tmp_path / "out2", "-m", model_dir, "--save-lesion-ids") == 2
    assert "x_lesionids" in capsys.readouterr().err and not (tmp_path / "out2").exists()


@pytest.mark.parametrize("count,dtype", [(3, np.uint16), (70000, np.uint32)])
def test_the_map_widens_past_65535_lesions(count, dtype):
    from deepwml.inference.lesion_ids import lesion_id_map

    mask = np.zeros((1, 2, 2 * count), np.uint8)
    mask[0, 0, ::2] = 1  # single voxels two apart: one lesion each
    ids = lesion_id_map(mask, 0)
    assert ids.dtype == dtype and int(ids.max()) == count and np.unique(ids).size == count + 1


def test_the_qc_picture_numbers_the_lesions_as_the_table_does(tmp_path, model_dir):  # noqa: F811
    from PIL import Image

    from deepwml.inference.lesion_numbers import NUMBERED_LESIONS
    from deepwml.inference.qc import qc_montage

    _write_case(tmp_path / "in", "a.nii.gz", seed=1, n_lesions=6)
    assert _predict("-i", tmp_path / "in", "-o", tmp_path / "out", "-m", model_dir, "--no-anatomy") == 0
    image, mask = read_image(tmp_path / "in" / "a.nii.gz"), read_image(tmp_path / "out" / "a.nii.gz", dtype=None)
    table = pd.read_csv(tmp_path / "out" / "a_lesions.csv")
    title = f"a: {len(table)} lesions, {table['volume_ml'].sum():.2f} ml"
    written = np.asarray(Image.open(tmp_path / "out" / "qc" / "a.png"))
    numbered = np.asarray(qc_montage(image.array, mask.array, image.geometry, title, NUMBERED_LESIONS))
    assert np.array_equal(written, numbered)
    assert not np.array_equal(written, np.asarray(qc_montage(image.array, mask.array, image.geometry, title)))
