"""``lcdb cluster``: group measurements into objects, partition by partition.

Three steps, each consistent across partition borders by construction (before them, each
partition writes once the rows that lie in its neighbours' margins: variability/margins.py):

1. **Objects** (a runner job, one unit per partition). The unit reads its partition's detections
   plus a margin of its neighbours' (3 match radii wide), then
   (a) keeps existing objects (incremental clustering: frames ingested later join them),
   (b) seeds objects from reference-catalogue stars that some detection matches at its own epoch
       (proper motion propagated), and
   (c) clusters the remaining detections: the frame holding most of them seeds one object per
       detection, every remaining detection within the match radius of a seed joins it, and the
       next frames (1, 2, 4 ... per round) seed the rest; seeds move to their members' centroid.
   It keeps only the objects whose position lies in its own partition: each object is owned by
   exactly one partition, and both sides of a border see the same detections, so they agree.
2. **Assignment** (a runner job per partition; variability/assign.py, as step 3). Each
   detection of the partition goes to the nearest object (of the partition or a neighbour)
   within the match radius at its epoch; a frame contributes at most one detection per object —
   the closest; the others stay unassigned and are counted. The partition is rewritten sorted
   by (object_id, mjd).
3. **Summary**. ``n_obs`` and the mean position of objects not tied to the refcat are combined in
   DuckDB from the per-object partial sums each assignment unit wrote for its partition (a scan
   of the whole store, the fallback, cost 5% of the clustering) and the objects table is
   rewritten.

Object ids are the order-29 HEALPix index of the object's defining position (the refcat position
for refcat stars, the first centroid for the others): unique, deterministic for the same data, and
``object_id >> 2 (29 - order)`` is the owning partition.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.spatial import cKDTree

from lcdb import healpix, layout, schema
from lcdb.runner import (
    JobSummary,
    RunnerOptions,
    UnitOutput,
    process_pool,
    run_job,
    thread_pool,
)
from lcdb.store import Store
from lcdb.tableio import read_parquet, row_group_ranges, write_parquet
from variability import margins, matching
from variability.assign import SUMMARY_SCRATCH, AssignJob, partial_files, summarise_objects
from variability.unit_inputs import epochs, layout_root, payloads, read_refcat

_log = logging.getLogger(__name__)

_DET_COLUMNS = margins.DET_COLUMNS

#: Up to this many workers, the units run on threads of this process instead of worker
#: processes. They spend ~80% of their time in pyarrow, numpy, numba and scipy code that releases
#: the GIL (two threads run the objects step 1.65x faster than one, two processes 1.95x), and
#: threads save the workers' start: ~1.1 s of imports on one of two cores, as long as the whole
#: margin step at 10^7 measurements. With 2 workers, alternating fresh runs of the same hour:
#: 10^7 in 9.9 s on threads against 10.8 s on processes (means of 10 runs each), 10^8 in 85.9 s
#: against 92.5 s. The GIL's share would cap 8 threads near 3.3x, so more workers get processes.
THREAD_WORKERS = 2


@dataclass(frozen=True)
class ClusterConfig:
    """Parameters of a clustering run.

    Parameters
    ----------
    radius_arcsec : float
        Match radius (the store's ``match_radius_arcsec`` by default).
    order : int
        The store's partition order.
    rebuild : bool
        Forget existing objects and assignments and cluster everything again.
    margin_radii : float
        Width of the margin read from neighbouring partitions, in match radii.
    """

    radius_arcsec: float
    order: int
    rebuild: bool = False
    margin_radii: float = 3.0

    def __post_init__(self) -> None:
        problems = []
        if not self.radius_arcsec > 0:
            problems.append(f"match radius must be > 0 arcsec, got {self.radius_arcsec}")
        if not self.margin_radii >= 2:
            problems.append(f"margin_radii must be >= 2, got {self.margin_radii}")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def radius_deg(self) -> float:
        return self.radius_arcsec / 3600.0


def _read_detections(root: str, payload: dict, config: ClusterConfig) -> dict[str, np.ndarray]:
    """The partition's own detections and the margin rows of its neighbours (``own`` flag)."""
    own = read_parquet(payload["own"], columns=_DET_COLUMNS)
    parts = [own]
    neighbours = {q: f for q, f in payload["neighbours"].items() if f}
    width = config.margin_radii * config.radius_deg
    cached, missing = margins.read_margin(root, neighbours, payload["pixel"], width)
    parts.extend(cached)
    if missing:  # no margin file cut from these neighbours' current files
        ring, m = healpix.margin_pixels(payload["pixel"], config.order, width)
        parts.extend(_read_margin([f for files in missing.values() for f in files], ring, m))
    det = {
        c: np.concatenate([p.column(c).to_numpy(zero_copy_only=False) for p in parts])
        for c in ("frame_id", "healpix_29", "ra", "dec")
    }
    obj = pa.concat_arrays([p.column("object_id").combine_chunks() for p in parts])
    det["object_id"] = (
        np.full(len(obj), -1, np.int64)
        if config.rebuild
        else pc.fill_null(obj, -1).to_numpy(zero_copy_only=False)
    )
    det["own"] = np.zeros(det["ra"].size, bool)
    det["own"][: own.num_rows] = True
    det["year"] = epochs(payload["frames"], det["frame_id"])
    return det


def _read_margin(files: list[str], ring: np.ndarray, m: int) -> list[pa.Table]:
    """The rows of ``files`` whose order-``m`` pixel is in ``ring`` (sorted).

    Row groups whose ``healpix_29`` range holds no ring pixel are skipped unread: files are sorted
    by position (ingest) or by object (whose id is its position), so a margin a few match radii
    wide touches a few row groups of each neighbour (reading them whole cost 8x the unit's own
    detections).
    """
    shift = 2 * (29 - m)
    out = []
    for path in files:
        pf = pq.ParquetFile(path)
        groups = []
        for g, span in enumerate(row_group_ranges(pf.metadata, "healpix_29")):
            if span is not None:
                i = int(np.searchsorted(ring, span[0] >> shift))
                if i >= ring.size or ring[i] > span[1] >> shift:
                    continue  # no ring pixel within the group's index range
            groups.append(g)
        if not groups:
            continue
        t = pf.read_row_groups(groups, columns=_DET_COLUMNS, use_threads=False)  # tableio.read_file
        coarse = t.column("healpix_29").to_numpy() >> shift
        pos = np.clip(np.searchsorted(ring, coarse), 0, ring.size - 1)
        out.append(t.filter(pa.array(ring[pos] == coarse)))  # ring is sorted: binary search
    return out


def _read_objects(files: list[str], rebuild: bool) -> pa.Table:
    if rebuild or not files:
        return schema.empty("objects")
    return schema.conform(read_parquet(files), "objects")


def _free_clusters(
    ra: np.ndarray, dec: np.ndarray, index29: np.ndarray, frame: np.ndarray, radius_deg: float
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster detections without a catalogue counterpart; returns centroid ra, dec.

    1. Frames are ranked by their number of detections, richest first (a frame holds at most one
       detection of a star, so its detections are distinct objects).
    2. In rounds of 1, 2, 4 ... frames, the round's detections not yet within the radius of a seed
       become seeds, except those within the radius of a detection of a better-ranked frame of
       the round (those wait for the next pass of the round); every remaining detection within
       the radius of a new seed joins the nearest.
    3. Seeds move to the centroid of their members (the final assignment, step 2 of
       :func:`cluster`, takes the nearest object, so a second pass here would change little).
    """
    n = frame.size
    if n == 0:
        return np.empty(0), np.empty(0)
    r_chord = matching.chord(radius_deg)
    frames, inv, counts = _frame_groups(frame)
    by_rank = np.lexsort((frames, -counts))
    rank = np.empty(frames.size, np.int64)
    rank[by_rank] = np.arange(frames.size)
    det_rank = rank[inv]
    # detections grouped by frame, richest first (a 16-bit key sorts by radix, 10x faster)
    key = det_rank.astype(np.uint16) if frames.size < 2**16 else det_rank
    order = np.argsort(key, kind="stable")
    bounds = np.r_[0, np.cumsum(counts[by_rank])]
    member = np.full(n, -1, np.int64)
    seeds: list[np.ndarray] = []
    n_seeds = 0
    first, per_round = 0, 1
    while first < frames.size:
        last = min(first + per_round, frames.size)
        pending = order[bounds[first] : bounds[last]]
        pending = pending[member[pending] < 0]
        while pending.size:
            keep = np.ones(pending.size, bool)
            if last - first > 1:
                xyz = matching.unit_vectors(ra[pending], dec[pending])
                pairs = cKDTree(xyz).query_pairs(r_chord, output_type="ndarray")
                a, b = pairs[:, 0], pairs[:, 1]
                ra_, rb = det_rank[pending[a]], det_rank[pending[b]]
                keep[b[ra_ < rb]] = False
                keep[a[rb < ra_]] = False
            new = pending[keep]
            seeds.append(new)
            rest = np.flatnonzero(member < 0)  # in file order: sorted by position, mostly
            j, _ = matching.nearest_in_cells(
                index29[rest], ra[rest], dec[rest], ra[new], dec[new], radius_deg
            )
            hit = j >= 0
            member[rest[hit]] = n_seeds + j[hit]
            n_seeds += new.size
            pending = pending[member[pending] < 0]
        first, per_round = last, 2 * per_round
    return _centroids(ra, dec, member, np.concatenate(seeds))


def _frame_groups(frame: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(frame, return_inverse=True, return_counts=True)``, by counting when the ids
    are dense (a sort of every detection cost 20% of the clustering step)."""
    f0 = int(frame.min())
    span = int(frame.max()) - f0 + 1
    if span > 4 * frame.size + 1024:
        return np.unique(frame, return_inverse=True, return_counts=True)
    shifted = frame - f0
    counts = np.bincount(shifted, minlength=span)
    present = np.flatnonzero(counts)
    slot = np.full(span, -1, np.int64)
    slot[present] = np.arange(present.size)
    return present + f0, slot[shifted], counts[present]


def _centroids(
    ra: np.ndarray, dec: np.ndarray, member: np.ndarray, seed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean position of each seed's members (seeds without members dropped).

    Offsets from the seed are averaged in ra and dec: equal to the mean direction of the unit
    vectors to second order in the cluster's size (< 1e-7" for 30" clusters), with no
    trigonometry per detection; clusters within 10 deg of a pole, where an offset in ra is no
    longer small, average unit vectors instead.
    """
    ok = member >= 0
    m = member[ok]
    s_ra, s_dec = ra[seed], dec[seed]
    d_ra = matching.wrap180(ra[ok] - s_ra[m])
    d_dec = dec[ok] - s_dec[m]
    n = np.bincount(m, minlength=seed.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        c_ra = (s_ra + np.bincount(m, d_ra, seed.size) / n) % 360.0
        c_dec = s_dec + np.bincount(m, d_dec, seed.size) / n
    polar = np.flatnonzero(np.abs(s_dec) > 80.0)
    if polar.size:
        rows = np.flatnonzero(ok)[np.isin(m, polar)]
        xyz = matching.unit_vectors(ra[rows], dec[rows])
        sums = np.column_stack(
            [np.bincount(member[rows], weights=xyz[:, k], minlength=seed.size) for k in range(3)]
        )[polar]
        c_ra[polar], c_dec[polar] = matching.to_radec(sums)
    filled = n > 0
    return c_ra[filled], c_dec[filled]


def _unique_ids(wanted: np.ndarray, taken: set[int]) -> np.ndarray:
    """Make ids unique (deterministically bumping the rare collisions)."""
    out = wanted.copy()
    seen = set(taken)
    for i, v in enumerate(out.tolist()):
        while v in seen:
            v += 1
        out[i] = v
        seen.add(v)
    return out


@dataclass(frozen=True)
class ObjectsJob:
    """Step 1: decide the objects owned by each partition."""

    config: ClusterConfig
    name: str = "cluster-objects"

    def units(self, store: Store) -> list[tuple[str, Any]]:
        return payloads(store)

    def run_unit(self, root: str, key: str, payload: dict) -> UnitOutput:
        cfg = self.config
        det = _read_detections(root, payload, cfg)
        existing = _read_objects(payload["objects"], cfg.rebuild)
        refcat = read_refcat(payload["refcat"])
        free = det["object_id"] < 0
        # (a) detections near an existing object are accounted for.
        if existing.num_rows and free.any():
            idx, _ = matching.nearest_in_cells(
                det["healpix_29"][free],
                det["ra"][free],
                det["dec"][free],
                existing["ra"].to_numpy(),
                existing["dec"].to_numpy(),
                cfg.radius_deg,
            )
            free[np.flatnonzero(free)[idx >= 0]] = False
        # (b) refcat stars matched by a detection at its epoch become objects.
        known_refs = set(pc.drop_null(existing["ref_id"]).to_pylist())
        usable = ~np.isin(refcat["ref_id"], list(known_refs))
        cat = {k: v[usable] for k, v in refcat.items()}
        idx, _ = matching.nearest_moving(
            det["ra"][free],
            det["dec"][free],
            det["year"][free],
            cat,
            cfg.radius_deg,
            index29=det["healpix_29"][free],
        )
        matched_refs = np.unique(idx[idx >= 0])
        free[np.flatnonzero(free)[idx >= 0]] = False
        # (c) the rest are clustered among themselves.
        c_ra, c_dec = _free_clusters(
            det["ra"][free],
            det["dec"][free],
            det["healpix_29"][free],
            det["frame_id"][free],
            cfg.radius_deg,
        )
        new_ra = np.concatenate([cat["ra"][matched_refs], c_ra])
        new_dec = np.concatenate([cat["dec"][matched_refs], c_dec])
        ref_ids = np.concatenate([cat["ref_id"][matched_refs], np.full(c_ra.size, -1)])
        idx29 = healpix.healpix29(new_ra, new_dec, threads=1)
        mine = healpix.coarsen(idx29, cfg.order) == payload["pixel"]
        taken = set(existing["object_id"].to_pylist())
        ids = _unique_ids(idx29[mine], taken)
        new = pa.table(
            {
                "object_id": pa.array(ids, pa.int64()),
                "healpix_29": pa.array(idx29[mine], pa.int64()),
                "ra": pa.array(new_ra[mine]),
                "dec": pa.array(new_dec[mine]),
                "n_obs": pa.array(np.zeros(int(mine.sum()), np.int32)),
                "ref_id": pa.array(ref_ids[mine], pa.int64(), mask=ref_ids[mine] < 0),
            }
        )
        own_old = existing.filter(
            pc.equal(pc.shift_right(existing["object_id"], 2 * (29 - cfg.order)), payload["pixel"])
        )
        table = _objects_table(pa.concat_tables([own_old, _pad(new)]))
        out = UnitOutput(key=key, stats={"objects_new": float(new.num_rows)})
        for rel in payload["own_objects"]:
            out.remove.append(("objects", rel))
        if table.num_rows:
            path = layout.new_partition_file(layout_root(root), "objects", payload["pixel"], "o")
            write_parquet(table, path)
            out.add.append(("objects", str(path), table.num_rows, {}))
        return out


def _pad(t: pa.Table) -> pa.Table:
    """Add the objects columns a table lacks, as nulls."""
    return schema.conform(t, "objects")


def _objects_table(t: pa.Table) -> pa.Table:
    return t.sort_by("object_id")


def cluster(store: Store, config: ClusterConfig, options: RunnerOptions | None = None) -> dict:
    """Run the three clustering steps on ``store``; returns the summary figures."""
    options = options or RunnerOptions()
    if store.count("measurements") == 0:
        from lcdb.errors import InputError

        raise InputError(f"{store.root}: the store has no measurements to cluster")
    if store.count("refcat") == 0:
        _log.warning("no reference catalogue: objects are clustered from the detections alone")
    # one pool for the three steps (a process pool's workers start once, ~1 s, and read the
    # epochs once)
    pool = None
    if options.workers > 1:
        pool = (thread_pool if options.workers <= THREAD_WORKERS else process_pool)(options.workers)
    try:
        margins.prepare(store.root)
        layout.keep_scratch(store.root, SUMMARY_SCRATCH)
        margin_job = margins.MarginJob(config.order, config.margin_radii * config.radius_deg)
        s0: JobSummary = run_job(store, margin_job, options, executor=pool)
        s1: JobSummary = run_job(store, ObjectsJob(config), options, executor=pool)
        s2: JobSummary = run_job(store, AssignJob(config), options, executor=pool)
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    margins.drop(store.root)
    n_objects = summarise_objects(store, partial_files(store))
    shutil.rmtree(layout.scratch_dir(store.root, SUMMARY_SCRATCH), ignore_errors=True)
    summary = {
        "objects": n_objects,
        "objects_new": int(s1.stats.get("objects_new", 0)),
        "assigned": int(s2.stats.get("assigned", 0)),
        "duplicates": int(s2.stats.get("duplicates", 0)),
        "unmatched": int(s2.stats.get("unmatched", 0)),
        "partitions": s2.units + s2.resumed,
        "peak_rss_mb": max(s0.peak_rss_mb, s1.peak_rss_mb, s2.peak_rss_mb),
    }
    _log.info(
        "cluster: %d objects (%d new); %d detections assigned, %d second detections of an object "
        'in one frame left unassigned, %d without an object within %.1f"',
        summary["objects"],
        summary["objects_new"],
        summary["assigned"],
        summary["duplicates"],
        summary["unmatched"],
        config.radius_arcsec,
    )
    return summary
