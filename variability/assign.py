"""Steps 2 and 3 of ``lcdb cluster`` (variability/cluster.py): every detection to its nearest
object, each partition rewritten sorted by (object, time) with its per-object partial sums; then
n_obs and mean positions from those sums."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lcdb import layout, schema, sqlfiles
from lcdb.errors import StoreError
from lcdb.runner import UnitOutput
from lcdb.store import Store
from lcdb.tableio import read_parquet, write_parquet
from lcdb.tables import rewrite_files
from variability import matching
from variability.unit_inputs import (
    frame_index,
    layout_relpath,
    layout_root,
    payloads,
    read_cached,
    read_refcat,
)

if TYPE_CHECKING:
    from variability.cluster import ClusterConfig

_log = logging.getLogger(__name__)


#: The scratch directory (lcdb.layout.scratch_dir) of the assignment's partial sums.
SUMMARY_SCRATCH = "cluster-summary"


def partial_path(root: Path | str, measurement_file: str | Path) -> Path:
    """The partial sums the assignment wrote for the measurement file it rewrote (file names
    are unique across partitions: lcdb.layout.new_partition_file)."""
    return layout.scratch_dir(root, SUMMARY_SCRATCH) / f"{Path(measurement_file).stem}.parquet"


@dataclass(frozen=True)
class AssignJob:
    """Step 2: assign each detection of a partition to an object; rewrite the partition."""

    config: ClusterConfig
    name: str = "cluster-assign"

    def units(self, store: Store) -> list[tuple[str, Any]]:
        return payloads(store)

    def run_unit(self, root: str, key: str, payload: dict) -> UnitOutput:
        cfg = self.config
        data = read_parquet(payload["own"])
        frame = data.column("frame_id").to_numpy()
        frames = frame_index(tuple(payload["frames"]))
        year = frames.lookup(frame, "years")
        current = data.column("object_id").combine_chunks()
        obj_id = (
            np.full(data.num_rows, -1, np.int64)
            if cfg.rebuild
            else pc.fill_null(current, -1).to_numpy(zero_copy_only=False).copy()
        )
        objects = (
            read_cached(payload["objects"], ("object_id", "ra", "dec", "ref_id"))
            if payload["objects"]
            else schema.empty("objects")
        )
        cat = _object_motion(objects.sort_by("object_id"), read_refcat(payload["refcat"]))
        # Objects are ranked by id: ``rank`` orders the rewritten partition. Detections assigned
        # by an earlier run keep their object (it may lie beyond the neighbours: ranked too).
        claimed = obj_id >= 0
        space = np.union1d(cat["object_id"], obj_id[claimed]) if claimed.any() else cat["object_id"]
        rank = np.full(data.num_rows, space.size, np.int64)
        rank[claimed] = np.searchsorted(space, obj_id[claimed])
        sep = np.where(claimed, -1.0, np.inf)  # earlier assignments win within their frame
        todo = np.flatnonzero(~claimed)
        stats = {"assigned": 0.0, "duplicates": 0.0, "unmatched": float(todo.size)}
        if todo.size and cat["object_id"].size:
            idx, sep[todo] = matching.nearest_moving(
                data.column("ra").to_numpy()[todo],
                data.column("dec").to_numpy()[todo],
                year[todo],
                cat,
                cfg.radius_deg,
                index29=data.column("healpix_29").to_numpy()[todo],
            )
            found = idx >= 0
            rank[todo[found]] = np.searchsorted(space, cat["object_id"][idx[found]])
            stats["unmatched"] = float((~found).sum())
        frame_rank = frames.lookup(frame, "ranks")
        if (frame_rank < 0).any():
            unknown = np.unique(frame[frame_rank < 0])[:5].tolist()
            raise StoreError(
                f"{payload['own'][0]}: frame_id {unknown} not in the frames table (damaged store)"
            )
        order, keep = matching.order_by_object(rank, frame_rank, sep, space.size, frames.ids.size)
        if (claimed & ~keep).any():  # two earlier assignments in one frame: both stay (rare)
            keep |= claimed
            order = np.lexsort((frame_rank, np.where(keep, rank, space.size)))
        if todo.size:
            stats["assigned"] = float(keep[todo].sum())
            stats["duplicates"] = float(todo.size - stats["unmatched"] - stats["assigned"])
        if space.size:
            obj_id = np.where(keep, space[np.minimum(rank, space.size - 1)], -1)
        col = pa.array(obj_id, pa.int64(), mask=obj_id < 0)
        data = data.set_column(data.schema.get_field_index("object_id"), "object_id", col)
        out = UnitOutput(key=key, stats=stats)
        root_path = layout_root(root)
        for path in payload["own"]:
            out.remove.append(("measurements", str(layout_relpath(root_path, path))))
        new = layout.new_partition_file(root_path, "measurements", payload["pixel"], "k")
        write_parquet(data, new, order=order)  # sorted by (object, time), a slice at a time
        # step 3's sums, from the rows in hand (a scan of the store cost 5% of the clustering)
        sums = _partial_sums(obj_id, order, data["ra"].to_numpy(), data["dec"].to_numpy())
        write_parquet(sums, partial_path(root, new))
        extra = {"fmin": int(frame.min()), "fmax": int(frame.max()), "sorted": "object"}
        out.add.append(("measurements", str(new), data.num_rows, extra))
        return out


def _object_motion(objects: pa.Table, refcat: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Object positions with the proper motion of their refcat star (zero for the others)."""
    n = objects.num_rows
    ref = pc.fill_null(objects["ref_id"], -1).to_numpy()
    pmra, pmdec, epoch = np.zeros(n), np.zeros(n), np.full(n, 2000.0)
    ra, dec = objects["ra"].to_numpy().copy(), objects["dec"].to_numpy().copy()
    if refcat["ref_id"].size:
        order = np.argsort(refcat["ref_id"])
        pos = np.clip(np.searchsorted(refcat["ref_id"][order], ref), 0, order.size - 1)
        hit = (ref >= 0) & (refcat["ref_id"][order][pos] == ref)
        src = order[pos[hit]]
        pmra[hit] = np.nan_to_num(refcat["pmra"][src])
        pmdec[hit] = np.nan_to_num(refcat["pmdec"][src])
        epoch[hit] = refcat["epoch"][src]
        ra[hit], dec[hit] = refcat["ra"][src], refcat["dec"][src]
    return {
        "object_id": objects["object_id"].to_numpy(),
        "ra": ra,
        "dec": dec,
        "pmra": pmra,
        "pmdec": pmdec,
        "epoch": epoch,
    }


