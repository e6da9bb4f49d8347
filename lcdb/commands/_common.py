"""Arguments and output helpers shared by the subcommands."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pyarrow as pa

from lcdb.errors import UsageError
from lcdb.store import ENV_VAR, Store, open_store

FORMATS = ("table", "csv", "json", "parquet")


def add_store_arg(parser: argparse.ArgumentParser) -> None:
    """``--store PATH`` (default: the LCDB_STORE environment variable)."""
    parser.add_argument(
        "--store", metavar="PATH", help=f"the lcdb store (default: ${ENV_VAR})", default=None
    )


def add_progress_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def store_from(args: argparse.Namespace) -> Store:
    return open_store(args.store)


def add_output_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=FORMATS, default=None, help="output format")
    parser.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")


def write_result(table: pa.Table, fmt: str | None, output: str | None) -> None:
    """Write a query result as a table, CSV, JSON (records) or Parquet."""
    import polars as pl

    if fmt is None:
        fmt = _format_from_name(output) if output else "table"
    df = pl.from_arrow(table)
    if fmt == "parquet":
        if not output:
            raise UsageError("--format parquet needs -o FILE")
        df.write_parquet(output)
        return
    if fmt == "csv":
        text = df.write_csv()
    elif fmt == "json":
        text = df.write_json()
    else:
        with pl.Config(tbl_rows=200, tbl_cols=-1, tbl_width_chars=200):
            text = str(df) + "\n"
    if output:
        Path(output).write_text(text)
    else:
        sys.stdout.write(text)


def _format_from_name(name: str) -> str:
    suffix = Path(name).suffix.lower()
    return {".csv": "csv", ".json": "json", ".parquet": "parquet", ".pq": "parquet"}.get(
        suffix, "table"
    )
