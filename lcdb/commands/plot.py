"""``lcdb plot diagram | lightcurve | colours``: PNG plots of a store (lcdb.plots draws them)."""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import polars as pl

from lcdb.commands._common import add_store_arg, store_from
from lcdb.errors import InputError, UsageError

_log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plot",
        help="PNG plots: scatter-vs-magnitude diagram, light curves, colours",
        description="Draw PNG plots of the store into --out DIR.",
    )
    s = p.add_subparsers(dest="what", metavar="WHAT")
    s.required = True

    d = s.add_parser(
        "diagram",
        help="scatter vs magnitude with the noise curve and the candidates (seed Fig. 6)",
        description="Variability index of every object against its mean magnitude, the noise "
        "curve and threshold of `lcdb find-variables`, candidates circled (known ones marked "
        "apart). Writes DIR/diagram-<index>[-<label>].png.",
    )
    _common(d)
    d.add_argument(
        "--index", choices=("std", "iqr", "inv_eta"), default="std", help="y axis (default std)"
    )
    d.add_argument("--label", help="title, also added to the file name (e.g. 'after refine')")
    d.set_defaults(func=_diagram)

    lc = s.add_parser(
        "lightcurve",
        help="light curves, folded on the candidate's period when there is one",
        description="Light curve of objects (--object ID...) or of the top N candidates by "
        "score (--candidates N), with a phase-folded panel when the candidate has a period. "
        "Writes DIR/lc-<object_id>.png.",
    )
    _common(lc)
    lc.add_argument(
        "--object", type=int, nargs="+", action="extend", default=[], metavar="ID", help="objects"
    )
    lc.add_argument("--candidates", type=int, metavar="N", help="the N best candidates")
    lc.add_argument("--all", action="store_true", help="also flagged points and rejected frames")
    lc.set_defaults(func=_lightcurve)

    c = s.add_parser(
        "colours",
        help="reconstructed against catalogue V and B-V (seed Fig. 5)",
        description="V_rec - V_cat against V_cat and B-V_rec against B-V_cat for the objects "
        "matched to the reference catalogue (blended catalogue stars left out). "
        "Writes DIR/colours.png.",
    )
    _common(c)
    c.set_defaults(func=_colours)


def _common(p: argparse.ArgumentParser) -> None:
    add_store_arg(p)
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the PNG files")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


def _opened(args: argparse.Namespace):
    from lcdb.export import require_objects

    store = store_from(args)
    require_objects(store)
    return store


def _diagram(args: argparse.Namespace) -> int:
    from lcdb.plots import plot_diagram

    store = _opened(args)
    if store.count("varstats") == 0:
        raise InputError(f"{store.root}: no variability statistics (run `lcdb find-variables`)")
    varstats = store.pl("SELECT object_id, mean_mag, det_mag, std, iqr, eta FROM varstats")
    curve = store.pl("SELECT * FROM noise_curve ORDER BY index, mag")
    cands = store.pl("SELECT object_id, index, known FROM candidates")
    name = f"diagram-{args.index}" + (f"-{_slug(args.label)}" if args.label else "") + ".png"
    title = args.label and f"Scatter vs magnitude ({args.index}): {args.label}"
    plot_diagram(varstats, curve, cands, Path(args.out) / name, title=title, index=args.index)
    return 0


def _lightcurve(args: argparse.Namespace) -> int:
    from lcdb import export
    from lcdb.plots import plot_lightcurve

    if bool(args.object) == (args.candidates is not None):
        raise UsageError("give either --object ID... or --candidates N")
    if args.candidates is not None and args.candidates < 1:
        raise UsageError(f"--candidates must be >= 1, got {args.candidates}")
    store = _opened(args)
    if args.candidates is not None:
        if store.count("candidates") == 0:
            raise InputError(f"{store.root}: no candidates (run `lcdb find-variables` first)")
        ids = store.sql(
            "SELECT object_id FROM candidates GROUP BY object_id "
            "ORDER BY max(score) DESC NULLS LAST, object_id LIMIT $n",
            {"n": args.candidates},
        ).column(0)
        ids = ids.to_pylist()
    else:
        ids = export.check_ids(store, args.object)
    curves = pl.from_arrow(export.lightcurves(store, ids, all_points=args.all))
    info = _object_info(store, ids)
    for oid in ids:
        lc = curves.filter(pl.col("object_id") == oid)
        row = info.get(oid, {})
        if lc.height == 0:
            _log.warning("object %d has no points to plot; skipped", oid)
            continue
        try:
            plot_lightcurve(
                lc, Path(args.out) / f"lc-{oid}.png", period=row.get("period"),
                title=_title(oid, row), period_note=_period_note(row),
            )  # fmt: skip
        except InputError as exc:
            _log.warning("object %d: %s; skipped", oid, exc)
    return 0


def _object_info(store, ids: list[int]) -> dict[int, dict]:
    """V, and the best candidate row (period, kind, known name) of each object."""
    rows = store.pl(
        "SELECT o.object_id, o.v, o.bv, c.period, c.fap, c.kind, c.known_name, c.score "
        "FROM objects o LEFT JOIN candidates c USING (object_id) "
        "WHERE o.object_id IN (SELECT unnest($ids::BIGINT[])) "
        "ORDER BY c.score DESC NULLS LAST",
        {"ids": ids},
    )
    out: dict[int, dict] = {}
    for row in rows.iter_rows(named=True):
        out.setdefault(row["object_id"], row)
    return out


def _title(oid: int, row: dict) -> str:
    parts = [f"object {oid}"]
    if row.get("known_name"):
        parts.append(str(row["known_name"]))
    if row.get("v") is not None:
        parts.append(f"V = {row['v']:.2f}")
    if row.get("bv") is not None:
        parts.append(f"B-V = {row['bv']:.2f}")
    if row.get("kind"):
        parts.append(str(row["kind"]))
    if row.get("score") is not None:
        parts.append(f"score {row['score']:.1f}")
    return "   ".join(parts)


def _period_note(row: dict) -> str | None:
    """False-alarm probability and verdict of the candidate's period."""
    if row.get("fap") is None:
        return None
    verdict = "periodic" if row.get("kind") == "periodic" else "not significant"
    return f"FAP {row['fap']:.2g}, {verdict}"


def _colours(args: argparse.Namespace) -> int:
    from lcdb import sqlfiles
    from lcdb.plots import plot_colours

    store = _opened(args)
    df = store.pl(sqlfiles.load("colours_vs_refcat"))
    blended = int(df["blended"].fill_null(False).sum()) if df.height else 0
    df = df.filter(~pl.col("blended").fill_null(False))
    if df.height == 0:
        raise InputError(
            f"{store.root}: no object with reconstructed colours matched to the reference "
            "catalogue (run `lcdb colours` after `lcdb refcat load`)"
        )
    title = f"Reconstructed vs catalogue photometry ({df.height} objects"
    title += f"; {blended} blended catalogue stars left out)" if blended else ")"
    plot_colours(df, Path(args.out) / "colours.png", title=title)
    return 0
