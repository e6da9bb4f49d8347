"""``lcdb export candidates | objects | lightcurves``: FITS, VOTable, ECSV, CSV or Parquet."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pyarrow as pa

from lcdb.commands._common import add_store_arg, store_from
from lcdb.errors import InputError, UsageError

_log = logging.getLogger(__name__)

_FORMAT_HELP = (
    "fits, votable, ecsv, csv or parquet (default: from the file name's extension: "
    ".fits .vot/.xml .ecsv .csv .parquet)"
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write candidates, objects or light curves to FITS, VOTable, ECSV, CSV or Parquet",
        description="Export tables of the store with units and descriptions per column "
        "(FITS, VOTable, ECSV: astropy.table; Parquet: Arrow field metadata and a VOParquet "
        "header; CSV: plain with a header).",
    )
    s = p.add_subparsers(dest="what", metavar="WHAT")
    s.required = True

    c = s.add_parser(
        "candidates",
        help="the variable-star candidates (best score first)",
        description="Export the candidates of `lcdb find-variables`, optionally with their "
        "light curves (--lightcurves FILE: one long table; DIR: one file per object).",
    )
    _common(c)
    c.add_argument(
        "--lightcurves",
        metavar="FILE|DIR",
        help="also write the candidates' light curves: to FILE as one table (format from its "
        "extension), or to DIR as one <object_id> file per object in the format of -o",
    )
    _lightcurve_options(c)
    c.set_defaults(func=_candidates)

    o = s.add_parser(
        "objects",
        help="the objects (clustered sources) with colours and, optionally, statistics",
        description="Export the objects table, optionally filtered and joined to varstats.",
    )
    _common(o)
    o.add_argument("--min-obs", type=int, default=0, metavar="N", help="at least N measurements")
    o.add_argument("--with-colours", action="store_true", help="only objects with V and B-V")
    o.add_argument(
        "--with-stats", action="store_true", help="add the variability statistics (varstats)"
    )
    o.set_defaults(func=_objects)

    lc = s.add_parser(
        "lightcurves",
        help="light curves of objects given by id or position",
        description="Export the light curves of objects (--object, --ids-file) or of the "
        "nearest object to positions (--ra/--dec, repeatable) to one table (-o FILE) or one "
        "file per object (-o DIR, with --format).",
    )
    _common(lc, out_help="output file, or a directory for one file per object ('-': stdout)")
    lc.add_argument(
        "--object", type=int, nargs="+", action="extend", metavar="ID", default=[], help="objects"
    )
    lc.add_argument("--ids-file", metavar="FILE", help="object ids, one per line ('#' comments)")
    lc.add_argument("--ra", type=float, action="append", default=[], help="deg (repeatable)")
    lc.add_argument("--dec", type=float, action="append", default=[], help="deg (repeatable)")
    lc.add_argument("--radius", type=float, help="arcsec (default: the store's match radius)")
    _lightcurve_options(lc)
    lc.set_defaults(func=_lightcurves)


def _common(p: argparse.ArgumentParser, out_help: str = "output file ('-': stdout)") -> None:
    add_store_arg(p)
    p.add_argument("-o", "--output", required=True, metavar="FILE", help=out_help)
    p.add_argument("--format", default=None, metavar="FMT", help=_FORMAT_HELP)


def _lightcurve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--all", action="store_true", help="every point (default: frame_status ok and flags 0)"
    )
    p.add_argument(
        "--bin",
        type=int,
        metavar="N",
        help="mean of every N consecutive good points (catalogue stacking, Mini-SiTian 4.4)",
    )
    p.add_argument(
        "--drop-partial", action="store_true", help="with --bin: drop a last bin of < N points"
    )


def _format(args: argparse.Namespace, path: str) -> str:
    from lcdb import export

    fmt = export.format_of(path, args.format)
    if fmt is None:
        if path == "-":
            raise UsageError("writing to stdout needs --format")
        raise UsageError(f"cannot tell the format of {path!r}: give --format")
    return fmt


def _check_lightcurve_options(args: argparse.Namespace) -> None:
    if args.bin is not None and args.bin < 1:
        raise UsageError(f"--bin must be >= 1, got {args.bin}")
    if args.bin is not None and args.all:
        raise UsageError("--bin averages good points only; drop --all")
    if args.drop_partial and args.bin is None:
        raise UsageError("--drop-partial goes with --bin")


def _curves(store, ids: list[int], args: argparse.Namespace) -> pa.Table:
    from lcdb import export

    table = export.lightcurves(store, ids, all_points=args.all)
    if args.bin is not None:
        table = export.bin_lightcurves(table, args.bin, keep_partial=not args.drop_partial)
        table = table.to_arrow()
    empty = set(ids) - set(table.column("object_id").to_pylist())
    if empty:
        why = " (binning needs the calibrated mag: objects without a colour have none)"
        _log.warning(
            "%d of %d object(s) have no points to export, e.g. %d%s",
            len(empty), len(ids), min(empty), why if args.bin is not None else "",
        )  # fmt: skip
    return table


def _write(table: pa.Table, output: str, fmt: str, name: str) -> None:
    from lcdb import export

    export.write_table(table, output, fmt, name)
    if output != "-":
        _log.info("wrote %s (%d rows, %s)", output, table.num_rows, fmt)


def _candidates(args: argparse.Namespace) -> int:
    from lcdb import export

    _check_lightcurve_options(args)
    fmt = _format(args, args.output)
    if args.lightcurves == "-":
        raise UsageError("--lightcurves needs a file or directory, not stdout")
    store = store_from(args)
    table = export.candidates_table(store)
    _write(table, args.output, fmt, "candidates")
    if args.lightcurves:
        ids = list(dict.fromkeys(table.column("object_id").to_pylist()))
        export.write_lightcurves(_curves(store, ids, args), args.lightcurves, fmt)
    return 0


def _objects(args: argparse.Namespace) -> int:
    from lcdb import export

    if args.min_obs < 0:
        raise UsageError(f"--min-obs must be >= 0, got {args.min_obs}")
    fmt = _format(args, args.output)
    store = store_from(args)
    table = export.objects_table(store, args.min_obs, args.with_colours, args.with_stats)
    if table.num_rows == 0:
        _log.warning("no object matches the selection; writing an empty table")
    _write(table, args.output, fmt, "objects")
    return 0


def _read_ids(path: str) -> list[int]:
    ids = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from exc
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            ids.append(int(text.split()[0].rstrip(",")))
        except ValueError:
            raise InputError(f"{path}:{number}: not an object id: {text!r}") from None
    if not ids:
        raise InputError(f"{path}: no object ids")
    return ids


def _lightcurves(args: argparse.Namespace) -> int:
    from lcdb import export

    _check_lightcurve_options(args)
    given = [bool(args.object), args.ids_file is not None, bool(args.ra or args.dec)]
    if sum(given) != 1:
        raise UsageError("give exactly one of --object ID..., --ids-file FILE, --ra RA --dec DEC")
    if len(args.ra) != len(args.dec):
        raise UsageError("--ra and --dec go in pairs")
    if args.radius is not None and args.radius <= 0:
        raise UsageError(f"--radius must be > 0, got {args.radius}")
    out = Path(args.output)
    to_dir = args.output != "-" and (out.is_dir() or export.format_of(out) is None)
    if to_dir and args.format is None:
        raise UsageError(f"{args.output} is a directory (no table extension): give --format")
    fmt = _format(args, args.output) if not to_dir else export.format_of(None, args.format)
    store = store_from(args)
    if args.ra:
        radius = args.radius or store.config.match_radius_arcsec
        ids = export.ids_near(store, list(zip(args.ra, args.dec, strict=True)), radius)
    else:
        ids = args.object or _read_ids(args.ids_file)
    ids = export.check_ids(store, ids)
    table = _curves(store, ids, args)
    if to_dir:
        export.write_lightcurves(table, out, fmt)
    else:
        _write(table, args.output, fmt, export.lightcurve_kind(table))
    return 0
