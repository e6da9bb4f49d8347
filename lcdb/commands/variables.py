"""``lcdb find-variables`` and ``lcdb run`` (the whole chain)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lcdb.commands._common import add_store_arg, store_from
from lcdb.commands.jobs import add_runner_args, runner_options
from lcdb.errors import UsageError

_log = logging.getLogger(__name__)


def _add_find_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threshold", type=float, default=5.0, help="score threshold (sigma)")
    p.add_argument("--min-obs", type=int, default=20, help="fewest good points of a candidate")
    p.add_argument(
        "--index",
        action="append",
        choices=("std", "iqr", "inv_eta"),
        help="index selecting candidates (repeatable; default: iqr and inv_eta)",
    )
    p.add_argument(
        "--periods",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="search periods of the candidates",
    )
    p.add_argument(
        "--known",
        type=Path,
        default=None,
        help="catalogue of known variables (VSX/GCVS export: ra, dec, name, type, period)",
    )
    p.add_argument(
        "--keep-blended",
        action="store_true",
        help="keep candidates with a brighter neighbour within 3 FWHM",
    )


def _find_config(args: argparse.Namespace):
    from variability.findvars import FindConfig

    try:
        return FindConfig(
            threshold=args.threshold,
            min_obs=args.min_obs,
            indices=tuple(args.index) if args.index else ("iqr", "inv_eta"),
            periods=args.periods,
            known=args.known,
            keep_blended=args.keep_blended,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "find-variables",
        help="find variable-star candidates",
        description="Per-object statistics, SuperSmoother noise curves of the scatter-vs-"
        "magnitude diagram, candidates above a threshold, periods (Lomb-Scargle) and known/new "
        "(cross-match with --known). Results in the tables varstats, noise_curve, candidates.",
    )
    add_store_arg(p)
    _add_find_args(p)
    add_runner_args(p)
    p.set_defaults(func=_find)

    p = sub.add_parser(
        "run",
        help="the whole chain: cluster, calibrate, colours, refine, find-variables",
        description="Run every stage after ingest on a store, with a summary.",
    )
    add_store_arg(p)
    _add_find_args(p)
    add_runner_args(p)
    p.set_defaults(func=_run)


def _find(args: argparse.Namespace) -> int:
    from variability.findvars import find_variables

    find_variables(store_from(args), _find_config(args), runner_options(args))
    return 0


def run_chain(store, find_config, runner) -> dict:
    """cluster → calibrate → colours → refine → find-variables; returns each stage's summary."""
    import time

    from variability.calibrate import calibrate
    from variability.cluster import ClusterConfig, cluster
    from variability.colours import reconstruct_colours
    from variability.findvars import find_variables
    from variability.refine import refine

    stages = {}
    steps = (
        (
            "cluster",
            lambda: cluster(
                store, ClusterConfig(store.config.match_radius_arcsec, store.config.order), runner
            ),
        ),
        ("calibrate", lambda: calibrate(store, options=runner)),
        ("colours", lambda: reconstruct_colours(store, options=runner)),
        ("refine", lambda: refine(store, options=runner)[-1]),
        ("find-variables", lambda: find_variables(store, find_config, runner)),
    )
    for name, fn in steps:
        t = time.perf_counter()
        stages[name] = fn()
        _log.info("run: %s done in %.1f s", name, time.perf_counter() - t)
    return stages


def _run(args: argparse.Namespace) -> int:
    store = store_from(args)
    stages = run_chain(store, _find_config(args), runner_options(args))
    fv = stages["find-variables"]
    _log.info(
        "run: %d objects, %d frames calibrated, %d candidates (%d periodic, %d known)",
        stages["cluster"]["objects"],
        stages["calibrate"]["calibrated"],
        fv["candidates"],
        fv["periodic"],
        fv["known"],
    )
    return 0
