"""Pixel-level frame simulator: raw science frames, calibration frames and their truth.

Light is computed in *truth ADU*: the ADU a star, the sky or a track gives at unit optical
response and the detector's mean gain, so a perfectly reduced frame (bias and dark subtracted,
linearized, multiplied by ``gain / gain.mean()``, divided by the truth flat) shows each star with
its truth ``flux``. :func:`lcdb.sim.detector.read_out` turns light into raw ADU.

This module owns the simulation settings, the frame pointing and sky, the assembly of a
science frame and the output files. The PSF and star stamps are in :mod:`lcdb.sim.psf`, the
satellite tracks, cosmic rays and artefact flags in :mod:`lcdb.sim.artefacts`, the calibration
sequence in :mod:`lcdb.sim.calibframes`; their public names stay importable from here.
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
from lcdb.sim.artefacts import add_tracks, flag_artefacts, make_cosmics, make_tracks, track_rows
from lcdb.sim.calibframes import calibration_plan, render_calibration
from lcdb.sim.detector import Detector, DetectorTruth, check_rules
from lcdb.sim.psf import PSFModel, render_stars
from lcdb.sim.sky import synthetic_stars

__all__ = [
    "FrameSpec",
    "PSFModel",
    "PixelSimConfig",
    "ScienceFrame",
    "SimulationResult",
    "frame_wcs",
    "make_cosmics",
    "make_frame_spec",
    "make_star_list",
    "make_tracks",
    "render_science_frame",
    "render_stars",
    "simulate_frames",
    "track_rows",
]

_log = logging.getLogger(__name__)
_MJD_J2000 = 51544.5


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
        add_tracks(out, mask, tracks, r0, r1, config.stamp_floor_adu, mask_floor)
        out *= g_mean
        return out

    readout = dm.read_out(
        det, truth, rng, exptime=spec.exptime, light=light, deposits=deposits, noise=noise
    )
    flag_artefacts(mask, readout.saturated, deposits)
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
        plan = calibration_plan(config.n_bias, config.n_dark, config.dark_exptimes,
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
        image = render_calibration(det, truth, item, rng, deposits)
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
