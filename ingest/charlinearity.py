"""Linearity over a flat exposure ladder and the nonlinearity correction product.

Model (as in :mod:`lcdb.sim.detector`): a pixel's measured signal above bias and dark is
``m = s * (1 + c * s / s_ref)`` for linear signal ``s`` (ADU), with ``s = a * t`` at constant
illumination. So ``m(t) = a t + b t^2`` and ``c = b * s_ref / a^2``.

* camera: the seed's figures from the mean signal of the central region of each flat against
  exposure time: a straight-line fit, its R^2 and the residuals in percent (*nonlinearity*;
  the free intercept absorbs part of a curvature, so residuals of a line through the origin,
  proportionality, are given too);
  a quadratic with offset gives the region's ``c`` and the exposure-time offset ``-p0 / p1``;
* per pixel: a weighted through-origin quadratic per pixel over the exposure groups (common
  weights, per-pixel validity), with the error of ``c`` propagated per pixel (sandwich form).

Correction product ``nonlinearity.fits`` (the reduction's per-pixel polynomial): primary HDU a
float32 cube ``C`` of shape ``(NLORDER, ny, nx)`` with, for ``u = m / NLSREF`` (``m`` = raw -
bias - dark, ADU), ``s / NLSREF = sum_k C[k] * u**(k + 1)``; plane 0 is 1. For this model the
planes are the series inverse ``C[k] = (-c)^k Catalan(k)`` (1, -c, 2c^2, -5c^3, ...), accurate to
<1e-6 relative for ``|c| u < 0.02``; so ``c = -C[1]`` (the camera value everywhere unless the
per-pixel option is set, ``NLPERPIX``). HDUs ``PIXEL_C`` and ``PIXEL_C_ERR``: the per-pixel fit
of ``c`` and its error (NaN where not measured), whether used or not.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from math import comb
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

_log = logging.getLogger(__name__)


def linearize(m: np.ndarray, c: float, ref: float) -> np.ndarray:
    """Linear signal from measured ``m`` for coefficient ``c`` (exact inverse of the model)."""
    k = c / ref
    if k == 0:
        return m
    return 2 * m / (1 + np.sqrt(np.maximum(1 + 4 * k * m, 0.0)))


def through_origin_quadratic(
    t: np.ndarray, s: np.ndarray, w: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """Weighted least squares ``s = a t + b t^2``: ``a``, ``b`` and the 2x2 covariance (for
    weights = inverse variances)."""
    x = np.stack([t, t**2], axis=1)
    a_mat = x.T @ (w[:, None] * x)
    cov = np.linalg.inv(a_mat)
    a, b = cov @ (x.T @ (w * s))
    return float(a), float(b), cov


def camera_linearity(
    t: np.ndarray, s: np.ndarray, *, ref: float, min_signal: float
) -> dict[str, Any]:
    """The seed's linearity figures from per-frame mean signals ``s`` (ADU) at times ``t`` (s)."""
    t, s = np.asarray(t, np.float64), np.asarray(s, np.float64)
    out: dict[str, Any] = {
        "n_frames": int(t.size),
        "exptime_s": t.tolist(),
        "signal_adu": s.tolist(),
    }
    if np.unique(t).size < 3:
        out["note"] = "needs flats at three or more exposure times"
        return out
    x = np.stack([np.ones_like(t), t], axis=1)
    coef, *_ = np.linalg.lstsq(x, s, rcond=None)
    fit = x @ coef
    r2 = 1 - np.sum((s - fit) ** 2) / np.sum((s - s.mean()) ** 2)
    nl = 100 * (s - fit) / fit
    slope0 = float(np.sum(t * s) / np.sum(t * t))
    nl0 = 100 * (s - slope0 * t) / (slope0 * t)
    high = s > min_signal
    xq = np.stack([np.ones_like(t), t, t**2], axis=1)
    w = 1 / np.maximum(s, 1.0)
    aq = xq.T @ (w[:, None] * xq)
    pq = np.linalg.solve(aq, xq.T @ (w * s))
    dof = max(t.size - 3, 1)
    chi2 = float(np.sum(w * (s - xq @ pq) ** 2))
    cov = np.linalg.inv(aq) * (chi2 / dof if t.size > 3 else 1.0)
    p0, p1, p2 = pq
    c = p2 * ref / p1**2
    grad = np.array([0.0, -2 * p2 * ref / p1**3, ref / p1**2])
    out.update(
        {
            "slope_adu_per_s": float(coef[1]),
            "intercept_adu": float(coef[0]),
            "r2": float(r2),
            "nonlinearity_percent": nl.tolist(),
            "max_abs_nonlinearity_percent": float(np.max(np.abs(nl))),
            "min_signal_adu": min_signal,
            "max_abs_nonlinearity_percent_above_min": float(np.max(np.abs(nl[high])))
            if high.any()
            else None,
            "origin_slope_adu_per_s": slope0,
            "nonlinearity_origin_percent": nl0.tolist(),
            "max_abs_nonlinearity_origin_percent": float(np.max(np.abs(nl0))),
            "quadratic_c": float(c),
            "quadratic_c_err": float(np.sqrt(grad @ cov @ grad)),
            "exposure_offset_s": float(-p0 / p1),
        }
    )
    return out


