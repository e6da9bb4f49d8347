"""``lcdb sql`` and ``lcdb lightcurve``: read-only queries."""

from __future__ import annotations

import argparse

from lcdb.commands._common import add_output_args, add_store_arg, store_from, write_result
from lcdb.errors import UsageError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sql",
        help="run a read-only SQL query",
        description="Run a read-only DuckDB query over the views frames, measurements, refcat, "
        "objects, candidates, lightcurves and the macros cone_search(ra, dec, radius_deg), "
        "refcat_cone, objects_cone, ang_sep_deg.",
    )
    p.add_argument("query", metavar="QUERY")
    add_store_arg(p)
    add_output_args(p)
    p.set_defaults(func=_sql)

    p = sub.add_parser(
        "lightcurve",
        help="light curve of an object or a position",
        description="Print the light curve of an object (--object ID) or of every measurement "
        "within --radius arcsec of a position (--ra, --dec).",
    )
    add_store_arg(p)
    p.add_argument("--ra", type=float, help="deg")
    p.add_argument("--dec", type=float, help="deg")
    p.add_argument("--radius", type=float, default=None, help="arcsec (default: match radius)")
    p.add_argument("--object", type=int, help="object id")
    add_output_args(p)
    p.set_defaults(func=_lightcurve)


def _sql(args: argparse.Namespace) -> int:
    store = store_from(args)
    write_result(store.sql(args.query), args.format, args.output)
    return 0


def _lightcurve(args: argparse.Namespace) -> int:
    by_pos = args.ra is not None or args.dec is not None
    if by_pos == (args.object is not None):
        raise UsageError("give either --object ID or --ra RA --dec DEC")
    if by_pos and (args.ra is None or args.dec is None):
        raise UsageError("--ra and --dec go together")
    if by_pos and not (-90 <= args.dec <= 90):
        raise UsageError(f"--dec must be in [-90, 90], got {args.dec}")
    if args.radius is not None and args.radius <= 0:
        raise UsageError(f"--radius must be > 0, got {args.radius}")
    store = store_from(args)
    if by_pos:
        radius = args.radius or store.config.match_radius_arcsec
        table = store.lightcurve_by_position(args.ra % 360.0, args.dec, radius)
    else:
        table = store.lightcurve_by_object(args.object)
    write_result(table, args.format, args.output)
    return 0
