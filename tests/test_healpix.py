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


@settings(max_examples=25, deadline=None)
@given(
    ra0=st.floats(0, 360),
    dec0=st.floats(-89, 89),
    radius_arcsec=st.sampled_from([1.0, 10.0, 60.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_near_mask_keeps_every_true_neighbour(ra0, dec0, radius_arcsec, seed):
    """near_mask may keep extra points (it is a prefilter) but never drops one within the radius."""
    rng = np.random.default_rng(seed)
    r = radius_arcsec / 3600
    cat_ra = (ra0 + rng.uniform(-0.05, 0.05, 30)) % 360
    cat_dec = np.clip(dec0 + rng.uniform(-0.05, 0.05, 30), -89.9, 89.9)
    # points around the stars out to 2 radii, and some far away
    pick = rng.integers(0, 30, 3000)
    off = rng.uniform(-2 * r, 2 * r, (2, pick.size))
    dec = np.clip(cat_dec[pick] + off[1], -90, 90)
    ra = (cat_ra[pick] + off[0] / np.cos(np.radians(dec))) % 360
    keep = healpix.near_mask(healpix.healpix29(ra, dec), cat_ra, cat_dec, r)
    sep = np.min(
        healpix.angular_separation_deg(ra[:, None], dec[:, None], cat_ra[None], cat_dec[None]),
        axis=1,
    )
    assert keep[sep <= r].all()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 6), st.data(), st.floats(5.0, 600.0))
def test_margin_targets_mirror_margin_pixels(order, data, margin_arcsec):
    """What a partition sends to each neighbour's margin is exactly what that neighbour's margin
    holds inside it (the margin cache of `lcdb cluster` relies on it), corners and the base
    pixels' 7-neighbour vertices included."""
    pixel = data.draw(st.integers(0, 12 * 4**order - 1))
    cells, targets, m = healpix.margin_targets(pixel, order, margin_arcsec / 3600)
    assert set(targets.tolist()) == set(healpix.neighbour_pixels(pixel, order))
    shift = 2 * (m - order)
    for q in healpix.neighbour_pixels(pixel, order):
        ring, m_q = healpix.margin_pixels(q, order, margin_arcsec / 3600)
        assert m_q == m
        np.testing.assert_array_equal(np.sort(cells[targets == q]), ring[(ring >> shift) == pixel])


def test_margin_cache_survives_transactions_and_ignores_stale_files(tmp_path):
    """A margin file is read only for the exact files and width it was cut for (a partition
    rewritten since, or a run with another match radius, cuts it again from the files), and the
    store's garbage collection keeps the scratch directory between the jobs of one run."""
    import pyarrow as pa

    import lcdb
    from lcdb import manifest
    from variability import margins

    lcdb.init_store(tmp_path / "s", lcdb.StoreConfig(order=2))
    root = tmp_path / "s"
    margins.prepare(root)
    files = [str(root / "measurements" / "pixel=5" / "a.parquet")]
    width = 30 / 3600
    path = margins.margin_path(root, 5, files, width)
    t = pa.table({c: pa.array([1, 2], pa.int64()) for c in margins.DET_COLUMNS})
    t = t.append_column("target", pa.array([4, 6], pa.int64()))
    with pa.ipc.new_file(path, t.schema) as w:
        w.write_table(t)
    with manifest.transaction(root):  # a commit of another job collects garbage
        pass
    assert path.exists()
    got, missing = margins.read_margin(str(root), {5: files}, 4, width)
    assert missing == {} and sum(x.num_rows for x in got) == 1
    newer = [str(root / "measurements" / "pixel=5" / "b.parquet")]
    got, missing = margins.read_margin(str(root), {5: newer}, 4, width)
    assert got == [] and missing == {5: newer}
    got, missing = margins.read_margin(str(root), {5: files}, 4, 2 * width)  # another radius
    assert got == [] and missing == {5: files}
    margins.drop(root)
    assert not margins.scratch_dir(root).exists()
