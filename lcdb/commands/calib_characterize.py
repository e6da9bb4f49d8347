"""``lcdb calib characterize``: detector characterisation from bias, dark and flat sequences.

Registered under the ``calib`` command (whose module calls :func:`register` with its
sub-subparsers). The work is done by :func:`ingest.characterize.characterize`; this module turns
arguments into a :class:`~ingest.characterize.CharacterizeConfig`, bad values into one-line usage
errors (exit 2), and logs the headline figures.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from lcdb.errors import UsageError

_log = logging.getLogger(__name__)

#: Config fields with their own option (for messages about bad values).
_OPTIONS = {
    "central_fraction": "--central-fraction",
    "saturation_adu": "--saturation",
    "memory_mb": "--memory-mb",
    "nonlinearity_ref_adu": "--nonlinearity-ref",
}


def register(calib_subparsers: Any) -> None:
    """Add the ``characterize`` subcommand to the ``calib`` command's sub-subparsers."""
    p = calib_subparsers.add_parser(
        "characterize",
        help="characterise a camera from its bias, dark and flat sequences",
        description=(
            "Measure bias stability, fixed-pattern noise, dark current and hot pixels, linearity, "
            "the conventional photon-transfer gain and read noise, per-pixel gain and read-noise "
            "maps, and salt-and-pepper (RTN) pixels, from directories of FITS frames (exposure "
            "times from EXPTIME). Frames are streamed in row blocks. Writes summary.json, FITS "
            "maps (gain, read_noise, dark_current, master_bias, mask, bad_pixels, rtn_pixels, "
            "nonlinearity) and PNG plots to --out; see ingest/characterize.py for conventions."
        ),
    )
    p.add_argument("--bias", metavar="DIR", help="bias frames (needed by darks and flats)")
    p.add_argument("--darks", metavar="DIR", help="dark frames at one or more exposure times")
    p.add_argument("--flats", metavar="DIR", help="flat pairs or stacks on an exposure ladder")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument(
        "--central-fraction",
        type=float,
        default=0.5,
        metavar="F",
        help="side of the central region for the conventional PTC, as a fraction "
        "of the frame (0.5)",
    )
    p.add_argument(
        "--per-pixel-nonlinearity",
        action="store_true",
        help="write the per-pixel nonlinearity fit into the correction cube (default: "
        "the camera coefficient everywhere)",
    )
    p.add_argument(
        "--nonlinearity-ref",
        type=float,
        default=50000.0,
        metavar="ADU",
        help="s_ref of the model measured = s (1 + c s / s_ref) (50000)",
    )
    p.add_argument(
        "--no-flat-normalization",
        action="store_true",
        help="do not rescale flats of a group to a common level (lamp flicker)",
    )
    p.add_argument(
        "--saturation",
        type=float,
        default=None,
        metavar="ADU",
        help="saturation level (default: SATURATE, else the data type's maximum)",
    )
    p.add_argument(
        "--memory-mb",
        type=float,
        default=512.0,
        metavar="MB",
        help="memory for the row blocks being read (512)",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    p.add_argument("--overwrite", action="store_true", help="replace an earlier characterisation")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=_run)


def _config(args: argparse.Namespace) -> Any:
    from ingest.characterize import CharacterizeConfig

    try:
        return CharacterizeConfig(
            central_fraction=args.central_fraction,
            per_pixel_nonlinearity=args.per_pixel_nonlinearity,
            nonlinearity_ref_adu=args.nonlinearity_ref,
            normalize_flats=not args.no_flat_normalization,
            saturation_adu=args.saturation,
            memory_mb=args.memory_mb,
            plots=not args.no_plots,
            progress=False if args.no_progress else None,
        )
    except ValueError as exc:
        message = str(exc)
        for field, option in _OPTIONS.items():
            message = message.replace(f"{field}=", f"{option} ")
        raise UsageError(message) from None


def _run(args: argparse.Namespace) -> int:
    from ingest.characterize import characterize

    dirs = {"bias": args.bias, "darks": args.darks, "flats": args.flats}
    if not any(dirs.values()):
        raise UsageError("nothing to characterize: give --bias, --darks and/or --flats")
    for option, value in dirs.items():
        if value is not None and not Path(value).is_dir():
            raise UsageError(f"--{option} {value}: not a directory")
    out = Path(args.out)
    if (out / "summary.json").exists() and not args.overwrite:
        raise UsageError(f"--out {out} already holds a characterisation (use --overwrite)")
    summary = characterize(
        out, bias_dir=args.bias, dark_dir=args.darks, flat_dir=args.flats, config=_config(args)
    )
    _log.info("read noise %.3f ADU", summary["read_noise_adu"])
    if summary.get("gain_e_per_adu") is not None:
        _log.info(
            "gain %.4f +- %.4f e-/ADU, read noise %.3f e- (conventional)",
            summary["gain_e_per_adu"],
            summary["gain_e_per_adu_err"],
            summary["read_noise_e"],
        )
    anomalous = summary["anomalous"]
    _log.info(
        "RTN pixels %d (%.3f%%), bad pixels %d (%.3f%%)",
        anomalous["rtn"]["n"],
        100 * anomalous["rtn"]["fraction"],
        anomalous["bad"]["n"],
        100 * anomalous["bad"]["fraction"],
    )
    _log.info("products in %s", out)
    return 0
