"""``lcdb find-variables``: statistics, noise curve, candidates, periods, known/new (seed §3.2).

1. Per-object statistics in SQL (sql/varstats.sql): N, weighted mean, std, robust sigma, reduced
   chi2, IQR, von Neumann eta, Stetson J and K, 5-95% amplitude, time span.
2. Noise curves: SuperSmoother trends of log10(index) against mean magnitude on the detector
   (through the frame zero point at the centre: a star in a vignetted corner is fainter there and
   noisier than its V says) and their robust spreads (:mod:`variability.noisecurve`), for the
   seed's std, the IQR and 1/eta; each object's score on an index is its residual over the spread.
3. Candidates: a score above ``threshold`` on any of the selected indices (default IQR and 1/eta,
   Sokolovsky et al. 2017's best pair) with at least ``min_obs`` points. Measured on simulated
   surveys with 8% variables (tests/test_findvars.py): the std index alone reaches 57% precision
   at 5 sigma (single unflagged outliers and truncated faint light curves inflate it), the IQR
   alone 100% precision but misses eclipses and flares (a few points), IQR or 1/eta keeps the
   precision and recovers those (1/eta reacts to consecutive deviations, not to single ones).
4. Period search on the candidates (:mod:`variability.periods`).
5. Known or new: a cross-match with a catalogue of known variables (VSX, GCVS exports).
Results: ``varstats`` (every object), ``noise_curve`` and ``candidates`` in the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
from scipy.spatial import cKDTree

from lcdb import healpix, layout, schema, sqlfiles
from lcdb.errors import InputError
from lcdb.runner import (
    RunnerOptions,
    UnitOutput,
    object_units,
    process_pool,
    run_job,
    unit_store,
)
from lcdb.store import Store
from lcdb.tableio import write_parquet
from lcdb.tables import replace_table
from variability import matching
from variability.noisecurve import NoiseCurve, fit_noise_curve
from variability.periods import PeriodConfig, search_period

_log = logging.getLogger(__name__)

INDICES = ("std", "iqr", "inv_eta")


@dataclass(frozen=True)
class FindConfig:
    """Parameters of the variability search.

    Parameters
    ----------
    threshold : float
        Score (residual over robust spread of log10 index) above which an object is a candidate.
    min_obs : int
        Fewest good points a candidate needs.
    indices : tuple of str
        Indices whose scores select candidates: any of ``"std"`` (the seed's scatter), ``"iqr"``
        and ``"inv_eta"`` (1/eta, von Neumann).
    max_err : float
        Objects whose median error is larger are not scored (truncated at the detection limit).
    max_point_err : float
        Measurements with larger errors are not used.
    periods : bool
        Search periods of the candidates.
    period : PeriodConfig
        The period search.
    known : Path or None
        Catalogue of known variables (CSV, FITS, Parquet, VOTable: position, name, type, period).
    known_radius_arcsec : float or None
        Cross-match radius (default: the store's match radius).
    blend_fwhm : float
        A candidate with a brighter object within this many FWHM (median over frames, converted
        to arcsec with the pixel scale measured on the frames) is blended: the neighbour's wings
        in its aperture change with the seeing and mimic variability.
    keep_blended : bool
        Keep blended candidates (marked ``blended``) instead of dropping them.
    """

    threshold: float = 5.0
    min_obs: int = 20
    indices: tuple[str, ...] = ("iqr", "inv_eta")
    max_err: float = 0.1
    max_point_err: float = 0.3
    periods: bool = True
    period: PeriodConfig = field(default_factory=PeriodConfig)
    known: Path | None = None
    known_radius_arcsec: float | None = None
    blend_fwhm: float = 3.0
    keep_blended: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not self.threshold > 0:
            problems.append(f"threshold must be > 0, got {self.threshold}")
        if self.min_obs < 5:
            problems.append(f"min_obs must be >= 5, got {self.min_obs}")
        if not self.indices or not set(self.indices) <= set(INDICES):
            problems.append(f"indices must be a non-empty subset of {INDICES}, got {self.indices}")
        if not self.max_err > 0:
            problems.append(f"max_err must be > 0, got {self.max_err}")
        if problems:
            raise ValueError("; ".join(problems))


def _check(store: Store) -> None:
    if store.count("objects") == 0:
        raise InputError(f"{store.root}: no objects yet (run `lcdb cluster` first)")
    n = store.sql("SELECT count(*) FROM frames WHERE status = 'ok' AND z0_coeffs IS NOT NULL")
    if n.column(0)[0].as_py() == 0:
        raise InputError(f"{store.root}: no calibrated frame (run `lcdb calibrate` first)")


@dataclass(frozen=True)
class StatsJob:
    """Per-object statistics of the objects owned by a run of partitions (a runner job).

    An object's detections lie in its partition or, at a border, a neighbour; the unit reads
    those files restricted to its objects' id range, so memory is bounded by ``target_rows``
    measurements and a partition. Runs of consecutive partitions keep the fixed cost of a unit
    (~50 ms) small against its work.
    """

    config: FindConfig
    order: int
    name: str = "varstats"
    target_rows: int = 2_000_000

    def units(self, store: Store) -> list[tuple[str, dict]]:
        # the highest order among the frames' Z0 models: sql/views.sql's z0_horner folds it
        z0_order = store.sql("SELECT max(z0_order) FROM frames").column(0)[0].as_py() or 0
        out = [(k, p) for k, p in object_units(store, self.target_rows) if p["files"]]
        for _key, payload in out:
            payload["z0_order"] = z0_order
        return out

    def run_unit(self, root: str, key: str, payload: dict) -> UnitOutput:
        stats = unit_store(root).sql(
            sqlfiles.load("varstats"),
            {
                "files": payload["files"],
                "lo": payload["lo"],
                "hi": payload["hi"],
                "z0_order": payload["z0_order"],
                "max_err": self.config.max_err,
                "max_point_err": self.config.max_point_err,
                "min_n": 5,
            },
        )
        out = UnitOutput(key=key, stats={"objects": float(stats.num_rows)})
        if stats.num_rows:
            stats = schema.conform(stats, "varstats")
            pix = healpix.coarsen(stats["object_id"].to_numpy(), self.order)
            for pixel in payload["pixels"]:
                part = stats.filter(pa.array(pix == pixel))
                if part.num_rows:
                    path = layout.new_partition_file(Path(root), "varstats", pixel, "s")
                    write_parquet(part, path)
                    out.add.append(("varstats", str(path), part.num_rows, {}))
        return out


def compute_statistics(
    store: Store, config: FindConfig, options: RunnerOptions | None = None
) -> tuple[pl.DataFrame, dict]:
    """Per-object statistics with scores on every index, and the fitted noise curves.

    The statistics run partition by partition (:class:`StatsJob`) into the ``varstats`` table;
    the scores are then computed over all objects (a few columns per object fit in memory).
    """
    replace_table(store, "varstats", schema.empty("varstats"), key="object_id")
    run_job(store, StatsJob(config, store.config.order), options or RunnerOptions(progress=False))
    stats = store.pl(
        "SELECT * EXCLUDE (pixel, score, score_iqr, score_eta) FROM varstats ORDER BY object_id"
    )
    enough = stats.filter(pl.col("n") >= config.min_obs)
    if len(enough) < 20:
        raise InputError(
            f"{store.root}: only {len(enough)} objects have {config.min_obs} good points: too "
            "few for a noise curve"
        )
    stats = stats.with_columns((1.0 / pl.col("eta")).alias("inv_eta"))
    enough = enough.with_columns((1.0 / pl.col("eta")).alias("inv_eta"))
    curves: dict[str, NoiseCurve] = {}
    for index in INDICES:
        curves[index] = fit_noise_curve(
            enough["det_mag"].to_numpy(), enough[index].to_numpy(), index, config.threshold
        )
    mag = stats["det_mag"].to_numpy()
    stats = stats.with_columns(
        pl.Series(f"score{suffix}", curves[index].score(mag, stats[index].to_numpy()), pl.Float32)
        for index, suffix in (("std", ""), ("iqr", "_iqr"), ("inv_eta", "_eta"))
    )
    return stats.drop("inv_eta"), curves


def _periods(
    store: Store, ids: list[int], config: FindConfig, workers: int = 1
) -> dict[int, object]:
    """Period search of the candidates, in ``workers`` processes when more than one.

    ~10 ms per light curve of ~100 points: 3,000 candidates of 10^6 objects take ~30 s serially.
    """
    if not ids:
        return {}
    lcs = store.pl(
        sqlfiles.load("candidate_lightcurves"), {"ids": ids, "max_point_err": config.max_point_err}
    )
    curves = [
        (int(oid), lc["mjd"].to_numpy(), lc["mag"].to_numpy(), lc["err"].to_numpy())
        for (oid,), lc in lcs.group_by(["object_id"], maintain_order=True)
    ]
    if workers <= 1 or len(curves) < 100:
        return dict(_search_periods(curves, config.period))
    size = -(-len(curves) // (4 * workers))  # a few chunks per worker: balanced, few messages
    chunks = [curves[i : i + size] for i in range(0, len(curves), size)]
    with process_pool(workers) as pool:
        done = pool.map(_search_periods, chunks, [config.period] * len(chunks))
        return {oid: res for part in done for oid, res in part}


def _search_periods(curves: list[tuple], config: PeriodConfig) -> list[tuple[int, object]]:
    return [(oid, search_period(t, mag, err, config)) for oid, t, mag, err in curves]


_KNOWN_ALIASES = {
    "ra": ("ra", "radeg", "ra_deg", "raj2000", "_raj2000", "ra_icrs"),
    "dec": ("dec", "dedeg", "dec_deg", "dej2000", "_dej2000", "de_icrs"),
    "name": ("name", "id", "oid", "designation", "identifier"),
    "type": ("type", "vartype", "var_type", "class"),
    "period": ("period", "per", "p"),
}


def read_known(path: Path) -> pl.DataFrame:
    """A catalogue of known variables with columns ra, dec, name, type, period."""
    from astropy.table import Table

    if not Path(path).is_file():
        raise InputError(f"{path}: no such file")
    try:
        t = (
            Table.read(path, format="csv")
            if str(path).lower().endswith(".csv")
            else Table.read(path)
        )
    except Exception as exc:  # any reader failure: a corrupt or foreign file
        raise InputError(f"{path}: cannot read catalogue ({type(exc).__name__}: {exc})") from exc
    lower = {c.lower(): c for c in t.colnames}
    cols = {}
    for target, aliases in _KNOWN_ALIASES.items():
        src = next((lower[a] for a in aliases if a in lower), None)
        if src is None and target in ("ra", "dec"):
            raise InputError(f"{path}: no {target} column (expected one of {aliases})")
        cols[target] = None if src is None else np.asarray(t[src])
    n = len(t)
    return pl.DataFrame(
        {
            "ra": cols["ra"].astype(float),
            "dec": cols["dec"].astype(float),
            "name": [str(x) for x in cols["name"]] if cols["name"] is not None else [None] * n,
            "type": [str(x) for x in cols["type"]] if cols["type"] is not None else [None] * n,
            "period": (
                np.asarray(cols["period"], dtype=float)
                if cols["period"] is not None
                else np.full(n, np.nan)
            ),
        }
    )


def _cross_match(cand: pl.DataFrame, known: pl.DataFrame, radius_arcsec: float) -> pl.DataFrame:
    tree = cKDTree(matching.unit_vectors(known["ra"].to_numpy(), known["dec"].to_numpy()))
    idx, sep = matching.nearest_within(
        tree,
        matching.unit_vectors(cand["ra"].to_numpy(), cand["dec"].to_numpy()),
        radius_arcsec / 3600.0,
    )
    hit = idx >= 0
    names, types = known["name"].to_list(), known["type"].to_list()
    periods = known["period"].to_numpy()
    return cand.with_columns(
        pl.Series("known", hit),
        pl.Series("known_name", [names[i] if i >= 0 else None for i in idx], pl.Utf8),
        pl.Series("known_type", [types[i] if i >= 0 else None for i in idx], pl.Utf8),
        pl.Series("known_period", [periods[i] if i >= 0 else None for i in idx], pl.Float64),
        pl.Series("known_sep_arcsec", np.where(hit, sep, np.nan), pl.Float32),
    )


def find_variables(
    store: Store, config: FindConfig | None = None, options: RunnerOptions | None = None
) -> dict:
    """Run the variability search on ``store``; returns summary figures."""
    config = config or FindConfig()
    _check(store)
    known = read_known(config.known) if config.known else None
    stats, curves = compute_statistics(store, config, options)
    score_col = {"std": "score", "iqr": "score_iqr", "inv_eta": "score_eta"}
    cols = [score_col[i] for i in config.indices]
    best = pl.max_horizontal(cols)
    # The index that triggered: the one with the largest score.
    which = pl.concat_list(cols).list.arg_max()
    cand = stats.with_columns(
        best.alias("best_score"),
        which.map_elements(lambda k: config.indices[k], return_dtype=pl.Utf8).alias("best_index"),
    ).filter((pl.col("best_score") > config.threshold) & (pl.col("n") >= config.min_obs))
    objs = store.pl("SELECT object_id, ra, dec, v, bv FROM objects")
    cand = cand.join(objs, on="object_id", how="left").sort("best_score", descending=True)
    cand = _mark_blends(store, cand, stats, config)
    curve = curves["std"]
    mag = cand["det_mag"].to_numpy()
    workers = options.workers if options else 1
    periods = (
        _periods(store, cand["object_id"].to_list(), config, workers) if config.periods else {}
    )

    def per(attr: str) -> list:
        return [getattr(periods[o], attr) if o in periods else None for o in cand["object_id"]]

    out = cand.select(
        "object_id",
        "ra",
        "dec",
        "v",
        "bv",
        "n",
        "mean_mag",
        pl.col("std").alias("scatter"),
        pl.Series("expected_scatter", 10 ** curve.trend(mag), pl.Float32),
        pl.col("best_score").alias("score"),
        pl.col("best_index").alias("index"),
        "iqr",
        "eta",
        "stetson_j",
        "amplitude",
        "time_span",
    ).with_columns(
        pl.Series("period", per("period"), pl.Float64),
        pl.Series("period_power", per("power"), pl.Float32),
        pl.Series("fap", per("fap"), pl.Float64),
        pl.Series("period_amplitude", per("amplitude"), pl.Float32),
        pl.Series("kind", per("kind"), pl.Utf8),
    )
    out = out.with_columns(cand["blended"])
    if known is not None and len(out):
        radius = config.known_radius_arcsec or store.config.match_radius_arcsec
        out = _cross_match(out, known, radius)
    replace_table(store, "varstats", stats.to_arrow(), key="object_id")
    replace_table(store, "noise_curve", _curve_table(curves, config.threshold))
    replace_table(store, "candidates", _arrow(out, schema.CANDIDATES), key="object_id")
    summary = {
        "objects": len(stats),
        "candidates": len(out),
        "periodic": int((out["kind"] == "periodic").sum()) if config.periods and len(out) else 0,
        "known": int(out["known"].sum()) if "known" in out.columns and len(out) else 0,
    }
    _log.info(
        "find-variables: %d objects scored, %d candidates (%d periodic, %d known)",
        summary["objects"],
        summary["candidates"],
        summary["periodic"],
        summary["known"],
    )
    return summary


def pixel_scale_arcsec(store: Store) -> float:
    """Median pixel scale of a few frames, from a linear fit of position against pixels."""
    fids = store.pl("SELECT frame_id FROM frames WHERE status = 'ok' LIMIT 5")["frame_id"]
    # One scan for the five frames (the measurements are partitioned by position, not by frame:
    # a scan per frame cost 1.2 s each at 10^8 measurements).
    rows = store.pl(
        "SELECT frame_id, x, y, ra, dec FROM measurements WHERE list_contains($f, frame_id)",
        {"f": fids.to_list()},
    )
    scales = []
    for _, m in rows.group_by("frame_id"):
        if len(m) < 10:
            continue
        a = np.column_stack([np.ones(len(m)), m["x"].to_numpy(), m["y"].to_numpy()])
        dec0 = np.radians(float(m["dec"].median()))
        ra = (m["ra"].to_numpy() - float(m["ra"].median()) + 180) % 360 - 180
        cx, *_ = np.linalg.lstsq(a, ra * np.cos(dec0), rcond=None)
        cy, *_ = np.linalg.lstsq(a, m["dec"].to_numpy(), rcond=None)
        scales.append(3600 * np.sqrt(abs(cx[1] * cy[2] - cx[2] * cy[1])))
    return float(np.median(scales)) if scales else float("nan")


def _mark_blends(
    store: Store, cand: pl.DataFrame, stats: pl.DataFrame, config: FindConfig
) -> pl.DataFrame:
    """Flag candidates with a brighter object within ``blend_fwhm`` FWHM; drop them unless kept."""
    if not len(cand):
        return cand.with_columns(pl.lit(False).alias("blended"))
    fwhm = store.sql("SELECT median(fwhm) FROM frames WHERE status = 'ok'").column(0)[0].as_py()
    radius = config.blend_fwhm * (fwhm or 0.0) * pixel_scale_arcsec(store)
    if not np.isfinite(radius) or radius <= 0:
        return cand.with_columns(pl.lit(False).alias("blended"))
    # A neighbour's brightness: reconstructed V, else the refcat's V (saturated stars have no
    # good measurement but are the worst neighbours), else its mean magnitude.
    objs = store.pl(
        "SELECT o.object_id, o.ra, o.dec, coalesce(o.v, r.v) AS v FROM objects o "
        "LEFT JOIN refcat r USING (ref_id)"
    ).join(stats.select("object_id", "mean_mag"), on="object_id", how="left")
    mag = objs["v"].cast(pl.Float64).fill_null(objs["mean_mag"]).fill_null(np.inf).to_numpy()
    tree = cKDTree(matching.unit_vectors(objs["ra"].to_numpy(), objs["dec"].to_numpy()))
    near = tree.query_ball_point(
        matching.unit_vectors(cand["ra"].to_numpy(), cand["dec"].to_numpy()),
        matching.chord(radius / 3600.0),
    )
    ids = objs["object_id"].to_numpy()
    own = cand["mean_mag"].to_numpy()
    blended = np.array(
        [
            any(ids[j] != oid and mag[j] < own[i] + 0.5 for j in nb)
            for i, (oid, nb) in enumerate(zip(cand["object_id"].to_numpy(), near, strict=True))
        ],
        dtype=bool,
    )
    cand = cand.with_columns(pl.Series("blended", blended))
    if blended.any():
        _log.info(
            'find-variables: %d candidate(s) with a brighter neighbour within %.0f" %s',
            int(blended.sum()),
            radius,
            "kept" if config.keep_blended else "dropped",
        )
    return cand if config.keep_blended else cand.filter(~pl.col("blended"))


def _curve_table(curves: dict[str, NoiseCurve], threshold: float) -> pa.Table:
    parts = [
        pl.DataFrame(
            {
                "index": [c.index] * c.mag.size,
                "mag": c.mag,
                "log_trend": c.log_trend,
                "log_spread": c.log_spread,
                "threshold": np.full(c.mag.size, threshold),
            }
        )
        for c in curves.values()
    ]
    return pl.concat(parts).to_arrow()


def _arrow(df: pl.DataFrame, target: pa.Schema) -> pa.Table:
    t = df.to_arrow()
    for f in target:
        if f.name not in t.column_names:
            t = t.append_column(f.name, pa.nulls(t.num_rows, f.type))
    return t.select(target.names).cast(target)
