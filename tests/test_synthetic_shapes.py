"""Signed distances of the generator's shapes (deepwml.synthetic.shapes)."""
from __future__ import annotations

import numpy as np

from deepwml.synthetic.shapes import ellipsoid_sdf, inside


def test_sphere_distance_is_exact_everywhere_including_its_centre():
    axis = np.arange(-4.0, 4.5, 0.5, dtype=np.float32)
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    d = ellipsoid_sdf((x, y, z), (0.0, 0.0, 0.0), (3.0, 3.0, 3.0))
    assert np.allclose(d, np.sqrt(x**2 + y**2 + z**2) - 3.0, atol=1e-5)
    # a grid point on a lesion's centre lies deep inside it (it was read as on the surface: a half-lesion pixel)
    assert d[8, 8, 8] == -3.0 and inside(d, 1.0)[8, 8, 8] == 1.0


def test_an_ellipsoid_is_inside_at_its_centre_and_outside_beyond_its_long_axis():
    centre = (1.0, -2.0, 0.5)
    pts = (np.array([1.0, 1.0, 7.5, 1.0]), np.array([-2.0, -2.0, -2.0, 1.5]), np.array([0.5, 0.0, 0.5, 0.5]))
    d = ellipsoid_sdf(pts, centre, (6.0, 2.0, 1.0))
    assert d[0] == -1.0  # the shortest semi-axis
    assert -1.0 < d[1] < 0.0  # half-way to the short end
    assert d[2] > 0.0 and d[3] > 0.0  # beyond the long axis' end; beyond the middle axis' end
