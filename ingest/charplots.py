"""PNG plots of the detector characterisation (matplotlib, Agg backend).

One figure per question a person asks of a camera: how are gain and read noise distributed over
the pixels (``gain_hist.png``, ``read_noise_hist.png``), is it linear (``linearity.png``), does
the photon transfer curve look right (``ptc.png``), is the bias stable (``bias_stability.png``),
what does the dark current look like (``dark_current_hist.png``), what fixed pattern does the
bias have (``fixed_pattern.png``) and where are the anomalous pixels (``anomalous_pixels.png``).
"""

from __future__ import annotations

import gc
import logging
import warnings
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ingest.charbias import BiasStats
from ingest.chardark import DarkStats
from ingest.ptc import FlatStats

_log = logging.getLogger(__name__)
_DPI = 110


def _save(fig: plt.Figure, path: Path) -> str:
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")
    plt.close(fig)
    # savefig leaves reference cycles through the plotting function's frame, which would keep
    # its full-frame arrays (hundreds of MB) alive until the next automatic collection
    gc.collect()
    return path.name


def _range(x: np.ndarray, lo: float = 0.1, hi: float = 99.9) -> tuple[float, float]:
    a, b = np.percentile(x[:: max(1, x.size // 2_000_000)], [lo, hi])
    pad = 0.05 * (b - a) if b > a else 1.0
    return float(a - pad), float(b + pad)


def _hist(ax: plt.Axes, x: np.ndarray, bins: int, rng: tuple[float, float], **kw: Any) -> float:
    """Filled step histogram on a log count axis; returns the bin width."""
    counts, edges = np.histogram(x, bins=bins, range=rng)
    color = kw.pop("color", "C0")
    ax.stairs(counts, edges, fill=True, alpha=0.35, color=color, **kw)
    ax.stairs(counts, edges, color=color, lw=1.2)
    ax.set_yscale("log")
    ax.set_ylim(0.7, None)
    ax.set_ylabel("pixels per bin")
    return float(edges[1] - edges[0])


def gain_hist(
    path: Path, gain: np.ndarray, rel: np.ndarray, summary: dict[str, Any], conv: float
) -> str:
    """Per-pixel gain histogram with the populations found and the conventional gain."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    rng = _range(gain)
    width = _hist(ax, gain, 150, rng, color="C0", label=f"pixels ({gain.size:,})")
    xs = np.linspace(*rng, 600)
    step = max(1, gain.size // 2_000_000)
    sig = float(np.median(gain[::step] * rel[::step]))
    total = np.zeros_like(xs)
    for i, pop in enumerate(summary.get("populations", [])):
        g0 = pop["gain_e_per_adu"]
        s = np.hypot(sig, g0 * pop["intrinsic_rel_width"])
        y = pop["fraction"] * gain.size * width * np.exp(-0.5 * ((xs - g0) / s) ** 2)
        y /= s * np.sqrt(2 * np.pi)
        total += y
        label = f"population {i + 1}: {100 * pop['fraction']:.1f}% at {g0:.4f}"
        ax.plot(xs, y, ls=":", color=f"C{i + 2}", lw=1.5, label=label)
    if len(summary.get("populations", [])) > 1:
        ax.plot(xs, total, color="k", lw=1, alpha=0.6, label="model (sum)")
    ax.axvline(conv, color="C3", ls="--", label=f"conventional PTC {conv:.4f}")
    median = summary["median_e_per_adu"]
    ax.axvline(median, color="k", lw=0.8, label=f"median {median:.4f}")
    verdict = {True: "bimodal", False: "unimodal", None: "populations not resolved"}[
        summary.get("bimodal")
    ]
    ax.set_title(
        f"Per-pixel gain ({verdict}; median error {100 * summary['median_rel_err']:.1f}% per pixel)"
    )
    ax.set_xlabel("gain (e$^-$/ADU)")
    ax.set_xlim(rng)
    ax.legend(fontsize=8, loc="upper right")
    return _save(fig, path)


def read_noise_hist(path: Path, rn: np.ndarray, summary: dict[str, Any], conv: float | None) -> str:
    """Per-pixel read-noise histogram (e-) with median and conventional value."""
    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    rng = (0.0, float(np.percentile(rn[:: max(1, rn.size // 2_000_000)], 99.95)) * 1.1)
    _hist(ax, rn, 150, rng, color="C1", label=f"pixels ({rn.size:,})")
    median = summary["median_e"]
    ax.axvline(median, color="k", lw=0.8, label=f"median {median:.3f} e$^-$")
    if conv is not None:
        ax.axvline(conv, color="C3", ls="--", label=f"conventional (rms) {conv:.3f} e$^-$")
    frac, err = 100 * summary["noise_outlier_fraction"], 100 * summary["median_rel_err"]
    ax.set_title(f"Per-pixel read noise (median error {err:.0f}%; {frac:.2f}% of pixels noisy)")
    gain = "per-pixel" if summary["gain_used"] == "per-pixel" else "conventional"
    ax.set_xlabel(f"read noise (e$^-$) = bias std x {gain} gain")
    ax.set_xlim(rng)
    ax.legend(fontsize=8)
    return _save(fig, path)


def linearity(path: Path, lin: dict[str, Any]) -> str:
    """Mean signal against exposure time with the straight-line fit; residuals in percent."""
    t, s = np.array(lin["exptime_s"]), np.array(lin["signal_adu"])
    nl = np.array(lin["nonlinearity_percent"])
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7.5, 6.4), height_ratios=[3, 2])
    a1.plot(t, s, "o", ms=4, label="central-region mean of each flat")
    tt = np.linspace(0, t.max() * 1.02, 100)
    lab = f"linear fit, R$^2$ = {lin['r2']:.6f}"
    a1.plot(tt, lin["intercept_adu"] + lin["slope_adu_per_s"] * tt, "-", lw=1, label=lab)
    a1.set_xlabel("exposure time (s)")
    a1.set_ylabel("signal above bias (ADU)")
    a1.legend(fontsize=8)
    a2.axhspan(-0.3, 0.3, color="0.9", label="$\\pm$0.3%")
    a2.axvline(
        lin["min_signal_adu"], color="0.5", ls=":", lw=1, label=f"{lin['min_signal_adu']:.0f} ADU"
    )
    a2.axhline(0, color="k", lw=0.6)
    order = np.argsort(s)
    a2.plot(s[order], nl[order], "o-", ms=4, lw=0.8, color="C0", label="line with intercept")
    nl0 = np.array(lin["nonlinearity_origin_percent"])
    a2.plot(s[order], nl0[order], "s--", ms=3, lw=0.8, color="C1", label="line through origin")
    a2.set_xscale("log")
    a2.set_xlabel("signal above bias (ADU)")
    a2.set_ylabel("residual (%)")
    c, ce = lin.get("quadratic_c"), lin.get("quadratic_c_err")
    a2.set_title(
        f"nonlinearity: max |residual| {lin['max_abs_nonlinearity_percent']:.2f}%; "
        f"quadratic c = {c:.4f} $\\pm$ {ce:.4f}",
        fontsize=10,
    )
    a2.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return _save(fig, path)


def ptc(path: Path, p: dict[str, Any]) -> str:
    """Photon transfer curve (variance against signal) and the gain of each level."""
    lv = p["levels"]
    s = np.array([r["signal_lin_adu"] for r in lv])
    v = np.array([r["variance_lin_adu2"] for r in lv])
    used = np.array([r["used"] for r in lv])
    g, ge = p["gain_e_per_adu"], p["gain_err_e_per_adu"]
    fig, (ax, a2) = plt.subplots(2, 1, figsize=(7, 6.4), height_ratios=[3, 1.4], sharex=True)
    ax.loglog(s[used], v[used], "o", label="flat pairs, fitted")
    if (~used).any():
        ax.loglog(s[~used], v[~used], "x", color="0.5", label="flat pairs, not fitted")
    ss = np.geomspace(max(s.min() * 0.5, 1.0), s.max() * 1.5, 100)
    r2 = p["read_variance_adu2"]
    lab = f"$V = S/g + R^2$, g = {g:.4f} $\\pm$ {ge:.4f} e$^-$/ADU"
    ax.loglog(ss, ss / g + r2, "-", lw=1, label=lab)
    ax.axhline(r2, color="0.5", ls=":", lw=1, label=f"bias read variance $R^2$ = {r2:.2f} ADU$^2$")
    ax.set_ylabel("var(pair difference) / 2 (ADU$^2$)")
    ax.set_title("Photon transfer, central region")
    ax.legend(fontsize=8)
    gl = np.array([np.nan if r["gain_e_per_adu"] is None else r["gain_e_per_adu"] for r in lv])
    gerr = gl * np.array([r["var_err_adu2"] / max(r["variance_lin_adu2"] - r2, 1e-9) for r in lv])
    a2.errorbar(s, gl, yerr=gerr, fmt="o", ms=4, color="C0")
    a2.axhspan(g - ge, g + ge, color="C1", alpha=0.3)
    a2.axhline(g, color="C1", lw=1)
    a2.set_xscale("log")
    a2.set_xlabel("signal (ADU, linearized)")
    a2.set_ylabel("gain per level\n(e$^-$/ADU)")
    fig.tight_layout()
    return _save(fig, path)


def bias_stability_plot(path: Path, stab: dict[str, Any]) -> str:
    """Frame-mean bias level over the sequence."""
    level = np.array(stab["frame_mean_adu"])
    mean = float(np.mean(level))
    fig, ax = plt.subplots(figsize=(7.5, 4))
    floor = stab["noise_floor_adu"]
    ax.axhspan(-floor, floor, color="0.9", label=f"read-noise floor $\\pm${floor:.4f}")
    ax.plot(np.arange(level.size), level - mean, "o-", ms=3, lw=0.7)
    ax.axhline(0, color="k", lw=0.6)
    ax.set_xlabel("bias frame (file order)")
    ax.set_ylabel(f"frame mean $-$ {mean:.2f} ADU")
    ax.set_title(
        f"Bias stability: std {stab['std_adu']:.4f} ADU, peak-to-peak "
        f"{stab['peak_to_peak_adu']:.4f} ADU"
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def dark_hist(path: Path, dark: np.ndarray, d: dict[str, Any]) -> str:
    """Dark-current distribution: the core (linear) and the hot tail (log-log)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.3))
    med, sig, thr = d["median_e_per_s"], d["robust_sigma_e_per_s"], d["hot_threshold_e_per_s"]
    unit = d["units"].split()[0]
    rng = (med - 6 * sig, med + 10 * sig)
    _hist(a1, dark, 150, rng, color="C2")
    a1.axvline(med, color="k", lw=0.8, label=f"median {med:.4g}")
    a1.axvline(d["mean_e_per_s"], color="C0", ls="--", lw=1, label=f"mean {d['mean_e_per_s']:.4g}")
    if thr < rng[1]:
        a1.axvline(thr, color="C3", ls=":", label=f"hot threshold {thr:.3g}")
    a1.set_xlim(rng)
    a1.set_xlabel(f"dark current ({unit})")
    a1.set_title(f"core (per-pixel noise {d['pixel_noise_e_per_s']:.2g} {unit})", fontsize=10)
    a1.legend(fontsize=8)
    pos = dark[dark > 0]
    lo = max(float(np.percentile(pos, 1)), 1e-6)
    hi = max(float(pos.max()), lo * 10)
    a2.stairs(*np.histogram(pos, bins=np.geomspace(lo, hi, 80)), color="C2", lw=1.2)
    a2.set_xscale("log")
    a2.set_yscale("log")
    a2.axvline(
        thr, color="C3", ls=":", label=f"hot: {d['n_hot']} px ({100 * d['hot_fraction']:.3f}%)"
    )
    a2.set_xlabel(f"dark current ({unit}), positive values")
    a2.set_ylabel("pixels per bin")
    a2.set_title("full range", fontsize=10)
    a2.legend(fontsize=8)
    fig.suptitle("Dark current per pixel")
    fig.tight_layout()
    return _save(fig, path)


def _binned(
    img: np.ndarray, target: int = 700, how: str = "mean", exclude: np.ndarray | None = None
) -> tuple[np.ndarray, int]:
    """Block-reduce ``img`` (NaN and ``exclude`` pixels ignored) by the factor that brings it to
    ~``target`` px; works in strips of rows so that no full-frame temporary is made."""
    f = max(1, int(np.ceil(max(img.shape) / target)))
    ny, nx = (img.shape[0] // f) * f, (img.shape[1] // f) * f
    out = np.empty((ny // f, nx // f), np.float32)
    step = max(1, 2**20 // (f * max(nx, 1)))  # output rows per strip
    for j in range(0, ny // f, step):
        rows = slice(j * f, min((j + step) * f, ny))
        cells = img[rows, :nx].astype(np.float32)
        if exclude is not None:
            cells[exclude[rows, :nx]] = np.nan
        cells = cells.reshape(-1, f, nx // f, f)
        if how == "sum":
            out[j : j + step] = cells.sum(axis=(1, 3))
            continue
        with warnings.catch_warnings():  # all-NaN cells stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            out[j : j + step] = np.nanmean(cells, axis=(1, 3))
    return out, f


def fixed_pattern_plot(
    path: Path,
    master: np.ndarray,
    rtn: np.ndarray,
    fpn: dict[str, Any],
    profiles: tuple[np.ndarray, np.ndarray],
) -> str:
    """The master bias (binned, RTN pixels left out) with its row and column profiles."""
    img, f = _binned(master, exclude=rtn)
    img -= np.float32(fpn["level_adu"])
    lo, hi = np.nanpercentile(img, [0.5, 99.5])
    fig = plt.figure(figsize=(11, 6.5))
    gs = fig.add_gridspec(2, 2, width_ratios=[3, 1], height_ratios=[3, 1.2])
    ax = fig.add_subplot(gs[0, 0])
    ext = (0, master.shape[1], 0, master.shape[0])
    im = ax.imshow(img, origin="lower", vmin=lo, vmax=hi, aspect="auto", extent=ext)
    fig.colorbar(im, ax=ax, label="master bias $-$ level (ADU)", pad=0.01)
    ax.set_title(
        f"Master bias (binned {f}x{f}): DSNU {fpn['dsnu_adu']:.3f} ADU, row banding "
        f"{fpn['row_banding_adu']:.3f}, column banding {fpn['column_banding_adu']:.3f}",
        fontsize=10,
    )
    ax.set_ylabel("y (px)")
    row, col = profiles
    ar = fig.add_subplot(gs[0, 1])
    ar.plot(row, np.arange(row.size), lw=0.6, color="C1")
    ar.set_xlabel("row median\n(ADU, detrended)")
    ar.set_ylabel("y (px)")
    ar.set_ylim(0, row.size)
    ac = fig.add_subplot(gs[1, 0])
    ac.plot(np.arange(col.size), col, lw=0.6, color="C0")
    ac.set_xlim(0, col.size)
    ac.set_xlabel("x (px)")
    ac.set_ylabel("column median\n(ADU, detrended)")
    fig.tight_layout()
    return _save(fig, path)


def anomalous_map(path: Path, rtn: np.ndarray, bad: np.ndarray) -> str:
    """Where the RTN and bad pixels are: positions when few, density maps when many."""
    ny, nx = rtn.shape
    masks = ((rtn, "RTN / salt-and-pepper", "C1", "o"), (bad, "bad", "k", "x"))
    if rtn.sum() + bad.sum() <= 20_000:
        fig, ax = plt.subplots(figsize=(8, 8 * ny / nx + 0.8))
        ms = float(np.clip(600 / max(ny, nx), 1.0, 4.0))
        for mask, name, color, marker in masks:
            y, x = np.nonzero(mask)
            lab = f"{name}: {int(mask.sum()):,}"
            ax.plot(x, y, marker, ms=ms, mew=0.8, color=color, alpha=0.7, ls="none", label=lab)
        ax.set_xlim(0, nx)
        ax.set_ylim(0, ny)
        ax.set_aspect("equal")
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
        ax.legend(fontsize=8, loc="upper right", framealpha=0.9)
        ax.set_title("Anomalous pixels")
        return _save(fig, path)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.4 * ny / nx + 1.0), layout="constrained")
    for ax, (mask, name, _, _) in zip(axes, masks, strict=True):
        counts, f = _binned(mask.astype(np.float32), target=120, how="sum")
        ext = (0, counts.shape[1] * f, 0, counts.shape[0] * f)
        im = ax.imshow(counts / (f * f) * 100, origin="lower", cmap="magma", extent=ext)
        fig.colorbar(im, ax=ax, label=f"% of pixels in {f}x{f} cells", shrink=0.8)
        ax.set_title(f"where the {name} pixels are: {int(mask.sum()):,} ({100 * mask.mean():.3f}%)")
        ax.set_xlabel("x (px)")
        ax.set_ylabel("y (px)")
    return _save(fig, path)


def make_plots(
    out: Path,
    summary: dict[str, Any],
    *,
    bias: BiasStats,
    profiles: tuple[np.ndarray, np.ndarray],
    flats: FlatStats | None,
    darks: DarkStats | None,
    gain_map: np.ndarray | None,
    usable: np.ndarray | None,
    bad: np.ndarray,
    gain_conv: float | None,
) -> list[str]:
    """Write every plot the available data allow; return their file names."""
    names = [
        bias_stability_plot(out / "bias_stability.png", summary["bias"]["stability"]),
        fixed_pattern_plot(
            out / "fixed_pattern.png",
            bias.master,
            bias.rtn,
            summary["bias"]["fixed_pattern"],
            profiles,
        ),
        anomalous_map(out / "anomalous_pixels.png", bias.rtn, bad),
    ]
    pixel_gain = "median_e_per_adu" in summary.get("gain_pixel", {})
    if flats is not None and gain_map is not None and usable is not None and pixel_gain:
        gain, rel = np.reciprocal(flats.k[usable]), flats.k_rel[usable]
        names.append(gain_hist(out / "gain_hist.png", gain, rel, summary["gain_pixel"], gain_conv))
        del gain, rel
        rn = bias.std[usable]
        rn *= gain_map[usable]
        names.append(
            read_noise_hist(
                out / "read_noise_hist.png",
                rn,
                summary["read_noise_pixel"],
                summary["read_noise_e"],
            )
        )
        del rn
    lin = summary.get("linearity") or {}
    if "r2" in lin:
        names.append(linearity(out / "linearity.png", lin))
    if summary.get("ptc") and "gain_e_per_adu" in summary["ptc"]:
        names.append(ptc(out / "ptc.png", summary["ptc"]))
    if darks is not None:
        dark = darks.slope * np.float32(gain_conv or 1.0)
        dark = dark[~bias.rtn & np.isfinite(dark)]
        names.append(dark_hist(out / "dark_current_hist.png", dark, summary["dark"]))
    return names
