"""``lcdb simulate frames``: raw pixel frames, calibration frames and their truth.

Registered under the ``simulate`` command by :mod:`lcdb.commands.simulate`, which calls
:func:`register` with its sub-subparsers. The work is done by
:func:`lcdb.sim.pixels.simulate_frames`; this module turns arguments into a
:class:`~lcdb.sim.pixels.PixelSimConfig` and bad values into one-line usage errors (exit 2).
"""

from __future__ import annotations

import argparse
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lcdb.errors import UsageError

_log = logging.getLogger(__name__)

#: Largest image side accepted (a full Mini-SiTian frame is 9576x6388).
MAX_SIDE = 65536


def register(simulate_subparsers: Any) -> None:
    """Add the ``frames`` subcommand to the ``simulate`` command's sub-subparsers."""
    p = simulate_subparsers.add_parser(
        "frames",
        help="simulate raw CMOS frames, calibration frames and their truth",
        description=(
            "Simulate raw science frames (stars with a PSF with extended wings, sky gradient, "
            "satellite tracks, cosmic rays, saturation) of a CMOS detector with bias banding, "
            "dark current and hot pixels, salt-and-pepper (RTN) pixels, per-pixel gain, "
            "nonlinearity and vignetting; plus bias, dark and flat frames and the truth "
            "(stars, artefact masks, detector maps, detector.json). Layout: DIR/science, "
            "DIR/calib/{bias,dark,flat}, DIR/truth."
        ),
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--size", default="1024x1024", metavar="WxH", help="image size (1024x1024)")
    p.add_argument("--nx", type=int, default=None, help="image width, px (overrides --size)")
    p.add_argument("--ny", type=int, default=None, help="image height, px (overrides --size)")
    p.add_argument("--frames", type=int, default=3, metavar="N", help="science frames (3)")
    p.add_argument("--seed", type=int, default=0, help="random seed (0)")
    p.add_argument("--stars", type=int, default=2000, metavar="M", help="stars in the frame")
    p.add_argument("--mag-range", default="9,20", metavar="BRIGHT,FAINT", help="V range (9,20)")
    p.add_argument("--zero-point", type=float, default=23.0, help="mag giving 1 ADU/s (23)")
    p.add_argument("--exptime", type=float, default=60.0, help="science exposure, s (60)")
    p.add_argument("--pixel-scale", type=float, default=0.862, help="arcsec/px (0.862)")
    p.add_argument("--ra", type=float, default=150.0, help="field centre RA, deg (150)")
    p.add_argument("--dec", type=float, default=30.0, help="field centre Dec, deg (30)")
    p.add_argument("--fwhm", type=float, default=3.0, help="PSF core FWHM, px (3)")
    p.add_argument("--sky", type=float, default=5.0, help="sky, ADU/s/px (5)")
    p.add_argument("--tracks", type=int, default=1, help="satellite tracks per frame (1)")
    p.add_argument("--cosmic-rate", type=float, default=0.2, help="hits per Mpx per s (0.2)")
    p.add_argument("--gain", type=float, default=0.25, help="mean gain, e-/ADU (0.25)")
    p.add_argument("--read-noise", type=float, default=1.028, help="median read noise, e-")
    p.add_argument("--dark-current", type=float, default=0.002, help="e-/px/s (0.002)")
    p.add_argument("--rtn-fraction", type=float, default=0.02, help="salt-and-pepper pixels")
    p.add_argument("--nonlinearity", type=float, default=-0.01, help="fractional at 50000 ADU")
    p.add_argument("--saturation", type=int, default=65535, help="ADC saturation, ADU")
    p.add_argument("--bimodal-gain", action="store_true", help="a high-gain pixel population")
    p.add_argument("--channel", default="sim", help="CHANNEL keyword and file prefix (sim)")
    p.add_argument("--filter", default="clear", help="FILTER keyword (clear)")
    p.add_argument("--n-bias", type=int, default=100, help="bias frames (100)")
    p.add_argument("--n-dark", type=int, default=3, help="darks per exposure time (3)")
    p.add_argument("--dark-exptimes", default="1,10,60,300", metavar="T,...", help="s")
    p.add_argument(
        "--flat-levels",
        default=None,
        metavar="ADU,...",
        help="flat-pair levels, ADU above bias (1000,3000,10000,20000,30000,45000 at 16 bit, "
        "scaled with --saturation)",
    )
    p.add_argument("--flat-rate", type=float, default=5000.0, help="flat ADU/s (5000)")
    p.add_argument("--no-calib", action="store_true", help="no bias, dark or flat frames")
    p.add_argument("--no-truth-maps", action="store_true", help="skip truth/detector/*.fits")
    p.add_argument("--overwrite", action="store_true", help="replace a simulation in DIR")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=_run_frames)


def _size(args: argparse.Namespace) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", args.size)
    if not match:
        raise UsageError(f"--size {args.size}: expected WxH, e.g. 1024x1024")
    nx, ny = int(match[1]), int(match[2])
    if not (1 <= nx <= MAX_SIDE and 1 <= ny <= MAX_SIDE):
        raise UsageError(f"--size {args.size}: width and height must be in 1..{MAX_SIDE}")
    for opt, value in (("--nx", args.nx), ("--ny", args.ny)):
        if value is not None and not 1 <= value <= MAX_SIDE:
            raise UsageError(f"{opt} {value}: must be in 1..{MAX_SIDE}")
    return (args.nx or nx, args.ny or ny)


