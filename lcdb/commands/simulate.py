"""``lcdb simulate ...``: simulated survey data.

``lcdb simulate survey --out DIR`` writes per-frame catalogues (docs/formats.md), the field's
reference catalogue and the truth (:mod:`lcdb.sim.survey`). ``lcdb simulate frames`` (pixel
level) is registered by :mod:`lcdb.commands.simulate_frames` when that module exists.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import re
from pathlib import Path

from lcdb.errors import InputError, UsageError

_log = logging.getLogger(__name__)

#: Camera parameters that have their own option: (option, field, type, help).
_CAMERA_OPTIONS: tuple[tuple[str, str, type, str], ...] = (
    ("--naxis1", "naxis1", int, "detector width, px"),
    ("--naxis2", "naxis2", int, "detector height, px"),
    ("--pixscale", "pixscale", float, "pixel scale, arcsec/px"),
    ("--aperture", "aperture", float, "clear aperture diameter D, m"),
    ("--efficiency", "efficiency", float, "total efficiency eta (optics, QE, filter)"),
    ("--gain", "gain", float, "gain, e-/ADU"),
    ("--read-noise", "read_noise", float, "read noise, e-"),
    ("--dark-current", "dark_current", float, "dark current, e-/px/s"),
    ("--saturation", "saturation", float, "saturation level, ADU"),
    ("--sky-mag", "sky_mag", float, "sky brightness at zenith, mag/arcsec^2"),
    ("--seeing", "seeing", float, "median seeing FWHM, arcsec"),
    ("--extinction", "extinction", float, "extinction, mag/airmass"),
    ("--vignetting", "vignetting", float, "residual vignetting centre to corner, mag"),
    ("--sys-floor", "sys_floor", float, "systematic error floor, mag"),
    ("--jitter", "jitter", float, "pointing jitter (sigma), deg"),
    ("--filter", "filter", str, "filter name written as FILTER"),
    ("--channel", "channel", str, "channel id written as CHANNEL"),
)

#: SurveyConfig fields and the option that sets them (for error messages).
_CONFIG_OPTIONS = {
    "n_frames": "--frames",
    "n_stars": "--stars",
    "ra0": "--ra",
    "dec0": "--dec",
    "width_deg": "--width",
    "height_deg": "--height",
    "nights": "--nights",
    "night_spacing": "--night-spacing",
    "var_fraction": "--var-fraction",
    "exptimes": "--exptime",
    "vmin": "--vmin",
    "vmax": "--vmax",
    "min_altitude": "--min-altitude",
    "ruined_fraction": "--ruined-fraction",
    "cosmic_fraction": "--outlier-fraction",
    "n_stars and refcat": "--stars and --refcat",
    **{field: option for option, field, _, _ in _CAMERA_OPTIONS},
}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``simulate`` and its sub-subcommands to the ``lcdb`` parser."""
    p = subparsers.add_parser(
        "simulate",
        help="simulate survey data",
        description="Simulate survey data with full truth.",
    )
    sim_sub = p.add_subparsers(dest="simulate_command", metavar="WHAT")
    sim_sub.required = True
    _register_survey(sim_sub)
    if importlib.util.find_spec("lcdb.commands.simulate_frames") is not None:
        from lcdb.commands import simulate_frames

        simulate_frames.register(sim_sub)


