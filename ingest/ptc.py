"""Photon transfer: conventional (central-region) and per-pixel gain from flats.

Flats of one exposure time and level form a group (a pair of the ladder, or a stack). Per row
block (:meth:`FlatStats.add`), for each group: subtract the master bias and dark, optionally
rescale each frame to the group's mean level over the block (removes lamp flicker, which adds
``(sigma_lamp * s)^2`` to every pixel's variance), then per pixel the mean ``m`` and the
unbiased variance ``v`` over the frames.

Per-pixel gain (the seed's central method). In linear ADU (``m`` linearized with the block's
own nonlinearity coefficient, ``v`` divided by the squared slope of the response), the shot
noise of a pixel of gain ``g`` obeys ``v = m / g + r^2`` with ``r^2`` the pixel's read variance
from the bias stack. Each group gives ``k_g = (v_g - r^2) / m_g`` (``k = 1/g``, unbiased since
``E[v] = m k + r^2``) with ``Var(k_g) = 2 (m k + r^2)^2 / ((n_g - 1) m^2)`` (normal shot noise).
Groups are combined with weights ``(n_g - 1) / (1 + r^2 / (m_g k))^2`` (inverse variances up to
a common factor); the error adds the bias-variance term ``2 r^4 / (N_bias - 1)`` shared by all
groups. The gain map is ``1 / k`` with relative error ``sigma_k / k``; pulls
``(g_est - g) / (g_est * rel_err)`` equal ``-(k_est - k) / sigma_k`` and so have unit variance.

Conventional: consecutive pairs of a group give, over the central region's good pixels (not
RTN, not saturated, 5-sigma clipped), the mean signal ``S`` and ``V = var(a - b) / 2``;
``V - R^2 = S / g`` with ``R^2`` the bias-pair read variance of the same region
(:func:`conventional_ptc`).
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np

from ingest.charframes import FrameGroup
from ingest.charlinearity import linearize, pixel_quadratic, through_origin_quadratic

_log = logging.getLogger(__name__)


class FlatStats:
    """Per-pixel gain, nonlinearity and response outliers, plus the sums of the conventional
    PTC and the camera linearity, over the flat groups of one sequence."""

    def __init__(
        self,
        groups: list[FrameGroup],
        shape: tuple[int, int],
        central: tuple[int, int, int, int],
        n_bias: int,
        *,
        saturation: float,
        normalize: bool,
        clip_sigma: float,
        ref: float,
        min_signal: float,
        response_limits: tuple[float, float],
        mesh_px: int,
    ) -> None:
        self.groups, self.central, self.n_bias = groups, central, n_bias
        self.saturation, self.normalize, self.clip_sigma = saturation, normalize, clip_sigma
        self.ref, self.min_signal, self.response_limits = ref, min_signal, response_limits
        self.mesh_px = mesh_px
        self.times = np.array([g.exptime for g in groups])
        self.sizes = np.array([g.n for g in groups])
        self.first = np.r_[0, np.cumsum(self.sizes)[:-1]]
        n_frames = int(self.sizes.sum())
        self.frame_sums = np.zeros((n_frames, 3))  # signal sum, pixels, saturated pixels
        self.pair_sums = [np.zeros((g.n // 2, 4)) for g in groups]  # d, d^2, count, signal
        self.k = np.full(shape, np.nan, np.float32)
        self.k_rel = np.full(shape, np.nan, np.float32)
        self.c = np.full(shape, np.nan, np.float32)
        self.c_err = np.full(shape, np.nan, np.float32)
        self.bad_response = np.zeros(shape, bool)
        self.block_c: list[float] = []

    def add(
        self,
        r0: int,
        cubes: list[np.ndarray],
        master: np.ndarray,
        read_var: np.ndarray,
        dark: np.ndarray | None,
        rtn: np.ndarray,
    ) -> None:
        """Process one row block (``cubes`` in group order; they are overwritten)."""
        r1 = r0 + master.shape[0]
        ms, vs, valid = [], [], []
        for gi, (group, cube) in enumerate(zip(self.groups, cubes, strict=True)):
            m, v, ok = self._group(gi, group, cube, r0, r1, master, dark, rtn)
            ms.append(m)
            vs.append(v)
            valid.append(ok)
        good = ~rtn
        step = max(1, good.size // 50000)  # block levels from a sample of the pixels
        level = np.array(
            [
                np.median(m[good & ok].ravel()[::step]) if (good & ok).any() else np.nan
                for m, ok in zip(ms, valid, strict=True)
            ]
        )
        use = np.isfinite(level) & (level > self.min_signal)
        c_blk = 0.0
        if np.unique(self.times[use]).size >= 3:
            a, b, _ = through_origin_quadratic(
                self.times[use], level[use], self.sizes[use] / level[use]
            )
            c_blk = b * self.ref / a**2
        self.block_c.append(c_blk)
        self._gain(r0, r1, ms, vs, valid, level, read_var, c_blk, good)
        var_m = [
            np.maximum(m, 0) * self._k_blk / n + read_var / n
            for m, n in zip(ms, self.sizes, strict=True)
        ]
        w = self.sizes / (np.maximum(np.nan_to_num(level), 1.0) * self._k_blk + np.median(read_var))
        c, ce, _ = pixel_quadratic(self.times, ms, valid, var_m, w, self.ref, c_blk)
        self.c[r0:r1], self.c_err[r0:r1] = c, ce
        self._response(r0, r1, ms, valid, level, 0.8 * (self.saturation - float(np.median(master))))

    def _group(
        self,
        gi: int,
        group: FrameGroup,
        cube: np.ndarray,
        r0: int,
        r1: int,
        master: np.ndarray,
        dark: np.ndarray | None,
        rtn: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        cr0, cr1, cc0, cc1 = self.central
        a, b = max(r0, cr0) - r0, min(r1, cr1) - r0
        sat_frames = cube >= np.float32(self.saturation - 0.5)
        sat = sat_frames.any(axis=0)
        j0 = self.first[gi]
        if a < b:
            self.frame_sums[j0 : j0 + group.n, 2] += sat_frames[:, a:b, cc0:cc1].sum(axis=(1, 2))
        del sat_frames
        cube -= master
        if dark is not None:
            cube -= dark * np.float32(group.exptime)
        good = ~rtn & ~sat
        if a < b:
            mask_c = (~rtn[a:b, cc0:cc1]).astype(np.float32)
            sums = np.einsum("ijk,jk->i", cube[:, a:b, cc0:cc1], mask_c, dtype=np.float64)
            self.frame_sums[j0 : j0 + group.n, 0] += sums
            self.frame_sums[j0 : j0 + group.n, 1] += mask_c.sum()
        gf = good.astype(np.float32)
        means = np.einsum("ijk,jk->i", cube, gf, dtype=np.float64) / max(gf.sum(), 1.0)
        if self.normalize and group.n >= 2 and np.all(means > 0):
            cube *= (means.mean() / means).astype(np.float32)[:, None, None]
        m = cube.mean(axis=0)
        v = None
        if group.n >= 2:
            cube -= m
            v = np.einsum("ijk,ijk->jk", cube, cube) / np.float32(group.n - 1)
            if a < b:
                self._pairs(gi, cube[:, a:b, cc0:cc1], m[a:b, cc0:cc1], good[a:b, cc0:cc1])
        return m, v, ~sat & (m > self.min_signal)

    def _pairs(self, gi: int, dev: np.ndarray, m: np.ndarray, good: np.ndarray) -> None:
        p = dev.shape[0] // 2
        if p == 0 or not good.any():
            return
        d = dev[0 : 2 * p : 2][:, good] - dev[1 : 2 * p : 2][:, good]
        ad = np.abs(d)  # differences of mean-subtracted frames are centred on 0
        sig = 1.4826 * np.median(ad[:, :: max(1, ad.shape[1] // 20000)], axis=1)
        ok = ad <= self.clip_sigma * np.maximum(sig, 1e-6)[:, None]
        dz = np.where(ok, d, 0).astype(np.float64)
        acc = self.pair_sums[gi]
        acc[:, 0] += dz.sum(axis=1)
        acc[:, 1] += (dz**2).sum(axis=1)
        acc[:, 2] += ok.sum(axis=1)
        acc[:, 3] += np.where(ok, m[good][None, :], 0).sum(axis=1, dtype=np.float64)

    def _gain(
        self,
        r0: int,
        r1: int,
        ms: list[np.ndarray],
        vs: list[np.ndarray | None],
        valid: list[np.ndarray],
        level: np.ndarray,
        read_var: np.ndarray,
        c_blk: float,
        good: np.ndarray,
    ) -> None:
        lin = [linearize(m.astype(np.float64), c_blk, self.ref) for m in ms]
        slope2 = [(1 + 2 * c_blk * s / self.ref) ** 2 for s in lin]
        r2 = read_var.astype(np.float64)
        kg = [
            None if v is None else (v / sl - r2) / np.maximum(s, 1e-3)
            for v, sl, s in zip(vs, slope2, lin, strict=True)
        ]
        have = [k is not None and np.isfinite(level[i]) for i, k in enumerate(kg)]
        k_blk = np.nan
        if any(have):
            best = max(
                (i for i in range(len(kg)) if have[i]), key=lambda i: (self.sizes[i] - 1) * level[i]
            )
            k_blk = float(np.median(kg[best][good & valid[best]]))
        self._k_blk = k_blk if np.isfinite(k_blk) and k_blk > 0 else 1.0
        r2_med = float(np.median(r2))
        num, wsum, inv_s = (np.zeros(r2.shape) for _ in range(3))
        weights = []
        for i, k in enumerate(kg):
            w = 0.0
            if have[i]:
                w = (self.sizes[i] - 1) / (1 + r2_med / (level[i] * self._k_blk)) ** 2
                ww = np.where(valid[i], w, 0.0)
                num += ww * k
                wsum += ww
                inv_s += ww / np.maximum(lin[i], 1e-3)
            weights.append(w)
        ok = wsum > 0
        k_hat = np.where(ok, num / np.where(ok, wsum, 1), np.nan)
        k_pos = np.maximum(np.nan_to_num(k_hat), 1e-9)
        term = np.zeros(r2.shape)
        for i, w in enumerate(weights):
            if w > 0:
                s = np.maximum(lin[i], 1e-3)
                var_k = 2 * (s * k_pos + r2) ** 2 / ((self.sizes[i] - 1) * s**2)
                term += np.where(valid[i], w**2 * var_k, 0.0)
        wsafe = np.where(ok, wsum, 1.0)
        var = term / wsafe**2 + (inv_s / wsafe) ** 2 * 2 * r2**2 / max(self.n_bias - 1, 1)
        rel = np.sqrt(var) / k_pos
        bad = ~ok | (k_hat <= 0)
        self.k[r0:r1] = np.where(bad, np.nan, k_hat)
        self.k_rel[r0:r1] = np.where(bad, np.nan, rel)

    def _response(
        self,
        r0: int,
        r1: int,
        ms: list[np.ndarray],
        valid: list[np.ndarray],
        level: np.ndarray,
        ceiling: float,
    ) -> None:
        """Flag pixels whose response in the brightest group below ``ceiling`` departs from the
        local response (median in cells of ``mesh_px`` columns of the block) beyond the limits."""
        cand = [i for i in range(len(ms)) if np.isfinite(level[i]) and level[i] < ceiling]
        if not cand:
            return
        i = max(cand, key=lambda j: level[j])
        m, nx = np.where(valid[i], ms[i], np.nan), ms[i].shape[1]
        cell = max(4, min(self.mesh_px, nx))
        edges = np.unique(np.r_[np.arange(0, nx, cell), nx])
        med = np.array([np.nanmedian(m[:, a:b]) for a, b in itertools.pairwise(edges)])
        centers = (edges[:-1] + edges[1:] - 1) / 2
        smooth = np.interp(np.arange(nx), centers[np.isfinite(med)], med[np.isfinite(med)])
        ratio = ms[i] / np.maximum(smooth, 1e-6)[None, :]
        lo, hi = self.response_limits
        self.bad_response[r0:r1] = valid[i] & ((ratio < lo) | (ratio > hi))

    def frame_signals(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Exposure time, central mean signal and saturated-pixel count of every flat frame."""
        t = np.repeat(self.times, self.sizes)
        s = self.frame_sums[:, 0] / np.maximum(self.frame_sums[:, 1], 1)
        return t, s, self.frame_sums[:, 2]


