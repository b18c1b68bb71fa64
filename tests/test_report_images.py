"""The report's slice pictures: the pixels of the cheap composition (upscale first, blend only tinted pixels,
erode only around the mask) are those of the plain float composition of every pixel."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy import ndimage

from deepwml.imageio import Geometry
from deepwml.inference.qc import canonical_view, choose_slices, display_window, head_box
from deepwml.inference.report_images import (
    CONTOUR_RGB,
    OUTLINE_PIXELS,
    PANEL_PIXELS,
    UNCERTAINTY_ALPHA,
    UNCERTAINTY_FLOOR,
    UNCERTAINTY_RGB,
    report_panels,
)


def _plain_panels(image, mask, geometry, uncertainty):
    """Every panel composed the plain way: crop, window, resize each layer, blend every pixel in float, erode the whole
    panel."""
    view, numbers, (row_mm, col_mm) = canonical_view(image, geometry)
    mask_view = canonical_view(np.asarray(mask) > 0, geometry)[0]
    u_view = canonical_view(uncertainty, geometry)[0] if uncertainty is not None else None
    lo, hi = display_window(view)
    rows, cols = head_box(view, lo, hi)

    def resize(a):
        h, w = a.shape
        scale = PANEL_PIXELS / max(h * row_mm, w * col_mm)
        r = np.minimum((np.arange(max(1, round(h * row_mm * scale))) + 0.5) / scale / row_mm, h - 1).astype(np.int64)
        c = np.minimum((np.arange(max(1, round(w * col_mm * scale))) + 0.5) / scale / col_mm, w - 1).astype(np.int64)
        return a[r[:, None], c[None, :]]

    out = []
    for s in choose_slices(mask_view):
        grey = resize(np.clip((np.asarray(view[s], dtype=np.float32)[rows, cols] - lo) / (hi - lo), 0.0, 1.0))
        m = resize(np.asarray(mask_view[s])[rows, cols])
        rgb = np.repeat(grey[..., None], 3, axis=2)
        if u_view is not None:
            u = resize(np.asarray(u_view[s], dtype=np.float32)[rows, cols])
            alpha = np.where(u >= UNCERTAINTY_FLOOR, UNCERTAINTY_ALPHA * np.clip(u, 0.0, 1.0), 0.0)[..., None]
            rgb = rgb * (1.0 - alpha) + UNCERTAINTY_RGB * alpha
        if m.any():
            rgb[m & ~ndimage.binary_erosion(m, iterations=OUTLINE_PIXELS)] = CONTOUR_RGB
        out.append((int(numbers[s]), (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)))
    return out


@pytest.mark.parametrize("with_uncertainty", [True, False])
def test_panels_hold_exactly_the_pixels_of_the_plain_composition(with_uncertainty):
    """Anisotropic pixels (the panel is upscaled unevenly), lesions on the picture's edge and inside, a haze that
    crosses the floor: every pixel of every panel is the plain composition's."""
    rng = np.random.default_rng(0)
    shape = (4, 48, 40)
    yy, xx = np.mgrid[:48, :40]
    head = ((yy - 24) / 20.0) ** 2 + ((xx - 20) / 17.0) ** 2 < 1
    image = (np.where(head, 300.0, 5.0) + rng.normal(0, 20, shape)).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[1, 20:26, 15:19] = 1
    mask[2, 0:5, 10:30] = 1  # reaches the picture's edge (no crop margin there)
    mask[2, 30, 30] = 1
    mask[3, 10:13, 8:10] = 1
    uncertainty = np.clip(ndimage.gaussian_filter(rng.random(shape), (0, 2, 2)) * 3 - 1.2, 0, 1).astype(np.float32)
    geometry = Geometry(tuple(shape[::-1]), (0.6, 0.9, 5.0), (0.0, 0.0, 0.0))
    u = uncertainty if with_uncertainty else None
    panels = report_panels(image, mask, geometry, u)
    expected = _plain_panels(image, mask, geometry, u)
    assert [p.slice_number for p in panels] == [n for n, _ in expected] == [1, 2, 3]
    for panel, (_, pixels) in zip(panels, expected):
        shown = np.asarray(PILImage.open(io.BytesIO(panel.png)).convert("RGB"))
        assert shown.shape == pixels.shape
        assert np.array_equal(shown, pixels)
    if with_uncertainty:
        # the test means something: the haze, the outline and the grey all appear
        every = np.concatenate([p.reshape(-1, 3) for _, p in expected])
        assert (every == (CONTOUR_RGB * 255 + 0.5).astype(np.uint8)).all(axis=1).any()
        assert (every[:, 0] != every[:, 2]).sum() > 100 and (every[:, 0] == every[:, 2]).sum() > 100
