"""Pixel-level frame simulator: raw science frames, calibration frames and their truth.

Light is computed in *truth ADU*: the ADU a star, the sky or a track gives at unit optical
response and the detector's mean gain, so a perfectly reduced frame (bias and dark subtracted,
linearized, multiplied by ``gain / gain.mean()``, divided by the truth flat) shows each star with
its truth ``flux``. :func:`lcdb.sim.detector.read_out` turns light into raw ADU.

The PSF is an *effective* PSF (optics, seeing and pixel response together), so sampling it at
pixel centres gives pixel values: a Moffat core plus a broad Moffat halo holding
``halo_fraction`` of the flux, the FWHM growing towards the corners. Stars are rendered as stamps
whose radius grows with brightness until the profile falls below ``stamp_floor_adu``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS
from tqdm import tqdm

from lcdb.flags import Flag
from lcdb.sim import detector as dm
from lcdb.sim.detector import Detector, DetectorTruth, check_rules
from lcdb.sim.sky import synthetic_stars

_log = logging.getLogger(__name__)
_STAMP_ELEMS = 1 << 22  # stamp pixels evaluated at once (bounds memory)
_MJD_J2000 = 51544.5


@dataclass(frozen=True)
class PSFModel:
    """Moffat core (``beta``) plus a Moffat halo with ``halo_fraction`` of the flux and
    ``halo_fwhm_factor`` times the core FWHM; the FWHM grows by ``field_variation`` (fraction)
    from the frame centre to its corners."""

    fwhm_px: float = 3.0
    beta: float = 2.5
    halo_fraction: float = 0.05
    halo_fwhm_factor: float = 5.0
    halo_beta: float = 2.5
    field_variation: float = 0.15

    def fwhm_at(self, x: np.ndarray, y: np.ndarray, nx: int, ny: int, fwhm: float) -> np.ndarray:
        """Core FWHM (px) at 0-based pixel positions, for a central FWHM ``fwhm``."""
        rho2 = ((x - (nx - 1) / 2) ** 2 + (y - (ny - 1) / 2) ** 2) / max(
            ((nx - 1) ** 2 + (ny - 1) ** 2) / 4, 1
        )
        return fwhm * (1 + self.field_variation * np.clip(rho2, 0, 1))

    def _parts(self, fwhm: np.ndarray) -> list[tuple[np.ndarray, float, float]]:
        parts = []
        for frac, beta, width in (
            (1 - self.halo_fraction, self.beta, fwhm),
            (self.halo_fraction, self.halo_beta, fwhm * self.halo_fwhm_factor),
        ):
            alpha = np.asarray(2 * np.sqrt(2 ** (1 / beta) - 1), width.dtype)
            parts.append(((width / alpha) ** 2, beta, frac))
        return parts

    def profile(self, r2: np.ndarray, fwhm: np.ndarray | float) -> np.ndarray:
        """Fraction of the flux per pixel at squared distance ``r2`` (px²) from the centre."""
        total = np.zeros(np.broadcast_shapes(np.shape(r2), np.shape(fwhm)), np.float32)
        for alpha2, beta, frac in self._parts(np.asarray(fwhm, dtype=np.float32)):
            term = r2 / alpha2
            term += 1
            np.log(term, out=term)  # exp(-beta log(.)) is ~2x faster than np.power in float32
            term *= np.float32(-beta)
            np.exp(term, out=term)
            term *= np.float32(frac * (beta - 1) / np.pi) / alpha2
            total += term
        return total

    def encircled_energy(self, radius: np.ndarray | float, fwhm: np.ndarray | float) -> np.ndarray:
        """Fraction of the flux within ``radius`` px (analytic, circular aperture)."""
        r2 = np.asarray(radius, dtype=np.float64) ** 2
        parts = self._parts(np.asarray(fwhm, dtype=np.float64))
        return sum(frac * (1 - (1 + r2 / a2) ** (1 - b)) for a2, b, frac in parts)

    def stamp_radius(self, flux: np.ndarray, fwhm: np.ndarray, floor: float) -> np.ndarray:
        """Radius (px) beyond which each PSF component of a star of ``flux`` is below floor/2."""
        radius = np.zeros(np.shape(flux))
        for alpha2, beta, frac in self._parts(np.asarray(fwhm, dtype=np.float64)):
            ratio = np.maximum(2 * flux * frac * (beta - 1) / (np.pi * alpha2 * floor), 1.0)
            radius = np.maximum(radius, np.sqrt(alpha2 * (ratio ** (1 / beta) - 1)))
        return radius


@dataclass(frozen=True)
class PixelSimConfig:
    """Everything :func:`simulate_frames` needs; invalid values raise ``ValueError``.

    Magnitudes become ADU as ``exptime * 10**(-0.4 * (v + color_term * bv - zero_point))``.
    ``sky_adu_per_s`` is per pixel, ``sky_gradient`` the fractional change across the frame,
    ``cosmic_rate`` hits per megapixel per second; each flat pair reaches its ``flat_levels``
    (linear ADU above bias at unit response) at ``flat_rate_adu_per_s``.
    """

    detector: Detector = field(default_factory=Detector)
    psf: PSFModel = field(default_factory=PSFModel)
    n_frames: int = 3
    seed: int = 0
    n_stars: int = 2000
    mag_range: tuple[float, float] = (9.0, 20.0)
    count_slope: float = 0.35
    zero_point: float = 23.0
    color_term: float = 0.0
    exptime: float = 60.0
    mjd0: float = 60000.5
    cadence_s: float = 120.0
    ra0: float = 150.0
    dec0: float = 30.0
    pixel_scale: float = 0.862
    rotation_deg: float = 0.0
    dither_px: float = 5.0
    fwhm_jitter: float = 0.05
    sky_adu_per_s: float = 5.0
    sky_gradient: float = 0.05
    n_tracks: int = 1
    track_width_px: tuple[float, float] = (2.0, 5.0)
    track_peak_adu: tuple[float, float] = (100.0, 2000.0)
    cosmic_rate: float = 0.2
    cosmic_e: float = 1500.0
    stamp_floor_adu: float = 0.05
    max_stamp_radius: int = 256
    filter: str = "clear"
    channel: str = "sim"
    calib: bool = True
    n_bias: int = 100
    n_dark: int = 3
    dark_exptimes: tuple[float, ...] = (1.0, 10.0, 60.0, 300.0)
    flat_levels: tuple[float, ...] = (1000.0, 3000.0, 10000.0, 20000.0, 30000.0, 45000.0)
    flat_rate_adu_per_s: float = 5000.0
    truth_maps: bool = True
    progress: bool | None = None

    def __post_init__(self) -> None:
        sat = self.detector.saturation_adu
        check_rules(self, "PixelSimConfig", [
            ("n_frames n_stars n_tracks n_bias n_dark cosmic_rate dither_px fwhm_jitter "
             "sky_adu_per_s sky_gradient cadence_s", lambda v: v >= 0, "must be >= 0"),
            ("exptime pixel_scale cosmic_e stamp_floor_adu flat_rate_adu_per_s",
             lambda v: v > 0, "must be > 0"),
            ("mag_range", lambda v: v[0] <= v[1], "must satisfy lo <= hi"),
            ("track_width_px track_peak_adu", lambda v: 0 <= v[0] <= v[1],
             "must satisfy 0 <= lo <= hi"),
            ("psf", lambda v: v.fwhm_px > 0 and v.beta > 1 and v.halo_beta > 1
             and 0 <= v.halo_fraction < 1, "needs fwhm_px > 0, betas > 1, halo_fraction in [0, 1)"),
            ("dark_exptimes", lambda v: all(t > 0 for t in v), "must all be > 0"),
            ("flat_levels", lambda v: all(0 < x < sat for x in v), f"must lie in (0, {sat})"),
            ("dec0", lambda v: -90 <= v <= 90, "must be in [-90, 90]"),
            ("max_stamp_radius", lambda v: 8 <= v <= 4096, "must be in 8..4096"),
        ])  # fmt: skip


@dataclass(frozen=True)
class FrameSpec:
    """Per-frame observing conditions: pointing (frame centre), seeing, sky (ADU per pixel)."""

    index: int
    name: str
    mjd: float
    exptime: float
    ra0: float
    dec0: float
    fwhm_px: float
    sky_adu: float
    sky_angle: float


class ScienceFrame(NamedTuple):
    """A rendered frame: raw ``image``, truth ``mask`` (uint16 flag bits), expected ``variance``
    (noiseless only), and truth tables of its ``stars``, ``tracks`` and ``cosmics``."""

    image: np.ndarray
    mask: np.ndarray
    variance: np.ndarray | None
    stars: pa.Table
    tracks: pa.Table
    cosmics: pa.Table


@dataclass
class SimulationResult:
    """Files written by :func:`simulate_frames` and the number of stars in the sky list."""

    out_dir: Path
    science: list[Path]
    calib: dict[str, list[Path]]
    truth_dir: Path
    n_stars: int
    elapsed_s: float


def make_frame_spec(config: PixelSimConfig, index: int, rng: np.random.Generator) -> FrameSpec:
    """Dithered pointing, seeing and sky-gradient direction of frame ``index``."""
    scale = config.pixel_scale / 3600
    dx, dy = rng.normal(0, config.dither_px, 2) if config.dither_px > 0 else (0.0, 0.0)
    fwhm = config.psf.fwhm_px * float(np.exp(rng.normal(0, config.fwhm_jitter)))
    ra0 = (config.ra0 + dx * scale / max(np.cos(np.radians(config.dec0)), 1e-6)) % 360
    dec0 = float(np.clip(config.dec0 + dy * scale, -90, 90))
    mjd = config.mjd0 + index * config.cadence_s / 86400
    sky_angle = float(rng.uniform(0, 2 * np.pi))
    name = f"{config.channel}-{index:04d}"
    sky = config.sky_adu_per_s * config.exptime
    return FrameSpec(index, name, mjd, config.exptime, ra0, dec0, fwhm, sky, sky_angle)


def frame_wcs(config: PixelSimConfig, ra0: float, dec0: float) -> WCS:
    """TAN WCS with (ra0, dec0) at the frame centre, east left, rotated by ``rotation_deg``."""
    det, s, rot = config.detector, config.pixel_scale / 3600, np.radians(config.rotation_deg)
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crpix = [(det.nx + 1) / 2, (det.ny + 1) / 2]
    w.wcs.crval = [ra0, dec0]
    w.wcs.cd = s * np.array([[-np.cos(rot), np.sin(rot)], [np.sin(rot), np.cos(rot)]])
    return w


def make_star_list(config: PixelSimConfig, rng: np.random.Generator) -> pa.Table:
    """The sky of :func:`lcdb.sim.sky.synthetic_stars` (shared with the survey simulator) over
    the frame's bounding box plus a margin for dithers and halos; ``n_stars`` in the frame."""
    det, rot = config.detector, np.radians(config.rotation_deg)
    margin = config.max_stamp_radius // 4 + 4 * config.dither_px
    w = det.nx * abs(np.cos(rot)) + det.ny * abs(np.sin(rot)) + 2 * margin
    h = det.nx * abs(np.sin(rot)) + det.ny * abs(np.cos(rot)) + 2 * margin
    scale = config.pixel_scale / 3600
    n = round(config.n_stars * w * h / (det.nx * det.ny))
    lo, hi = config.mag_range
    return synthetic_stars(
        ra0=config.ra0,
        dec0=config.dec0,
        width_deg=w * scale,
        height_deg=h * scale,
        n_stars=n,
        vmin=lo,
        vmax=hi,
        rng=rng,
        count_slope=config.count_slope,
    )


