"""The matching kernels against slow, obviously correct versions."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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
    # The HEALPix-cell prefilter (fast movers are looked for as far as they travel) and its
    # dense-catalogue variant change nothing.
    idx29 = healpix.healpix29(ra, dec)
    for sparse in (True, False):
        pre, _ = matching.nearest_moving(ra, dec, year, cat, r, index29=idx29, sparse=sparse)
        np.testing.assert_array_equal(pre, want)
    # Fast movers (up to ~10"/yr here) are found at their epoch, not at their catalogue place.
    assert (got == pick).mean() > 0.99
