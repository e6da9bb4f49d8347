"""The order-29 index: coarsening by bit shift equals indexing at the coarse order."""

from __future__ import annotations

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix
from hypothesis import given, settings
from hypothesis import strategies as st

from lcdb import healpix

coords = st.tuples(st.floats(0, 359.999999, allow_nan=False), st.floats(-90, 90, allow_nan=False))


@settings(max_examples=200, deadline=None)
@given(st.lists(coords, min_size=1, max_size=50), st.integers(0, 12))
def test_coarsen_equals_direct_index(points, order):
    ra, dec = (np.array(c) for c in zip(*points, strict=True))
    idx = healpix.healpix29(ra, dec)
    direct = HEALPix(nside=2**order, order="nested").lonlat_to_healpix(ra * u.deg, dec * u.deg)
    np.testing.assert_array_equal(healpix.coarsen(idx, order), direct)
    lo = np.array([healpix.index_range(int(p), order)[0] for p in direct])
    hi = np.array([healpix.index_range(int(p), order)[1] for p in direct])
    assert np.all((lo <= idx) & (idx <= hi))


def test_threaded_index_matches_single_thread():
    rng = np.random.default_rng(3)
    ra, dec = rng.uniform(0, 360, 2_500_000), rng.uniform(-90, 90, 2_500_000)
    np.testing.assert_array_equal(
        healpix.healpix29(ra, dec, threads=2), healpix.healpix29(ra, dec, threads=1)
    )


def test_cone_pixels_cover_every_point_in_the_cone():
    rng = np.random.default_rng(4)
    ra0, dec0, r = 201.0, -43.0, 2.5
    ra = ra0 + rng.uniform(-4, 4, 20000)
    dec = dec0 + rng.uniform(-4, 4, 20000)
    inside = healpix.angular_separation_deg(ra, dec, ra0, dec0) <= r
    pix = healpix.coarsen(healpix.healpix29(ra[inside], dec[inside]), 5)
    assert set(pix.tolist()) <= set(healpix.cone_pixels(ra0, dec0, r, 5).tolist())


def test_angular_separation_small_and_large_angles():
    # 1 arcsec along a meridian, and the antipode: exact values.
    assert abs(healpix.angular_separation_deg(10.0, 0.0, 10.0, 1 / 3600) * 3600 - 1) < 1e-9
    assert abs(healpix.angular_separation_deg(0.0, 45.0, 180.0, -45.0) - 180) < 1e-9
