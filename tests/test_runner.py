"""The job runner: in-process jobs, resume markers and their commit."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

import lcdb
from lcdb.runner import RunnerOptions, UnitOutput, run_job, unit_store


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
    """An in-process job's units all run in this process, on one store with ``workers`` DuckDB
    threads, across the runner's intermediate commits; the store is closed afterwards."""
    store = lcdb.init_store(tmp_path / "s")
    job = _ThreadsJob(5)
    summary = run_job(store, job, RunnerOptions(workers=workers, progress=False, commit_every=2))
    assert summary.units == 5
    assert summary.stats == {f"pid={os.getpid()}": 5.0, f"threads={workers}": 5.0}
    # complete: its resume markers went with the last commit
    assert lcdb.open(tmp_path / "s").manifest.jobs.get("probe", []) == []
