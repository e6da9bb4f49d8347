"""Writing the store's Parquet files: one place for compression, encodings and row groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lcdb.atomic import fsync_file
from lcdb.schema import PARQUET_ENCODINGS

#: Rows per row group. Small enough that a light curve by position reads one or two groups of a
#: compacted partition, large enough that scans run at full speed (bench/store.py).
ROW_GROUP_ROWS = 65_536

#: The store's Parquet codec (bench/codecs.py compares it with zstd and snappy).
COMPRESSION = "lz4"


def write_parquet(
    table: pa.Table,
    path: Path,
    fsync: bool = False,
    order: np.ndarray | None = None,
    slice_rows: int = 8 * ROW_GROUP_ROWS,
) -> int:
    """Write ``table`` to ``path`` (LZ4, per-column encodings) and return its size.

    With ``order``, writes ``table.take(order)`` without holding that copy: rows are taken and
    written ``slice_rows`` at a time (a multiple of the row group, so the groups are the same),
    which keeps a partition's reordering (``lcdb cluster``) at one copy of a slice, not of the
    partition. Files meant for the store need no ``fsync``:
    :meth:`lcdb.manifest.Transaction.commit` makes every added file durable before publishing it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    options = parquet_options(table)
    if order is None:
        pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, **options)
    else:
        if slice_rows % ROW_GROUP_ROWS:
            raise ValueError(f"slice_rows must be a multiple of {ROW_GROUP_ROWS}, got {slice_rows}")
        with pq.ParquetWriter(path, table.schema, **options) as writer:
            for lo in range(0, max(len(order), 1), slice_rows):
                part = table.take(pa.array(order[lo : lo + slice_rows], pa.int64()))
                writer.write_table(part, row_group_size=ROW_GROUP_ROWS)
    if fsync:
        fsync_file(path)
    return path.stat().st_size


def parquet_options(
    table: pa.Table, compression: str = COMPRESSION, level: int | None = None
) -> dict:
    """The writer options of the store's files for ``table``'s columns (bench/codecs.py varies
    ``compression`` and ``level`` only)."""
    encodings = {c: e for c, e in PARQUET_ENCODINGS.items() if c in set(table.column_names)}
    return {
        # LZ4 rather than zstd level 1: 2% larger measurement files, 1.4-1.8x faster to write
        # with pyarrow and 1.1-1.3x faster to aggregate with DuckDB (bench/codecs.py, 8 files of
        # a 10^7 store, four runs; snappy is as fast and 5% larger). The store is rewritten by
        # every clustering and scanned by every job, so speed wins over 2%.
        "compression": compression,
        "compression_level": level,
        "use_dictionary": [c for c in table.column_names if c not in encodings],
        "column_encoding": encodings or None,
        "write_statistics": True,
    }


def read_parquet(paths: list[str] | list[Path], columns: list[str] | None = None) -> pa.Table:
    """Read and concatenate Parquet files (no hive columns)."""
    tables = [read_file(p, columns) for p in paths]
    if not tables:
        raise ValueError("no files to read")
    return pa.concat_tables(tables, promote_options="default")


def read_file(path: str | Path, columns: list[str] | None = None) -> pa.Table:
    """One Parquet file (no hive columns). ``pq.ParquetFile`` rather than ``pq.read_table``,
    whose dataset machinery costs ~0.6 ms per file: the same table 1.15-1.6x faster on a store's
    measurement files, 2x on its small objects files (the cluster steps read ~2,000 files at
    10^7 measurements).

    Decoded on the calling thread: its callers are mostly job units, already one per core, and
    Arrow's own pool then only contends with them (it is slower serially too). Reading the 415
    files of a 10^7 store took 0.46 s this way against 0.62 s on Arrow's pool serially and 2.49 s
    from two threads at once; the largest partition of a 10^8 store (4.4 M rows, one file) 0.42 s
    against 0.65 s; ``lcdb cluster`` on threads, 10^7: 6.7-7.2 s against 7.2-7.7 s
    (three alternating runs each)."""
    with pq.ParquetFile(path) as f:
        return f.read(columns=columns, use_threads=False)


def row_group_ranges(meta: pq.FileMetaData, column: str) -> list[tuple | None]:
    """Per row group of a file, the (min, max) of ``column`` from its statistics (None where
    there are none), so a reader can skip the groups that cannot hold what it wants."""
    col = meta.schema.names.index(column)
    out: list[tuple | None] = []
    for g in range(meta.num_row_groups):
        st = meta.row_group(g).column(col).statistics
        out.append((st.min, st.max) if st is not None and st.has_min_max else None)
    return out
