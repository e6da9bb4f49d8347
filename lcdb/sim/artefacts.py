"""Transient artefacts of a simulated science frame: satellite tracks, cosmic rays, saturation.

Tracks are straight lines of Gaussian cross-section added to the light (truth ADU) and flagged
TRACK where they rise above a noise floor; cosmic rays are charge deposits (electrons) added by
:func:`lcdb.sim.detector.read_out` after the photon noise and flagged COSMIC_RAY on every pixel
they hit; pixels the read-out clips at ``saturation_adu`` are flagged SATURATED.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from lcdb.flags import Flag

if TYPE_CHECKING:
    from lcdb.sim.pixels import PixelSimConfig

__all__ = ["add_tracks", "flag_artefacts", "make_cosmics", "make_tracks", "track_rows"]


def make_tracks(config: PixelSimConfig, rng: np.random.Generator) -> list[dict[str, float]]:
    """Straight satellite tracks through a random point ``(px, py)`` at angle ``theta``, with
    a Gaussian cross-section of FWHM ``width_px``; ``x0, y0, x1, y1`` are its ends on the edges."""
    nx, ny = config.detector.nx, config.detector.ny
    tracks = []
    for _ in range(config.n_tracks):
        px, py, theta = rng.uniform(0, nx - 1), rng.uniform(0, ny - 1), rng.uniform(0, np.pi)
        c, s = np.cos(theta), np.sin(theta)
        slabs = [sorted(((-0.5 - p) / d, (n - 0.5 - p) / d))
                 for p, d, n in ((px, c, nx), (py, s, ny)) if abs(d) > 1e-12]  # fmt: skip
        t0, t1 = max(lo for lo, _ in slabs), min(hi for _, hi in slabs)
        width, peak = rng.uniform(*config.track_width_px), rng.uniform(*config.track_peak_adu)
        values = (px + t0 * c, py + t0 * s, px + t1 * c, py + t1 * s, theta, width, peak, px, py)
        keys = ("x0", "y0", "x1", "y1", "theta", "width_px", "peak_adu", "px", "py")
        tracks.append({k: float(v) for k, v in zip(keys, values, strict=True)})
    return tracks


def track_rows(
    track: dict[str, float], r0: int, r1: int, nx: int, floor: float
) -> tuple[slice, np.ndarray]:
    """Columns and truth-ADU values of ``track`` on rows ``r0:r1``, down to ``floor``."""
    sigma = track["width_px"] / 2.3548
    reach = sigma * np.sqrt(2 * np.log(max(track["peak_adu"] / floor, 1.0))) + 1
    c, s = np.cos(track["theta"]), np.sin(track["theta"])
    cols = slice(0, nx)
    if abs(s) > 1e-3:
        xs = [track["px"] + (y - track["py"]) * c / s for y in (r0, r1 - 1)]
        lo = max(0, int(np.floor(min(xs) - reach / abs(s))))
        cols = slice(lo, max(lo, min(nx, int(np.ceil(max(xs) + reach / abs(s))) + 1)))
    xx = np.arange(cols.start, cols.stop, dtype=np.float32)[None, :] - np.float32(track["px"])
    yy = np.arange(r0, r1, dtype=np.float32)[:, None] - np.float32(track["py"])
    d = (yy * np.float32(c) - xx * np.float32(s)) / np.float32(sigma)
    return cols, np.float32(track["peak_adu"]) * np.exp(np.float32(-0.5) * d * d)


def make_cosmics(
    config: PixelSimConfig, exptime: float, rng: np.random.Generator
) -> tuple[tuple[np.ndarray, np.ndarray], pa.Table]:
    """Cosmic-ray hits of 1-8 px: ``(sorted flat index, electrons)`` and a truth table."""
    nx, ny = config.detector.nx, config.detector.ny
    n = int(rng.poisson(config.cosmic_rate * nx * ny / 1e6 * exptime))
    x0, y0, angle = rng.uniform(0, nx, n), rng.uniform(0, ny, n), rng.uniform(0, 2 * np.pi, n)
    length = np.minimum(rng.geometric(0.4, n), 8)
    steps = np.arange(8)
    xs = np.floor(x0[:, None] + steps * np.cos(angle)[:, None]).astype(np.int64)
    ys = np.floor(y0[:, None] + steps * np.sin(angle)[:, None]).astype(np.int64)
    keep = (steps < length[:, None]) & (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
    energy = np.where(keep, config.cosmic_e * np.exp(rng.normal(0, 0.5, (n, 8))), 0.0)
    idx, inverse = np.unique((ys * nx + xs)[keep], return_inverse=True)
    deposit = np.bincount(inverse, weights=energy[keep], minlength=idx.size).astype(np.float32)
    table = {"x": x0, "y": y0, "length_px": length, "angle": angle, "electrons": energy.sum(1)}
    return (idx, deposit), pa.table(table)


def add_tracks(
    out: np.ndarray,
    mask: np.ndarray,
    tracks: list[dict[str, float]],
    r0: int,
    r1: int,
    floor: float,
    mask_floor: float,
) -> None:
    """Add ``tracks`` to the light ``out`` of rows ``r0:r1`` (truth ADU, down to ``floor``) and
    flag TRACK in the full-frame ``mask`` where a track adds more than ``mask_floor``."""
    nx = mask.shape[1]
    for track in tracks:
        cols, values = track_rows(track, r0, r1, nx, floor)
        out[:, cols] += values
        mask[r0:r1, cols] |= np.where(values > mask_floor, np.uint16(Flag.TRACK), 0).astype(
            np.uint16
        )


def flag_artefacts(
    mask: np.ndarray, saturated: np.ndarray, deposits: tuple[np.ndarray, np.ndarray] | None
) -> None:
    """Flag SATURATED in ``mask`` at the ``saturated`` pixels of the read-out and COSMIC_RAY on
    every pixel hit by cosmic-ray ``deposits`` (:func:`make_cosmics`; ``None`` for none)."""
    mask[saturated] |= np.uint16(Flag.SATURATED)
    if deposits is not None:
        mask.ravel()[deposits[0]] |= np.uint16(Flag.COSMIC_RAY)
