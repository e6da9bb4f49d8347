"""Catalogue-level survey simulator: per-frame catalogues, a reference catalogue and full truth.

The instrumental flux model (the identity later stages and their tests rely on)::

    mag_instr = -2.5 log10(flux / EXPTIME) = V + dm(t) + C * (B - V) + Z0(xn, yn)

with ``flux`` the catalogue flux (ADU in the aperture), ``dm(t)`` the star's variability at
mid-exposure (:func:`lcdb.sim.variables.magnitude_offset`), ``C`` the frame's colour coefficient
and ``Z0(xn, yn) = sum_k z0_coeffs[k] * xn**i_k * yn**j_k`` (terms of :func:`z0_terms`) the
frame's total zero point: instrumental zero point + extinction (airmass over the field) +
residual vignetting + clouds, all one exact polynomial in the normalised coordinates of
:func:`normalise_xy`. It holds exactly (no noise, ``noiseless=True``) for every star that is
unsaturated, not truncated by the edge and without a neighbour within 3 FWHM; otherwise the
catalogue flux also has neighbour light in the aperture (blends), saturation and edge losses,
outliers, and noise of rms ``flux_err`` (photon, sky, read, dark, scintillation, floor).
``truth_flux`` (ADU) of each detection is the right-hand side: ``EXPTIME * 10**(-0.4 * (...))``.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from astropy.wcs import WCS
from scipy.spatial import cKDTree
from scipy.special import chndtr, ndtr
from tqdm import tqdm

from lcdb.flags import Flag
from lcdb.sim import noise, sky, variables
from lcdb.sim.camera import PRESETS, Camera, airmass, altitude, local_sidereal_time

__all__ = [
    "FrameSpec",
    "StarArrays",
    "SurveyConfig",
    "SurveyResult",
    "evaluate_z0",
    "frame_metadata",
    "frame_wcs",
    "make_stars",
    "normalise_xy",
    "plan_survey",
    "simulate_frame",
    "simulate_survey",
    "z0_terms",
]

_log = logging.getLogger(__name__)
_SIGMA_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_SIDEREAL_DEG_PER_DAY = 360.98564736629
DEFAULT_STARS = {"mmt": 3000, "mst": 20000}


@dataclass(frozen=True)
class SurveyConfig:
    """What to simulate. ``None`` means "derived from the camera" (see :meth:`resolved`).

    Sizes: ``n_frames`` frames over ``nights`` nights ``night_spacing`` days apart on average,
    of a field ``width_deg`` x ``height_deg`` centred on ``(ra0, dec0)`` holding ``n_stars``
    synthetic stars from ``vmin`` to ``vmax`` (or the stars of the catalogue file ``refcat``,
    plus synthetic ones below its limit when ``fill_faint``). ``refcat_limit`` is the depth of
    the written reference catalogue. Fractions are per detection unless named per frame.
    """

    camera: Camera = field(default_factory=lambda: PRESETS["mmt"])
    n_frames: int = 200
    n_stars: int | None = None
    ra0: float = 150.0
    dec0: float = 45.0
    width_deg: float | None = None
    height_deg: float | None = None
    seed: int = 0
    refcat: Path | None = None
    fill_faint: bool = True
    refcat_limit: float | None = None
    vmin: float | None = None
    vmax: float | None = None
    nights: int = 10
    night_spacing: float = 3.0
    start_mjd: float | None = None
    exptimes: tuple[float, ...] | None = None
    min_altitude: float = 30.0
    var_fraction: float = 0.02
    amp_range: tuple[float, float] = (0.01, 1.0)
    ruined_fraction: float = 0.015
    cosmic_fraction: float = 0.01
    artefact_fraction: float = 0.005
    track_probability: float = 0.05
    unflagged_outlier_fraction: float = 0.001
    spurious_per_frame: float = 2.0
    pair_fraction: float = 0.01
    high_pm_fraction: float = 0.005
    snr_min: float = 5.0
    max_mag_err: float = 0.2
    noiseless: bool = False

    def __post_init__(self) -> None:
        p = []
        for name in ("n_frames", "nights") + (("n_stars",) if self.n_stars is not None else ()):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                p.append(f"{name} must be a positive integer (got {value!r})")
        for name in ("width_deg", "height_deg"):
            value = getattr(self, name)
            if value is not None and not (0 < value < 90):
                p.append(f"{name} must be in (0, 90) deg (got {value!r})")
        fractions = (
            "var_fraction ruined_fraction cosmic_fraction artefact_fraction "
            "track_probability unflagged_outlier_fraction pair_fraction high_pm_fraction"
        ).split()
        for name in fractions:
            if not 0 <= getattr(self, name) <= 1:
                p.append(f"{name} must be in [0, 1] (got {getattr(self, name)!r})")
        if not -90 <= self.dec0 <= 90:
            p.append(f"dec0 must be in [-90, 90] deg (got {self.dec0!r})")
        if not 0 < self.amp_range[0] <= self.amp_range[1]:
            p.append(f"amp_range must be 0 < low <= high (got {self.amp_range!r})")
        if self.exptimes is not None and (not self.exptimes or min(self.exptimes) <= 0):
            p.append(f"exptimes must be positive (got {self.exptimes!r})")
        for name in ("night_spacing", "snr_min", "max_mag_err", "spurious_per_frame"):
            if not getattr(self, name) >= 0:
                p.append(f"{name} must be non-negative (got {getattr(self, name)!r})")
        if not 0 <= self.min_altitude < 90:
            p.append(f"min_altitude must be in [0, 90) deg (got {self.min_altitude!r})")
        if self.vmin is not None and self.vmax is not None and self.vmin >= self.vmax:
            p.append(f"vmin ({self.vmin}) must be brighter than vmax ({self.vmax})")
        if self.refcat is not None and self.n_stars is not None:
            p.append("n_stars and refcat exclude each other (the catalogue sets the stars)")
        if p:
            raise ValueError("; ".join(p))

    def resolved(self) -> SurveyConfig:
        """A copy with every ``None`` replaced by its camera-derived value."""
        cam = self.camera
        lim = noise.limiting_mag(cam, self.snr_min, airmass=1.2)
        return SurveyConfig(
            **{
                **self.__dict__,
                "n_stars": None
                if self.refcat
                else _or(self.n_stars, DEFAULT_STARS.get(cam.name, 3000)),
                "width_deg": _or(self.width_deg, cam.width_deg + 6 * cam.jitter + 0.02),
                "height_deg": _or(self.height_deg, cam.height_deg + 6 * cam.jitter + 0.02),
                "refcat_limit": _or(self.refcat_limit, round(lim - 2.5, 1)),
                "vmin": _or(self.vmin, noise.saturation_mag(cam) - 1.5),
                "vmax": _or(self.vmax, lim + 0.5),
                "exptimes": self.exptimes or (cam.exptime,),
                "start_mjd": _or(self.start_mjd, _opposition_mjd(self.ra0)),
                "refcat": None if self.refcat is None else Path(self.refcat),
            }
        )


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


@dataclass(frozen=True)
class SurveyResult:
    """Summary of a simulated survey: where the files are and how much is in them."""

    out_dir: Path
    frames_dir: Path
    refcat_path: Path
    stars_path: Path
    frames_truth_path: Path
    n_frames: int
    n_stars: int
    n_variables: int
    n_refcat: int
    n_detections: int
    n_ruined: int
    seconds: float


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


def _opposition_mjd(ra0: float) -> float:
    """An MJD (0h UT) in the year after 2024-03-20 when the field is opposite the Sun."""
    return float(math.floor(60389.0 + ((ra0 - 180.0) % 360.0) / 360.0 * 365.25))


def plan_survey(config: SurveyConfig, rng: np.random.Generator) -> list[FrameSpec]:
    """Nights, pointings and per-frame atmosphere and zero points.

    Frames are spread over hour angles around the field's transit each night, within the
    range where it stands above ``min_altitude`` (at most +-4 h); the Sun is not modelled.
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
                terms = z0_terms(order)[1:]
                patch = _design(gx, gy, order)[:, 1:] @ (
                    rng.normal(0, 1, len(terms)) / (1.0 + np.array([i + j for i, j in terms]))
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


def _or(value: object, default: object) -> object:
    return default if value is None else value


def _sin(deg: float) -> float:
    return math.sin(math.radians(deg))


def _cos(deg: float) -> float:
    return math.cos(math.radians(deg))


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
    """The catalogue of one frame (columns of docs/formats.md plus ``truth_star_id`` and
    ``truth_flux``), rows in increasing ``y``. ``config`` must be :meth:`SurveyConfig.resolved`.
    """
    cam, t, fwhm = config.camera, spec.exptime, spec.fwhm
    n1, n2 = cam.naxis1, cam.naxis2
    sigma, r_ap = fwhm * _SIGMA_PER_FWHM, cam.aperture_radius * fwhm
    # Stars near the pointing, moved to the epoch of the frame, projected on the detector.
    radius = math.hypot(cam.width_deg, cam.height_deg) / 2 + 0.05
    cd = _cos(spec.dec0)
    pointing = np.array([cd * _cos(spec.ra0), cd * _sin(spec.ra0), _sin(spec.dec0)])
    near = np.flatnonzero(stars.xyz @ pointing > math.cos(math.radians(radius)))
    years = (spec.mjd - 51544.5) / 365.25
    dec = stars.dec[near] + stars.pmdec[near] * years / 3.6e6
    ra = stars.ra[near] + stars.pmra[near] * years / 3.6e6 / np.maximum(
        np.cos(np.radians(dec)), 1e-6
    )
    wcs = frame_wcs(cam, spec.ra0, spec.dec0, spec.rotation)
    x, y = wcs.wcs_world2pix(ra, dec, 0)
    on = (x >= -0.5) & (x < n1 - 0.5) & (y >= -0.5) & (y < n2 - 0.5)
    idx, x, y = near[on], x[on], y[on]
    # The identity: mag_instr = V + dm + C (B - V) + Z0(xn, yn).
    dm = variables.offset_from_codes(
        stars.var_code[idx], *(p[idx] for p in stars.var_params), np.float64(spec.mjd)
    )
    xn, yn = normalise_xy(x, y, n1, n2)
    mag = stars.v[idx] + dm + spec.color_coeff * stars.bv[idx] + evaluate_z0(spec.z0_coeffs, xn, yn)
    f_true = t * 10.0 ** (-0.4 * mag)
    flags = np.zeros(idx.size, dtype=np.int32)
    model = f_true.copy()
    # Saturation: the central pixel above the level clips the profile (flux of min(profile, L)).
    level = cam.saturation - spec.sky_adu
    sat = f_true * noise.peak_fraction(fwhm) > level
    peak = f_true[sat] / (2 * math.pi * sigma**2)
    model[sat] -= f_true[sat] * (1 - level / peak * (1 + np.log(peak / level)))
    flags[sat] |= Flag.SATURATED
    # Neighbours: light of every star within 3 FWHM in the aperture; blended within 1.5 FWHM;
    # closer than 0.5 FWHM the pair is one detection at the light-weighted centre.
    keep = np.ones(idx.size, dtype=bool)
    if idx.size > 1:
        pairs = cKDTree(np.column_stack([x, y])).query_pairs(3 * fwhm, output_type="ndarray")
        i, j = pairs[:, 0], pairs[:, 1]
        d = np.hypot(x[i] - x[j], y[i] - y[j])
        frac = chndtr(r_ap**2 / sigma**2, 2, d**2 / sigma**2)
        model += np.bincount(i, f_true[j] * frac, idx.size) + np.bincount(
            j, f_true[i] * frac, idx.size
        )
        close = d < 1.5 * fwhm
        flags[i[close]] |= Flag.BLENDED
        flags[j[close]] |= Flag.BLENDED
        for a, b in pairs[d < 0.5 * fwhm]:
            a, b = (a, b) if f_true[a] >= f_true[b] else (b, a)
            w = f_true[b] / (f_true[a] + f_true[b])
            x[a], y[a] = x[a] + w * (x[b] - x[a]), y[a] + w * (y[b] - y[a])
            keep[b] = False
    # The edge truncates apertures closer than their radius.
    dx, dy = np.minimum(x + 0.5, n1 - 0.5 - x), np.minimum(y + 0.5, n2 - 0.5 - y)
    cut = (dx < r_ap) | (dy < r_ap)
    model[cut] *= ndtr(dx[cut] / sigma) * ndtr(dy[cut] / sigma)
    flags[cut] |= Flag.TRUNCATED
    star_id, truth = stars.star_id[idx], f_true
    # Spurious detections: cosmic-ray hits on empty sky.
    n_sp = 0 if config.noiseless else int(rng.poisson(config.spurious_per_frame))
    if n_sp:
        sky_sigma = (
            math.sqrt(math.pi * r_ap**2 * (spec.sky_adu * cam.gain + cam.read_noise**2)) / cam.gain
        )
        x = np.concatenate([x, rng.uniform(-0.5, n1 - 0.5, n_sp)])
        y = np.concatenate([y, rng.uniform(-0.5, n2 - 0.5, n_sp)])
        model = np.concatenate([model, sky_sigma * 10 ** rng.uniform(0.8, 2.0, n_sp)])
        sp_flags = np.where(rng.random(n_sp) < 0.7, Flag.COSMIC_RAY, 0).astype(np.int32)
        flags = np.concatenate([flags, sp_flags])
        star_id = np.concatenate([star_id, np.full(n_sp, -1)])
        truth = np.concatenate([truth, np.zeros(n_sp)])
        keep = np.concatenate([keep, np.ones(n_sp, dtype=bool)])
    # Noise (seed Eq. 1 + scintillation + floor), evaluated at the expected flux.
    rel = math.hypot(
        float(noise.scintillation(cam, spec.airmass, t)), cam.sys_floor / noise.MAG_PER_FLUX
    )
    var = noise.flux_variance(
        model * cam.gain,
        spec.sky_adu * cam.gain,
        math.pi * r_ap**2,
        cam.read_noise,
        cam.dark_current * t,
        rel,
    )
    err = np.sqrt(var) / cam.gain
    snr_model = model / err
    flux = model.copy()
    n = flux.size
    if not config.noiseless:
        flux += err * rng.standard_normal(n)
        u = rng.random(n)
        cr = u < config.cosmic_fraction
        flux[cr] += err[cr] * 10 ** rng.uniform(0.5, 2.5, int(cr.sum()))
        flags[cr] |= Flag.COSMIC_RAY
        art = (u >= config.cosmic_fraction) & (
            u < config.cosmic_fraction + config.artefact_fraction
        )
        flux[art] *= 10 ** (
            rng.choice([-1, 1], int(art.sum())) * rng.uniform(0.04, 0.4, int(art.sum()))
        )
        flags[art] |= Flag.OTHER
        bad = rng.random(n) < config.unflagged_outlier_fraction
        flux[bad] += (
            err[bad]
            * rng.choice([-1, 1], int(bad.sum()))
            * 10 ** rng.uniform(0.7, 1.5, int(bad.sum()))
        )
        if spec.track:
            angle, x0, y0 = rng.uniform(0, math.pi), rng.uniform(0, n1), rng.uniform(0, n2)
            on_track = np.abs((x - x0) * math.sin(angle) - (y - y0) * math.cos(angle)) < 2 * fwhm
            flux[on_track] += err[on_track] * rng.uniform(5, 50, int(on_track.sum()))
            flags[on_track] |= Flag.TRACK
    threshold = max(config.snr_min, noise.MAG_PER_FLUX / config.max_mag_err)
    det = keep & (flux >= threshold * err)
    snr = np.maximum(snr_model[det], 1.0)
    x, y, n = x[det], y[det], int(det.sum())
    if not config.noiseless:
        pos_sigma = np.hypot(fwhm * _SIGMA_PER_FWHM / snr, cam.centroid_floor)
        x = np.clip(x + pos_sigma * rng.standard_normal(n), -0.5, n1 - 0.5 - 1e-6)
        y = np.clip(y + pos_sigma * rng.standard_normal(n), -0.5, n2 - 0.5 - 1e-6)
    ra_out, dec_out = wcs.wcs_pix2world(x, y, 0)
    xn, yn = normalise_xy(x, y, n1, n2)
    fw = fwhm * (1 + 0.05 * (xn**2 + yn**2)) * np.where(flags[det] & Flag.SATURATED, 1.3, 1.0)
    spurious = star_id[det] < 0
    fw = np.where(spurious, 0.6, fw)
    bg = np.full(n, spec.sky_adu)
    if not config.noiseless:
        fw = fw * np.exp(rng.normal(0, 0.03, n) + 0.3 * rng.normal(0, 1, n) / snr)
        bg = bg * (1 + rng.normal(0, 0.005, n))
    order = np.argsort(y, kind="stable")
    return pa.table(
        {
            "ra": np.mod(ra_out, 360.0)[order],
            "dec": dec_out[order],
            "x": x[order],
            "y": y[order],
            "flux": flux[det][order],
            "flux_err": err[det][order],
            "flags": flags[det][order].astype(np.int32),
            "fwhm": fw[order].astype(np.float32),
            "background": bg[order].astype(np.float32),
            "truth_star_id": star_id[det][order].astype(np.int64),
            "truth_flux": truth[det][order],
        }
    )


def _write_parquet(table: pa.Table, path: Path) -> None:
    """Write atomically: a temporary name in the same directory, then rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def frame_metadata(spec: FrameSpec, camera: Camera) -> dict[str, str]:
    """The frame keywords of docs/formats.md, as strings."""
    return {
        "MJD-OBS": f"{spec.mjd_start:.8f}",
        "EXPTIME": repr(spec.exptime),
        "FILTER": camera.filter,
        "CHANNEL": camera.channel,
        "NAXIS1": str(camera.naxis1),
        "NAXIS2": str(camera.naxis2),
        "FRAMEID": spec.name,
        "AIRMASS": f"{spec.airmass:.6f}",
        "RA": f"{spec.ra0:.8f}",
        "DEC": f"{spec.dec0:.8f}",
    }


def make_stars(cfg: SurveyConfig, rng: np.random.Generator) -> tuple[pa.Table, float]:
    """The field's stars and the depth (V) of the catalogue they came from (inf if synthetic).

    ``cfg`` must be :meth:`SurveyConfig.resolved`.
    """
    box = {
        "ra0": cfg.ra0,
        "dec0": cfg.dec0,
        "width_deg": cfg.width_deg,
        "height_deg": cfg.height_deg,
    }
    if cfg.refcat is None:
        stars = sky.synthetic_stars(
            **box,
            n_stars=cfg.n_stars,
            vmin=cfg.vmin,
            vmax=cfg.vmax,
            rng=rng,
            pair_fraction=cfg.pair_fraction,
            pair_sep_arcsec=(2.0, max(20.0, 1.5 * cfg.camera.pixscale)),
            high_pm_fraction=cfg.high_pm_fraction,
        )
        return stars, math.inf
    stars = sky.stars_from_refcat(cfg.refcat, **box, rng=rng, vmax=cfg.vmax)
    depth = float(pc.max(stars["v"]).as_py())
    if cfg.fill_faint:
        stars = sky.fill_faint(stars, **box, vmax=cfg.vmax, rng=rng)
    return stars, depth


def simulate_survey(
    config: SurveyConfig, out_dir: str | Path, progress: bool = True, overwrite: bool = False
) -> SurveyResult:
    """Simulate a survey and write it to ``out_dir``.

    Writes ``frames/<FRAMEID>.parquet`` (one catalogue per frame, docs/formats.md),
    ``refcat.parquet``, ``truth/stars.parquet`` and ``truth/frames.parquet``. Deterministic for
    a given ``config.seed``: independent generators are spawned from it for the sky, the
    variables, the catalogue, the plan and each frame.

    Raises
    ------
    FileExistsError
        ``out_dir/frames`` already holds catalogues and ``overwrite`` is false.
    FileNotFoundError, ValueError
        From the reference catalogue or the configuration (e.g. a field that never rises).
    """
    started = time.perf_counter()
    cfg = config.resolved()
    out = Path(out_dir)
    frames_dir, truth_dir = out / "frames", out / "truth"
    old = sorted(frames_dir.glob("*.parquet")) if frames_dir.is_dir() else []
    if old and not overwrite:
        raise FileExistsError(f"{frames_dir} already holds {len(old)} frame catalogues")
    for path in old:
        path.unlink()
    frames_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(cfg.seed).spawn(5)
    rng_sky, rng_var, rng_ref, rng_plan = (np.random.default_rng(s) for s in seeds[:4])
    frame_seeds = seeds[4].spawn(cfg.n_frames)

    stars, depth = make_stars(cfg, rng_sky)
    specs = plan_survey(cfg, rng_plan)
    t_lo, t_hi = specs[0].mjd, specs[-1].mjd
    var = variables.assign_variables(
        stars.num_rows, rng=rng_var, fraction=cfg.var_fraction, t_start=t_lo, t_end=t_hi,
        amp_range=cfg.amp_range,
    )  # fmt: skip
    blend_arcsec = 1.5 * noise.fwhm_px(cfg.camera) * cfg.camera.pixscale
    refcat, ref_id = sky.refcat_from_stars(
        stars,
        limit=cfg.refcat_limit if config.refcat_limit is not None else min(cfg.refcat_limit, depth),
        blend_radius_arcsec=blend_arcsec,
        rng=rng_ref,
    )
    truth = stars
    for name in ("var_type", "period", "amplitude", "t0", "shape", "width"):
        truth = truth.append_column(
            name, pa.array(var[name], pa.string() if name == "var_type" else None)
        )
    truth = truth.append_column("in_refcat", pa.array(ref_id >= 0))
    truth = truth.append_column(
        "ref_id", pa.array(np.where(ref_id >= 0, ref_id, 0), mask=ref_id < 0)
    )
    _write_parquet(truth, truth_dir / "stars.parquet")
    _write_parquet(refcat, out / "refcat.parquet")

    arrays = StarArrays.from_table(truth)
    rows, n_det = [], 0
    for spec in tqdm(specs, desc="frames", unit="frame", disable=not progress):
        table = simulate_frame(spec, arrays, cfg, np.random.default_rng(frame_seeds[spec.index]))
        meta = {k.encode(): v.encode() for k, v in frame_metadata(spec, cfg.camera).items()}
        _write_parquet(table.replace_schema_metadata(meta), frames_dir / f"{spec.name}.parquet")
        n_det += table.num_rows
        rows.append((spec, table.num_rows))
    frames = pa.table(
        {
            "frame_index": [s.index for s, _ in rows],
            "frame_name": [s.name for s, _ in rows],
            "file": [f"frames/{s.name}.parquet" for s, _ in rows],
            "mjd_start": [s.mjd_start for s, _ in rows],
            "mjd": [s.mjd for s, _ in rows],
            "exptime": [s.exptime for s, _ in rows],
            "airmass": [s.airmass for s, _ in rows],
            "ra0": [s.ra0 for s, _ in rows],
            "dec0": [s.dec0 for s, _ in rows],
            "rotation": [s.rotation for s, _ in rows],
            "fwhm": [s.fwhm for s, _ in rows],
            "sky_mag": [s.sky_mag for s, _ in rows],
            "background": [s.sky_adu for s, _ in rows],
            "extinction": [s.extinction for s, _ in rows],
            "zp": [s.z0_coeffs[0] for s, _ in rows],
            "color_coeff": [s.color_coeff for s, _ in rows],
            "z0_order": pa.array([s.z0_order for s, _ in rows], pa.int32()),
            "z0_coeffs": pa.array([list(s.z0_coeffs) for s, _ in rows], pa.list_(pa.float64())),
            "cloud": [s.cloud for s, _ in rows],
            "ruined": [s.ruined for s, _ in rows],
            "track": [s.track for s, _ in rows],
            "n_detections": pa.array([k for _, k in rows], pa.int64()),
        }
    )
    _write_parquet(frames, truth_dir / "frames.parquet")
    result = SurveyResult(
        out_dir=out,
        frames_dir=frames_dir,
        refcat_path=out / "refcat.parquet",
        stars_path=truth_dir / "stars.parquet",
        frames_truth_path=truth_dir / "frames.parquet",
        n_frames=len(specs),
        n_stars=truth.num_rows,
        n_variables=int((var["var_type"] != "constant").sum()),
        n_refcat=refcat.num_rows,
        n_detections=n_det,
        n_ruined=sum(s.ruined for s in specs),
        seconds=time.perf_counter() - started,
    )
    _log.info(
        "simulated %d frames (%d ruined), %d stars (%d variable), %d detections, "
        "%d catalogue stars in %.1f s -> %s",
        result.n_frames, result.n_ruined, result.n_stars, result.n_variables,
        result.n_detections, result.n_refcat, result.seconds, out,
    )  # fmt: skip
    return result
