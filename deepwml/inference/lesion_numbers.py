"""Lesion numbers on slice pictures: each lesion of the lesion table named by its ``lesion_id`` beside every in-plane
piece of it that lies apart from the others (the report's panels; the QC montage, and so the DICOM findings picture
built on it), never covering it and never running into another number."""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import numpy as np
from PIL import ImageDraw, ImageFont
from scipy import ndimage

#: lesions 1..this are numbered: those the report's lesion table lists
NUMBERED_LESIONS = 60

#: (x0, y0, x1, y1) in picture pixels
Rect = Tuple[int, int, int, int]
Colour = Union[int, Tuple[int, int, int]]


#: a piece of a lesion closer than this (mm) to a numbered piece of it on the same slice carries no number of its
#: own: a confluent lesion that falls into a dozen pieces around the ventricles is named a few times, not a dozen,
#: while a piece far from the rest still says which lesion it is
NUMBER_SPACING_MM = 30.0


def lesion_marks(ids: np.ndarray, max_id: int, pixel_mm: Tuple[float, float] = (1.0, 1.0),
                 spacing_mm: float = NUMBER_SPACING_MM) -> List[Tuple[int, int, int]]:
    """(lesion id, row, column) for the in-plane pieces of lesions with an id up to ``max_id`` on one slice of lesion
    ids (``pixel_mm``: a pixel's height and width) that carry the lesion's number: just right of the piece's pixel
    nearest its top right corner, where the number goes (beside the lesion, not over it). A lesion joined through
    other slices may show as several pieces here: its largest piece is numbered, and each other piece (largest
    first) that lies ``spacing_mm`` or more from every numbered piece of the same lesion."""
    ids = np.asarray(ids)
    shown = (ids > 0) & (ids <= max_id)
    rows, cols = np.flatnonzero(shown.any(axis=1)), np.flatnonzero(shown.any(axis=0))
    if rows.size == 0:
        return []
    around = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
    ids, (top, left) = ids[around], (around[0].start, around[1].start)
    pieces, count = ndimage.label(shown[around], structure=np.ones((3, 3), bool))
    # a piece lies within one lesion (lesions touching in-plane would be one 26-connected lesion): any pixel names it
    where = np.flatnonzero(pieces)
    labels_of = pieces.ravel()[where]
    owners = np.zeros(count + 1, ids.dtype)
    owners[labels_of] = ids.ravel()[where]
    sizes = np.bincount(labels_of, minlength=count + 1)
    # each piece's edge pixels (a 4-neighbour outside it), piece after piece: piece k's are pixels[starts[k]:starts[k + 1]].
    # Two pieces are nearest at their edges, and a piece's pixel nearest its box's top right corner is an edge pixel
    # (the pixel above it would be nearer), so the inner pixels of a large piece are never looked at
    padded = np.pad(pieces, 1)
    inner = ((padded[:-2, 1:-1] == pieces) & (padded[2:, 1:-1] == pieces) & (padded[1:-1, :-2] == pieces)
             & (padded[1:-1, 2:] == pieces)).ravel()[where]
    edge, edge_labels = where[~inner], labels_of[~inner]
    by_piece = np.argsort(edge_labels, kind="stable")
    pixels = np.stack(np.unravel_index(edge[by_piece], pieces.shape), axis=1)
    starts = np.concatenate(([0], np.cumsum(np.bincount(edge_labels, minlength=count + 1))))
    # each piece's box (top, left, bottom, right; pixels), piece 0 being the background
    boxes = np.zeros((count + 1, 4), np.int64)
    boxes[1:] = np.concatenate((np.minimum.reduceat(pixels, starts[1:-1], axis=0),
                                np.maximum.reduceat(pixels, starts[1:-1], axis=0)), axis=1)
    marks: List[Tuple[int, int, int]] = []
    for lesion in np.unique(owners[1:]):
        labels = np.flatnonzero(owners == lesion)
        labels = labels[np.argsort(-sizes[labels], kind="stable")]
        kept = labels[:1] if labels.size == 1 else _spaced_pieces(pixels, starts, boxes[labels], labels, pixel_mm, spacing_mm)
        for label in kept:
            row, col = _corner_pixel(pixels[starts[label]:starts[label + 1]])
            marks.append((int(lesion), top + row, left + col + 1))
    return sorted(marks)


