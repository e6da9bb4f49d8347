"""Per-frame reduction (``lcdb reduce``): raw frame -> per-frame catalogue, in a process pool.

One frame: calibration masters (:mod:`ingest.calibset`) -> masks (:mod:`ingest.masks`) ->
background, detection, FWHM, apertures (:mod:`ingest.photometry`) -> WCS from the header,
refined on the store's reference catalogue (:mod:`ingest.astrometry`) -> a catalogue in the
format of docs/formats.md §1 (Parquet, frame keywords in the schema metadata), optional mask and
background FITS, and a QA row. Every stage is timed; memory is one float32 image, one uint16
mask and the background map, whatever the number of frames.

A frame that fails (bad input: one line naming the file and the problem) or is rejected (its WCS
cannot be matched: the reason) is reported and skipped; the batch goes on. The QA rows of a
batch are merged into ``DIR/qa.csv`` (a frame reduced again replaces its row).
"""

from __future__ import annotations

import logging
import multiprocessing
import resource
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ingest import astrometry as am
from ingest.calibset import CalibSet, calibrate
from ingest.cosmics import CoarseMap
from ingest.frameio import FitsImage, frame_meta, write_image
from ingest.masks import MaskConfig, build_masks
from ingest.photometry import PhotConfig, measure
from ingest.products import fits_cards, write_catalogue, write_qa
from lcdb import __version__
from lcdb.errors import LcdbError
from lcdb.flags import Flag

_log = logging.getLogger(__name__)

#: Keywords every raw science frame needs.
REQUIRED = ("MJD-OBS", "EXPTIME", "FILTER", "CHANNEL")
STAGES = ("calibrate", "masks", "photometry", "astrometry", "write")


class FrameRejected(LcdbError):
    """A frame that was read and measured but cannot give a catalogue (the reason)."""


@dataclass(frozen=True)
class ReduceConfig:
    """Everything one frame's reduction needs besides its inputs.

    Parameters
    ----------
    masks, phot, astrom
        Stage settings.
    gain : float or None
        e-/ADU for the Poisson noise (default: the header's ``GAIN``; without either, errors
        hold the background noise only).
    saturation : float or None
        Raw saturation level, ADU (default: ``SATURATE``, else the largest value of the raw
        integer type, else none).
    save_mask, save_background : bool
        Also write ``<frame>.mask.fits.fz`` (uint16 flags) and ``<frame>.back.fits.fz``.
    skip_existing : bool
        Skip frames whose catalogue is already in the output directory.
    """

    masks: MaskConfig = field(default_factory=MaskConfig)
    phot: PhotConfig = field(default_factory=PhotConfig)
    astrom: am.AstromConfig = field(default_factory=am.AstromConfig)
    gain: float | None = None
    saturation: float | None = None
    save_mask: bool = False
    save_background: bool = False
    skip_existing: bool = False

    def __post_init__(self) -> None:
        problems = []
        if self.gain is not None and not self.gain > 0:
            problems.append(f"gain must be > 0, got {self.gain}")
        if self.saturation is not None and not self.saturation > 0:
            problems.append(f"saturation must be > 0, got {self.saturation}")
        if problems:
            raise ValueError("invalid ReduceConfig: " + "; ".join(problems))


@dataclass
class FrameOutcome:
    """Result of one frame: ``status`` ``ok``, ``rejected``, ``failed`` or ``skipped``."""

    file: str
    frame: str
    status: str
    reason: str = ""
    catalogue: str = ""
    qa: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        """The frame's QA line."""
        if self.status != "ok":
            return f"{self.frame}: {self.status}: {self.reason}"
        q = self.qa
        rms = q.get("astrom_rms_arcsec", float("nan"))
        astro = (
            "header WCS"
            if not np.isfinite(rms)
            else f'astrometric rms {rms:.3f}" ({q["astrom_nmatch"]} stars)'
        )
        return (f"{self.frame}: {q['n_measured']} stars, FWHM {q['fwhm']:.2f} px, background "
                f"{q['background']:.1f} ADU, {astro}, {100 * q['mask_fraction']:.1f}% masked, "
                f"{q['t_total']:.1f} s")  # fmt: skip


def saturation_level(config: ReduceConfig, meta_saturate: float | None, header: Any) -> float:
    """Raw saturation level (see :class:`ReduceConfig`)."""
    if config.saturation is not None:
        return float(config.saturation)
    if meta_saturate is not None:
        return float(meta_saturate)
    bitpix, bzero = int(header.get("BITPIX", -32)), float(header.get("BZERO", 0))
    if bitpix > 0 and float(header.get("BSCALE", 1.0)) == 1.0:
        top = 2 ** (bitpix - 1) - 1 + bzero
        return float(top)
    return float("inf")


