"""Astrometry: the header WCS refined against the store's reference catalogue.

1. The reference stars in the frame's cone (``refcat_cone``), moved to the frame epoch by their
   proper motions, are projected with the header WCS.
2. The header WCS may be off by some pixels: the offset is the peak of the histogram of the
   position differences between the brightest detections and the brightest reference stars
   (within ``max_shift_px``).
3. Detections and reference stars are matched (mutual nearest neighbours within
   ``match_radius_px``), and the standard coordinates (gnomonic projection about CRVAL) of the
   reference stars are fitted as polynomials of order ``order`` in the pixel offsets from CRPIX,
   by least squares with ``clip_nsigma`` clipping; matching and fitting alternate
   ``iterations`` times, with stars of SNR >= ``min_snr`` when there are enough. CRVAL is
   moved to the fitted position of CRPIX so the polynomials have no constant term, and the
   result is a TAN-SIP WCS (CD from the linear terms, SIP ``A``/``B`` from the rest): the
   distortion is in the header of every FITS product and in the catalogue's ra/dec.
4. The residual rms (``ASTRMS``, arcsec) is the root mean square of the great-circle residuals
   of the matched stars kept by the clipping. A frame with too few matches, or an rms above
   ``max_rms_px``, is rejected with the reason.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning, Sip
from scipy.spatial import cKDTree

from lcdb.errors import LcdbError

_log = logging.getLogger(__name__)
_MJD_J2000 = 51544.5


class AstrometryError(LcdbError):
    """The frame's WCS could not be matched to the reference catalogue (the reason)."""


