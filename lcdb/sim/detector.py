"""A CMOS detector model for the pixel-level simulator (the Mini-SiTian characterisation seed).

The signal chain of one pixel ``i`` in one exposure of ``t`` seconds::

    e_i   = Poisson(light_i * flat_i + dark_i * t) + cosmic-ray deposits      (electrons)
    e_i   = min(e_i, full_well)
    s_i   = e_i / gain_i                                                      (linear ADU)
    s'_i  = s_i * (1 + c_i * s_i / s_ref)                                     (nonlinearity)
    raw_i = bias_i + drift + s'_i + N(0, rn_i / gain_i) + RTN_i,   rounded, clipped to [0, sat]

``bias_i`` holds the fixed pattern (level, gradient, row and column banding, a corner glow and
per-pixel DSNU); ``RTN_i`` is a two-level telegraph offset of the salt-and-pepper pixels, in its
displaced state with probability ``duty_i`` independently in each frame. :func:`linearize` inverts
the nonlinearity. Maps are float32 so a full 9576x6388 frame stays within a few GB.

This module owns the detector parameters, its per-pixel truth maps and the read-out. The bias,
dark and flat sequences built on :func:`read_out` are in :mod:`lcdb.sim.calibframes`; their
names stay importable from here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

import numpy as np

from lcdb.flags import Flag

_log = logging.getLogger(__name__)

#: Pixels per processing chunk of :func:`read_out` (bounds the float64 temporaries).
CHUNK_PIXELS = 1 << 21

LightFn = Callable[[int, int], np.ndarray]


@dataclass(frozen=True)
class Detector:
    """Parameters of the simulated camera; defaults follow the ZWO ASI6200MM Pro of Mini-SiTian.

    Fractions are of all pixels; ``*_spread`` are fractional (log-normal sigma) scatters.
    Invalid values raise ``ValueError`` listing every broken rule, one message each.
    """

    nx: int = 1024
    ny: int = 1024
    bias_level_adu: float = 500.0
    bias_drift_adu: float = 0.03
    bias_gradient_adu: float = 2.0
    fpn_row_adu: float = 1.0
    fpn_col_adu: float = 2.0
    dsnu_adu: float = 0.5
    corner_glow_adu: float = 8.0
    gain_e_per_adu: float = 0.25
    gain_spread: float = 0.01
    bimodal_gain: bool = False
    bimodal_fraction: float = 0.05
    bimodal_offset: float = 0.08
    read_noise_e: float = 1.028
    read_noise_spread: float = 0.15
    dark_current_e: float = 0.002
    dark_spread: float = 0.3
    dark_secondary_fraction: float = 0.02
    dark_secondary_factor: float = 4.0
    hot_pixel_fraction: float = 5e-4
    hot_dark_range_e: tuple[float, float] = (0.5, 20.0)
    dead_pixel_fraction: float = 2e-4
    edge_cluster_fraction: float = 0.5
    rtn_fraction: float = 0.02
    rtn_amplitude_adu: tuple[float, float] = (50.0, 150.0)
    rtn_duty_range: tuple[float, float] = (0.2, 0.8)
    nonlinearity: float = -0.01
    nonlinearity_ref_adu: float = 50000.0
    nonlinearity_spread: float = 0.1
    full_well_e: float = 51000.0
    saturation_adu: int = 65535
    prnu: float = 0.01
    vignetting: float = 0.2

    def __post_init__(self) -> None:
        s_max = self.full_well_e / max(self.gain_e_per_adu * (1 - 4 * self.gain_spread), 1e-9)
        c_max = abs(self.nonlinearity) * (1 + 4 * self.nonlinearity_spread)
        check_rules(self, "Detector", [
            ("nx ny", lambda v: isinstance(v, int | np.integer) and 1 <= v <= 65536,
             "must be an integer in 1..65536"),
            ("saturation_adu", lambda v: 1 <= v <= 65535, "must be in 1..65535 (uint16 output)"),
            ("bias_level_adu", lambda v: 0 <= v < self.saturation_adu,
             "must be in [0, saturation_adu)"),
            ("bias_drift_adu bias_gradient_adu fpn_row_adu fpn_col_adu dsnu_adu corner_glow_adu "
             "read_noise_e read_noise_spread dark_current_e dark_spread nonlinearity_spread",
             lambda v: v >= 0, "must be >= 0"),
            ("gain_e_per_adu full_well_e nonlinearity_ref_adu dark_secondary_factor",
             lambda v: v > 0, "must be > 0"),
            ("gain_spread prnu vignetting", lambda v: 0 <= v < 0.5, "must be in [0, 0.5)"),
            ("bimodal_fraction dark_secondary_fraction hot_pixel_fraction dead_pixel_fraction "
             "rtn_fraction", lambda v: 0 <= v <= 0.5, "must be a fraction in [0, 0.5]"),
            ("edge_cluster_fraction", lambda v: 0 <= v <= 1, "must be in [0, 1]"),
            ("bimodal_offset", lambda v: v > -0.5, "must be > -0.5"),
            ("hot_dark_range_e", lambda v: 0 < v[0] <= v[1], "must satisfy 0 < lo <= hi"),
            ("rtn_amplitude_adu", lambda v: 0 <= v[0] <= v[1], "must satisfy 0 <= lo <= hi"),
            ("rtn_duty_range", lambda v: 0 < v[0] <= v[1] < 1, "must satisfy 0 < lo <= hi < 1"),
            ("nonlinearity", lambda v: 2 * c_max * s_max < self.nonlinearity_ref_adu,
             f"is too strong: the response turns over below full well ({s_max:.0f} ADU)"),
        ])  # fmt: skip

    @property
    def shape(self) -> tuple[int, int]:
        """Array shape ``(ny, nx)``."""
        return (self.ny, self.nx)


@dataclass(frozen=True)
class DetectorTruth:
    """Per-pixel truth maps of one detector, all float32 of shape ``(ny, nx)`` unless noted.

    ``flat`` is the optical response (vignetting x PRNU, dead pixels near 0) in electrons;
    the flat a pipeline measures in ADU is ``flat * gain.mean() / gain``. ``nonlinearity`` is the
    coefficient ``c_i`` of the module formula (a map, or a 0-d array when uniform).
    ``rtn_index`` are sorted flat indices of the salt-and-pepper pixels, ``rtn_amplitude`` their
    signed displacement (ADU) and ``rtn_duty`` the probability of the displaced state.
    ``static_mask`` (uint16) holds the flag bits BAD_PIXEL (hot and dead) and SALT_PEPPER.
    """

    bias: np.ndarray
    gain: np.ndarray
    read_noise: np.ndarray
    dark_current: np.ndarray
    flat: np.ndarray
    nonlinearity: np.ndarray
    rtn_index: np.ndarray
    rtn_amplitude: np.ndarray
    rtn_duty: np.ndarray
    static_mask: np.ndarray
    high_gain: np.ndarray


class Readout(NamedTuple):
    """One read-out frame: ``image`` (uint16 when noisy, float32 expectation when not), the
    ``saturated`` pixels (bool), and the expected ``variance`` in ADU² (only when noiseless)."""

    image: np.ndarray
    saturated: np.ndarray
    variance: np.ndarray | None


def check_rules(
    obj: object, what: str, rules: list[tuple[str, Callable[[Any], bool], str]]
) -> None:
    """Raise ``ValueError`` naming every field of ``obj`` that breaks a rule, one message each.

    ``rules`` are ``(space-separated field names, predicate, message)``.
    """
    errors = []
    for names, ok, message in rules:
        for name in names.split():
            value = getattr(obj, name)
            try:
                good = bool(ok(value))
            except (TypeError, ValueError, IndexError):
                good = False
            if not good:
                errors.append(f"{name}={value!r} {message}")
    if errors:
        raise ValueError(f"invalid {what}: " + "; ".join(errors))


def _normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def _defect_pixels(det: Detector, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Sorted unique flat indices of ``fraction`` of pixels, part of them near the edges."""
    n = round(fraction * det.nx * det.ny)
    n_edge = round(n * det.edge_cluster_fraction)
    x = rng.integers(0, det.nx, n)
    y = rng.integers(0, det.ny, n)
    band = max(1, round(0.02 * min(det.nx, det.ny)))
    depth = rng.integers(0, band, n_edge)
    side = rng.integers(0, 4, n_edge)
    ex, ey = x[:n_edge], y[:n_edge]
    ex[side == 0], ey[side == 1] = depth[side == 0], depth[side == 1]
    ex[side == 2] = det.nx - 1 - depth[side == 2]
    ey[side == 3] = det.ny - 1 - depth[side == 3]
    return np.unique(y * det.nx + x)


