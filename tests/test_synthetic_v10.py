"""Generator v10: limbic grey matter and peritrigonal white matter are brighter, and never lesion (deepwml.synthetic.limbic)."""
from __future__ import annotations

import numpy as np
import pytest

from deepwml.synthetic import acquisition
from deepwml.synthetic.acquisition import LIMBIC_RANGE, TERMINAL_RANGE, sample_contrast
from deepwml.synthetic.centres import CENTRES
from deepwml.synthetic.generate import generate_case
from deepwml.synthetic.limbic import limbic_weight, mni_to_template, terminal_weight
from deepwml.synthetic.template_brain import load_template


def _points(*mni):
    """Template (X, Y, Z) arrays of MNI RAS points."""
    q = np.array([mni_to_template(p) for p in mni], np.float32)
    return q[:, 0], q[:, 1], q[:, 2]


def test_mni_points_land_on_the_template_tissue_they_name():
    tpl = load_template()
    x, y, z = _points((6.0, 0.0, 18.0), (-6.0, 0.0, 18.0))
    # the ventricle seeds of dataset_conversion/icbm152_template.py are inside the template's ventricles
    assert np.all(tpl.ventricle.sample_points(z, y, x) < 0)
    x, y, z = _points((28.0, -22.0, -12.0), (38.0, 0.0, 4.0), (6.0, 10.0, 36.0), (26.0, -10.0, 30.0))
    gm, wm = tpl.tissue_at([z, y, x])
    # hippocampus, insula and cingulate cortex are grey matter; the corona radiata is white matter
    assert np.all(gm[:3] > 0.4) and wm[3] > 0.8


def test_the_limbic_regions_cover_limbic_cortex_on_both_sides_and_nothing_else():
    x, y, z = _points((28.0, -22.0, -12.0), (-28.0, -22.0, -12.0), (38.0, 0.0, 4.0), (6.0, 10.0, 36.0), (23.0, -4.0, -18.0))
    assert np.all(limbic_weight((x, y, z)) == 1.0)
    # frontal and occipital white matter, the precentral gyrus, the putamen
    x, y, z = _points((25.0, 30.0, 25.0), (20.0, -80.0, 10.0), (40.0, -15.0, 55.0), (24.0, 4.0, 2.0))
    assert np.all(limbic_weight((x, y, z)) == 0.0)
    x, y, z = _points((25.0, -48.0, 22.0), (-25.0, -48.0, 22.0), (25.0, 30.0, 25.0))
    assert np.all(terminal_weight((x, y, z)) == np.array([1.0, 1.0, 0.0], np.float32))


def test_each_scan_draws_its_limbic_and_peritrigonal_brightness():
    draws = [sample_contrast(CENTRES["MS#1"], np.random.default_rng(s)) for s in range(200)]
    limbic = np.array([c.limbic for c in draws])
    terminal = np.array([c.terminal for c in draws])
    assert LIMBIC_RANGE[0] <= limbic.min() and limbic.max() <= LIMBIC_RANGE[1] and limbic.std() > 0.02
    assert TERMINAL_RANGE[0] <= terminal.min() and terminal.max() <= TERMINAL_RANGE[1]


def test_limbic_brightness_changes_the_image_but_never_the_label(monkeypatch):
    args = dict(seed=3, truth=True, brain="template", skull_stripped=True)
    bright = generate_case("MS#2", 1, **args)
    assert bright.meta.extra.get("brain") == "template"
    # the same patient with limbic cortex as bright as other cortex (one draw each, so the stream is the same)
    monkeypatch.setattr(acquisition, "LIMBIC_RANGE", (1.0, 1.0))
    monkeypatch.setattr(acquisition, "TERMINAL_RANGE", (1.0, 1.0))
    plain = generate_case("MS#2", 1, **args)
    assert np.array_equal(bright.label, plain.label)
    assert not np.array_equal(bright.image, plain.image)


def test_the_mix_brightens_limbic_grey_and_peritrigonal_white_matter_only():
    from deepwml.synthetic.acquisition import mix
    from deepwml.synthetic.anatomy import Tissues
    from deepwml.synthetic.mimics import Mimics

    zeros = np.zeros((1, 1, 4), np.float32)
    ones = np.ones_like(zeros)
    grey = np.array([[[1.0, 1.0, 0.0, 0.0]]], np.float32)
    region = np.array([[[1.0, 0.0, 1.0, 0.0]]], np.float32)  # limbic and peritrigonal at voxels 0 and 2
    t = Tissues(zeros, zeros, zeros, zeros, zeros, zeros, zeros, ones, grey, zeros, zeros, zeros, zeros, zeros, zeros,
                zeros, None, None, None, limbic=region, terminal=region)
    m = Mimics(zeros, zeros, zeros, zeros, zeros)
    c = replace_contrast(limbic=1.2, terminal=1.1)
    out = mix(t, m, zeros, ones, c)[0, 0]
    # grey: limbic 1.2 x the cortex; white: peritrigonal 1.1 x; elsewhere unchanged
    assert out[0] == pytest.approx(c.grey * 1.2, rel=1e-5) and out[1] == pytest.approx(c.grey, rel=1e-5)
    assert out[2] == pytest.approx(1.1, rel=1e-5) and out[3] == pytest.approx(1.0, rel=1e-5)


def replace_contrast(**changes):
    """A fixed contrast with ``changes``."""
    from dataclasses import replace

    return replace(sample_contrast(CENTRES["MS#1"], np.random.default_rng(0)), **changes)
