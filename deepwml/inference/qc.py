"""QC montage: the FLAIR slices that hold lesions, grayscale, with the predicted mask outlined (like the paper's Fig. 2)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepwml.imageio import Geometry
from deepwml.preprocessing.orientation import canonical_orientation, canonical_spacing, to_canonical
from deepwml.utils.atomic import atomic_path

CONTOUR_COLOUR = "#ff2d2d"
MAX_PANELS = 20
PANEL_INCHES = 2.6


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
    sample = np.asarray(view[:, ::2, ::2], dtype=np.float32).ravel()
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


def write_qc_montage(
    image: np.ndarray, mask: np.ndarray, geometry: Geometry, path: Path, title: Optional[str] = None
) -> Path:
    """Write the montage PNG atomically; ``image`` and ``mask`` are on the input's (z, y, x) grid."""
    view, slice_numbers, (row_mm, col_mm) = canonical_view(image, geometry)
    mask_view, _, _ = canonical_view(np.asarray(mask) > 0, geometry)
    lo, hi = display_window(view)
    chosen = choose_slices(mask_view)
    # panels show the head only: more of the picture is brain, lesions are larger
    rows_box, cols_box = head_box(view, lo, hi)
    view, mask_view = view[:, rows_box, cols_box], mask_view[:, rows_box, cols_box]
    n = len(chosen)
    cols = int(min(n, 5))
    rows = int(np.ceil(n / cols))
    aspect = row_mm / col_mm
    panel_h = PANEL_INCHES * min(1.6, max(0.6, aspect * view.shape[1] / view.shape[2]))
    fig = Figure(figsize=(cols * PANEL_INCHES, rows * panel_h + 0.5), facecolor="black")
    FigureCanvasAgg(fig)
    has_lesions = bool(mask_view.any())
    for k, s in enumerate(chosen):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(view[s], cmap="gray", vmin=lo, vmax=hi, aspect=aspect, interpolation="bilinear")
        if mask_view[s].any():
            ax.contour(mask_view[s].astype(np.float32), levels=[0.5], colors=CONTOUR_COLOUR, linewidths=0.9)
        ax.text(
            0.02, 0.98, f"slice {int(slice_numbers[s])}", transform=ax.transAxes, color="white",
            fontsize=8, va="top", ha="left",
        )
        if k == 0:
            # radiological convention: the patient's right is on the left of the picture
            for x, letter, ha in ((0.02, "R", "left"), (0.98, "L", "right")):
                ax.text(x, 0.5, letter, transform=ax.transAxes, color="#9ecbff", fontsize=8, va="center", ha=ha)
        ax.set_axis_off()
    heading = title or ""
    if not has_lesions:
        heading = f"{heading}  (no lesions found)".strip()
    fig.suptitle(heading, color="white", fontsize=10)
    fig.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - 0.45 / fig.get_figheight(), wspace=0.02, hspace=0.02)
    with atomic_path(path, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, facecolor="black")
    return path
