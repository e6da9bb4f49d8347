"""Dark sequences: per-pixel dark current from the dark level against exposure time.

Darks of one exposure time are combined per pixel: of three or more, the mean of the values
within ``clip_sigma`` read-noise sigmas plus half the level of their median (rejects cosmic
rays without clipping the shot noise of hot pixels; a plain median would be biased low by the
skewed shot noise of a fraction of an electron); of two the mean, or the lower where they differ
by more than ``clip_sigma`` read-noise sigmas; one is used as it is. Then the master bias is
subtracted. With
two or more exposure times a weighted line ``D = d0 + slope * t`` is fitted per pixel (the
intercept absorbs a dark/bias level difference of clamped CMOS read-outs); with one, the slope
is ``D / t``. Errors come from each pixel's read noise (bias std) and, once the gain is
known, the dark's own shot noise.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ingest.charbias import robust_sigma
from ingest.charframes import FrameGroup
from ingest.mixture import select_mixture, subsample

_log = logging.getLogger(__name__)


class DarkStats:
    """Per-pixel dark current (ADU/s) and its error over a sequence of exposure groups."""

    def __init__(
        self, groups: list[FrameGroup], shape: tuple[int, int], n_bias: int, *, clip_sigma: float
    ) -> None:
        self.groups, self.n_bias, self.clip_sigma = groups, n_bias, clip_sigma
        self.times = np.array([g.exptime for g in groups], np.float64)
        self.factors = np.array([1.0 / g.n for g in groups])
        self.n_clipped = 0
        self.with_intercept = np.unique(self.times).size >= 2
        self.slope = np.full(shape, np.nan, np.float32)
        self.slope_err = np.full(shape, np.nan, np.float32)
        self.intercept_sum, self.intercept_n = 0.0, 0
        if self.with_intercept:
            w = 1.0 / self.factors
            self.weights = w
            self.t_mean = float(np.sum(w * self.times) / w.sum())
            self.sxx = float(np.sum(w * (self.times - self.t_mean) ** 2))

    def combine(self, cube: np.ndarray, read_std: np.ndarray) -> np.ndarray:
        """Per-pixel level of one exposure group (see the module docstring)."""
        if cube.shape[0] >= 3:
            med = np.median(cube, axis=0)
            tol = np.float32(self.clip_sigma) * read_std + np.float32(0.5) * np.abs(med)
            keep = np.abs(cube - med) <= tol
            kept = keep.sum(axis=0)
            self.n_clipped += int(cube[0].size * cube.shape[0] - kept.sum())
            return np.where(keep, cube, 0).sum(axis=0) / np.maximum(kept, 1)
        if cube.shape[0] == 2:
            a, b = cube
            far = np.abs(a - b) > self.clip_sigma * 1.4142 * read_std
            return np.where(far, np.minimum(a, b), (a + b) / 2)
        return cube[0].copy()

    def add(
        self, r0: int, cubes: list[np.ndarray], master: np.ndarray, read_std: np.ndarray
    ) -> None:
        """Process rows ``r0:...`` of every group (``cubes`` in the order of ``groups``)."""
        r1 = r0 + master.shape[0]
        levels = [self.combine(c, read_std) - master for c in cubes]
        var = read_std.astype(np.float32) ** 2
        if self.with_intercept:
            num = np.zeros_like(master)
            mean_d = np.zeros_like(master)
            for w, t, d in zip(self.weights, self.times, levels, strict=True):
                num += np.float32(w * (t - self.t_mean)) * d
                mean_d += np.float32(w) * d
            mean_d /= np.float32(self.weights.sum())
            slope = num / np.float32(self.sxx)
            err = np.sqrt(var / np.float32(self.sxx))
            intercept = mean_d - slope * np.float32(self.t_mean)
            self.intercept_sum += float(np.median(intercept)) * intercept.size
            self.intercept_n += intercept.size
        else:
            t, f = self.times[0], self.factors[0]
            slope = levels[0] / np.float32(t)
            err = np.sqrt(var * np.float32(f + 1.0 / self.n_bias)) / np.float32(t)
        self.slope[r0:r1], self.slope_err[r0:r1] = slope, err

    def _add_shot_noise(self, k: float) -> None:
        """Add the dark's own shot noise (``slope * t * k`` ADU^2 for ``k`` ADU/e-) to the
        slope errors, which so far hold the read noise only."""
        if self.with_intercept:
            dt = self.times - self.t_mean
            q = float(np.sum(self.weights * dt**2 * self.times) / self.sxx**2)
        else:
            q = float(self.factors[0] / self.times[0])
        shot = np.maximum(np.nan_to_num(self.slope), 0) * np.float32(k * q)
        self.slope_err = np.sqrt(self.slope_err**2 + shot).astype(np.float32)

    def summarize(
        self, gain: float, good: np.ndarray, *, hot_sigma: float, max_pixels: int, k_max: int = 3
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Camera figures in e-/s (``gain`` e-/ADU) over ``good`` pixels and the hot-pixel mask
        (adds the dark shot noise to the errors first; call once).

        Hot: dark current above the median by more than ``hot_sigma`` robust sigmas of the map
        and by more than ``hot_sigma`` times the pixel's own error.
        Populations: a deconvolved Gaussian mixture of the non-hot pixels (1..``k_max``
        components, lowest BIC), on at most ``max_pixels`` of them.
        """
        self._add_shot_noise(1.0 / gain)
        dark = self.slope * np.float32(gain)
        err = self.slope_err * np.float32(gain)
        ok = good & np.isfinite(dark)
        vals = dark[ok]
        med = float(np.median(vals))
        sigma = robust_sigma(vals[:: max(1, vals.size // 2_000_000)])
        threshold = med + hot_sigma * sigma
        hot = good & np.isfinite(dark) & (dark > threshold) & (dark - med > hot_sigma * err)
        core = ok & ~hot
        cv, ce = dark[core], err[core]
        mean = float(np.mean(cv, dtype=np.float64))
        var = float(np.mean(np.square(cv - np.float32(mean)), dtype=np.float64))
        noise = float(np.sqrt(np.mean(np.square(ce), dtype=np.float64)))
        intrinsic = float(np.sqrt(max(var - noise**2, 0.0)))
        pick = subsample(cv.size, max_pixels)
        fits = select_mixture(cv[pick], ce[pick], k_max) if cv.size >= 50 else []
        best = min(fits, key=lambda f: f.bic) if fits else None
        summary = {
            "exptimes_s": sorted({float(t) for t in self.times}),
            "n_frames": [g.n for g in self.groups],
            "fit": "intercept and slope" if self.with_intercept else "slope through the bias",
            "dark_bias_offset_adu": (self.intercept_sum / self.intercept_n)
            if self.intercept_n
            else None,
            "gain_used_e_per_adu": gain,
            "median_e_per_s": med,
            "mean_e_per_s": mean,
            "mean_err_e_per_s": float(np.sqrt(var / cv.size)),
            "pixel_noise_e_per_s": noise,
            "intrinsic_spread_e_per_s": intrinsic,
            "robust_sigma_e_per_s": sigma,
            "hot_threshold_e_per_s": threshold,
            "n_hot": int(hot.sum()),
            "hot_fraction": float(hot.sum() / hot.size),
            "hot_median_e_per_s": float(np.median(dark[hot])) if hot.any() else None,
            "populations": best.as_dict() if best else None,
            "populations_bic": [f.bic for f in fits],
        }
        return summary, hot
