"""The matching kernels against slow, obviously correct versions."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from lcdb import healpix
from lcdb.healpix import angular_separation_deg
from variability import matching


def _one_per_group_slow(group, frame, sep):
    keep = np.zeros(group.size, bool)
    best = {}
    for i, (g, f, s) in enumerate(zip(group, frame, sep, strict=True)):
        if g < 0:
            continue
        if (g, f) not in best or s < sep[best[(g, f)]]:
            best[(g, f)] = i
    keep[list(best.values())] = True
    return keep


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-1, 4), st.integers(0, 3)), min_size=1, max_size=60))
def test_one_per_group_equals_slow(rows):
    group = np.array([g for g, _ in rows], np.int64) * 2**58  # object ids are ~2^58
    group[group < 0] = -1
    frame = np.array([f for _, f in rows], np.int64) + 1000
    sep = np.random.default_rng(len(rows)).permutation(len(rows)).astype(float)
    np.testing.assert_array_equal(
        matching.one_per_group(group, frame, sep), _one_per_group_slow(group, frame, sep)
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 6), st.integers(0, 3)), max_size=80),
)
def test_order_by_object_equals_slow(rows):
    """The counting-sort kernel orders rows and drops second detections exactly as
    one_per_group and a lexsort do (object rank 5 = no object; few separations: ties)."""
    obj = np.array([o for o, _, _ in rows], np.int64)
    frame = np.array([f for _, f, _ in rows], np.int64)
    sep = np.array([s for _, _, s in rows], float)
    fast = matching.order_by_object(obj, frame, sep, 5, 7)
    slow = matching.order_by_object_slow(obj, frame, sep, 5, 7)
    np.testing.assert_array_equal(fast[0], slow[0])
    np.testing.assert_array_equal(fast[1], slow[1])


def _nearest_slow(ra, dec, year, cat, radius_deg):
    idx = np.full(ra.size, -1)
    for i in range(ra.size):
        dt = year[i] - cat["epoch"]
        rt, dt_ = matching.propagate(cat["ra"], cat["dec"], cat["pmra"], cat["pmdec"], dt)
        s = angular_separation_deg(rt, dt_, ra[i], dec[i])
        j = int(np.argmin(s))
        if s[j] <= radius_deg:
            idx[i] = j
    return idx


def test_nearest_moving_equals_brute_force():
    rng = np.random.default_rng(8)
    n_cat = 300
    cat = {
        "ra": rng.uniform(10, 11, n_cat),
        "dec": rng.uniform(20, 21, n_cat),
        "pmra": np.where(rng.random(n_cat) < 0.1, rng.normal(0, 3000, n_cat), 0.0),
        "pmdec": np.where(rng.random(n_cat) < 0.1, rng.normal(0, 3000, n_cat), 0.0),
        "epoch": np.full(n_cat, 2000.0),
    }
    pick = rng.integers(0, n_cat, 2000)
    year = rng.uniform(2015, 2025, pick.size)
    ra, dec = matching.propagate(
        cat["ra"][pick], cat["dec"][pick], cat["pmra"][pick], cat["pmdec"][pick], year - 2000
    )
    ra = ra + rng.normal(0, 1e-4, pick.size)
    dec = dec + rng.normal(0, 1e-4, pick.size)
    r = 5 / 3600
    got, _ = matching.nearest_moving(ra, dec, year, cat, r)
    want = _nearest_slow(ra, dec, year, cat, r)
    np.testing.assert_array_equal(got, want)
    # Matching by HEALPix cell (fast movers are looked for as far as they travel) changes nothing.
    pre, _ = matching.nearest_moving(ra, dec, year, cat, r, index29=healpix.healpix29(ra, dec))
    np.testing.assert_array_equal(pre, want)
    # Fast movers (up to ~10"/yr here) are found at their epoch, not at their catalogue place.
    assert (got == pick).mean() > 0.99


def _nearest_tree(ra, dec, cat_ra, cat_dec, radius_deg):
    tree = cKDTree(matching.unit_vectors(cat_ra, cat_dec))
    return matching.nearest_within(tree, matching.unit_vectors(ra, dec), radius_deg)


@settings(max_examples=60, deadline=None)
@given(
    ra0=st.one_of(st.floats(0, 360), st.sampled_from([0.0, 359.9999])),
    dec0=st.one_of(st.floats(-90, 90), st.sampled_from([-90.0, 90.0, 41.8103, 0.0])),
    radius_arcsec=st.sampled_from([1.0, 10.0, 30.0, 120.0]),
    n_cat=st.integers(1, 400),
    seed=st.integers(0, 2**32 - 1),
)
def test_nearest_in_cells_equals_the_tree(ra0, dec0, radius_arcsec, n_cat, seed):
    """The cell kernel finds the same nearest star as the k-d tree, anywhere on the sphere (the
    poles, ra = 0/360 and dec = 41.81, where HEALPix pixels have 7 neighbours, among others),
    for catalogues from sparse to crowded (400 stars in a few radii: several per cell)."""
    rng = np.random.default_rng(seed)
    r = radius_arcsec / 3600
    span = rng.choice([3.0, 30.0]) * r
    cat_dec = np.clip(dec0 + rng.uniform(-span, span, n_cat), -90, 90)
    cos = np.maximum(np.cos(np.radians(cat_dec)), 1e-3)
    cat_ra = (ra0 + rng.uniform(-span, span, n_cat) / cos) % 360
    # points out to 1.5 radii of the stars, and anywhere in the patch
    pick = rng.integers(0, n_cat, 2000)
    ang = rng.uniform(0, 2 * np.pi, pick.size)
    rad = r * np.sqrt(rng.uniform(0, 2.25, pick.size))
    lon, lat = matching.propagate(
        cat_ra[pick], cat_dec[pick], rad * np.cos(ang) * 3.6e6, rad * np.sin(ang) * 3.6e6, 1.0
    )
    ok = np.abs(lat) < 90
    ra, dec = lon[ok], lat[ok]
    want_i, want_s = _nearest_tree(ra, dec, cat_ra, cat_dec, r)
    idx29 = healpix.healpix29(ra, dec)
    got_i, got_s = matching.nearest_in_cells(idx29, ra, dec, cat_ra, cat_dec, r)
    # Separations agree to 1e-6 of the radius (the tangent-plane expansion is good to < 1e-7);
    # the chosen star may differ only where two stars are equally near, or a star sits on the
    # radius, to that precision.
    tol = 1e-6 * radius_arcsec
    same = got_i == want_i
    both = (got_i >= 0) & (want_i >= 0)
    np.testing.assert_allclose(got_s[same & both], want_s[same & both], rtol=0, atol=tol)
    for k in np.flatnonzero(~same):
        if got_i[k] >= 0 and want_i[k] >= 0:
            assert abs(got_s[k] - want_s[k]) < tol
        else:
            assert abs(min(got_s[k], want_s[k]) - radius_arcsec) < tol


def test_kernels_take_read_only_arrays_and_refuse_unknown_ranks():
    """Arrow hands out read-only zero-copy arrays (a small objects file); the compiled kernels
    take them. A frame the frames table does not know gets a clear error, not a corrupt order."""
    import pyarrow as pa

    ra = pa.array([10.0, 10.001]).to_numpy()
    dec = pa.array([20.0, 20.0]).to_numpy()
    assert not ra.flags.writeable
    idx29 = pa.array(healpix.healpix29(ra, dec)).to_numpy()
    got, _ = matching.nearest_in_cells(idx29, ra, dec, ra, dec, 1 / 3600)
    np.testing.assert_array_equal(got, [0, 1])
    obj = pa.array([0, 1], pa.int64()).to_numpy()
    perm, keep = matching.order_by_object(obj, obj, pa.array([0.0, 0.0]).to_numpy(), 2, 2)
    np.testing.assert_array_equal(perm, [0, 1])
    assert keep.all()
    with pytest.raises(ValueError, match="frame_rank"):
        matching.order_by_object(np.array([0, 0]), np.array([0, -1]), np.zeros(2), 1, 2)


@given(
    st.lists(st.floats(0, 360, exclude_max=True), min_size=1, max_size=50),
    st.lists(st.floats(0, 360, exclude_max=True), min_size=1, max_size=50),
)
def test_wrap180_is_the_modulo_wrap(a: list[float], b: list[float]):
    """The fast ra-difference wrap gives the modulo formula's value: equal within -180..180, and
    at its ends (+180 and -180 name the same offset) either end."""
    n = min(len(a), len(b))
    d = np.array(a[:n]) - np.array(b[:n])
    ref = (d + 540.0) % 360.0 - 180.0
    got = matching.wrap180(d.copy())
    assert np.all(np.abs(got) <= 180.0)
    # 1e-9 deg: the modulo formula rounds (d + 540) once, wrap180 not at all
    inside = np.abs(np.abs(ref) - 180.0) > 1e-9
    np.testing.assert_allclose(got[inside], ref[inside], rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.abs(got[~inside]), 180.0, rtol=0, atol=1e-9)
