"""Reference catalogue loading: formats, column recognition, Tycho-2 transformation, blends."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import Table
from conftest import SHARED_DATA

from ingest import RefcatOptions, load_refcat
from ingest.refcat import blended_flags, parse_mapping
from lcdb.errors import InputError


def _stars(rng, n=200):
    return {
        "RAJ2000": rng.uniform(100, 102, n),
        "DEJ2000": rng.uniform(20, 22, n),
        "BTmag": rng.uniform(9, 12, n),
    }


def test_tycho_bt_vt_converted_by_hog_2000(tmp_path, store):
    rng = np.random.default_rng(1)
    s = _stars(rng)
    s["VTmag"] = s["BTmag"] - rng.uniform(0.0, 1.5, s["BTmag"].size)
    s["e_BTmag"] = np.full(s["BTmag"].size, 0.05)
    s["e_VTmag"] = np.full(s["BTmag"].size, 0.04)
    Table(s).write(tmp_path / "tyc.fits")
    summary = load_refcat(store, tmp_path / "tyc.fits")
    assert summary["stars"] == 200 and "Tycho" in summary["source"]
    got = store.pl("SELECT ra, v, bv, v_err, bv_err FROM refcat ORDER BY ref_id")
    bt_vt = s["BTmag"] - s["VTmag"]
    # Official transformation (Hog et al. 2000); float32 storage: 1e-5 mag.
    np.testing.assert_allclose(got["v"], s["VTmag"] - 0.090 * bt_vt, atol=1e-5)
    np.testing.assert_allclose(got["bv"], 0.850 * bt_vt, atol=1e-5)
    np.testing.assert_allclose(got["bv_err"], 0.85 * np.hypot(0.05, 0.04), atol=1e-6)
    np.testing.assert_allclose(got["ra"], s["RAJ2000"])


def test_explicit_mapping_and_csv(tmp_path, store):
    rng = np.random.default_rng(2)
    s = _stars(rng)
    t = pa.table(
        {
            "alpha": s["RAJ2000"],
            "delta": s["DEJ2000"],
            "vv": s["BTmag"],
            "col": 0.5 + 0 * s["BTmag"],
        }
    )
    import pyarrow.csv as pacsv

    pacsv.write_csv(t, tmp_path / "cat.csv")
    with pytest.raises(InputError, match="no ra/dec"):
        load_refcat(store, tmp_path / "cat.csv")
    mapping = parse_mapping("ra=alpha,dec=delta,v=vv,bv=col")
    load_refcat(store, tmp_path / "cat.csv", RefcatOptions(columns=mapping))
    got = store.pl("SELECT v, bv FROM refcat ORDER BY ref_id")
    np.testing.assert_allclose(got["v"], s["BTmag"], atol=1e-5)
    with pytest.raises(InputError, match="not found"):
        load_refcat(store, tmp_path / "cat.csv", RefcatOptions(columns={"ra": "nope"}))
    with pytest.raises(InputError, match="unknown refcat column target"):
        RefcatOptions(columns={"colour": "x"})


def test_reload_replaces_and_bad_input_leaves_store_unchanged(tmp_path, store):
    rng = np.random.default_rng(3)
    s = _stars(rng)
    pq.write_table(
        pa.table({"ra": s["RAJ2000"], "dec": s["DEJ2000"], "v": s["BTmag"]}), tmp_path / "a.parquet"
    )
    load_refcat(store, tmp_path / "a.parquet")
    load_refcat(store, tmp_path / "a.parquet")
    assert store.count("refcat") == 200
    manifest = (store.root / "_manifest.json").read_bytes()
    bad = dict(ra=s["RAJ2000"].copy(), dec=s["DEJ2000"], v=s["BTmag"])
    bad["ra"][7] = np.nan
    pq.write_table(pa.table(bad), tmp_path / "bad.parquet")
    with pytest.raises(InputError, match="ra/dec"):
        load_refcat(store, tmp_path / "bad.parquet")
    (tmp_path / "corrupt.parquet").write_bytes(b"nonsense")
    with pytest.raises(InputError, match="cannot read"):
        load_refcat(store, tmp_path / "corrupt.parquet")
    assert (store.root / "_manifest.json").read_bytes() == manifest


def test_blended_flag_brighter_neighbour_within_radius():
    # A: V=10 with B (V=10.5) 20" away: B is brighter than A+2 -> A blended; A brighter than
    # B+2 -> B blended. C: V=9 alone. D: V=8 with E (V=13) 30" away: E fainter than D+2, so D
    # stays clean while E is blended. F is 200" from everything.
    ra = np.array([10.0, 10.0, 11.0, 12.0, 12.0, 13.0])
    dec = np.array([0.0, 20 / 3600, 0.0, 0.0, 30 / 3600, 0.0])
    v = np.array([10.0, 10.5, 9.0, 8.0, 13.0, 11.0])
    got = blended_flags(ra, dec, v, radius_arcsec=60.0, dmag=2.0)
    assert got.tolist() == [True, True, False, False, True, False]


def test_real_bigsky_catalogue(tmp_path, store):
    path = SHARED_DATA / "refcat" / "bigsky-v11.parquet"
    if not path.is_file():
        pytest.skip(f"real catalogue not present at {path}")
    summary = load_refcat(
        store,
        path,
        RefcatOptions(columns=parse_mapping("ra=ra_degrees,dec=dec_degrees,v=magnitude,bv=bv")),
    )
    assert summary["stars"] == 981_852
    # ~2,700 stars have no B-V in the Big Sky catalogue (its README).
    assert 975_000 < summary["with_bv"] < 981_852
    # The Pleiades: Alcyone (eta Tau, V=2.87) is within 0.1 deg of (56.87, 24.105).
    t = store.pl("SELECT v, name FROM refcat_cone(56.871, 24.105, 0.05) ORDER BY v LIMIT 1")
    assert abs(t["v"][0] - 2.87) < 0.05
