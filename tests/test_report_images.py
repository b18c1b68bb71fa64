"""The report's slice pictures: the pixels of the cheap composition (upscale first, blend only tinted pixels,
erode only around the mask) are those of the plain float composition of every pixel; lesion numbers go beside the
lesions they name and change nothing else."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage
from scipy import ndimage

from deepwml.imageio import Geometry
from deepwml.inference.lesion_numbers import lesion_marks
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


def test_lesion_marks_sit_at_the_top_right_of_each_piece_of_a_numbered_lesion():
    ids = np.zeros((30, 40), np.int32)
    ids[5:9, 10:14] = 3
    ids[20:25, 2:30] = 1
    ids[0:2, 35:38] = 61  # beyond the numbered ones (the table's rows): no number
    ids[26:29, 33:36] = 1  # lesion 1 again: a second piece of it on this slice (joined through another slice)
    # the second piece lies 3 pixels from the first: named once at the default spacing, twice when spacing allows
    assert lesion_marks(ids, 60, (1.0, 1.0)) == [(1, 20, 30), (3, 5, 14)]
    assert lesion_marks(ids, 60, (1.0, 1.0), spacing_mm=3.0) == [(1, 20, 30), (1, 26, 36), (3, 5, 14)]
    assert lesion_marks(ids, 0) == [] and lesion_marks(np.zeros((4, 4), np.int32), 60) == []


def test_a_confluent_lesion_is_numbered_once_per_spacing_not_on_every_piece():
    from deepwml.inference.lesion_numbers import NUMBER_SPACING_MM

    ids = np.zeros((200, 200), np.int32)
    ids[40:60, 40:70] = 1  # the largest piece
    for k in range(6):  # six small pieces of it close by (joined through other slices): no number of their own
        ids[65:68, 40 + 5 * k:43 + 5 * k] = 1
    ids[150:153, 150:153] = 1  # a piece far from the rest still says which lesion it is
    ids[156:159, 150:153] = 1  # ... once
    marks = lesion_marks(ids, 60, (1.0, 1.0))
    assert marks == [(1, 40, 70), (1, 150, 153)]
    # the spacing is in millimetres: the far piece lies ~115 pixels away, under the spacing at 0.2 mm pixels
    assert 115 * 0.2 < NUMBER_SPACING_MM and lesion_marks(ids, 60, (0.2, 0.2)) == [(1, 40, 70)]
    # distances run pixel to pixel, not box to box: a piece inside an L-shaped band's box but far from its arms is
    # numbered too
    band = np.zeros((200, 200), np.int32)
    band[10:14, 10:190] = 2
    band[10:190, 10:14] = 2
    band[150:153, 150:153] = 2
    assert lesion_marks(band, 60, (1.0, 1.0)) == [(2, 10, 190), (2, 150, 153)]


def test_a_band_s_number_sits_beside_its_pixels_not_beside_its_box_corner():
    ids = np.zeros((100, 100), np.int32)
    ids[10:90, 10:14] = 2  # an L-shaped band: up the left, then along the bottom to the right
    ids[86:90, 10:80] = 2
    # the box's top right corner (10, 80) lies 70 pixels from the band; its pixel nearest that corner is the top
    # of the left arm
    assert lesion_marks(ids, 60) == [(2, 10, 14)]


def _pixels(panel):
    return np.asarray(PILImage.open(io.BytesIO(panel.png)).convert("RGB"))


def test_numbers_are_drawn_beside_their_lesions_and_change_nothing_else():
    """Lesion ids follow the lesion table (most voxels first, across slices); each panel shows the numbers of the
    lesions cut by it, to the right of each, and every pixel away from them is as in the unnumbered panel."""
    from deepwml.inference.lesion_report import lesion_table
    from deepwml.inference.report_images import NUMBER_RGB

    rng = np.random.default_rng(1)
    shape = (3, 64, 64)
    image = (np.full(shape, 300.0) + rng.normal(0, 20, shape)).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[0, 40:44, 10:14] = 1  # lesion 2 (16 voxels)
    mask[1:3, 10:20, 30:40] = 1  # lesion 1 (200 voxels, two slices)
    mask[2, 50:52, 50:52] = 1  # lesion 3 (4 voxels)
    geometry = Geometry((64, 64, 3), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    table = lesion_table(mask, geometry)
    assert list(table["voxels"]) == [200, 16, 4] and list(table["lesion_id"]) == [1, 2, 3]
    plain = report_panels(image, mask, geometry)
    numbered = report_panels(image, mask, geometry, numbered=60)
    assert [p.numbered for p in plain] == [False] * 3 and [p.numbered for p in numbered] == [True] * 3
    only_first = report_panels(image, mask, geometry, numbered=1)
    assert [p.numbered for p in only_first] == [False, True, True]  # slice 0 holds lesion 2 only
    yellow = np.array(NUMBER_RGB, np.uint8)
    for k, (a, b) in enumerate(zip(plain, numbered)):
        before, after = _pixels(a), _pixels(b)
        changed = (before != after).any(axis=2)
        assert changed.any() and (after[changed] == yellow).all(axis=1).any()
        # the lesions cut by this slice, with their outline's right edge on the panel (the panel is 5x the 1 mm grid)
        scale = before.shape[1] / 64
        boxes = {0: [(40, 44, 10, 14)], 1: [(10, 20, 30, 40)], 2: [(10, 20, 30, 40), (50, 52, 50, 52)]}[k]
        near = np.zeros(changed.shape, bool)
        for r0, _r1, _c0, c1 in boxes:
            # the number's cell: right of the outline, about its top row, a few digits wide
            rows = slice(max(int(r0 * scale) - 20, 0), int(r0 * scale) + 20)
            near[rows, int(c1 * scale):int(c1 * scale) + 40] = True
            assert changed[rows, int(c1 * scale):int(c1 * scale) + 40].any()
        assert not changed[~near].any()
    # a number never covers its own lesion's outline
    contour = (CONTOUR_RGB * 255 + 0.5).astype(np.uint8)
    for a, b in zip(plain, numbered):
        before, after = _pixels(a), _pixels(b)
        was_outline = (before == contour).all(axis=2)
        assert (after[was_outline] == contour).all()


def test_numbers_of_lesions_side_by_side_do_not_run_together():
    """Two lesions whose numbers would land on one spot: the second moves clear of the first ('5' beside '2' must
    not read as '52')."""
    from deepwml.inference.report_images import NUMBER_RGB, _number_lesions

    blank = np.zeros((200, 200, 3), np.uint8)
    yellow = np.array(NUMBER_RGB, np.uint8)

    def rows_drawn(marks):
        drawn = (_number_lesions(blank.copy(), marks) == yellow).all(axis=2)
        return np.flatnonzero(drawn.any(axis=1))

    one = rows_drawn([(5, 100, 100)])
    both = rows_drawn([(5, 100, 100), (2, 100, 104)])
    assert one.size and both.max() - both.min() > 2 * (one.max() - one.min())  # stacked, not side by side


def test_a_place_is_free_exactly_when_it_keeps_the_margin_from_every_number_written():
    """The occupancy bitmap answers as the pairwise rule does (a 3-pixel gap to every rectangle taken), at the
    picture's edges too."""
    from deepwml.inference.lesion_numbers import NUMBER_MARGIN, TakenSpots

    def pairwise_clear(r, taken):
        m = NUMBER_MARGIN
        return all(r[2] + m <= o[0] or o[2] + m <= r[0] or r[3] + m <= o[1] or o[3] + m <= r[1] for o in taken)

    rng = np.random.default_rng(0)
    spots, taken = TakenSpots((120, 90)), []
    for _ in range(400):
        w, h = int(rng.integers(1, 20)), int(rng.integers(1, 14))
        x, y = int(rng.integers(0, 121 - w)), int(rng.integers(0, 91 - h))
        r = (x, y, x + w, y + h)
        assert spots.clear(r) == pairwise_clear(r, taken), (r, taken)
        if rng.random() < 0.15:
            spots.add(r)
            taken.append(r)
    assert len(taken) > 20


