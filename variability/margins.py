"""The margin cache of ``lcdb cluster``: each partition's detections near its neighbours, once.

The objects step of a partition needs the detections of its neighbours that lie within a margin
of a few match radii (:func:`lcdb.healpix.margin_pixels`). Reading them from the neighbours'
files decodes whole row groups for a few percent of their rows, and a freshly ingested partition
is one file per ingest batch (63 at 10^8 measurements), so each unit opened and decoded 8
neighbours' worth of files. As hats-import does, a first pass instead writes, per partition, the
rows that fall in each neighbour's margin (:func:`lcdb.healpix.margin_targets`, the mirror of
``margin_pixels``, property-tested) to one scratch file; the objects step then reads the eight
small files that name it. The rows are the same, so the objects are too.

A margin file is named after the exact files it was cut from and the margin's width (a
fingerprint of both: store files are immutable, new data get new names), so a stale one, or one
cut for another match radius by an interrupted run, is never read: a reader that
finds no file for a neighbour's current files cuts the margin from them itself. The scratch
directory carries a ``.keep`` marker that the store's garbage collection honours, so the files
survive between the runner's jobs and a resumed run; ``lcdb cluster`` drops it when it completes.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lcdb import healpix, layout
from lcdb.runner import UnitOutput
from lcdb.store import Store
from lcdb.tableio import read_parquet

#: The detection columns the objects step reads.
DET_COLUMNS = ["frame_id", "healpix_29", "ra", "dec", "object_id"]
_NAME = "cluster-margins"


def scratch_dir(root: Path | str) -> Path:
    """Where the margin files of a clustering run live (dropped when the run completes)."""
    return layout.scratch_dir(root, _NAME)


def fingerprint(files: list[str], margin_deg: float) -> str:
    """A short digest of a partition's file names and the margin width (what a margin file was
    cut from)."""
    names = "\n".join([repr(float(margin_deg)), *sorted(os.path.basename(f) for f in files)])
    return hashlib.sha1(names.encode()).hexdigest()[:16]


def margin_path(root: Path | str, pixel: int, files: list[str], margin_deg: float) -> Path:
    """The margin file partition ``pixel`` writes for its neighbours, from its ``files``."""
    return scratch_dir(root) / f"pixel={pixel}-{fingerprint(files, margin_deg)}.arrow"


def prepare(root: Path | str) -> None:
    """Create the scratch directory with the marker that keeps it across transactions."""
    layout.keep_scratch(root, _NAME)


def drop(root: Path | str) -> None:
    """Delete the margin files (the clustering run they served is complete)."""
    shutil.rmtree(scratch_dir(root), ignore_errors=True)


@dataclass(frozen=True)
class MarginJob:
    """Write, per measurement partition, its rows in each neighbour's margin (a runner job)."""

    order: int
    margin_deg: float
    name: str = _NAME

    def units(self, store: Store) -> list[tuple[str, Any]]:
        return [
            (f"pixel={p}", {"pixel": p, "files": store.files("measurements", {p})})
            for p in store.pixels("measurements", largest_first=True)
        ]

    def run_unit(self, root: str, key: str, payload: dict) -> UnitOutput:
        pixel = payload["pixel"]
        cells, targets, m = healpix.margin_targets(pixel, self.order, self.margin_deg)
        shift = 2 * (29 - m)
        # Step 1: the few rows on a border cell (binary search of each row's cell). The columns
        # are read once (reading healpix_29 alone first, then the rows, decoded it twice).
        det = read_parquet(payload["files"], columns=DET_COLUMNS)
        cell = det["healpix_29"].to_numpy() >> shift
        first = np.searchsorted(cells, cell, side="left")
        count = np.searchsorted(cells, cell, side="right") - first
        rows = np.flatnonzero(count)
        # Step 2: one output row per (row, neighbour) pair; a corner row serves several.
        reps = count[rows]
        src = np.repeat(rows, reps)
        offset = np.arange(src.size) - np.repeat(np.cumsum(reps) - reps, reps)
        target = targets[np.repeat(first[rows], reps) + offset]
        table = det.take(pa.array(src)).append_column("target", pa.array(target))
        path = margin_path(root, pixel, payload["files"], self.margin_deg)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        with pa.ipc.new_file(tmp, table.schema) as writer:
            writer.write_table(table)
        tmp.replace(path)  # whole or absent: a resumed run never reads half a file
        return UnitOutput(key=key, stats={"margin_rows": float(table.num_rows)})


def read_margin(
    root: str, neighbours: dict[int, list[str]], pixel: int, margin_deg: float
) -> tuple[list[pa.Table], dict[int, list[str]]]:
    """The margin rows of ``pixel``, ``margin_deg`` wide, that its ``neighbours`` (pixel ->
    current files) wrote.

    Returns the tables read and the neighbours without a current margin file, whose margin the
    caller cuts from their files.
    """
    out, missing = [], {}
    for q, files in neighbours.items():
        path = margin_path(root, q, files, margin_deg)
        if not path.exists():
            missing[q] = files
            continue
        with pa.ipc.open_file(path) as f:
            t = f.read_all()
        keep = t["target"].to_numpy() == pixel
        if keep.any():
            out.append(t.filter(pa.array(keep)).select(DET_COLUMNS))
    return out, missing
