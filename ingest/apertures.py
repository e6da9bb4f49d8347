"""Aperture fluxes and errors, and the SNR-optimal aperture with its position-dependent
correction (Mini-SiTian §3.2.2).

Errors: ``area * sigma_bkg^2 + flux / gain_eff`` with the local background rms and the gain
times the local flat (the electrons per ADU of the flat-fielded image).

The optimal mode follows the seed: reference stars with errors of 0.002-0.008 mag give growth
curves over radii of 0.5-4 FWHM; the best radius is the median of the per-star SNR optima, the
reference radius the first larger one where the growth flattens, and the correction
``m_ref - m_best`` a 2nd-order 2-D polynomial of position fitted to the stars.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import sep

from ingest.cosmics import CoarseMap
from ingest.fwhm import fit_poly2d, isolated

if TYPE_CHECKING:
    from ingest.photometry import PhotConfig

_log = logging.getLogger(__name__)


def aperture_fluxes(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    radius: float,
    rms: CoarseMap,
    gain: float | None,
    flat: CoarseMap | None,
    subpix: int = 5,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Circular-aperture fluxes, their errors and SEP aperture flags (see the module docstring)."""
    flux, _, aflag = sep.sum_circle(image, x, y, radius, subpix=subpix)
    iy = np.clip(np.rint(y).astype(np.int64), 0, image.shape[0] - 1)
    ix = np.clip(np.rint(x).astype(np.int64), 0, image.shape[1] - 1)
    sigma = rms.at(iy, ix).astype(np.float64)
    var = np.pi * radius**2 * sigma**2
    if gain is not None and gain > 0:
        g = gain * (flat.at(iy, ix) if flat is not None else 1.0)
        var = var + np.maximum(flux, 0) / g
    return flux, np.sqrt(var), aflag


