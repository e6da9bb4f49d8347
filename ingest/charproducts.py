"""From the streamed accumulators to the characterisation figures, maps and plots.

:func:`finish` is the second half of :func:`ingest.characterize.characterize`: it condenses the
per-pixel maps into camera figures (``summary.json``), flags bad and RTN pixels, and writes the
FITS products and PNG plots whose names and conventions :mod:`ingest.characterize` documents.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from astropy.io import fits

from ingest import charplots
from ingest.charbias import BiasStats, bias_stability, fixed_pattern, robust_sigma
from ingest.chardark import DarkStats
from ingest.charframes import FrameFile
from ingest.charlinearity import camera_linearity, camera_mean, write_nonlinearity
from ingest.mixture import bimodality, subsample
from ingest.ptc import FlatStats, conventional_ptc
from lcdb.flags import Flag

if TYPE_CHECKING:
    from ingest.characterize import CharacterizeConfig

_log = logging.getLogger(__name__)


def clean(value: Any) -> Any:
    """JSON-ready copy: numpy values to Python, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, np.generic):
        return clean(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path: Path, summary: dict[str, Any]) -> None:
    """Write ``summary`` as indented JSON (see :func:`clean`)."""
    path.write_text(json.dumps(clean(summary), indent=2) + "\n")


def _percentiles(x: np.ndarray, overwrite: bool = False) -> dict[str, float]:
    """1, 5, 50, 95, 99th percentiles (``overwrite``: partition ``x`` in place, no copy)."""
    q = np.percentile(x, [1, 5, 50, 95, 99], overwrite_input=overwrite) if x.size else [np.nan] * 5
    return dict(zip(("p01", "p05", "p50", "p95", "p99"), map(float, q), strict=True))


def _edge_enrichment(mask: np.ndarray) -> dict[str, Any]:
    """Share of flagged pixels within 2% of the short side from an edge, against the area."""
    ny, nx = mask.shape
    b = max(1, round(0.02 * min(ny, nx)))
    band = np.ones_like(mask)
    band[b:-b, b:-b] = False
    n = int(mask.sum())
    share = float(mask[band].sum() / n) if n else float("nan")
    area = float(band.mean())
    return {
        "edge_band_px": b,
        "edge_share": share,
        "edge_area_share": area,
        "edge_enrichment": share / area if n else float("nan"),
    }


def _provenance(seqs: dict[str, list[FrameFile]]) -> dict[str, Any]:
    """``CHANNEL`` (when the inputs agree on one) and ``MJD-OBS`` (mean of the inputs), so that
    the reduction's calibration index can match the products to frames."""
    frames = [f for v in seqs.values() for f in v]
    cards: dict[str, Any] = {}
    channels = {f.channel for f in frames} - {None}
    if len(channels) == 1:
        cards["CHANNEL"] = channels.pop()
    mjds = [f.mjd for f in frames if f.mjd is not None]
    if mjds:
        cards["MJD-OBS"] = float(np.mean(mjds))
    return cards


def _write(path: Path, data: np.ndarray, cards: dict[str, Any], ext: dict[str, np.ndarray]) -> str:
    hdus = [fits.PrimaryHDU(data, fits.Header(list(cards.items())))]
    hdus += [fits.ImageHDU(v, name=k) for k, v in ext.items()]
    fits.HDUList(hdus).writeto(path, overwrite=True)
    return path.name


