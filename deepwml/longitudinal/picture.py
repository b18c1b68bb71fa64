"""The change picture: for the follow-up slices with the most change, the aligned baseline beside the follow-up,
baseline lesions outlined on the left and the follow-up's coloured by status on the right."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Tuple

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from deepwml.imageio import Geometry
from deepwml.inference.qc import canonical_view, display_window, draw_text, font, head_box, outline, panel_size
from deepwml.longitudinal.change import CHANGE_CODES, ENLARGING, NEW, NEW_NOT_COUNTED, SHRINKING, STABLE
from deepwml.utils.atomic import atomic_path

#: outline colours by change-map code; the baseline's lesions in yellow
COLOURS: Dict[int, Tuple[int, int, int]] = {
    CHANGE_CODES[NEW]: (255, 40, 40), CHANGE_CODES[ENLARGING]: (255, 150, 0),
    CHANGE_CODES[STABLE]: (60, 220, 60), CHANGE_CODES[SHRINKING]: (80, 200, 255),
    CHANGE_CODES[NEW_NOT_COUNTED]: (200, 120, 255),
}
BASELINE_COLOUR = (255, 230, 0)
MAX_SLICES = 8
PAIRS_PER_ROW = 2
PANEL_PIXELS = 240
TITLE_PIXELS = 26
GAP_PIXELS = 4
#: the share of a picture pixel that must be lesion for it to be outlined (one-voxel lesions stay visible)
COVERAGE = 0.25


def choose_change_slices(change_view: np.ndarray, baseline_view: np.ndarray, n: int = MAX_SLICES) -> np.ndarray:
    """View slices to show, in slice order: most new and enlarging pixels first, then other lesion pixels."""
    active = np.isin(change_view, (CHANGE_CODES[NEW], CHANGE_CODES[ENLARGING])).sum(axis=(1, 2))
    other = (change_view > 0).sum(axis=(1, 2)) + (baseline_view > 0).sum(axis=(1, 2))
    score = active * 1e6 + other
    ranked = np.argsort(-score, kind="stable")
    ranked = ranked[score[ranked] > 0][:n]
    if ranked.size == 0:
        return np.unique(np.linspace(0, change_view.shape[0] - 1, min(change_view.shape[0], 4)).round().astype(int))
    return np.sort(ranked)


def _grey_rgb(grey: np.ndarray, lo: float, hi: float, size_hw: Tuple[int, int]) -> np.ndarray:
    scaled = np.clip((np.asarray(grey, np.float32) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    resized = np.asarray(PILImage.fromarray(scaled).resize(size_hw[::-1], PILImage.Resampling.BILINEAR))
    return np.repeat(resized[..., None], 3, axis=2).copy()


def _draw_outline(panel: np.ndarray, mask: np.ndarray, colour: Tuple[int, int, int]) -> None:
    if not mask.any():
        return
    coverage = np.asarray(PILImage.fromarray(mask.astype(np.uint8) * 255).resize(panel.shape[1::-1], PILImage.Resampling.BILINEAR))
    panel[outline(coverage >= 255 * COVERAGE)] = colour


def write_change_picture(followup: np.ndarray, aligned_baseline: np.ndarray, aligned_baseline_mask: np.ndarray,
                         change_map: np.ndarray, geometry: Geometry, path: Path, title: str) -> Path:
    """Write the PNG atomically; every array is on the follow-up's (z, y, x) grid ``geometry``."""
    picture = change_picture(followup, aligned_baseline, aligned_baseline_mask, change_map, geometry, title)
    with atomic_path(path, ".png") as tmp:
        picture.save(tmp, format="PNG", compress_level=1)
    return path


def change_picture(followup: np.ndarray, aligned_baseline: np.ndarray, aligned_baseline_mask: np.ndarray,
                   change_map: np.ndarray, geometry: Geometry, title: str) -> PILImage.Image:
    """Aligned baseline beside follow-up for the slices with the most change, outlines coloured by status (RGB)."""
    follow_view, numbers, (row_mm, col_mm) = canonical_view(followup, geometry)
    base_view = canonical_view(aligned_baseline, geometry)[0]
    base_mask_view = canonical_view(np.asarray(aligned_baseline_mask) > 0, geometry)[0]
    change_view = canonical_view(change_map, geometry)[0]
    f_lo, f_hi = display_window(follow_view)
    b_lo, b_hi = display_window(base_view)
    rows_box, cols_box = head_box(follow_view, f_lo, f_hi)
    chosen = choose_change_slices(change_view, base_mask_view)
    box_h, box_w = panel_size(follow_view[:, rows_box, cols_box].shape[1:], row_mm, col_mm, PANEL_PIXELS)
    n_rows = int(np.ceil(len(chosen) / PAIRS_PER_ROW))
    n_cols = min(len(chosen), PAIRS_PER_ROW) * 2
    header = 2 * TITLE_PIXELS  # the title, then the colour legend
    canvas = np.zeros((header + n_rows * (box_h + TITLE_PIXELS), n_cols * (box_w + GAP_PIXELS), 3), np.uint8)
    labels = []
    for k, s in enumerate(chosen):
        top = header + (k // PAIRS_PER_ROW) * (box_h + TITLE_PIXELS) + TITLE_PIXELS
        left = (k % PAIRS_PER_ROW) * 2 * (box_w + GAP_PIXELS)
        base_panel = _grey_rgb(base_view[s][rows_box, cols_box], b_lo, b_hi, (box_h, box_w))
        _draw_outline(base_panel, base_mask_view[s][rows_box, cols_box], BASELINE_COLOUR)
        follow_panel = _grey_rgb(follow_view[s][rows_box, cols_box], f_lo, f_hi, (box_h, box_w))
        for code, colour in COLOURS.items():
            _draw_outline(follow_panel, change_view[s][rows_box, cols_box] == code, colour)
        canvas[top:top + box_h, left:left + box_w] = base_panel
        canvas[top:top + box_h, left + box_w + GAP_PIXELS:left + 2 * box_w + GAP_PIXELS] = follow_panel
        labels.append(((left + 4, top - TITLE_PIXELS // 2), f"baseline, aligned   |   follow-up slice {int(numbers[s])}"))
    picture = PILImage.fromarray(canvas, mode="RGB")
    draw = ImageDraw.Draw(picture)
    small = font(12)
    for xy, text in labels:
        draw_text(draw, xy, text, (230, 230, 230), small, 0.0)
    draw_text(draw, (4, TITLE_PIXELS // 2), title, (255, 255, 255), small, 0.0)
    legend = [("new", COLOURS[CHANGE_CODES[NEW]]), ("new, not counted", COLOURS[CHANGE_CODES[NEW_NOT_COUNTED]]),
              ("enlarging", COLOURS[CHANGE_CODES[ENLARGING]]),
              ("stable", COLOURS[CHANGE_CODES[STABLE]]), ("shrinking", COLOURS[CHANGE_CODES[SHRINKING]]),
              ("baseline", BASELINE_COLOUR)]
    x = 4
    for text, colour in legend:
        draw_text(draw, (x, TITLE_PIXELS + TITLE_PIXELS // 2), text, colour, small, 0.0)
        x += int(draw.textlength(text, font=small)) + 14
    return picture