def conventional_ptc(
    flats: FlatStats, read_var: float, read_var_err: float, c: float, *, max_signal: float
) -> dict[str, Any]:
    """Camera gain from the pair variances of the central region (see the module docstring).

    Levels below ``flats.min_signal`` or above ``max_signal`` (ADU), or with saturated pixels in
    the region, are listed but not fitted. ``c`` linearizes signal and variance first.
    """
    rows = []
    t_all, _, sat = flats.frame_signals()
    for gi, acc in enumerate(flats.pair_sums):
        acc = acc[acc[:, 2] > 1]
        if acc.size == 0:
            continue
        s_d, s_d2, cnt, s_sig = acc.T
        var = (s_d2 - s_d**2 / cnt) / (cnt - 1) / 2
        signal = float(np.sum(s_sig) / np.sum(cnt))
        v = float(np.sum((cnt - 1) * var) / np.sum(cnt - 1))
        lin = float(linearize(np.array(signal), c, flats.ref))
        v_lin = v / (1 + 2 * c * lin / flats.ref) ** 2
        j0 = flats.first[gi]
        saturated = bool(sat[j0 : j0 + flats.sizes[gi]].sum() > 0)
        rows.append(
            {
                "exptime_s": float(flats.times[gi]),
                "n_pairs": int(acc.shape[0]),
                "signal_adu": signal,
                "variance_adu2": v,
                "signal_lin_adu": lin,
                "variance_lin_adu2": v_lin,
                "n_pixels": int(np.mean(cnt)),
                "var_err_adu2": v * np.sqrt(2 / np.sum(cnt - 1)),
                "gain_e_per_adu": lin / (v_lin - read_var) if v_lin > read_var else None,
                "used": bool(flats.min_signal < signal < max_signal and not saturated),
            }
        )
    used = [r for r in rows if r["used"]]
    out: dict[str, Any] = {"levels": rows, "read_variance_adu2": read_var, "c_used": c}
    if not used:
        out["note"] = "no flat pair within the fitted signal range"
        return out
    s = np.array([r["signal_lin_adu"] for r in used])
    y = np.array([r["variance_lin_adu2"] for r in used]) - read_var
    sig2 = np.array([r["var_err_adu2"] for r in used]) ** 2 + read_var_err**2
    k = float(np.sum(s * y / sig2) / np.sum(s**2 / sig2))
    k_err = float(1 / np.sqrt(np.sum(s**2 / sig2)))
    chi2 = float(np.sum((y - k * s) ** 2 / sig2) / max(len(used) - 1, 1))
    k_err *= np.sqrt(max(chi2, 1.0))
    out.update(
        {
            "gain_e_per_adu": 1 / k,
            "gain_err_e_per_adu": k_err / k**2,
            "reduced_chi2": chi2,
            "n_levels_used": len(used),
        }
    )
    if len(used) >= 3:
        coef = np.polyfit(s, y + read_var, 1, w=1 / np.sqrt(sig2))
        out["free_fit"] = {"gain_e_per_adu": float(1 / coef[0]), "intercept_adu2": float(coef[1])}
    _log.debug("PTC over %d levels (t=%s)", len(used), t_all)
    return out
