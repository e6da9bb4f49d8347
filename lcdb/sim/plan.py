"""Observing plan of a simulated survey and the geometry of its frames.

:func:`plan_survey` fixes everything about each frame before its stars are measured
(:class:`FrameSpec`): time, pointing, airmass, seeing, sky, colour coefficient and the
zero-point polynomial ``Z0(xn, yn)`` (:func:`z0_terms`, :func:`evaluate_z0`,
:func:`normalise_xy`), whose exactness the identity of :mod:`lcdb.sim.survey` rests on.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from astropy.wcs import WCS

from lcdb.sim import noise, sky
from lcdb.sim.camera import Camera, airmass, altitude, local_sidereal_time

if TYPE_CHECKING:
    from lcdb.sim.survey import SurveyConfig

__all__ = [
    "FrameSpec",
    "evaluate_z0",
    "frame_wcs",
    "normalise_xy",
    "opposition_mjd",
    "plan_survey",
    "z0_terms",
]

_log = logging.getLogger(__name__)
_SIDEREAL_DEG_PER_DAY = 360.98564736629


@dataclass(frozen=True)
class FrameSpec:
    """Everything about one frame that is fixed before its stars are measured."""

    index: int
    name: str
    mjd_start: float
    exptime: float
    ra0: float
    dec0: float
    rotation: float
    airmass: float
    fwhm: float
    sky_mag: float
    sky_adu: float
    extinction: float
    cloud: float
    ruined: bool
    track: bool
    color_coeff: float
    z0_coeffs: tuple[float, ...]

    @property
    def mjd(self) -> float:
        """Mid-exposure MJD."""
        return self.mjd_start + self.exptime / 2.0 / 86400.0

    @property
    def z0_order(self) -> int:
        """Order of the zero-point polynomial."""
        return round((math.sqrt(8 * len(self.z0_coeffs) + 1) - 3) / 2)


def z0_terms(order: int) -> list[tuple[int, int]]:
    """Exponents ``(i, j)`` of ``xn**i * yn**j``, by total degree then by ``j``: 1, x, y, x², ..."""
    return [(d - j, j) for d in range(order + 1) for j in range(d + 1)]


def _design(xn: np.ndarray, yn: np.ndarray, order: int) -> np.ndarray:
    xp, yp = _powers(xn, order), _powers(yn, order)
    return np.stack([xp[i] * yp[j] for i, j in z0_terms(order)], axis=-1)


def _powers(a: np.ndarray, order: int) -> list[np.ndarray]:
    out = [np.ones_like(a)]
    for _ in range(order):
        out.append(out[-1] * a)
    return out


def evaluate_z0(coeffs: np.ndarray, xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
    """The zero-point polynomial with coefficients ``coeffs`` (order from their number)."""
    c = np.asarray(coeffs, dtype=float)
    order = round((math.sqrt(8 * c.size + 1) - 3) / 2)
    if len(z0_terms(order)) != c.size:
        raise ValueError(f"{c.size} coefficients do not make a full 2-D polynomial")
    xn, yn = np.asarray(xn, dtype=float), np.asarray(yn, dtype=float)
    xp, yp = _powers(xn, order), _powers(yn, order)
    out = np.zeros(np.broadcast(xn, yn).shape)
    for k, (i, j) in enumerate(z0_terms(order)):
        out += c[k] * (xp[i] * yp[j])
    return out


def normalise_xy(
    x: np.ndarray, y: np.ndarray, naxis1: int, naxis2: int
) -> tuple[np.ndarray, np.ndarray]:
    """0-based pixel coordinates to [-1, 1]: ``xn = 2 x / (naxis1 - 1) - 1``, same for y."""
    return 2.0 * np.asarray(x) / (naxis1 - 1) - 1.0, 2.0 * np.asarray(y) / (naxis2 - 1) - 1.0


def frame_wcs(camera: Camera, ra0: float, dec0: float, rotation: float = 0.0) -> WCS:
    """TAN WCS of a frame pointed at ``(ra0, dec0)``: centre pixel, east left, ``rotation`` deg."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [(camera.naxis1 + 1) / 2.0, (camera.naxis2 + 1) / 2.0]
    w.wcs.crval = [ra0, dec0]
    s, r = camera.pixscale / 3600.0, math.radians(rotation)
    w.wcs.cd = s * np.array([[-math.cos(r), math.sin(r)], [math.sin(r), math.cos(r)]])
    return w


def opposition_mjd(ra0: float) -> float:
    """An MJD (0h UT) in the year after 2024-03-20 when the field is opposite the Sun."""
    return float(math.floor(60389.0 + ((ra0 - 180.0) % 360.0) / 360.0 * 365.25))


