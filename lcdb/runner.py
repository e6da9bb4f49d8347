"""The job runner: run a job's units serially or in a process pool, resumably.

A *job* splits its work into units (one HEALPix partition plus its margin, or a group of frames).
Each unit is a pure function of the committed snapshot: it reads files, writes new files under
fresh names and returns a :class:`UnitOutput` saying which files to add to and drop from which
table. Only the runner (one process, holding the store's writer lock) commits. A finished unit's
key is committed in the manifest together with its output files — the resume marker and the data
become visible in one atomic step, so an interrupted job restarts exactly where it stopped and
never applies a unit twice (``restart=True`` starts over). The markers of a job that completes
are dropped in its last commit. The runner keeps at most
``2 * workers`` units in flight, so memory is bounded by a few units, never the store.

Any ``concurrent.futures.Executor`` can run the units: a process pool locally, or a Dask
``distributed.Client.get_executor()`` over a shared file system — the jobs do not change. The local
pool forks its workers from a clean server process (see :func:`process_pool`), so a script that
runs jobs with ``workers > 1`` needs the usual ``if __name__ == "__main__":`` guard.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import resource
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import (
    FIRST_COMPLETED,
    Executor,
    Future,
    ProcessPoolExecutor,
    ThreadPoolExecutor,
    wait,
)
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from lcdb import healpix, layout, manifest
from lcdb.errors import UsageError
from lcdb.store import Store

_log = logging.getLogger(__name__)


@dataclass
class UnitOutput:
    """What one unit produced.

    Attributes
    ----------
    key : str
        The unit's key (its resume marker).
    add : list
        ``(table, absolute path, rows, extra entry fields)`` of files written.
    remove : list
        ``(table, relative path)`` of live files the unit supersedes.
    stats : dict
        Numbers the job sums into its summary.
    peak_rss_mb : float
        Peak resident memory of the process that ran the unit, once it finished (set by the
        runner: a worker's memory never shows in the parent's).
    """

    key: str
    add: list[tuple[str, str, int, dict[str, Any]]] = field(default_factory=list)
    remove: list[tuple[str, str]] = field(default_factory=list)
    stats: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: float = 0.0


class Job(Protocol):
    """A unit-parallel job (picklable: it is sent to the workers).

    A job whose unit is a single DuckDB query may also set ``in_process = True``: its units then
    run here, one at a time, each on ``workers`` DuckDB threads (see :func:`_in_process`).
    """

    name: str

    def units(self, store: Store) -> list[tuple[str, Any]]:
        """``(key, payload)`` of every unit; payloads carry the file lists a unit reads."""

    def run_unit(self, root: str, key: str, payload: Any) -> UnitOutput:
        """Do one unit's work (in a worker process)."""


def _in_process(job: Job) -> bool:
    """Whether ``job`` runs its units one at a time in this process, each unit parallel inside.

    A job whose units are single DuckDB queries sets ``in_process = True``: DuckDB spreads one
    query over ``workers`` threads about as well as ``workers`` processes do (1.8x on 2 cores for
    the colour sums), without the processes' start-up, imports and second connection, which at
    10^8 measurements cost a quarter of the colours' time (bench/pipeline.py).
    """
    return bool(getattr(job, "in_process", False))


@dataclass(frozen=True)
class RunnerOptions:
    """How to run a job.

    Parameters
    ----------
    workers : int
        Units run in parallel (1: one at a time, in this process): worker processes, or the
        threads of a :func:`thread_pool` where the job passes one (``lcdb cluster``).
    restart : bool
        Ignore the resume markers of an earlier, interrupted run.
    progress : bool
        Show a progress bar.
    commit_every : int
        Commit after this many finished units (and at the end).
    """

    workers: int = 1
    restart: bool = False
    progress: bool = True
    commit_every: int = 8

    def __post_init__(self) -> None:
        problems = []
        if self.workers < 1:
            problems.append(f"--jobs must be >= 1, got {self.workers}")
        if self.commit_every < 1:
            problems.append(f"commit_every must be >= 1, got {self.commit_every}")
        if problems:
            raise UsageError("; ".join(problems))


@dataclass
class JobSummary:
    """Totals of a job run."""

    job: str
    units: int = 0
    resumed: int = 0
    stats: dict[str, float] = field(default_factory=dict)
    #: The largest peak resident memory of a process that ran units (MB).
    peak_rss_mb: float = 0.0


#: Imported once by the fork server, so its workers start with them (the jobs' own modules are
#: imported as a worker unpickles its first unit). The matching kernels load their compiled
#: code at import (~0.5 s): here, once, instead of in every worker.
_PRELOAD = [
    "lcdb.store",
    "lcdb.runner",
    "pyarrow.parquet",
    "scipy.spatial",
    "astropy_healpix",
    "variability.matching",
]