def peak_rss_mb() -> float:
    """Peak resident memory of this process, MB: ``VmHWM`` of /proc/self/status on Linux (it
    starts afresh at exec, unlike ``ru_maxrss``, which a spawned worker inherits from the
    process that forked it), else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _Clock:
    def __init__(self) -> None:
        self.t0 = self.last = time.perf_counter()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.laps[f"t_{name}"] = now - self.last
        self.laps[f"m_{name}"] = peak_rss_mb()
        self.last = now

    def total(self) -> float:
        return time.perf_counter() - self.t0


_STORES: dict[str, Any] = {}


def _store(path: str | None) -> Any:
    if path is None:
        return None
    if path not in _STORES:
        from lcdb.store import open_store

        _STORES[path] = open_store(path)
    return _STORES[path]


def reduce_frame(
    path: str | Path,
    out_dir: str | Path,
    config: ReduceConfig,
    calib: CalibSet | None = None,
    store: str | None = None,
) -> FrameOutcome:
    """Reduce one raw frame into ``out_dir`` (see the module docstring).

    Raises
    ------
    LcdbError
        Bad input (:class:`~lcdb.errors.InputError`) or no astrometric match
        (:class:`~ingest.astrometry.AstrometryError`); :func:`run_frame` turns them into a
        failed or rejected outcome.
    """
    path, out_dir = Path(path), Path(out_dir)
    clock = _Clock()
    with FitsImage(path) as img:
        meta = frame_meta(path, img.header)
        meta.require(*REQUIRED)
        header = img.header.copy()
        selection = calib.select(meta) if calib is not None else None
        cal = calibrate(img, selection, saturation_level(config, meta.saturate, header))
    clock.lap("calibrate")
    gain = config.gain if config.gain is not None else meta.gain
    info = build_masks(cal.image, cal.mask, gain, config.masks, cal.saturated, cal.bad)
    clock.lap("masks")
    flat = CoarseMap(cal.flat_coarse, cal.coarse) if selection and selection.flat else None
    mask = cal.mask
    phot = measure(cal.image, mask, info.rms, gain, flat, config.phot, info.sources, info.bkg,
                   keep_background=config.save_background)  # fmt: skip
    del cal  # the image: the largest array
    clock.lap("photometry")
    cols = phot.columns
    if cols["x"].size == 0:
        raise FrameRejected(f"no star measured ({phot.qa['n_detected']} detections, none "
                            f"within the {config.phot.max_rel_error:.0%} error limit)")  # fmt: skip
    wcs = am.header_wcs(header)
    solution = None
    if store is not None:
        ref = am.refcat_for_frame(_store(store), wcs, meta.shape, meta.mjd,
                                  config.astrom.max_shift_px + 10)  # fmt: skip
        usable = (cols["flags"] & ~int(Flag.SALT_PEPPER)) == 0
        snr = cols["flux"] / cols["flux_err"]
        solution = am.solve(cols["x"], cols["y"], cols["flux"], usable, wcs, ref, meta.shape,
                            config.astrom, snr)  # fmt: skip
        wcs = solution.wcs
    ra, dec = wcs.all_pix2world(cols["x"], cols["y"], 0)
    ny, nx = meta.shape
    ra_c, dec_c = wcs.all_pix2world([(nx - 1) / 2], [(ny - 1) / 2], 0)
    clock.lap("astrometry")

    counts = info.counts
    qa = {
        "n_detected": phot.qa["n_detected"], "n_measured": int(cols["x"].size),
        "fwhm": float(phot.qa["fwhm"]), "background": phot.qa["background"],
        "background_rms": phot.qa["background_rms"], "aperture_radius": phot.qa["aperture_radius"],
        "astrom_rms_arcsec": solution.rms_arcsec if solution else float("nan"),
        "astrom_rms_px": solution.rms_px if solution else float("nan"),
        "astrom_nmatch": solution.n_matched if solution else 0,
        "mask_fraction": counts["any"] / float(nx * ny), "n_tracks": len(info.tracks),
        "n_cosmic": info.n_cosmic,
        **{f"frac_{k}": v / float(nx * ny) for k, v in counts.items() if k != "any"},
    }  # fmt: skip
    cards = {
        "MJD-OBS": meta.mjd, "EXPTIME": meta.exptime, "FILTER": meta.filter,
        "CHANNEL": meta.channel, "NAXIS1": nx, "NAXIS2": ny, "FRAMEID": meta.name,
        "AIRMASS": meta.airmass, "RA": float(ra_c[0]) % 360, "DEC": float(dec_c[0]),
        "FOCUS": meta.focus, "FWHM": round(qa["fwhm"], 4), "BKG": round(qa["background"], 3),
        "BKGRMS": round(qa["background_rms"], 3), "APMODE": config.phot.aperture,
        "APRADIUS": round(qa["aperture_radius"], 4), "MASKFRAC": round(qa["mask_fraction"], 6),
        "NDETECT": qa["n_detected"], "NTRACKS": len(info.tracks), "NCOSMIC": info.n_cosmic,
        "GAIN": gain, "XYORIGIN": 0, "LCDBRED": __version__, "RAWFILE": path.name,
        **am.wcs_cards(solution), **(selection.cards() if selection else {}),
    }  # fmt: skip
    if config.phot.aperture == "optimal":
        cards["APREF"] = round(phot.qa.get("reference_radius", float("nan")), 4)
        cards["APCORRMS"] = round(phot.qa.get("apcorr_rms", float("nan")), 5)
    cards["WCSHDR"] = wcs.to_header(relax=True).tostring(sep="\n", endcard=False, padding=False)
    out_dir.mkdir(parents=True, exist_ok=True)
    catalogue = out_dir / f"{meta.name}.parquet"
    write_catalogue(catalogue, cols, ra, dec, cards)
    # Tile-compressed (.fits.fz, lossless): `lcdb ingest DIR` takes only catalogues from DIR.
    if config.save_background:
        write_image(out_dir / f"{meta.name}.back.fits.fz", phot.background,
                    fits_cards(wcs, cards), compress="GZIP_2")  # fmt: skip
    if config.save_mask:
        write_image(out_dir / f"{meta.name}.mask.fits.fz", mask, fits_cards(wcs, cards),
                    compress="RICE_1")  # fmt: skip
    clock.lap("write")
    qa.update(clock.laps)
    qa.update(info.timing)
    qa.update({k: v for k, v in phot.qa.items() if k.startswith("t_phot_")})
    qa["t_total"] = clock.total()
    qa["peak_rss_mb"] = peak_rss_mb()
    return FrameOutcome(str(path), meta.name, "ok", "", str(catalogue), qa)


def run_frame(
    path: str | Path,
    out_dir: str | Path,
    config: ReduceConfig,
    calib: CalibSet | None = None,
    store: str | None = None,
) -> FrameOutcome:
    """:func:`reduce_frame`, with every error turned into a failed or rejected outcome."""
    path = Path(path)
    name = path.name
    if config.skip_existing:
        try:
            name = frame_meta(path).name
        except LcdbError:
            pass
        done = Path(out_dir) / f"{name}.parquet"
        if done.exists():
            return FrameOutcome(str(path), name, "skipped", "catalogue exists", str(done))
    try:
        return reduce_frame(path, out_dir, config, calib, store)
    except (am.AstrometryError, FrameRejected) as exc:
        return FrameOutcome(str(path), _name(path), "rejected", f"{path}: {exc}")
    except LcdbError as exc:
        return FrameOutcome(str(path), _name(path), "failed", str(exc))
    except MemoryError:
        return FrameOutcome(str(path), _name(path), "failed", f"{path}: out of memory")
    except Exception as exc:  # a bug must not stop the batch; report it with its type
        _log.debug("frame %s failed", path, exc_info=True)
        return FrameOutcome(
            str(path), _name(path), "failed", f"{path}: {type(exc).__name__}: {exc}"
        )


def _name(path: Path) -> str:
    try:
        return frame_meta(path).name
    except LcdbError:
        return path.stem


def _init_worker(level: int) -> None:
    logging.basicConfig(level=level, format="%(levelname)s: %(message)s")


@dataclass
class BatchResult:
    """Outcomes of a batch, in input order, and the QA table written."""

    outcomes: list[FrameOutcome]
    qa_path: Path | None

    @property
    def failed(self) -> list[FrameOutcome]:
        return [o for o in self.outcomes if o.status in ("failed", "rejected")]


def reduce_frames(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    config: ReduceConfig | None = None,
    calib: CalibSet | None = None,
    store: str | None = None,
    jobs: int = 1,
    progress: bool = False,
) -> BatchResult:
    """Reduce frames in a process pool of ``jobs`` workers (in this process when 1).

    Each frame's QA line is logged; failed and rejected frames are logged as errors and
    warnings. The QA rows are merged into ``out_dir/qa.parquet``.
    """
    config = config or ReduceConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes: dict[int, FrameOutcome] = {}
    bar = tqdm(total=len(paths), desc="reduce", unit="frame", disable=not progress)

    def done(i: int, outcome: FrameOutcome) -> None:
        outcomes[i] = outcome
        if outcome.status == "ok":
            _log.info("%s", outcome.line())
        elif outcome.status == "rejected":
            _log.warning("%s", outcome.reason)
        elif outcome.status == "failed":
            _log.error("%s", outcome.reason)
        bar.update()

    if jobs <= 1 or len(paths) <= 1:
        for i, p in enumerate(paths):
            done(i, run_frame(p, out_dir, config, calib, store))
    else:
        ctx = multiprocessing.get_context("spawn")
        level = logging.getLogger().getEffectiveLevel()
        with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                 initargs=(max(level, logging.WARNING),)) as pool:  # fmt: skip
            futures = {
                pool.submit(run_frame, p, out_dir, config, calib, store): i
                for i, p in enumerate(paths)
            }
            for fut in as_completed(futures):
                i = futures[fut]
                try:
                    done(i, fut.result())
                except BrokenProcessPool as exc:  # a worker died (killed, out of memory)
                    reason = f"{paths[i]}: worker process died ({exc})"
                    done(i, FrameOutcome(str(paths[i]), Path(paths[i]).stem, "failed", reason))
    bar.close()
    ordered = [outcomes[i] for i in range(len(paths))]
    rows = [o for o in ordered if o.status != "skipped"]
    qa_path = write_qa(out_dir / "qa.csv", rows) if rows else None
    return BatchResult(ordered, qa_path)