def _register_survey(sim_sub: argparse._SubParsersAction) -> None:
    from lcdb.sim.camera import PRESETS

    s = sim_sub.add_parser(
        "survey",
        help="catalogue-level survey: per-frame catalogues, reference catalogue, truth",
        description="Simulate a survey at catalogue level: one catalogue per frame in "
        "DIR/frames (the format lcdb ingest reads), the field's reference catalogue "
        "DIR/refcat.parquet, and the truth in DIR/truth (stars, variables, frame zero points). "
        "Deterministic for a given --seed.",
    )
    s.add_argument("--out", required=True, metavar="DIR", help="output directory")
    s.add_argument(
        "--preset", default="mmt", help=f"camera preset: {', '.join(sorted(PRESETS))} (mmt)"
    )
    s.add_argument("--frames", type=int, default=200, help="number of frames (200)")
    s.add_argument("--stars", type=int, help="synthetic stars in the field (mmt 3000, mst 20000)")
    s.add_argument("--ra", type=float, default=150.0, help="field centre RA, deg (150)")
    s.add_argument("--dec", type=float, default=45.0, help="field centre Dec, deg (45)")
    s.add_argument("--width", type=float, help="field width, deg (frame + pointing jitter)")
    s.add_argument("--height", type=float, help="field height, deg (default like --width)")
    s.add_argument("--seed", type=int, default=0, help="random seed (0)")
    s.add_argument("--refcat", metavar="FILE", help="fill the field from this star catalogue")
    s.add_argument("--refcat-limit", type=float, help="V limit of the written refcat")
    s.add_argument(
        "--no-fill-faint",
        action="store_true",
        help="with --refcat, do not add synthetic stars below the catalogue's limit",
    )
    s.add_argument("--nights", type=int, default=20, help="number of nights (20)")
    s.add_argument("--night-spacing", type=float, default=3.0, help="mean days between nights")
    s.add_argument("--start-mjd", type=float, help="first night (default: field at opposition)")
    s.add_argument("--exptime", help="exposure time(s), s, comma-separated (preset's)")
    s.add_argument("--var-fraction", type=float, default=0.02, help="variable stars (0.02)")
    s.add_argument("--vmin", type=float, help="brightest synthetic star, V")
    s.add_argument("--vmax", type=float, help="faintest synthetic star, V")
    s.add_argument("--min-altitude", type=float, default=30.0, help="lowest altitude, deg")
    s.add_argument("--ruined-fraction", type=float, default=0.015, help="clouded-out frames")
    s.add_argument("--outlier-fraction", type=float, default=0.01, help="cosmic-ray hits")
    s.add_argument("--noiseless", action="store_true", help="no noise, outliers or spurious")
    s.add_argument("--overwrite", action="store_true", help="replace catalogues in DIR/frames")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    g = s.add_argument_group("camera parameters (override the preset)")
    for option, field, kind, text in _CAMERA_OPTIONS:
        g.add_argument(option, dest=f"cam_{field}", type=kind, help=text)
    s.set_defaults(func=_run_survey)


def _translate(message: str) -> str:
    """Name options instead of dataclass fields in a validation message."""
    parts = []
    for part in message.split("; "):
        for field, option in sorted(_CONFIG_OPTIONS.items(), key=lambda kv: -len(kv[0])):
            if part.startswith(field + " "):
                part = option + part[len(field) :]
                break
        parts.append(part)
    return "; ".join(parts)


def _exptimes(text: str | None) -> tuple[float, ...] | None:
    if text is None:
        return None
    try:
        return tuple(float(v) for v in re.split(r"[,\s]+", text.strip()) if v)
    except ValueError:
        raise UsageError(f"--exptime must be numbers separated by commas (got {text!r})") from None


def _run_survey(args: argparse.Namespace) -> int:
    from lcdb.sim.camera import get_preset
    from lcdb.sim.sky import RefcatError
    from lcdb.sim.survey import SurveyConfig, simulate_survey

    overrides = {
        f.name: getattr(args, f"cam_{f.name}")
        for f in dataclasses.fields(get_preset("mmt"))
        if getattr(args, f"cam_{f.name}", None) is not None
    }
    try:
        camera = get_preset(args.preset, **overrides)
    except ValueError as exc:
        raise UsageError(_translate(str(exc)).replace("camera preset", "--preset")) from None
    if args.seed < 0:
        raise UsageError(f"--seed must be non-negative (got {args.seed})")
    refcat = None
    if args.refcat is not None:
        refcat = Path(args.refcat)
        if not refcat.is_file():
            raise InputError(f"--refcat: file {refcat} does not exist")
    try:
        config = SurveyConfig(
            camera=camera,
            n_frames=args.frames,
            n_stars=args.stars,
            ra0=args.ra % 360.0,
            dec0=args.dec,
            width_deg=args.width,
            height_deg=args.height if args.height is not None else args.width,
            seed=args.seed,
            refcat=refcat,
            fill_faint=not args.no_fill_faint,
            refcat_limit=args.refcat_limit,
            vmin=args.vmin,
            vmax=args.vmax,
            nights=args.nights,
            night_spacing=args.night_spacing,
            start_mjd=args.start_mjd,
            exptimes=_exptimes(args.exptime),
            min_altitude=args.min_altitude,
            var_fraction=args.var_fraction,
            ruined_fraction=args.ruined_fraction,
            cosmic_fraction=args.outlier_fraction,
            noiseless=args.noiseless,
        )
    except ValueError as exc:
        raise UsageError(_translate(str(exc))) from None
    try:
        simulate_survey(config, args.out, progress=not args.no_progress, overwrite=args.overwrite)
    except (RefcatError, FileNotFoundError) as exc:
        raise InputError(str(exc)) from None
    except FileExistsError as exc:
        raise InputError(f"{exc}; use --overwrite to replace them") from None
    except OSError as exc:
        raise InputError(f"cannot write the survey to {args.out}: {exc}") from None
    except ValueError as exc:
        raise UsageError(_translate(str(exc))) from None
    return 0
