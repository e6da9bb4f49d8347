"""``lcdb calib ...``: calibration masters for ``lcdb reduce``.

Sub-subcommands: ``bias``, ``dark`` (sigma-clipped streamed stacks), ``flat`` (twilight flats:
large x small scale, small scale stacked over neighbouring nights), ``nightflat`` (night-sky
flats per hardware configuration), ``badpix`` (dark outliers, dead flat pixels, given maps),
``rtn`` (salt-and-pepper pixels from a bias stack), ``nonlin`` (a nonlinearity cube), and
``characterize`` (detector characterisation, :mod:`lcdb.commands.calib_characterize`, when
installed). Every master is a FITS file with provenance keywords (see :mod:`ingest.calib`);
``lcdb reduce --calib DIR`` finds them by those keywords.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
from pathlib import Path
from typing import Any

from lcdb.errors import UsageError

_log = logging.getLogger(__name__)

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.fz", ".fz", ".fits.gz")


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``calib`` and its sub-subcommands."""
    p = sub.add_parser(
        "calib",
        help="calibration masters (bias, dark, flats, defect maps, nonlinearity)",
        description="Make the calibration masters that `lcdb reduce --calib DIR` uses. Inputs "
        "are FITS files or directories of them; masters are written to --out.",
    )
    calib_sub = p.add_subparsers(dest="calib_command", metavar="ACTION")
    calib_sub.required = True

    q = calib_sub.add_parser(
        "bias",
        help="master bias: sigma-clipped mean of a bias stack",
        description="Sigma-clipped mean of a stack of bias frames, streamed "
        "by row blocks (bounded memory).",
    )
    _inputs(q)
    _stack_args(q)
    q.set_defaults(func=_bias)

    q = calib_sub.add_parser(
        "dark",
        help="master darks, one per exposure time and night",
        description="Sigma-clipped mean of dark frames (bias included), one "
        "master per (channel, EXPTIME, night); streamed.",
    )
    _inputs(q)
    _stack_args(q)
    q.set_defaults(func=_dark)

    q = calib_sub.add_parser(
        "flat",
        help="master twilight flats, one per configuration and night",
        description="Twilight flats: dark-subtracted and linearised with the "
        "masters of --calib, split into a large scale (mesh approximation of "
        "a --window px median) and a small scale; small scales stacked over "
        "--nights nights with flats on each side within --max-days.",
    )
    _inputs(q)
    _stack_args(q)
    _flat_args(q)
    q.add_argument("--nights", type=int, default=5, help="nights stacked on each side (5)")
    q.add_argument("--max-days", type=float, default=30.0, help="furthest night, days (30)")
    q.add_argument("--min-level", type=float, default=1000.0, help="lowest flat level, ADU")
    q.add_argument("--max-level", type=float, default=60000.0, help="highest flat level, ADU")
    q.set_defaults(func=_flat)

    q = calib_sub.add_parser(
        "nightflat",
        help="night-sky flats per hardware configuration",
        description="Median of normalised science frames with their stars "
        "masked, per (CHANNEL, FILTER, FOCUS).",
    )
    _inputs(q)
    _stack_args(q)
    _flat_args(q)
    q.add_argument("--star-sigma", type=float, default=3.0, help="star threshold, sigma (3)")
    q.add_argument("--star-grow", type=int, default=4, help="star mask growth, px (4)")
    q.set_defaults(func=_nightflat)

    q = calib_sub.add_parser(
        "badpix",
        help="bad-pixel map from a master dark (and a flat)",
        description="Pixels of the master dark beyond --sigma robust sigmas "
        "(after removing smooth patterns and banding), pixels whose "
        "small-scale flat response is outside --flat-range, and any --merge "
        "maps.",
    )
    q.add_argument("--dark", required=True, metavar="FILE", help="master dark")
    q.add_argument("--bias", metavar="FILE", help="master bias subtracted from the dark")
    q.add_argument("--flat", metavar="FILE", help="master flat (dead pixels)")
    q.add_argument("--merge", nargs="+", default=[], metavar="FILE", help="maps to merge")
    q.add_argument("--sigma", type=float, default=3.0, help="dark outlier threshold (3)")
    q.add_argument("--flat-range", default="0.5,1.5", metavar="LO,HI", help="good flat response")
    q.add_argument("--out", required=True, metavar="DIR", help="output directory")
    q.set_defaults(func=_badpix)

    q = calib_sub.add_parser(
        "rtn",
        help="salt-and-pepper (RTN) pixel map from a bias stack",
        description="Pixels whose standard deviation exceeds --threshold ADU "
        "in every one of --groups disjoint groups (in time) of the bias "
        "stack; streamed.",
    )
    _inputs(q)
    q.add_argument("--threshold", type=float, default=8.0, help="std threshold, ADU (8)")
    q.add_argument("--groups", type=int, default=3, help="disjoint groups (3)")
    q.add_argument("--memory-mb", type=float, default=256.0, help="memory of one block, MB")
    q.set_defaults(func=_rtn)

    q = calib_sub.add_parser(
        "nonlin",
        help="nonlinearity correction cube",
        description="Write the nonlinearity product read by `lcdb reduce`: "
        "from planes (--planes, NLORDER x ny x nx, s/ref = sum C[k] u^(k+1)) "
        "or from a map of c in m = s (1 + c s / ref) (--quadratic).",
    )
    src = q.add_mutually_exclusive_group(required=True)
    src.add_argument("--planes", metavar="FILE", help="FITS cube of correction planes")
    src.add_argument("--quadratic", metavar="FILE", help="FITS map (or 1 number) of c")
    q.add_argument("--ref", type=float, required=True, help="reference signal NLSREF, ADU")
    q.add_argument("--order", type=int, default=3, help="planes of the series inverse (3)")
    q.add_argument("--channel", help="CHANNEL keyword of the product")
    q.add_argument("--out", required=True, metavar="DIR", help="output directory")
    q.set_defaults(func=_nonlin)

    if importlib.util.find_spec("lcdb.commands.calib_characterize") is not None:
        importlib.import_module("lcdb.commands.calib_characterize").register(calib_sub)


