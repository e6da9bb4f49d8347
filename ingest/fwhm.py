"""Seeing: Moffat fits to bright isolated stars, and 2-D polynomials over the frame.

:func:`measure_fwhm` picks the brightest isolated stars without flags, fits each with a circular
Moffat profile (a vectorised Levenberg-Marquardt over all stamps at once: amplitude, centre,
width and beta), and returns the median FWHM and a 2nd-order 2-D polynomial of FWHM over the
frame (the FWHM of a wide-field camera grows towards the corners; Mini-SiTian Fig. 10).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from scipy.spatial import cKDTree

_log = logging.getLogger(__name__)

_MOFFAT_BETA = 2.5


def fit_moffat(
    stamps: np.ndarray, x0: np.ndarray, y0: np.ndarray, fwhm0: float, n_iter: int = 25
) -> np.ndarray:
    """Vectorised Levenberg-Marquardt fit of circular Moffat profiles to ``stamps``.

    Parameters
    ----------
    stamps
        ``(n, m, m)`` background-subtracted cut-outs.
    x0, y0
        First guesses of the centres in stamp coordinates.
    fwhm0
        First guess of the FWHM, px.

    Returns
    -------
    fwhm : ndarray
        Fitted FWHM per stamp (NaN where the fit failed or hit a bound).
    """
    n, m, _ = stamps.shape
    gy, gx = np.mgrid[0:m, 0:m].astype(np.float64)
    gx, gy, data = gx.ravel(), gy.ravel(), stamps.reshape(n, -1).astype(np.float64)
    alpha0 = fwhm0 / (2 * np.sqrt(2 ** (1 / _MOFFAT_BETA) - 1))
    start = [data.max(axis=1), x0, y0, np.full(n, np.log(alpha0)), np.full(n, _MOFFAT_BETA)]
    p = np.stack(start, axis=1)

    def model(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a, xc, yc, la, beta = p.T
        alpha2 = np.exp(2 * la)[:, None]
        r2 = (gx - xc[:, None]) ** 2 + (gy - yc[:, None]) ** 2
        u = 1 + r2 / alpha2
        f = u ** (-beta[:, None])
        mdl = a[:, None] * f
        g = a[:, None] * beta[:, None] * f / u / alpha2 * 2
        jac = np.stack([f, g * (gx - xc[:, None]), g * (gy - yc[:, None]), g * r2,
                        -mdl * np.log(u)], axis=2)  # fmt: skip
        return mdl, jac

    lam = np.full(n, 1e-2)
    mdl, jac = model(p)
    cost = ((data - mdl) ** 2).sum(1)
    for _ in range(n_iter):
        jtj = np.einsum("npi,npj->nij", jac, jac)
        jtr = np.einsum("npi,np->ni", jac, data - mdl)
        damp = jtj + lam[:, None, None] * np.eye(5) * np.diagonal(jtj, axis1=1, axis2=2)[:, :, None]
        try:
            step = np.linalg.solve(damp + 1e-12 * np.eye(5), jtr[:, :, None])[:, :, 0]
        except np.linalg.LinAlgError:
            break
        trial = p + step
        trial[:, 4] = np.clip(trial[:, 4], 1.05, 20.0)
        trial[:, 3] = np.clip(trial[:, 3], np.log(0.2), np.log(m))
        t_mdl, t_jac = model(trial)
        t_cost = ((data - t_mdl) ** 2).sum(1)
        better = t_cost < cost
        p[better], mdl[better], jac[better], cost[better] = (
            trial[better], t_mdl[better], t_jac[better], t_cost[better])  # fmt: skip
        lam = np.where(better, lam / 3, lam * 4)
    alpha, beta = np.exp(p[:, 3]), p[:, 4]
    fwhm = 2 * alpha * np.sqrt(2 ** (1 / beta) - 1)
    bad = (beta <= 1.06) | (beta >= 19.9) | (p[:, 0] <= 0) | ~np.isfinite(fwhm)
    bad |= (np.abs(p[:, 1] - x0) > 2) | (np.abs(p[:, 2] - y0) > 2)
    return np.where(bad, np.nan, fwhm)


def poly_terms(x: np.ndarray, y: np.ndarray, order: int, shape: tuple[int, int]) -> np.ndarray:
    """Design matrix of a 2-D polynomial in positions normalised to [-1, 1] over ``shape``."""
    u = 2 * np.asarray(x, np.float64) / max(shape[1] - 1, 1) - 1
    v = 2 * np.asarray(y, np.float64) / max(shape[0] - 1, 1) - 1
    return np.stack([u**i * v**j for i in range(order + 1) for j in range(order + 1 - i)], 1)


def fit_poly2d(
    x: np.ndarray,
    y: np.ndarray,
    values: np.ndarray,
    order: int,
    shape: tuple[int, int],
    nsigma: float = 3.0,
    iterations: int = 3,
) -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray], float, np.ndarray]:
    """Clipped least-squares 2-D polynomial; returns a function of (x, y) and the fit rms."""
    a = poly_terms(x, y, order, shape)
    keep = np.isfinite(values)
    coef = np.zeros(a.shape[1])
    for _ in range(iterations):
        if keep.sum() <= a.shape[1]:
            break
        coef = np.linalg.lstsq(a[keep], values[keep], rcond=None)[0]
        resid = values - a @ coef
        rms = 1.4826 * np.median(np.abs(resid[keep])) or np.std(resid[keep])
        new = np.isfinite(values) & (np.abs(resid) <= nsigma * max(rms, 1e-12))
        if (new == keep).all():
            break
        keep = new
    resid = (values - a @ coef)[keep]
    rms = float(np.std(resid)) if resid.size > 1 else float("nan")
    return (lambda xx, yy: poly_terms(xx, yy, order, shape) @ coef), rms, coef


def isolated(x: np.ndarray, y: np.ndarray, distance: float) -> np.ndarray:
    """Objects with no other object within ``distance`` px."""
    if x.size < 2:
        return np.ones(x.size, bool)
    tree = cKDTree(np.column_stack([x, y]))
    d, _ = tree.query(np.column_stack([x, y]), k=2)
    return d[:, 1] > distance


def stamps_at(
    image: np.ndarray, x: np.ndarray, y: np.ndarray, half: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cut-outs ``(n, 2h+1, 2h+1)`` around the rounded positions (edges clamped) and the
    positions in stamp coordinates."""
    ny, nx = image.shape
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    k = np.arange(-half, half + 1)
    yy = np.clip(iy[:, None, None] + k[None, :, None], 0, ny - 1)
    xx = np.clip(ix[:, None, None] + k[None, None, :], 0, nx - 1)
    return image[yy, xx], x - ix + half, y - iy + half


