"""Slice pictures for the per-patient report: FLAIR in grey, the mask outlined in red (with the lesion table's
location classes, each lesion in its class's colour, as on the QC picture), each lesion of the report's table numbered
beside its outline with its ``lesion_id``, and, when there is one, the uncertainty map as a blue haze (blue: no
location class is drawn in it). Composed with numpy and encoded by Pillow (no figure layout), so a 25-slice case
costs well under a second; the page lays the panels out and prints their slice numbers as text.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw
from scipy import ndimage

from deepwml.imageio import Geometry
from deepwml.inference.lesion_ids import lesion_ids_of
from deepwml.inference.lesion_numbers import TakenSpots, draw_lesion_numbers, lesion_marks
from deepwml.inference.qc import LOCATION_COLOURS, canonical_view, choose_slices, display_window, font, head_box

#: panels are resized (nearest neighbour, square pixels) to this many pixels on their longer side: the page shows
#: them ~200 px wide, so bigger would only cost encoding time and page size
PANEL_PIXELS = 320
CONTOUR_RGB = np.array([1.0, 0.18, 0.18], dtype=np.float32)
#: the uncertainty haze: a blue no location class's outline shares (the QC palette's are warm, green, cyan, violet)
UNCERTAINTY_RGB = np.array([0.1, 0.25, 1.0], dtype=np.float32)
#: uncertainty below this is not drawn (sub-percent probabilities would tint the whole brain)
UNCERTAINTY_FLOOR = 0.1
UNCERTAINTY_ALPHA = 0.75
#: outline width in shown pixels: the page scales panels down to ~200 px, a 1-pixel line would vanish
OUTLINE_PIXELS = 3
#: lesion numbers: white on a black rim (as on the QC picture), so they read on bright lesions and dark background
#: alike and are not taken for a location class's colour; sized for the ~200 px the page shows a panel at
NUMBER_RGB = (255, 255, 255)
NUMBER_PIXELS = 22


@dataclass(frozen=True)
class Panel:
    """One slice picture: its 0-based slice number along the input's slice axis, the PNG bytes, and whether lesion
    numbers are drawn on it."""

    slice_number: int
    png: bytes
    numbered: bool = False


def _resize_index(n: int, pixel_mm: float, scale: float) -> np.ndarray:
    """Source index of each shown pixel along one axis (nearest neighbour, square pixels of 1/``scale`` mm)."""
    return np.minimum((np.arange(max(1, round(n * pixel_mm * scale))) + 0.5) / scale / pixel_mm, n - 1).astype(np.int64)


def _panel_extent_mm(rows: slice, cols: slice, shape_hw: tuple, row_mm: float, col_mm: float) -> float:
    """The longer side (mm) of a slice's head crop: PANEL_PIXELS pixels on the panel, across or down."""
    return max(len(range(*rows.indices(shape_hw[0]))) * row_mm, len(range(*cols.indices(shape_hw[1]))) * col_mm)


def _panel_indices(rows: slice, cols: slice, shape_hw: tuple, row_mm: float, col_mm: float) -> tuple:
    """(row, column) indices into a whole slice of the pixels of its head-cropped panel at PANEL_PIXELS."""
    rows_in, cols_in = np.arange(shape_hw[0])[rows], np.arange(shape_hw[1])[cols]
    scale = PANEL_PIXELS / _panel_extent_mm(rows, cols, shape_hw, row_mm, col_mm)
    return rows_in[_resize_index(rows_in.size, row_mm, scale)], cols_in[_resize_index(cols_in.size, col_mm, scale)]


def _gather(plane: np.ndarray, index: tuple) -> np.ndarray:
    """``plane`` at the panel's pixels: two 1D takes, several times cheaper than one 2D fancy index."""
    return np.asarray(plane).take(index[0], axis=0).take(index[1], axis=1)


