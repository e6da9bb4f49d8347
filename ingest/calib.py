"""Calibration masters: bias and dark stacks, the nonlinearity cube, provenance keywords.

Masters are float32 FITS images whose header says what they are (``LCDBPROD``: ``bias``,
``dark``, ``flat``, ``nightflat``, ``nonlin``, ``badpix``, ``rtn``), which hardware they belong
to (``CHANNEL``, ``FILTER``, ``FOCUS``), when (``MJD-OBS``: mean start of the inputs,
``MJD-MIN``/``MJD-MAX``), and how they were made (``NCOMBINE``, ``CLIPSIG``, ``REJFRAC``,
``LCDBVER``, ``DATE``, one ``HISTORY`` card per input file). :mod:`ingest.calibset` finds them by
these keywords, so a calibration directory needs no naming convention.

Master bias and dark are sigma-clipped means of their stacks (:mod:`ingest.stack`): clipping
removes cosmic rays and RTN excursions, streaming bounds memory. Darks are combined per
``(channel, exposure time, night)``: the reduction subtracts the dark closest in time, bias
included (Mini-MegaTORTORA: with a clamped sCMOS the bias level equals the dark level).

The nonlinearity correction is a per-pixel polynomial of the dark-subtracted signal ``m``, in
the convention of ``lcdb calib characterize``: ``s / NLSREF = sum_k C[k](x, y) u^(k+1)`` with
``u = m / NLSREF``, a float32 cube ``(NLORDER, ny, nx)`` (a vector of NLORDER numbers is accepted
for a detector-wide polynomial). A file with ``NLSREF`` and ``NLORDER`` needs no ``LCDBPROD``.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from ingest.frameio import FrameMeta, frame_meta, night_of, write_image
from ingest.stack import StackConfig, clipped_mean_stack
from lcdb import __version__
from lcdb.errors import InputError

_log = logging.getLogger(__name__)

#: Product kind -> IMAGETYP written into its header.
PRODUCTS = {
    "bias": "MASTER BIAS",
    "dark": "MASTER DARK",
    "flat": "MASTER FLAT",
    "nightflat": "NIGHT SKY FLAT",
    "nonlin": "NONLINEARITY",
    "badpix": "BAD PIXEL MAP",
    "rtn": "RTN PIXEL MAP",
}


@dataclass(frozen=True)
class CalibConfig:
    """Settings shared by the master makers.

    Parameters
    ----------
    nsigma : float
        Sigma-clipping threshold of stacks.
    iterations : int
        Clipping iterations.
    budget : int
        Float32 elements per streamed block (bounds memory).
    longitude_deg : float
        Observatory longitude, deg east: nights run from local noon to noon.
    exptime_tol : float
        Relative tolerance when grouping darks by exposure time.
    progress : bool
        Show progress bars.
    """

    nsigma: float = 3.0
    iterations: int = 2
    budget: int = 1 << 24
    longitude_deg: float = 0.0
    exptime_tol: float = 0.01
    progress: bool = False

    def __post_init__(self) -> None:
        problems = []
        try:  # the stacking rules live with StackConfig
            _ = self.stack
        except ValueError as exc:
            problems.append(str(exc).removeprefix("invalid StackConfig: "))
        if not -360 <= self.longitude_deg <= 360:
            problems.append(f"longitude_deg must be in [-360, 360], got {self.longitude_deg}")
        if not 0 <= self.exptime_tol < 1:
            problems.append(f"exptime_tol must be in [0, 1), got {self.exptime_tol}")
        if problems:
            raise ValueError("invalid CalibConfig: " + "; ".join(problems))

    @property
    def stack(self) -> StackConfig:
        return StackConfig(self.nsigma, self.iterations, self.budget, self.progress)


def provenance(
    kind: str, metas: Sequence[FrameMeta], extra: dict[str, Any] | None = None
) -> fits.Header:
    """Header of a master of ``kind`` made from frames ``metas``."""
    if kind not in PRODUCTS:
        raise ValueError(f"unknown product kind {kind!r}")
    h = fits.Header()
    h["IMAGETYP"] = PRODUCTS[kind]
    h["LCDBPROD"] = (kind, "lcdb calibration product kind")
    mjds = [m.mjd for m in metas if m.mjd is not None]
    if mjds:
        h["MJD-OBS"] = (float(np.mean(mjds)), "mean exposure start of the inputs, MJD UTC")
        h["MJD-MIN"] = (float(min(mjds)), "earliest input")
        h["MJD-MAX"] = (float(max(mjds)), "latest input")
    for key, attr in (("CHANNEL", "channel"), ("FILTER", "filter"), ("FOCUS", "focus")):
        values = {getattr(m, attr) for m in metas} - {None}
        if len(values) == 1:
            h[key] = values.pop()
    exptimes = {m.exptime for m in metas} - {None}
    if exptimes:
        h["EXPTIME"] = (float(np.mean(sorted(exptimes))), "exposure time of the inputs, s")
    h["NCOMBINE"] = (len(metas), "input frames")
    h["LCDBVER"] = (__version__, "lcdb version")
    h["DATE"] = (dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"), "created, UTC")
    for key, value in (extra or {}).items():
        h[key] = value
    for m in metas:
        h.add_history(f"input: {m.path.name}")
    return h


def product_name(kind: str, header: fits.Header, longitude_deg: float = 0.0) -> str:
    """File name of a master: kind, channel, filter, focus, night and exposure as present."""
    parts = [kind]
    for key in ("CHANNEL", "FILTER", "FOCUS"):
        if key in header:
            parts.append(str(header[key]))
    if "MJD-OBS" in header:
        parts.append(f"n{night_of(float(header['MJD-OBS']), longitude_deg)}")
    if kind == "dark" and "EXPTIME" in header:
        parts.append(f"{float(header['EXPTIME']):g}s")
    return re.sub(r"[^A-Za-z0-9._+-]+", "-", "_".join(parts)) + ".fits"


def read_metas(paths: Sequence[str | Path], *require: str) -> list[FrameMeta]:
    """Header facts of every input, each checked for the keywords in ``require``."""
    if not paths:
        raise InputError("no input frames given")
    metas = [frame_meta(p) for p in paths]
    for m in metas:
        m.require(*require)
    return metas


def make_bias(
    paths: Sequence[str | Path], out_dir: str | Path, config: CalibConfig | None = None
) -> Path:
    """Master bias of a stack of bias frames: sigma-clipped mean, streamed."""
    config = config or CalibConfig()
    metas = read_metas(paths)
    result = clipped_mean_stack([m.path for m in metas], config.stack)
    header = provenance("bias", metas, _clip_cards(config, result.rejected_fraction))
    path = Path(out_dir) / product_name("bias", header, config.longitude_deg)
    _log.info("master bias of %d frames -> %s (%.3f%% rejected)", len(metas), path,
              100 * result.rejected_fraction)  # fmt: skip
    return write_image(path, result.mean, header)


def make_darks(
    paths: Sequence[str | Path], out_dir: str | Path, config: CalibConfig | None = None
) -> list[Path]:
    """Master darks, one per ``(channel, exposure time, night)`` group of the inputs."""
    config = config or CalibConfig()
    metas = read_metas(paths, "MJD-OBS", "EXPTIME")
    groups: dict[tuple[str, float, int], list[FrameMeta]] = defaultdict(list)
    for m in sorted(metas, key=lambda m: (m.exptime, m.mjd)):
        assert m.exptime is not None and m.mjd is not None
        channel, night = m.channel or "", night_of(m.mjd, config.longitude_deg)
        key = (channel, m.exptime, night)
        for c, t, n in groups:  # join a group of the same exposure time within the tolerance
            if (c, n) == (channel, night) and abs(t - m.exptime) <= config.exptime_tol * t:
                key = (c, t, n)
                break
        groups[key].append(m)
    out = []
    for members in groups.values():
        result = clipped_mean_stack([m.path for m in members], config.stack)
        header = provenance("dark", members, _clip_cards(config, result.rejected_fraction))
        path = Path(out_dir) / product_name("dark", header, config.longitude_deg)
        out.append(write_image(path, result.mean, header))
        _log.info("master dark of %d frames (%gs) -> %s", len(members), members[0].exptime, path)
    return out


def _clip_cards(config: CalibConfig, rejected: float) -> dict[str, Any]:
    return {
        "CLIPSIG": (config.nsigma, "sigma-clipping threshold"),
        "CLIPITER": (config.iterations, "sigma-clipping iterations"),
        "REJFRAC": (float(rejected), "fraction of input values clipped"),
    }


# -- nonlinearity -------------------------------------------------------------------------------
def quadratic_inverse_cube(coeff: np.ndarray | float, order: int = 3) -> np.ndarray:
    """Planes inverting ``m = s (1 + c s / NLSREF)`` (the simulator's detector model).

    ``C[k] = (-c)^k Catalan(k)`` for k = 0..order-1 (1, -c, 2c^2, ...): the series inverse
    ``s/NLSREF = u - c u^2 + 2 c^2 u^3 - ...`` with ``u = m / NLSREF``; at order 3 and
    ``|c u| = 0.01`` the truncation error is ``5 (c u)^3`` = 5e-6 of the signal.
    """
    if not 1 <= order <= 6:
        raise ValueError(f"order must be in 1..6, got {order}")
    c = np.asarray(coeff, np.float64)
    planes = [(-c) ** k * (math.comb(2 * k, k) / (k + 1)) for k in range(order)]
    return np.stack(planes).astype(np.float32)


def write_nonlinearity(
    planes: np.ndarray, ref_adu: float, out_dir: str | Path, header: dict[str, Any] | None = None
) -> Path:
    """Write a nonlinearity product: planes ``(NLORDER, ny, nx)`` or ``(NLORDER,)``.

    The convention is the one of ``lcdb calib characterize`` (:mod:`ingest.charlinearity`):
    ``s / NLSREF = sum_k C[k] u^(k+1)``, ``u = m / NLSREF``, ``m`` the dark-subtracted ADU.
    """
    planes = np.asarray(planes, np.float32)
    if planes.ndim not in (1, 3) or planes.shape[0] < 1:
        raise InputError(f"nonlinearity planes must be (K,) or (K, ny, nx), got {planes.shape}")
    if not np.isfinite(planes).all():
        raise InputError("nonlinearity planes hold non-finite values")
    if not ref_adu > 0:
        raise InputError(f"nonlinearity reference signal must be > 0, got {ref_adu}")
    h = provenance(
        "nonlin",
        [],
        {
            "NLSREF": (float(ref_adu), "reference signal, ADU"),
            "NLORDER": (planes.shape[0], "planes: coefficients of u**1.."),
        },
    )
    h["COMMENT"] = "S/NLSREF = sum_k CUBE[k] * u**(k+1), u = (raw - bias - dark)/NLSREF"
    for key, value in (header or {}).items():
        h[key] = value
    path = Path(out_dir) / product_name("nonlin", h)
    return write_image(path, planes, h)


def apply_polynomial(block: np.ndarray, planes: np.ndarray, ref_adu: float) -> None:
    """Linearise ``block`` (dark-subtracted float32 ADU) in place (Horner in ``u``).

    ``planes`` is ``(K, rows, nx)`` matching the block, or ``(K,)``.
    """
    ref = np.float32(ref_adu)
    u = block / ref
    block[...] = planes[-1]
    for a in planes[-2::-1]:
        block *= u
        block += a
    block *= u
    block *= ref
