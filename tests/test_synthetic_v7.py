"""Generator v7 (issue #12): normal grey matter as bright as lesions on some scans, dimmer lesions, denser folding."""
from __future__ import annotations

import numpy as np

import deepwml.synthetic.generate as generate_module
from deepwml.synthetic.acquisition import _BASE, HIGH_GREY_SHARE, sample_contrast
from deepwml.synthetic.centres import CENTRES
from deepwml.synthetic.generate import generate_case


def test_a_share_of_scans_has_the_grey_white_contrast_of_3d_flair():
    centre = CENTRES["MS#3"]
    base = _BASE[(centre.vendor, centre.field_strength)].grey
    rng = np.random.default_rng(0)
    excess = np.array([sample_contrast(centre, rng).grey - base for _ in range(2000)])
    assert excess.min() >= -0.02 and excess.max() <= 0.40
    # the clinical 2D range tops at +0.16; beyond it only the high-contrast share
    assert abs(np.mean(excess > 0.16) - HIGH_GREY_SHARE) < 0.04
    assert np.mean(excess > 0.3) > 0.08  # cortex up to ~1.6 x white matter, brighter than many lesions


def _cortex_folding(monkeypatch, fold_mm: float, meander_mm: float) -> tuple:
    """Cortex share of the brain and cortex boundary length per brain pixel, on the slices through the ventricles of
    three procedural brains (the template brain has its own folds)."""
    monkeypatch.setattr(generate_module, "FOLD_WAVELENGTH_MM", fold_mm)
    monkeypatch.setattr(generate_module, "MEANDER_WAVELENGTH_MM", meander_mm)
    cortex_px = brain_px = boundary = 0
    for seed in range(3):
        case = generate_case("MS#1", 2, seed=seed, truth=True, brain="procedural")
        slices = case.truth["ventricle"].any(axis=(1, 2))
        brain, cortex = case.truth["brain"][slices], case.truth["cortex"][slices]
        boundary += (cortex[:, 1:] != cortex[:, :-1]).sum() + (cortex[:, :, 1:] != cortex[:, :, :-1]).sum()
        cortex_px, brain_px = cortex_px + (cortex & brain).sum(), brain_px + brain.sum()
    return float(cortex_px / brain_px), float(boundary / brain_px)


def test_denser_folding_fills_the_outer_brain_with_cortex(monkeypatch):
    share7, folds7 = _cortex_folding(monkeypatch, generate_module.FOLD_WAVELENGTH_MM, generate_module.MEANDER_WAVELENGTH_MM)
    share6, folds6 = _cortex_folding(monkeypatch, 22.0, 20.0)  # generator v6's wavelengths, same cases otherwise
    # more gyri: more cortex boundary per brain area, and a larger share of the brain is cortex (one case alone
    # varies: 2-14 % more boundary over five draws of generator v9)
    assert folds7 > 1.05 * folds6 and share7 > share6 + 0.02, (share7, share6, folds7, folds6)