def measure_fwhm(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    usable: np.ndarray,
    guess: float,
    n_stars: int = 300,
) -> tuple[float, Callable[[np.ndarray, np.ndarray], np.ndarray], int]:
    """Frame FWHM and a FWHM map from Moffat fits of bright isolated stars.

    Parameters
    ----------
    image
        Background-subtracted image.
    x, y, flux
        All detections (0-based positions, isophotal fluxes).
    usable
        Detections that may serve (unflagged, not blended).
    guess
        First guess of the FWHM, px (NaN falls back to 3).
    n_stars
        Brightest stars fitted.

    Returns
    -------
    fwhm : float
        Median fitted FWHM (NaN when no star could be fitted).
    fwhm_at : callable
        FWHM at positions (2nd-order 2-D polynomial; the median where too few stars).
    n_fit : int
        Stars with a good fit.
    """
    guess = guess if np.isfinite(guess) and guess > 0.5 else 3.0
    half = int(np.ceil(1.5 * guess)) + 1
    ok = usable & isolated(x, y, 2.0 * half)
    ok &= (x >= half) & (x < image.shape[1] - half) & (y >= half) & (y < image.shape[0] - half)
    idx = np.flatnonzero(ok)
    idx = idx[np.argsort(flux[idx])[::-1][:n_stars]]
    if idx.size == 0:
        return float("nan"), (lambda xx, yy: np.full(np.shape(xx), np.nan)), 0
    stamps, sx, sy = stamps_at(image, x[idx], y[idx], half)
    fw = fit_moffat(stamps, sx, sy, guess)
    good = np.isfinite(fw) & (fw > 0.5) & (fw < 4 * guess)
    if not good.any():
        return float("nan"), (lambda xx, yy: np.full(np.shape(xx), np.nan)), 0
    median = float(np.median(fw[good]))
    shape = image.shape
    if good.sum() >= 30:
        poly, _, _ = fit_poly2d(x[idx][good], y[idx][good], fw[good], 2, shape)

        def fwhm_at(xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
            return np.clip(poly(xx, yy), 0.5 * median, 2.0 * median)

    else:

        def fwhm_at(xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
            return np.full(np.shape(xx), median)

    _log.debug("FWHM %.2f px from %d stars", median, int(good.sum()))
    return median, fwhm_at, int(good.sum())