def _floats(option: str, text: str, count: int | None = None) -> tuple[float, ...]:
    try:
        values = tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{option} {text}: expected comma-separated numbers") from None
    if not values or (count is not None and len(values) != count):
        raise UsageError(f"{option} {text}: expected {count or 'one or more'} numbers")
    return values


def _check(args: argparse.Namespace) -> None:
    """Raise UsageError naming the first option whose value is out of range."""
    rules: list[tuple[str, str, Callable[[Any], bool], str]] = [
        ("--frames", "frames", lambda v: v >= 0, "must be >= 0"),
        ("--stars", "stars", lambda v: v >= 0, "must be >= 0"),
        ("--tracks", "tracks", lambda v: v >= 0, "must be >= 0"),
        ("--n-bias", "n_bias", lambda v: v >= 0, "must be >= 0"),
        ("--n-dark", "n_dark", lambda v: v >= 0, "must be >= 0"),
        ("--exptime", "exptime", lambda v: v > 0, "must be > 0"),
        ("--pixel-scale", "pixel_scale", lambda v: v > 0, "must be > 0"),
        ("--fwhm", "fwhm", lambda v: v > 0, "must be > 0"),
        ("--gain", "gain", lambda v: v > 0, "must be > 0"),
        ("--flat-rate", "flat_rate", lambda v: v > 0, "must be > 0"),
        ("--sky", "sky", lambda v: v >= 0, "must be >= 0"),
        ("--cosmic-rate", "cosmic_rate", lambda v: v >= 0, "must be >= 0"),
        ("--read-noise", "read_noise", lambda v: v >= 0, "must be >= 0"),
        ("--dark-current", "dark_current", lambda v: v >= 0, "must be >= 0"),
        ("--rtn-fraction", "rtn_fraction", lambda v: 0 <= v <= 0.5, "must be in [0, 0.5]"),
        ("--saturation", "saturation", lambda v: 1 <= v <= 65535, "must be in 1..65535"),
        ("--dec", "dec", lambda v: -90 <= v <= 90, "must be in [-90, 90]"),
    ]
    for option, attr, ok, message in rules:
        value = getattr(args, attr)
        if not ok(value):  # NaN fails every rule too
            raise UsageError(f"{option} {value}: {message}")
    if args.frames == 0 and args.no_calib:
        raise UsageError("--frames 0 with --no-calib: nothing to simulate")


def build_config(args: argparse.Namespace) -> Any:
    """The :class:`~lcdb.sim.pixels.PixelSimConfig` of parsed ``args`` (UsageError if invalid)."""
    from lcdb.sim.detector import Detector
    from lcdb.sim.pixels import PixelSimConfig, PSFModel

    _check(args)
    nx, ny = _size(args)
    mag_range = _floats("--mag-range", args.mag_range, 2)
    dark_exptimes = _floats("--dark-exptimes", args.dark_exptimes)
    if args.flat_levels is None:
        scale = args.saturation / 65535
        flat_levels = tuple(round(v * scale, 1) for v in (1e3, 3e3, 1e4, 2e4, 3e4, 4.5e4))
    else:
        flat_levels = _floats("--flat-levels", args.flat_levels)
    if any(not t > 0 for t in dark_exptimes):
        raise UsageError(f"--dark-exptimes {args.dark_exptimes}: exposure times must be > 0")
    if any(not 0 < v < args.saturation for v in flat_levels):
        raise UsageError(f"--flat-levels {args.flat_levels}: levels must be in (0, saturation)")
    try:
        det = Detector(
            nx=nx,
            ny=ny,
            gain_e_per_adu=args.gain,
            read_noise_e=args.read_noise,
            dark_current_e=args.dark_current,
            rtn_fraction=args.rtn_fraction,
            nonlinearity=args.nonlinearity,
            saturation_adu=args.saturation,
            bimodal_gain=args.bimodal_gain,
        )
        return PixelSimConfig(
            detector=det,
            psf=PSFModel(fwhm_px=args.fwhm),
            n_frames=args.frames,
            seed=args.seed,
            n_stars=args.stars,
            mag_range=(mag_range[0], mag_range[1]),
            zero_point=args.zero_point,
            exptime=args.exptime,
            ra0=args.ra % 360,
            dec0=args.dec,
            pixel_scale=args.pixel_scale,
            sky_adu_per_s=args.sky,
            n_tracks=args.tracks,
            cosmic_rate=args.cosmic_rate,
            channel=args.channel,
            filter=args.filter,
            calib=not args.no_calib,
            n_bias=args.n_bias,
            n_dark=args.n_dark,
            dark_exptimes=dark_exptimes,
            flat_levels=flat_levels,
            flat_rate_adu_per_s=args.flat_rate,
            truth_maps=not args.no_truth_maps,
            progress=False if args.no_progress else None,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def _run_frames(args: argparse.Namespace) -> int:
    from lcdb.sim.pixels import simulate_frames

    config = build_config(args)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out}: exists and is not a directory")
    try:
        result = simulate_frames(config, out, overwrite=args.overwrite)
    except FileExistsError:
        raise UsageError(f"--out {args.out}: holds a simulation already; add --overwrite") from None
    n_calib = sum(len(v) for v in result.calib.values())
    _log.info(
        "wrote %d science and %d calibration frames of %dx%d px to %s (%.1f s)",
        len(result.science),
        n_calib,
        config.detector.nx,
        config.detector.ny,
        out,
        result.elapsed_s,
    )
    return 0