def test_a_speckled_mask_s_numbers_never_cover_one_another():
    """A mask of thousands of specks (an unsuitable model, a noisy scan): every mark gets its number, and each number
    placed where the picture had room keeps clear of every number written before it."""
    from PIL import ImageDraw

    from deepwml.inference.lesion_numbers import NUMBER_MARGIN, TakenSpots, draw_lesion_numbers
    from deepwml.inference.qc import font

    placed = []

    class Recorder(TakenSpots):
        def add(self, rect):
            placed.append((rect, self.clear(rect)))
            super().add(rect)

    rng = np.random.default_rng(3)
    marks = sorted((int(rng.integers(1, 61)), int(r), int(c)) for r, c in rng.integers(0, 600, (5000, 2)))
    picture = PILImage.new("L", (620, 620))
    draw_lesion_numbers(ImageDraw.Draw(picture), marks, font(12), 255, 0, (0, 0, 620, 620), Recorder(picture.size))
    assert len(placed) == len(marks) and np.asarray(picture).any()
    rects = np.array([r for r, _ in placed])
    m = NUMBER_MARGIN
    clear = [k for k, (_, ok) in enumerate(placed) if ok]
    assert len(clear) > 300  # the picture fills up: later numbers find no free place and overlap
    for k in clear:
        x0, y0, x1, y1 = rects[k]
        before = rects[:k]
        overlapping = (x1 + m > before[:, 0]) & (before[:, 2] + m > x0) & (y1 + m > before[:, 1]) & (before[:, 3] + m > y0)
        assert not overlapping.any(), k


