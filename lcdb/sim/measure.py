"""Measuring one simulated frame: which stars it sees and what its catalogue says of them.

:func:`simulate_frame` applies the flux identity of :mod:`lcdb.sim.survey`, then what real
aperture photometry adds to it: saturation, neighbours' light and blends, edge truncation,
noise (:mod:`lcdb.sim.noise`), outliers, spurious detections, the detection limit and centroid
errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from astropy.wcs import WCS
from scipy.spatial import cKDTree
from scipy.special import chndtr, ndtr

from lcdb.flags import Flag
from lcdb.sim import noise, variables
from lcdb.sim.camera import Camera
from lcdb.sim.plan import FrameSpec, evaluate_z0, frame_wcs, normalise_xy

if TYPE_CHECKING:
    from lcdb.sim.survey import SurveyConfig

__all__ = ["StarArrays", "simulate_frame"]

_SIGMA_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


@dataclass(frozen=True)
class StarArrays:
    """Truth of the stars as numpy arrays (what :func:`simulate_frame` needs), from a table."""

    star_id: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    pmra: np.ndarray
    pmdec: np.ndarray
    v: np.ndarray
    bv: np.ndarray
    var_code: np.ndarray
    var_params: tuple[np.ndarray, ...]
    xyz: np.ndarray

    @classmethod
    def from_table(cls, stars: pa.Table) -> StarArrays:
        """From a table with the columns of ``truth/stars.parquet``."""
        col = {name: stars[name].to_numpy(zero_copy_only=False) for name in stars.column_names}
        ra, dec = np.radians(col["ra"]), np.radians(col["dec"])
        xyz = np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], 1)
        names = ("period", "amplitude", "t0", "shape", "width")
        return cls(
            star_id=col["star_id"].astype(np.int64),
            ra=col["ra"].astype(float),
            dec=col["dec"].astype(float),
            pmra=col["pmra"].astype(float),
            pmdec=col["pmdec"].astype(float),
            v=col["v"].astype(float),
            bv=col["bv"].astype(float),
            var_code=variables.type_codes(col["var_type"]),
            var_params=tuple(col[k].astype(float) for k in names),
            xyz=xyz,
        )


def simulate_frame(
    spec: FrameSpec,
    stars: StarArrays,
    config: SurveyConfig,
    rng: np.random.Generator,
) -> pa.Table:
    """The catalogue of one frame.

    Parameters
    ----------
    spec
        The frame (from :func:`lcdb.sim.plan.plan_survey`).
    stars
        The truth of every star of the field.
    config
        The survey, :meth:`~lcdb.sim.survey.SurveyConfig.resolved`.
    rng
        The frame's own generator (frames are independent of each other).

    Returns
    -------
    pyarrow.Table
        The columns of docs/formats.md (ra, dec, x, y, flux, flux_err, flags, fwhm,
        background) plus ``truth_star_id`` and ``truth_flux``, rows in increasing ``y``.
    """
    cam, fwhm = config.camera, spec.fwhm
    sigma, r_ap = fwhm * _SIGMA_PER_FWHM, cam.aperture_radius * fwhm
    wcs = frame_wcs(cam, spec.ra0, spec.dec0, spec.rotation)
    idx, x, y = _on_detector(spec, stars, wcs, cam)
    # The identity: mag_instr = V + dm + C (B - V) + Z0(xn, yn).
    dm = variables.offset_from_codes(
        stars.var_code[idx], *(p[idx] for p in stars.var_params), np.float64(spec.mjd)
    )
    xn, yn = normalise_xy(x, y, cam.naxis1, cam.naxis2)
    z0 = evaluate_z0(spec.z0_coeffs, xn, yn)
    truth = spec.exptime * 10.0 ** (
        -0.4 * (stars.v[idx] + dm + spec.color_coeff * stars.bv[idx] + z0)
    )
    flags = np.zeros(idx.size, dtype=np.int32)
    # Saturation: the central pixel above the level clips the profile (flux of min(profile, L)).
    model = truth.copy()
    level = cam.saturation - spec.sky_adu
    sat = truth * noise.peak_fraction(fwhm) > level
    peak = truth[sat] / (2 * math.pi * sigma**2)
    model[sat] -= truth[sat] * (1 - level / peak * (1 + np.log(peak / level)))
    flags[sat] |= Flag.SATURATED
    keep = _neighbours(x, y, truth, model, flags, fwhm, r_ap)
    # The edge truncates apertures closer than their radius.
    dx = np.minimum(x + 0.5, cam.naxis1 - 0.5 - x)
    dy = np.minimum(y + 0.5, cam.naxis2 - 0.5 - y)
    cut = (dx < r_ap) | (dy < r_ap)
    model[cut] *= ndtr(dx[cut] / sigma) * ndtr(dy[cut] / sigma)
    flags[cut] |= Flag.TRUNCATED
    star_id = stars.star_id[idx]
    # Spurious detections: cosmic-ray hits on empty sky, 70 % of them recognised.
    n_sp = 0 if config.noiseless else int(rng.poisson(config.spurious_per_frame))
    if n_sp:
        sky_e = math.pi * r_ap**2 * (spec.sky_adu * cam.gain + cam.read_noise**2)
        x = np.concatenate([x, rng.uniform(-0.5, cam.naxis1 - 0.5, n_sp)])
        y = np.concatenate([y, rng.uniform(-0.5, cam.naxis2 - 0.5, n_sp)])
        model = np.concatenate(
            [model, math.sqrt(sky_e) / cam.gain * 10 ** rng.uniform(0.8, 2, n_sp)]
        )
        sp_flags = np.where(rng.random(n_sp) < 0.7, Flag.COSMIC_RAY, 0).astype(np.int32)
        flags = np.concatenate([flags, sp_flags])
        star_id = np.concatenate([star_id, np.full(n_sp, -1)])
        truth = np.concatenate([truth, np.zeros(n_sp)])
        keep = np.concatenate([keep, np.ones(n_sp, dtype=bool)])
    # Noise (seed Eq. 1 + scintillation + floor), evaluated at the expected flux.
    scint = float(noise.scintillation(cam, spec.airmass, spec.exptime))
    var = noise.flux_variance(
        model * cam.gain,
        spec.sky_adu * cam.gain,
        math.pi * r_ap**2,
        cam.read_noise,
        cam.dark_current * spec.exptime,
        math.hypot(scint, cam.sys_floor / noise.MAG_PER_FLUX),
    )
    err = np.sqrt(var) / cam.gain
    flux = model.copy()
    if not config.noiseless:
        flux += err * rng.standard_normal(flux.size)
        _corrupt(flux, err, flags, x, y, spec, config, rng)
    threshold = max(config.snr_min, noise.MAG_PER_FLUX / config.max_mag_err)
    det = keep & (flux >= threshold * err)
    return _catalogue(
        spec, config, wcs, rng, x[det], y[det], flux[det], err[det], flags[det],
        np.maximum(model[det] / err[det], 1.0), star_id[det], truth[det],
    )  # fmt: skip


def _on_detector(
    spec: FrameSpec, stars: StarArrays, wcs: WCS, cam: Camera
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and 0-based pixel positions of the stars on the detector at the frame's epoch."""
    radius = math.hypot(cam.width_deg, cam.height_deg) / 2 + 0.05
    cd = _cos(spec.dec0)
    pointing = np.array([cd * _cos(spec.ra0), cd * _sin(spec.ra0), _sin(spec.dec0)])
    near = np.flatnonzero(stars.xyz @ pointing > math.cos(math.radians(radius)))
    years = (spec.mjd - 51544.5) / 365.25
    dec = stars.dec[near] + stars.pmdec[near] * years / 3.6e6
    cos_dec = np.maximum(np.cos(np.radians(dec)), 1e-6)
    ra = stars.ra[near] + stars.pmra[near] * years / 3.6e6 / cos_dec
    x, y = wcs.wcs_world2pix(ra, dec, 0)
    on = (x >= -0.5) & (x < cam.naxis1 - 0.5) & (y >= -0.5) & (y < cam.naxis2 - 0.5)
    return near[on], x[on], y[on]


