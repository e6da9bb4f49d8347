"""``lcdb compact``: rewrite each partition into few large files sorted by object and time.

Ingest writes one file per touched partition per batch, so a partition accumulates many small
files in arrival order. Compaction reads one partition at a time (memory is bounded by the largest
partition, never the store), sorts it by (object_id, mjd) — or by (healpix_29, mjd) while objects
do not exist yet, which keeps a star's measurements together as well — and writes files of at most
``max_rows`` rows. The new files replace the old ones in one manifest commit per partition, so a
crash leaves the partition either as it was or compacted; old files are deleted only after.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from tqdm.auto import tqdm

from lcdb import layout, manifest
from lcdb.store import Store
from lcdb.tableio import read_parquet, write_parquet

_log = logging.getLogger(__name__)


@dataclass
class CompactSummary:
    """What a compaction did."""

    partitions: int = 0
    files_before: int = 0
    files_after: int = 0
    rows: int = 0


def compact(store: Store, max_rows: int = 20_000_000, progress: bool = True) -> CompactSummary:
    """Compact the measurements partitions and the frames table of ``store``."""
    summary = CompactSummary()
    with manifest.transaction(store.root) as tx:
        mjd_of = _mjd_lookup(store, tx)
        by_pixel: dict[int, list[dict]] = {}
        for e in tx.live_entries("measurements"):
            by_pixel.setdefault(e["pixel"], []).append(e)
        todo = {p: es for p, es in by_pixel.items() if len(es) > 1 or not es[0].get("sorted")}
        for pixel, entries in tqdm(
            sorted(todo.items()), desc="compact", unit="partition", disable=not progress
        ):
            data = read_parquet([store.root / e["path"] for e in entries])
            data = data.take(_sort_order(data, mjd_of))
            key = "object" if data.column("object_id").null_count < data.num_rows else "position"
            fids = data.column("frame_id")
            extra = {"fmin": pc.min(fids).as_py(), "fmax": pc.max(fids).as_py(), "sorted": key}
            for e in entries:
                tx.remove("measurements", e["path"])
            for start in range(0, data.num_rows, max_rows):
                part = data.slice(start, max_rows)
                path = layout.new_partition_file(store.root, "measurements", pixel, "c")
                write_parquet(part, path)
                tx.add("measurements", path, part.num_rows, **extra)
                summary.files_after += 1
            tx.commit()
            summary.partitions += 1
            summary.files_before += len(entries)
            summary.rows += data.num_rows
        frames = tx.live_entries("frames")
        if len(frames) > 1:
            table = read_parquet([store.root / e["path"] for e in frames])
            table = table.sort_by("frame_id")
            path = layout.new_flat_file(store.root, "frames", "frames")
            write_parquet(table, path)
            for e in frames:
                tx.remove("frames", e["path"])
            ids = table.column("frame_id")
            tx.add(
                "frames", path, table.num_rows, fmin=pc.min(ids).as_py(), fmax=pc.max(ids).as_py()
            )
            tx.commit()
    store.refresh()
    _log.info(
        "compacted %d partition(s): %d file(s) -> %d, %d rows",
        summary.partitions,
        summary.files_before,
        summary.files_after,
        summary.rows,
    )
    return summary


def _mjd_lookup(store: Store, tx: manifest.Transaction) -> tuple[np.ndarray, np.ndarray]:
    entries = tx.live_entries("frames")
    if not entries:
        return np.empty(0, np.int64), np.empty(0)
    t = read_parquet([store.root / e["path"] for e in entries], columns=["frame_id", "mjd"])
    ids = t.column("frame_id").to_numpy()
    order = np.argsort(ids)
    return ids[order], t.column("mjd").to_numpy()[order]


def _sort_order(data: pa.Table, mjd_of: tuple[np.ndarray, np.ndarray]) -> pa.Array:
    ids, mjds = mjd_of
    fid = data.column("frame_id").to_numpy()
    pos = np.clip(np.searchsorted(ids, fid), 0, max(ids.size - 1, 0))
    mjd = mjds[pos] if ids.size else np.zeros(fid.size)
    obj = data.column("object_id")
    if obj.null_count < data.num_rows:
        # Unclustered rows (null object) last, then by position.
        o = obj.to_numpy(zero_copy_only=False)
        o = np.where(np.isnan(o), np.iinfo(np.int64).max, o) if o.dtype.kind == "f" else o
        primary = np.asarray(o, dtype=np.int64)
        secondary = data.column("healpix_29").to_numpy()
        return pa.array(np.lexsort((mjd, secondary, primary)))
    return pa.array(np.lexsort((mjd, data.column("healpix_29").to_numpy())))
