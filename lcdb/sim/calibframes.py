"""Calibration sequences of the pixel-level simulator: bias, dark and flat frames.

:func:`calibration_plan` lists the frames of a calibration run in acquisition order (a bias
stack, darks per exposure time, a flat pair per level of an exposure ladder) and
:func:`render_calibration` reads each one out with :func:`lcdb.sim.detector.read_out`. The
names stay importable from :mod:`lcdb.sim.detector`, where they used to live.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from lcdb.sim.detector import Detector, DetectorTruth, read_out

__all__ = [
    "CalibFrame",
    "calibration_plan",
    "render_bias",
    "render_calibration",
    "render_dark",
    "render_flat",
]


def render_bias(det: Detector, truth: DetectorTruth, rng: np.random.Generator) -> np.ndarray:
    """One zero-second bias frame (uint16)."""
    return read_out(det, truth, rng, exptime=0.0).image


def render_dark(
    det: Detector,
    truth: DetectorTruth,
    exptime: float,
    rng: np.random.Generator,
    deposits: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """One dark frame of ``exptime`` seconds (uint16), with optional cosmic-ray ``deposits``."""
    return read_out(det, truth, rng, exptime=exptime, deposits=deposits).image


def render_flat(
    det: Detector, truth: DetectorTruth, level_adu: float, exptime: float, rng: np.random.Generator
) -> np.ndarray:
    """One flat of uniform illumination giving ``level_adu`` (linear, above bias) at unit
    response and mean gain; vignetting and PRNU come from ``truth.flat`` (uint16)."""
    level_e = np.float32(level_adu * float(truth.gain.mean()))

    def light(r0: int, r1: int) -> np.ndarray:
        return np.full((r1 - r0, det.nx), level_e, dtype=np.float32)

    return read_out(det, truth, rng, exptime=exptime, light=light).image


class CalibFrame(NamedTuple):
    """One planned calibration frame: ``kind`` (BIAS, DARK or FLAT), file ``name``, exposure
    time (s) and, for flats, the linear level (ADU above bias at unit response and mean gain)."""

    kind: str
    name: str
    exptime: float
    level_adu: float


def calibration_plan(
    n_bias: int,
    n_dark: int,
    dark_exptimes: Sequence[float],
    flat_levels: Sequence[float],
    flat_rate_adu_per_s: float,
) -> list[CalibFrame]:
    """Bias stack, ``n_dark`` darks per exposure time, and a flat pair per level of the
    exposure ladder (``exptime = level / flat_rate_adu_per_s``), in acquisition order."""
    plan = [CalibFrame("BIAS", f"bias-{k:04d}", 0.0, 0.0) for k in range(n_bias)]
    for t in dark_exptimes:
        plan += [
            CalibFrame("DARK", f"dark-{t:06.1f}s-{k:02d}", float(t), 0.0) for k in range(n_dark)
        ]
    for level in flat_levels:
        exptime = level / flat_rate_adu_per_s
        plan += [
            CalibFrame("FLAT", f"flat-{level:05.0f}-{k}", exptime, float(level)) for k in (0, 1)
        ]
    return plan


def render_calibration(
    det: Detector,
    truth: DetectorTruth,
    item: CalibFrame,
    rng: np.random.Generator,
    deposits: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """Render the calibration frame ``item`` of :func:`calibration_plan` (uint16)."""
    if item.kind == "BIAS":
        return render_bias(det, truth, rng)
    if item.kind == "DARK":
        return render_dark(det, truth, item.exptime, rng, deposits)
    return render_flat(det, truth, item.level_adu, item.exptime, rng)
