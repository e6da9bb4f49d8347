"""Replacing a whole derived table in one commit (objects-level products of the later jobs)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from lcdb import healpix, layout, manifest, schema
from lcdb.store import Store
from lcdb.tableio import write_parquet


def replace_table(store: Store, name: str, table: pa.Table, key: str | None = None) -> int:
    """Replace every file of table ``name`` with ``table``, atomically; returns files written.

    Partitioned tables are split by the partition of column ``key`` (an order-29 index such as
    ``object_id`` or ``healpix_29``); flat tables are written as one file.
    """
    table = schema.conform(table, name)
    with manifest.transaction(store.root) as tx:
        for entry in tx.live_entries(name):
            tx.remove(name, entry["path"])
        written = 0
        if name in layout.PARTITIONED:
            if key is None:
                raise ValueError(f"table {name} is partitioned: give the index column as key")
            pix = healpix.coarsen(table[key].to_numpy(), store.config.order)
            order = np.argsort(pix, kind="stable")
            table, pix = table.take(pa.array(order)), pix[order]
            cuts = np.flatnonzero(np.diff(pix)) + 1
            for a, b in zip(np.r_[0, cuts], np.r_[cuts, pix.size], strict=True):
                if b <= a:
                    continue
                path = layout.new_partition_file(store.root, name, int(pix[a]), name[:3])
                write_parquet(table.slice(int(a), int(b - a)), path)
                tx.add(name, path, int(b - a))
                written += 1
        elif table.num_rows:
            path = layout.new_flat_file(store.root, name, name)
            write_parquet(table, path)
            tx.add(name, path, table.num_rows)
            written = 1
        tx.commit()
    store.refresh()
    return written


def rewrite_files(store: Store, name: str, fn) -> int:
    """Replace every file of table ``name`` by ``fn(table_of_that_file)``, in one commit.

    ``fn`` receives the file's rows conformed to the table's schema and returns the rows to keep
    (possibly none). Files stay in their partitions. Returns the rows written.
    """
    from lcdb.tableio import read_parquet

    rows = 0
    with manifest.transaction(store.root) as tx:
        for entry in tx.live_entries(name):
            new = fn(schema.conform(read_parquet([store.root / entry["path"]]), name))
            tx.remove(name, entry["path"])
            if new.num_rows:
                if entry["pixel"] is None:
                    path = layout.new_flat_file(store.root, name, name)
                else:
                    path = layout.new_partition_file(store.root, name, entry["pixel"], name[:3])
                write_parquet(schema.conform(new, name), path)
                tx.add(name, path, new.num_rows)
                rows += new.num_rows
        tx.commit()
    store.refresh()
    return rows
