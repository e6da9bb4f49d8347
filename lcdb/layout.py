"""The store's directory layout: the one place that knows where each table's files live.

Every path inside a store is built here (compare hats' ``io/paths.py``). Paths in the manifest are
relative to the store root so a store can be moved or mounted elsewhere.
"""

from __future__ import annotations

from pathlib import Path

from lcdb.atomic import unique_name

#: Tables partitioned by HEALPix pixel (hive directories ``pixel=<P>``).
PARTITIONED = ("measurements", "refcat", "objects", "varstats", "candidates")
#: Tables stored as flat folders of files.
FLAT = ("frames", "photcal", "photcal_staging", "refine_log", "noise_curve")
TABLES = FLAT + PARTITIONED

MANIFEST = "_manifest.json"
LOCK = ".lock"
TMP_DIR = "_tmp"
#: A scratch directory of TMP_DIR holding this file survives garbage collection (its job
#: deletes it when done; margin files and partial sums of `lcdb cluster`).
KEEP_MARKER = ".keep"
JOBS_DIR = "_jobs"
PARTITION_KEY = "pixel"


def table_dir(root: Path, table: str) -> Path:
    """Folder of one table."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}")
    return root / table


def partition_dir(root: Path, table: str, pixel: int) -> Path:
    """Hive-style folder of one partition: ``TABLE/pixel=<P>``."""
    return table_dir(root, table) / f"{PARTITION_KEY}={int(pixel)}"


def new_partition_file(root: Path, table: str, pixel: int, prefix: str) -> Path:
    """A fresh, never-used file name inside a partition."""
    return partition_dir(root, table, pixel) / unique_name(prefix)


def new_flat_file(root: Path, table: str, prefix: str) -> Path:
    """A fresh, never-used file name inside a flat table's folder."""
    return table_dir(root, table) / unique_name(prefix)


def pixel_of(relpath: str) -> int | None:
    """The partition pixel encoded in a relative path, or None for flat tables."""
    for part in Path(relpath).parts:
        if part.startswith(PARTITION_KEY + "="):
            return int(part.split("=", 1)[1])
    return None


def job_dir(root: Path, job: str) -> Path:
    """Folder of the resume markers of one job."""
    return root / JOBS_DIR / job


def scratch_dir(root: Path | str, name: str) -> Path:
    """Folder of a job's scratch files, inside TMP_DIR."""
    return Path(root) / TMP_DIR / name


def keep_scratch(root: Path | str, name: str) -> Path:
    """Create a scratch folder that garbage collection spares (it holds KEEP_MARKER) until its
    job deletes it."""
    d = scratch_dir(root, name)
    d.mkdir(parents=True, exist_ok=True)
    (d / KEEP_MARKER).touch()
    return d


def all_dirs(root: Path) -> list[Path]:
    """Folders ``lcdb init`` creates."""
    return [root / t for t in TABLES] + [root / TMP_DIR, root / JOBS_DIR]
