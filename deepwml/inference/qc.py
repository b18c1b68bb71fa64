"""QC montage: the FLAIR slices that hold lesions, grayscale, with the predicted mask outlined (like the paper's Fig. 2).

Composited with numpy and written by Pillow: one scaled grey image, an outline and a label per panel. The former
matplotlib figure (axes, contour tracing, Agg rendering) cost about 1.4 CPU seconds per case, more than the
cpu_fast network needs for the whole scan.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw, ImageFont

from deepwml.imageio import Geometry
from deepwml.preprocessing.orientation import canonical_orientation, canonical_spacing, to_canonical
from deepwml.utils.atomic import atomic_path

CONTOUR_COLOUR = (255, 45, 45)
SIDE_COLOUR = (158, 203, 255)
MAX_PANELS = 20
MAX_COLUMNS = 5
#: panel width in pixels (the matplotlib montage drew 2.6-inch panels at 110 dpi)
PANEL_PIXELS = 286
TITLE_PIXELS = 26
GAP_PIXELS = 2
#: a picture pixel is outlined as lesion when at least this share of it is lesion, so that one-voxel lesions stay
#: visible in a panel drawn smaller than the scan's matrix
MASK_COVERAGE = 0.25
#: the montage is mostly flat black and grey: zlib level 1 is several times faster than 6 for a slightly larger file
PNG_COMPRESS_LEVEL = 1
#: with an anatomy map each lesion is outlined in its location class's colour (deepwml.anatomy.location.LOCATIONS
#: order), as location-coded MS reports show them; without one, CONTOUR_COLOUR. Unclassified lesions (no voxel in the
#: parenchyma: most likely false) keep that red
LOCATION_COLOURS = {
    "unclassified": CONTOUR_COLOUR, "infratentorial": (225, 95, 255), "periventricular": (255, 215, 0),
    "cortical": (0, 215, 255), "juxtacortical": (70, 225, 95), "deep": (255, 135, 0),
}  # fmt: skip
LEGEND_PIXELS = 18
#: one byte per pixel (a palette PNG encodes 3x less than RGB): grey levels, then the two colours, then the classes'
GREY_LEVELS = 256 - 2 - len(LOCATION_COLOURS)
RED, BLUE = GREY_LEVELS, GREY_LEVELS + 1
#: palette index of each location class's colour
LOCATION_INDEX = {name: BLUE + 1 + k for k, name in enumerate(LOCATION_COLOURS)}


def canonical_view(array: np.ndarray, geometry: Geometry) -> Tuple[np.ndarray, np.ndarray, Tuple[float, float]]:
    """Slices along the acquisition slice axis, shown the radiological way (patient left on the right, anterior or superior up).

    Uses preprocessing's canonical orientation (permutation and flips only, oblique stacks go to the nearest world
    axes), so the QC picture shows slices exactly as the network saw them. Returns the [S, H, W] view, the original
    0-based slice index of each view slice (as in lesions.csv), and the (row, col) pixel spacing in mm.
    """
    orientation = canonical_orientation(geometry)
    view = to_canonical(array, orientation)
    slice_numbers = np.arange(view.shape[0])
    if orientation.flip[0]:
        slice_numbers = slice_numbers[::-1]
    spacing = canonical_spacing(geometry, orientation)
    return view, slice_numbers, (spacing[1], spacing[2])


def display_window(view: np.ndarray) -> Tuple[float, float]:
    """Grey-value window: from the background up to the 99.7th percentile of the head, so lesions stay bright but unclipped."""
    step = 2 if view[0].size <= 256 * 256 else 4  # about 16k values per slice whatever the matrix
    sample = np.asarray(view[:, ::step, ::step], dtype=np.float32).ravel()
    lo = float(np.percentile(sample, 1.0))
    head = sample[sample > lo + 0.1 * (float(np.percentile(sample, 99.0)) - lo)]
    hi = float(np.percentile(head, 99.7)) if head.size else float(sample.max())
    return lo, hi if hi > lo else lo + 1.0


def head_box(view: np.ndarray, lo: float, hi: float, margin: int = 6) -> Tuple[slice, slice]:
    """Rows and columns that hold anything brighter than faint background on any slice, plus a margin."""
    bright = np.asarray(view > lo + 0.15 * (hi - lo))
    rows, cols = np.flatnonzero(bright.any(axis=(0, 2))), np.flatnonzero(bright.any(axis=(0, 1)))
    if rows.size == 0:
        return slice(None), slice(None)
    h, w = view.shape[1:]
    return (
        slice(max(0, rows[0] - margin), min(h, rows[-1] + 1 + margin)),
        slice(max(0, cols[0] - margin), min(w, cols[-1] + 1 + margin)),
    )


def choose_slices(mask_view: np.ndarray, max_panels: int = MAX_PANELS) -> np.ndarray:
    """View-slice indices to show: those with lesions (the largest ``max_panels`` if more), else a spread of slices."""
    area = np.count_nonzero(mask_view, axis=(1, 2))
    with_lesion = np.flatnonzero(area)
    if with_lesion.size == 0:
        n = mask_view.shape[0]
        return np.unique(np.linspace(0, n - 1, min(n, 8)).round().astype(int))
    if with_lesion.size > max_panels:
        with_lesion = np.sort(with_lesion[np.argsort(-area[with_lesion], kind="stable")[:max_panels]])
    return with_lesion


def panel_size(shape_hw: Tuple[int, int], row_mm: float, col_mm: float, width: int = PANEL_PIXELS) -> Tuple[int, int]:
    """(height, width) in picture pixels of one panel: physical aspect kept, height within 0.6-1.6 of the width."""
    aspect = row_mm / col_mm * shape_hw[0] / shape_hw[1]
    return int(round(width * min(1.6, max(0.6, aspect)))), width


def _fit(shape_hw: Tuple[int, int], row_mm: float, col_mm: float, box_hw: Tuple[int, int]) -> Tuple[int, int]:
    """(height, width) of the slice drawn inside a panel of ``box_hw`` keeping its physical proportions."""
    height_mm, width_mm = shape_hw[0] * row_mm, shape_hw[1] * col_mm
    scale = min(box_hw[0] / height_mm, box_hw[1] / width_mm)
    return max(1, min(box_hw[0], int(round(height_mm * scale)))), max(1, min(box_hw[1], int(round(width_mm * scale))))


def outline(mask: np.ndarray) -> np.ndarray:
    """A two-pixel ring on the mask's edge (one pixel inside, one outside), like a contour line at level 0.5."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1]
    up, down, left, right = padded[:-2, 1:-1], padded[2:, 1:-1], padded[1:-1, :-2], padded[1:-1, 2:]
    every = up & down & left & right
    some = up | down | left | right
    return (inner & ~every) | (~inner & some)


