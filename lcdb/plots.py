"""PNG plots of the variability search: diagram (seed Fig. 6), light curves, colours (Fig. 5).

Every function takes Polars data frames and an output path, draws on a standalone
:class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot state, safe in threads and
tests), writes the PNG and returns the Figure so callers can inspect what was drawn.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

from lcdb.errors import InputError

_log = logging.getLogger(__name__)

_GREY = "0.55"
_RED = "#d62728"
_BLUE = "#1f77b4"
_DPI = 120


def _figure(width: float, height: float, rows: int = 1, **kw) -> tuple[Figure, list]:
    fig = Figure(figsize=(width, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 1, squeeze=False, **kw)[:, 0]
    return fig, list(axes)


def _save(fig: Figure, path: str | os.PathLike[str]) -> Figure:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    _log.info("wrote %s", path)
    return fig


def _finite(df: pl.DataFrame, *cols: str) -> pl.DataFrame:
    cond = pl.lit(True)
    for c in cols:
        cond &= pl.col(c).is_not_null() & pl.col(c).cast(pl.Float64).is_finite()
    return df.filter(cond)


def plot_diagram(
    varstats: pl.DataFrame,
    noise_curve: pl.DataFrame,
    candidates: pl.DataFrame,
    path: str | os.PathLike[str],
    title: str | None = None,
    index: str = "std",
) -> Figure:
    """Scatter-vs-magnitude diagram: every object, the noise curve and its threshold, candidates.

    The x axis is ``det_mag`` when varstats has it (the magnitude the noise curve of
    ``lcdb find-variables`` is fitted against), else ``mean_mag``.

    Parameters
    ----------
    varstats : polars.DataFrame
        ``object_id``, ``mean_mag`` (or ``det_mag``) and the index: ``std``, ``iqr``, or
        ``eta`` for ``inv_eta``.
    noise_curve : polars.DataFrame
        ``index``, ``mag``, ``log_trend``, ``log_spread``, ``threshold`` (rows of other indices
        are ignored; may be empty).
    candidates : polars.DataFrame
        ``object_id`` and optionally ``known``; drawn at their varstats position.
    path : path-like
        PNG to write.
    title : str, optional
        Title (e.g. "before refinement").
    index : str
        Variability index on the y axis: ``std``, ``iqr`` or ``inv_eta`` (1/eta).

    Returns
    -------
    matplotlib.figure.Figure
        Axes 0 holds, in order, the collections "objects", "candidates", "known" and the lines
        "noise curve", "threshold".
    """
    if index not in _INDEX_LABEL:
        raise InputError(f"unknown index {index!r} (choose from {', '.join(_INDEX_LABEL)})")
    source = "eta" if index == "inv_eta" else index
    if source not in varstats.columns:
        raise InputError(f"varstats has no column {source!r}")
    xcol = "mean_mag"
    if "det_mag" in varstats.columns and varstats["det_mag"].is_not_null().any():
        xcol = "det_mag"
    yval = 1.0 / pl.col("eta") if index == "inv_eta" else pl.col(index)
    pts = varstats.select("object_id", pl.col(xcol).alias("_x"), yval.cast(pl.Float64).alias("_y"))
    pts = _finite(pts, "_x", "_y").filter(pl.col("_y") > 0)
    if pts.height == 0:
        raise InputError("no object with a finite magnitude and positive index to plot")
    fig, (ax,) = _figure(8.0, 5.5)
    x, y = pts["_x"].to_numpy(), pts["_y"].to_numpy()
    ax.scatter(x, y, s=5, c=_GREY, lw=0, alpha=0.7, rasterized=True, label=f"objects ({x.size})")
    cand = pts.join(candidates.select("object_id", _known(candidates)), on="object_id")
    cand = cand.unique("object_id", keep="first", maintain_order=True)
    new, known = cand.filter(~pl.col("_known")), cand.filter(pl.col("_known"))
    by = ""
    if "index" in candidates.columns and candidates.height:
        by = "; selected on " + ", ".join(sorted(candidates["index"].drop_nulls().unique()))
    ax.scatter(
        new["_x"], new["_y"], s=40, facecolors="none", edgecolors=_RED, lw=1.2,
        label=f"candidates ({new.height}{by})", zorder=3,
    )  # fmt: skip
    ax.scatter(
        known["_x"], known["_y"], s=60, marker="D", facecolors="none", edgecolors=_BLUE,
        lw=1.4, label=f"known variables ({known.height})", zorder=3,
    )  # fmt: skip
    curve = noise_curve.filter(pl.col("index") == index).sort("mag") if noise_curve.height else None
    if curve is not None and curve.height:
        m = curve["mag"].to_numpy()
        trend, spread = curve["log_trend"].to_numpy(), curve["log_spread"].to_numpy()
        k = float(curve["threshold"].median())
        ax.plot(m, 10**trend, color="k", lw=1.8, label="noise curve (SuperSmoother)")
        ax.plot(m, 10 ** (trend + k * spread), color="k", lw=1.2, ls="--",
                label=f"threshold ({k:g} x spread)")  # fmt: skip
    else:
        _log.warning("no noise curve for index %r: drawing the objects only", index)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(_X_LABEL[xcol])
    ax.set_ylabel(_INDEX_LABEL[index])
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(loc="upper left", fontsize=9, framealpha=0.9)
    ax.set_title(title or f"Scatter vs magnitude ({index})")
    return _save(fig, path)


_INDEX_LABEL = {
    "std": "standard deviation (mag)",
    "iqr": "interquartile range (mag)",
    "inv_eta": "1/eta (von Neumann ratio)",
}
_X_LABEL = {
    "det_mag": "mean magnitude on the detector (V through the frame-centre zero point)",
    "mean_mag": "mean calibrated magnitude (V)",
}


def _known(candidates: pl.DataFrame) -> pl.Expr:
    if "known" in candidates.columns:
        return pl.col("known").fill_null(False).alias("_known")
    return pl.lit(False).alias("_known")


def plot_lightcurve(
    lc: pl.DataFrame,
    path: str | os.PathLike[str],
    period: float | None = None,
    title: str | None = None,
    epoch: float | None = None,
    period_note: str | None = None,
) -> Figure:
    """Light curve of one object (mag against time, y inverted), folded on ``period`` if given.

    Points of rejected frames or with flags (present with ``--all``) are drawn apart as crosses.
    When ``mag`` is null throughout (no colour yet), ``mag_instr - z0`` is drawn instead.

    Parameters
    ----------
    lc : polars.DataFrame
        ``mjd``, ``mag``, ``mag_err`` (``mag_instr``, ``z0``, ``flags``, ``frame_status``
        optional).
    path : path-like
        PNG to write.
    period : float, optional
        Period in days; adds a second panel with the phase-folded curve (two cycles).
    title : str, optional
        Title of the figure.
    epoch : float, optional
        MJD of phase 0 (default: the brightest good point).
    period_note : str, optional
        Added to the phase axis label (e.g. the false-alarm probability).

    Returns
    -------
    matplotlib.figure.Figure
        One axes (two with a period); the first container of each is the good points.
    """
    ylabel = "V (mag)"
    if lc.height and lc["mag"].is_null().all() and {"mag_instr", "z0"} <= set(lc.columns):
        lc = lc.with_columns(mag=pl.col("mag_instr") - pl.col("z0"))
        ylabel = "instr. - Z0 (mag, no colour)"
    lc = _finite(lc, "mjd", "mag")
    if lc.height == 0:
        raise InputError("no points with a magnitude to plot")
    good = pl.lit(True)
    if "flags" in lc.columns:
        good &= pl.col("flags") == 0
    if "frame_status" in lc.columns:
        good &= pl.col("frame_status") == "ok"
    lc = lc.with_columns(_good=good.fill_null(False), mag_err=pl.col("mag_err").fill_nan(None))
    ok, bad = lc.filter(pl.col("_good")), lc.filter(~pl.col("_good"))
    folded = period is not None and np.isfinite(period) and period > 0 and ok.height > 1
    fig, axes = _figure(8.0, 6.4 if folded else 3.6, rows=2 if folded else 1)
    t0 = float(np.floor(lc["mjd"].min()))
    _points(axes[0], ok["mjd"] - t0, ok, bad["mjd"] - t0, bad)
    axes[0].set_xlabel(f"MJD - {t0:.0f} (d)")
    if folded:
        ref = ok if ok.height else lc
        if epoch is None:
            epoch = float(ref["mjd"][int(ref["mag"].arg_min())])
        phase = (((ok["mjd"] - epoch) / period) % 1.0).to_numpy()
        both = pl.concat([ok, ok])
        _points(axes[1], np.concatenate([phase, phase + 1.0]), both, None, None)
        axes[1].set_xlim(0, 2)
        note = f", {period_note}" if period_note else ""
        axes[1].set_xlabel(f"phase (P = {period:.6g} d{note}; epoch MJD {epoch:.4f})")
    for ax in axes:
        if not ok.height:
            ax.invert_yaxis()
        ax.set_ylabel(ylabel)
        ax.grid(True, alpha=0.3)
    fig.suptitle(title or "light curve")
    return _save(fig, path)


def _points(ax, x_ok, ok: pl.DataFrame, x_bad, bad: pl.DataFrame | None) -> None:
    """Good points with error bars; bad ones as crosses, clipped to the good points' range."""
    mag, err = ok["mag"].to_numpy(), ok["mag_err"].fill_null(0.0).to_numpy()
    ax.errorbar(
        np.asarray(x_ok), mag, yerr=err, fmt="o", ms=3, color="k", ecolor="0.6",
        elinewidth=0.8, capsize=0, label=f"good points ({ok.height})",
    )  # fmt: skip
    if mag.size:
        lo, hi = float(np.min(mag - err)), float(np.max(mag + err))
        pad = max(0.08 * (hi - lo), 0.02)
        ax.set_ylim(hi + pad, lo - pad)  # inverted: bright at the top
    if bad is not None and bad.height:
        y = bad["mag"].to_numpy()
        clipped = 0
        if mag.size:
            y_in = np.clip(y, lo - pad / 2, hi + pad / 2)
            clipped, y = int(np.sum(y_in != y)), y_in
        note = f"; {clipped} clipped to the axes" if clipped else ""
        ax.plot(np.asarray(x_bad), y, "x", ms=4, color=_RED, alpha=0.8,
                label=f"flagged or rejected frame ({bad.height}{note})")  # fmt: skip
        ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=8, frameon=False)


