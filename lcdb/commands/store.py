"""``lcdb init``, ``lcdb info`` and ``lcdb compact``."""

from __future__ import annotations

import argparse
import logging

from lcdb.commands._common import add_progress_arg, add_store_arg, store_from
from lcdb.config import StoreConfig
from lcdb.errors import StoreError, UsageError
from lcdb.store import init_store

_log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="create a new store", description="Create an empty lcdb store.")
    p.add_argument("path", metavar="STORE", help="directory to create (absent or empty)")
    p.add_argument("--order", type=int, default=StoreConfig.order, help="HEALPix partition order")
    p.add_argument(
        "--match-radius",
        type=float,
        default=StoreConfig.match_radius_arcsec,
        help="match radius in arcsec (measurements to objects and to the refcat)",
    )
    p.add_argument(
        "--batch-frames", type=int, default=StoreConfig.batch_frames, help="frames per ingest batch"
    )
    p.set_defaults(func=_init)

    p = sub.add_parser("info", help="summary of a store", description="Print what a store holds.")
    add_store_arg(p)
    p.set_defaults(func=_info)

    p = sub.add_parser(
        "compact",
        help="rewrite partitions into few large sorted files",
        description="Rewrite each measurements partition into few large files sorted by object "
        "and time (by position until objects exist); crash-safe.",
    )
    add_store_arg(p)
    p.add_argument("--max-rows", type=int, default=20_000_000, help="rows per output file")
    add_progress_arg(p)
    p.set_defaults(func=_compact)


def _init(args: argparse.Namespace) -> int:
    try:
        config = StoreConfig(
            order=args.order,
            match_radius_arcsec=args.match_radius,
            batch_frames=args.batch_frames,
        )
    except StoreError as exc:
        raise UsageError(str(exc)) from exc
    store = init_store(args.path, config)
    _log.info("store ready: %s", store.root)
    return 0


def _info(args: argparse.Namespace) -> int:
    store = store_from(args)
    cfg = store.config
    lines = [f"store {store.root} (schema {cfg.schema_version}, HEALPix order {cfg.order})"]
    for table in ("frames", "measurements", "refcat", "objects", "candidates"):
        entries = store.manifest.entries(table)
        lines.append(
            f"  {table:<13} {store.count(table):>12,d} rows  {len(entries):>6,d} files  "
            f"{len(store.pixels(table)):>5,d} partitions"
        )
    print("\n".join(lines))  # the command's output, not a diagnostic
    return 0


def _compact(args: argparse.Namespace) -> int:
    from lcdb.compact import compact

    if args.max_rows < 1:
        raise UsageError(f"--max-rows must be >= 1, got {args.max_rows}")
    store = store_from(args)
    s = compact(store, max_rows=args.max_rows, progress=not args.no_progress)
    _log.info(
        "compact: %d partition(s), %d file(s) -> %d, %d rows",
        s.partitions,
        s.files_before,
        s.files_after,
        s.rows,
    )
    return 0
