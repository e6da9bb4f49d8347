"""The store's committed snapshot and the single-writer transaction that replaces it.

``_manifest.json`` lists every live data file of every table. A write puts new files in place
under fresh names (invisible: nothing lists them), syncs them to disk, and then replaces the
manifest atomically; files it supersedes are deleted only after that. A crash (even ``kill -9``)
therefore leaves either the old snapshot or the new one, never half a batch; files that no
manifest lists are garbage and the next writer removes them. This is the commit protocol of
Delta Lake and Iceberg, reduced to one JSON file because one workstation (or one coordinator)
writes at a time. Writers serialise on an ``flock`` of ``STORE/.lock``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lcdb import layout
from lcdb.atomic import atomic_write_bytes
from lcdb.errors import StoreError

_log = logging.getLogger(__name__)


@dataclass
class Manifest:
    """The committed state of a store.

    Attributes
    ----------
    version : int
        Incremented by every commit.
    counters : dict
        Monotonic id counters (``frame_id``, ``batch``, ``ref_id`` ...): ids are never reused.
    files : dict
        Table name -> list of entries ``{"path": relpath, "rows": n, "pixel": p, ...}``.
    jobs : dict
        Job name -> keys of its finished units: the resume markers of :mod:`lcdb.runner`,
        committed together with the units' output files.
    """

    version: int = 0
    counters: dict[str, int] = field(default_factory=dict)
    files: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    jobs: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path) -> Manifest:
        """Read the manifest of the store at ``root``."""
        path = root / layout.MANIFEST
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise StoreError(f"{root}: not an lcdb store (no {layout.MANIFEST})") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise StoreError(f"{path}: corrupt manifest ({exc})") from exc
        return cls(
            version=int(data["version"]),
            counters={k: int(v) for k, v in data.get("counters", {}).items()},
            files={t: list(v) for t, v in data.get("files", {}).items()},
            jobs={j: list(v) for j, v in data.get("jobs", {}).items()},
        )

    def entries(self, table: str) -> list[dict[str, Any]]:
        """Live file entries of ``table``."""
        return self.files.get(table, [])

    def paths(self, root: Path, table: str, pixels: set[int] | None = None) -> list[str]:
        """Absolute paths of the live files of ``table``, optionally only of some partitions."""
        return [
            str(root / e["path"])
            for e in self.entries(table)
            if pixels is None or e.get("pixel") in pixels
        ]

    def rows(self, table: str) -> int:
        """Total committed rows of ``table``."""
        return sum(int(e["rows"]) for e in self.entries(table))

    def to_bytes(self) -> bytes:
        return json.dumps(
            {
                "version": self.version,
                "counters": self.counters,
                "files": self.files,
                "jobs": self.jobs,
            },
            separators=(",", ":"),
        ).encode()


def write_initial(root: Path) -> None:
    """Write the empty manifest of a new store."""
    atomic_write_bytes(root / layout.MANIFEST, Manifest().to_bytes())


class Transaction:
    """Changes to a store that become visible together at :meth:`commit`.

    Obtain one from :func:`transaction`; add files already written and fsynced with :meth:`add`,
    drop superseded ones with :meth:`remove`, reserve ids with :meth:`reserve`.
    """

    def __init__(self, root: Path, base: Manifest) -> None:
        self.root = root
        self.base = base
        self.counters = dict(base.counters)
        self.jobs = {j: list(v) for j, v in base.jobs.items()}
        self._added: dict[str, list[dict[str, Any]]] = {}
        self._removed: set[str] = set()
        self._deferred: set[str] = set()
        self.committed = False

    def reserve(self, counter: str, n: int = 1) -> int:
        """Reserve ``n`` consecutive ids of ``counter``; returns the first (ids start at 1)."""
        first = self.counters.get(counter, 0) + 1
        self.counters[counter] = first + n - 1
        return first

    def add(self, table: str, path: Path, rows: int, **extra: Any) -> None:
        """Make a written file part of ``table`` at commit (which makes it durable first)."""
        rel = os.path.relpath(path, self.root)
        entry = {"path": rel, "rows": int(rows), "pixel": layout.pixel_of(rel), **extra}
        self._added.setdefault(table, []).append(entry)

    def remove(self, table: str, relpath: str) -> None:
        """Drop a live file of ``table`` from the store at commit (deleted after it)."""
        self._removed.add(relpath)

    @property
    def pending_removals(self) -> set[str]:
        """Relative paths that the next commit drops."""
        return set(self._removed)

    def live_entries(self, table: str) -> list[dict[str, Any]]:
        """Entries of ``table`` as the next commit will publish them."""
        kept = [e for e in self.base.entries(table) if e["path"] not in self._removed]
        return kept + [e for e in self._added.get(table, []) if e["path"] not in self._removed]

    def mark_done(self, job: str, unit: str) -> None:
        """Record that ``unit`` of ``job`` finished (published with the next commit)."""
        self.jobs.setdefault(job, []).append(unit)

    def reset_job(self, job: str) -> None:
        """Forget the finished units of ``job`` (a restart from scratch)."""
        self.jobs.pop(job, None)

    def commit(self, delete: bool = True) -> Manifest:
        """Atomically publish the new snapshot, then delete superseded files.

        With ``delete=False`` superseded files stay on disk until :meth:`delete_superseded` (or the
        next writer's garbage collection): workers may still be reading them.
        The transaction stays usable: later changes build on the snapshot just published.
        """
        files = {t: self.live_entries(t) for t in set(self.base.files) | set(self._added)}
        new = Manifest(
            version=self.base.version + 1, counters=self.counters, files=files, jobs=self.jobs
        )
        # Data files and their directory entries must be durable before the manifest points at
        # them. One sync() costs less than an fsync per file when a commit adds thousands.
        if self._added:
            os.sync()
        atomic_write_bytes(self.root / layout.MANIFEST, new.to_bytes())
        self.committed = True
        self._deferred |= self._removed
        self.base, self._added, self._removed = new, {}, set()
        self.jobs = {j: list(v) for j, v in new.jobs.items()}
        if delete:
            self.delete_superseded()
        return new

    def delete_superseded(self) -> None:
        """Delete the files that published commits dropped."""
        for rel in self._deferred:
            with contextlib.suppress(FileNotFoundError):
                (self.root / rel).unlink()
        self._deferred = set()


@contextlib.contextmanager
def transaction(root: Path) -> Iterator[Transaction]:
    """Hold the store's writer lock, clean up garbage, and yield a :class:`Transaction`.

    Leaving the block without :meth:`Transaction.commit` (an exception) leaves the committed
    snapshot untouched; the files written meanwhile are garbage for the next writer.
    """
    lock_path = root / layout.LOCK
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(f"{root}: another lcdb process is writing to this store") from None
        try:
            base = Manifest.load(root)
            collect_garbage(root, base)
            yield Transaction(root, base)
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def collect_garbage(root: Path, manifest: Manifest) -> int:
    """Delete data files that the committed manifest does not list (left by a crashed writer).

    Call only with the writer lock held. Returns the number of files removed.
    """
    live = {e["path"] for entries in manifest.files.values() for e in entries}
    removed = 0
    for table in layout.TABLES:
        tdir = root / table
        if not tdir.is_dir():
            continue
        for path in tdir.rglob("*"):
            if path.is_file() and os.path.relpath(path, root) not in live:
                path.unlink()
                removed += 1
    if removed:
        _log.info("removed %d data file(s) left by an interrupted write", removed)
    tmp = root / layout.TMP_DIR
    if tmp.is_dir():  # scratch space of jobs: never part of a snapshot
        for child in tmp.iterdir():
            if child.is_dir() and (child / layout.KEEP_MARKER).exists():
                continue  # kept across a job's transactions (named after its inputs)
            if child.is_dir():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
    for stray in root.glob(f".{layout.MANIFEST}.*.tmp"):
        stray.unlink(missing_ok=True)
    return removed
