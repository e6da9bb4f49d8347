"""Bias sequences: per-pixel level and read noise, salt-and-pepper (RTN) pixels, bias
stability and fixed-pattern noise (the Mini-SiTian characterisation, §3.1-3.3).

Per row block (:meth:`BiasStats.add`), with every bias frame's rows in memory:

* per-pixel mean and standard deviation over the frames (ADU); ``sigma_typ`` is the block's
  median standard deviation (the typical read noise);
* *candidates* are pixels with std > ``rtn_candidate_factor * sigma_typ``; their values are
  sorted and the widest gap with at least ``max(3, rtn_min_fraction * N)`` frames on each side
  is found. A gap above ``rtn_gap_sigma * sigma_typ`` makes a two-level (random-telegraph,
  salt-and-pepper) pixel: its amplitude is the difference of the two state means, its read
  noise the pooled within-state std. Other candidates are re-measured without frames more than
  ``clip_sigma * sigma_typ`` from their median (cosmic rays, glitches);
* frame offsets (mean of frame minus per-pixel mean over non-candidate pixels) give the bias
  stability; consecutive frame pairs in the central region give the conventional read noise.

After the pass, :func:`fixed_pattern` splits the master bias into level, gradient, row and
column banding, corner and edge offsets and the pixel DSNU, and flags bias outliers.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

_log = logging.getLogger(__name__)


def robust_sigma(x: np.ndarray) -> float:
    """1.4826 x median absolute deviation (NaN for an empty array)."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


