"""Slice pictures for the per-patient report: FLAIR in grey, the mask outlined in red and, when there is one, the
uncertainty map as a yellow haze. Composed with numpy and encoded by Pillow (no figure layout), so a 25-slice case
costs well under a second; the page lays the panels out and prints their slice numbers as text.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
from PIL import Image as PILImage
from scipy import ndimage

from deepwml.imageio import Geometry
from deepwml.inference.qc import canonical_view, choose_slices, display_window, head_box

#: panels are resized (nearest neighbour, square pixels) to this many pixels on their longer side: the page shows
#: them ~200 px wide, so bigger would only cost encoding time and page size
PANEL_PIXELS = 320
CONTOUR_RGB = np.array([1.0, 0.18, 0.18], dtype=np.float32)
UNCERTAINTY_RGB = np.array([1.0, 0.86, 0.0], dtype=np.float32)
#: uncertainty below this is not drawn (sub-percent probabilities would tint the whole brain)
UNCERTAINTY_FLOOR = 0.1
UNCERTAINTY_ALPHA = 0.75
#: outline width in shown pixels: the page scales panels down to ~200 px, a 1-pixel line would vanish
OUTLINE_PIXELS = 3


@dataclass(frozen=True)
class Panel:
    """One slice picture: its 0-based slice number along the input's slice axis and the PNG bytes."""

    slice_number: int
    png: bytes


def _resize(array: np.ndarray, row_mm: float, col_mm: float) -> np.ndarray:
    """``array`` at PANEL_PIXELS on its longer side with square pixels (nearest neighbour, index arithmetic only)."""
    h, w = array.shape
    height_mm, width_mm = h * row_mm, w * col_mm
    scale = PANEL_PIXELS / max(height_mm, width_mm)
    rows = np.minimum((np.arange(max(1, round(height_mm * scale))) + 0.5) / scale / row_mm, h - 1).astype(np.int64)
    cols = np.minimum((np.arange(max(1, round(width_mm * scale))) + 0.5) / scale / col_mm, w - 1).astype(np.int64)
    return array[rows[:, None], cols[None, :]]


def _panel_rgb(grey: np.ndarray, mask: np.ndarray, uncertainty: Optional[np.ndarray]) -> np.ndarray:
    """RGB float32 picture of one (already upscaled) slice."""
    rgb = np.repeat(grey[..., None], 3, axis=2)
    if uncertainty is not None:
        alpha = np.where(uncertainty >= UNCERTAINTY_FLOOR, UNCERTAINTY_ALPHA * np.clip(uncertainty, 0.0, 1.0), 0.0)[..., None]
        rgb = rgb * (1.0 - alpha) + UNCERTAINTY_RGB * alpha
    if mask.any():
        outline = mask & ~ndimage.binary_erosion(mask, iterations=OUTLINE_PIXELS)
        rgb[outline] = CONTOUR_RGB
    return rgb


def _png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB float picture in 0..1."""
    buffer = io.BytesIO()
    PILImage.fromarray((np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def report_panels(
    image: np.ndarray, mask: np.ndarray, geometry: Geometry, uncertainty: Optional[np.ndarray] = None
) -> List[Panel]:
    """Panels of the slices with lesions (the largest ones when there are many; a spread when there is none).

    Slices are shown as the QC montage shows them: radiological view (patient right on the left), cropped to the head.
    """
    view, slice_numbers, (row_mm, col_mm) = canonical_view(image, geometry)
    mask_view = canonical_view(np.asarray(mask) > 0, geometry)[0]
    u_view = canonical_view(uncertainty, geometry)[0] if uncertainty is not None else None
    lo, hi = display_window(view)
    rows, cols = head_box(view, lo, hi)
    panels = []
    for s in choose_slices(mask_view):
        grey = np.clip((np.asarray(view[s], dtype=np.float32)[rows, cols] - lo) / (hi - lo), 0.0, 1.0)
        m = _resize(np.asarray(mask_view[s])[rows, cols], row_mm, col_mm)
        u = _resize(np.asarray(u_view[s], dtype=np.float32)[rows, cols], row_mm, col_mm) if u_view is not None else None
        panels.append(Panel(int(slice_numbers[s]), _png(_panel_rgb(_resize(grey, row_mm, col_mm), m, u))))
    return panels
