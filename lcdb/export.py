"""Export of candidates, objects and light curves in the formats astronomers load.

FITS, VOTable and ECSV are written by ``astropy.table`` with a unit and a description per column;
Parquet carries them in each Arrow field's metadata (``unit``, ``description``) and in a data-less
VOTable header (the IVOA VOParquet 1.0 convention, read by TOPCAT); CSV is plain with a header.
Units and descriptions live in one place, :mod:`lcdb.units`.

Light curves can be binned by :func:`bin_lightcurves`: the catalogue stacking of Mini-SiTian §4.4.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from lcdb import schema, sqlfiles
from lcdb.errors import InputError, UsageError
from lcdb.store import Store
from lcdb.units import column_info

_log = logging.getLogger(__name__)


#: Format name -> file suffixes recognised (the first is used for files we name).
FORMATS: dict[str, tuple[str, ...]] = {
    "fits": (".fits", ".fit", ".fts", ".fits.gz"),
    "votable": (".vot", ".votable", ".xml"),
    "ecsv": (".ecsv",),
    "csv": (".csv",),
    "parquet": (".parquet", ".pq"),
}
LIGHTCURVE_COLUMNS = (
    "object_id", "frame_id", "mjd", "filter", "channel", "mag", "mag_err", "mag_instr", "z0",
    "flags", "frame_status",
)  # fmt: skip


def format_of(path: str | os.PathLike[str] | None, fmt: str | None = None) -> str | None:
    """The format given, else the one of ``path``'s suffix, else None."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise UsageError(f"unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
        return fmt
    name = str(path or "").lower()
    for f, suffixes in FORMATS.items():
        if name.endswith(suffixes):
            return f
    return None


# -- reading the store ---------------------------------------------------------------------------
_OBJECT_NAMES = frozenset(schema.OBJECTS.names)


def require_objects(store: Store) -> None:
    """Raise a clear error when the store has not been clustered."""
    if store.count("objects") == 0:
        raise InputError(f"{store.root}: no objects yet (run `lcdb cluster` first)")


def candidates_table(store: Store) -> pa.Table:
    """The candidates, best score first."""
    require_objects(store)
    if store.count("candidates") == 0:
        raise InputError(f"{store.root}: no candidates (run `lcdb find-variables` first)")
    return store.sql(
        "SELECT * EXCLUDE (pixel) FROM candidates ORDER BY score DESC NULLS LAST, object_id"
    )


def objects_table(
    store: Store, min_obs: int = 0, with_colours: bool = False, with_stats: bool = False
) -> pa.Table:
    """Objects with at least ``min_obs`` measurements (and a colour), optionally with varstats."""
    require_objects(store)
    if with_stats and store.count("varstats") == 0:
        raise InputError(f"{store.root}: no variability statistics (run `lcdb find-variables`)")
    params = {"min_obs": int(min_obs), "with_colours": bool(with_colours)}
    table = store.sql(sqlfiles.load("export_objects"), params)
    if not with_stats:
        table = table.select([n for n in table.column_names if n in _OBJECT_NAMES])
    return table


def check_ids(store: Store, ids: Sequence[int]) -> list[int]:
    """``ids`` without duplicates, in order; raises if any is not an object of the store."""
    require_objects(store)
    wanted = list(dict.fromkeys(int(i) for i in ids))
    found = store.sql(
        "SELECT object_id FROM objects WHERE object_id IN (SELECT unnest($ids::BIGINT[]))",
        {"ids": wanted},
    )
    missing = sorted(set(wanted) - set(found.column(0).to_pylist()))
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{len(missing)} object id(s) not in the store: {shown}")
    return wanted


def ids_near(
    store: Store, positions: Sequence[tuple[float, float]], radius_arcsec: float
) -> list[int]:
    """The nearest object within ``radius_arcsec`` of each (ra, dec) position (deg)."""
    require_objects(store)
    ids = []
    for ra, dec in positions:
        if not -90 <= dec <= 90:
            raise UsageError(f"dec must be in [-90, 90], got {dec}")
        hit = store.sql(
            "SELECT object_id FROM objects_cone($ra, $dec, $r) ORDER BY sep_deg LIMIT 1",
            {"ra": float(ra) % 360.0, "dec": float(dec), "r": radius_arcsec / 3600.0},
        )
        if hit.num_rows == 0:
            raise InputError(f"no object within {radius_arcsec:g} arcsec of ({ra}, {dec})")
        ids.append(hit.column(0)[0].as_py())
    return ids


