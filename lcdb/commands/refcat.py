"""``lcdb refcat load FILE``: load the reference catalogue."""

from __future__ import annotations

import argparse
import logging

from lcdb.commands._common import add_store_arg, store_from

_log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "refcat", help="reference catalogue", description="Manage the reference catalogue."
    )
    rsub = p.add_subparsers(dest="refcat_command", metavar="ACTION")
    rsub.required = True
    q = rsub.add_parser(
        "load",
        help="load a reference catalogue (replaces the current one)",
        description="Load a reference catalogue from Parquet, FITS or CSV with V and B-V, or with "
        "Tycho-2 BT/VT (converted by Hog et al. 2000). Columns are recognised by common names or "
        "mapped with --columns.",
    )
    q.add_argument("file", metavar="FILE")
    add_store_arg(q)
    q.add_argument(
        "--columns",
        default="",
        metavar="MAP",
        help="explicit mapping, e.g. ra=ra_degrees,dec=dec_degrees,v=magnitude,bv=bv",
    )
    q.add_argument("--epoch", type=float, default=2000.0, help="epoch of positions (Julian year)")
    q.set_defaults(func=_load)


def _load(args: argparse.Namespace) -> int:
    from ingest.refcat import RefcatOptions, load_refcat, parse_mapping

    options = RefcatOptions(columns=parse_mapping(args.columns), default_epoch=args.epoch)
    store = store_from(args)
    s = load_refcat(store, args.file, options)
    _log.info(
        "loaded %d stars (%s); %d blended; %d with B-V; %d partitions",
        s["stars"],
        s["source"],
        s["blended"],
        s["with_bv"],
        s["partitions"],
    )
    return 0