def _inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="FILE", help="FITS frames or directories")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")


def _stack_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sigma", type=float, default=3.0, help="clipping threshold (3)")
    p.add_argument("--iterations", type=int, default=2, help="clipping iterations (2)")
    p.add_argument("--memory-mb", type=float, default=256.0, help="memory of one block, MB")
    p.add_argument("--longitude", type=float, default=0.0, help="site longitude east, deg")
    p.add_argument("--calib", metavar="DIR", help="masters applied first (flats)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _flat_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--window", type=int, default=51, help="large-scale median window, px (51)")
    p.add_argument("--step", type=int, default=16, help="grid step of the approximation (16)")


def expand_inputs(items: list[str]) -> list[Path]:
    """FITS files named, or found in the directories named (sorted); UsageError if none."""
    out: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.name.lower().endswith(FITS_SUFFIXES))
            if not found:
                raise UsageError(f"{path}: no FITS files in the directory")
            out.extend(found)
        else:
            out.append(path)  # a missing file is reported by the reader, naming it
    return out


def _config(args: argparse.Namespace) -> Any:
    from ingest.calib import CalibConfig

    budget = int(args.memory_mb * 2**20 / 4 / 3)  # the clipping holds ~3 copies of a block
    try:
        return CalibConfig(
            nsigma=args.sigma,
            iterations=args.iterations,
            budget=budget,
            longitude_deg=args.longitude,
            progress=not args.no_progress,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _calibset(args: argparse.Namespace) -> Any:
    from ingest.calibset import CalibSet

    return CalibSet.scan(args.calib) if getattr(args, "calib", None) else None


def _report(kind: str, paths: list[Path]) -> int:
    for p in paths:
        _log.info("%s: %s", kind, p)
    return 0


def _bias(args: argparse.Namespace) -> int:
    from ingest.calib import make_bias

    return _report(
        "master bias", [make_bias(expand_inputs(args.inputs), _out(args), _config(args))]
    )


def _dark(args: argparse.Namespace) -> int:
    from ingest.calib import make_darks

    return _report("master dark", make_darks(expand_inputs(args.inputs), _out(args), _config(args)))


def _flat_config(args: argparse.Namespace, **extra: Any) -> Any:
    from ingest.flats import FlatConfig

    try:
        return FlatConfig(window=args.window, step=args.step, **extra)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _flat(args: argparse.Namespace) -> int:
    from ingest.flats import make_twilight_flats

    fc = _flat_config(
        args,
        n_nights=args.nights,
        max_days=args.max_days,
        min_level=args.min_level,
        max_level=args.max_level,
    )
    cc, cs = _config(args), _calibset(args)
    paths = make_twilight_flats(expand_inputs(args.inputs), _out(args), cs, fc, cc)
    return _report("master flat", paths)


def _nightflat(args: argparse.Namespace) -> int:
    from ingest.flats import make_night_sky_flats

    fc = _flat_config(args, star_nsigma=args.star_sigma, star_grow=args.star_grow)
    cc, cs = _config(args), _calibset(args)
    paths = make_night_sky_flats(expand_inputs(args.inputs), _out(args), cs, fc, cc)
    return _report("night-sky flat", paths)


def _pair(option: str, text: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{option} {text}: expected two numbers LO,HI") from None
    return lo, hi


def _badpix(args: argparse.Namespace) -> int:
    from ingest.defects import DefectConfig, make_badpix

    try:
        config = DefectConfig(
            dark_nsigma=args.sigma, flat_range=_pair("--flat-range", args.flat_range)
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    path = make_badpix(args.dark, _out(args), args.bias, args.flat, args.merge, config)
    return _report("bad-pixel map", [path])


def _rtn(args: argparse.Namespace) -> int:
    from ingest.calib import CalibConfig
    from ingest.defects import DefectConfig, make_rtn

    try:
        config = DefectConfig(rtn_threshold=args.threshold, rtn_groups=args.groups)
        cc = CalibConfig(budget=int(args.memory_mb * 2**20 / 4 / 2))
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return _report("RTN map", [make_rtn(expand_inputs(args.inputs), _out(args), config, cc)])


def _nonlin(args: argparse.Namespace) -> int:
    import numpy as np

    from ingest.calib import quadratic_inverse_cube, write_nonlinearity
    from ingest.frameio import FitsImage, read_image

    if not args.ref > 0:
        raise UsageError(f"--ref {args.ref}: must be > 0")
    if not 1 <= args.order <= 6:
        raise UsageError(f"--order {args.order}: must be in 1..6")
    if args.planes:
        with FitsImage(args.planes, ndim=3) as cube:
            planes = np.stack([cube.rows(0, cube.shape[0], plane=k) for k in range(cube.planes)])
    else:
        from astropy.io import fits

        header = fits.getheader(args.quadratic)
        c = (
            read_image(args.quadratic)
            if int(header.get("NAXIS", 0)) == 2
            else np.float32(fits.getdata(args.quadratic)).reshape(-1)[:1].reshape(())
        )
        planes = quadratic_inverse_cube(c, args.order)
    header = {"CHANNEL": args.channel} if args.channel else {}
    return _report("nonlinearity", [write_nonlinearity(planes, args.ref, _out(args), header)])


def _out(args: argparse.Namespace) -> Path:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    return out
