"""deepwml.anatomy.cleanup: cortex patches the anatomy model finds inside the white matter go back to white matter."""
from __future__ import annotations

import numpy as np

from deepwml.anatomy.cleanup import enclosed_cortex_to_white_matter, lesions_to_tissue
from deepwml.anatomy.labels import BACKGROUND, CORTEX, INFRATENTORIAL, LESION, VENTRICLE, WHITE_MATTER, with_lesion_class
from deepwml.anatomy.location import DEEP, JUXTACORTICAL, locate_lesions
from deepwml.imageio import Geometry
from deepwml.inference.lesion_report import label_lesions


def _head(shape=(3, 40, 40)) -> np.ndarray:
    """Background around a disc of white matter with a 3-pixel cortical ribbon and a ventricle, on every slice."""
    _, yy, xx = np.indices(shape)
    radius = np.hypot(yy - 20, xx - 20)
    labels = np.full(shape, BACKGROUND, np.uint8)
    labels[radius < 16] = CORTEX
    labels[radius < 13] = WHITE_MATTER
    labels[(radius < 3)] = VENTRICLE
    return labels


def test_a_cortex_patch_inside_the_white_matter_becomes_white_matter_and_the_ribbon_stays():
    """A patch of cortex enclosed in white matter (a lesion the model took for grey matter) is relabelled white matter;
    the ribbon, which borders the background, and every other class stay; the input is not changed."""
    labels = _head()
    labels[1, 10:13, 18:21] = CORTEX  # inside the white matter: a voxel of it between the patch and the ribbon
    before = labels.copy()
    out = enclosed_cortex_to_white_matter(labels)
    assert np.array_equal(labels, before)
    assert (out[1, 10:13, 18:21] == WHITE_MATTER).all()
    expected = before.copy()
    expected[1, 10:13, 18:21] = WHITE_MATTER
    assert np.array_equal(out, expected)


def test_a_patch_joined_to_the_ribbon_only_by_a_corner_on_the_next_slice_stays():
    """Thick slices join the ribbon across slices by an edge or a corner: a voxel of cortex whose only contact with
    the ribbon is a corner on the slices above and below is the ribbon's and stays."""
    labels = _head()
    labels[1][labels[1] == CORTEX] = WHITE_MATTER  # no ribbon on the middle slice
    ribbon = np.argwhere(labels[0] == CORTEX)
    y, x = ribbon[np.argmin(np.hypot(*(ribbon - 20).T))]  # the ribbon voxel nearest the centre on slice 0
    y, x = y + np.sign(20 - y), x + np.sign(20 - x)  # one step inwards on both axes: white matter on slices 0 and 2
    assert labels[0, y, x] == WHITE_MATTER and labels[2, y, x] == WHITE_MATTER
    labels[1, y, x] = CORTEX
    assert enclosed_cortex_to_white_matter(labels)[1, y, x] == CORTEX


def test_a_map_without_background_is_left_as_it_is():
    """No background at all (a field of view inside the head): nothing tells the ribbon from a patch, so nothing
    changes; a map without cortex neither."""
    labels = np.full((2, 10, 10), WHITE_MATTER, np.uint8)
    labels[:, :, :2] = CORTEX  # the ribbon, cut by the field's left edge
    labels[:, 5, 5] = CORTEX
    assert np.array_equal(enclosed_cortex_to_white_matter(labels), labels)
    labels = _head()
    labels[labels == CORTEX] = WHITE_MATTER
    assert np.array_equal(enclosed_cortex_to_white_matter(labels), labels)


def test_a_deep_lesion_the_map_called_cortex_is_located_in_the_deep_white_matter():
    """A deep lesion labelled cortex with its rim (as the model labels bright tissue) was 'cortical'; with the patch
    given back to the white matter it is deep, and one beside the ribbon stays juxtacortical."""
    geometry = Geometry((40, 40, 3), (1.0, 1.0, 5.0), (0.0, 0.0, 0.0))
    labels = _head()
    mask = np.zeros(labels.shape, bool)
    mask[1, 10:13, 18:21] = True  # deep: 5 mm from the ventricle, 4 from the ribbon
    mask[1, 18:21, 31:33] = True  # against the ribbon, which starts at x = 33 there
    labels[1, 9:14, 17:22] = CORTEX  # the deep lesion and its rim, as the model sees them; white matter still between
    lesions, count = label_lesions(mask)
    deep = lesions[1, 11, 19] - 1

    raw = locate_lesions(lesions, count, (0, 0, 0), labels, geometry).location
    clean = locate_lesions(lesions, count, (0, 0, 0), enclosed_cortex_to_white_matter(labels), geometry).location
    assert raw[deep] != DEEP
    assert clean[deep] == DEEP and clean[1 - deep] == JUXTACORTICAL


def test_a_lesion_aware_map_gives_each_lesion_the_tissue_around_it():
    """A lesion-aware model's lesion class goes back to tissue lesion by lesion: a deep lesion and one touching the
    ribbon become white matter (not cortex, so the second reads juxtacortical, not cortical), one in the
    infratentorial region infratentorial, one inside the ribbon cortex and one outside the brain background; every
    other voxel and the input stay as they were."""
    labels = _head()
    labels[:, 20:, :] = np.where(labels[:, 20:, :] == WHITE_MATTER, INFRATENTORIAL, labels[:, 20:, :])
    labels[1, 9:12, 13:16] = LESION  # deep, in the white matter
    labels[1, 6:9, 20:22] = LESION  # across the ribbon's inner edge (radius 13): cortex above, white matter below
    labels[1, 28:30, 19:22] = LESION  # in the infratentorial region
    labels[1, 0:2, 0:3] = LESION  # outside the brain (a false lesion in the scalp): stays outside
    labels[1, 34, 20] = LESION  # within the ribbon, touching only cortex: cortex
    before = labels.copy()
    out = lesions_to_tissue(labels)
    assert np.array_equal(labels, before)
    assert (out[1, 9:12, 13:16] == WHITE_MATTER).all() and (out[1, 6:9, 20:22] == WHITE_MATTER).all()
    assert (out[1, 28:30, 19:22] == INFRATENTORIAL).all()
    assert (out[1, 0:2, 0:3] == BACKGROUND).all() and out[1, 34, 20] == CORTEX
    untouched = before != LESION
    assert np.array_equal(out[untouched], before[untouched]) and not (out == LESION).any()
    assert np.array_equal(lesions_to_tissue(out), out)  # no lesion class: unchanged


def test_the_lesion_class_marks_only_lesion_voxels_in_the_parenchyma():
    """Training labels of a lesion-aware model: lesion voxels in white matter, cortex or the infratentorial region
    become the lesion class; a lesion voxel in the ventricle or outside the brain keeps its class."""
    labels = _head()
    lesion = np.zeros(labels.shape, bool)
    lesion[1, 17:24, 3:37] = True  # a band across background, ribbon, white matter and the ventricle
    out = with_lesion_class(labels, lesion)
    parenchyma = np.isin(labels, (WHITE_MATTER, CORTEX, INFRATENTORIAL))
    assert (out[lesion & parenchyma] == LESION).all()
    assert np.array_equal(out[~(lesion & parenchyma)], labels[~(lesion & parenchyma)])
