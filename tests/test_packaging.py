"""The wheel ships the SQL files, so an installed (non-editable) lcdb finds its views."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_contains_sql_package_data(tmp_path):
    if importlib.util.find_spec("setuptools") is None or importlib.util.find_spec("wheel") is None:
        pytest.skip("setuptools/wheel not installed (the test extra has them): no offline build")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            "-q",
        ],
        check=True,
    )
    wheel = next(tmp_path.glob("lcdb-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.name for p in (ROOT / "sql").glob("*.sql")}
    assert shipped and {f"lcdb/sql/{n}" for n in shipped} <= names
    assert {"ingest/load.py", "variability/__init__.py", "lcdb/cli.py"} <= names


def test_sql_files_load_through_importlib_resources():
    from lcdb import sqlfiles

    assert "CREATE OR REPLACE TEMP VIEW lightcurves" in sqlfiles.load("views")
