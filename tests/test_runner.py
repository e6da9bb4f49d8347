"""The job runner: in-process jobs, resume markers and their commit."""

from __future__ import annotations

import os
import threading
from concurrent.futures import wait
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

import lcdb
from lcdb.runner import RunnerOptions, UnitOutput, run_job, thread_pool, unit_store


@dataclass(frozen=True)
class _ThreadsJob:
    """Each unit reports the process it ran in and its store's DuckDB thread count."""

    n: int
    name: str = "probe"
    in_process: ClassVar[bool] = True

    def units(self, store):
        return [(f"u{i}", i) for i in range(self.n)]

    def run_unit(self, root: str, key: str, payload: int) -> UnitOutput:
        threads = unit_store(root).sql("SELECT current_setting('threads') AS t")["t"][0].as_py()
        return UnitOutput(key=key, stats={f"pid={os.getpid()}": 1.0, f"threads={threads}": 1.0})


@pytest.mark.parametrize("workers", [1, 2])
def test_in_process_job_runs_here_on_the_workers_threads(tmp_path: Path, workers: int):
    """An in-process job's units all run in this process, on the caller's store with ``workers``
    DuckDB threads, across the runner's intermediate commits; the caller's setting is restored
    afterwards and the units' store released."""
    from lcdb import runner

    store = lcdb.init_store(tmp_path / "s")
    store.con.execute("SET threads = 3")  # neither 1 nor 2: the restored value is the caller's
    job = _ThreadsJob(5)
    summary = run_job(store, job, RunnerOptions(workers=workers, progress=False, commit_every=2))
    assert summary.units == 5
    assert summary.stats == {f"pid={os.getpid()}": 5.0, f"threads={workers}": 5.0}
    assert store.sql("SELECT current_setting('threads') AS t")["t"][0].as_py() == 3
    assert str(store.root) not in runner._PINNED
    # complete: its resume markers went with the last commit
    assert lcdb.open(tmp_path / "s").manifest.jobs.get("probe", []) == []


@dataclass(frozen=True)
class _PidJob:
    """Each unit reports the process it ran in (a pool job: not in-process)."""

    n: int
    name: str = "pids"

    def units(self, store):
        return [(f"u{i}", i) for i in range(self.n)]

    def run_unit(self, root: str, key: str, payload: int) -> UnitOutput:
        return UnitOutput(key=key, stats={f"pid={os.getpid()}": 1.0})


def test_pool_runs_units_here_until_its_workers_are_up_then_in_them(tmp_path: Path):
    """The warming pool runs what is submitted while its fork server starts (seconds of
    imports) in this process, and hands later units to its workers; the runner reports the peak
    memory of the processes that ran units."""
    from lcdb.runner import process_pool

    pool = process_pool(2)
    try:
        first = pool.submit(os.getpid).result()  # the fork server cannot be up within microseconds
        assert first == os.getpid()
        pool._ready.wait(120)
        assert pool.submit(os.getpid).result() != os.getpid()
        store = lcdb.init_store(tmp_path / "s")
        summary = run_job(store, _PidJob(6), RunnerOptions(progress=False), executor=pool)
    finally:
        pool.shutdown()
    assert summary.units == 6 and f"pid={os.getpid()}" not in summary.stats
    # ru_maxrss of a Python worker that imported numpy and pyarrow: tens of MB at least
    assert summary.peak_rss_mb > 20


def test_units_on_a_thread_pool_get_a_store_each(tmp_path: Path):
    """A DuckDB connection runs one query at a time, so units on a thread pool must not share
    one: each thread keeps its own store (and reuses it), and all see the same committed rows."""
    root = str(lcdb.init_store(tmp_path / "s").root)
    both_running = threading.Barrier(2, timeout=30)  # two units at once: on two threads

    def probe() -> tuple[int, int]:
        both_running.wait()
        first, again = unit_store(root), unit_store(root)
        assert first is again  # reused within the thread
        n = first.sql("SELECT count(*) AS n FROM measurements")["n"][0].as_py()
        return id(first), n

    pool = thread_pool(2)
    try:
        futures = [pool.submit(probe) for _ in range(2)]
        wait(futures)
        (id_a, n_a), (id_b, n_b) = (f.result() for f in futures)
    finally:
        pool.shutdown()
    assert id_a != id_b  # both stores are alive (held by their threads), so ids cannot repeat
    assert n_a == n_b == 0


def test_warming_pool_shuts_down_when_its_workers_never_answer():
    """A pool shut down while its first workers start may leave the warm-up's tasks unanswered
    (a test run once hung 20 minutes in shutdown): shutdown must still return, promptly."""
    from concurrent.futures import Future

    from lcdb.runner import _WarmingPool

    class _Silent:  # a process pool whose tasks never finish
        def submit(self, fn, *args, **kwargs):
            return Future()

        def shutdown(self, wait=True, *, cancel_futures=False):
            pass

    pool = _WarmingPool(_Silent(), 2)
    done = threading.Event()
    closer = threading.Thread(target=lambda: (pool.shutdown(), done.set()), daemon=True)
    closer.start()
    # 5 s: the warm-up polls every 0.2 s, so shutdown returns within ~0.2 s
    assert done.wait(5), "shutdown hung on the warm-up's unanswered tasks"
