"""``lcdb colours``: statistical reconstruction of each object's V and B−V (seed §3.1).

White-light photometry carries colour information because the colour coefficient C of seed Eq. 1
changes from frame to frame with the atmosphere: for an object, ``instrumental − z0 = V + C·(B−V)``
over its frames, so a weighted straight-line fit against C gives V (intercept) and B−V (slope).
DuckDB computes the weighted sums per object in one streaming aggregation (sql/colours.sql, two
passes for clipping); Python solves the 2x2 systems vectorised and writes the objects table.
Objects with too few points or too little spread of C get null colours and a reason. This is
SysRem with the systematic's source named (seed §3.1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lcdb import healpix, layout, schema, sqlfiles
from lcdb.errors import InputError
from lcdb.runner import RunnerOptions, UnitOutput, object_units, run_job, unit_store
from lcdb.store import Store
from lcdb.tableio import read_parquet, write_parquet
from lcdb.tables import rewrite_files

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ColourConfig:
    """Parameters of the colour fit.

    Parameters
    ----------
    min_points : int
        Fewest good measurements an object needs.
    min_c_spread : float
        Smallest weighted standard deviation of C over an object's frames; below it B−V is not
        constrained (its error would exceed ~ the photometric error / spread).
    floor_mag : float
        Error added in quadrature to each measurement.
    max_err : float
        Measurements with larger errors are not used.
    clip : float
        Second-pass clipping threshold in normalised residuals.
    """

    min_points: int = 10
    min_c_spread: float = 0.01
    floor_mag: float = 0.005
    max_err: float = 0.1
    clip: float = 5.0

    def __post_init__(self) -> None:
        problems = []
        if self.min_points < 3:
            problems.append(f"min_points must be >= 3, got {self.min_points}")
        if self.min_c_spread < 0:
            problems.append(f"min_c_spread must be >= 0, got {self.min_c_spread}")
        if self.floor_mag < 0 or self.max_err <= 0:
            problems.append("floor_mag must be >= 0 and max_err > 0")
        if self.clip <= 1:
            problems.append(f"clip must be > 1, got {self.clip}")
        if problems:
            raise ValueError("; ".join(problems))


def solve(sums: pa.Table, config: ColourConfig) -> dict[str, np.ndarray]:
    """V, B−V, their errors, chi2 and a note per object from the weighted sums."""
    g = {c: sums[c].to_numpy(zero_copy_only=False).astype(float) for c in sums.column_names}
    s, sx, sy, sxx, sxy, syy, n = g["s"], g["sx"], g["sy"], g["sxx"], g["sxy"], g["syy"], g["n"]
    det = s * sxx - sx * sx
    with np.errstate(divide="ignore", invalid="ignore"):
        v = (sxx * sy - sx * sxy) / det
        bv = (s * sxy - sx * sy) / det
        chi2 = (syy - 2 * v * sy - 2 * bv * sxy + v * v * s + 2 * v * bv * sx + bv * bv * sxx) / (
            np.maximum(n - 2, 1)
        )
        scale = np.sqrt(np.maximum(chi2, 1.0))  # errors grow with unexplained scatter
        v_err = np.sqrt(sxx / det) * scale
        bv_err = np.sqrt(s / det) * scale
    note = np.full(n.size, None, dtype=object)
    few = n < config.min_points
    flat = ~few & (g["c_spread"] < config.min_c_spread)
    note[few] = f"fewer than {config.min_points} good points"
    note[flat] = f"spread of C below {config.min_c_spread}"
    bad = few | flat | ~np.isfinite(v) | ~np.isfinite(bv)
    note[bad & (note == None)] = "degenerate fit"  # noqa: E711 (object array)
    for arr in (v, bv, v_err, bv_err, chi2):
        arr[bad] = np.nan
    return {
        "object_id": sums["object_id"].to_numpy(),
        "v": v,
        "v_err": v_err,
        "bv": bv,
        "bv_err": bv_err,
        "n_colour": n.astype(np.int32),
        "n_clipped": g["n_clipped"].astype(np.int32),
        "colour_chi2": chi2,
        "colour_rms": g["rms"],
        "c_spread": g["c_spread"],
        "colour_note": note,
    }


@dataclass(frozen=True)
class ColourJob:
    """The colour fit of the objects owned by a run of partitions (a runner job).

    A unit reads the measurement files that can hold its objects' detections (its partitions and
    their neighbours, restricted to its objects' id range: the files are sorted by object, so only
    a few row groups of each neighbour are decoded), runs the weighted sums of sql/colours.sql (or,
    with ``hold_colour``, sql/magnitudes.sql: V with B−V held, for ``lcdb refine``), solves them
    and rewrites its partitions' objects files. Memory is bounded by ``target_rows`` measurements
    and a partition; a unit's query runs on ``--jobs`` DuckDB threads, and the job resumes after
    an interruption.
    """

    config: ColourConfig
    order: int
    hold_colour: bool = False
    name: str = "colours"
    #: "sql" (sql/colours.sql and sql/magnitudes.sql) or "compiled" (variability.colourfit:
    #: numba kernels read the files; equal results). At 1.56·10^8 measurements the compiled fit
    #: ran at 1.00-1.12x the SQL's speed for 3.5x its peak memory (1.1 GB), and slower at 10^7
    #: (numba's start in a new process): not enough to make it the default.
    method: str = "sql"
    #: Units run one at a time (``in_process``), so they can be large: each costs ~30 ms of query
    #: binding, and 8 M measurements keep the peak near 0.31-0.48 GB at 10^8 with the SQL,
    #: 1.1 GB compiled (it holds the unit's points for the second pass) (bench/pipeline.py).
    target_rows: int = 8_000_000
    #: One query per unit, which DuckDB runs on all the workers' threads (lcdb.runner).
    in_process: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if self.method not in ("compiled", "sql"):
            raise ValueError(f"method must be 'compiled' or 'sql', got {self.method!r}")

    def units(self, store: Store) -> list[tuple[str, dict]]:
        z0_order = store.sql("SELECT max(z0_order) FROM frames").column(0)[0].as_py() or 0
        entries = store.manifest.entries("objects")
        out = object_units(store, self.target_rows)
        for _key, payload in out:
            payload["z0_order"] = z0_order
            payload["objects"] = {
                p: [e["path"] for e in entries if e["pixel"] == p] for p in payload["pixels"]
            }
        return out

    def run_unit(self, root: str, key: str, payload: dict) -> UnitOutput:
        rootp = Path(root)
        paths = [p for group in payload["objects"].values() for p in group]
        objs = schema.conform(read_parquet([rootp / p for p in paths]), "objects")
        params = {
            "lo": payload["lo"],
            "hi": payload["hi"],
            "z0_order": payload["z0_order"],
            "floor": self.config.floor_mag,
            "max_err": self.config.max_err,
            "clip": self.config.clip,
        }
        files = payload["files"]
        if not files:
            fit = None
        elif self.method == "compiled":
            fit = self._compiled_fit(unit_store(root), files, payload, objs)
        elif self.hold_colour:
            objects = [str(rootp / p) for p in paths]
            sums = unit_store(root).sql(
                sqlfiles.load("magnitudes"), {**params, "files": files, "objects": objects}
            )
            fit = solve_magnitudes(sums, objs, self.config)
        else:
            sums = unit_store(root).sql(sqlfiles.load("colours"), {**params, "files": files})
            fit = solve(sums, self.config)
        new = apply_fit(objs, fit, keep_missing=self.hold_colour)
        out = UnitOutput(key=key, stats={"fitted": float(np.isfinite(_floats(new["v"])).sum())})
        pix = healpix.coarsen(new["object_id"].to_numpy(), self.order)
        for pixel in payload["pixels"]:
            part = new.filter(pa.array(pix == pixel))
            path = layout.new_partition_file(rootp, "objects", pixel, "obj")
            write_parquet(part, path)
            out.add.append(("objects", str(path), part.num_rows, {}))
        out.remove.extend(("objects", p) for p in paths)
        return out

    def _compiled_fit(self, store: Store, files: list[str], payload: dict, objs: pa.Table) -> dict:
        from variability import colourfit  # numba: 0.4 s to import, only for this method

        order = np.argsort(objs["object_id"].to_numpy())
        uid = objs["object_id"].to_numpy()[order]
        lo, hi, cfg = payload["lo"], payload["hi"], self.config
        # the unit's thread budget: the runner pins the store on --jobs DuckDB threads
        threads = int(store.sql("SELECT current_setting('threads')").column(0)[0].as_py())
        if self.hold_colour:
            bv = _floats(objs["bv"])[order]
            sums = colourfit.magnitude_sums(store, files, lo, hi, uid, bv, cfg, threads)
            return solve_magnitudes(sums, objs, cfg)
        return solve(colourfit.colour_sums(store, files, lo, hi, uid, cfg, threads), cfg)


def reconstruct_colours(
    store: Store, config: ColourConfig | None = None, options: RunnerOptions | None = None
) -> dict:
    """Fit V and B−V of every object and write them into ``objects``; returns summary figures."""
    config = config or ColourConfig()
    if store.count("objects") == 0:
        raise InputError(f"{store.root}: no objects yet (run `lcdb cluster` first)")
    n_cal = store.sql("SELECT count(*) FROM frames WHERE color_coeff IS NOT NULL").column(0)
    if n_cal[0].as_py() == 0:
        raise InputError(f"{store.root}: no calibrated frame (run `lcdb calibrate` first)")
    run_job(store, ColourJob(config, store.config.order), options or RunnerOptions(progress=False))
    row = store.sql(
        "SELECT count(*), count(bv), median(bv_err) FILTER (WHERE bv IS NOT NULL) FROM objects"
    ).to_pylist()[0]
    n, fitted, med = row.values()
    out = {"objects": n, "fitted": fitted, "median_bv_err": float("nan") if med is None else med}
    _log.info(
        "colours: V and B-V for %d of %d objects (median B-V error %.3f)",
        out["fitted"],
        out["objects"],
        out["median_bv_err"],
    )
    return out


def refit_magnitudes(
    store: Store, config: ColourConfig | None = None, options: RunnerOptions | None = None
) -> dict:
    """Recompute V of every object with a colour, holding B−V fixed (used by ``lcdb refine``).

    Writes ``v``, ``v_err``, ``n_colour``, ``colour_chi2``, ``colour_rms``, ``n_clipped``; keeps
    ``bv``, ``bv_err`` and ``c_spread``. Every run starts afresh (the magnitudes follow the frame
    models of the calibration just made).
    """
    config = config or ColourConfig()
    opts = options or RunnerOptions(progress=False)
    opts = RunnerOptions(opts.workers, True, opts.progress, opts.commit_every)
    job = ColourJob(config, store.config.order, hold_colour=True, name="magnitudes")
    summary = run_job(store, job, opts)
    return {"objects": int(summary.stats.get("fitted", 0))}


def solve_magnitudes(sums: pa.Table, objs: pa.Table, config: ColourConfig) -> dict[str, np.ndarray]:
    """V per object from the sums of sql/magnitudes.sql, with B−V as it stands in ``objs``."""
    oid = objs["object_id"].to_numpy()
    order = np.argsort(oid)
    res_id = sums["object_id"].to_numpy()
    src = order[np.clip(np.searchsorted(oid[order], res_id), 0, max(order.size - 1, 0))]
    n = sums["n"].to_numpy()
    chi2 = _floats(sums["chi2"])
    v = _floats(sums["v"]).copy()
    ok = n >= config.min_points
    v[~ok] = np.nan
    note = np.where(ok, None, f"fewer than {config.min_points} good points").astype(object)
    return {
        "object_id": res_id,
        "v": v,
        "v_err": _floats(sums["v_err_stat"]) * np.sqrt(np.maximum(chi2, 1.0)),
        "bv": np.where(ok, _floats(objs["bv"])[src], np.nan),
        "bv_err": np.where(ok, _floats(objs["bv_err"])[src], np.nan),
        "n_colour": n.astype(np.int32),
        "n_clipped": sums["n_clipped"].to_numpy().astype(np.int32),
        "colour_chi2": chi2,
        "colour_rms": _floats(sums["rms"]),
        "c_spread": _floats(objs["c_spread"])[src],
        "colour_note": note,
    }


_FIT_COLUMNS = (
    "v",
    "v_err",
    "bv",
    "bv_err",
    "n_colour",
    "n_clipped",
    "colour_chi2",
    "colour_rms",
    "c_spread",
    "colour_note",
)


def _floats(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A numeric column as float64 with NaN for nulls."""
    return pc.fill_null(col.cast(pa.float64()), np.nan).to_numpy()


