"""``lcdb reduce FRAME... --out DIR``: raw frames -> per-frame catalogues for ``lcdb ingest``.

The work is done by :func:`ingest.reduce.reduce_frames` (a process pool of ``--jobs``
workers); this module turns arguments into a :class:`~ingest.reduce.ReduceConfig`, bad values
into one-line usage errors (exit 2), and returns 1 when any frame failed or was rejected (the
others are reduced all the same).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from lcdb.errors import UsageError

_log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``reduce`` subcommand."""
    p = sub.add_parser(
        "reduce",
        help="reduce raw frames to per-frame catalogues",
        description="Dark, nonlinearity and flat (masters from --calib), masks (bad, saturated, "
        "salt-and-pepper pixels, satellite tracks, cosmic rays, unreliable background, large "
        "objects), SEP background, detection, FWHM and aperture photometry, and the header WCS "
        "refined on the store's reference catalogue (--store, else $LCDB_STORE; without a "
        "store the header WCS is used as it is). Writes DIR/<FRAMEID>.parquet (docs/formats.md) "
        "and DIR/qa.csv; a frame that fails or is rejected is reported and skipped (exit 1).",
    )
    p.add_argument("frames", nargs="+", metavar="FRAME", help="raw FITS frames or directories")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--calib", metavar="DIR", help="calibration masters (lcdb calib ...)")
    p.add_argument(
        "--store",
        metavar="PATH",
        default=None,
        help="store with the reference catalogue (default: $LCDB_STORE if set)",
    )
    p.add_argument("--no-store", action="store_true", help="ignore $LCDB_STORE: header WCS only")
    p.add_argument("--jobs", type=int, default=1, help="frames reduced in parallel (1)")
    p.add_argument("--gain", type=float, help="e-/ADU (default: the GAIN keyword)")
    p.add_argument("--saturation", type=float, help="raw saturation, ADU (default: SATURATE)")
    p.add_argument(
        "--aperture",
        choices=("fwhm", "optimal", "fixed"),
        default="fwhm",
        help="1.5 FWHM (fwhm), SNR-optimal with aperture correction (optimal), or "
        "--aperture-radius (fixed)",
    )
    p.add_argument("--aperture-factor", type=float, default=1.5, help="radius / FWHM (1.5)")
    p.add_argument("--aperture-radius", type=float, default=5.0, help="fixed radius, px (5)")
    p.add_argument("--detect-sigma", type=float, default=2.0, help="detection threshold (2)")
    p.add_argument("--mesh", type=int, default=64, help="background mesh, px (64)")
    p.add_argument("--max-error", type=float, default=0.1, help="largest flux_err/flux (0.1)")
    p.add_argument(
        "--cosmics",
        choices=("laplace", "astroscrappy", "none"),
        default="laplace",
        help="cosmic-ray method (laplace)",
    )
    p.add_argument("--astrom-order", type=int, default=3, help="distortion polynomial order (3)")
    p.add_argument("--max-shift", type=float, default=30.0, help="largest WCS offset, px (30)")
    p.add_argument("--save-mask", action="store_true", help="also write <FRAMEID>.mask.fits.fz")
    p.add_argument("--save-background", action="store_true", help="also <FRAMEID>.back.fits.fz")
    p.add_argument("--skip-existing", action="store_true", help="skip frames already reduced")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run)


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~ingest.reduce.ReduceConfig` of parsed ``args`` (UsageError if invalid)."""
    from ingest.astrometry import AstromConfig
    from ingest.cosmics import CosmicConfig
    from ingest.masks import MaskConfig
    from ingest.photometry import PhotConfig
    from ingest.reduce import ReduceConfig

    if args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: must be >= 1")
    try:
        return ReduceConfig(
            masks=MaskConfig(cosmics=CosmicConfig(method=args.cosmics)),
            phot=PhotConfig(
                aperture=args.aperture,
                aperture_factor=args.aperture_factor,
                aperture_radius=args.aperture_radius,
                detect_nsigma=args.detect_sigma,
                mesh=args.mesh,
                max_rel_error=args.max_error,
            ),
            astrom=AstromConfig(order=args.astrom_order, max_shift_px=args.max_shift),
            gain=args.gain,
            saturation=args.saturation,
            save_mask=args.save_mask,
            save_background=args.save_background,
            skip_existing=args.skip_existing,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _run(args: argparse.Namespace) -> int:
    from ingest.calibset import CalibSet
    from ingest.reduce import reduce_frames
    from lcdb.commands.calib import expand_inputs
    from lcdb.store import ENV_VAR, open_store

    config = build_config(args)
    frames = expand_inputs(args.frames)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    store = None if args.no_store else (args.store or os.environ.get(ENV_VAR) or None)
    if store is not None:
        open_store(store).close()  # a missing or broken store is one error, before any work
    calib = CalibSet.scan(args.calib) if args.calib else None
    if calib is None:
        _log.info("no --calib: frames are taken as reduced (masks and photometry only)")
    if store is None:
        _log.info("no store: the header WCS is used as it is")
    result = reduce_frames(
        frames, out, config, calib, store, jobs=args.jobs, progress=not args.no_progress
    )
    n_ok = sum(o.status == "ok" for o in result.outcomes)
    n_skip = sum(o.status == "skipped" for o in result.outcomes)
    _log.info(
        "reduced %d of %d frame(s) into %s (%d skipped, %d failed or rejected); QA in %s",
        n_ok,
        len(frames),
        out,
        n_skip,
        len(result.failed),
        result.qa_path,
    )
    return 1 if result.failed else 0
