"""Generator v6 (issue #12): bright normal grey matter where real thick-slice FLAIR shows it, never labelled."""
from __future__ import annotations

import numpy as np

from deepwml.synthetic.anatomy import INSULA_CAP_X, deep_cortex_fields, sample_anatomy


def _points(*xyz):
    """Anatomy-mm points (X left, Y posterior, Z superior) as the float32 arrays the fields take."""
    return tuple(np.asarray(c, np.float32) for c in zip(*xyz))


def test_insula_hippocampi_and_tracts_sit_where_anatomy_puts_them_on_both_sides():
    """The insular CSF sheet lies lateral to the putamen and nowhere near the midline; the hippocampi lie in the medial
    temporal lobes; the corticospinal tract runs through the posterior limb of the internal capsule."""
    anatomy = sample_anatomy(np.random.default_rng(3), age=50.0)
    s, spread = anatomy.size, 24.0 * (anatomy.ventricle_scale**0.35 - 1.0)
    insula_x = 18 * s + spread + 19 * s  # the lateral pole of the ellipsoid whose cap is the insula
    for side in (-1, 1):
        f = deep_cortex_fields(anatomy, _points(
            (side * insula_x, -4 * s, 4 * s),  # on the insular sheet
            (0.0, -4 * s, 4 * s),  # the midline at the same height: no insula
            (side * (INSULA_CAP_X - 8) * s, -4 * s, 4 * s),  # the putamen, medial to the cap
            (side * (27 * s + spread + 1.0), 8 * s, -20 * s),  # inside the hippocampus (its centre has bound 0)
            (side * (19 * s + spread), 4 * s, 6 * s),  # posterior limb of the internal capsule
        ))
        sheet, hippocampus, tract = f["deep_csf"], f["hippocampus"], f["tract"]
        assert sheet[0] <= 0.0 < sheet[1] and sheet[2] > 5.0
        assert hippocampus[3] < 0.0 < hippocampus[1]
        assert tract[4] < 0.0 < tract[1]


def test_brainstem_fraction_is_one_inside_the_stem_and_zero_in_the_hemispheres():
    """The brainstem carries its own (mildly bright) signal; the cerebral white matter does not."""
    anatomy = sample_anatomy(np.random.default_rng(4), age=40.0)
    s = anatomy.size
    stem = deep_cortex_fields(anatomy, _points((0.0, 19 * s, -45 * s), (40 * s, 0.0, 30 * s)))["stem"]
    assert stem[0] == 1.0 and stem[1] == 0.0
