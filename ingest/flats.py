"""Flat fields: twilight flats (large x small scale, stacked over nights) and night-sky flats.

Twilight flats (Mini-SiTian §3.1.2): each dark-subtracted, linearised, normalised flat is split
into a large-scale part (a 51-px median smoothing) and a small-scale part (flat / large scale).
The small-scale flats of a night are combined (sigma-clipped mean), then stacked over the
neighbouring nights: up to ``n_nights`` nights with flats before and after, within ``max_days``
of the night (the seed's "five days before and after, within two months"). A night's master flat
is its own large scale times that stacked small scale, normalised to mean 1.

Night-sky flats (Mini-MegaTORTORA §2.1): per hardware configuration (channel, filter, focus), the
median of the normalised science frames with their stars masked.

The 51-px median smoothing is approximated on a mesh (:func:`large_scale`): the exact 51x51
median at grid points every 16 px, and a bicubic spline through them. An exact 51x51 median
filter costs ~100 s on 2048² (MEASURED.md); the mesh costs 256x fewer medians and differs from
the exact filter by ~2e-4 rms on a vignetted flat with 1% pixel response scatter (measured in
tests/test_calib_flats.py against ``scipy.ndimage.median_filter``).
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage

from ingest.calib import CalibConfig, product_name, provenance, read_metas
from ingest.calibset import CalibSet, calibrate
from ingest.frameio import FitsImage, FrameMeta, night_of, write_image
from ingest.stack import clipped_mean_stack, stack_blocks
from lcdb.errors import InputError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlatConfig:
    """How flats are made.

    Parameters
    ----------
    window : int
        Median-smoothing window of the large-scale flat, px (the seed's 51).
    step : int
        Grid step of the large-scale approximation (:func:`large_scale`), px.
    n_nights : int
        Nights with flats taken on each side of a night when stacking small-scale flats.
    max_days : float
        Nights further than this from the night (days) are never stacked (two months in all).
    min_level, max_level : float
        Accepted median level of a twilight flat, ADU after dark subtraction.
    star_nsigma : float
        Night-sky flats: pixels this many sigma above the background are stars.
    star_grow : int
        Night-sky flats: star masks are grown by this many px.
    """

    window: int = 51
    step: int = 16
    n_nights: int = 5
    max_days: float = 30.0
    min_level: float = 1000.0
    max_level: float = 60000.0
    star_nsigma: float = 3.0
    star_grow: int = 4

    def __post_init__(self) -> None:
        problems = []
        if self.window < 3 or self.window % 2 == 0:
            problems.append(f"window must be an odd number >= 3, got {self.window}")
        if not 1 <= self.step <= self.window:
            problems.append(f"step must be in 1..window, got {self.step}")
        if self.n_nights < 0:
            problems.append(f"n_nights must be >= 0, got {self.n_nights}")
        if not self.max_days >= 0:
            problems.append(f"max_days must be >= 0, got {self.max_days}")
        if not 0 <= self.min_level < self.max_level:
            problems.append(f"need 0 <= min_level < max_level, got {self.min_level}, "
                            f"{self.max_level}")  # fmt: skip
        if not self.star_nsigma > 0:
            problems.append(f"star_nsigma must be > 0, got {self.star_nsigma}")
        if self.star_grow < 0:
            problems.append(f"star_grow must be >= 0, got {self.star_grow}")
        if problems:
            raise ValueError("invalid FlatConfig: " + "; ".join(problems))


def large_scale(image: np.ndarray, window: int = 51, step: int = 16) -> np.ndarray:
    """Approximation of a ``window``-px median filter of ``image`` (NaN-aware).

    The exact windowed median (edges reflected, as ``scipy.ndimage.median_filter``) is taken
    only at grid points every ``step`` px, and a bicubic spline through them gives every pixel.
    A flat's large scale is smooth over ``step``, so the spline adds ~2e-4 rms to the median's
    own noise (tests/test_calib_flats.py); the cost falls by ``step**2``.

    Parameters
    ----------
    image
        2-D float array; NaN pixels are ignored.
    window, step
        See :class:`FlatConfig`.

    Returns
    -------
    ndarray
        float32 smooth image of the same shape.
    """
    from scipy.interpolate import RectBivariateSpline

    FlatConfig(window=window, step=step)  # validates
    ny, nx = image.shape
    h = min(window // 2, ny - 1, nx - 1)  # reflection needs h < size (tiny test images)
    window = 2 * h + 1
    gy = np.unique(np.r_[np.arange(0, ny, step), ny - 1])
    gx = np.unique(np.r_[np.arange(0, nx, step), nx - 1])
    grid = np.empty((gy.size, gx.size), np.float32)
    cols = np.pad(np.arange(nx), h, mode="reflect")  # reflected column indices
    for i, y in enumerate(gy):
        rows = np.pad(np.arange(ny), h, mode="reflect")[y : y + window]
        band = image[rows][:, cols]  # (window, nx + 2h)
        win = np.lib.stride_tricks.sliding_window_view(band, window, axis=1)[:, gx]
        values = win.transpose(1, 0, 2).reshape(gx.size, -1)
        grid[i] = _nanmedian_rows(values)
    if np.isnan(grid).any():  # grid points without a valid pixel take their neighbours' value
        idx = ndimage.distance_transform_edt(np.isnan(grid), return_distances=False,
                                             return_indices=True)  # fmt: skip
        grid = grid[tuple(idx)]
    ky, kx = min(3, gy.size - 1), min(3, gx.size - 1)
    if ky < 1 or kx < 1:
        return np.full((ny, nx), float(np.nanmedian(grid)), np.float32)
    spline = RectBivariateSpline(gy, gx, grid, kx=kx, ky=ky)
    out = np.empty((ny, nx), np.float32)
    for r0 in range(0, ny, 256):
        out[r0 : r0 + 256] = spline(np.arange(r0, min(ny, r0 + 256)), np.arange(nx))
    return out


def _nanmedian_rows(a: np.ndarray) -> np.ndarray:
    if not np.isnan(a).any():
        return np.median(a, axis=1).astype(np.float32)
    out = np.full(a.shape[0], np.nan, np.float32)
    ok = ~np.isnan(a).all(axis=1)
    out[ok] = np.nanmedian(a[ok], axis=1)
    return out


def _groups(metas: Sequence[FrameMeta], longitude: float) -> dict[tuple, list[FrameMeta]]:
    groups: dict[tuple, list[FrameMeta]] = defaultdict(list)
    for m in metas:
        assert m.mjd is not None
        groups[(*m.config_key, night_of(m.mjd, longitude))].append(m)
    return groups


def make_twilight_flats(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    calibset: CalibSet | None = None,
    config: FlatConfig | None = None,
    calib_config: CalibConfig | None = None,
) -> list[Path]:
    """One master flat per (channel, filter, focus, night) from twilight flats.

    Parameters
    ----------
    paths
        Raw twilight flats.
    out_dir
        Where the masters go (``flat_<channel>_<filter>[_<focus>]_n<night>.fits``).
    calibset
        Masters: each flat gets its dark (or bias) and nonlinearity correction.
    config, calib_config
        Flat and stacking settings.
    """
    config, cc = config or FlatConfig(), calib_config or CalibConfig()
    metas = read_metas(paths, "MJD-OBS")
    if calibset is None or not calibset.of_kind("bias", "dark"):
        raise InputError("twilight flats need a master bias or dark (--calib DIR)")
    out = []
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".flatwork-") as tmp:
        work = Path(tmp)
        nights: dict[tuple, dict] = {}
        for key, members in sorted(_groups(metas, cc.longitude_deg).items()):
            smalls, large_sum, used = [], None, []
            for m in members:
                with FitsImage(m.path) as img:
                    flat = calibrate(img, calibset.select(m, ()), saturation=np.inf).image
                level = float(np.median(flat))
                if not config.min_level <= level <= config.max_level:
                    _log.warning("%s: flat level %.0f ADU outside [%g, %g]: skipped", m.path,
                                 level, config.min_level, config.max_level)  # fmt: skip
                    continue
                flat /= np.float32(level)
                large = large_scale(flat, config.window, config.step)
                flat /= large
                small = work / f"small-{len(nights)}-{len(smalls)}.fits"
                smalls.append(write_image(small, flat))
                large_sum = large if large_sum is None else large_sum + large
                used.append(m)
            if not used:
                continue
            small_night = clipped_mean_stack(smalls, cc.stack).mean
            nights[key] = {"metas": used, "mjd": float(np.mean([m.mjd for m in used])),
                           "small": write_image(work / f"night-{len(nights)}.fits", small_night),
                           "large": write_image(work / f"large-{len(nights)}.fits",
                                                large_sum / np.float32(len(used)))}  # fmt: skip
        for key, night in nights.items():
            near = _neighbour_nights(key, nights, config)
            weights = [len(nights[k]["metas"]) for k in near]
            small = _weighted_mean([nights[k]["small"] for k in near], weights, cc.budget)
            with FitsImage(night["large"]) as large:
                master = small * large.read()
            norm = float(np.mean(master[np.isfinite(master) & (master > 0)], dtype=np.float64))
            master /= np.float32(norm)
            inputs = [m for k in near for m in nights[k]["metas"]]
            header = provenance("flat", night["metas"], {
                "FLATTYPE": ("twilight", "large scale of the night x stacked small scale"),
                "FLATWIN": (config.window, "large-scale median window, px"),
                "FLATSTEP": (config.step, "grid step of the median approximation, px"),
                "NNIGHTS": (len(near), "nights stacked in the small scale"),
                "NSMALL": (len(inputs), "flats in the small-scale stack"),
                "FLATNORM": (norm, "mean before normalisation"),
            })  # fmt: skip
            header["MJD-OBS"] = night["mjd"]
            for k in near:
                header.add_history(f"small scale from night {k[-1]}")
            path = Path(out_dir) / product_name("flat", header, cc.longitude_deg)
            out.append(write_image(path, master, header))
            _log.info("master flat %s: %d flats of %d night(s)", path, len(inputs), len(near))
    if not out:
        raise InputError("no usable twilight flats (all outside the accepted level range)")
    return out


def _neighbour_nights(key: tuple, nights: dict[tuple, dict], config: FlatConfig) -> list[tuple]:
    """Nights of the same configuration stacked with night ``key``: up to ``n_nights`` with
    flats on each side (by rank), none further than ``max_days``."""
    same = sorted((k for k in nights if k[:3] == key[:3]), key=lambda k: k[3])
    i = same.index(key)
    chosen = same[max(0, i - config.n_nights) : i + config.n_nights + 1]
    return [k for k in chosen if abs(nights[k]["mjd"] - nights[key]["mjd"]) <= config.max_days]


def _weighted_mean(paths: list[Path], weights: list[int], budget: int) -> np.ndarray:
    w = np.asarray(weights, np.float32) / np.float32(sum(weights))
    out = None
    for r0, r1, cube in stack_blocks(paths, budget):
        if out is None:
            with FitsImage(paths[0]) as img:
                out = np.empty(img.shape, np.float32)
        out[r0:r1] = np.tensordot(w, cube, axes=1)
    assert out is not None
    return out


def make_night_sky_flats(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    calibset: CalibSet | None = None,
    config: FlatConfig | None = None,
    calib_config: CalibConfig | None = None,
) -> list[Path]:
    """One night-sky flat per hardware configuration (channel, filter, focus).

    Each science frame is dark-subtracted and linearised (masters of ``calibset``), its stars masked
    (``star_nsigma`` above a SEP background, grown by ``star_grow`` px) and normalised by its
    median sky; the flat is the per-pixel median over frames (streamed by row blocks),
    normalised to mean 1. Pixels masked in every frame take the large-scale value.
    """
    import sep

    config, cc = config or FlatConfig(), calib_config or CalibConfig()
    metas = read_metas(paths, "MJD-OBS")
    if calibset is None or not calibset.of_kind("bias", "dark"):
        raise InputError("night-sky flats need a master bias or dark (--calib DIR)")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    groups: dict[tuple, list[FrameMeta]] = defaultdict(list)
    for m in metas:
        groups[m.config_key].append(m)
    out = []
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".flatwork-") as tmp:
        for key, members in sorted(groups.items()):
            if len(members) < 3:
                _log.warning("night-sky flat %s: only %d frame(s); a median needs several",
                             "/".join(key), len(members))  # fmt: skip
            normed = []
            for m in members:
                with FitsImage(m.path) as img:
                    frame = calibrate(img, calibset.select(m, ()), saturation=np.inf).image
                bkg = sep.Background(frame, bw=64, bh=64)
                stars = (frame - bkg.back()) > config.star_nsigma * bkg.rms()
                if config.star_grow:
                    stars = ndimage.binary_dilation(stars, iterations=config.star_grow)
                frame[stars] = np.nan
                frame /= np.float32(np.nanmedian(frame))
                normed.append(write_image(Path(tmp) / f"sky-{len(normed)}.fits", frame))
            master = np.empty(members[0].shape, np.float32)
            for r0, r1, cube in stack_blocks(normed, cc.budget):
                with warnings.catch_warnings():  # pixels masked in every frame: holes, below
                    warnings.simplefilter("ignore", RuntimeWarning)
                    master[r0:r1] = np.nanmedian(cube, axis=0)
            holes = ~np.isfinite(master)
            if holes.any():
                master[holes] = large_scale(master, config.window, config.step)[holes]
            norm = float(np.mean(master, dtype=np.float64))
            master /= np.float32(norm)
            header = provenance("nightflat", members, {
                "FLATTYPE": ("night sky", "median of sky frames, stars masked"),
                "FLATNORM": (norm, "mean before normalisation"),
                "NHOLES": (int(holes.sum()), "pixels masked in every frame"),
            })  # fmt: skip
            path = Path(out_dir) / product_name("nightflat", header, cc.longitude_deg)
            out.append(write_image(path, master, header))
            _log.info("night-sky flat %s from %d frames", path, len(members))
    return out


def read_flat(path: str | Path) -> tuple[np.ndarray, fits.Header]:
    """A flat and its header."""
    with FitsImage(path) as img:
        return img.read(), img.header.copy()