def plot_colours(
    df: pl.DataFrame, path: str | os.PathLike[str], title: str | None = None
) -> Figure:
    """Reconstructed against catalogue V and B-V (seed Fig. 5), with a 1:1 line and the rms.

    Parameters
    ----------
    df : polars.DataFrame
        ``v``, ``bv`` (reconstructed) and ``v_cat``, ``bv_cat`` (catalogue), one row per object.
    path : path-like
        PNG to write.
    title : str, optional
        Title of the figure.

    Returns
    -------
    matplotlib.figure.Figure
        Top axes: V_rec - V_cat against V_cat; bottom: B-V_rec against B-V_cat.
    """
    df = _finite(df, "v", "bv", "v_cat", "bv_cat")
    if df.height == 0:
        raise InputError("no object with reconstructed and catalogue V and B-V to compare")
    fig, (top, bottom) = _figure(7.0, 8.0, rows=2)
    vcat, dv = df["v_cat"].to_numpy(), (df["v"] - df["v_cat"]).to_numpy()
    bvcat, bv = df["bv_cat"].to_numpy(), df["bv"].to_numpy()
    dbv = bv - bvcat
    kw = {"s": 6, "c": "k", "lw": 0, "alpha": 0.5, "rasterized": True}
    top.scatter(vcat, dv, label=_stats_label(dv), **kw)
    top.axhline(0.0, color=_RED, lw=1.2)
    top.set_xlabel("V (catalogue, mag)")
    top.set_ylabel("V reconstructed - V catalogue (mag)")
    lim = max(0.1, float(np.nanpercentile(np.abs(dv), 99.5)) * 1.2)
    top.set_ylim(-lim, lim)
    bottom.scatter(bvcat, bv, label=_stats_label(dbv), **kw)
    lo = float(min(bvcat.min(), np.percentile(bv, 0.5))) - 0.1
    hi = float(max(bvcat.max(), np.percentile(bv, 99.5))) + 0.1
    bottom.plot([lo, hi], [lo, hi], color=_RED, lw=1.2, label="1:1")
    bottom.set_xlim(lo, hi)
    bottom.set_ylim(lo, hi)
    bottom.set_xlabel("B-V (catalogue, mag)")
    bottom.set_ylabel("B-V reconstructed (mag)")
    for ax in (top, bottom):
        ax.grid(True, alpha=0.3)
        ax.legend(loc="upper left", fontsize=9, framealpha=0.9)
    fig.suptitle(title or f"Reconstructed vs catalogue photometry ({df.height} objects)")
    return _save(fig, path)


def _stats_label(diff: np.ndarray) -> str:
    rms = float(np.sqrt(np.mean(diff**2)))
    median = round(float(np.median(diff)), 3) + 0.0  # no "-0.000"
    return f"rec - cat, {diff.size} objects: rms {rms:.3f}, median {median:+.3f} mag"