class BiasStats:
    """Running per-pixel bias products of one sequence of ``n`` frames of ``shape``.

    ``central`` is ``(row0, row1, col0, col1)`` of the region for the conventional read noise.
    """

    def __init__(
        self,
        n: int,
        shape: tuple[int, int],
        central: tuple[int, int, int, int],
        *,
        rtn_candidate_factor: float,
        rtn_gap_sigma: float,
        rtn_min_fraction: float,
        clip_sigma: float,
    ) -> None:
        self.n, self.shape, self.central = n, shape, central
        self.cand_factor, self.gap_sigma = rtn_candidate_factor, rtn_gap_sigma
        self.min_state = max(3, int(np.ceil(rtn_min_fraction * n)))
        self.clip_sigma = clip_sigma
        self.master = np.empty(shape, np.float32)
        self.std = np.empty(shape, np.float32)
        self.rtn = np.zeros(shape, bool)
        self.frame_sum = np.zeros(n, np.float64)
        self.frame_count = 0
        self.n_pairs = n // 2
        self.pair_sums = np.zeros((self.n_pairs, 3), np.float64)  # sum d, sum d^2, count
        self.rtn_index: list[np.ndarray] = []
        self.rtn_amplitude: list[np.ndarray] = []
        self.rtn_upper_fraction: list[np.ndarray] = []
        self.n_clipped_pixels = 0
        self.sigma_typ: list[float] = []

    def add(self, r0: int, cube: np.ndarray) -> None:
        """Process rows ``r0:r0 + cube.shape[1]`` of all frames (``cube`` is overwritten)."""
        n, rows, nx = cube.shape
        r1 = r0 + rows
        mean = cube.mean(axis=0, dtype=np.float64).astype(np.float32)
        cube -= mean
        var = np.einsum("ijk,ijk->jk", cube, cube) / np.float32(n - 1)
        std = np.sqrt(var, out=var)
        sigma_typ = float(np.median(std))
        self.sigma_typ.append(sigma_typ)
        cand = std > self.cand_factor * sigma_typ
        rtn = np.zeros_like(cand)
        if cand.any():
            values = cube[:, cand] + mean[cand]
            c_mean, c_std, c_rtn = self._candidates(
                values, sigma_typ, r0 * nx + np.flatnonzero(cand)
            )
            mean[cand], std[cand], rtn[cand] = c_mean, c_std, c_rtn
            # frame deviations of candidates are left out of the offsets below
        self.master[r0:r1], self.std[r0:r1], self.rtn[r0:r1] = mean, std, rtn
        total = cube.sum(axis=(1, 2), dtype=np.float64)
        if cand.any():
            total -= cube[:, cand].sum(axis=1, dtype=np.float64)
        self.frame_sum += total
        self.frame_count += int(cand.size - cand.sum())
        self._pairs(r0, r1, cube, rtn, sigma_typ)

    def _candidates(
        self, values: np.ndarray, sigma_typ: float, flat_index: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Mean, std and RTN flag of candidate pixels ``values`` (n, n_cand)."""
        n, m = values.shape[0], self.min_state
        s = np.sort(values, axis=0)
        mean = values.mean(axis=0)
        is_rtn = np.zeros(values.shape[1], bool)
        if n - 2 * m + 1 >= 1:
            gaps = s[m : n - m + 1] - s[m - 1 : n - m]
            split = gaps.argmax(axis=0) + m  # frames in the lower state
            is_rtn = gaps.max(axis=0) > self.gap_sigma * sigma_typ
        std = np.empty(values.shape[1], np.float32)
        if is_rtn.any():
            sr, k = s[:, is_rtn], split[is_rtn]
            lower = np.arange(n)[:, None] < k[None, :]
            lo = np.where(lower, sr, 0).sum(axis=0) / k
            hi = np.where(lower, 0, sr).sum(axis=0) / (n - k)
            dev = sr - np.where(lower, lo, hi)
            std[is_rtn] = np.sqrt((dev**2).sum(axis=0) / max(n - 2, 1))
            self.rtn_index.append(flat_index[is_rtn])
            self.rtn_amplitude.append((hi - lo).astype(np.float32))
            self.rtn_upper_fraction.append(((n - k) / n).astype(np.float32))
        other = ~is_rtn
        if other.any():
            v = values[:, other]
            keep = np.abs(v - s[n // 2, other]) <= self.clip_sigma * sigma_typ
            kept = keep.sum(axis=0)
            vm = np.where(keep, v, 0).sum(axis=0) / np.maximum(kept, 1)
            dev2 = np.where(keep, (v - vm) ** 2, 0).sum(axis=0) / np.maximum(kept - 1, 1)
            ok = kept >= 2
            mean[other] = np.where(ok, vm, mean[other])
            std[other] = np.where(ok, np.sqrt(dev2), values[:, other].std(axis=0, ddof=1))
            self.n_clipped_pixels += int((kept < n).sum())
        return mean, std, is_rtn

    def _pairs(self, r0: int, r1: int, dev: np.ndarray, rtn: np.ndarray, sigma_typ: float) -> None:
        """Accumulate consecutive-pair differences in the central region."""
        cr0, cr1, cc0, cc1 = self.central
        a, b = max(r0, cr0), min(r1, cr1)
        if a >= b or self.n_pairs == 0:
            return
        sub = dev[: 2 * self.n_pairs, a - r0 : b - r0, cc0:cc1]
        d = sub[0::2] - sub[1::2]
        ok = ~rtn[a - r0 : b - r0, cc0:cc1] & (np.abs(d) <= self.clip_sigma * 1.4142 * sigma_typ)
        d = np.where(ok, d, 0).reshape(self.n_pairs, -1).astype(np.float64)
        self.pair_sums[:, 0] += d.sum(axis=1)
        self.pair_sums[:, 1] += (d**2).sum(axis=1)
        self.pair_sums[:, 2] += ok.reshape(self.n_pairs, -1).sum(axis=1)

    def pair_variance(self) -> tuple[float, float]:
        """Read variance (ADU^2) from the central-region pair differences and its error."""
        s, s2, cnt = self.pair_sums.T
        ok = cnt > 1
        if not ok.any():
            return float("nan"), float("nan")
        v = (s2[ok] - s[ok] ** 2 / cnt[ok]) / (cnt[ok] - 1) / 2
        w = cnt[ok] - 1
        mean = float(np.sum(w * v) / w.sum())
        err = mean * np.sqrt(2 / w.sum()) if v.size < 3 else float(v.std(ddof=1) / np.sqrt(v.size))
        return mean, float(err)

    def rtn_table(self) -> dict[str, np.ndarray]:
        """Flat index, amplitude (ADU) and upper-state fraction of the RTN pixels found."""
        cat = np.concatenate
        if not self.rtn_index:
            return {
                "index": np.zeros(0, np.int64),
                "amplitude": np.zeros(0, np.float32),
                "upper_fraction": np.zeros(0, np.float32),
            }
        return {
            "index": cat(self.rtn_index),
            "amplitude": cat(self.rtn_amplitude),
            "upper_fraction": cat(self.rtn_upper_fraction),
        }


def bias_stability(stats: BiasStats) -> dict[str, Any]:
    """Frame-mean levels over the sequence: offsets, 3-sigma-clipped scatter, noise floor."""
    good = ~stats.rtn & np.isfinite(stats.std)
    level = float(np.mean(stats.master[good], dtype=np.float64))
    offsets = stats.frame_sum / max(stats.frame_count, 1)
    keep = np.ones(offsets.size, bool)
    for _ in range(5):
        mu, sd = offsets[keep].mean(), offsets[keep].std(ddof=1) if keep.sum() > 1 else 0.0
        new = np.abs(offsets - mu) <= 3 * sd if sd > 0 else keep
        if np.array_equal(new, keep):
            break
        keep = new
    floor = float(
        np.sqrt(np.mean(np.square(stats.std[good]), dtype=np.float64) / max(stats.frame_count, 1))
    )
    std = float(offsets[keep].std(ddof=1)) if keep.sum() > 1 else float("nan")
    return {
        "mean_level_adu": level,
        "frame_mean_adu": (level + offsets).tolist(),
        "std_adu": std,
        "peak_to_peak_adu": float(np.ptp(offsets[keep])) if keep.any() else float("nan"),
        "max_abs_deviation_adu": float(np.max(np.abs(offsets[keep] - offsets[keep].mean()))),
        "n_clipped_frames": int((~keep).sum()),
        "noise_floor_adu": floor,
        "excess_std_adu": float(np.sqrt(max(std**2 - floor**2, 0.0))) if np.isfinite(std) else std,
    }


def mesh_background(img: np.ndarray, cell: int) -> np.ndarray:
    """Median of ``img`` in ``cell`` x ``cell`` cells, bilinearly interpolated (float32)."""
    ny, nx = img.shape
    ey = np.unique(np.r_[np.arange(0, ny, cell), ny])
    ex = np.unique(np.r_[np.arange(0, nx, cell), nx])
    grid = np.empty((ey.size - 1, ex.size - 1), np.float32)
    for j in range(ey.size - 1):
        strip = img[ey[j] : ey[j + 1]]
        for i in range(ex.size - 1):
            grid[j, i] = np.nanmedian(strip[:, ex[i] : ex[i + 1]])
    cy, cx = (ey[:-1] + ey[1:] - 1) / 2, (ex[:-1] + ex[1:] - 1) / 2
    along_x = np.stack([np.interp(np.arange(nx), cx, row) for row in grid]).astype(np.float32)
    out = np.empty((ny, nx), np.float32)
    for r0 in range(0, ny, 256):
        ys = np.arange(r0, min(ny, r0 + 256))
        j1 = np.clip(np.searchsorted(cy, ys), 1, max(cy.size - 1, 1))
        j0 = j1 - 1 if cy.size > 1 else np.zeros_like(j1)
        j1 = np.minimum(j1, cy.size - 1)
        span = np.where(cy[j1] > cy[j0], cy[j1] - cy[j0], 1.0)
        w = np.clip((ys - cy[j0]) / span, 0, 1).astype(np.float32)[:, None]
        out[ys] = along_x[j0] * (1 - w) + along_x[j1] * w
    return out


def fixed_pattern(
    stats: BiasStats, *, mesh_px: int, corner_fraction: float, outlier_sigma: float
) -> tuple[dict[str, Any], np.ndarray]:
    """Decompose the master bias into FPN components; return them and the bias-outlier mask.

    Row/column profiles are medians along the other axis; their linear trends are the
    gradients (ADU from edge to edge), their detrended std the banding amplitudes. The residual
    after level and profiles shows corner and edge offsets (mean in boxes/strips of
    ``corner_fraction`` of the short side); after removing a ``mesh_px`` mesh median it gives the
    pixel DSNU (robust std, temporal noise of the master removed). Outliers: non-RTN pixels
    whose local residual exceeds ``outlier_sigma`` times their expected scatter.
    """
    master, n = stats.master, stats.n
    ny, nx = master.shape
    step = max(1, int(np.sqrt(master.size / 2e6)))
    level = float(np.median(master[::step, ::step]))
    row = np.median(master, axis=1) - level
    col = np.median(master, axis=0) - level

    def detrend(p: np.ndarray) -> tuple[np.ndarray, float]:
        u = np.linspace(-0.5, 0.5, p.size)
        coef = np.polyfit(u, p, 1) if p.size > 2 else np.array([0.0, float(np.mean(p))])
        return p - np.polyval(coef, u), float(coef[0])

    row_d, grad_y = detrend(row)
    col_d, grad_x = detrend(col)
    resid = master - np.float32(level)
    resid -= row[:, None].astype(np.float32)
    resid -= col[None, :].astype(np.float32)
    b = max(2, round(corner_fraction * min(ny, nx)))
    corners = {
        "x_lo_y_lo": resid[:b, :b],
        "x_hi_y_lo": resid[:b, -b:],
        "x_lo_y_hi": resid[-b:, :b],
        "x_hi_y_hi": resid[-b:, -b:],
    }
    edges = {
        "y_lo": resid[:b, b:-b],
        "y_hi": resid[-b:, b:-b],
        "x_lo": resid[b:-b, :b],
        "x_hi": resid[b:-b, -b:],
    }
    corner_adu = {k: float(np.median(v)) for k, v in corners.items()}
    edge_adu = {k: float(np.median(v)) if v.size else float("nan") for k, v in edges.items()}
    resid -= mesh_background(resid, max(8, min(mesh_px, ny // 2 or 1, nx // 2 or 1)))
    sample = resid[::step, ::step][~stats.rtn[::step, ::step]]
    total = robust_sigma(sample)
    temporal_med = float(np.median(stats.std[::step, ::step])) ** 2 / n
    dsnu = float(np.sqrt(max(total**2 - temporal_med, 0.0)))
    bad = np.zeros(master.shape, bool)
    for r0 in range(0, ny, 512):  # in row chunks: no full-frame temporaries
        sl = slice(r0, r0 + 512)
        scatter = np.sqrt(np.float32(dsnu**2) + np.square(stats.std[sl]) / np.float32(n))
        bad[sl] = (np.abs(resid[sl]) > np.float32(outlier_sigma) * scatter) & ~stats.rtn[sl]
    spatial = robust_sigma((master[::step, ::step] - level)[~stats.rtn[::step, ::step]])
    noise = np.sqrt(np.pi / 2 * (total**2 + temporal_med))
    summary = {
        "level_adu": level,
        "spatial_std_adu": spatial,
        "gradient_x_adu": grad_x,
        "gradient_y_adu": grad_y,
        "row_banding_adu": float(row_d.std()),
        "column_banding_adu": float(col_d.std()),
        "row_profile_noise_adu": float(noise / np.sqrt(nx)),
        "column_profile_noise_adu": float(noise / np.sqrt(ny)),
        "dsnu_adu": dsnu,
        "corner_box_px": int(b),
        "corner_offsets_adu": corner_adu,
        "edge_offsets_adu": edge_adu,
        "n_bias_outliers": int(bad.sum()),
        "row_profile_adu": row_d.astype(np.float32),
        "column_profile_adu": col_d.astype(np.float32),
    }
    return summary, bad