@lru_cache(maxsize=4)
def font(size: int) -> ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` pixels (the bitmap default where FreeType is missing); loaded once."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow < 10.1 or no FreeType: the fixed-size bitmap font
        return ImageFont.load_default()


def draw_text(draw: ImageDraw.ImageDraw, xy: Tuple[int, int], text: str, fill: Union[int, Tuple[int, int, int]],
              font: ImageFont.ImageFont, align: float) -> None:
    """Draw ``text`` vertically centred on ``xy``; ``align`` 0 puts its left end there, 0.5 its middle, 1 its right end.
    (Measured with textbbox rather than Pillow's anchors, which the bitmap fallback font does not support.)"""
    x0, y0, x1, y1 = draw.textbbox((0, 0), text, font=font)
    draw.text((xy[0] - x0 - align * (x1 - x0), xy[1] - y0 - (y1 - y0) / 2), text, fill=fill, font=font)


def render_panel(
    grey: np.ndarray, mask: np.ndarray, lo: float, hi: float, size_hw: Tuple[int, int], colours: Optional[np.ndarray] = None
) -> np.ndarray:
    """One slice as palette indices of ``size_hw``: windowed grey values 0..GREY_LEVELS-1, the mask's outline RED, or
    with ``colours`` (each pixel's palette index, 0 off the mask) each colour's part of the mask outlined in it."""
    top = GREY_LEVELS - 1
    scaled = np.clip((np.asarray(grey, dtype=np.float32) - lo) * (top / (hi - lo)), 0, top).astype(np.uint8)
    resample = PILImage.Resampling.BILINEAR
    size_wh = (size_hw[1], size_hw[0])
    panel = np.asarray(PILImage.fromarray(scaled).resize(size_wh, resample)).copy()
    parts = [(mask, RED)] if colours is None else [(colours == c, int(c)) for c in np.unique(colours[mask]) if c]
    for part, colour in parts:
        if part.any():
            coverage = np.asarray(PILImage.fromarray(part.astype(np.uint8) * 255).resize(size_wh, resample))
            panel[outline(coverage >= 255 * MASK_COVERAGE)] = colour
    return panel


def _number_panels(draw: ImageDraw.ImageDraw, ids_view: np.ndarray, chosen: np.ndarray, corners: list,
                   draw_hw: Tuple[int, int], numbered: int, pixel_mm: Tuple[float, float]) -> None:
    """Write the lesion ids beside the lesions of every panel (white on black; deepwml.inference.lesion_numbers)."""
    from deepwml.inference.lesion_numbers import TakenSpots, draw_lesion_numbers, lesion_marks

    taken = TakenSpots(draw.im.size)
    scale_r, scale_c = draw_hw[0] / ids_view.shape[1], draw_hw[1] / ids_view.shape[2]
    for (left, top), s in zip(corners, chosen):
        marks = [(k, top + int(round(r * scale_r)), left + int(round(c * scale_c)))
                 for k, r, c in lesion_marks(ids_view[s], numbered, pixel_mm)]
        draw_lesion_numbers(draw, marks, font(12), GREY_LEVELS - 1, 0, (left, top, left + draw_hw[1], top + draw_hw[0]), taken)


def palette() -> list:
    """The montage's colours: a grey ramp, then the outline red, the side letters' blue and the location classes'."""
    ramp = np.repeat(np.linspace(0, 255, GREY_LEVELS).round().astype(int)[:, None], 3, axis=1)
    return ramp.ravel().tolist() + list(CONTOUR_COLOUR) + list(SIDE_COLOUR) + [v for c in LOCATION_COLOURS.values() for v in c]


def location_colours(ids: np.ndarray, locations: Sequence[str]) -> np.ndarray:
    """Each voxel's palette index from its lesion id (1-based, the lesion table's rows) and the table's ``locations``."""
    lookup = np.full(int(max(len(locations), np.max(ids, initial=0))) + 1, RED, np.uint8)
    lookup[0] = 0
    lookup[1:len(locations) + 1] = [LOCATION_INDEX.get(str(name), RED) for name in locations]
    return lookup[ids]


def table_locations(lesions) -> Optional[List[str]]:
    """The lesion table's location classes in its order, or None when it has none (no anatomy map)."""
    return [str(v) for v in lesions["location"]] if "location" in getattr(lesions, "columns", ()) else None


def _legend(draw: ImageDraw.ImageDraw, top: int, names: Sequence[str], width: int) -> None:
    """A row of coloured squares with the location classes' names, centred."""
    small = font(11)
    items = [(name, draw.textbbox((0, 0), name, font=small)[2]) for name in names]
    total = sum(12 + 4 + w + 14 for _, w in items) - 14
    x, middle = max((width - total) // 2, 4), top + LEGEND_PIXELS // 2
    for name, w in items:
        draw.rectangle((x, middle - 5, x + 11, middle + 5), fill=LOCATION_INDEX[name])
        draw_text(draw, (x + 16, middle), name, GREY_LEVELS - 1, small, 0.0)
        x += 12 + 4 + w + 14


def write_qc_montage(
    image: np.ndarray, mask: np.ndarray, geometry: Geometry, path: Path, title: Optional[str] = None, numbered: int = 0,
    ids: Optional[np.ndarray] = None, locations: Optional[Sequence[str]] = None,
) -> Path:
    """Write the montage PNG atomically; ``image`` and ``mask`` are on the input's (z, y, x) grid; ``numbered``,
    ``ids`` and ``locations``: as :func:`qc_montage`."""
    picture = qc_montage(image, mask, geometry, title, numbered, ids, locations)
    with atomic_path(path, ".png") as tmp:
        picture.save(tmp, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return path


def qc_montage(image: np.ndarray, mask: np.ndarray, geometry: Geometry, title: Optional[str] = None,
               numbered: int = 0, ids: Optional[np.ndarray] = None, locations: Optional[Sequence[str]] = None) -> PILImage.Image:
    """The montage of the slices with the most lesion, outlined, as a palette picture (see :func:`palette`);
    ``numbered``: lesions 1..numbered of the lesion table carry their lesion_id beside them (``ids``: the mask's
    lesion-id map when the caller has it, see :func:`deepwml.inference.lesion_ids.lesion_ids_of`); ``locations``: the
    lesion table's location class of each lesion, in its order: outlines in LOCATION_COLOURS, with a legend."""
    view, slice_numbers, (row_mm, col_mm) = canonical_view(image, geometry)
    mask_view, _, _ = canonical_view(np.asarray(mask) > 0, geometry)
    ids_view = colours_view = None
    if (numbered > 0 or locations is not None) and mask_view.any():
        from deepwml.inference.lesion_ids import lesion_ids_of

        ids_view = canonical_view(lesion_ids_of(mask, geometry.slice_axis_numpy, ids), geometry)[0]
        if locations is not None:
            colours_view = location_colours(ids_view, locations)
    lo, hi = display_window(view)
    chosen = choose_slices(mask_view)
    # panels show the head only: more of the picture is brain, lesions are larger
    rows_box, cols_box = head_box(view, lo, hi)
    view, mask_view = view[:, rows_box, cols_box], mask_view[:, rows_box, cols_box]
    if ids_view is not None:
        ids_view = ids_view[:, rows_box, cols_box]
    if colours_view is not None:
        colours_view = colours_view[:, rows_box, cols_box]
    shown = [name for name, index in LOCATION_INDEX.items() if colours_view is not None and (colours_view[chosen] == index).any()]
    # the legend's row only when classes are drawn: a picture without an anatomy map keeps its layout
    head = TITLE_PIXELS + (LEGEND_PIXELS if shown else 0)
    n = len(chosen)
    cols = int(min(n, MAX_COLUMNS))
    rows = int(np.ceil(n / cols))
    box_h, box_w = panel_size(view.shape[1:], row_mm, col_mm)
    draw_h, draw_w = _fit(view.shape[1:], row_mm, col_mm, (box_h, box_w))
    canvas = np.zeros((head + rows * (box_h + GAP_PIXELS), cols * (box_w + GAP_PIXELS)), dtype=np.uint8)
    corners = []
    for k, s in enumerate(chosen):
        top = head + (k // cols) * (box_h + GAP_PIXELS) + (box_h - draw_h) // 2
        left = (k % cols) * (box_w + GAP_PIXELS) + (box_w - draw_w) // 2
        canvas[top:top + draw_h, left:left + draw_w] = render_panel(
            view[s], mask_view[s], lo, hi, (draw_h, draw_w), None if colours_view is None else colours_view[s])
        corners.append((left, top))
    picture = PILImage.fromarray(canvas, mode="P")
    picture.putpalette(palette())
    draw = ImageDraw.Draw(picture)
    small, white = font(11), GREY_LEVELS - 1
    for (left, top), s in zip(corners, chosen):
        draw_text(draw, (left + 4, top + 9), f"slice {int(slice_numbers[s])}", white, small, 0.0)
    if ids_view is not None:
        _number_panels(draw, ids_view, chosen, corners, (draw_h, draw_w), numbered, (row_mm, col_mm))
    if corners:
        # radiological convention: the patient's right is on the left of the picture
        left, top = corners[0]
        middle = top + draw_h // 2
        draw_text(draw, (left + 4, middle), "R", BLUE, small, 0.0)
        draw_text(draw, (left + draw_w - 4, middle), "L", BLUE, small, 1.0)
    heading = title or ""
    if not mask_view.any():
        heading = f"{heading}  (no lesions found)".strip()
    draw_text(draw, (canvas.shape[1] // 2, TITLE_PIXELS // 2), heading, white, font(13), 0.5)
    if shown:
        _legend(draw, TITLE_PIXELS, shown, canvas.shape[1])
    return picture
