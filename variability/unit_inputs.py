"""What the units of ``lcdb cluster`` read: their payloads, frame epochs and time ranks, and the
refcat and objects columns of a neighbourhood (cached per process: a partition's files are read
by its own unit and its 8 neighbours')."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lcdb import healpix
from lcdb.store import Store
from lcdb.tableio import read_file, read_parquet
from variability import matching


def payloads(store: Store) -> list[tuple[str, dict[str, Any]]]:
    """One unit per measurements partition (the largest first): its files, its neighbours', and
    the refcat, objects and frames files its steps read."""
    order = store.config.order
    out = []
    for pixel in store.pixels("measurements", largest_first=True):
        near = set(healpix.neighbour_pixels(pixel, order))
        out.append(
            (
                f"pixel={pixel}",
                {
                    "pixel": pixel,
                    "own": store.files("measurements", {pixel}),
                    "neighbours": {q: store.files("measurements", {q}) for q in sorted(near)},
                    "refcat": store.files("refcat", near | {pixel}),
                    "objects": store.files("objects", near | {pixel}),
                    "own_objects": [
                        e["path"] for e in store.manifest.entries("objects") if e["pixel"] == pixel
                    ],
                    "frames": store.files("frames"),
                },
            )
        )
    return out


def epochs(frame_files: list[str], frame_id: np.ndarray) -> np.ndarray:
    """Julian year of each detection's frame (mid-exposure)."""
    return frame_index(tuple(frame_files)).lookup(frame_id, "years")


@dataclass(frozen=True)
class FrameIndex:
    """Epoch (Julian year) and time rank (by mid-exposure, then id: one rank per frame) of every
    frame, by frame id: through tables indexed by id when the ids are dense (the store numbers
    frames from 1; ~10x faster than a binary search per detection), else by binary search."""

    ids: np.ndarray
    years: np.ndarray
    ranks: np.ndarray
    dense: bool

    def lookup(self, frame_id: np.ndarray, what: str) -> np.ndarray:
        """``years`` or ``ranks`` of each frame id; NaN or -1 for an id the frames table lacks."""
        values = getattr(self, what)
        missing = -1 if what == "ranks" else np.nan
        if self.dense:
            known = (frame_id >= 0) & (frame_id < values.size)
            if known.all():
                return values[frame_id]  # the usual case: gaps already hold the marker
            return np.where(known, values[np.where(known, frame_id, 0)], missing)
        pos = np.minimum(np.searchsorted(self.ids, frame_id), max(self.ids.size - 1, 0))
        known = self.ids[pos] == frame_id if self.ids.size else np.zeros(frame_id.size, bool)
        return np.where(known, values[pos] if self.ids.size else missing, missing)


@lru_cache(maxsize=2)
def frame_index(frame_files: tuple[str, ...]) -> FrameIndex:
    """The frames' :class:`FrameIndex`, read once per process for all its units."""
    t = read_parquet(list(frame_files), columns=["frame_id", "mjd"])
    ids = t.column("frame_id").to_numpy()
    mjd = t.column("mjd").to_numpy()
    order = np.argsort(ids)
    ids, mjd = ids[order], mjd[order]
    years = matching.mjd_to_year(mjd)
    ranks = np.empty(ids.size, np.int64)
    ranks[np.lexsort((ids, mjd))] = np.arange(ids.size)
    if ids.size and ids[0] >= 0 and ids[-1] < 4 * ids.size + 1024:
        table_y = np.full(int(ids[-1]) + 1, np.nan)
        table_r = np.full(int(ids[-1]) + 1, -1, np.int64)
        table_y[ids], table_r[ids] = years, ranks
        return FrameIndex(ids, table_y, table_r, True)
    return FrameIndex(ids, years, ranks, False)


@lru_cache(maxsize=64)
def _file_columns(path: str, columns: tuple[str, ...]) -> pa.Table:
    """Some columns of a store file, read once per process: a partition's refcat and objects are
    read by its own unit and its 8 neighbours' (files are immutable: new data, new names)."""
    return read_file(path, list(columns))


def read_cached(files: list[str], columns: tuple[str, ...]) -> pa.Table:
    return pa.concat_tables([_file_columns(f, columns) for f in files])


def read_refcat(files: list[str]) -> dict[str, np.ndarray]:
    cols = ("ref_id", "ra", "dec", "pmra", "pmdec", "epoch")
    if not files:
        return {c: np.empty(0) for c in cols}
    t = read_cached(files, cols)
    return {
        c: t.column(c)
        .to_numpy(zero_copy_only=False)
        .astype(np.int64 if c == "ref_id" else np.float64)
        for c in cols
    }


def layout_root(root: str):
    """Path of a store root given as a string (units receive strings: they are pickled)."""
    return Path(root)


def layout_relpath(root, path: str) -> str:
    return os.path.relpath(path, root)
