"""Catalogue-level survey simulator: per-frame catalogues, a reference catalogue and full truth.

The instrumental flux model (the identity later stages and their tests rely on)::

    mag_instr = -2.5 log10(flux / EXPTIME) = V + dm(t) + C * (B - V) + Z0(xn, yn)

with ``flux`` the catalogue flux (ADU in the aperture), ``dm(t)`` the star's variability at
mid-exposure (:func:`lcdb.sim.variables.magnitude_offset`), ``C`` the frame's colour coefficient
and ``Z0(xn, yn) = sum_k z0_coeffs[k] * xn**i_k * yn**j_k`` (terms of :func:`z0_terms`) the
frame's total zero point: instrumental zero point + extinction (airmass over the field) +
residual vignetting + clouds, all one exact polynomial in the normalised coordinates of
:func:`normalise_xy` (order 4; 6 on cloud-ruined frames). It holds exactly (``noiseless=True``)
for every star that is unsaturated, not truncated by the edge and without a neighbour within
3 FWHM; otherwise the catalogue flux also has neighbour light in the aperture (blends),
saturation and edge losses, outliers, and noise of rms ``flux_err`` (photon, sky, read, dark,
scintillation, systematic floor). ``truth_flux`` (ADU) of each detection is the right-hand side
at the star's true position: ``EXPTIME * 10**(-0.4 * (V + dm + C (B - V) + Z0))``.

Output of :func:`simulate_survey` in ``DIR``:

``frames/<FRAMEID>.parquet``
    One catalogue per frame (docs/formats.md): ra, dec, x, y (0-based px), flux, flux_err
    (ADU), flags (lcdb.flags), fwhm (px), background (ADU/px), plus ``truth_star_id`` (-1 for
    spurious detections) and ``truth_flux``; frame keywords in the schema metadata.
``refcat.parquet``
    The field's reference catalogue, Tycho-like (:func:`lcdb.sim.sky.refcat_from_stars`).
``truth/stars.parquet``
    star_id, ra, dec (J2000), v, bv, pmra, pmdec (mas/yr), companion_of, name, var_type,
    period, amplitude, t0, shape, width (null where not applicable), in_refcat, ref_id.
``truth/frames.parquet``
    frame_index, frame_name (= FRAMEID), file, mjd_start, mjd (mid-exposure), exptime,
    airmass, ra0, dec0, rotation (deg), fwhm (px), sky_mag, background (ADU/px), extinction
    (mag/airmass), zp (= z0_coeffs[0], Z0 at the centre), color_coeff (C), z0_order, z0_coeffs,
    cloud (mean cloud loss, mag), ruined, track, n_detections.
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
import pyarrow.parquet as pq
from tqdm import tqdm

from lcdb.sim import noise, sky, variables
from lcdb.sim.camera import PRESETS, Camera
from lcdb.sim.measure import StarArrays, simulate_frame
from lcdb.sim.plan import (
    FrameSpec,
    evaluate_z0,
    frame_wcs,
    normalise_xy,
    opposition_mjd,
    plan_survey,
    z0_terms,
)

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
DEFAULT_STARS = {"mmt": 3000, "mst": 20000}


@dataclass(frozen=True)
class SurveyConfig:
    """What to simulate. ``None`` means "derived from the camera" (see :meth:`resolved`).

    Parameters
    ----------
    camera
        Instrument and site (:data:`lcdb.sim.camera.PRESETS`).
    n_frames, nights, night_spacing
        Frames, spread over ``nights`` nights about ``night_spacing`` days apart.
    n_stars
        Synthetic stars in the field (default 3000 for mmt, 20000 for mst).
    ra0, dec0, width_deg, height_deg
        Field centre and size, deg (default size: the frame plus 3 sigma of pointing jitter).
    seed
        Seed of every random number of the run.
    refcat, fill_faint
        A real star catalogue to take the stars from instead, and whether to add synthetic
        stars below its limit down to ``vmax``.
    refcat_limit
        V limit of the written reference catalogue (default: 2.5 mag above the SNR-5 limit,
        or the whole real catalogue with ``refcat``).
    vmin, vmax
        Magnitude range of synthetic stars (default: 1.5 mag brighter than saturation to
        0.5 mag fainter than the SNR-5 limit).
    start_mjd, exptimes, min_altitude
        First night (default: the field at opposition), exposure times drawn from per frame
        (default: the camera's), lowest altitude observed, deg.
    var_fraction, amp_range
        Fraction of stars made variable; range of their peak-to-peak amplitudes, mag.
    ruined_fraction, track_probability
        Fractions of frames ruined by cloud and crossed by a satellite track.
    cosmic_fraction, artefact_fraction, unflagged_outlier_fraction
        Fractions of measurements hit by a cosmic ray (flag 16), corrupted by an artefact
        (flag 512), and corrupted without any flag.
    spurious_per_frame
        Mean number of spurious (cosmic-ray) detections per frame.
    pair_fraction, high_pm_fraction
        Fractions of synthetic stars in close pairs and with high proper motion.
    snr_min, max_mag_err
        Detection: measured SNR at least ``snr_min`` and error at most ``max_mag_err``.
    noiseless
        No noise, centroid errors, outliers or spurious detections (for exact tests).
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
    nights: int = 20
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
        for name in ("night_spacing", "snr_min", "spurious_per_frame"):
            if not getattr(self, name) >= 0:
                p.append(f"{name} must be non-negative (got {getattr(self, name)!r})")
        if not self.max_mag_err > 0:
            p.append(f"max_mag_err must be positive (got {self.max_mag_err!r})")
        if not math.isfinite(self.ra0):
            p.append(f"ra0 must be a finite number (got {self.ra0!r})")
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
                "start_mjd": _or(self.start_mjd, opposition_mjd(self.ra0)),
                "refcat": None if self.refcat is None else Path(self.refcat),
            }
        )


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