def make_detector_truth(det: Detector, rng: np.random.Generator) -> DetectorTruth:
    """Draw the per-pixel maps of ``det``.

    Parameters
    ----------
    det
        The detector parameters.
    rng
        Random generator (the only source of randomness).

    Returns
    -------
    DetectorTruth
        Bias pattern, gain, read noise, dark current, flat, nonlinearity, RTN pixels and the
        static mask of hot, dead and RTN pixels.
    """
    ny, nx = det.shape
    xs = np.arange(nx, dtype=np.float32)
    ys = np.arange(ny, dtype=np.float32)
    bias = _normal(rng, det.shape)
    bias *= det.dsnu_adu
    bias += det.bias_level_adu
    bias += (det.bias_gradient_adu * (xs / nx - 0.5))[None, :]
    bias += (det.fpn_row_adu * _normal(rng, (ny,)))[:, None]
    bias += (det.fpn_col_adu * _normal(rng, (nx,)))[None, :]
    scale = 0.05 * max(nx, ny)
    bias += det.corner_glow_adu * np.exp(-ys / scale)[:, None] * np.exp(-xs / scale)[None, :]

    gain = _normal(rng, det.shape)
    gain *= det.gain_spread
    np.exp(gain, out=gain)
    gain *= det.gain_e_per_adu / np.float32(np.exp(det.gain_spread**2 / 2))
    high_gain = np.zeros(0, dtype=np.int64)
    if det.bimodal_gain:
        n_high = round(det.bimodal_fraction * nx * ny)
        high_gain = np.sort(rng.choice(nx * ny, n_high, replace=False))
        gain.ravel()[high_gain] *= np.float32(1 + det.bimodal_offset)

    read_noise = _normal(rng, det.shape)
    read_noise *= det.read_noise_spread
    np.exp(read_noise, out=read_noise)
    read_noise *= det.read_noise_e

    dark = _normal(rng, det.shape)
    dark *= det.dark_spread
    np.exp(dark, out=dark)
    dark *= det.dark_current_e
    second = rng.choice(nx * ny, round(det.dark_secondary_fraction * nx * ny), replace=False)
    dark.ravel()[second] *= np.float32(det.dark_secondary_factor)
    hot = _defect_pixels(det, det.hot_pixel_fraction, rng)
    lo, hi = np.log(det.hot_dark_range_e)
    dark.ravel()[hot] = np.exp(rng.uniform(lo, hi, hot.size)).astype(np.float32)

    flat = _normal(rng, det.shape)
    flat *= det.prnu
    flat += 1.0
    corner2 = max(((nx - 1) ** 2 + (ny - 1) ** 2) / 4, 1)  # radial, 1 - vignetting at corners
    rho2_x, rho2_y = (xs - (nx - 1) / 2) ** 2 / corner2, (ys - (ny - 1) / 2) ** 2 / corner2
    flat *= 1.0 - det.vignetting * (rho2_y[:, None] + rho2_x[None, :])
    dead = _defect_pixels(det, det.dead_pixel_fraction, rng)
    flat.ravel()[dead] *= rng.uniform(0.0, 0.3, dead.size).astype(np.float32)

    if det.nonlinearity_spread > 0:
        nonlin = _normal(rng, det.shape)
        nonlin *= det.nonlinearity_spread
        nonlin += 1.0
        nonlin *= det.nonlinearity
    else:
        nonlin = np.array(det.nonlinearity, dtype=np.float32)

    n_rtn = round(det.rtn_fraction * nx * ny)
    rtn_index = np.sort(rng.choice(nx * ny, n_rtn, replace=False)).astype(np.int64)
    sign = np.where(rng.random(n_rtn) < 0.5, -1.0, 1.0)
    rtn_amplitude = (sign * rng.uniform(*det.rtn_amplitude_adu, n_rtn)).astype(np.float32)
    rtn_duty = rng.uniform(*det.rtn_duty_range, n_rtn).astype(np.float32)

    static = np.zeros(det.shape, dtype=np.uint16)
    static.ravel()[np.union1d(hot, dead)] |= np.uint16(Flag.BAD_PIXEL)
    static.ravel()[rtn_index] |= np.uint16(Flag.SALT_PEPPER)
    _log.debug("detector truth: %d hot, %d dead, %d RTN pixels", hot.size, dead.size, n_rtn)
    return DetectorTruth(
        bias,
        gain,
        read_noise,
        dark,
        flat,
        nonlin,
        rtn_index,
        rtn_amplitude,
        rtn_duty,
        static,
        high_gain,
    )


