"""Generator v11: periventricular bands and confluent lesions as faint as half the focal lesions' contrast, and
bands in heavy MS loads (deepwml.synthetic.lesions)."""
from __future__ import annotations

import numpy as np

from deepwml.synthetic.anatomy import sample_anatomy
from deepwml.synthetic.lesions import DIFFUSE_CONTRAST, MS_BAND_SEVERITY, drawn_fazekas, sample_lesions


def _lesions(disease: str, severity: float, seed: int):
    """The lesions drawn for one patient of ``disease`` at ``severity``."""
    rng = np.random.default_rng(seed)
    return sample_lesions(disease, sample_anatomy(rng, 40.0), rng, severity)


def test_heavy_ms_loads_merge_into_a_periventricular_band_and_light_ones_do_not():
    heavy = [_lesions("MS", 0.9, s) for s in range(5)]
    light = [_lesions("MS", MS_BAND_SEVERITY - 0.05, s) for s in range(5)]
    assert all(les.band_mm > 1.0 and les.band_cover > 0.5 for les in heavy)
    assert all(DIFFUSE_CONTRAST[0] <= les.diffuse_contrast <= DIFFUSE_CONTRAST[1] for les in heavy)
    assert all(les.band_mm == 0 for les in light)
    # Fazekas grades vascular lesions only: an MS band draws none
    assert all(drawn_fazekas("MS", les) is None for les in heavy)


def test_confluent_vascular_lesions_can_be_much_fainter_than_the_focal_ones():
    contrasts = np.array([_lesions("CSVD", 0.8, s).diffuse_contrast for s in range(60)])
    # before v11 0.83-1.03 at this severity; now down to about half the focal lesions' excess
    assert contrasts.min() < 0.65 and contrasts.max() > 0.95
    assert DIFFUSE_CONTRAST[0] + 0.08 <= contrasts.min() and contrasts.max() <= DIFFUSE_CONTRAST[1] + 0.08
