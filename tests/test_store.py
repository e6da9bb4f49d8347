"""Store creation, opening, views and queries."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import lcdb
from ingest import ingest_paths
from lcdb import healpix, manifest
from lcdb.compact import compact
from lcdb.errors import InputError, StoreError


def test_init_creates_layout(tmp_path: Path):
    s = lcdb.init_store(tmp_path / "s", lcdb.StoreConfig(order=4))
    assert (s.root / "lcdb.toml").is_file()
    assert (s.root / "_manifest.json").is_file()
    for d in ("frames", "measurements", "refcat", "objects", "candidates"):
        assert (s.root / d).is_dir()
    assert lcdb.open(s.root).config.order == 4


def test_init_refuses_nonempty_dir_and_existing_store(tmp_path: Path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("data")
    with pytest.raises(StoreError, match="not empty"):
        lcdb.init_store(tmp_path / "x")
    lcdb.init_store(tmp_path / "s")
    with pytest.raises(StoreError, match="already an lcdb store"):
        lcdb.init_store(tmp_path / "s")


def test_config_rules_each_named():
    with pytest.raises(StoreError) as exc:
        lcdb.StoreConfig(order=99, match_radius_arcsec=-1)
    assert "order" in str(exc.value) and "match_radius_arcsec" in str(exc.value)


def test_open_rejects_non_store_and_newer_schema(tmp_path: Path, monkeypatch):
    with pytest.raises(StoreError, match="not an lcdb store"):
        lcdb.open(tmp_path)
    monkeypatch.delenv("LCDB_STORE", raising=False)
    with pytest.raises(StoreError, match="LCDB_STORE"):
        lcdb.open()
    s = lcdb.init_store(tmp_path / "s")
    cfg = (s.root / "lcdb.toml").read_text().replace("schema_version = 1", "schema_version = 99")
    (s.root / "lcdb.toml").write_text(cfg)
    with pytest.raises(StoreError, match="newer"):
        lcdb.open(s.root)


def test_open_from_environment(tmp_path: Path, monkeypatch):
    s = lcdb.init_store(tmp_path / "s")
    monkeypatch.setenv("LCDB_STORE", str(s.root))
    assert lcdb.open().root == s.root


def test_empty_store_views_have_schema(store):
    for view in ("frames", "measurements", "refcat", "objects", "candidates", "lightcurves"):
        assert store.sql(f"SELECT count(*) AS n FROM {view}").column("n")[0].as_py() == 0
    assert "mag_instr" in store.sql("SELECT * FROM measurements").column_names


def test_sql_is_read_only_and_parameters_are_bound(store, frames_dir):
    ingest_paths(store, [frames_dir])
    with pytest.raises(InputError, match="read-only"):
        store.sql("CREATE TABLE t AS SELECT 1")
    with pytest.raises(InputError, match="read-only"):
        store.sql("COPY (SELECT 1) TO 'x.csv'")
    with pytest.raises(InputError, match="SQL error"):
        store.sql("SELECT nonexistent FROM frames")
    t = store.sql("SELECT count(*) AS n FROM frames WHERE frame_name = $name", {"name": "f003"})
    assert t.column("n")[0].as_py() == 1


def _all_measurements(store) -> tuple[np.ndarray, np.ndarray]:
    t = store.sql("SELECT ra, dec FROM measurements")
    return t.column("ra").to_numpy(), t.column("dec").to_numpy()


def test_cone_search_equals_brute_force_and_prunes(store, frames_dir):
    ingest_paths(store, [frames_dir])
    ra, dec = _all_measurements(store)
    for ra0, dec0, r in [(120.0, 30.0, 1.0), (121.5, 31.0, 0.3), (118.0, 28.0, 2.0)]:
        truth = int((healpix.angular_separation_deg(ra, dec, ra0, dec0) <= r).sum())
        got = store.sql("SELECT count(*) AS n FROM cone_search($1, $2, $3)", [ra0, dec0, r])
        assert got.column("n")[0].as_py() == truth
    plan = store.sql("EXPLAIN ANALYZE SELECT count(*) FROM cone_search(120.0, 30.0, 0.2)")
    text = "\n".join(plan.column(1).to_pylist())
    n_files = len(store.files("measurements"))
    # Only the one or few partitions overlapping a 0.2 deg cone are opened, not all of them.
    assert f"Scanning Files: {n_files}/{n_files}" not in text


def test_lightcurve_by_position_and_sorted_in_time(store, frames_dir):
    ingest_paths(store, [frames_dir])
    first = pq.read_table(frames_dir / "f000.parquet")
    ra0, dec0 = first.column("RA")[5].as_py(), first.column("Dec")[5].as_py()
    lc = store.lightcurve_by_position(ra0, dec0, 2.0)
    # The star is on all 10 frames; positional noise (1e-5 deg = 0.04") is far below 2".
    assert lc.num_rows == 10
    mjd = lc.column("mjd").to_numpy()
    assert np.all(np.diff(mjd) > 0)
    empty = store.lightcurve_by_position(10.0, -60.0, 2.0)
    assert empty.num_rows == 0


def test_compaction_keeps_every_row_and_reduces_files(store, frames_dir):
    ingest_paths(store, [frames_dir])
    key = "SELECT frame_id, healpix_29, flux FROM measurements ORDER BY frame_id, healpix_29"
    before = store.sql(key)
    n_before = len(store.files("measurements"))
    s = compact(store, progress=False)
    assert len(store.files("measurements")) == len(store.pixels("measurements")) < n_before
    assert s.rows == before.num_rows
    assert store.sql(key).equals(before)
    assert len(store.files("frames")) == 1
    # Each compacted file is sorted by position; re-running is a no-op.
    for path in store.files("measurements"):
        idx = pq.read_table(path, columns=["healpix_29"]).column(0).to_numpy()
        assert np.all(np.diff(idx) >= 0)
    assert compact(store, progress=False).partitions == 0
    # Light curves still work after compaction.
    first = pq.read_table(frames_dir / "f000.parquet")
    lc = store.lightcurve_by_position(first["RA"][0].as_py(), first["Dec"][0].as_py(), 2.0)
    assert lc.num_rows == 10


def test_garbage_from_crashed_writer_is_invisible_and_collected(store, frames_dir):
    ingest_paths(store, [frames_dir])
    n = store.count("measurements")
    stray = store.root / "measurements" / "pixel=1" / "b99999999-deadbeef.parquet"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half a file")
    store.refresh()
    assert store.sql("SELECT count(*) AS n FROM measurements").column("n")[0].as_py() == n
    with manifest.transaction(store.root):
        pass
    assert not stray.exists()


def test_writer_lock_excludes_a_second_writer(store):
    with manifest.transaction(store.root):
        with pytest.raises(StoreError, match="another lcdb process"):
            with manifest.transaction(store.root):
                pass


def test_good_flags_ignore_only_salt_and_pepper(store):
    from lcdb.flags import REJECT, Flag

    got = store.sql(
        "SELECT good_flags(0) AS a, good_flags(4) AS b, good_flags(2) AS c, good_flags(260) AS d"
    ).to_pylist()[0]
    assert got == {"a": True, "b": True, "c": False, "d": False}
    # The SQL mask and the Python one are the same bits.
    assert int(REJECT) == 1019 and not REJECT & Flag.SALT_PEPPER


def test_refresh_repoints_the_views_on_the_same_connection(store, frames_dir):
    """After writes, Store.refresh keeps its DuckDB connection and the views (base relations and
    the views of sql/views.sql on top of them) see exactly the new files: rows ingested later
    are counted, and files a compaction deleted are never read again (reading one would fail)."""
    con = store.con
    assert store.sql("SELECT count(*) AS n FROM measurements")["n"][0].as_py() == 0
    ingest_paths(store, [frames_dir])
    n = store.count("measurements")
    assert n > 0 and store.con is con
    assert store.sql("SELECT count(*) AS n FROM measurements")["n"][0].as_py() == n
    old = set(store.files("measurements"))
    compact(store, progress=False)
    assert not any(Path(p).exists() for p in old - set(store.files("measurements")))
    assert store.con is con
    assert store.sql("SELECT count(*) AS n FROM measurements")["n"][0].as_py() == n
    frames = store.sql("SELECT count(*) AS n FROM frames WHERE n_meas > 0")["n"][0].as_py()
    assert frames == store.count("frames")


def test_write_parquet_in_slices_equals_the_reordered_table(tmp_path: Path):
    """Writing ``table.take(order)`` a slice at a time (the assignment's rewrite) gives the same
    rows, row groups and statistics as taking first and writing once; an empty order writes an
    empty file with the schema; a slice that is not a multiple of the row group is refused."""
    import pyarrow as pa

    from lcdb.tableio import ROW_GROUP_ROWS, read_file, write_parquet

    rng = np.random.default_rng(7)
    n = 3 * ROW_GROUP_ROWS + 123  # a short last group, and a slice boundary inside the table
    table = pa.table(
        {
            "object_id": rng.integers(0, 1000, n),
            "flux": rng.normal(100, 1, n).astype(np.float32),
            "flags": rng.integers(0, 4, n).astype(np.int32),
        }
    )
    order = rng.permutation(n)
    once, sliced = tmp_path / "once.parquet", tmp_path / "sliced.parquet"
    write_parquet(table.take(pa.array(order)), once)
    write_parquet(table, sliced, order=order, slice_rows=ROW_GROUP_ROWS)
    assert read_file(sliced).equals(read_file(once))
    a, b = pq.ParquetFile(once).metadata, pq.ParquetFile(sliced).metadata
    assert a.num_row_groups == b.num_row_groups == 4
    for g in range(4):
        ga, gb = a.row_group(g), b.row_group(g)
        sa, sb = ga.column(0).statistics, gb.column(0).statistics
        assert (sa.min, sa.max, ga.num_rows) == (sb.min, sb.max, gb.num_rows)
    empty = tmp_path / "empty.parquet"
    write_parquet(table, empty, order=np.zeros(0, np.int64))
    assert read_file(empty).num_rows == 0 and read_file(empty).schema.equals(table.schema)
    with pytest.raises(ValueError, match="multiple of"):
        write_parquet(table, tmp_path / "x.parquet", order=order, slice_rows=1000)