def plan_survey(config: SurveyConfig, rng: np.random.Generator) -> list[FrameSpec]:
    """Nights, pointings and per-frame atmosphere and zero points.

    Frames are spread over hour angles around the field's transit each night, within the
    range where it stands above ``min_altitude`` (at most +-4 h); the Sun is not modelled.
    Each frame's ``Z0`` is the instrumental zero point, plus the extinction of the night
    times (airmass - 1) over the field, the channel's residual vignetting (radial, centre
    slightly off the detector centre), and cloud: thin (exponential, mean 0.02 mag, with a
    gradient) or, on ruined frames, 0.3-1.5 mag with 0.1-0.4 mag rms patches (order 6). It
    is fitted on a 9x9 grid as one polynomial, which is then the truth.

    Raises
    ------
    ValueError
        The field never rises above ``min_altitude`` at the site.
    """
    cfg, cam = config.resolved(), config.camera
    lat = cam.latitude
    cos_h = (
        math.sin(math.radians(cfg.min_altitude)) - math.sin(math.radians(lat)) * _sin(cfg.dec0)
    ) / (math.cos(math.radians(lat)) * _cos(cfg.dec0) + 1e-12)
    if cos_h > 1:
        raise ValueError(
            f"the field at dec {cfg.dec0:g} never rises above {cfg.min_altitude:g} deg at "
            f"the {cam.name} site (latitude {lat:g})"
        )
    h_max = min(math.degrees(math.acos(max(cos_h, -1.0))), 60.0)
    n_nights = min(cfg.nights, cfg.n_frames)
    gaps = 1 + rng.poisson(max(cfg.night_spacing - 1.0, 0.0), n_nights)
    gaps[0] = 0
    per_night = np.full(n_nights, cfg.n_frames // n_nights)
    per_night[: cfg.n_frames % n_nights] += 1
    vign = (
        rng.uniform(-0.15, 0.15, 2),
        rng.uniform(0.3, 0.7),
        cam.vignetting * rng.uniform(0.8, 1.2),
    )
    g = np.linspace(-1, 1, 9)
    gx, gy = (a.ravel() for a in np.meshgrid(g, g))
    px, py = (gx + 1) * (cam.naxis1 - 1) / 2, (gy + 1) * (cam.naxis2 - 1) / 2
    zp0 = noise.instrumental_zero_point(cam)
    specs: list[FrameSpec] = []
    for offset, n in zip(np.cumsum(gaps), per_night, strict=True):
        midnight = cfg.start_mjd + offset - cam.longitude / 360.0
        ha_mid = (local_sidereal_time(midnight, cam.longitude) - cfg.ra0 + 180.0) % 360.0 - 180.0
        transit = midnight - ha_mid / _SIDEREAL_DEG_PER_DAY
        k_night = cam.extinction * rng.uniform(0.85, 1.15)
        ha = -h_max + (np.arange(n) + 0.5 + rng.uniform(-0.3, 0.3, n)) * 2 * h_max / n
        for h in ha:
            i = len(specs)
            t = float(rng.choice(cfg.exptimes))
            mjd_start = round(transit + h / _SIDEREAL_DEG_PER_DAY - t / 2 / 86400, 8)
            ra_f, dec_f = sky.from_tangent_plane(*rng.normal(0, cam.jitter, 2), cfg.ra0, cfg.dec0)
            ra_f, dec_f, rot = float(ra_f), float(dec_f), float(rng.normal(0, 0.05))
            mjd = mjd_start + t / 2 / 86400
            lst = local_sidereal_time(mjd, cam.longitude)
            x_c = float(airmass(altitude(lat, dec_f, lst - ra_f)))
            ruined = bool(rng.random() < cfg.ruined_fraction)
            seeing = cam.seeing * math.exp(rng.normal(0, 0.15))
            sky_mag = cam.sky_mag + rng.normal(0, 0.15) - 0.3 * (x_c - 1) - 0.3 * ruined
            k = k_night + rng.normal(0, 0.01)
            ra_g, dec_g = frame_wcs(cam, ra_f, dec_f, rot).wcs_pix2world(px, py, 0)
            x_g = airmass(altitude(lat, dec_g, lst - ra_g))
            r2 = (gx - vign[0][0]) ** 2 + (gy - vign[0][1]) ** 2
            z = zp0 + k * (x_g - 1) + vign[2] * (vign[1] * r2 / 2 + (1 - vign[1]) * r2**2 / 4)
            order = 6 if ruined else 4
            if ruined:
                cloud = rng.uniform(0.3, 1.5)
                degree = np.array([a + b for a, b in z0_terms(order)[1:]])
                patch = _design(gx, gy, order)[:, 1:] @ (
                    rng.normal(0, 1, degree.size) / (1.0 + degree)
                )
                z = z + cloud + (patch - patch.mean()) * rng.uniform(0.1, 0.4) / patch.std()
            else:
                cloud = rng.exponential(0.02)
                z = z + cloud + rng.normal(0, 0.01) * gx + rng.normal(0, 0.01) * gy
            coeffs = np.linalg.lstsq(_design(gx, gy, order), z, rcond=None)[0]
            c_col = cam.color_mean + cam.color_airmass * (x_c - 1) + rng.normal(0, cam.color_sd)
            specs.append(
                FrameSpec(
                    index=i,
                    name=f"{cam.channel}-{i:05d}",
                    mjd_start=mjd_start,
                    exptime=t,
                    ra0=ra_f,
                    dec0=dec_f,
                    rotation=rot,
                    airmass=x_c,
                    fwhm=noise.fwhm_px(cam, seeing, x_c) * math.exp(rng.normal(0, 0.03)),
                    sky_mag=sky_mag,
                    sky_adu=float(noise.sky_rate(cam, sky_mag)) * t / cam.gain,
                    extinction=k,
                    cloud=float(cloud),
                    ruined=ruined,
                    track=bool(rng.random() < cfg.track_probability),
                    color_coeff=float(c_col),
                    z0_coeffs=tuple(float(c) for c in coeffs),
                )
            )
    _log.debug("planned %d frames over %d nights", len(specs), n_nights)
    return specs


def _sin(deg: float) -> float:
    return math.sin(math.radians(deg))


def _cos(deg: float) -> float:
    return math.cos(math.radians(deg))