def apply_nonlinearity(signal: np.ndarray, coeff: np.ndarray | float, ref_adu: float) -> np.ndarray:
    """Measured ADU ``s * (1 + c * s / ref)`` for linear ADU ``signal`` (above bias)."""
    return signal * (1 + coeff * signal / np.float32(ref_adu))


def linearize(measured: np.ndarray, coeff: np.ndarray | float, ref_adu: float) -> np.ndarray:
    """Invert :func:`apply_nonlinearity`: linear ADU from bias-subtracted measured ADU."""
    k = np.asarray(coeff, dtype=np.float64) / ref_adu
    m = np.asarray(measured, dtype=np.float64)
    disc = np.sqrt(np.maximum(1 + 4 * k * m, 0.0))
    return (2 * m / (1 + disc)).astype(np.float32)


def read_out(
    det: Detector,
    truth: DetectorTruth,
    rng: np.random.Generator,
    *,
    exptime: float,
    light: LightFn | None = None,
    deposits: tuple[np.ndarray, np.ndarray] | None = None,
    noise: bool = True,
) -> Readout:
    """Expose and read out the detector; see the module docstring for the signal chain.

    Parameters
    ----------
    det, truth
        The detector and its per-pixel maps.
    rng
        Random generator; consumed in a fixed order (drift, RTN states, then row chunks).
    exptime
        Exposure time in seconds (dark current accumulates over it).
    light
        ``light(r0, r1)`` returns the expected photo-electrons of rows ``r0:r1`` at unit
        response (before the flat); ``None`` for a dark or bias.
    deposits
        ``(flat_index, electrons)`` charge added after the photon noise (cosmic rays).
    noise
        If false, return the expectation (float32, unrounded, no RTN) and its variance.
    """
    ny, nx = det.shape
    drift = float(rng.normal(0.0, det.bias_drift_adu)) if det.bias_drift_adu > 0 else 0.0
    rtn_on = rng.random(truth.rtn_index.size) < truth.rtn_duty
    rtn_idx = truth.rtn_index[rtn_on]
    rtn_val = truth.rtn_amplitude[rtn_on]
    image = np.empty(det.shape, dtype=np.uint16 if noise else np.float32)
    saturated = np.empty(det.shape, dtype=bool)
    variance = None if noise else np.empty(det.shape, dtype=np.float32)
    rows = max(1, CHUNK_PIXELS // nx)
    uniform_nl = truth.nonlinearity.ndim == 0
    for r0 in range(0, ny, rows):
        r1 = min(ny, r0 + rows)
        sl = slice(r0, r1)
        mu = (
            np.zeros((r1 - r0, nx), np.float32) if light is None else light(r0, r1) * truth.flat[sl]
        )
        if exptime > 0:
            mu += truth.dark_current[sl] * np.float32(exptime)
        electrons = rng.poisson(mu).astype(np.float32) if noise else mu
        if deposits is not None:
            a, b = np.searchsorted(deposits[0], [r0 * nx, r1 * nx])
            np.add.at(electrons.ravel(), deposits[0][a:b] - r0 * nx, deposits[1][a:b])
        np.minimum(electrons, np.float32(det.full_well_e), out=electrons)
        gain = truth.gain[sl]
        signal = electrons / gain
        coeff = truth.nonlinearity if uniform_nl else truth.nonlinearity[sl]
        raw = apply_nonlinearity(signal, coeff, det.nonlinearity_ref_adu)
        raw += truth.bias[sl]
        raw += np.float32(drift)
        rn_adu = truth.read_noise[sl] / gain
        if noise:
            raw += _normal(rng, raw.shape) * rn_adu
            a, b = np.searchsorted(rtn_idx, [r0 * nx, r1 * nx])
            raw.ravel()[rtn_idx[a:b] - r0 * nx] += rtn_val[a:b]
            np.rint(raw, out=raw)
        else:
            slope = 1 + 2 * coeff * signal / np.float32(det.nonlinearity_ref_adu)
            variance[sl] = electrons / gain**2 * slope**2 + rn_adu**2 + np.float32(1 / 12)
        saturated[sl] = raw >= det.saturation_adu
        np.clip(raw, 0, det.saturation_adu, out=raw)
        image[sl] = raw
    return Readout(image, saturated, variance)


def detector_summary(det: Detector, truth: DetectorTruth) -> dict[str, Any]:
    """Scalar truths of ``det`` and ``truth`` (JSON-ready), the content of ``detector.json``."""
    rn_adu = truth.read_noise / truth.gain
    bad = (truth.static_mask & Flag.BAD_PIXEL) > 0
    return {
        "parameters": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(det).items()},
        "nx": det.nx,
        "ny": det.ny,
        "gain_e_per_adu": float(truth.gain.mean(dtype=np.float64)),
        "gain_e_per_adu_median": float(np.median(truth.gain)),
        "n_high_gain_pixels": int(truth.high_gain.size),
        "read_noise_e": float(np.median(truth.read_noise)),
        "read_noise_rms_e": float(np.sqrt(np.mean(truth.read_noise**2, dtype=np.float64))),
        "read_noise_rms_adu": float(np.sqrt(np.mean(rn_adu**2, dtype=np.float64))),
        "dark_current_e_per_s": float(np.median(truth.dark_current)),
        "dark_current_mean_e_per_s": float(truth.dark_current.mean(dtype=np.float64)),
        "bias_level_adu": det.bias_level_adu,
        "bias_mean_adu": float(truth.bias.mean(dtype=np.float64)),
        "fpn_row_adu": det.fpn_row_adu,
        "fpn_col_adu": det.fpn_col_adu,
        "dsnu_adu": det.dsnu_adu,
        "nonlinearity": {
            "model": "measured = s * (1 + c * s / s_ref), s = linear ADU above bias",
            "c": det.nonlinearity,
            "c_spread": det.nonlinearity_spread,
            "s_ref_adu": det.nonlinearity_ref_adu,
            "map": "detector/nonlinearity.fits" if truth.nonlinearity.ndim else None,
        },
        "saturation_adu": det.saturation_adu,
        "full_well_e": det.full_well_e,
        "n_bad_pixels": int(bad.sum()),
        "n_rtn_pixels": int(truth.rtn_index.size),
        "flat_mean": float(truth.flat.mean(dtype=np.float64)),
    }


def __getattr__(name: str) -> Any:
    """Resolve the names that moved to :mod:`lcdb.sim.calibframes` (imported lazily: it
    imports this module)."""
    from lcdb.sim import calibframes

    if name in calibframes.__all__:
        return getattr(calibframes, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
