"""Benchmark of the store: ingest, compaction, light curves, cone search, aggregation, size, memory.

Generates N frames x M stars of per-frame catalogues (a 10x10 deg Mini-MegaTORTORA-like field
with pointing jitter), then measures, on this machine:

- ingest rate end to end (catalogue files -> committed store), in a subprocess, with its peak RSS,
  at a quarter of the frames and at all of them (peak memory must not grow with the frames);
- compaction rate;
- light curve by position (warm, median of many), through ``Store.lightcurve_by_position``;
- a 1-degree cone search through the ``cone_search`` macro;
- a full per-star GROUP BY aggregation (stars keyed by their order-18 pixel until objects exist);
- bytes per stored measurement.

Usage: ``python bench/store.py [--frames 1000 --stars 10000] [--dir DIR]`` (10^7 measurements;
``--frames 10000`` for 10^8).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import lcdb
from lcdb.compact import compact


def generate(out: Path, n_frames: int, n_stars: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Write ``n_frames`` Parquet catalogues of the same field; returns star positions."""
    rng = np.random.default_rng(seed)
    ra0, dec0, size = 150.0, 40.0, 10.0
    ra = ra0 + rng.uniform(-size / 2, size / 2, n_stars) / np.cos(np.radians(dec0))
    dec = dec0 + rng.uniform(-size / 2, size / 2, n_stars)
    mag = 8 + 6 * rng.power(3.0, n_stars)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(n_frames):
        keep = rng.random(n_stars) < 0.97  # a few stars missed on each frame
        n = int(keep.sum())
        flux = 10 ** (-0.4 * (mag[keep] - 25)) * 30
        err = np.sqrt(flux + 500.0)
        table = pa.table(
            {
                "ra": ra[keep] + rng.normal(0, 2e-5, n),
                "dec": dec[keep] + rng.normal(0, 2e-5, n),
                "x": rng.uniform(0, 2560, n).astype(np.float32),
                "y": rng.uniform(0, 2160, n).astype(np.float32),
                "flux": (flux + rng.normal(0, 1, n) * err).astype(np.float32),
                "flux_err": err.astype(np.float32),
                "flags": (rng.random(n) < 0.02).astype(np.int32) * 16,
                "fwhm": rng.normal(2.5, 0.1, n).astype(np.float32),
                "background": rng.normal(1000, 5, n).astype(np.float32),
            }
        ).replace_schema_metadata(
            {
                "MJD-OBS": repr(59000 + i * 0.01),
                "EXPTIME": "30",
                "FILTER": "clear",
                "CHANNEL": "ch1",
                "NAXIS1": "2560",
                "NAXIS2": "2160",
            }
        )
        pq.write_table(table, out / f"frame{i:06d}.parquet")
    return ra, dec


_INGEST = """
import json, resource, sys, time, logging
import lcdb
from ingest import IngestOptions, ingest_paths
store = lcdb.open(sys.argv[1])
t = time.perf_counter()
s = ingest_paths(store, sys.argv[2:], IngestOptions(progress=False))
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out = {"seconds": dt, "measurements": s.measurements, "frames": s.frames, "rss_mb": rss}
print(json.dumps(out))
"""


def ingest(store: Path, files: list[Path]) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _INGEST, str(store), *map(str, files)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_ms(fn, n: int) -> float:
    fn()  # warm
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=1000)
    p.add_argument("--stars", type=int, default=10_000)
    p.add_argument("--order", type=int, default=5)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", type=Path, default=None, help="work folder (default: a temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    args = p.parse_args(argv)
    work = args.dir or Path(tempfile.mkdtemp(prefix="lcdb-bench-"))
    cats = work / "catalogues"
    t = time.perf_counter()
    ra, dec = generate(cats, args.frames, args.stars, args.seed)
    n_meas_est = int(args.frames * args.stars * 0.97)
    print(
        f"generated {args.frames} catalogues (~{n_meas_est:,} measurements) "
        f"in {time.perf_counter() - t:.1f} s"
    )

    files = sorted(cats.glob("*.parquet"))
    quarter = files[: max(1, len(files) // 4)]
    small = work / "store_quarter"
    lcdb.init_store(small, lcdb.StoreConfig(order=args.order))
    r_small = ingest(small, quarter)
    root = work / "store"
    lcdb.init_store(root, lcdb.StoreConfig(order=args.order))
    r = ingest(root, files)
    print(
        f"ingest: {r['measurements'] / r['seconds'] / 1e6:.2f} M measurements/s end to end "
        f"({r['measurements']:,} in {r['seconds']:.1f} s); peak RSS {r['rss_mb']:.0f} MB "
        f"for {r['frames']} frames vs {r_small['rss_mb']:.0f} MB for {r_small['frames']}"
    )
    shutil.rmtree(small)

    store = lcdb.open(root)
    n = store.count("measurements")
    size = sum(f.stat().st_size for f in (root / "measurements").rglob("*.parquet"))
    print(
        f"before compaction: {len(store.files('measurements'))} files, "
        f"{size / n:.1f} bytes/measurement"
    )
    t = time.perf_counter()
    s = compact(store, progress=False)
    dt = time.perf_counter() - t
    size = sum(f.stat().st_size for f in (root / "measurements").rglob("*.parquet"))
    print(
        f"compaction: {s.rows / dt / 1e6:.2f} M rows/s ({s.files_before} -> {s.files_after} "
        f"files); {size / n:.1f} bytes/measurement on disk after"
    )

    rng = np.random.default_rng(args.seed + 1)
    picks = rng.integers(0, ra.size, 50)
    it = iter(np.tile(picks, 100))

    def lc_pos():
        i = next(it)
        return store.lightcurve_by_position(ra[i], dec[i], 3.0)

    n_pts = lc_pos().num_rows
    print(f'light curve by position (r=3"): {median_ms(lc_pos, 50):.1f} ms median ({n_pts} points)')
    print("light curve by object: needs objects (lcdb cluster): see bench/pipeline.py")
    cone = "SELECT count(*) FROM cone_search(150.0, 40.0, 1.0)"
    rows = store.sql(cone).column(0)[0].as_py()
    print(f"cone search r=1 deg: {median_ms(lambda: store.sql(cone), 5):.0f} ms ({rows:,} rows)")
    agg = (
        "SELECT healpix_29 >> 22 AS star, count(*) AS n, avg(flux) AS m, stddev(flux) AS s, "
        "min(flux), max(flux) FROM measurements GROUP BY 1"
    )
    store.sql("SELECT count(*) FROM (" + agg + ")")
    t = time.perf_counter()
    groups = store.sql("SELECT count(*) FROM (" + agg + ")").column(0)[0].as_py()
    dt = time.perf_counter() - t
    print(
        f"per-star GROUP BY (count, avg, stddev, min, max): {n / dt / 1e6:.1f} M rows/s "
        f"({groups:,} groups)"
    )
    if not (args.keep or args.dir):
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