def pixel_quadratic(
    t: np.ndarray,
    m: list[np.ndarray],
    valid: list[np.ndarray],
    var: list[np.ndarray],
    w: np.ndarray,
    ref: float,
    c_prior: float,
    min_points: int = 3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel ``c``, its error, and the slope ``a`` (ADU/s) from group means ``m[g]``.

    ``w[g]`` are common weights, ``valid[g]`` per-pixel masks, ``var[g]`` per-pixel variances
    of ``m[g]`` (for the error). ``c = b ref / a^2`` is corrected for its second-order bias
    (``E[c] - c = ref (3 b Var(a) / a^4 - 2 Cov(a, b) / a^3)``), which for a few flat pairs per
    level is comparable to the error of a camera mean of ``c``. The error propagation takes
    ``b / a`` from ``c_prior`` rather than from the pixel's own noisy ``b``. Pixels with fewer
    than ``min_points`` valid groups get NaN.
    """
    shape = m[0].shape
    acc = {k: np.zeros(shape) for k in ("a11", "a12", "a22", "y1", "y2", "n")}
    for tg, mg, vg, wg in zip(t, m, valid, w, strict=True):
        ww = np.where(vg, wg, 0.0)
        acc["a11"] += ww * tg**2
        acc["a12"] += ww * tg**3
        acc["a22"] += ww * tg**4
        acc["y1"] += ww * tg * mg
        acc["y2"] += ww * tg**2 * mg
        acc["n"] += vg
    det = acc["a11"] * acc["a22"] - acc["a12"] ** 2
    ok = (acc["n"] >= min_points) & (det > 0)
    det = np.where(ok, det, 1.0)
    a = (acc["a22"] * acc["y1"] - acc["a12"] * acc["y2"]) / det
    b = (acc["a11"] * acc["y2"] - acc["a12"] * acc["y1"]) / det
    va, vb, cab = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    for tg, vg, sg, wg in zip(t, valid, var, w, strict=True):
        ww = np.where(vg, wg, 0.0)
        da = ww * (acc["a22"] * tg - acc["a12"] * tg**2) / det
        db = ww * (acc["a11"] * tg**2 - acc["a12"] * tg) / det
        va += da**2 * sg
        vb += db**2 * sg
        cab += da * db * sg
    ok &= a > 0
    a_safe = np.where(ok, a, 1.0)
    q = c_prior * a_safe / ref
    # second-order bias of the ratio b ref / a^2 (a and b share the noise of the data)
    c = (b - 3 * q * va / a_safe + 2 * cab / a_safe) * ref / a_safe**2
    var_c = (ref / a_safe**2) ** 2 * (vb - 4 * q * cab + 4 * q**2 * va)
    nan = np.float32(np.nan)
    return (
        np.where(ok, c, nan).astype(np.float32),
        np.where(ok, np.sqrt(np.maximum(var_c, 0)), nan).astype(np.float32),
        np.where(ok, a, nan).astype(np.float32),
    )


def camera_mean(
    x: np.ndarray, err: np.ndarray, mask: np.ndarray, clip: float = 5.0
) -> dict[str, float]:
    """Mean of per-pixel ``x`` over ``mask`` (values beyond ``clip`` robust sigmas left out),
    its error from the scatter, the pull width ``std(x) / rms(err)`` and the intrinsic spread.

    Unweighted on purpose: per-pixel errors depend on each pixel's own (noisy) response, so
    inverse-variance weights would correlate with the estimates and bias the mean. Works on
    the full maps with masked reductions (no copies of a full frame).
    """
    ok = mask & np.isfinite(x) & np.isfinite(err) & (err > 0)
    n_ok = int(ok.sum())
    if n_ok < 3:
        return {"mean": float("nan"), "err": float("nan"), "n": n_ok}
    k = max(1, int(np.sqrt(n_ok / 2e6)))
    sample = x[::k, ::k][ok[::k, ::k]]
    med = float(np.median(sample))
    width = clip * 1.4826 * float(np.median(np.abs(sample - med)))
    sums = np.zeros(4)  # n, sum x, sum x^2 (about the median), sum err^2
    for r0 in range(0, x.shape[0], 256):  # row chunks: no full-frame temporaries
        sl = slice(r0, r0 + 256)
        d = x[sl].astype(np.float64) - med
        keep = ok[sl] & (np.abs(d) <= width)
        d, e = d[keep], err[sl][keep].astype(np.float64)
        sums += (d.size, d.sum(), np.square(d).sum(), np.square(e).sum())
    n = int(sums[0])
    mean_d = sums[1] / n
    var = sums[2] / n - mean_d**2
    rms_err = float(np.sqrt(sums[3] / n))
    return {
        "mean": med + mean_d,
        "err": float(np.sqrt(var / (n - 1))),
        "n": n,
        "scatter_over_error": float(np.sqrt(var) / rms_err),
        "intrinsic_spread": float(np.sqrt(max(var - rms_err**2, 0.0))),
    }


def correction_planes(c: np.ndarray | float, order: int) -> Iterator[np.ndarray]:
    """The planes ``C[k] = (-c)^k Catalan(k)``, k = 0..order-1 (see the module docstring),
    one at a time."""
    c = np.asarray(c, np.float32)
    for k in range(order):
        yield (-c) ** k * np.float32(comb(2 * k, k) / (k + 1))


def write_nonlinearity(
    path: Path,
    c_map: np.ndarray,
    c_err: np.ndarray,
    *,
    ref: float,
    order: int,
    per_pixel: bool,
    camera_c: float,
    cards: dict[str, Any] | None = None,
) -> None:
    """Write ``nonlinearity.fits`` (cube streamed plane by plane; see the module docstring);
    ``cards`` are extra primary-header keywords."""
    ny, nx = c_map.shape
    if per_pixel:
        coeff = np.where(np.isfinite(c_map), c_map, np.float32(camera_c)).astype(np.float32)
    else:
        coeff = np.float32(camera_c)
    hdr = fits.Header()
    for key, value in (
        ("SIMPLE", True),
        ("BITPIX", -32),
        ("NAXIS", 3),
        ("NAXIS1", nx),
        ("NAXIS2", ny),
        ("NAXIS3", order),
    ):
        hdr[key] = value
    hdr["NLMODEL"] = ("MEAS=S*(1+C*S/NLSREF)", "forward model, S linear ADU")
    hdr["NLSREF"] = (float(ref), "reference signal, ADU")
    hdr["NLORDER"] = (order, "planes: coefficients of u**1 .. u**NLORDER")
    hdr["NLPERPIX"] = (bool(per_pixel), "per-pixel fit (else camera c everywhere)")
    hdr["NLCAMC"] = (float(camera_c), "camera coefficient c")
    hdr["COMMENT"] = "S/NLSREF = sum_k CUBE[k] * u**(k+1), u = (raw - bias - dark)/NLSREF"
    for key, value in (cards or {}).items():
        hdr[key] = value
    path.unlink(missing_ok=True)  # a StreamingHDU appends to an existing file
    stream = fits.StreamingHDU(str(path), hdr)
    for plane in correction_planes(coeff, order):
        for r0 in range(0, ny, 1024):  # uniform planes are written without a full-frame array
            rows = min(1024, ny - r0)
            stream.write(plane[r0 : r0 + rows] if plane.ndim else np.full((rows, nx), plane))
    stream.close()
    del coeff
    for name, data in (("PIXEL_C", c_map), ("PIXEL_C_ERR", c_err)):
        fits.append(path, data.astype(np.float32, copy=False), fits.Header([("EXTNAME", name)]))
