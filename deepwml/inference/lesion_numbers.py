"""Lesion numbers on slice pictures: each lesion of the lesion table named by its ``lesion_id`` beside every in-plane
piece of it (the report's panels; the QC montage, and so the DICOM findings picture built on it), never covering it
and never running into another number."""
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


def lesion_marks(ids: np.ndarray, max_id: int) -> List[Tuple[int, int, int]]:
    """(lesion id, row, column) for each in-plane piece of a lesion with an id up to ``max_id`` on one slice of lesion
    ids: the top right corner of the piece, where its number goes (beside it, not over it). A lesion joined through
    other slices may show as several pieces here; each carries its number."""
    ids = np.asarray(ids)
    shown = (ids > 0) & (ids <= max_id)
    rows, cols = np.flatnonzero(shown.any(axis=1)), np.flatnonzero(shown.any(axis=0))
    if rows.size == 0:
        return []
    around = slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)
    ids, (top, left) = ids[around], (around[0].start, around[1].start)
    pieces, count = ndimage.label(shown[around], structure=np.ones((3, 3), bool))
    # a piece lies within one lesion (lesions touching in-plane would be one 26-connected lesion): any pixel names it
    owners = np.zeros(count + 1, ids.dtype)
    where = np.flatnonzero(pieces)
    owners[pieces.ravel()[where]] = ids.ravel()[where]
    boxes = ndimage.find_objects(pieces)
    return sorted((int(owner), top + box[0].start, left + box[1].stop) for owner, box in zip(owners[1:], boxes))


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
