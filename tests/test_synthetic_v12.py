"""Generator v12: template brains get temporal horns and a bright choroid plexus, never lesion (deepwml.synthetic.choroid)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from deepwml.synthetic import acquisition
from deepwml.synthetic.acquisition import CHOROID_RANGE, mix, sample_contrast
from deepwml.synthetic.anatomy import Tissues
from deepwml.synthetic.centres import CENTRES
from deepwml.synthetic.choroid import CHOROID_MNI, TEMPORAL_HORN_MNI, choroid_sdf, temporal_horn_sdf
from deepwml.synthetic.generate import generate_case
from deepwml.synthetic.limbic import mni_to_template
from deepwml.synthetic.mimics import Mimics
from deepwml.synthetic.template_brain import load_template


def _points(*mni):
    """Template (X, Y, Z) arrays of MNI RAS points."""
    q = np.array([mni_to_template(p) for p in mni], np.float32)
    return q[:, 0], q[:, 1], q[:, 2]


def test_the_temporal_horn_runs_from_the_atrium_along_the_top_of_the_hippocampus():
    tpl = load_template()
    x, y, z = _points(TEMPORAL_HORN_MNI[0])
    # it starts at the template's atrium
    assert tpl.ventricle.sample_points(z, y, x)[0] < 2.0
    # its middle runs on the hippocampus: grey matter 3 mm below, on both sides
    below = [(sx * p[0], p[1], p[2] - 3.0) for p in TEMPORAL_HORN_MNI[1:3] for sx in (1, -1)]
    x, y, z = _points(*below)
    gm, _ = tpl.tissue_at([z, y, x])
    assert np.all(gm > 0.4)
    # and the hippocampus itself is not inside the horn
    x, y, z = _points(*below)
    assert np.all(temporal_horn_sdf((x, y, z), 0.0) > 0.0)


def test_the_glomus_sits_in_the_atrium_of_both_sides():
    tpl = load_template()
    (a, b, _), = [c for c in CHOROID_MNI if c[2] > 3.0]
    centre = tuple((np.asarray(a) + np.asarray(b)) / 2)
    x, y, z = _points(centre, (-centre[0], centre[1], centre[2]))
    assert np.all(tpl.ventricle.sample_points(z, y, x) < 0.0)
    assert np.all(choroid_sdf((x, y, z)) < -2.0)
    # nothing in the frontal horns or the deep white matter
    x, y, z = _points((6.0, 0.0, 18.0), (25.0, 30.0, 25.0))
    assert np.all(choroid_sdf((x, y, z)) > 10.0)


def test_the_temporal_horns_widen_with_the_lateral_ventricles():
    x, y, z = _points(*[(sx * 33.0, -30.0, -7.0 + dz) for sx in (1, -1) for dz in (0.0, 2.5)])
    small, large = temporal_horn_sdf((x, y, z), -1.0), temporal_horn_sdf((x, y, z), 4.0)
    assert np.all(small[::2] < 0.0) and np.all(small[1::2] > 0.0)  # 2.5 mm off the centre line: outside a small horn
    assert np.all(large < 0.0)  # inside an enlarged one


def test_each_scan_draws_its_choroid_brightness():
    draws = np.array([sample_contrast(CENTRES["CSVD#1"], np.random.default_rng(s)).choroid for s in range(200)])
    assert CHOROID_RANGE[0] <= draws.min() and draws.max() <= CHOROID_RANGE[1] and draws.std() > 0.1
    assert (draws > 1.25).mean() > 0.3  # many glomera as bright as lesions


def test_the_mix_paints_the_choroid_plexus_over_the_ventricular_csf():
    zeros = np.zeros((1, 1, 3), np.float32)
    ones = np.ones_like(zeros)
    ventricle = np.array([[[1.0, 1.0, 0.0]]], np.float32)
    choroid = np.array([[[0.0, 1.0, 0.0]]], np.float32)
    t = Tissues(zeros, zeros, zeros, zeros, zeros, zeros, zeros, ones, zeros, zeros, zeros, ventricle, zeros, zeros,
                zeros, zeros, None, None, None, limbic=zeros, terminal=zeros, choroid=choroid)
    c = replace(sample_contrast(CENTRES["MS#1"], np.random.default_rng(0)), choroid=1.4)
    out = mix(t, Mimics(zeros, zeros, zeros, zeros, zeros), zeros, ones, c)[0, 0]
    assert out[0] == pytest.approx(c.csf, rel=1e-5)
    assert out[1] == pytest.approx(1.4, rel=1e-5) and out[2] == pytest.approx(1.0, rel=1e-5)


def test_a_bright_choroid_plexus_changes_the_image_but_never_the_label(monkeypatch):
    args = dict(seed=5, truth=True, brain="template", skull_stripped=False)
    monkeypatch.setattr(acquisition, "CHOROID_RANGE", (1.5, 1.5))
    bright = generate_case("CSVD#1", 2, **args)
    # the same patient with a choroid plexus as dark as CSF (one draw each, so the stream is the same)
    monkeypatch.setattr(acquisition, "CHOROID_RANGE", (0.3, 0.3))
    dark = generate_case("CSVD#1", 2, **args)
    assert np.array_equal(bright.label, dark.label)
    differs = np.abs(bright.image.astype(np.float32) - dark.image.astype(np.float32)) > 0
    # it is a few small structures inside the brain, marked as a bright mimic (not lesion)
    assert 0 < differs.mean() < 0.01
    step = np.abs(bright.image.astype(np.float32) - dark.image.astype(np.float32))
    inner = ndimage.binary_dilation(bright.truth["brain"] | bright.truth["ventricle"], np.ones((1, 5, 5), bool))
    # (ringing and ghosting carry a trace of any structure a little way; nothing visible outside the brain)
    assert inner[step > 0.05 * np.median(bright.image[bright.truth["brain"]])].all()
    # where a voxel is mostly choroid, the truth marks it as a bright mimic; thick slices blur the edge by a pixel
    strong = step > 0.4 * np.median(bright.image[bright.truth["brain"]])
    near_mimic = ndimage.binary_dilation(bright.truth["mimic"], np.ones((1, 5, 5), bool))
    assert strong.any() and near_mimic[strong].mean() > 0.95


def test_procedural_brains_draw_no_choroid_plexus(monkeypatch):
    args = dict(seed=5, brain="procedural", skull_stripped=True)
    monkeypatch.setattr(acquisition, "CHOROID_RANGE", (1.5, 1.5))
    bright = generate_case("MS#1", 1, **args)
    monkeypatch.setattr(acquisition, "CHOROID_RANGE", (0.3, 0.3))
    dark = generate_case("MS#1", 1, **args)
    assert np.array_equal(bright.image, dark.image)
