"""Benchmark of ``lcdb find-variables`` at survey scale, and of its statistics against light-curve.

1. **find-variables.** Simulates a survey with the catalogue-level simulator (default: 10^6 stars
   seen on 105 frames, ~10^8 measurements), ingests it, clusters and calibrates it (each stage in
   its own process through bench/pipeline.py's ``run_stage``; find-variables needs objects and
   calibrated frames, not colours or refinement), then runs ``find_variables`` in its own process
   and prints its wall time, CPU time (user + system, with its workers': less sensitive than the
   wall time to other work on the machine), peak RSS (ru_maxrss of that process and of its
   workers), objects/s and measurements/s. Goal (issue 8): at most 2 minutes and bounded memory
   on 2 cores for 10^6 objects and 10^8 measurements.

   The camera is the Mini-SiTian preset (0.86"/px) on a square detector scaled with the number
   of stars (40,000 px, i.e. 9.6 x 9.6 deg, for 10^6 stars): ~10^4 stars per deg^2, crowded like
   a low-latitude field but with few blends at 2" seeing. Stars go down to 0.25 mag above the
   SNR-5 limit, so nearly every star is detected on every frame (objects x frames ~
   measurements). The store uses a 2" match radius (the default 30" suits 15.8" MMT pixels) and
   ingest batches of ~10^7 rows (``--batch-frames``; the default 200 frames of 10^6 rows each
   would hold 2 x 10^8 rows in memory). ``--fv-jobs 2`` runs find-variables' partitions and
   period searches in two worker processes instead of one process with DuckDB on both cores.
   At full size the run takes ~15 minutes (simulation ~3, ingest ~1.5, clustering ~5,
   find-variables ~2) and ~9 GB of disk (6 GB of simulated catalogues, deleted once ingested).

2. **Statistics throughput, one core.** On the objects of one partition (``--lc-objects``, the
   most populated one), times lcdb's per-object statistics (sql/varstats.sql: N, mean, weighted
   mean, std, MAD, reduced chi2, IQR, eta, Stetson J and K, 5-95% amplitude, time span) with
   DuckDB on one thread, both as find-variables runs them (from the store's files, calibration
   included) and on the same good points already in memory, and the ``light-curve`` package's
   Extractor of the equivalent features (n_jobs=1, Arrow input) on those points; prints both
   rates in light curves per second and their ratio (the issue quotes ~5,000 per second per
   core for light-curve), and the largest differences between the two on every shared statistic
   (the quantile-based ones also against DuckDB's exact ``quantile_cont`` and ``mad``, to
   separate the estimator from the definition).

Part 2 needs the optional extra ``bench`` (``pip install -e ".[bench]"``: ``light-curve``);
``--no-compare`` skips it. The machine is shared: compare figures of one run, not across runs.

Usage::

    python bench/findvars.py [--frames 105 --stars 1000000] [--dir DIR] [--fv-jobs 2]
    python bench/findvars.py --frames 30 --stars 30000          # quick run (~1 minute)
    python bench/findvars.py --dir DIR --reuse store [--profile]   # again on DIR/store as is

Without ``--dir`` everything goes to a temporary folder that is deleted at the end; with
``--dir`` the store is kept (``--clean`` deletes DIR at the end), the simulated catalogues only
with ``--keep-survey`` (then ``--reuse survey`` ingests them again without simulating).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run as a script, this directory is sys.path[0]: bench/pipeline.py's stage runner is importable.
from pipeline import run_stage

_FIND = """
import cProfile, io, json, pstats, resource, sys, time
import lcdb
from lcdb.runner import RunnerOptions
from variability.findvars import find_variables
store = lcdb.open(sys.argv[1])
opts = RunnerOptions(workers=int(sys.argv[2]), progress=False)
prof = cProfile.Profile() if sys.argv[3] == "1" else None
t = time.perf_counter()
if prof:
    prof.enable()
summary = find_variables(store, options=opts)
if prof:
    prof.disable()
dt = time.perf_counter() - t
if prof:
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(30)
    print(out.getvalue(), file=sys.stderr)
me = resource.getrusage(resource.RUSAGE_SELF)
kids = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu = me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime
print(json.dumps({"seconds": dt, "cpu_s": cpu, "rss_mb": me.ru_maxrss / 1024,
                  "workers_rss_mb": kids.ru_maxrss / 1024, **summary}))
