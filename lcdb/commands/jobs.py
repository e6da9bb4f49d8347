"""``lcdb cluster``, ``calibrate``, ``colours`` and ``refine``: the jobs of variability/."""

from __future__ import annotations

import argparse
import logging

from lcdb.commands._common import add_progress_arg, add_store_arg, store_from
from lcdb.errors import UsageError

_log = logging.getLogger(__name__)


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """``--jobs``, ``--restart`` and ``--no-progress`` of every resumable job."""
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="units run in parallel (default 1): worker processes (cluster: threads up to 2)",
    )
    parser.add_argument(
        "--restart", action="store_true", help="ignore the markers of an interrupted run"
    )
    add_progress_arg(parser)


def runner_options(args: argparse.Namespace):
    from lcdb.runner import RunnerOptions

    return RunnerOptions(workers=args.jobs, restart=args.restart, progress=not args.no_progress)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "cluster",
        help="group measurements into objects",
        description="Group measurements into objects by closeness on the sphere, partition by "
        "partition with a margin, seeded by the reference catalogue (proper motions propagated "
        "to each frame's epoch). Incremental: frames ingested later join existing objects.",
    )
    add_store_arg(p)
    p.add_argument("--radius", type=float, default=None, help="match radius, arcsec")
    p.add_argument("--rebuild", action="store_true", help="forget existing objects, start over")
    add_runner_args(p)
    p.set_defaults(func=_cluster)

    p = sub.add_parser(
        "calibrate",
        help="fit each frame's photometric model",
        description="Fit instrumental = V + Z0(x,y) + C (B-V) on every frame against the "
        "reference catalogue (seed Eq. 1), with weights and iterative clipping; reject frames "
        "with a poor fit or too few detections. Needs `lcdb cluster` first.",
    )
    add_store_arg(p)
    p.add_argument("--order", type=int, default=None, help="order of Z0(x,y) (default: store's)")
    p.add_argument("--clip", type=float, default=3.0, help="clipping threshold, sigma")
    add_runner_args(p)
    p.set_defaults(func=_calibrate)
    register_colours(sub)


def _cluster(args: argparse.Namespace) -> int:
    from variability.cluster import ClusterConfig, cluster

    store = store_from(args)
    radius = args.radius if args.radius is not None else store.config.match_radius_arcsec
    try:
        config = ClusterConfig(radius_arcsec=radius, order=store.config.order, rebuild=args.rebuild)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    cluster(store, config, runner_options(args))
    return 0


def _calibrate(args: argparse.Namespace) -> int:
    from variability.calibrate import CalibrateConfig, calibrate
    from variability.photcal import FitConfig

    store = store_from(args)
    try:
        fit = FitConfig(
            order=args.order if args.order is not None else store.config.z0_order, clip=args.clip
        )
        config = CalibrateConfig(fit=fit)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    calibrate(store, config, runner_options(args))
    return 0


def register_colours(sub: argparse._SubParsersAction) -> None:
    """``lcdb colours`` and ``lcdb refine``."""
    p = sub.add_parser(
        "colours",
        help="reconstruct V and B-V of every object",
        description="Fit instrumental - z0 = V + C (B-V) over each object's good frames (seed "
        "§3.1): V and B-V with errors; objects with too few frames or too little spread of C "
        "get null colours and a reason.",
    )
    add_store_arg(p)
    p.add_argument("--min-points", type=int, default=10, help="fewest good measurements")
    p.add_argument("--min-c-spread", type=float, default=0.01, help="smallest spread of C")
    add_runner_args(p)
    p.set_defaults(func=_colours)

    p = sub.add_parser(
        "refine",
        help="recalibrate on the reconstructed objects until convergence",
        description="Use the constant reconstructed objects as a reference catalogue, refit every "
        "frame, reject bad frames, recompute colours; iterate until V, B-V and the frame models "
        "stop changing (tolerance from lcdb.toml). Iterations are logged in refine_log.",
    )
    add_store_arg(p)
    p.add_argument("--max-iter", type=int, default=10, help="most iterations")
    add_runner_args(p)
    p.set_defaults(func=_refine)


def _colours(args: argparse.Namespace) -> int:
    from variability.colours import ColourConfig, reconstruct_colours

    try:
        config = ColourConfig(min_points=args.min_points, min_c_spread=args.min_c_spread)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    reconstruct_colours(store_from(args), config, runner_options(args))
    return 0


def _refine(args: argparse.Namespace) -> int:
    from variability.photcal import FitConfig
    from variability.refine import RefineConfig, refine

    store = store_from(args)
    try:
        config = RefineConfig(
            max_iter=args.max_iter,
            tolerance=store.config.refine_tolerance_mag,
            fit=FitConfig(order=store.config.z0_order),
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    rows = refine(store, config, runner_options(args))
    if not rows[-1]["converged"]:
        _log.warning("refine: not converged after %d iterations", len(rows))
    return 0
