"""``lcdb demo``: simulate a small survey, run every stage of the chain, compare with the truth.

The README's first command. It writes ``DIR/survey`` (the simulated catalogues, refcat and truth)
and ``DIR/store`` (the lcdb store), runs ingest, clustering and frame calibration (and each later
stage as it exists), and prints what it found against the simulator's truth.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

from lcdb.errors import UsageError

_log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="simulate a survey and run the whole chain on it",
        description="Simulate a small Mini-MegaTORTORA-like survey with known truth, ingest it "
        "into a new store, run clustering, frame calibration, colours, refinement and the "
        "variability search, and report the results against the truth. Takes about a minute "
        "on 2 cores.",
    )
    p.add_argument("--dir", default="lcdb-demo", help="output folder (default ./lcdb-demo)")
    p.add_argument("--frames", type=int, default=200, help="frames to simulate")
    p.add_argument("--stars", type=int, default=3000, help="stars in the field")
    p.add_argument("--seed", type=int, default=1, help="random seed")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="units run in parallel: worker processes (lcdb cluster: threads up to 2)",
    )
    p.set_defaults(func=_run)


def _curve_frame(curves: dict) -> pl.DataFrame:
    """Noise curves as rows of the ``noise_curve`` table (to plot them before they are stored)."""
    return pl.concat(
        pl.DataFrame(
            {
                "index": c.index,
                "mag": c.mag,
                "log_trend": c.log_trend,
                "log_spread": c.log_spread,
                "threshold": 5.0,
            }
        )
        for c in curves.values()
    )


def _run(args: argparse.Namespace) -> int:
    from ingest import IngestOptions, ingest_paths, load_refcat
    from lcdb.export import candidates_table, write_table
    from lcdb.plots import plot_diagram
    from lcdb.runner import RunnerOptions
    from lcdb.sim import truth
    from lcdb.sim.survey import SurveyConfig, simulate_survey
    from lcdb.store import init_store
    from variability.calibrate import calibrate
    from variability.cluster import ClusterConfig, cluster
    from variability.colours import reconstruct_colours
    from variability.findvars import FindConfig, compute_statistics, find_variables
    from variability.refine import refine

    if args.frames < 30 or args.stars < 1000:
        # Fewer leave too few reference stars per frame for a 4th-order zero-point fit.
        raise UsageError("the demo needs --frames >= 30 and --stars >= 1000")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be >= 1, got {args.jobs}")
    out = Path(args.dir)
    sim_dir, store_dir = out / "survey", out / "store"
    if store_dir.exists():
        if not (store_dir / "lcdb.toml").exists():
            raise UsageError(f"{store_dir} exists and is not an lcdb store; choose another --dir")
        shutil.rmtree(store_dir)
    report: list[str] = []
    timings: dict[str, float] = {}
    progress = sys.stderr.isatty()
    runner = RunnerOptions(workers=args.jobs, progress=progress)

    def timed(name: str, fn, *a, **k):
        t = time.perf_counter()
        result = fn(*a, **k)
        timings[name] = time.perf_counter() - t
        _log.info("demo: %s done in %.1f s", name, timings[name])
        return result

    config = SurveyConfig(n_frames=args.frames, n_stars=args.stars, seed=args.seed)
    sim = timed("simulate", simulate_survey, config, sim_dir, progress=progress, overwrite=True)
    store = init_store(store_dir)
    timed("refcat", load_refcat, store, sim.refcat_path)
    ing = timed("ingest", ingest_paths, store, [sim.frames_dir], IngestOptions(progress=progress))
    report.append(
        f"simulated {sim.n_frames} frames of {sim.n_stars} stars ({sim.n_variables} variable, "
        f"{sim.n_ruined} frames ruined by cloud); {sim.n_detections:,} detections"
    )
    report.append(
        f"ingested  {ing.frames} frames, {store.count('measurements'):,} measurements "
        f"({'all' if store.count('measurements') == sim.n_detections else 'NOT all'} of them)"
    )
    radius = store.config.match_radius_arcsec
    cl = timed("cluster", cluster, store, ClusterConfig(radius, store.config.order), runner)
    det = truth.detection_truth(store, sim_dir)
    score = truth.clustering_score(det)
    report.append(
        f"clustered {cl['objects']:,} objects for {score.n_stars:,} detected stars: "
        f"purity {100 * score.purity:.2f}%, completeness {100 * score.completeness:.2f}%"
    )
    cal = timed("calibrate", calibrate, store, options=runner)
    frames = store.pl("SELECT frame_id, frame_name, status FROM frames")
    ruined = set(
        pl.read_parquet(sim.frames_truth_path).filter(pl.col("ruined"))["frame_name"].to_list()
    )
    rejected = set(frames.filter(pl.col("status") != "ok")["frame_name"].to_list())
    z = truth.true_zero_points(store, sim_dir).join(
        frames.select("frame_id", "status"), on="frame_id"
    )
    good = z.filter(pl.col("status") == "ok")
    dz = (good["z0"] - good["z0_true"]).to_numpy()
    report.append(
        f"calibrated {cal['calibrated']} frames, rejected {cal['rejected']} "
        f"({len(rejected & ruined)} of the {len(ruined)} cloud-ruined ones); zero points vs "
        f"truth: rms {1000 * float(np.std(dz)):.1f} mmag, bias {1000 * float(np.median(dz)):+.1f}"
        f" mmag (absolute zero points are limited by the Tycho-like refcat errors)"
    )
    timed("colours", reconstruct_colours, store, options=runner)
    before = truth.colour_score(truth.object_truth(store, det, sim_dir))
    plots = out / "plots"
    stats_before, curves_before = compute_statistics(store, FindConfig())
    would_be = stats_before.filter(
        (pl.max_horizontal("score_iqr", "score_eta") > 5) & (pl.col("n") >= 20)
    ).select("object_id")
    plot_diagram(
        stats_before,
        _curve_frame(curves_before),
        would_be,
        plots / "diagram-before-refine.png",
        "Scatter vs magnitude before refinement",
    )
    log = timed("refine", refine, store, options=runner)
    after = truth.colour_score(truth.object_truth(store, det, sim_dir))
    report.append(
        f"colours   for {after.n} bright (V<11) constant stars: B-V rms {after.bv_rms:.3f} "
        f"(bias {after.bv_bias:+.3f}), V rms {after.v_rms:.3f} (bias {after.v_bias:+.4f})"
    )
    report.append(
        f"refined   in {len(log)} iteration(s) "
        f"({'converged' if log[-1]['converged'] else 'NOT converged'}), "
        f"{log[-1]['n_reference']} reference objects; median light-curve rms of those stars "
        f"{1000 * before.lc_rms_median:.1f} -> {1000 * after.lc_rms_median:.1f} mmag"
    )
    fv = timed("find-variables", find_variables, store, FindConfig())
    found = truth.variability_score(store, det, sim_dir)
    plot_diagram(
        store.pl("SELECT * FROM varstats"),
        store.pl("SELECT * FROM noise_curve"),
        store.pl("SELECT * FROM candidates"),
        plots / "diagram-after-refine.png",
        "Scatter vs magnitude after refinement",
    )
    write_table(candidates_table(store), out / "candidates.fits", "fits", "candidates")
    report.append(
        f"variables {fv['candidates']} candidates ({fv['periodic']} periodic): recall "
        f"{100 * found.recall:.0f}% of the {found.n_strong} variables at least 5x the noise in "
        f"the data, precision {100 * found.precision:.0f}%; periods within 1% for "
        f"{found.n_period_ok} of {found.n_periodic} periodic ones"
    )
    report.append(f"store: {store_dir}   survey and truth: {sim_dir}")
    report.append(f"candidates: {out / 'candidates.fits'}   plots: {plots}")
    report.append("stage times: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    report.append(f'try: lcdb sql --store {store_dir} "SELECT * FROM frames LIMIT 5"')
    sys.stdout.write("\n".join(report) + "\n")
    return 0