def lightcurves(store: Store, ids: Sequence[int], all_points: bool = False) -> pa.Table:
    """Light curves of ``ids`` (good points only unless ``all_points``), by object and time."""
    return store.sql(
        sqlfiles.load("export_lightcurves"), {"ids": [int(i) for i in ids], "all": all_points}
    )


# -- binning -------------------------------------------------------------------------------------
def bin_lightcurves(lc: pl.DataFrame | pa.Table, n: int, keep_partial: bool = True) -> pl.DataFrame:
    """Mean of every ``n`` consecutive good points of each light curve (catalogue stacking).

    Points with a null or non-finite ``mag`` or ``mag_err``, a flag, or a rejected frame are
    dropped first; the rest are taken in time order and grouped ``n`` at a time. Per bin:
    ``mjd`` and ``mag`` are plain means, ``mag_err = sqrt(sum err^2) / n_points`` (the error of
    the mean, shrinking as 1/sqrt(n) for equal errors), ``mag_err_scatter = std / sqrt(n_points)``
    (sample std; null for a single point), ``mjd_min``/``mjd_max`` the time range.

    Parameters
    ----------
    lc : polars.DataFrame or pyarrow.Table
        Columns ``object_id``, ``mjd``, ``mag``, ``mag_err`` (``flags``, ``frame_status`` used
        when present).
    n : int
        Points per bin (>= 1).
    keep_partial : bool
        The last bin of a light curve may hold fewer than ``n`` points (``n_points`` says how
        many, its errors are computed from them); False drops it.

    Returns
    -------
    polars.DataFrame
        ``object_id, mjd, mjd_min, mjd_max, mag, mag_err, mag_err_scatter, n_points``.
    """
    if n < 1:
        raise UsageError(f"bin size must be >= 1, got {n}")
    df = lc if isinstance(lc, pl.DataFrame) else pl.from_arrow(lc)
    good = pl.col("mag").is_finite() & pl.col("mag_err").is_finite()
    if "flags" in df.columns:
        good &= pl.col("flags") == 0
    if "frame_status" in df.columns:
        good &= pl.col("frame_status") == "ok"
    df = df.filter(good.fill_null(False)).sort("object_id", "mjd")
    binned = (
        df.with_columns(_bin=pl.int_range(pl.len()).over("object_id") // n)
        .group_by("object_id", "_bin", maintain_order=True)
        .agg(
            mjd=pl.col("mjd").mean(),
            mjd_min=pl.col("mjd").min(),
            mjd_max=pl.col("mjd").max(),
            mag=pl.col("mag").mean(),
            mag_err=(pl.col("mag_err") ** 2).sum().sqrt() / pl.len(),
            mag_err_scatter=pl.col("mag").std(ddof=1) / pl.len().sqrt(),
            n_points=pl.len().cast(pl.Int32),
        )
    )
    if not keep_partial:
        binned = binned.filter(pl.col("n_points") == n)
    return binned.drop("_bin")


# -- writing -------------------------------------------------------------------------------------
def _is_str(typ: pa.DataType) -> bool:
    return pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_string_view(typ)


def _astropy(table: pa.Table, name: str):
    """An astropy Table with masks for nulls and the unit/description/UCD of every column."""
    from astropy.table import Column, MaskedColumn, Table

    out = Table()
    for col_name in table.column_names:
        arr = table.column(col_name).combine_chunks()
        mask = arr.is_null().to_numpy(zero_copy_only=False)
        if _is_str(arr.type):
            values = np.array(["" if v is None else v for v in arr.to_pylist()], dtype=str)
        elif pa.types.is_boolean(arr.type):
            values = arr.fill_null(False).to_numpy(zero_copy_only=False)
        elif pa.types.is_floating(arr.type):
            values = arr.fill_null(np.nan).to_numpy(zero_copy_only=False)
        else:
            values = arr.fill_null(0).to_numpy(zero_copy_only=False)
        if mask.any():
            col = MaskedColumn(values, mask=mask, name=col_name)
        else:
            col = Column(values, name=col_name)
        info = column_info(name, col_name)
        if info is not None:
            col.unit, col.description = info.unit, info.description
            if info.ucd:
                col.meta["ucd"] = info.ucd
        out[col_name] = col
    return out


def _voparquet_header(table: pa.Table, name: str) -> bytes:
    """The data-less VOTable describing ``table``'s columns (IVOA VOParquet 1.0)."""
    from astropy.io.votable import from_table

    vot = from_table(_astropy(table.slice(0, 0), name), table_id=name)
    for field, typ in zip(vot.get_first_table().fields, table.schema.types, strict=True):
        if _is_str(typ):
            field.datatype, field.arraysize = "char", "*"
        elif pa.types.is_boolean(typ):
            field.datatype = "boolean"
    buf = io.BytesIO()
    vot.to_xml(buf)
    return buf.getvalue()


def _parquet(table: pa.Table, name: str) -> pa.Table:
    """``table`` with unit/description in each field's metadata and the VOParquet header."""
    fields = []
    for f in table.schema:
        info = column_info(name, f.name)
        meta = {} if info is None else {"description": info.description}
        if info is not None and info.unit:
            meta["unit"] = info.unit
        fields.append(f.with_metadata(meta or None))
    meta = {
        "IVOA.VOTable-Parquet.version": "1.0",
        "IVOA.VOTable-Parquet.content": _voparquet_header(table, name),
    }
    return table.cast(pa.schema(fields, metadata=meta))


def _fits(table: pa.Table, name: str, buf: io.BytesIO) -> None:
    """A FITS binary table; descriptions and UCDs also as TCOMMn / TUCDn (read by TOPCAT)."""
    from astropy.io import fits

    from lcdb import __version__

    first = io.BytesIO()
    _astropy(table, name).write(first, format="fits")  # astropy keeps its own column metadata
    first.seek(0)
    with fits.open(first) as hdus:
        header = hdus[1].header
        header["EXTNAME"] = name.upper()
        header["ORIGIN"] = f"lcdb {__version__}"
        for i, col_name in enumerate(table.column_names, 1):
            info = column_info(name, col_name)
            if info is not None:
                header[f"TCOMM{i}"] = info.description
                if info.ucd:
                    header[f"TUCD{i}"] = info.ucd
        hdus.writeto(buf)


def _encode(table: pa.Table, fmt: str, name: str) -> bytes:
    """The bytes of ``table`` written in ``fmt``."""
    buf = io.BytesIO()
    if fmt == "parquet":
        pq.write_table(_parquet(table, name), buf, compression="zstd")
    elif fmt == "csv":
        pl.from_arrow(table).write_csv(buf)
    elif fmt == "fits":
        _fits(table, name, buf)
    elif fmt == "votable":
        t = _astropy(table, name)
        t.write(buf, format="votable", tabledata_format="binary2", table_id=name)
    else:
        text = io.StringIO()
        _astropy(table, name).write(text, format="ascii.ecsv")
        buf.write(text.getvalue().encode())
    return buf.getvalue()


def write_table(table: pa.Table, path: str | os.PathLike[str], fmt: str, name: str) -> Path | None:
    """Write ``table`` to ``path`` ('-': standard output) in ``fmt``, replacing it atomically.

    ``name`` (``candidates``, ``objects``, ``lightcurves``, ``lightcurves_binned``) selects the
    column descriptions and names the table in the file (FITS EXTNAME, VOTable ID). FITS cannot
    store a null boolean (they become False); FITS and VOTable read null strings back as empty.
    """
    data = _encode(table, fmt, name)
    if str(path) == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
        return None
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    _log.debug("wrote %s (%d rows, %s)", path, table.num_rows, fmt)
    return path


def lightcurve_kind(table: pa.Table) -> str:
    """``lightcurves_binned`` for the output of :func:`bin_lightcurves`, else ``lightcurves``."""
    return "lightcurves_binned" if "n_points" in table.column_names else "lightcurves"


def write_lightcurves(table: pa.Table, dest: str | os.PathLike[str], fmt: str) -> list[Path]:
    """Write one long table to ``dest``, or one ``<object_id>.<ext>`` per object if a directory.

    ``dest`` is a directory when it exists as one or has no table suffix (then ``fmt`` is used;
    a file is written in the format of its suffix). Returns the files written.
    """
    dest, name = Path(dest), lightcurve_kind(table)
    if not dest.is_dir() and format_of(dest) is not None:
        write_table(table, dest, format_of(dest) or fmt, name)
        _log.info("wrote %s (%d points)", dest, table.num_rows)
        return [dest]
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for (oid,), part in pl.from_arrow(table).partition_by("object_id", as_dict=True).items():
        path = dest / f"{oid}{FORMATS[fmt][0]}"
        write_table(part.to_arrow(), path, fmt, name)
        written.append(path)
    _log.info("wrote %d light curve(s) to %s/", len(written), dest)
    return written
