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

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lcdb import schema, sqlfiles
from lcdb.errors import InputError
from lcdb.store import Store
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


def reconstruct_colours(store: Store, config: ColourConfig | None = None) -> dict:
    """Fit V and B−V of every object and write them into ``objects``; returns summary figures."""
    config = config or ColourConfig()
    if store.count("objects") == 0:
        raise InputError(f"{store.root}: no objects yet (run `lcdb cluster` first)")
    n_cal = store.sql("SELECT count(*) FROM frames WHERE color_coeff IS NOT NULL").column(0)
    if n_cal[0].as_py() == 0:
        raise InputError(f"{store.root}: no calibrated frame (run `lcdb calibrate` first)")
    sums = store.sql(
        sqlfiles.load("colours"),
        {"floor": config.floor_mag, "max_err": config.max_err, "clip": config.clip},
    )
    fit = solve(sums, config)
    _write(store, fit)
    ok = np.isfinite(fit["bv"])
    out = {
        "objects": store.count("objects"),
        "fitted": int(ok.sum()),
        "median_bv_err": float(np.median(fit["bv_err"][ok])) if ok.any() else float("nan"),
    }
    _log.info(
        "colours: V and B-V for %d of %d objects (median B-V error %.3f)",
        out["fitted"],
        out["objects"],
        out["median_bv_err"],
    )
    return out


def refit_magnitudes(store: Store, config: ColourConfig | None = None) -> dict:
    """Recompute V of every object with a colour, holding B−V fixed (used by ``lcdb refine``).

    Writes ``v``, ``v_err``, ``n_colour``, ``colour_chi2``, ``colour_rms``; keeps ``bv``.
    """
    config = config or ColourConfig()
    res = store.sql(
        sqlfiles.load("magnitudes"),
        {"floor": config.floor_mag, "max_err": config.max_err, "clip": config.clip},
    )
    current = store.sql(
        "SELECT object_id, bv, bv_err, c_spread, colour_note FROM objects WHERE bv IS NOT NULL"
    )
    cur = {
        k: current[k].to_numpy(zero_copy_only=False)
        for k in ("object_id", "bv", "bv_err", "c_spread")
    }
    order = np.argsort(cur["object_id"])
    pos = np.searchsorted(cur["object_id"][order], res["object_id"].to_numpy())
    src = order[np.clip(pos, 0, max(order.size - 1, 0))]
    n = res["n"].to_numpy()
    chi2 = res["chi2"].to_numpy()
    v = res["v"].to_numpy().copy()
    ok = n >= config.min_points
    v[~ok] = np.nan
    note = np.where(ok, None, f"fewer than {config.min_points} good points").astype(object)
    fit = {
        "object_id": res["object_id"].to_numpy(),
        "v": v,
        "v_err": res["v_err_stat"].to_numpy() * np.sqrt(np.maximum(chi2, 1.0)),
        "bv": np.where(ok, cur["bv"][src], np.nan),
        "bv_err": np.where(ok, cur["bv_err"][src], np.nan),
        "n_colour": n.astype(np.int32),
        "n_clipped": res["n_clipped"].to_numpy().astype(np.int32),
        "colour_chi2": chi2,
        "colour_rms": res["rms"].to_numpy(),
        "c_spread": cur["c_spread"][src],
        "colour_note": note,
    }
    _write(store, fit, keep_missing=True)
    return {"objects": int(ok.sum())}


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


def _write(store: Store, fit: dict[str, np.ndarray], keep_missing: bool = False) -> None:
    """Rewrite every objects file with the fitted columns.

    Objects absent from ``fit`` get nulls (and a note), or keep their values with
    ``keep_missing``.
    """
    ids = fit["object_id"]
    order = np.argsort(ids)
    sorted_ids = ids[order]

    def update(objs: pa.Table) -> pa.Table:
        oid = objs["object_id"].to_numpy()
        if sorted_ids.size:
            pos = np.clip(np.searchsorted(sorted_ids, oid), 0, sorted_ids.size - 1)
            found = sorted_ids[pos] == oid
            rows = order[pos]
        else:
            found = np.zeros(oid.size, bool)
            rows = np.zeros(oid.size, np.int64)
        for col in _FIT_COLUMNS:
            field = schema.OBJECTS.field(col)
            old = objs[col].to_pylist() if keep_missing else None
            if col == "colour_note":
                missing = "no good measurements"
                vals = [
                    fit[col][r] if f else (old[i] if old is not None else missing)
                    for i, (r, f) in enumerate(zip(rows, found, strict=True))
                ]
                arr = pa.array(vals, pa.string())
            else:
                new = fit[col][rows].astype(float) if sorted_ids.size else np.zeros(oid.size)
                if old is not None:
                    prev = np.array([np.nan if x is None else x for x in old], float)
                else:
                    prev = np.full(oid.size, np.nan)
                vals = np.where(found, new, prev)
                arr = pa.array(vals, mask=~np.isfinite(vals)).cast(field.type)
            objs = objs.set_column(objs.schema.get_field_index(col), col, arr)
        return objs

    rewrite_files(store, "objects", update)


def set_reference(store: Store, reference_ids: np.ndarray) -> None:
    """Flag the objects whose ids are given as reference stars (all others: false)."""
    ref = pa.array(np.unique(reference_ids), pa.int64())

    def flag(objs: pa.Table) -> pa.Table:
        is_ref = pc.is_in(objs["object_id"], value_set=ref)
        return objs.set_column(objs.schema.get_field_index("reference"), "reference", is_ref)

    rewrite_files(store, "objects", flag)