def _neighbours(
    x: np.ndarray,
    y: np.ndarray,
    truth: np.ndarray,
    model: np.ndarray,
    flags: np.ndarray,
    fwhm: float,
    r_ap: float,
) -> np.ndarray:
    """Add neighbours' light to ``model``, flag blends; return which detections remain.

    Every star within 3 FWHM puts the fraction of its Gaussian profile that falls in the
    aperture (a non-central chi-square probability) into it; within 1.5 FWHM both are flagged
    blended; closer than 0.5 FWHM they make one detection, at the light-weighted centre
    (``x``, ``y`` updated in place), credited to the brighter star.
    """
    keep = np.ones(x.size, dtype=bool)
    if x.size < 2:
        return keep
    sigma = fwhm * _SIGMA_PER_FWHM
    tree = cKDTree(np.column_stack([x, y]), balanced_tree=False, compact_nodes=False)
    pairs = tree.query_pairs(3 * fwhm, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    d = np.hypot(x[i] - x[j], y[i] - y[j])
    frac = chndtr(r_ap**2 / sigma**2, 2, d**2 / sigma**2)
    model += np.bincount(i, truth[j] * frac, x.size) + np.bincount(j, truth[i] * frac, x.size)
    close = d < 1.5 * fwhm
    flags[i[close]] |= Flag.BLENDED
    flags[j[close]] |= Flag.BLENDED
    for a, b in pairs[d < 0.5 * fwhm]:
        a, b = (a, b) if truth[a] >= truth[b] else (b, a)
        w = truth[b] / (truth[a] + truth[b])
        x[a], y[a] = x[a] + w * (x[b] - x[a]), y[a] + w * (y[b] - y[a])
        keep[b] = False
    return keep


def _corrupt(
    flux: np.ndarray,
    err: np.ndarray,
    flags: np.ndarray,
    x: np.ndarray,
    y: np.ndarray,
    spec: FrameSpec,
    config: SurveyConfig,
    rng: np.random.Generator,
) -> None:
    """Outliers, in place: cosmic rays (+3 to +300 sigma, flag 16), artefacts (x 10^+-0.04-0.4,
    flag 512), unflagged outliers (+-5 to 30 sigma) and a satellite track (flag 8)."""
    n = flux.size
    u = rng.random(n)
    cr = u < config.cosmic_fraction
    flux[cr] += err[cr] * 10 ** rng.uniform(0.5, 2.5, int(cr.sum()))
    flags[cr] |= Flag.COSMIC_RAY
    art = (u >= config.cosmic_fraction) & (u < config.cosmic_fraction + config.artefact_fraction)
    n_art = int(art.sum())
    flux[art] *= 10 ** (rng.choice([-1, 1], n_art) * rng.uniform(0.04, 0.4, n_art))
    flags[art] |= Flag.OTHER
    bad = rng.random(n) < config.unflagged_outlier_fraction
    n_bad = int(bad.sum())
    flux[bad] += err[bad] * rng.choice([-1, 1], n_bad) * 10 ** rng.uniform(0.7, 1.5, n_bad)
    if spec.track:
        cam = config.camera
        angle = rng.uniform(0, math.pi)
        x0, y0 = rng.uniform(0, cam.naxis1), rng.uniform(0, cam.naxis2)
        hit = np.abs((x - x0) * math.sin(angle) - (y - y0) * math.cos(angle)) < 2 * spec.fwhm
        flux[hit] += err[hit] * rng.uniform(5, 50, int(hit.sum()))
        flags[hit] |= Flag.TRACK


def _catalogue(
    spec: FrameSpec,
    config: SurveyConfig,
    wcs: WCS,
    rng: np.random.Generator,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    err: np.ndarray,
    flags: np.ndarray,
    snr: np.ndarray,
    star_id: np.ndarray,
    truth: np.ndarray,
) -> pa.Table:
    """The detections as a catalogue: centroid errors, sky positions, FWHM and background."""
    cam, fwhm, n = config.camera, spec.fwhm, x.size
    if not config.noiseless:
        pos_sigma = np.hypot(fwhm * _SIGMA_PER_FWHM / snr, cam.centroid_floor)
        x = np.clip(x + pos_sigma * rng.standard_normal(n), -0.5, cam.naxis1 - 0.5 - 1e-6)
        y = np.clip(y + pos_sigma * rng.standard_normal(n), -0.5, cam.naxis2 - 0.5 - 1e-6)
    ra, dec = wcs.wcs_pix2world(x, y, 0)
    xn, yn = normalise_xy(x, y, cam.naxis1, cam.naxis2)
    fw = fwhm * (1 + 0.05 * (xn**2 + yn**2)) * np.where(flags & Flag.SATURATED, 1.3, 1.0)
    fw = np.where(star_id < 0, 0.6, fw)  # cosmic rays are sharp
    bg = np.full(n, spec.sky_adu)
    if not config.noiseless:
        fw = fw * np.exp(rng.normal(0, 0.03, n) + 0.3 * rng.normal(0, 1, n) / snr)
        bg = bg * (1 + rng.normal(0, 0.005, n))
    order = np.argsort(y, kind="stable")
    return pa.table(
        {
            "ra": np.mod(ra, 360.0)[order],
            "dec": dec[order],
            "x": x[order],
            "y": y[order],
            "flux": flux[order],
            "flux_err": err[order],
            "flags": flags[order].astype(np.int32),
            "fwhm": fw[order].astype(np.float32),
            "background": bg[order].astype(np.float32),
            "truth_star_id": star_id[order].astype(np.int64),
            "truth_flux": truth[order],
        }
    )


def _sin(deg: float) -> float:
    return math.sin(math.radians(deg))


def _cos(deg: float) -> float:
    return math.cos(math.radians(deg))
