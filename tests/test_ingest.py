"""Ingest: validation, idempotency, replacement, bad input, containers, atomicity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from conftest import make_stars, write_catalog

import lcdb
from ingest import IngestOptions, ingest_paths, read_catalog
from lcdb.errors import InputError

QUIET = IngestOptions(progress=False)


def _manifest_bytes(store) -> bytes:
    return (store.root / "_manifest.json").read_bytes()


def _files_on_disk(store) -> set[str]:
    return {str(p) for p in store.root.rglob("*.parquet")}


def test_ingest_counts_units_and_frame_metadata(store, frames_dir):
    s = ingest_paths(store, [frames_dir], QUIET)
    assert (s.frames, s.measurements, len(s.skipped), len(s.rejected)) == (10, 4000, 0, 0)
    assert store.count("measurements") == 4000
    f = store.pl("SELECT * FROM frames ORDER BY frame_id")
    assert f["frame_id"].to_list() == list(range(1, 11))
    # Stored time is mid-exposure: MJD-OBS + EXPTIME/2 (30 s) in days.
    np.testing.assert_allclose(f["mjd"][0], 60000.0 + 15 / 86400, rtol=0, atol=1e-9)
    # Fluxes are stored per second: the catalogue's ADU divided by EXPTIME.
    cat = pq.read_table(frames_dir / "f000.parquet")
    stored = store.pl("SELECT flux FROM measurements WHERE frame_id = 1")["flux"].to_numpy()
    np.testing.assert_allclose(np.sort(stored), np.sort(cat["flux"].to_numpy() / 30.0), rtol=1e-6)
    # Every measurement carries its order-29 index and sits in the partition it names.
    bad = store.sql(
        "SELECT count(*) AS n FROM measurements WHERE (healpix_29 >> 48) != pixel"
    )  # 2*(29-5) = 48
    assert bad.column("n")[0].as_py() == 0


def test_ingest_is_idempotent(store, frames_dir):
    ingest_paths(store, [frames_dir], QUIET)
    before = _manifest_bytes(store)
    s = ingest_paths(store, [frames_dir, frames_dir / "f001.parquet"], QUIET)
    assert s.frames == 0 and len(s.skipped) == 11
    assert "already ingested as frame_id" in s.skipped[0][1]
    assert _manifest_bytes(store) == before  # no commit at all
    assert store.count("measurements") == 4000


def test_replace_swaps_rows_without_doubling(store, frames_dir):
    ingest_paths(store, [frames_dir], QUIET)
    ids_before = store.pl("SELECT frame_id, sha256 FROM frames ORDER BY frame_id")
    s = ingest_paths(
        store, [frames_dir / "f004.parquet"], IngestOptions(replace=True, progress=False)
    )
    assert s.replaced == 1 and s.frames == 1
    after = store.pl("SELECT frame_id, sha256 FROM frames ORDER BY frame_id")
    assert after.equals(ids_before)  # same frame keeps its id
    counts = store.pl("SELECT frame_id, count(*) AS n FROM measurements GROUP BY 1 ORDER BY 1")
    assert counts["n"].to_list() == [400] * 10


def test_replace_by_explicit_frameid_with_new_content(tmp_path, store):
    rng = np.random.default_rng(5)
    stars = make_stars(rng, 50, 10.0, 5.0, 1.0)
    a = write_catalog(tmp_path / "a.parquet", stars, rng, 60000.0, frame_name="night1-0001")
    ingest_paths(store, [a], QUIET)
    small = {k: v[:20] for k, v in stars.items()}
    b = write_catalog(tmp_path / "b.parquet", small, rng, 60000.0, frame_name="night1-0001")
    s = ingest_paths(store, [b], QUIET)
    assert s.frames == 0 and "different content" in s.rejected[0][1]
    s = ingest_paths(store, [b], IngestOptions(replace=True, progress=False))
    assert s.replaced == 1
    assert store.count("measurements") == 20 and store.count("frames") == 1


BAD_CASES = {
    "missing_column": dict(drop_columns=("flux_err",)),
    "missing_keyword": dict(extra_meta={"EXPTIME": ""}),
    "bad_keyword": dict(extra_meta={"NAXIS1": "wide"}),
}


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_file_is_reported_good_ones_land(tmp_path, store, case):
    rng = np.random.default_rng(6)
    stars = make_stars(rng, 30, 50.0, 0.0, 1.0)
    good = write_catalog(tmp_path / "good.parquet", stars, rng, 60000.0)
    bad = write_catalog(tmp_path / "bad.parquet", stars, rng, 60001.0, **BAD_CASES[case])
    s = ingest_paths(store, [good, bad], QUIET)
    assert s.frames == 1 and len(s.rejected) == 1
    path, reason = s.rejected[0]
    assert path.endswith("bad.parquet") and reason


def test_each_kind_of_bad_input_names_file_and_problem(tmp_path):
    rng = np.random.default_rng(7)
    stars = make_stars(rng, 30, 50.0, 0.0, 1.0)
    cases = {}
    cases["empty"] = tmp_path / "empty.parquet"
    cases["empty"].write_bytes(b"")
    cases["corrupt"] = tmp_path / "corrupt.parquet"
    cases["corrupt"].write_bytes(b"PAR1 this is not parquet")
    p = write_catalog(tmp_path / "nan.parquet", stars, rng, 60000.0)
    t = pq.read_table(p)
    ra = t["RA"].to_numpy().copy()
    ra[3] = np.nan
    pq.write_table(t.set_column(0, "RA", pa.array(ra)), p)
    cases["nan"] = p
    p = write_catalog(tmp_path / "range.parquet", stars, rng, 60000.0)
    t = pq.read_table(p)
    dec = t["Dec"].to_numpy().copy()
    dec[0] = 95.0
    pq.write_table(t.set_column(1, "Dec", pa.array(dec)), p)
    cases["range"] = p
    zero = {k: v[:0] for k, v in stars.items()}
    cases["norows"] = write_catalog(tmp_path / "norows.parquet", zero, rng, 60000.0)
    expected = {
        "empty": "empty file",
        "corrupt": "cannot read",
        "nan": "non-finite",
        "range": "out of range",
        "norows": "no rows",
    }
    for name, path in cases.items():
        with pytest.raises(InputError) as exc:
            read_catalog(path)
        assert str(path) in str(exc.value) and expected[name] in str(exc.value), name


def test_strict_lands_nothing(tmp_path, store, frames_dir):
    bad = tmp_path / "frames" / "zz_bad.parquet"
    bad.write_bytes(b"garbage")
    before = _manifest_bytes(store)
    with pytest.raises(InputError, match="--strict"):
        ingest_paths(store, [frames_dir], IngestOptions(strict=True, progress=False))
    assert _manifest_bytes(store) == before
    store.refresh()
    assert store.sql("SELECT count(*) AS n FROM measurements").column("n")[0].as_py() == 0
    # Without --strict the 10 good frames land and the bad one is reported.
    s = ingest_paths(store, [frames_dir], QUIET)
    assert s.frames == 10 and len(s.rejected) == 1


def test_folder_without_catalogues_and_missing_path(tmp_path, store):
    (tmp_path / "nothing").mkdir()
    (tmp_path / "nothing" / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="holds no catalogues"):
        ingest_paths(store, [tmp_path / "nothing"], QUIET)
    with pytest.raises(InputError, match="no such file"):
        ingest_paths(store, [tmp_path / "absent"], QUIET)


def test_fits_and_ecsv_containers_with_date_obs_and_magnitudes(tmp_path, store):
    rng = np.random.default_rng(8)
    n = 25
    ra, dec = rng.uniform(200, 201, n), rng.uniform(-30, -29, n)
    mag = rng.uniform(10, 13, n)
    base = dict(x=rng.uniform(0, 100, n), y=rng.uniform(0, 100, n), flags=np.zeros(n, int))
    t = Table(dict(RA=ra, DEC=dec, MAG=mag, MAG_ERR=np.full(n, 0.01), **base))
    hdr = fits.Header()
    for k, v in dict(
        EXPTIME=10.0,
        FILTER="V",
        CHANNEL="mst2",
        IMNAXIS1=9576,
        IMNAXIS2=6388,
        FRAMEID="fits-frame",
    ).items():
        hdr[k] = v
    hdr["DATE-OBS"] = "2024-01-01T00:00:00"
    fits.HDUList([fits.PrimaryHDU(header=hdr), fits.BinTableHDU(t)]).writeto(tmp_path / "a.fits")
    e = Table(dict(ra=ra, dec=dec, flux=10 ** (-0.4 * mag), flux_err=np.full(n, 1e-6), **base))
    e.meta = dict(
        **{"MJD-OBS": 60310.5}, EXPTIME=20.0, FILTER="V", CHANNEL="mst2", NAXIS1=100, NAXIS2=100
    )
    e.write(tmp_path / "b.ecsv", format="ascii.ecsv")
    s = ingest_paths(store, [tmp_path], QUIET)
    assert s.frames == 2, s.rejected
    f = store.pl("SELECT frame_name, mjd, naxis1 FROM frames ORDER BY frame_name")
    assert f["frame_name"].to_list() == ["b", "fits-frame"]
    # 2024-01-01T00:00 UTC is MJD 60310.0; mid-exposure adds 5 s.
    np.testing.assert_allclose(f["mjd"][1], 60310.0 + 5 / 86400, atol=1e-9)
    assert f["naxis1"][1] == 9576
    # mag -> flux: -2.5 log10(flux / exptime) = mag + 2.5 log10(exptime).
    m = store.pl(
        "SELECT mag_instr FROM measurements JOIN frames USING (frame_id) "
        "WHERE frame_name = 'fits-frame' ORDER BY mag_instr"
    )["mag_instr"].to_numpy()
    np.testing.assert_allclose(m, np.sort(mag) + 2.5 * np.log10(10.0), atol=1e-5)


def test_one_file_per_touched_partition_per_batch(tmp_path, store):
    rng = np.random.default_rng(9)
    stars = make_stars(rng, 300, 80.0, 60.0, 8.0)
    d = tmp_path / "many"
    d.mkdir()
    for i in range(40):
        write_catalog(d / f"f{i:03d}.parquet", stars, rng, 60000.0 + i)
    s = ingest_paths(store, [d], IngestOptions(batch_frames=20, progress=False))
    n_pix = len(store.pixels("measurements"))
    assert s.batches == 2
    assert len(store.files("measurements")) <= 2 * n_pix
    assert len(store.files("frames")) == 2


def test_batches_close_at_the_row_limit(tmp_path, store):
    """Frames of many detections must not pile up in one batch (memory bounded by rows)."""
    rng = np.random.default_rng(10)
    stars = make_stars(rng, 300, 80.0, 60.0, 8.0)
    d = tmp_path / "rows"
    d.mkdir()
    for i in range(12):
        write_catalog(d / f"f{i:03d}.parquet", stars, rng, 60000.0 + i)
    s = ingest_paths(store, [d], IngestOptions(batch_frames=200, batch_rows=1000, progress=False))
    per_frame = store.count("measurements") // 12
    # each batch closes at the frame that reaches 1000 rows: ceil(1000 / rows per frame) frames
    frames_per_batch = -(-1000 // per_frame)
    assert s.batches == -(-12 // frames_per_batch)
    assert store.count("frames") == 12


_CRASH_SCRIPT = """
import sys
import lcdb
from ingest import IngestOptions, ingest_paths
store = lcdb.open(sys.argv[1])
ingest_paths(store, [sys.argv[2]], IngestOptions(batch_frames=5, progress=False))
"""


def _consistent(store_root: Path) -> tuple[int, int]:
    s = lcdb.open(store_root)
    per_frame = s.pl(
        "SELECT f.frame_id, f.n_meas, count(m.frame_id) AS n FROM frames f "
        "LEFT JOIN measurements m USING (frame_id) GROUP BY ALL"
    )
    orphans = s.sql(
        "SELECT count(*) AS n FROM measurements WHERE frame_id NOT IN (SELECT frame_id FROM frames)"
    )
    # Every visible frame is whole, and no measurement is visible without its frame.
    assert (per_frame["n"] == per_frame["n_meas"]).all()
    assert orphans.column("n")[0].as_py() == 0
    dup = s.sql("SELECT count(*) - count(DISTINCT sha256) AS d FROM frames")
    assert dup.column("d")[0].as_py() == 0
    return s.count("frames"), s.count("measurements")


def test_kill_9_during_ingest_then_rerun(tmp_path):
    rng = np.random.default_rng(10)
    stars = make_stars(rng, 3000, 150.0, 10.0, 10.0)
    d = tmp_path / "frames"
    d.mkdir()
    for i in range(60):
        write_catalog(d / f"f{i:03d}.parquet", stars, rng, 60000.0 + i / 100)
    root = tmp_path / "store"
    lcdb.init_store(root)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    counts = []
    for _ in range(3):
        version = json.loads((root / "_manifest.json").read_text())["version"]
        proc = subprocess.Popen([sys.executable, "-c", _CRASH_SCRIPT, str(root), str(d)], env=env)
        # Kill as soon as one more batch has committed: the process is then writing the next.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if json.loads((root / "_manifest.json").read_text())["version"] > version:
                break
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        counts.append(_consistent(root)[0])
    # The kills landed mid-run: some frames in, not all (batches of 5 frames).
    assert 0 < counts[0] < 60
    subprocess.run([sys.executable, "-c", _CRASH_SCRIPT, str(root), str(d)], env=env, check=True)
    assert _consistent(root) == (60, 60 * 3000)
    live = json.loads((root / "_manifest.json").read_text())
    listed = {e["path"] for es in live["files"].values() for e in es}
    on_disk = {str(p.relative_to(root)) for p in root.rglob("*.parquet")}
    assert on_disk == listed  # garbage of the killed runs was collected