@dataclass(frozen=True)
class AstromConfig:
    """Astrometric refinement settings (see the module docstring)."""

    order: int = 3
    max_shift_px: float = 30.0
    match_radius_px: float = 2.0
    n_bright: int = 300
    min_matches: int = 10
    max_rms_px: float = 1.0
    clip_nsigma: float = 3.0
    iterations: int = 4
    min_snr: float = 20.0

    def __post_init__(self) -> None:
        problems = []
        if not 1 <= self.order <= 5:
            problems.append(f"order must be in 1..5, got {self.order}")
        for name in ("max_shift_px", "match_radius_px", "max_rms_px", "clip_nsigma", "min_snr"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("n_bright", "min_matches", "iterations"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if problems:
            raise ValueError("invalid AstromConfig: " + "; ".join(problems))


class Solution(NamedTuple):
    """A refined WCS and its quality: rms in arcsec and px, matched stars used, the header
    WCS offset found (px), and the pixel scale (arcsec/px)."""

    wcs: WCS
    rms_arcsec: float
    rms_px: float
    n_matched: int
    shift: tuple[float, float]
    scale_arcsec: float


def header_wcs(header: fits.Header, path: Any = None) -> WCS:
    """The celestial WCS of a header, or AstrometryError when it has none."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        try:
            wcs = WCS(header, naxis=2, relax=True)
        except (ValueError, KeyError, MemoryError) as exc:
            raise AstrometryError(f"unreadable WCS in the header ({exc})") from exc
    if not wcs.has_celestial or not wcs.wcs.ctype[0]:
        raise AstrometryError("no celestial WCS in the header")
    return wcs


def pixel_scale(wcs: WCS) -> float:
    """Mean pixel scale, arcsec/px."""
    return float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600)


def frame_cone(wcs: WCS, shape: tuple[int, int], margin_px: float) -> tuple[float, float, float]:
    """``(ra, dec, radius)`` in deg of a cone covering the frame plus ``margin_px``."""
    ny, nx = shape
    ra0, dec0 = wcs.all_pix2world([(nx - 1) / 2], [(ny - 1) / 2], 0)
    cx, cy = np.array([0, nx - 1, 0, nx - 1]), np.array([0, 0, ny - 1, ny - 1])
    ra, dec = wcs.all_pix2world(cx, cy, 0)
    sep = _angsep(ra0[0], dec0[0], ra, dec).max()
    return float(ra0[0]) % 360, float(dec0[0]), float(sep + margin_px * pixel_scale(wcs) / 3600)


def _angsep(ra1: Any, dec1: Any, ra2: Any, dec2: Any) -> np.ndarray:
    r1, d1, r2, d2 = map(np.radians, (ra1, dec1, ra2, dec2))
    h = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.minimum(h, 1.0))))


def refcat_for_frame(store: Any, wcs: WCS, shape: tuple[int, int], mjd: float | None,
                     margin_px: float) -> dict[str, np.ndarray]:  # fmt: skip
    """Reference stars around the frame from ``store`` (ra, dec at the frame epoch, v)."""
    ra, dec, radius = frame_cone(wcs, shape, margin_px)
    table = store.sql(
        "SELECT ra, dec, v, pmra, pmdec, epoch FROM refcat_cone($1, $2, $3)", [ra, dec, radius]
    )
    out = {
        k: table[k].to_numpy(zero_copy_only=False).astype(np.float64) for k in ("ra", "dec", "v")
    }
    if mjd is not None and table.num_rows:
        pmra, pmdec, epoch = (
            np.nan_to_num(table[k].to_numpy(zero_copy_only=False).astype(np.float64), nan=v)
            for k, v in (("pmra", 0.0), ("pmdec", 0.0), ("epoch", 2000.0))
        )
        years = 2000.0 + (mjd - _MJD_J2000) / 365.25 - epoch
        cosd = np.maximum(np.cos(np.radians(out["dec"])), 1e-6)
        out["ra"] = (out["ra"] + pmra * years / 3.6e6 / cosd) % 360
        out["dec"] = out["dec"] + pmdec * years / 3.6e6
    return out


def _standard(ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float) -> tuple:
    """Gnomonic (TAN) standard coordinates in deg about (ra0, dec0)."""
    r, d, r0, d0 = map(np.radians, (ra, dec, ra0, dec0))
    cosc = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(r - r0)
    xi = np.cos(d) * np.sin(r - r0) / cosc
    eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(r - r0)) / cosc
    return np.degrees(xi), np.degrees(eta)


def _from_standard(xi: np.ndarray, eta: np.ndarray, ra0: float, dec0: float) -> tuple:
    """Inverse of :func:`_standard`."""
    x, y, d0 = np.radians(xi), np.radians(eta), np.radians(dec0)
    denom = np.cos(d0) - y * np.sin(d0)
    ra = ra0 + np.degrees(np.arctan2(x, denom))
    dec = np.degrees(np.arctan2(y * np.cos(d0) + np.sin(d0), np.hypot(x, denom)))
    return ra % 360, dec


def _terms(u: np.ndarray, v: np.ndarray, order: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Monomials ``u^i v^j`` (i + j <= order) as columns, and their powers."""
    powers = [(i, k - i) for k in range(order + 1) for i in range(k, -1, -1)]
    up = [np.ones_like(u)]
    vp = [np.ones_like(v)]
    for _ in range(order):
        up.append(up[-1] * u)
        vp.append(vp[-1] * v)
    return np.stack([up[i] * vp[j] for i, j in powers], axis=1), powers


def find_shift(
    xd: np.ndarray, yd: np.ndarray, xr: np.ndarray, yr: np.ndarray, max_shift: float
) -> tuple[float, float, int]:
    """Offset (reference - detection) at the peak of the pairwise-difference histogram."""
    tree = cKDTree(np.column_stack([xr, yr]))
    pairs = tree.query_ball_point(np.column_stack([xd, yd]), max_shift * np.sqrt(2))
    i = np.repeat(np.arange(len(pairs)), [len(p) for p in pairs])
    j = np.concatenate([np.asarray(p, int) for p in pairs]) if len(i) else np.zeros(0, int)
    dx, dy = xr[j] - xd[i], yr[j] - yd[i]
    edges = np.arange(-max_shift, max_shift + 1.0, 1.0)
    hist, _, _ = np.histogram2d(dx, dy, bins=[edges, edges])
    smooth = hist.copy()  # 2x2 box: a true offset between bins keeps its counts together
    smooth[:-1, :-1] += hist[1:, :-1] + hist[:-1, 1:] + hist[1:, 1:]
    a, b = np.unravel_index(np.argmax(smooth), smooth.shape)
    near = (np.abs(dx - edges[a] - 1) <= 1.5) & (np.abs(dy - edges[b] - 1) <= 1.5)
    if near.sum() == 0:
        return 0.0, 0.0, 0
    return float(np.median(dx[near])), float(np.median(dy[near])), int(smooth[a, b])


def _match(
    xd: np.ndarray, yd: np.ndarray, xr: np.ndarray, yr: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mutual nearest neighbours within ``radius``: index arrays into d and r."""
    if xr.size == 0 or xd.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    dist, j = cKDTree(np.column_stack([xr, yr])).query(np.column_stack([xd, yd]), k=1)
    back = cKDTree(np.column_stack([xd, yd])).query(np.column_stack([xr, yr]), k=1)[1]
    i = np.arange(xd.size)
    ok = (dist <= radius) & (back[np.minimum(j, xr.size - 1)] == i)
    return i[ok], j[ok]


def solve(
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    usable: np.ndarray,
    wcs: WCS,
    ref: dict[str, np.ndarray],
    shape: tuple[int, int],
    config: AstromConfig,
    snr: np.ndarray | None = None,
) -> Solution:
    """Refine ``wcs`` on the reference stars ``ref`` (see the module docstring).

    Parameters
    ----------
    x, y, flux
        Detections (0-based pixels) and their fluxes.
    usable
        Detections that may be matched (unflagged point sources).
    wcs
        The header WCS.
    ref
        Reference stars: ``ra``, ``dec`` (deg, frame epoch) and ``v`` (mag).
    shape
        Image shape ``(ny, nx)``.
    config
        Settings.
    snr
        Signal-to-noise ratios: only detections above ``min_snr`` are fitted (when enough).

    Raises
    ------
    AstrometryError
        Too few reference stars or matches, no offset peak, or a residual rms above the limit.
    """
    ny, nx = shape
    scale = pixel_scale(wcs)
    if ref["ra"].size < config.min_matches:
        raise AstrometryError(f"only {ref['ra'].size} reference star(s) in the field")
    with np.errstate(invalid="ignore"):
        xr, yr = wcs.all_world2pix(ref["ra"], ref["dec"], 0, quiet=True)
    pad = config.max_shift_px
    inside = np.isfinite(xr) & (xr > -pad) & (xr < nx - 1 + pad) & (yr > -pad) & (yr < ny - 1 + pad)
    r_idx = np.flatnonzero(inside)
    d_idx = np.flatnonzero(usable & np.isfinite(flux) & (flux > 0))
    if snr is not None:  # fit the precise positions only, when there are enough of them
        precise = d_idx[snr[d_idx] >= config.min_snr]
        if precise.size >= 3 * config.min_matches:
            d_idx = precise
    if r_idx.size < config.min_matches or d_idx.size < config.min_matches:
        raise AstrometryError(
            f"too few stars to match: {d_idx.size} detections, {r_idx.size} reference stars"
        )
    bright_d = d_idx[np.argsort(flux[d_idx])[::-1][: config.n_bright]]
    bright_r = r_idx[np.argsort(ref["v"][r_idx])[: 2 * config.n_bright]]
    dx, dy, peak = find_shift(x[bright_d], y[bright_d], xr[bright_r], yr[bright_r], pad)
    if peak < max(5, config.min_matches // 2):
        raise AstrometryError(f"no consistent offset between detections and the reference "
                              f"catalogue within {pad:g} px (best peak {peak} pairs)")  # fmt: skip
    # Match in pixels with the shifted header WCS, then alternate: fit the polynomial, match
    # again in the standard-coordinate plane with the fit, re-centre CRVAL.
    crpix = wcs.wcs.crpix - 1  # 0-based
    ra0, dec0 = (float(v) for v in wcs.wcs.crval)
    norm = max(nx, ny) / 2
    ud, vd = (x[d_idx] - crpix[0]) / norm, (y[d_idx] - crpix[1]) / norm
    i, j = _match(x[d_idx], y[d_idx], xr[r_idx] - dx, yr[r_idx] - dy, config.match_radius_px + 1)
    for it in range(config.iterations + 1):
        if i.size < config.min_matches:
            raise AstrometryError(f"only {i.size} matched star(s) (need {config.min_matches})")
        cx, ce, powers, order, keep, res = _fit(ud[i], vd[i], ref, r_idx[j], ra0, dec0, scale,
                                                config)  # fmt: skip
        if it < config.iterations:
            a = _terms(ud, vd, order)[0]
            xi_r, eta_r = _standard(ref["ra"][r_idx], ref["dec"][r_idx], ra0, dec0)
            radius = config.match_radius_px * scale / 3600
            i, j = _match(a @ cx, a @ ce, xi_r, eta_r, radius)
        # Re-centre: CRVAL at the fitted sky position of CRPIX (no constant term next time).
        ra_c, dec_c = _from_standard(np.array([cx[0]]), np.array([ce[0]]), ra0, dec0)
        ra0, dec0 = float(ra_c[0]), float(dec_c[0])
    # The last re-centring moved CRVAL by the constant term: refit about it.
    cx, ce, powers, order, keep, res = _fit(ud[i], vd[i], ref, r_idx[j], ra0, dec0, scale, config)
    n_used = int(keep.sum())
    rms_px = float(np.sqrt(np.mean(res[keep] ** 2)))
    if n_used < config.min_matches:
        raise AstrometryError(f"only {n_used} star(s) left after clipping")
    if rms_px > config.max_rms_px:
        raise AstrometryError(f"residual rms {rms_px:.2f} px above {config.max_rms_px:g} px")
    sip_wcs = _to_wcs(cx, ce, powers, order, ra0, dec0, crpix, norm, wcs)
    _log.debug("astrometry: %d stars, rms %.3f px, shift (%.2f, %.2f) px", n_used, rms_px, dx, dy)
    return Solution(sip_wcs, rms_px * scale, rms_px, n_used, (dx, dy), scale)


def _fit(
    u: np.ndarray,
    v: np.ndarray,
    ref: dict[str, np.ndarray],
    rj: np.ndarray,
    ra0: float,
    dec0: float,
    scale: float,
    config: AstromConfig,
) -> tuple[np.ndarray, np.ndarray, list[tuple[int, int]], int, np.ndarray, np.ndarray]:
    """Clipped least squares of standard coordinates on pixel polynomials (normal equations:
    the offsets are normalised to [-1, 1], so they are well conditioned)."""
    xi, eta = _standard(ref["ra"][rj], ref["dec"][rj], ra0, dec0)
    # The highest order up to config.order with >= 3 stars per coefficient.
    order = max(
        [1] + [o for o in range(1, config.order + 1) if u.size >= 3 * (o + 1) * (o + 2) / 2]
    )
    a, powers = _terms(u, v, order)
    keep = np.ones(u.size, bool)
    for _ in range(6):
        ak = a[keep]
        normal = ak.T @ ak
        cx = np.linalg.solve(normal, ak.T @ xi[keep])
        ce = np.linalg.solve(normal, ak.T @ eta[keep])
        res = np.hypot(xi - a @ cx, eta - a @ ce) * 3600 / scale  # px
        # Robust scale of the 2-D residual (Rayleigh: median = 1.1774 sigma per axis).
        sigma = np.median(res[keep]) / 1.1774
        new = res <= max(config.clip_nsigma * sigma * np.sqrt(2), 0.05)
        if (new == keep).all() or new.sum() <= a.shape[1]:
            break
        keep = new
    return cx, ce, powers, order, keep, res


def _to_wcs(
    cx: np.ndarray,
    ce: np.ndarray,
    powers: list[tuple[int, int]],
    order: int,
    ra0: float,
    dec0: float,
    crpix: np.ndarray,
    norm: float,
    template: WCS,
) -> WCS:
    """A TAN-SIP WCS equal to the fitted polynomials (constant terms dropped: CRVAL moved)."""
    lin = {p: k for k, p in enumerate(powers)}
    cd = np.array([[cx[lin[(1, 0)]], cx[lin[(0, 1)]]], [ce[lin[(1, 0)]], ce[lin[(0, 1)]]]]) / norm
    inv = np.linalg.inv(cd)
    w = WCS(naxis=2)
    w.wcs.crpix = crpix + 1
    w.wcs.crval = [ra0, dec0]
    w.wcs.cd = cd
    w.wcs.radesys = template.wcs.radesys or "ICRS"
    w.wcs.ctype = ["RA---TAN-SIP", "DEC--TAN-SIP"] if order >= 2 else ["RA---TAN", "DEC--TAN"]
    if order >= 2:
        a = np.zeros((order + 1, order + 1))
        b = np.zeros((order + 1, order + 1))
        for k, (i, j) in enumerate(powers):
            if i + j >= 2:  # polynomial in pixel offsets: coefficient / norm**(i+j)
                px, py = np.array([cx[k], ce[k]]) / norm ** (i + j)
                a[i, j], b[i, j] = inv @ np.array([px, py])
        w.sip = Sip(a, b, None, None, w.wcs.crpix)
    w.wcs.set()
    return w


def wcs_cards(solution: Solution | None) -> dict[str, float | int]:
    """Catalogue keywords of an astrometric solution (``ASTRMS`` arcsec, ``ASTRMSPX``,
    ``ASTNMAT``, ``ASTSHFTX/Y`` px)."""
    if solution is None:
        return {"ASTRMS": float("nan"), "ASTNMAT": 0}
    return {
        "ASTRMS": round(solution.rms_arcsec, 5),
        "ASTRMSPX": round(solution.rms_px, 5),
        "ASTNMAT": solution.n_matched,
        "ASTSHFTX": round(solution.shift[0], 3),
        "ASTSHFTY": round(solution.shift[1], 3),
    }