def process_pool(workers: int) -> Executor:
    """A process pool whose workers do not inherit this process's DuckDB state, and whose caller
    runs the first units itself while the workers start.

    Forking a process that has run DuckDB queries (its threads, its allocator) crashed workers that
    open a connection of their own (tests/test_colours_refine.py); the workers are therefore forked
    from a clean server process ("forkserver", which preloads the store's modules once), or
    spawned where that start method is missing. That server takes ~3 s to start here (imports),
    as long as a whole job on 10^7 measurements: :class:`_WarmingPool` does not wait for it.
    """
    methods = multiprocessing.get_all_start_methods()
    ctx = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    if "forkserver" in methods:
        ctx.set_forkserver_preload(_PRELOAD)
    return _WarmingPool(ProcessPoolExecutor(workers, mp_context=ctx), workers)


def thread_pool(workers: int) -> Executor:
    """A pool of ``workers`` threads of this process, for a job whose units spend most of their
    time in code that releases the GIL (pyarrow, numpy, numba's ``nogil`` kernels, scipy's
    trees): no worker processes to start, no payloads to pickle. ``lcdb cluster`` uses it on
    few cores (variability.cluster.THREAD_WORKERS)."""
    return ThreadPoolExecutor(workers, thread_name_prefix="lcdb-unit")


class _SerialExecutor(Executor):
    """Runs each submitted call at once, in this process."""

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # handed to the caller through the future
            fut.set_exception(exc)
        return fut


class _WarmingPool(Executor):
    """A process pool that runs submitted calls in the caller's thread until its workers are up.

    A background thread starts the workers (a no-op task each: starting a worker blocks until the
    fork server has imported its modules); until all have answered, :meth:`submit` runs the call
    at once, like :class:`_SerialExecutor`, then it hands calls to the pool. Units are pure
    functions of their payload, so where one runs does not matter.
    """

    def __init__(self, pool: ProcessPoolExecutor, workers: int) -> None:
        self._pool = pool
        self._ready = threading.Event()
        self._closing = threading.Event()
        self._inline = _SerialExecutor()
        self._thread = threading.Thread(target=self._start, args=(workers,), daemon=True)
        self._thread.start()

    def _start(self, workers: int) -> None:
        try:
            started = [self._pool.submit(os.getpid) for _ in range(workers)]
            # Polled, not waited on: a pool shut down while its first workers start may never
            # answer these (seen once: a test run hung 20 minutes in shutdown's join).
            while wait(started, timeout=0.2).not_done and not self._closing.is_set():
                pass
        except RuntimeError:  # shut down before its workers were up
            pass
        finally:
            self._ready.set()

    def submit(self, fn: Callable, /, *args: Any, **kwargs: Any) -> Future:
        if self._ready.is_set():
            return self._pool.submit(fn, *args, **kwargs)
        return self._inline.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)
        self._closing.set()
        if wait:
            self._thread.join()


def object_units(store: Store, target_rows: int = 2_000_000) -> list[tuple[str, dict]]:
    """The units of a per-object job: runs of consecutive objects partitions.

    Each payload holds the run's ``pixels``, the measurement ``files`` that can hold their
    objects' detections (the partitions and their neighbours) and the objects' id range ``lo`` ..
    ``hi``. A unit per partition costs a fixed ~50 ms (connection, query binding, commit) that
    dwarfs the work of small partitions; a run of consecutive indices (nested: neighbours on the
    sky) is one contiguous order-29 range, so the unit still scans one id range. Runs hold about
    ``target_rows`` measurements; the heaviest come first, so a pool does not end on one worker.
    """
    order = store.config.order
    rows: dict[int, int] = {}
    for e in store.manifest.entries("measurements"):
        if e["pixel"] is not None:
            rows[e["pixel"]] = rows.get(e["pixel"], 0) + int(e["rows"])
    groups: list[list[int]] = []
    current: list[int] = []
    acc = 0
    for p in store.pixels("objects"):
        current.append(p)
        acc += rows.get(p, 0)
        if acc >= target_rows:
            groups.append(current)
            current, acc = [], 0
    if current:
        groups.append(current)
    groups.sort(key=lambda g: (-sum(rows.get(p, 0) for p in g), g[0]))
    out = []
    for group in groups:
        near = set(group)
        for pixel in group:
            near.update(healpix.neighbour_pixels(pixel, order))
        payload = {
            "pixels": group,
            "files": store.files("measurements", near),
            "lo": healpix.index_range(group[0], order)[0],
            "hi": healpix.index_range(group[-1], order)[1],
        }
        out.append((f"pixels={group[0]}-{group[-1]}", payload))
    return out


#: Per thread (units may run on a :func:`thread_pool`): root -> (pid, manifest key, store).
_UNIT_STORES = threading.local()
#: The store the units of an in-process job share while it runs (root -> store).
_PINNED: dict[str, Store] = {}


