"""``lcdb ingest PATH...``: load per-frame catalogues into the store."""

from __future__ import annotations

import argparse
import logging

from lcdb.commands._common import add_progress_arg, add_store_arg, store_from
from lcdb.errors import UsageError

_log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ingest",
        help="load per-frame catalogues into the store",
        description="Validate per-frame catalogues (Parquet, FITS or ECSV; docs/formats.md) and "
        "write them into the store atomically. Frames already present (same content hash) are "
        "skipped; bad files are reported and skipped.",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="catalogue files or folders")
    add_store_arg(p)
    p.add_argument("--replace", action="store_true", help="replace frames already in the store")
    p.add_argument("--strict", action="store_true", help="any bad file aborts, landing nothing")
    p.add_argument("--batch-frames", type=int, default=None, help="frames per batch")
    p.add_argument(
        "--batch-rows",
        type=int,
        default=4_000_000,
        help="measurements per batch (a batch closes at whichever limit comes first)",
    )
    p.add_argument("--threads", type=int, default=2, help="reader threads")
    add_progress_arg(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from ingest.load import IngestOptions, ingest_paths

    if args.batch_frames is not None and args.batch_frames < 1:
        raise UsageError(f"--batch-frames must be >= 1, got {args.batch_frames}")
    if args.batch_rows < 1:
        raise UsageError(f"--batch-rows must be >= 1, got {args.batch_rows}")
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}")
    store = store_from(args)
    options = IngestOptions(
        replace=args.replace,
        strict=args.strict,
        batch_frames=args.batch_frames,
        batch_rows=args.batch_rows,
        threads=args.threads,
        progress=not args.no_progress,
    )
    summary = ingest_paths(store, args.paths, options)
    for line in summary.lines():
        _log.info("%s", line)
    # Non-zero when some input was bad, so scripts notice; what was good has landed.
    return 1 if summary.rejected else 0