"""

#: lcdb statistic -> (light-curve feature, factor applied to it).
_SHARED = {
    "n": ("ObservationCount", 1.0),
    "mean_mag": ("Mean", 1.0),
    "wmean_mag": ("WeightedMean", 1.0),
    "std": ("StandardDeviation", 1.0),
    "mad_sigma": ("MedianAbsoluteDeviation", 1.4826),
    "chi2_red": ("ReducedChi2", 1.0),
    "iqr": ("InterPercentileRange(0.25)", 1.0),
    "amplitude": ("InterPercentileRange(0.05)", 1.0),
    "eta": ("Eta", 1.0),
    "stetson_k": ("StetsonK", 1.0),
    "time_span": ("Duration", 1.0),
}


def camera_for(stars: int, naxis: int | None):
    """The Mini-SiTian camera on a square detector holding ~10^4 stars per deg^2."""
    from lcdb.sim.camera import PRESETS

    side = naxis or max(2000, round(40_000 * math.sqrt(stars / 1e6)))
    return dataclasses.replace(PRESETS["mst"], naxis1=side, naxis2=side)


def simulate(args: argparse.Namespace, sim: Path) -> tuple[int, float]:
    """Simulate the survey into ``sim``; returns (detections, seconds)."""
    from lcdb.sim import noise
    from lcdb.sim.survey import SurveyConfig, simulate_survey

    cam = camera_for(args.stars, args.naxis)
    vmax = args.vmax or round(noise.limiting_mag(cam, 5.0, airmass=1.2) - 0.25, 2)
    t = time.perf_counter()
    res = simulate_survey(
        SurveyConfig(
            camera=cam, n_frames=args.frames, n_stars=args.stars, seed=args.seed, vmax=vmax
        ),
        sim,
        progress=False,
        overwrite=True,
    )
    dt = time.perf_counter() - t
    print(
        f"simulated {res.n_frames} frames of {cam.naxis1} px ({cam.width_deg:.1f} deg), "
        f"{res.n_stars:,} stars to V = {vmax}, {res.n_detections:,} detections in {dt:.0f} s "
        f"({res.n_detections / dt / 1e6:.2f} M/s)",
        flush=True,
    )
    return res.n_detections, dt


def build_store(args: argparse.Namespace, work: Path) -> Path:
    """Simulate (unless ``--reuse survey``), ingest, cluster and calibrate; print the figures."""
    import pyarrow.parquet as pq

    import lcdb

    sim, store = work / "survey", work / "store"
    frames = sorted((sim / "frames").glob("*.parquet"))
    if args.reuse == "survey" and frames:
        n_meas = sum(pq.read_metadata(f).num_rows for f in frames)
        print(f"reusing {len(frames)} simulated frames, {n_meas:,} detections")
    else:
        n_meas, _ = simulate(args, sim)
        frames = sorted((sim / "frames").glob("*.parquet"))
    if store.exists():
        shutil.rmtree(store)
    # Ingest holds a batch of frames in memory: ~10^7 rows, not the default 200 frames (10^6-row
    # frames would make it 2 x 10^8 rows, ~45 GB).
    batch = args.batch_frames or max(1, round(1e7 / (n_meas / len(frames))))
    config = lcdb.StoreConfig(order=args.order, match_radius_arcsec=args.radius, batch_frames=batch)
    lcdb.init_store(store, config)
    for stage in ("ingest", "cluster", "calibrate"):
        r = run_stage(store, stage, args.jobs, sim)
        rate = (
            f"{lcdb.open(store).count('frames') / r['seconds']:.0f} frames/s"
            if stage == "calibrate"
            else f"{n_meas / r['seconds'] / 1e6:.2f} M measurements/s"
        )
        print(f"{stage:<15} {r['seconds']:7.1f} s   peak {r['rss_mb']:6.0f} MB   {rate}")
    if not args.keep_survey:
        shutil.rmtree(sim)
    return store


def run_find_variables(store: Path, workers: int, profile: bool) -> dict:
    """find_variables in a fresh process: seconds, peak RSS (own and workers'), summary."""
    out = subprocess.run(
        [sys.executable, "-c", _FIND, str(store), str(workers), "1" if profile else "0"],
        check=True,
        capture_output=True,
        text=True,
    )
    if profile:
        print(out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _points_and_stats_sql() -> tuple[str, str]:
    """sql/varstats.sql split into its good points and the statistics over a table ``pts``."""
    from lcdb import sqlfiles

    sql = sqlfiles.load("varstats")
    head, rest = sql.split("\nmoments AS (", 1)
    assert "points AS (" in head, "sql/varstats.sql: no points CTE before moments"
    points = head.rstrip().rstrip(",") + "\nSELECT * FROM points"
    return points, "WITH points AS (SELECT * FROM pts),\nmoments AS (" + rest


def _best(repeat: int, fn) -> tuple[float, object]:
    best, value = math.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - t)
    return best, value


def compare_statistics(store_path: Path, n_objects: int, repeat: int) -> None:
    """Part 2: lcdb's statistics against light-curve on one partition's objects, one core."""
    try:
        import light_curve as lc
    except ImportError:
        print('\nlight-curve is not installed (pip install -e ".[bench]"): no comparison')
        return
    import polars as pl

    import lcdb
    from lcdb import sqlfiles
    from variability.findvars import FindConfig, StatsJob

    store = lcdb.open(store_path)
    store.con.execute("SET threads = 1")
    order = store.config.order
    shift = 2 * (29 - order)
    pixel = store.sql(
        f"SELECT object_id >> {shift} AS p, count(*) AS n FROM objects GROUP BY p "
        "ORDER BY n DESC LIMIT 1"
    )["p"][0].as_py()
    config = FindConfig()
    unit = {k: p for k, p in StatsJob(config, order).units(store)}[f"pixel={pixel}"]
    ids = store.sql(
        f"SELECT object_id FROM objects WHERE object_id >> {shift} = $p ORDER BY object_id",
        {"p": pixel},
    )["object_id"]
    hi = ids[min(n_objects, len(ids)) - 1].as_py()
    params = {
        "files": unit["files"],
        "lo": unit["lo"],
        "hi": hi,
        "z0_order": unit["z0_order"],
        "max_err": config.max_err,
        "max_point_err": config.max_point_err,
        "min_n": 5,
    }
    t_files, ours_files = _best(repeat, lambda: store.sql(sqlfiles.load("varstats"), params))
    points_sql, stats_sql = _points_and_stats_sql()
    con = store.con
    pts = con.sql(points_sql, params=params).to_arrow_table()
    con.register("pts", pts)
    t_mem, ours = _best(repeat, lambda: con.sql(stats_sql).to_arrow_table())
    ours = pl.from_arrow(ours)
    assert ours_files.num_rows == len(ours), (ours_files.num_rows, len(ours))
    kept = pl.DataFrame({"object_id": ours["object_id"]}).to_arrow()
    con.register("lcdb_objects", kept)
    t_group, lists = _best(
        1,
        lambda: con.sql(
            "SELECT object_id, list({'t': mjd::DOUBLE, 'm': mag::DOUBLE, 'sigma': err::DOUBLE} "
            "ORDER BY mjd) AS lc FROM pts SEMI JOIN lcdb_objects USING (object_id) "
            "GROUP BY object_id ORDER BY object_id"
        ).to_arrow_table(),
    )
    features = [
        lc.ObservationCount(),
        lc.Mean(),
        lc.WeightedMean(),
        lc.StandardDeviation(),
        lc.MedianAbsoluteDeviation(),
        lc.ReducedChi2(),
        lc.InterPercentileRange(0.25),
        lc.InterPercentileRange(0.05),
        lc.Eta(),
        lc.StetsonK(),
        lc.Duration(),
    ]
    names = list(_SHARED)
    ext = lc.Extractor(*features)
    arrow_lcs = lists["lc"].combine_chunks()
    fields = {"t": "t", "m": "m", "sigma": "sigma"}
    t_lc, values = _best(
        repeat, lambda: ext.many(arrow_lcs, arrow_fields=fields, sorted=True, n_jobs=1)
    )
    n_lc, n_pts = len(ours), pts.num_rows
    print(
        f"\nstatistics of {n_lc:,} light curves of partition {pixel} ({n_pts:,} good points, "
        f"median {int(ours['n'].median())} per curve), one core, best of {repeat}:"
    )
    print(
        f"  lcdb, varstats.sql from the store's files (as find-variables): "
        f"{n_lc / t_files:9,.0f} light curves/s"
    )
    print(f"  lcdb, varstats.sql on the points in memory:                     {n_lc / t_mem:9,.0f}")
    print(
        f"  light-curve {lc.__version__}, Extractor of {len(features)} features on them:      "
        f"{n_lc / t_lc:9,.0f}   (grouping the points into Arrow lists: {t_group:.2f} s more)"
    )
    print(
        f"  ratio lcdb / light-curve (points in memory): {t_lc / t_mem:.2f}; "
        f"from files: {t_lc / t_files:.2f}"
    )
    theirs = pl.DataFrame(np.asarray(values, dtype=float), schema=names, orient="row")
    theirs = theirs.with_columns(pl.Series("object_id", lists["object_id"].to_numpy()))
    exact = con.sql(
        "SELECT object_id, quantile_cont(mag, 0.75) - quantile_cont(mag, 0.25) AS iqr, "
        "quantile_cont(mag, 0.95) - quantile_cont(mag, 0.05) AS amplitude, "
        "1.4826 * mad(mag) AS mad_sigma FROM pts SEMI JOIN lcdb_objects USING (object_id) "
        "GROUP BY object_id"
    ).pl()
    both = ours.join(theirs, on="object_id", suffix="_lc").join(
        exact, on="object_id", suffix="_exact"
    )
    assert len(both) == n_lc, (len(both), n_lc)
    print(f"\nagreement on {n_lc:,} light curves (lcdb - light-curve; relative to |light-curve|):")
    print(f"  {'statistic':<10} {'light-curve feature':<27} {'max |diff|':>10} {'max rel':>9}")
    for name, (feature, factor) in _SHARED.items():
        a, b = both[name].to_numpy().astype(float), factor * both[f"{name}_lc"].to_numpy()
        diff = np.abs(a - b)
        rel = diff / np.maximum(np.abs(b), 1e-12)
        row = f"  {name:<10} {feature:<27} {diff.max():10.2e} {rel.max():9.2e}"
        if f"{name}_exact" in both.columns:
            e = both[f"{name}_exact"].to_numpy()
            d2, r2 = np.abs(e - b), np.abs(e - b) / np.maximum(np.abs(b), 1e-12)
            d3 = np.abs(a - e) / np.maximum(np.abs(e), 1e-12)
            row += (
                f"   exact - light-curve: {d2.max():.2e} (rel {r2.max():.2e}, "
                f"median {np.median(r2):.1e}); lcdb - exact: rel max {d3.max():.2e}, "
                f"median {np.median(d3):.1e}"
            )
        print(row)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=105, help="frames (105)")
    p.add_argument("--stars", type=int, default=1_000_000, help="stars (10^6)")
    p.add_argument("--naxis", type=int, help="detector side, px (40,000 x sqrt(stars / 10^6))")
    p.add_argument("--vmax", type=float, help="faintest star, V (SNR-5 limit - 0.25)")
    p.add_argument("--order", type=int, default=5, help="partition order (5)")
    p.add_argument("--radius", type=float, default=2.0, help="match radius, arcsec (2)")
    p.add_argument("--jobs", type=int, default=2, help="workers of ingest/cluster/calibrate (2)")
    p.add_argument(
        "--fv-jobs",
        type=int,
        default=1,
        help="workers of find-variables (1: one process, DuckDB on every core)",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--dir", type=Path, help="work folder (default: a temporary one, deleted)")
    p.add_argument(
        "--reuse",
        choices=("survey", "store"),
        help="survey: ingest DIR/survey again (no simulation); store: use DIR/store as it is",
    )
    p.add_argument("--batch-frames", type=int, help="ingest batch (frames of ~10^7 rows)")
    p.add_argument("--clean", action="store_true", help="delete DIR at the end")
    p.add_argument("--keep-survey", action="store_true", help="keep the simulated catalogues")
    p.add_argument("--profile", action="store_true", help="cProfile find-variables (top 30)")
    p.add_argument("--no-compare", action="store_true", help="skip part 2 (light-curve)")
    p.add_argument("--lc-objects", type=int, default=20_000, help="objects of part 2 (20,000)")
    p.add_argument("--repeat", type=int, default=3, help="part 2: best of REPEAT runs (3)")
    args = p.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when redirected to a file
    import lcdb

    work = args.dir or Path(tempfile.mkdtemp(prefix="lcdb-findvars-"))
    try:
        store = work / "store"
        if args.reuse != "store":
            work.mkdir(parents=True, exist_ok=True)
            store = build_store(args, work)
        s = lcdb.open(store)
        n_meas = s.sql("SELECT count(*) FROM measurements").column(0)[0].as_py()
        n_obj = s.count("objects")
        r = run_find_variables(store, args.fv_jobs, args.profile)
        print(
            f"find-variables  {r['seconds']:7.1f} s ({r['cpu_s']:.0f} CPU s)   "
            f"peak {r['rss_mb']:6.0f} MB "
            f"(workers {r['workers_rss_mb']:.0f} MB)   {r['objects'] / r['seconds']:,.0f} "
            f"objects/s, {n_meas / r['seconds'] / 1e6:.2f} M measurements/s   "
            f"[{n_obj:,} objects, {r['objects']:,} scored, {n_meas:,} measurements, "
            f"{r['candidates']:,} candidates, {args.fv_jobs} worker(s)]",
        )
        if not args.no_compare:
            compare_statistics(store, args.lc_objects, args.repeat)
    finally:
        if args.dir is None or args.clean:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