def unit_store(root: str) -> Store:
    """The store at ``root`` for a unit, shared by the units a thread runs.

    Opening a store (a DuckDB connection and its views) costs ~0.1 s, as much as a small unit's
    work, so each process (each thread: a connection runs one query at a time) keeps one and
    reopens it only when the manifest changed (the runner
    commits every few units). A unit must read the files its own job replaces through the file
    lists of its payload, never through the views. A store inherited through ``fork`` is left
    alone: its DuckDB connection belongs to the parent (closing it in the child crashes).
    """
    if root in _PINNED:
        return _PINNED[root]
    path = Path(root) / layout.MANIFEST
    key = (path.stat().st_mtime_ns, manifest.Manifest.load(Path(root)).version)
    stores = _UNIT_STORES.__dict__  # this thread's
    cached = stores.get(root)
    if cached is not None and cached[0] == os.getpid():
        if cached[1] == key:
            return cached[2]
        cached[2].close()
    store = Store(Path(root))
    stores[root] = (os.getpid(), key, store)
    return store


def run_job(
    store: Store,
    job: Job,
    options: RunnerOptions | None = None,
    executor: Executor | None = None,
) -> JobSummary:
    """Run every unfinished unit of ``job`` and commit their outputs; returns the totals."""
    options = options or RunnerOptions()
    own = executor is None
    inside = own and _in_process(job)
    if own and not inside and options.workers > 1:
        # started before the units are made: the fork server imports (~1 s) while job.units
        # runs (calibrate's splits its stars by frame, ~1 s at 10^7 measurements)
        executor = process_pool(options.workers)
    try:
        return _run(store, job, options, executor, inside)
    finally:
        if own and executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


def _run(
    store: Store,
    job: Job,
    options: RunnerOptions,
    executor: Executor | None,
    inside: bool,
) -> JobSummary:
    """:func:`run_job` on the given executor (``None``: serial, here)."""
    summary = JobSummary(job=job.name)
    with manifest.transaction(store.root) as tx:
        if options.restart:
            tx.reset_job(job.name)
        done = set(tx.jobs.get(job.name, []))
        units = job.units(store)
        todo = [(k, p) for k, p in units if k not in done]
        summary.resumed = len(units) - len(todo)
        if summary.resumed:
            _log.info(
                "%s: resuming, %d of %d unit(s) already done", job.name, summary.resumed, len(units)
            )
        if inside:
            executor = _SerialExecutor()
            restore = _pin_unit_store(store, options.workers)
        elif executor is None:
            executor = _SerialExecutor()
        bar = tqdm(total=len(todo), desc=job.name, unit="unit", disable=not options.progress)
        pending_commit = 0
        try:
            for out in _bounded(executor, job, str(store.root), todo, 2 * options.workers):
                for table, path, rows, extra in out.add:
                    tx.add(table, Path(path), rows, **extra)
                for table, rel in out.remove:
                    tx.remove(table, rel)
                tx.mark_done(job.name, out.key)
                for k, v in out.stats.items():
                    summary.stats[k] = summary.stats.get(k, 0) + v
                summary.units += 1
                summary.peak_rss_mb = max(summary.peak_rss_mb, out.peak_rss_mb)
                pending_commit += 1
                bar.update(1)
                if pending_commit >= options.commit_every:
                    tx.commit(delete=False)  # other units may still read superseded files
                    pending_commit = 0
            # The job is complete: drop its markers in the same commit as its last outputs, so the
            # next run (e.g. after new frames arrive) starts afresh.
            tx.reset_job(job.name)
            tx.commit(delete=False)
            tx.delete_superseded()
        finally:
            bar.close()
            if inside:
                restore()
    store.refresh()
    return summary


def _pin_unit_store(store: Store, threads: int) -> Callable[[], None]:
    """Give the units of an in-process job the caller's store, on ``threads`` DuckDB threads;
    returns the function that undoes it.

    The caller's store holds the snapshot the job's units were made from (a fresh one would cost
    ~0.1 s of views), and the runner refreshes it only when the job ends; units read the files
    their job replaces through their payloads anyway.
    """
    con = store.con
    before = con.sql("SELECT current_setting('threads'), current_setting('parquet_metadata_cache')")
    old_threads, old_cache = before.fetchall()[0]
    con.execute(f"SET threads = {int(threads)}")  # an int: nothing to inject
    con.execute("SET parquet_metadata_cache = true")  # units re-read the same footers
    root = str(store.root)
    _PINNED[root] = store

    def restore() -> None:
        _PINNED.pop(root, None)
        con.execute(f"SET threads = {int(old_threads)}")
        cache = str(old_cache).lower() in ("true", "1")  # a bool, or its text in some versions
        con.execute(f"SET parquet_metadata_cache = {'true' if cache else 'false'}")

    return restore


def _run_unit(job: Job, root: str, key: str, payload: Any) -> UnitOutput:
    out = job.run_unit(root, key, payload)
    out.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    return out


def _bounded(
    executor: Executor, job: Job, root: str, todo: list[tuple[str, Any]], limit: int
) -> Iterator[UnitOutput]:
    """Submit units keeping at most ``limit`` in flight; yield outputs as they finish."""
    queue = iter(todo)
    in_flight: set[Future] = set()
    while True:
        while len(in_flight) < max(limit, 1):
            try:
                key, payload = next(queue)
            except StopIteration:
                break
            in_flight.add(executor.submit(_run_unit, job, root, key, payload))
        if not in_flight:
            return
        finished, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
        for fut in finished:
            yield fut.result()