def test_the_findings_montage_numbers_the_lesions_beside_them_in_white():
    """qc_montage(numbered=...) (the DICOM findings picture, whose lesions the SR tracks as 'lesion K'): white digits
    on a black rim beside the lesions, the outlines and the title band untouched; without it the montage is as before."""
    from deepwml.inference.qc import GREY_LEVELS, RED, TITLE_PIXELS, qc_montage

    rng = np.random.default_rng(2)
    shape = (3, 64, 64)
    image = (np.full(shape, 300.0) + rng.normal(0, 20, shape)).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[0, 40:44, 10:14] = 1
    mask[1:3, 10:20, 30:40] = 1
    geometry = Geometry((64, 64, 3), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    plain = np.asarray(qc_montage(image, mask, geometry, "t"))
    numbered = np.asarray(qc_montage(image, mask, geometry, "t", numbered=60))
    assert np.array_equal(plain, np.asarray(qc_montage(image, mask, geometry, "t", numbered=0)))
    changed = plain != numbered
    assert (numbered[changed] == GREY_LEVELS - 1).sum() > 10 and (numbered[changed] == 0).sum() > 10
    assert numbered[changed].max() <= GREY_LEVELS - 1  # digits and rim (smoothed along the grey ramp), no other colour
    assert not changed[:TITLE_PIXELS].any() and (numbered[plain == RED] == RED).all()
    # each of the three panels (one per slice with lesion) holds a number
    panel_width = plain.shape[1] // 3
    assert all(changed[:, k * panel_width:(k + 1) * panel_width].any() for k in range(3))


def test_with_the_lesion_tables_locations_each_lesion_is_outlined_in_its_class_colour_under_a_legend():
    """qc_montage(locations=...) (qc/CASE.png and the findings picture with an anatomy map): each lesion's outline in
    its location class's colour, the classes shown named in a legend row under the title, no red outline left; the
    panels are the same pictures moved down by the legend's row."""
    from deepwml.inference.qc import LEGEND_PIXELS, LOCATION_INDEX, RED, TITLE_PIXELS, location_colours, qc_montage

    rng = np.random.default_rng(2)
    shape = (3, 64, 64)
    image = (np.full(shape, 300.0) + rng.normal(0, 20, shape)).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[1:3, 10:20, 30:40] = 1  # lesion 1 (the larger, first in the table)
    mask[0, 40:44, 10:14] = 1  # lesion 2
    geometry = Geometry((64, 64, 3), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    plain = np.asarray(qc_montage(image, mask, geometry, "t"))
    coded = np.asarray(qc_montage(image, mask, geometry, "t", locations=["periventricular", "deep"]))
    assert coded.shape == (plain.shape[0] + LEGEND_PIXELS, plain.shape[1])
    panels = coded[TITLE_PIXELS + LEGEND_PIXELS:]
    outlined = plain[TITLE_PIXELS:] == RED
    assert not (coded == RED).any() and np.isin(panels[outlined], [LOCATION_INDEX["periventricular"], LOCATION_INDEX["deep"]]).all()
    # the first panel is the slice with lesion 2 alone, the others lesion 1's
    width = plain.shape[1] // 3
    assert set(np.unique(panels[:, :width][outlined[:, :width]])) == {LOCATION_INDEX["deep"]}
    assert set(np.unique(panels[:, width:][outlined[:, width:]])) == {LOCATION_INDEX["periventricular"]}
    legend = coded[TITLE_PIXELS:TITLE_PIXELS + LEGEND_PIXELS]
    assert {LOCATION_INDEX["periventricular"], LOCATION_INDEX["deep"]} <= set(np.unique(legend))
    assert LOCATION_INDEX["cortical"] not in set(np.unique(legend))  # only the classes shown
    # an id beyond the table (never from deepwml_predict) stays red rather than borrowing a class
    assert location_colours(np.array([0, 1, 3]), ["deep"]).tolist() == [0, LOCATION_INDEX["deep"], RED]


def test_with_the_tables_locations_each_outline_takes_its_class_colour_and_nothing_else_changes():
    """The report's pictures colour lesions as the QC picture does: each outline pixel in its lesion's class colour,
    every other pixel as the red picture has it; an id beyond the table stays red."""
    from deepwml.inference.qc import LOCATION_COLOURS
    from deepwml.inference.report_images import outline_colours

    rng = np.random.default_rng(3)
    shape = (2, 48, 48)
    image = (np.full(shape, 300.0) + rng.normal(0, 20, shape)).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[0, 5:12, 5:12] = 1  # lesion 1 (the larger)
    mask[0, 30:34, 30:34] = 1  # lesion 2
    mask[1, 20:24, 8:11] = 1  # lesion 3
    geometry = Geometry((48, 48, 2), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    locations = ["periventricular", "deep", "infratentorial"]
    red = report_panels(image, mask, geometry)
    coded = report_panels(image, mask, geometry, locations=locations)
    contour = (CONTOUR_RGB * 255 + 0.5).astype(np.uint8)
    seen = set()
    for plain, located in zip(red, coded):
        a = np.asarray(PILImage.open(io.BytesIO(plain.png)).convert("RGB"))
        b = np.asarray(PILImage.open(io.BytesIO(located.png)).convert("RGB"))
        outline = (a == contour).all(axis=-1)
        assert outline.any() and np.array_equal(a[~outline], b[~outline])
        seen |= {tuple(c) for c in b[outline]}
    assert seen == {tuple(LOCATION_COLOURS[n]) for n in locations}
    # lesion 1's outline (the top-left square on slice 0) is periventricular yellow
    b0 = np.asarray(PILImage.open(io.BytesIO(coded[0].png)).convert("RGB"))
    top_left = b0[: b0.shape[0] // 2, : b0.shape[1] // 2]
    assert (top_left == LOCATION_COLOURS["periventricular"]).all(axis=-1).any()
    assert not (top_left == LOCATION_COLOURS["deep"]).all(axis=-1).any()
    table = outline_colours(["deep"])
    assert [tuple(table[k]) for k in range(3)] == [tuple(contour), LOCATION_COLOURS["deep"], tuple(contour)]