def optimal_aperture(
    image: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    snr: np.ndarray,
    usable: np.ndarray,
    fwhm: float,
    rms: CoarseMap,
    gain: float | None,
    flat: CoarseMap | None,
    config: PhotConfig,
    typical_flux: float | None = None,
) -> tuple[float, float, Callable[[np.ndarray, np.ndarray], np.ndarray], dict[str, float]]:
    """The SNR-optimal radius, the reference radius and the aperture correction (Mini-SiTian).

    The reference stars (the seed's sample: errors of 0.002-0.008 mag) give growth curves in
    ``optimal_factors`` x FWHM. With ``optimal_flux = "own"`` (the seed's literal procedure)
    each star's SNR curve uses its own flux; bright stars are photon-noise limited, so their
    SNR keeps growing with the radius. With ``"typical"`` (default) the same growth curves
    are scaled to ``typical_flux`` (the frame's median star), where the sky and read noise
    make the choice of radius matter. The best radius is the median of the per-star optima;
    the reference radius is the first larger one where the median growth between successive
    radii is below ``ref_tolerance_mag``.

    Returns ``(r_best, r_ref, correction(x, y) in mag, qa)``; the correction is
    ``m_ref - m_best`` (negative: the reference aperture holds more light).
    """
    radii = fwhm * np.asarray(config.optimal_factors)
    # The seed's reference sample: errors of 0.002-0.008 mag (SNR ~136-543).
    ref = usable & (snr >= 1.0857 / 0.008) & (snr <= 1.0857 / 0.002)
    if ref.sum() < 20:
        order = np.flatnonzero(usable & (snr > 30))
        ref = np.zeros(x.size, bool)
        ref[order[np.argsort(snr[order])[::-1][:150]]] = True
    # Isolated at 3 FWHM; neighbours in the larger apertures only touch some stars, and the
    # median growth curve and the clipped fit of the correction ignore those.
    ref &= isolated(x, y, 3 * fwhm) if x.size > 1 else ref
    idx = np.flatnonzero(ref)
    if idx.size < 5:
        _log.warning("only %d isolated bright stars: no aperture correction (radius %.2f x FWHM)",
                     idx.size, config.aperture_factor)  # fmt: skip
        r = config.aperture_factor * fwhm
        return r, r, (lambda xx, yy: np.zeros(np.shape(xx))), {"apcorr_nstars": 0}
    fl = np.empty((radii.size, idx.size))
    er = np.empty_like(fl)
    for k, r in enumerate(radii):
        fl[k], er[k], _ = aperture_fluxes(image, x[idx], y[idx], r, rms, gain, flat, config.subpix)
    if config.optimal_flux == "typical" and typical_flux is not None and typical_flux > 0:
        scale = typical_flux / np.maximum(fl[-1], 1e-30)  # growth curves scaled to the flux
        iy = np.clip(np.rint(y[idx]).astype(np.int64), 0, image.shape[0] - 1)
        ix = np.clip(np.rint(x[idx]).astype(np.int64), 0, image.shape[1] - 1)
        sky = np.pi * radii[:, None] ** 2 * rms.at(iy, ix)[None, :].astype(np.float64) ** 2
        g = gain * (flat.at(iy, ix) if flat is not None else 1.0) if gain else np.inf
        f = fl * scale
        snr_curves = f / np.sqrt(sky + np.maximum(f, 0) / g)
    else:
        snr_curves = fl / er
    best = int(np.argmin(np.abs(radii - np.median(radii[np.argmax(snr_curves, axis=0)]))))
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = -2.5 * np.log10(fl)
    growth = np.nanmedian(np.diff(mag, axis=0), axis=1)  # growth[k-1] = m_k - m_(k-1)
    flat_after = [
        k for k in range(best + 1, radii.size) if abs(growth[k - 1]) < config.ref_tolerance_mag
    ]
    ref_k = flat_after[0] if flat_after else radii.size - 1
    # The correction needs clean growth out to the reference radius: stars with no detection
    # within r_ref + FWHM. In a crowded field, the reference radius comes down until 20 such
    # stars remain (their growth is what the correction can trust).
    clean = isolated(x, y, radii[ref_k] + fwhm)[idx]
    while ref_k > best + 1 and clean.sum() < 20:
        ref_k -= 1
        clean = isolated(x, y, radii[ref_k] + fwhm)[idx]
    delta = mag[ref_k] - mag[best]
    clean &= np.isfinite(delta)
    # Light of undetected neighbours only ever adds to the reference aperture (one-sided): the
    # brightest clean stars suffer least from it, so they decide when there are enough.
    bright = clean & (fl[-1] >= np.percentile(fl[-1][clean], 50)) if clean.sum() >= 20 else clean
    clean = bright
    if clean.any():
        _log.debug("aperture correction %.2f -> %.2f px from %d stars: delta percentiles %s",
                   radii[best], radii[ref_k], clean.sum(),
                   np.percentile(delta[clean], [5, 25, 50, 75, 95]).round(4))  # fmt: skip
    # Enough clean stars: the seed's 2nd-order polynomial in position; a few: their median;
    # none: the sum of the median growth steps.
    if clean.sum() >= 30:
        order = config.apcorr_order
        corr, rms_fit, _ = fit_poly2d(x[idx][clean], y[idx][clean], delta[clean], order,
                                      image.shape)  # fmt: skip
    else:
        value = float(np.median(delta[clean])) if clean.sum() >= 5 else float(
            np.nansum(growth[best:ref_k]))  # fmt: skip
        rms_fit = float(np.nanstd(delta[clean])) if clean.sum() >= 5 else float("nan")

        def corr(xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
            return np.full(np.shape(xx), value)

    median = float(np.nanmedian(delta[clean])) if clean.any() else float("nan")
    qa = {"apcorr_nstars": int(clean.sum()), "apcorr_rms": rms_fit, "apcorr_median": median}
    return float(radii[best]), float(radii[ref_k]), corr, qa