def apply_fit(objs: pa.Table, fit: dict[str, np.ndarray] | None, keep_missing: bool) -> pa.Table:
    """``objs`` with the fitted columns set from ``fit`` (rows matched by object id).

    Objects absent from ``fit`` get nulls and the note "no good measurements", or keep their
    values with ``keep_missing``.
    """
    oid = objs["object_id"].to_numpy()
    ids = fit["object_id"] if fit is not None else np.zeros(0, np.int64)
    order = np.argsort(ids)
    pos = np.clip(np.searchsorted(ids[order], oid), 0, max(ids.size - 1, 0))
    found = ids[order][pos] == oid if ids.size else np.zeros(oid.size, bool)
    rows = order[pos] if ids.size else np.zeros(oid.size, np.int64)
    for col in _FIT_COLUMNS:
        field = schema.OBJECTS.field(col)
        if col == "colour_note":
            old = np.asarray(objs[col].to_pylist(), dtype=object)
            prev = old if keep_missing else np.full(oid.size, "no good measurements", object)
            new = fit[col][rows] if fit is not None and ids.size else prev
            arr = pa.array(np.where(found, new, prev), pa.string())
        else:
            prev = _floats(objs[col]) if keep_missing else np.full(oid.size, np.nan)
            new = fit[col][rows].astype(float) if fit is not None and ids.size else prev
            vals = np.where(found, new, prev)
            arr = pa.array(vals, mask=~np.isfinite(vals)).cast(field.type)
        objs = objs.set_column(objs.schema.get_field_index(col), col, arr)
    return objs


def set_reference(store: Store, reference_ids: np.ndarray) -> None:
    """Flag the objects whose ids are given as reference stars (all others: false)."""
    ref = pa.array(np.unique(reference_ids), pa.int64())

    def flag(objs: pa.Table) -> pa.Table:
        is_ref = pc.is_in(objs["object_id"], value_set=ref)
        return objs.set_column(objs.schema.get_field_index("reference"), "reference", is_ref)

    rewrite_files(store, "objects", flag)
