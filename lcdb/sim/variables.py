"""Injected variable stars and their true light curves.

Each star carries six truth parameters: ``var_type``, ``period`` (days; NaN where there is
none), ``amplitude`` (peak-to-peak, mag), ``t0`` (MJD), ``shape`` and ``width`` (meaning per
type, below). :func:`magnitude_offset` turns them into the offset ``dm(t)`` added to the
star's V at time ``t`` (positive = fainter). The star's ``v`` is its mean magnitude for
``sin``, ``rrlyr`` and ``lpv``, its out-of-eclipse magnitude for ``ea`` and its quiescent
magnitude for ``flare``.

===========  =========================================================================
var_type     light curve
===========  =========================================================================
constant     ``dm = 0``
sin          ``dm = A/2 sin(2 pi (t - t0) / P)``
rrlyr        asymmetric sawtooth (RRab-like): maximum light (``-A/2``) at phase 0, linear
             decline to ``+A/2`` over ``1 - shape`` of the cycle, rise over ``shape``
             (``shape`` in [0.1, 0.25])
ea           Algol-type eclipsing binary: ``+A`` at the primary eclipse (phase 0),
             ``+shape * A`` at the secondary (phase 0.5); eclipse profile
             ``1 - (dphase / width)^2`` with ``width`` the half-width in phase
lpv          semi-regular long-period variable: ``A/2 sin(2 pi (t-t0)/P + shape sin(2 pi
             (t-t0) / (width P)))``: cycles of irregular length, ``period`` the mean one
flare        single flare peaking at ``t0``: flux ratio ``1 + (10^(0.4 A) - 1) p(t)``,
             Gaussian rise of sigma ``width`` days, exponential decay of ``shape`` days
===========  =========================================================================
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MIX",
    "VAR_TYPES",
    "assign_variables",
    "magnitude_offset",
    "offset_from_codes",
    "type_codes",
]

#: Types of variability, in code order (the code of a type is its index).
VAR_TYPES: tuple[str, ...] = ("constant", "sin", "rrlyr", "ea", "lpv", "flare")

#: Default relative frequencies of the variable types.
DEFAULT_MIX: dict[str, float] = {"sin": 0.25, "rrlyr": 0.15, "ea": 0.25, "lpv": 0.2, "flare": 0.15}

#: Period ranges (days), log-uniform, per periodic type.
PERIOD_RANGES: dict[str, tuple[float, float]] = {
    "sin": (0.1, 30.0),
    "rrlyr": (0.3, 0.9),
    "ea": (0.3, 20.0),
    "lpv": (20.0, 200.0),
}


def type_codes(var_type: Sequence[str] | np.ndarray) -> np.ndarray:
    """Integer codes (indices into :data:`VAR_TYPES`) of an array of type names."""
    names = np.asarray(var_type, dtype=object)
    codes = np.full(names.shape, -1, dtype=np.int8)
    for i, name in enumerate(VAR_TYPES):
        codes[names == name] = i
    if (codes < 0).any():
        unknown = sorted({str(s) for s in names[codes < 0]})
        raise ValueError(f"unknown var_type(s): {', '.join(unknown)} (known: {VAR_TYPES})")
    return codes


def assign_variables(
    n_stars: int,
    *,
    rng: np.random.Generator,
    fraction: float,
    t_start: float,
    t_end: float,
    amp_range: tuple[float, float] = (0.01, 1.0),
    mix: Mapping[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """Choose the variable stars and draw their parameters.

    Parameters
    ----------
    n_stars
        Number of stars.
    rng
        Random generator.
    fraction
        Fraction of stars made variable (rounded to a whole number of stars).
    t_start, t_end
        MJD span of the survey: flares peak inside it; ``t0`` of periodic types is drawn in
        the first period after ``t_start``.
    amp_range
        Peak-to-peak amplitudes are log-uniform in this range, mag.
    mix
        Relative frequencies of the types (default :data:`DEFAULT_MIX`).

    Returns
    -------
    dict
        Arrays of length ``n_stars``: ``var_type`` (object), ``period``, ``amplitude``,
        ``t0``, ``shape``, ``width`` (float64, NaN for constant stars).
    """
    mix = dict(DEFAULT_MIX if mix is None else mix)
    names = list(mix)
    probs = np.array([mix[k] for k in names], dtype=float)
    probs /= probs.sum()
    n_var = round(fraction * n_stars)
    chosen = np.sort(rng.choice(n_stars, n_var, replace=False))
    kinds = rng.choice(len(names), n_var, p=probs)
    out = {k: np.full(n_stars, np.nan) for k in ("period", "amplitude", "t0", "shape", "width")}
    var_type = np.full(n_stars, "constant", dtype=object)
    lo, hi = np.log10(amp_range[0]), np.log10(amp_range[1])
    for k, name in enumerate(names):
        idx = chosen[kinds == k]
        m = idx.size
        var_type[idx] = name
        out["amplitude"][idx] = 10.0 ** rng.uniform(lo, hi, m)
        if name in PERIOD_RANGES:
            p_lo, p_hi = PERIOD_RANGES[name]
            period = 10.0 ** rng.uniform(math.log10(p_lo), math.log10(p_hi), m)
            out["period"][idx] = period
            out["t0"][idx] = t_start + rng.random(m) * period
        if name == "rrlyr":
            out["shape"][idx] = rng.uniform(0.1, 0.25, m)
        elif name == "ea":
            out["shape"][idx] = rng.uniform(0.0, 0.8, m)
            out["width"][idx] = rng.uniform(0.03, 0.12, m)
        elif name == "lpv":
            out["shape"][idx] = rng.uniform(0.5, 2.0, m)
            out["width"][idx] = rng.uniform(3.0, 10.0, m)
        elif name == "flare":
            out["t0"][idx] = rng.uniform(t_start, t_end, m)
            out["shape"][idx] = 10.0 ** rng.uniform(math.log10(0.02), math.log10(2.0), m)
            out["width"][idx] = out["shape"][idx] * rng.uniform(0.03, 0.2, m)
    out["var_type"] = var_type
    return out


def offset_from_codes(
    code: np.ndarray,
    period: np.ndarray,
    amplitude: np.ndarray,
    t0: np.ndarray,
    shape: np.ndarray,
    width: np.ndarray,
    mjd: np.ndarray,
) -> np.ndarray:
    """:func:`magnitude_offset` on arrays already broadcast together, types as codes."""
    arrays = np.broadcast_arrays(code, period, amplitude, t0, shape, width, mjd)
    code, period, amp, t0, shape, width, t = arrays
    dm = np.zeros(t.shape, dtype=float)
    for c in np.unique(code):
        name = VAR_TYPES[int(c)]
        if name == "constant":
            continue
        s = code == c
        a, dt = amp[s], t[s] - t0[s]
        if name == "flare":
            tau_d, tau_r = shape[s], width[s]
            profile = np.where(
                dt < 0,
                np.exp(-0.5 * (dt / tau_r) ** 2),
                np.exp(-np.clip(dt, 0, None) / tau_d),
            )
            dm[s] = -2.5 * np.log10(1.0 + (10.0 ** (0.4 * a) - 1.0) * profile)
            continue
        phase = np.mod(dt / period[s], 1.0)
        if name == "sin":
            dm[s] = 0.5 * a * np.sin(2 * np.pi * phase)
        elif name == "rrlyr":
            rise = shape[s]
            frac = np.where(phase < 1 - rise, phase / (1 - rise), (1 - phase) / rise)
            dm[s] = a * (frac - 0.5)
        elif name == "ea":
            d_prim = np.minimum(phase, 1 - phase) / width[s]
            d_sec = np.abs(phase - 0.5) / width[s]
            dm[s] = a * (
                np.clip(1 - d_prim**2, 0, None) + shape[s] * np.clip(1 - d_sec**2, 0, None)
            )
        elif name == "lpv":
            modulation = shape[s] * np.sin(2 * np.pi * dt / (width[s] * period[s]))
            dm[s] = 0.5 * a * np.sin(2 * np.pi * phase + modulation)
    return dm


def magnitude_offset(star_truth: Any, mjd: np.ndarray | float) -> np.ndarray:
    """True magnitude offset of stars at times ``mjd`` (vectorised).

    Parameters
    ----------
    star_truth
        Anything indexable by column name with array-like columns (a pyarrow Table such as
        ``truth/stars.parquet``, a polars DataFrame, a dict of arrays) holding ``var_type``,
        ``period``, ``amplitude``, ``t0``, ``shape``, ``width`` for ``n`` stars.
    mjd
        MJD (mid-exposure): a scalar, an array of shape ``(n,)`` (one time per star), or an
        array of shape ``(n, m)`` (``m`` times per star: whole light curves).

    Returns
    -------
    numpy.ndarray
        ``dm`` with the broadcast shape; ``V(t) = v + dm``. Constant stars give 0.
    """

    def col(name: str) -> np.ndarray:
        value = star_truth[name]
        if hasattr(value, "to_numpy"):
            value = value.to_numpy(zero_copy_only=False) if _is_arrow(value) else value.to_numpy()
        return np.asarray(value)

    code = type_codes(col("var_type"))
    params = [np.asarray(col(k), dtype=float) for k in ("period", "amplitude", "t0")]
    params += [np.asarray(col(k), dtype=float) for k in ("shape", "width")]
    t = np.asarray(mjd, dtype=float)
    if t.ndim == 2:
        code = code[:, None]
        params = [p[:, None] for p in params]
    return offset_from_codes(code, *params, t)


def _is_arrow(value: object) -> bool:
    return type(value).__module__.startswith("pyarrow")