def _spaced_pieces(pixels: np.ndarray, starts: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                   pixel_mm: Tuple[float, float], spacing_mm: float) -> List[int]:
    """The first of ``labels`` (one lesion's pieces, largest first; ``boxes`` theirs) and each next one at least
    ``spacing_mm`` from every piece kept before it (pixel to pixel)."""
    scale = np.asarray(pixel_mm, dtype=np.float64)
    first, last = starts[labels], starts[labels + 1]
    # a piece whose box lies spacing_mm from another's lies that far from it
    boxes = boxes * np.tile(scale, 2)
    kept, newest = [0], 0
    alive = np.ones(labels.size, dtype=bool)
    alive[0] = False
    while True:
        # only pieces whose box comes within spacing_mm of the newest kept piece's can be too near it
        gap_rows = np.maximum(0.0, np.maximum(boxes[:, 0] - boxes[newest, 2], boxes[newest, 0] - boxes[:, 2]))
        gap_cols = np.maximum(0.0, np.maximum(boxes[:, 1] - boxes[newest, 3], boxes[newest, 1] - boxes[:, 3]))
        near = np.flatnonzero(alive & (np.hypot(gap_rows, gap_cols) < spacing_mm))
        if near.size:
            counts = last[near] - first[near]
            offsets = np.concatenate(([0], np.cumsum(counts)[:-1]))
            index = np.repeat(first[near] - offsets, counts) + np.arange(counts.sum())
            distance = _nearest_mm(pixels[index] * scale, pixels[first[newest]:last[newest]] * scale)
            # each kept piece only brings the others closer: a piece too near once stays too near
            alive[near[np.minimum.reduceat(distance, offsets) < spacing_mm]] = False
        remaining = np.flatnonzero(alive)
        if remaining.size == 0:
            return [int(labels[k]) for k in kept]
        newest = int(remaining[0])
        kept.append(newest)
        alive[newest] = False


#: (point, point) distances computed at once: bounds the memory whatever the pieces' sizes
PAIRS_AT_ONCE = 1 << 20


def _nearest_mm(points: np.ndarray, others: np.ndarray) -> np.ndarray:
    """Each of ``points``' (n, 2; mm) distance to the nearest of ``others``."""
    out = np.empty(len(points))
    step = max(1, PAIRS_AT_ONCE // max(1, len(others)))
    for start in range(0, len(points), step):
        part = points[start:start + step]
        squared = ((part[:, None, :] - others[None, :, :]) ** 2).sum(axis=2)
        out[start:start + step] = np.sqrt(squared.min(axis=1))
    return out


def _corner_pixel(pixels: np.ndarray) -> Tuple[int, int]:
    """(row, column) of the piece's pixel nearest the top right corner of its box: a band's corner can lie far
    from the band, its pixel cannot."""
    r, c = pixels[:, 0].astype(np.int64), pixels[:, 1].astype(np.int64)
    nearest = int(np.argmin((r - r.min()) ** 2 + (c.max() - c) ** 2))
    return int(r[nearest]), int(c[nearest])


#: pixels kept free between two numbers, so that '5' beside '2' never reads as '52'
NUMBER_MARGIN = 3


class TakenSpots:
    """Where numbers are written already, as an occupancy bitmap of the picture: checking a place costs the area of
    one number, not a comparison with every number written (a speckled mask can carry ten thousand pieces)."""

    def __init__(self, size_wh: Tuple[int, int]) -> None:
        self.grid = np.zeros((max(1, int(size_wh[1])), max(1, int(size_wh[0]))), dtype=bool)

    def _area(self, rect: Rect, margin: int) -> Tuple[slice, slice]:
        x0, y0, x1, y1 = rect
        return slice(max(0, y0 - margin), max(0, y1 + margin)), slice(max(0, x0 - margin), max(0, x1 + margin))

    def clear(self, rect: Rect) -> bool:
        """True when ``rect`` keeps NUMBER_MARGIN pixels from every rectangle added."""
        return not self.grid[self._area(rect, NUMBER_MARGIN)].any()

    def add(self, rect: Rect) -> None:
        """Mark ``rect`` as holding a number."""
        self.grid[self._area(rect, 0)] = True


def free_spot(rect: Rect, taken: TakenSpots, height: int, bounds: Rect) -> Rect:
    """``rect`` moved down or up by whole text heights until it is clear of the numbers in ``taken``, staying within
    ``bounds``; as it is when there is no such place."""
    for step in (0, 1, -1, 2, -2, 3, -3):
        moved = (rect[0], rect[1] + step * height, rect[2], rect[3] + step * height)
        if moved[1] >= bounds[1] and moved[3] <= bounds[3] and taken.clear(moved):
            return moved
    return rect


def draw_lesion_numbers(draw: ImageDraw.ImageDraw, marks: Sequence[Tuple[int, int, int]], face: ImageFont.ImageFont,
                        fill: Colour, rim: Colour, bounds: Rect, taken: TakenSpots) -> None:
    """Write each mark's (id, row, column; picture pixels) number just right of and level with its corner, within
    ``bounds``, clear of the numbers in ``taken`` (which gains each number written)."""
    sizes: dict = {}  # a text's box depends on its characters only: measured once per number, not once per piece
    for lesion_id, row, col in marks:
        text = str(lesion_id)
        if text not in sizes:
            sizes[text] = draw.textbbox((0, 0), text, font=face, stroke_width=2)
        x0, y0, x1, y1 = sizes[text]
        w, h = x1 - x0, y1 - y0
        x = min(max(col + 2, bounds[0]), max(bounds[2] - w, bounds[0]))
        y = min(max(row - h // 2, bounds[1]), max(bounds[3] - h, bounds[1]))
        x, y, _, _ = rect = free_spot((x, y, x + w, y + h), taken, h, bounds)
        taken.add(rect)
        draw.text((x - x0, y - y0), text, fill=fill, font=face, stroke_width=2, stroke_fill=rim)
