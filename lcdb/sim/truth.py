"""Scoring a store against the simulator's truth (the demo's report and the stage tests).

The simulator writes, beside every detection, the star it came from (``truth_star_id``, -1 for
spurious detections) and ``truth/frames.parquet`` with each frame's true zero-point polynomial and
colour coefficient. These functions join the store back to that truth by (frame name, x, y) —
the ingest keeps both — and turn it into the figures the issues ask for.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from lcdb.sim.plan import evaluate_z0, normalise_xy
from lcdb.store import Store


def detection_truth(store: Store, sim_dir: Path) -> pl.DataFrame:
    """Every stored measurement with its true star id (``truth_star_id``; -1 spurious).

    Columns: frame_id, frame_name, x, y, object_id, mag_instr, z0, truth_star_id.
    """
    frames = sorted((Path(sim_dir) / "frames").glob("*.parquet"))
    truth = pl.concat(
        [
            pl.read_parquet(f, columns=["x", "y", "truth_star_id"]).with_columns(
                pl.lit(f.stem).alias("frame_name"),
                pl.col("x").cast(pl.Float32),
                pl.col("y").cast(pl.Float32),
            )
            for f in frames
        ]
    )
    meas = store.pl(
        "SELECT l.frame_id, f.frame_name, l.x, l.y, l.object_id, l.mag_instr, l.z0 "
        "FROM lightcurves l JOIN frames f USING (frame_id)"
    )
    return meas.join(truth, on=["frame_name", "x", "y"], how="left")


@dataclass(frozen=True)
class ClusteringScore:
    """Purity and completeness of the objects against the true stars.

    purity: fraction of assigned real detections that belong to their object's dominant star.
    completeness: fraction of real detections that sit in their star's dominant object.
    """

    purity: float
    completeness: float
    n_detections: int
    n_objects: int
    n_stars: int


def clustering_score(det: pl.DataFrame) -> ClusteringScore:
    """Score the ``object_id`` of :func:`detection_truth` rows against ``truth_star_id``."""
    real = det.filter(pl.col("truth_star_id") >= 0)
    assigned = real.filter(pl.col("object_id").is_not_null())
    pairs = assigned.group_by(["object_id", "truth_star_id"]).len()
    by_object = pairs.sort("len", descending=True).unique("object_id", keep="first")
    by_star = pairs.sort("len", descending=True).unique("truth_star_id", keep="first")
    return ClusteringScore(
        purity=float(by_object["len"].sum() / max(len(assigned), 1)),
        completeness=float(by_star["len"].sum() / max(len(real), 1)),
        n_detections=len(real),
        n_objects=assigned["object_id"].n_unique(),
        n_stars=real["truth_star_id"].n_unique(),
    )


def true_zero_points(store: Store, sim_dir: Path) -> pl.DataFrame:
    """Per measurement: the fitted z0 and the true Z0(x, y) of its frame.

    Columns: frame_id, frame_name, object_id, ref_id (of the object, null if none), z0,
    z0_true, ruined.
    """
    truth = pl.read_parquet(Path(sim_dir) / "truth" / "frames.parquet")
    meas = store.pl(
        "SELECT l.frame_id, f.frame_name, l.object_id, o.ref_id, l.x, l.y, l.z0, f.naxis1, "
        "f.naxis2 FROM lightcurves l JOIN frames f USING (frame_id) "
        "LEFT JOIN objects o USING (object_id) WHERE l.z0 IS NOT NULL"
    )
    out = []
    for (name,), grp in meas.group_by(["frame_name"]):
        row = truth.filter(pl.col("frame_name") == name)
        if row.is_empty():
            continue
        xn, yn = normalise_xy(
            grp["x"].to_numpy().astype(np.float64),
            grp["y"].to_numpy().astype(np.float64),
            int(grp["naxis1"][0]),
            int(grp["naxis2"][0]),
        )
        z_true = evaluate_z0(np.asarray(row["z0_coeffs"][0].to_list()), xn, yn)
        out.append(
            grp.select("frame_id", "frame_name", "object_id", "ref_id", "z0").with_columns(
                pl.Series("z0_true", z_true), pl.lit(bool(row["ruined"][0])).alias("ruined")
            )
        )
    if not out:
        return pl.DataFrame(
            schema={
                "frame_id": pl.Int64,
                "frame_name": pl.Utf8,
                "z0": pl.Float32,
                "z0_true": pl.Float64,
                "ruined": pl.Boolean,
            }
        )
    return pl.concat(out)


def object_truth(store: Store, det: pl.DataFrame, sim_dir: Path) -> pl.DataFrame:
    """Objects with their dominant true star: reconstructed and true V, B−V, variability.

    Columns: the objects table's, plus star_id, v_true, bv_true, var_type, amplitude, period.
    """
    dom = (
        det.filter(pl.col("truth_star_id") >= 0)
        .group_by(["object_id", "truth_star_id"])
        .len()
        .sort("len", descending=True)
        .unique("object_id", keep="first")
        .select("object_id", pl.col("truth_star_id").alias("star_id"))
    )
    stars = pl.read_parquet(Path(sim_dir) / "truth" / "stars.parquet").select(
        "star_id",
        pl.col("v").alias("v_true"),
        pl.col("bv").alias("bv_true"),
        "var_type",
        "amplitude",
        "period",
    )
    return store.pl("SELECT * FROM objects").join(dom, on="object_id").join(stars, on="star_id")


@dataclass(frozen=True)
class ColourScore:
    """B−V and V against truth for bright constant stars with many frames."""

    n: int
    bv_rms: float
    bv_bias: float
    v_rms: float
    v_bias: float
    lc_rms_median: float


def colour_score(objects: pl.DataFrame, v_max: float = 11.0, min_frames: int = 50) -> ColourScore:
    """Score :func:`object_truth` rows: constant stars brighter than ``v_max``."""
    sel = objects.filter(
        (pl.col("var_type") == "constant")
        & (pl.col("v_true") < v_max)
        & (pl.col("n_colour") >= min_frames)
        & pl.col("bv").is_not_null()
    )
    dbv = (sel["bv"] - sel["bv_true"]).to_numpy()
    dv = (sel["v"] - sel["v_true"]).to_numpy()
    return ColourScore(
        n=len(sel),
        bv_rms=float(np.std(dbv)) if len(sel) else float("nan"),
        bv_bias=float(np.median(dbv)) if len(sel) else float("nan"),
        v_rms=float(np.std(dv)) if len(sel) else float("nan"),
        v_bias=float(np.median(dv)) if len(sel) else float("nan"),
        lc_rms_median=float(sel["colour_rms"].median()) if len(sel) else float("nan"),
    )


@dataclass(frozen=True)
class VariabilityScore:
    """Recall, precision and period accuracy of ``candidates`` against the injected variables.

    ``n_strong``: variables with >= ``min_obs`` good points whose sampled amplitude (peak to peak
    of the true light curve at the epochs of their good measurements: an eclipse that fell between
    exposures is not in the data) is at least 5x the expected scatter at their magnitude.
    ``n_periodic``: candidates of strictly periodic types (sin, RR Lyr, EA) with >= 50 points and
    at least three cycles in the time span; ``n_period_ok``: of those, periods within 1%.
    """

    recall: float
    precision: float
    n_strong: int
    n_candidates: int
    n_periodic: int
    n_period_ok: int
    missed: pl.DataFrame
    false: pl.DataFrame


def variability_score(
    store: Store, det: pl.DataFrame, sim_dir: Path, min_obs: int = 20
) -> VariabilityScore:
    """Score the store's candidates against the simulator's variables."""
    from lcdb.sim.variables import magnitude_offset

    objs = object_truth(store, det, sim_dir)
    vs = store.pl("SELECT object_id, det_mag, n FROM varstats")
    nc = store.pl("SELECT * FROM noise_curve WHERE index = 'std' ORDER BY mag")
    noise = 10 ** np.interp(
        vs["det_mag"].to_numpy(), nc["mag"].to_numpy(), nc["log_trend"].to_numpy()
    )
    cand = store.pl("SELECT object_id, period AS period_found, n AS n_cand FROM candidates")
    t = (
        objs.join(vs.with_columns(pl.Series("noise", noise)), on="object_id")
        .join(cand, on="object_id", how="left")
        .with_columns(pl.col("n_cand").is_not_null().alias("candidate"))
    )
    var = t.filter((pl.col("var_type") != "constant") & (pl.col("n") >= min_obs))
    stars = pl.read_parquet(Path(sim_dir) / "truth" / "stars.parquet")
    lcs = store.pl(
        "SELECT object_id, mjd FROM lightcurves WHERE object_id IN (SELECT unnest($ids)) "
        "AND frame_status = 'ok' AND flags = 0 AND mag_err <= 0.3",
        {"ids": var["object_id"].to_list()},
    )
    sampled = []
    for oid, sid in zip(var["object_id"], var["star_id"], strict=True):
        mjd = lcs.filter(pl.col("object_id") == oid)["mjd"].to_numpy()
        dm = np.asarray(
            magnitude_offset(stars.filter(pl.col("star_id") == sid), mjd[None, :])
        ).ravel()
        sampled.append(float(np.ptp(dm)) if dm.size else 0.0)
    strong = var.filter(pl.Series(np.asarray(sampled) >= 5 * var["noise"].to_numpy()))
    picked = t.filter(pl.col("candidate"))
    span = store.sql("SELECT max(mjd) - min(mjd) FROM frames").column(0)[0].as_py() or 0.0
    periodic = picked.filter(
        pl.col("var_type").is_in(["sin", "rrlyr", "ea"])
        & (pl.col("n") >= 50)
        & (pl.col("period") < span / 3)
    )
    ok = int(((periodic["period_found"] / periodic["period"] - 1).abs() < 0.01).sum())
    return VariabilityScore(
        recall=float(strong["candidate"].mean()) if len(strong) else float("nan"),
        precision=float((picked["var_type"] != "constant").mean()) if len(picked) else 1.0,
        n_strong=len(strong),
        n_candidates=len(picked),
        n_periodic=len(periodic),
        n_period_ok=ok,
        missed=strong.filter(~pl.col("candidate")),
        false=picked.filter(pl.col("var_type") == "constant"),
    )