def _to_bytes(rgb: np.ndarray) -> np.ndarray:
    """Float RGB in 0..1 → uint8, rounded to nearest."""
    return (np.clip(rgb, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def _outline(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` within OUTLINE_PIXELS of its edge (picture border included), eroded only around the mask."""
    outline = np.zeros(mask.shape, dtype=bool)
    box = _bounding_box(mask)
    if box is not None:
        # the erosion takes pixels beyond the box for background, which they are (the picture border stays a border)
        part = mask[box]
        outline[box] = part & ~ndimage.binary_erosion(part, iterations=OUTLINE_PIXELS)
    return outline


def _bounding_box(mask: np.ndarray) -> Optional[tuple]:
    """Row and column slices of the True pixels of a 2D mask (None when there are none)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def outline_colours(locations: Sequence[str]) -> np.ndarray:
    """uint8 RGB of each lesion id's outline (row k: lesion k of the table, whose ``locations`` are in its order): its
    class's QC colour; row 0 and the last row, for any id beyond the table, the red of a picture without classes."""
    red = _to_bytes(CONTOUR_RGB)
    table = np.tile(red, (len(locations) + 2, 1))
    for k, name in enumerate(locations, start=1):
        if str(name) in LOCATION_COLOURS:
            table[k] = LOCATION_COLOURS[str(name)]
    return table


def _panel_rgb(grey: np.ndarray, mask: np.ndarray, uncertainty: Optional[np.ndarray],
               colours: Optional[np.ndarray] = None) -> np.ndarray:
    """RGB uint8 picture of one (already upscaled) slice; grey in 0..1; ``colours``: the uint8 RGB of each pixel's
    outline (the lesion's class colour), else red.

    Only the tinted and outlined pixels are blended in float: elsewhere the picture is the grey value itself.
    """
    rgb = np.repeat(_to_bytes(grey)[..., None], 3, axis=2)
    pixels = rgb.reshape(-1, 3)  # flat pixel indices: far cheaper than assigning through a 2D boolean mask
    if uncertainty is not None:
        tinted = np.flatnonzero(uncertainty >= UNCERTAINTY_FLOOR)
        alpha = (UNCERTAINTY_ALPHA * np.clip(uncertainty.reshape(-1)[tinted], 0.0, 1.0))[:, None]
        pixels[tinted] = _to_bytes(grey.reshape(-1)[tinted][:, None] * (1.0 - alpha) + UNCERTAINTY_RGB * alpha)
    if mask.any():
        edge = np.flatnonzero(_outline(mask))
        pixels[edge] = _to_bytes(CONTOUR_RGB) if colours is None else colours.reshape(-1, 3)[edge]
    return rgb


def _png(rgb: np.ndarray) -> bytes:
    """PNG bytes of an RGB uint8 picture."""
    buffer = io.BytesIO()
    PILImage.fromarray(rgb, mode="RGB").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _number_lesions(rgb: np.ndarray, marks: List[Tuple[int, int, int]]) -> np.ndarray:
    """``rgb`` with each mark's lesion id written beside its corner (deepwml.inference.lesion_numbers)."""
    if not marks:
        return rgb
    picture = PILImage.fromarray(rgb, mode="RGB")
    height, width = rgb.shape[:2]
    draw_lesion_numbers(ImageDraw.Draw(picture), marks, font(NUMBER_PIXELS), NUMBER_RGB, (0, 0, 0), (0, 0, width, height),
                        TakenSpots((width, height)))
    return np.asarray(picture)


def report_panels(
    image: np.ndarray, mask: np.ndarray, geometry: Geometry, uncertainty: Optional[np.ndarray] = None,
    numbered: int = 0, ids: Optional[np.ndarray] = None, locations: Optional[Sequence[str]] = None,
) -> List[Panel]:
    """Panels of the slices with lesions (the largest ones when there are many; a spread when there is none).

    Slices are shown as the QC montage shows them: radiological view (patient right on the left), cropped to the head.
    ``numbered``: lesions 1..numbered of the lesion table (its ids: most voxels first) get their number beside them;
    ``ids``: the mask's lesion-id map when the caller has it; ``locations``: the lesion table's location class of each
    lesion, in its order: outlines in their class's colour.
    """
    view, slice_numbers, (row_mm, col_mm) = canonical_view(image, geometry)
    mask_view = canonical_view(np.asarray(mask) > 0, geometry)[0]
    u_view = canonical_view(uncertainty, geometry)[0] if uncertainty is not None else None
    ids_view = None
    if (numbered > 0 or locations is not None) and mask_view.any():
        ids_view = canonical_view(lesion_ids_of(mask, geometry.slice_axis_numpy, ids), geometry)[0]
    palette = outline_colours(locations) if locations is not None and ids_view is not None else None
    lo, hi = display_window(view)
    rows, cols = head_box(view, lo, hi)
    index = _panel_indices(rows, cols, view.shape[1:], row_mm, col_mm)
    pixel_mm = (_panel_extent_mm(rows, cols, view.shape[1:], row_mm, col_mm) / PANEL_PIXELS,) * 2
    panels = []
    for s in choose_slices(mask_view):
        # nearest-neighbour upscaling first: the grey window is per pixel, so it gives the same values on the panel
        grey = np.clip((_gather(view[s], index).astype(np.float32, copy=False) - lo) / (hi - lo), 0.0, 1.0)
        u = _gather(u_view[s], index).astype(np.float32, copy=False) if u_view is not None else None
        shown_ids = _gather(ids_view[s], index) if ids_view is not None else None
        colours = palette[np.minimum(shown_ids, len(palette) - 1)] if palette is not None else None
        rgb = _panel_rgb(grey, _gather(mask_view[s], index), u, colours)
        marks = lesion_marks(shown_ids, numbered, pixel_mm) if shown_ids is not None and numbered > 0 else []
        panels.append(Panel(int(slice_numbers[s]), _png(_number_lesions(rgb, marks)), bool(marks)))
    return panels
