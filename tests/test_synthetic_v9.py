"""Generator v9: a template subject's own cortex (deepwml.synthetic.folding)."""
from __future__ import annotations

import numpy as np
import pytest

from deepwml.synthetic.folding import FOLD_DEPTH_MM, sample_folding
from deepwml.synthetic.generate import generate_case
from deepwml.synthetic.realism import cortex_and_white_matter
from deepwml.synthetic.warp import sample_warp


def _warp(seed: int):
    """A subject's warp as sample_template_anatomy draws it."""
    return sample_warp(np.random.default_rng(seed), 1.0, (0.0, 0.0, 0.0), 1.0, 0.2)


def test_each_subject_has_its_own_folding_and_the_same_subject_always_the_same():
    a, again, b = sample_folding(_warp(1)), sample_folding(_warp(1)), sample_folding(_warp(2))
    assert np.array_equal(a.waves, again.waves) and a.sharpness == again.sharpness
    assert not np.allclose(a.waves, b.waves)


def test_the_folding_does_not_draw_from_the_case_stream():
    rng = np.random.default_rng(7)
    warp = sample_warp(rng, 1.0, (0.0, 0.0, 0.0), 1.0, 0.2)
    state = rng.bit_generator.state
    sample_folding(warp)
    # the case's own stream is untouched: tuning the folding re-draws no lesion or acquisition
    assert rng.bit_generator.state == state


def test_the_cortical_shell_moves_a_few_millimetres_and_the_deep_brain_not_at_all():
    folding = sample_folding(_warp(3))
    rng = np.random.default_rng(0)
    q = tuple(rng.uniform(-60, 60, 5000).astype(np.float32) for _ in range(3))
    moved = lambda hull: np.sqrt(sum((m - p) ** 2 for m, p in zip(folding.displace(q, np.full(5000, hull, np.float32)), q)))  # noqa: E731
    shell, deep = moved(-2.0), moved(-(FOLD_DEPTH_MM[1] + 1.0))
    assert np.all(deep == 0)
    # gyri bend by millimetres, not centimetres
    assert 0.5 < np.median(shell) < 4.0 and shell.max() < 8.0


def test_the_ribbon_is_sharpened_and_thin_csf_films_are_gathered_into_the_sulci():
    folding = sample_folding(_warp(4))
    share = np.array([0.0, 0.3, 0.5, 0.7, 1.0], np.float32)
    sharp = folding.sharpen(share)
    assert sharp[2] == pytest.approx(0.5) and sharp[1] < 0.3 and sharp[3] > 0.7 and sharp.min() >= 0 and sharp.max() <= 1
    csf = folding.gather_csf(np.array([0.0, 0.05, 0.1, 0.6, 1.0], np.float32))
    # a few per cent of CSF smeared over the cortex by averaging is grey matter again; a sulcus is CSF
    assert np.all(csf[:3] == 0) and csf[3] > 0.9 and csf[4] == 1


def test_template_cortex_is_brighter_than_white_matter_on_the_scan():
    case = generate_case("MS#3", 1, seed=5, truth=True, brain="template", skull_stripped=True)
    image = case.image.astype(np.float32)
    cortex, white = cortex_and_white_matter(case.truth, case.label.astype(bool))
    # the averaged template's cortex (v8) was as dark as white matter here: its sulcal CSF was spread over the ribbon
    assert np.median(image[cortex]) > 1.03 * np.median(image[white])