def render_stars(
    canvas: np.ndarray,
    psf: PSFModel,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm: np.ndarray,
    floor: float,
    max_radius: int,
) -> np.ndarray:
    """Add stars (truth ADU) to ``canvas`` as stamps; return each star's peak pixel value.

    Stamps come in radius classes (powers of two times the smallest) evaluated in batches.
    """
    r_min = int(np.ceil(np.clip(4 * fwhm.max(initial=1), 8, max_radius)))
    radius = psf.stamp_radius(flux, fwhm, floor) / r_min
    classes = np.minimum(r_min * 2 ** np.ceil(np.log2(np.maximum(radius, 1))), max_radius)
    peak = np.zeros(x.size, np.float32)
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    ny, nx = canvas.shape
    for r in np.unique(classes).astype(int):
        k, width = np.arange(-r, r + 1, dtype=np.float32), 2 * r + 1
        sel = np.flatnonzero(classes == r)
        for part in np.array_split(sel, max(1, sel.size * width**2 // _STAMP_ELEMS)):
            dx = (ix[part] - x[part]).astype(np.float32)[:, None] + k
            dy = (iy[part] - y[part]).astype(np.float32)[:, None] + k
            stamps = psf.profile(dx[:, None, :] ** 2 + dy[:, :, None] ** 2, fwhm[part, None, None])
            stamps *= flux[part, None, None].astype(np.float32)
            peak[part] = stamps.max(axis=(1, 2))
            for s, cx, cy in zip(stamps, ix[part] - r, iy[part] - r, strict=True):
                a0, b0, a1, b1 = max(0, -cx), max(0, -cy), min(width, nx - cx), min(width, ny - cy)
                if a1 > a0 and b1 > b0:
                    canvas[cy + b0 : cy + b1, cx + a0 : cx + a1] += s[b0:b1, a0:a1]
    return peak


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


def render_science_frame(
    config: PixelSimConfig,
    truth: DetectorTruth,
    stars: pa.Table,
    spec: FrameSpec,
    rng: np.random.Generator,
    *,
    noise: bool = True,
    artefacts: bool = True,
    canvas: np.ndarray | None = None,
) -> ScienceFrame:
    """Render one raw science frame.

    Parameters
    ----------
    config, truth
        Simulation settings and the detector's per-pixel maps.
    stars
        Star list: star_id, ra, dec (deg, J2000), v, bv; optional pmra, pmdec (mas/yr),
        applied from J2000 to the frame epoch.
    spec
        Pointing, epoch, seeing and sky of the frame (:func:`make_frame_spec`).
    rng
        Random generator of this frame (artefacts, then the detector read-out).
    noise
        If false, the image is the float32 expectation and ``variance`` its variance.
    artefacts
        If false, no satellite tracks and no cosmic rays.
    canvas
        Optional float32 ``(ny, nx)`` work array reused between frames.

    Returns
    -------
    ScienceFrame
        Image, truth mask and truth tables. Star ``x, y`` are 0-based pixel coordinates
        (pixel centres at integers); tracks are masked where they add more than half the
        sky-plus-read noise, cosmic rays on every pixel they hit.
    """
    det, psf = config.detector, config.psf
    ny, nx = det.shape
    wcs = frame_wcs(config, spec.ra0, spec.dec0)
    ra, dec = stars["ra"].to_numpy(), stars["dec"].to_numpy()
    if "pmra" in stars.column_names and "pmdec" in stars.column_names:
        years = (spec.mjd - _MJD_J2000) / 365.25 / 3.6e6
        ra = ra + stars["pmra"].to_numpy() * years / np.maximum(np.cos(np.radians(dec)), 1e-6)
        dec = dec + stars["pmdec"].to_numpy() * years
    x, y = wcs.all_world2pix(ra, dec, 0)
    pad = config.max_stamp_radius
    near = np.flatnonzero((x > -pad) & (x < nx - 1 + pad) & (y > -pad) & (y < ny - 1 + pad))
    x, y, v, bv = x[near], y[near], stars["v"].to_numpy()[near], stars["bv"].to_numpy()[near]
    flux = spec.exptime * 10 ** (-0.4 * (v + config.color_term * bv - config.zero_point))
    fwhm = psf.fwhm_at(x, y, nx, ny, spec.fwhm_px)
    canvas = np.zeros(det.shape, np.float32) if canvas is None else canvas
    canvas.fill(0)
    peak = render_stars(canvas, psf, x, y, flux, fwhm, config.stamp_floor_adu, pad)
    tracks = make_tracks(config, rng) if artefacts else []
    deposits, cosmics = make_cosmics(config, spec.exptime, rng) if artefacts else (None, None)
    g_mean = np.float32(truth.gain.mean(dtype=np.float64))
    mask = truth.static_mask.copy()
    grad = np.float32(spec.sky_adu * config.sky_gradient)
    sky_x = grad * (np.arange(nx, dtype=np.float32) / nx - 0.5) * np.float32(np.cos(spec.sky_angle))
    sky_y = grad * (np.arange(ny, dtype=np.float32) / ny - 0.5) * np.float32(np.sin(spec.sky_angle))
    sky_min = spec.sky_adu * (1 - config.sky_gradient)
    mask_floor = 0.5 * np.sqrt(sky_min / g_mean + (det.read_noise_e / g_mean) ** 2)

    def light(r0: int, r1: int) -> np.ndarray:
        out = canvas[r0:r1] + (np.float32(spec.sky_adu) + sky_y[r0:r1, None] + sky_x[None, :])
        for track in tracks:
            cols, values = track_rows(track, r0, r1, nx, config.stamp_floor_adu)
            out[:, cols] += values
            mask[r0:r1, cols] |= np.where(values > mask_floor, np.uint16(Flag.TRACK), 0).astype(
                np.uint16
            )
        out *= g_mean
        return out

    readout = dm.read_out(
        det, truth, rng, exptime=spec.exptime, light=light, deposits=deposits, noise=noise
    )
    mask[readout.saturated] |= np.uint16(Flag.SATURATED)
    if deposits is not None:
        mask.ravel()[deposits[0]] |= np.uint16(Flag.COSMIC_RAY)
    inside = np.flatnonzero((x > -0.5) & (x < nx - 0.5) & (y > -0.5) & (y < ny - 0.5))
    star_mask = mask[np.rint(y[inside]).astype(int), np.rint(x[inside]).astype(int)]
    ra_in, dec_in = wcs.all_pix2world(x[inside], y[inside], 0)
    star_id = stars["star_id"].to_numpy()[near]
    columns = {"star_id": star_id, "x": x, "y": y, "v": v, "bv": bv, "flux": flux, "peak_adu": peak,
               "fwhm": fwhm}  # fmt: skip
    table = pa.table({
        "frame": pa.array([spec.name] * inside.size, pa.string()),
        "frame_index": np.full(inside.size, spec.index, np.int32), "ra": ra_in % 360, "dec": dec_in,
        **{k: col[inside] for k, col in columns.items()},
        "saturated": (star_mask & Flag.SATURATED) > 0, "mask": star_mask.astype(np.int32),
    })  # fmt: skip
    tracks_table = pa.Table.from_pylist([{"frame": spec.name, **t} for t in tracks])
    if cosmics is not None:
        cosmics = cosmics.add_column(0, "frame", pa.array([spec.name] * cosmics.num_rows))
    cosmics = pa.table({}) if cosmics is None else cosmics
    return ScienceFrame(readout.image, mask, readout.variance, table, tracks_table, cosmics)


def _header(
    imagetyp: str, mjd: float, exptime: float, config: PixelSimConfig, name: str
) -> fits.Header:
    h = fits.Header()
    h["IMAGETYP"], h["FRAMEID"] = imagetyp, name
    h["EXPTIME"] = (float(exptime), "exposure time, s")
    h["DATE-OBS"] = (Time(mjd, format="mjd", scale="utc").isot, "exposure start, UTC")
    h["MJD-OBS"] = (float(mjd), "exposure start, MJD UTC")
    h["FILTER"], h["CHANNEL"], h["BUNIT"] = config.filter, config.channel, "ADU"
    h["SATURATE"] = (config.detector.saturation_adu, "ADC saturation, ADU")
    h["ORIGIN"], h["SIMSEED"] = "lcdb simulate frames", config.seed
    return h


def _write_fits(path: Path, data: np.ndarray, header: fits.Header | None = None) -> Path:
    fits.PrimaryHDU(data=np.asarray(data), header=header).writeto(path, overwrite=True)
    return path


def _write_tables(path: Path, tables: list[pa.Table]) -> None:
    tables = [t for t in tables if t.num_rows]
    if tables:
        pq.write_table(pa.concat_tables(tables, promote_options="default"), path)


def simulate_frames(
    config: PixelSimConfig,
    out_dir: str | Path,
    *,
    stars: pa.Table | None = None,
    overwrite: bool = False,
) -> SimulationResult:
    """Write ``config.n_frames`` raw frames, their calibration frames and the truth.

    Parameters
    ----------
    config
        Simulation settings.
    out_dir
        Output directory (created).
    stars
        Star list (star_id, ra, dec, v, bv) replacing the generated sky.
    overwrite
        Replace a simulation already in ``out_dir`` (else ``FileExistsError``).

    Returns
    -------
    SimulationResult
        Paths of the science and calibration frames, the truth directory, timing.

    Notes
    -----
    Layout of ``out_dir``: ``science/<channel>-NNNN.fits`` (uint16; TAN WCS, DATE-OBS,
    MJD-OBS, EXPTIME, FILTER, CHANNEL, IMAGETYP, FRAMEID, SATURATE), ``calib/bias/``,
    ``calib/dark/`` (``n_dark`` per exposure time), ``calib/flat/`` (a pair per level), and
    ``truth/``: ``stars.parquet`` (one row per star and frame), ``frames.parquet``,
    ``tracks.parquet``, ``cosmics.parquet``, ``calib.parquet``, ``sky_stars.parquet`` (the star
    list), ``masks/<frame>.fits`` (uint16 flag bits), ``static_mask.fits``,
    ``rtn_pixels.parquet``, ``detector/{bias,gain,read_noise,dark_current,flat,nonlinearity}.fits``
    and ``detector.json``. Every frame has its own generator spawned from
    ``SeedSequence(config.seed)``, so frame ``i`` does not depend on how many frames are made.
    """
    start, out = time.perf_counter(), Path(out_dir)
    if any((out / d).exists() for d in ("science", "calib", "truth")):
        if not overwrite:
            raise FileExistsError(f"{out} already holds a simulation (science/, calib/ or truth/)")
        for d in ("science", "calib", "truth"):
            shutil.rmtree(out / d, ignore_errors=True)
    for d in ("science", "calib/bias", "calib/dark", "calib/flat", "truth/masks", "truth/detector"):
        (out / d).mkdir(parents=True, exist_ok=True)
    det, tdir = config.detector, out / "truth"
    ss_det, ss_sky, ss_sci, ss_cal = np.random.SeedSequence(config.seed).spawn(4)
    truth = dm.make_detector_truth(det, np.random.default_rng(ss_det))
    stars = make_star_list(config, np.random.default_rng(ss_sky)) if stars is None else stars
    pq.write_table(stars, tdir / "sky_stars.parquet")
    summary = json.dumps(dm.detector_summary(det, truth), indent=2)
    (tdir / "detector.json").write_text(summary + "\n")
    _write_fits(tdir / "static_mask.fits", truth.static_mask)
    ry, rx = np.divmod(truth.rtn_index, det.nx)
    rtn = {"x": rx, "y": ry, "amplitude_adu": truth.rtn_amplitude, "duty": truth.rtn_duty}
    pq.write_table(pa.table(rtn), tdir / "rtn_pixels.parquet")
    for name in ("bias", "gain", "read_noise", "dark_current", "flat", "nonlinearity"):
        if config.truth_maps and getattr(truth, name).ndim == 2:  # a uniform c is in the json
            _write_fits(tdir / "detector" / f"{name}.fits", getattr(truth, name))

    plan = []
    if config.calib:
        plan = dm.calibration_plan(config.n_bias, config.n_dark, config.dark_exptimes,
                                   config.flat_levels, config.flat_rate_adu_per_s)  # fmt: skip
    disable = None if config.progress is None else not config.progress
    bar = tqdm(total=config.n_frames + len(plan), desc="frames", unit="frame", disable=disable)
    canvas = np.zeros(det.shape, np.float32)
    science, star_tables, track_tables, cosmic_tables, frame_rows = [], [], [], [], []
    for i, ss in enumerate(ss_sci.spawn(config.n_frames)):
        rng_spec, rng_img = (np.random.default_rng(s) for s in ss.spawn(2))
        spec = make_frame_spec(config, i, rng_spec)
        frame = render_science_frame(config, truth, stars, spec, rng_img, canvas=canvas)
        header = _header("LIGHT", spec.mjd, spec.exptime, config, spec.name)
        header["RA"], header["DEC"] = spec.ra0, spec.dec0
        header.update(frame_wcs(config, spec.ra0, spec.dec0).to_header())
        science.append(_write_fits(out / "science" / f"{spec.name}.fits", frame.image, header))
        _write_fits(tdir / "masks" / f"{spec.name}.fits", frame.mask)
        star_tables.append(frame.stars)
        track_tables.append(frame.tracks)
        cosmic_tables.append(frame.cosmics)
        counts = {"n_tracks": frame.tracks.num_rows, "n_cosmics": frame.cosmics.num_rows}
        frame_rows.append({**asdict(spec), "file": f"science/{spec.name}.fits", **counts})
        bar.update()
    _write_tables(tdir / "stars.parquet", star_tables)
    _write_tables(tdir / "tracks.parquet", track_tables)
    _write_tables(tdir / "cosmics.parquet", cosmic_tables)
    _write_tables(tdir / "frames.parquet", [pa.Table.from_pylist(frame_rows)] if frame_rows else [])

    calib: dict[str, list[Path]] = {"bias": [], "dark": [], "flat": []}
    for k, (item, ss) in enumerate(zip(plan, ss_cal.spawn(len(plan)), strict=True)):
        rng = np.random.default_rng(ss)
        deposits = make_cosmics(config, item.exptime, rng)[0] if item.kind == "DARK" else None
        image = dm.render_calibration(det, truth, item, rng, deposits)
        mjd = config.mjd0 - 0.1 + k * 10 / 86400
        path = out / "calib" / item.kind.lower() / f"{item.name}.fits"
        calib[item.kind.lower()].append(
            _write_fits(path, image, _header(item.kind, mjd, item.exptime, config, item.name))
        )
        bar.update()
    bar.close()
    rows = [{"file": f"calib/{p.kind.lower()}/{p.name}.fits", **p._asdict()} for p in plan]
    _write_tables(tdir / "calib.parquet", [pa.Table.from_pylist(rows)] if rows else [])
    elapsed = time.perf_counter() - start
    _log.info("simulated %d + %d calibration frames in %s (%.1f s)", len(science), len(plan),
              out, elapsed)  # fmt: skip
    return SimulationResult(out, science, calib, tdir, stars.num_rows, elapsed)