def _gain_products(
    out: Path,
    summary: dict[str, Any],
    bias: BiasStats,
    flats: FlatStats,
    good: np.ndarray,
    gain_conv: float,
    config: CharacterizeConfig,
    files: list[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel gain and read-noise summaries and maps; return the gain map for the error
    model and the mask of pixels with their own gain (see the module docstring of
    :mod:`ingest.characterize` for the files)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        gain_px = (1.0 / flats.k).astype(np.float32)
    usable = good & np.isfinite(gain_px) & (flats.k_rel < 1)
    gp = summary["gain_pixel"] = _gain_summary(gain_px, flats.k_rel, usable, config)
    per_pixel = gp.get("median_rel_err", np.inf) <= config.population_max_rel_err
    gain_map = np.where(usable & per_pixel, gain_px, np.float32(gain_conv)).astype(np.float32)
    gain_px[~usable] = np.nan
    gain_err = gain_px * flats.k_rel
    cards = {"BUNIT": "e-/ADU", "GAINCONV": gain_conv, "GAINSRC": "PIXEL" if per_pixel else "CONV"}
    files.append(_write(out / "gain.fits", gain_map, cards, {"PIXEL": gain_px, "ERR": gain_err}))
    del gain_px, gain_err
    rn_e = bias.std * gain_map
    vals = rn_e[usable]
    rnp = summary["read_noise_pixel"]
    rnp["gain_used"] = "per-pixel" if per_pixel else "conventional (per-pixel gains too noisy)"
    if vals.size:
        rnp["mean_e"] = float(np.mean(vals, dtype=np.float64))
        rnp["rms_e"] = float(np.sqrt(np.mean(np.square(vals), dtype=np.float64)))
        rnp.update(_percentiles(vals, overwrite=True))
        rnp["median_e"] = rnp["p50"]
    del vals
    rn_err = np.where(usable & per_pixel, flats.k_rel, np.float32(0))
    np.square(rn_err, out=rn_err)
    rn_err += np.float32(1 / (2 * (bias.n - 1)))
    np.sqrt(rn_err, out=rn_err)
    rn_err *= rn_e
    rel = gp.get("median_rel_err", 0.0) if per_pixel else 0.0
    rnp["median_rel_err"] = math.sqrt(1 / (2 * (bias.n - 1)) + rel**2)
    ext = {"ADU": bias.std, "ERR": rn_err}
    files.append(_write(out / "read_noise.fits", rn_e, {"BUNIT": "e-"}, ext))
    return gain_map, usable


def _nonlinearity_product(
    out: Path,
    summary: dict[str, Any],
    flats: FlatStats,
    good: np.ndarray,
    lin: dict[str, Any],
    config: CharacterizeConfig,
    provenance: dict[str, Any],
) -> str:
    """Camera nonlinearity from the per-pixel fits; write the correction cube."""
    cm = camera_mean(flats.c, flats.c_err, good)
    camera_c = cm["mean"] if np.isfinite(cm["mean"]) else lin.get("quadratic_c", 0.0)
    finite = np.isfinite(flats.c_err) & good
    summary["nonlinearity"] = {
        "model": "measured = s * (1 + c * s / s_ref)",
        "s_ref_adu": config.nonlinearity_ref_adu,
        "c": camera_c,
        "c_err": cm["err"],
        "c_region_fit": lin.get("quadratic_c"),
        "c_region_fit_err": lin.get("quadratic_c_err"),
        "pixels": cm,
        "pixel_c_median_err": float(np.median(flats.c_err[finite])) if finite.any() else None,
        "per_pixel_in_cube": config.per_pixel_nonlinearity,
        "block_c": [float(np.median(flats.block_c)), float(np.std(flats.block_c))],
    }
    path = out / "nonlinearity.fits"
    write_nonlinearity(
        path,
        flats.c,
        flats.c_err,
        ref=config.nonlinearity_ref_adu,
        order=config.nonlinearity_order,
        per_pixel=config.per_pixel_nonlinearity,
        camera_c=camera_c,
        cards={"IMAGETYP": "NONLINEARITY"} | provenance,
    )
    return path.name


def _gain_summary(
    gain: np.ndarray, rel: np.ndarray, usable: np.ndarray, config: CharacterizeConfig
) -> dict[str, Any]:
    """Distribution of the per-pixel gain over ``usable`` pixels and its populations."""
    n = int(usable.sum())
    if n < 50:
        return {"n_pixels": n, "note": "too few pixels with a gain estimate"}
    sums = np.zeros(3)  # sum g, sum g^2, sum (g rel)^2, about a reference to keep precision
    ref = float(np.median(gain[::7, ::7][usable[::7, ::7]]))
    for r0 in range(0, gain.shape[0], 256):  # row chunks: no full-frame temporaries
        sl = slice(r0, r0 + 256)
        g = gain[sl][usable[sl]].astype(np.float64)
        sums += (
            (g - ref).sum(),
            np.square(g - ref).sum(),
            np.square(g * rel[sl][usable[sl]]).sum(),
        )
    mean = ref + sums[0] / n
    var = sums[1] / n - (sums[0] / n) ** 2
    noise2 = sums[2] / n
    pick = subsample(n, config.max_mixture_pixels)
    g = gain[usable]  # one float32 copy, partitioned in place for the percentiles below
    g_pick, r_pick = g[pick], rel[usable][pick]
    out = {
        "n_pixels": n,
        "mean_e_per_adu": mean,
        "std_e_per_adu": math.sqrt(var),
        "median_rel_err": float(np.median(r_pick)),
        "intrinsic_std_e_per_adu": math.sqrt(max(var - noise2, 0.0)),
        "skewness": float(np.mean((g_pick - mean) ** 3.0) / var**1.5),
        "bimodal": None,
        "populations": [],
    }
    out |= _percentiles(g, overwrite=True)
    out["median_e_per_adu"] = out["p50"]
    del g
    if out["median_rel_err"] > config.population_max_rel_err:
        n_more = math.ceil(2 / config.population_max_rel_err**2)
        out["note"] = (
            f"per-pixel errors ({100 * out['median_rel_err']:.0f}%) too large to resolve gain "
            f"populations; take ~{n_more} flats per pixel (a stack at one level)"
        )
        return out
    test = bimodality(
        np.log(g_pick),
        r_pick,
        min_fraction=config.bimodal_min_fraction,
        min_separation=config.bimodal_min_separation,
        min_delta_bic=config.bimodal_min_delta_bic,
    )
    fit = test["two_components"] if test["bimodal"] else test["one_component"]
    out["bimodal"] = test["bimodal"]
    out["populations"] = [
        {
            "fraction": c["weight"],
            "gain_e_per_adu": math.exp(c["mean"]),
            "intrinsic_rel_width": c["width"],
        }
        for c in fit["components"]
    ]
    out["mixture"] = {k: test[k] for k in ("delta_bic", "separation", "minor_fraction")}
    return out


def finish(
    bias: BiasStats,
    darks: DarkStats | None,
    flats: FlatStats | None,
    seqs: dict[str, list[FrameFile]],
    config: CharacterizeConfig,
    out: Path,
    *,
    zero: float,
) -> dict[str, Any]:
    """Summarise, flag, and write every product to ``out``; return the summary."""
    out.mkdir(parents=True, exist_ok=True)
    ny, nx = bias.master.shape
    summary: dict[str, Any] = {
        "shape": [ny, nx],
        "config": clean(asdict(config)),
        "inputs": {
            k: {"directory": str(v[0].path.parent), "n_frames": len(v)} for k, v in seqs.items()
        },
    }
    stability = bias_stability(bias)
    fpn, bias_bad = fixed_pattern(
        bias,
        mesh_px=config.mesh_px,
        corner_fraction=config.corner_fraction,
        outlier_sigma=config.bias_outlier_sigma,
    )
    profiles = (fpn.pop("row_profile_adu"), fpn.pop("column_profile_adu"))
    read_var, read_var_err = bias.pair_variance()
    rn_adu = math.sqrt(read_var)
    summary["bias"] = {
        "stability": stability,
        "fixed_pattern": fpn,
        "n_cosmic_clipped_pixels": bias.n_clipped_pixels,
    }
    summary["read_noise_adu"] = rn_adu
    summary["read_noise_adu_err"] = read_var_err / (2 * rn_adu)
    gain_conv, lin, ptc = None, None, None
    if flats is not None:
        t, s, nsat = flats.frame_signals()
        lin = camera_linearity(
            t[nsat == 0],
            s[nsat == 0],
            ref=config.nonlinearity_ref_adu,
            min_signal=config.linearity_min_signal_adu,
        )
        c_region = lin.get("quadratic_c", 0.0)
        ptc = conventional_ptc(
            flats,
            read_var,
            read_var_err,
            c_region,
            max_signal=config.ptc_max_fraction * (flats.saturation - zero),
        )
        gain_conv = ptc.get("gain_e_per_adu")
        summary["saturation_adu"] = flats.saturation
        summary["flat_groups"] = [
            {"exptime_s": g.exptime, "n_frames": g.n, "level_adu": g.level - zero}
            for g in flats.groups
        ]
    summary["gain_e_per_adu"] = gain_conv
    summary["gain_e_per_adu_err"] = ptc.get("gain_err_e_per_adu") if ptc else None
    if gain_conv is not None:
        summary["read_noise_e"] = rn_adu * gain_conv
        summary["read_noise_e_err"] = summary["read_noise_e"] * math.hypot(
            summary["read_noise_adu_err"] / rn_adu, summary["gain_e_per_adu_err"] / gain_conv
        )
    else:
        summary["read_noise_e"] = summary["read_noise_e_err"] = None
    summary["ptc"], summary["linearity"] = ptc, lin

    rtn = bias.rtn
    hot = np.zeros_like(rtn)
    if darks is not None:
        summary["dark"], hot = darks.summarize(
            gain_conv or 1.0,
            ~rtn & ~bias_bad,
            hot_sigma=config.hot_sigma,
            max_pixels=config.max_mixture_pixels,
        )
        summary["dark"]["units"] = "e-/s" if gain_conv else "ADU/s (no flats for a gain)"
    response = flats.bad_response if flats is not None else np.zeros_like(rtn)
    bad = bias_bad | hot | response
    good = ~bad & ~rtn
    table = bias.rtn_table()
    summary["anomalous"] = {
        "rtn": {
            "n": int(rtn.sum()),
            "fraction": float(rtn.mean()),
            "amplitude_adu": _percentiles(np.abs(table["amplitude"])),
            "upper_state_fraction": _percentiles(table["upper_fraction"]),
            **_edge_enrichment(rtn),
        },
        "bad": {
            "n": int(bad.sum()),
            "fraction": float(bad.mean()),
            "n_hot": int(hot.sum()),
            "n_response": int(response.sum()),
            "n_bias_outliers": int(bias_bad.sum()),
            **_edge_enrichment(bad),
        },
    }
    step = max(1, ny // 512)
    thr = float(np.median(bias.std[::step])) + config.noise_outlier_sigma * robust_sigma(
        bias.std[::step]
    )
    summary["read_noise_pixel"] = {
        "noise_outlier_threshold_adu": thr,
        "noise_outlier_fraction": float((bias.std > thr).mean()),
    }

    mask = np.where(bad, np.uint16(Flag.BAD_PIXEL), np.uint16(0))
    mask |= np.where(rtn, np.uint16(Flag.SALT_PEPPER), np.uint16(0))
    flags = {"FLAGBAD": int(Flag.BAD_PIXEL), "FLAGRTN": int(Flag.SALT_PEPPER)}
    files = [_write(out / "mask.fits", mask, flags | _provenance(seqs), {})]
    cards = {"LCDBPROD": "badpix", "IMAGETYP": "BAD PIXEL MAP"} | _provenance(seqs)
    files.append(_write(out / "bad_pixels.fits", bad.astype(np.uint8), cards, {}))
    cards = {"LCDBPROD": "rtn", "IMAGETYP": "RTN PIXEL MAP"} | _provenance(seqs)
    files.append(_write(out / "rtn_pixels.fits", rtn.astype(np.uint8), cards, {}))
    files.append(
        _write(out / "master_bias.fits", bias.master, {"BUNIT": "ADU", "NCOMBINE": bias.n}, {})
    )
    gain_map = usable = None
    if flats is not None and gain_conv is not None:
        gain_map, usable = _gain_products(out, summary, bias, flats, good, gain_conv, config, files)
    else:
        files.append(_write(out / "read_noise.fits", bias.std, {"BUNIT": "ADU"}, {}))
    if flats is not None:
        files.append(
            _nonlinearity_product(out, summary, flats, good, lin, config, _provenance(seqs))
        )
    if darks is not None:
        g = np.float32(gain_conv or 1.0)
        cards = {"BUNIT": "e-/s" if gain_conv else "ADU/s", "GAINUSED": float(g)}
        dark_ext = {"ERR": darks.slope_err * g}
        files.append(_write(out / "dark_current.fits", darks.slope * g, cards, dark_ext))
    plots = []
    if config.plots:
        plots = charplots.make_plots(
            out,
            summary,
            bias=bias,
            profiles=profiles,
            flats=flats,
            darks=darks,
            gain_map=gain_map,
            usable=usable,
            bad=bad,
            gain_conv=gain_conv,
        )
    summary["files"] = [*sorted(files), "summary.json"]
    summary["plots"] = plots
    return summary
