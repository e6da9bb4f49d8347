"""Benchmark of the Parquet codec of the store's measurement files (lcdb.tableio.COMPRESSION).

Reads the largest measurement files of a store (or of a small simulated survey when no store is
given), rewrites them with each codec under the store's encodings and row groups, and prints per
codec the pyarrow write rate, the pyarrow read rate, DuckDB's rate for the per-object aggregation
of bench/pipeline.py's ``aggregate`` stage, and the bytes per measurement; rates are best of three
and printed with their ratio to zstd level 1 (the codec before LZ4) of the same run.

Usage: ``python bench/codecs.py [--store DIR] [--files 8]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lcdb.tableio import ROW_GROUP_ROWS, parquet_options

_CODECS = {"zstd-1": ("zstd", 1), "lz4": ("lz4", None), "snappy": ("snappy", None)}

_AGGREGATE = (
    "SELECT object_id, count(*), sum(x), sum(y), sum(flux), sum(flux_err), sum(frame_id) "
    "FROM read_parquet(?) WHERE (flags & 1019) = 0 GROUP BY object_id"
)


def _best(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def _sample(store: Path | None, n_files: int, work: Path) -> pa.Table:
    if store is None:
        import lcdb
        from ingest import IngestOptions, ingest_paths
        from lcdb.sim.survey import SurveyConfig, simulate_survey

        cfg = SurveyConfig(n_frames=300, n_stars=10_000, seed=1)
        simulate_survey(cfg, work / "sim", progress=False)
        store = work / "store"
        lcdb.init_store(store)
        ingest_paths(lcdb.open(store), [work / "sim" / "frames"], IngestOptions(progress=False))
    files = sorted((store / "measurements").rglob("*.parquet"), key=lambda p: p.stat().st_size)
    if not files:
        raise SystemExit(f"{store}: no measurement files (not an lcdb store, or an empty one)")
    return pa.concat_tables(pq.read_table(f, partitioning=None) for f in files[-n_files:])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", type=Path, default=None, help="an lcdb store (default: simulate)")
    p.add_argument("--files", type=int, default=8, help="how many of its largest files")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lcdb-codecs-") as tmp:
        work = Path(tmp)
        table = _sample(args.store, args.files, work)
        if table["object_id"].null_count == len(table):  # not clustered: ~1.6" cells as objects
            cells = pc.shift_right(table["healpix_29"], 24)
            table = table.set_column(table.schema.get_field_index("object_id"), "object_id", cells)
        con = duckdb.connect()
        con.execute("SET threads = 2")
        n = table.num_rows
        print(f"{n:,} measurements, {len(table.column_names)} columns")
        base = None
        for name, (codec, level) in _CODECS.items():
            path = work / f"{name}.parquet"

            def write(path=path, codec=codec, level=level) -> None:
                options = parquet_options(table, codec, level)
                pq.write_table(table, path, row_group_size=ROW_GROUP_ROWS, **options)

            rates = (
                n / _best(write),
                n / _best(lambda path=path: pq.read_table(path, partitioning=None)),
                n / _best(lambda path=path: con.sql(_AGGREGATE, params=[str(path)]).fetchall()),
            )
            base = base or rates
            ratio = "  ".join(f"{r / b:.2f}x" for r, b in zip(rates, base, strict=True))
            print(
                f"{name:<7} write {rates[0] / 1e6:5.1f}  read {rates[1] / 1e6:5.1f}  "
                f"DuckDB aggregate {rates[2] / 1e6:5.1f} M/s   "
                f"{path.stat().st_size / n:5.1f} B/measurement   vs zstd-1: {ratio}"
            )


if __name__ == "__main__":
    main()
