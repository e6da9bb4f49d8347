"""Shared fixtures: stores, and small per-frame catalogues written in the ingest format."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lcdb

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def write_catalog(
    path: Path,
    stars: dict[str, np.ndarray],
    rng: np.random.Generator,
    mjd: float,
    frame_name: str | None = None,
    exptime: float = 30.0,
    extra_meta: dict[str, str] | None = None,
    drop_columns: tuple[str, ...] = (),
) -> Path:
    """Write one frame catalogue of ``stars`` (ra, dec, mag) with noise, in Parquet."""
    n = stars["ra"].size
    flux = 10 ** (-0.4 * (stars["mag"] - 25.0)) * exptime
    err = np.sqrt(flux + 100.0)
    cols = {
        "RA": stars["ra"] + rng.normal(0, 1e-5, n),
        "Dec": stars["dec"] + rng.normal(0, 1e-5, n),
        "x": rng.uniform(0, 2048, n),
        "y": rng.uniform(0, 2048, n),
        "flux": flux + rng.normal(0, 1, n) * err,
        "flux_err": err,
        "flags": np.zeros(n, np.int32),
        "fwhm": np.full(n, 2.5),
        "background": np.full(n, 100.0),
    }
    for c in drop_columns:
        cols.pop(c)
    meta = {
        "MJD-OBS": repr(mjd),
        "EXPTIME": repr(exptime),
        "FILTER": "clear",
        "CHANNEL": "ch1",
        "NAXIS1": "2048",
        "NAXIS2": "2048",
    }
    if frame_name:
        meta["FRAMEID"] = frame_name
    meta.update(extra_meta or {})
    table = pa.table(cols).replace_schema_metadata(meta)
    pq.write_table(table, path)
    return path


def make_stars(rng: np.random.Generator, n: int, ra0: float, dec0: float, size: float) -> dict:
    """Uniform stars in a box of ``size`` deg around (ra0, dec0)."""
    return {
        "ra": (ra0 + rng.uniform(-size / 2, size / 2, n) / np.cos(np.radians(dec0))) % 360,
        "dec": dec0 + rng.uniform(-size / 2, size / 2, n),
        "mag": rng.uniform(8, 14, n),
    }


@pytest.fixture
def store(tmp_path: Path) -> lcdb.Store:
    """An empty store at order 5."""
    return lcdb.init_store(tmp_path / "store", lcdb.StoreConfig(order=5, batch_frames=4))


@pytest.fixture
def frames_dir(tmp_path: Path) -> Path:
    """Ten frames of the same 400 stars around (120, 30), spanning a few partitions."""
    rng = np.random.default_rng(42)
    stars = make_stars(rng, 400, 120.0, 30.0, 6.0)
    out = tmp_path / "frames"
    out.mkdir()
    for i in range(10):
        write_catalog(out / f"f{i:03d}.parquet", stars, rng, mjd=60000.0 + i * 0.01)
    return out