def _or(value: object, default: object) -> object:
    return default if value is None else value


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


def make_stars(cfg: SurveyConfig, rng: np.random.Generator) -> tuple[pa.Table, int]:
    """The field's stars and how many (the first ones) come from a real catalogue.

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
        return stars, 0
    stars = sky.stars_from_refcat(cfg.refcat, **box, rng=rng, vmax=cfg.vmax)
    n_real = stars.num_rows
    if cfg.fill_faint:
        stars = sky.fill_faint(stars, **box, vmax=cfg.vmax, rng=rng)
    return stars, n_real


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
    seeds = np.random.SeedSequence(cfg.seed).spawn(5)
    rng_sky, rng_var, rng_ref, rng_plan = (np.random.default_rng(s) for s in seeds[:4])
    frame_seeds = seeds[4].spawn(cfg.n_frames)
    specs = plan_survey(cfg, rng_plan)
    stars, n_real = make_stars(cfg, rng_sky)
    for path in old:
        path.unlink()
    frames_dir.mkdir(parents=True, exist_ok=True)
    truth_dir.mkdir(parents=True, exist_ok=True)
    t_lo, t_hi = specs[0].mjd, specs[-1].mjd
    var = variables.assign_variables(
        stars.num_rows, rng=rng_var, fraction=cfg.var_fraction, t_start=t_lo, t_end=t_hi,
        amp_range=cfg.amp_range,
    )  # fmt: skip
    blend_arcsec = 1.5 * noise.fwhm_px(cfg.camera) * cfg.camera.pixscale
    real = None if cfg.refcat is None else np.arange(stars.num_rows) < n_real
    refcat, ref_id = sky.refcat_from_stars(
        stars,
        limit=cfg.refcat_limit if config.refcat_limit is not None or real is None else math.inf,
        blend_radius_arcsec=blend_arcsec,
        rng=rng_ref,
        listable=real,
    )
    truth = stars
    for name in ("var_type", "period", "amplitude", "t0", "shape", "width"):
        kind = pa.string() if name == "var_type" else pa.float64()
        truth = truth.append_column(name, pa.array(var[name], kind, from_pandas=True))
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