def _partial_sums(
    obj_id: np.ndarray, order: np.ndarray, ra: np.ndarray, dec: np.ndarray
) -> pa.Table:
    """Per object of a rewritten partition's assigned rows, the sums that
    sql/object_positions_partial.sql combines across partitions."""
    rows = order[: int((obj_id >= 0).sum())]  # the assigned rows come first, by object
    ids = obj_id[rows]
    if ids.size and np.any(ids[1:] < ids[:-1]):
        rows = rows[np.argsort(ids, kind="stable")]  # not expected: order_by_object sorts them
        ids = obj_id[rows]
    r, d = ra[rows], dec[rows]
    start = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if ids.size else np.zeros(0, int)
    polar = np.abs(d) > 80.0
    u = np.zeros((ids.size, 3))
    if polar.any():
        u[polar] = matching.unit_vectors(r[polar], d[polar])

    def per_object(v: np.ndarray, ufunc: np.ufunc = np.add) -> np.ndarray:
        return ufunc.reduceat(v, start) if ids.size else np.zeros(0, v.dtype)

    return pa.table(
        {
            "object_id": pa.array(ids[start], pa.int64()),
            "n": pa.array(np.diff(np.r_[start, ids.size]), pa.int64()),
            "s_ra": per_object(r),
            "s_dec": per_object(d),
            "ra_min": per_object(r, np.minimum),
            "ra_max": per_object(r, np.maximum),
            "s_ra_w": per_object(np.where(r > 180, r - 360, r)),
            "ux": per_object(u[:, 0]),
            "uy": per_object(u[:, 1]),
            "uz": per_object(u[:, 2]),
            "n_polar": per_object(polar.astype(np.int64)),
        }
    )


def partial_files(store: Store) -> list[str] | None:
    """The partial sums of every live measurement file, or None if one lacks them (its
    partition was rewritten by something else than this run's assignment)."""
    paths = [partial_path(store.root, f) for f in store.files("measurements")]
    missing = sum(not p.exists() for p in paths)
    if missing:
        _log.info("cluster summary: %d file(s) without partial sums; scanning the store", missing)
        return None
    return [str(p) for p in paths]


def summarise_objects(store: Store, partials: list[str] | None = None) -> int:
    """Step 3: n_obs and mean positions from the assigned measurements; drop empty objects.

    From the assignment's ``partials`` (sql/object_positions_partial.sql) where given, else by a
    scan of every measurement (sql/object_positions.sql: the obviously correct version they are
    tested against). Mean positions are wrap-aware (:func:`_mean_positions`).
    """
    if partials:
        stats = store.sql(sqlfiles.load("object_positions_partial"), {"files": partials})
    else:
        stats = store.sql(sqlfiles.load("object_positions"))
    counts = {k: i for i, k in enumerate(stats["object_id"].to_pylist())}
    mean_ra, mean_dec = _mean_positions(stats)

    def update(objs: pa.Table) -> pa.Table:
        rows = np.array([counts.get(k, -1) for k in objs["object_id"].to_pylist()], np.int64)
        keep = rows >= 0
        objs = objs.filter(pa.array(keep))
        rows = rows[keep]
        free = pc.is_null(objs["ref_id"]).to_numpy(zero_copy_only=False)
        ra = np.where(free, mean_ra[rows], objs["ra"].to_numpy())
        dec = np.where(free, mean_dec[rows], objs["dec"].to_numpy())
        n_obs = pa.array(stats["n"].to_numpy()[rows], pa.int32())
        for name, col in (("n_obs", n_obs), ("ra", pa.array(ra)), ("dec", pa.array(dec))):
            objs = objs.set_column(objs.schema.get_field_index(name), name, col)
        return objs

    rewrite_files(store, "objects", update)
    return store.count("objects")


def _mean_positions(stats: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Mean ra, dec per row of sql/object_positions.sql: the plain means, the mean of ra shifted
    to -180..180 for objects spanning over 180 deg of ra (straddling 0/360), the direction of
    the summed unit vectors for objects whose rows all lie within 10 deg of a pole."""
    col = {c: pc.fill_null(stats[c], np.nan).to_numpy() for c in ("ra_mean", "dec_mean", "ra_span")}
    ra, dec = col["ra_mean"].copy(), col["dec_mean"].copy()
    wrapped = col["ra_span"] > 180
    ra[wrapped] = pc.fill_null(stats["ra_w"], np.nan).to_numpy()[wrapped] % 360.0
    u = [pc.fill_null(stats[c], np.nan).to_numpy() for c in ("ux", "uy", "uz")]
    polar = np.isfinite(u[0]) & (stats["n_polar"].to_numpy() == stats["n"].to_numpy())
    ra[polar], dec[polar] = matching.to_radec(np.column_stack([c[polar] for c in u]))
    return ra, dec
