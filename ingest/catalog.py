"""Reading and validating one per-frame catalogue (docs/formats.md §1).

A catalogue is Parquet, a FITS binary table or ECSV; column names and metadata keywords are
case-insensitive. :func:`read_catalog` returns the measurements as Arrow arrays in store units
(fluxes in ADU/s) and the frame metadata, or raises :class:`~lcdb.errors.InputError` naming the
file and the first problem found.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lcdb.errors import InputError

SUFFIXES = (".parquet", ".pq", ".fits", ".fit", ".fts", ".fits.gz", ".ecsv")
_REQUIRED_COLUMNS = ("ra", "dec", "x", "y", "flags")
_MAG_TO_FLUX_ERR = 0.4 * math.log(10.0)  # d(flux)/flux per magnitude


@dataclass(frozen=True)
class FrameCatalog:
    """One validated frame.

    Attributes
    ----------
    path : Path
        The file read.
    sha256 : str
        Hash of the file's bytes: the identity used to skip frames already ingested.
    meta : dict
        Frame metadata in store names (``frame_name``, ``channel``, ``filter``, ``mjd`` (UTC,
        mid-exposure), ``exptime``, ``naxis1``, ``naxis2``, ``ra0``, ``dec0``, ``airmass``).
    columns : dict
        Measurement columns as numpy arrays: ``ra``, ``dec``, ``x``, ``y``, ``flux``, ``flux_err``
        (ADU/s), ``flags``, ``fwhm``, ``background`` (NaN where absent).
    """

    path: Path
    sha256: str
    meta: dict[str, Any]
    columns: dict[str, np.ndarray]

    @property
    def n_rows(self) -> int:
        return int(self.columns["ra"].size)


def is_catalog(path: Path) -> bool:
    """Whether ``path`` has a catalogue extension."""
    name = path.name.lower()
    return any(name.endswith(s) for s in SUFFIXES)


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def read_catalog(path: str | Path) -> FrameCatalog:
    """Read and validate one per-frame catalogue."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: empty file")
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            table, meta = _read_parquet(path)
        elif name.endswith((".fits", ".fit", ".fts", ".fits.gz")):
            table, meta = _read_fits(path)
        elif name.endswith(".ecsv"):
            table, meta = _read_ecsv(path)
        else:
            raise InputError(f"{path}: unknown catalogue format (expected one of {SUFFIXES})")
    except InputError:
        raise
    except Exception as exc:  # any reader failure means a corrupt or foreign file
        raise InputError(f"{path}: cannot read catalogue ({type(exc).__name__}: {exc})") from exc
    frame = _frame_meta(path, meta)
    columns = _columns(path, table, frame["exptime"])
    return FrameCatalog(path=path, sha256=file_sha256(path), meta=frame, columns=columns)


# -- containers ------------------------------------------------------------------------------------
def _read_parquet(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    table = pq.read_table(path)
    raw = table.schema.metadata or {}
    meta = {}
    for k, v in raw.items():
        key = k.decode(errors="replace")
        if key in ("pandas", "ARROW:schema"):
            continue
        meta[key.upper()] = v.decode(errors="replace")
    return _lower_columns(table), meta


def _read_fits(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from astropy.io import fits

    with fits.open(path, memmap=False) as hdul:
        tab_hdu = next((h for h in hdul if isinstance(h, fits.BinTableHDU)), None)
        if tab_hdu is None:
            raise InputError(f"{path}: no binary table extension")
        meta = {k.upper(): v for k, v in hdul[0].header.items() if k}
        # The table header's own NAXIS1/2 describe the table, not the image: skip them there.
        for k, v in tab_hdu.header.items():
            if k and k.upper() not in ("NAXIS1", "NAXIS2"):
                meta[k.upper()] = v
        data = tab_hdu.data
        cols = {}
        for name in data.columns.names:
            arr = np.asarray(data[name])
            cols[name.lower()] = arr.astype(arr.dtype.newbyteorder("="), copy=False)
    return cols, meta


def _read_ecsv(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from astropy.table import Table

    t = Table.read(path, format="ascii.ecsv")
    meta = {str(k).upper(): v for k, v in t.meta.items()}
    cols = {name.lower(): np.asarray(t[name]) for name in t.colnames}
    return cols, meta


def _lower_columns(table: pa.Table) -> dict[str, np.ndarray]:
    cols = {}
    for name, col in zip(table.column_names, table.columns, strict=True):
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            arr = col.to_numpy(zero_copy_only=False)
            if col.null_count:
                arr = np.where(np.asarray(col.is_null()), np.nan, arr.astype(np.float64))
            cols[name.lower()] = arr
    return cols


# -- validation --------------------------------------------------------------------------------
def _keyword(meta: dict[str, Any], *names: str) -> Any:
    for n in names:
        v = meta.get(n)
        if v is not None and str(v).strip() != "":
            return v
    return None


def _number(path: Path, meta: dict[str, Any], *names: str, required: bool = True) -> float | None:
    v = _keyword(meta, *names)
    if v is None:
        if required:
            raise InputError(f"{path}: missing keyword {names[0]}")
        return None
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise InputError(f"{path}: keyword {names[0]} is not a number ({v!r})") from None
    if not math.isfinite(x):
        raise InputError(f"{path}: keyword {names[0]} is not finite ({v!r})")
    return x


def _frame_meta(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    exptime = _number(path, meta, "EXPTIME")
    if exptime <= 0:
        raise InputError(f"{path}: EXPTIME must be > 0, got {exptime}")
    mjd_start = _number(path, meta, "MJD-OBS", required=False)
    if mjd_start is None:
        date = _keyword(meta, "DATE-OBS")
        if date is None:
            raise InputError(f"{path}: missing keyword MJD-OBS (or DATE-OBS)")
        from astropy.time import Time

        try:
            mjd_start = float(Time(str(date), scale="utc").mjd)
        except ValueError:
            raise InputError(f"{path}: DATE-OBS is not an ISO time ({date!r})") from None
    if not 0 < mjd_start < 100000:
        raise InputError(f"{path}: MJD-OBS out of range ({mjd_start})")
    out: dict[str, Any] = {"mjd": mjd_start + exptime / 2.0 / 86400.0, "exptime": exptime}
    for key in ("FILTER", "CHANNEL"):
        v = _keyword(meta, key)
        if v is None:
            raise InputError(f"{path}: missing keyword {key}")
        out[key.lower()] = str(v).strip()
    for axis in ("NAXIS1", "NAXIS2"):
        n = _number(path, meta, axis, "IM" + axis)
        if n < 1 or n != int(n):
            raise InputError(f"{path}: {axis} must be a positive integer, got {n}")
        out[axis.lower()] = int(n)
    frame_name = _keyword(meta, "FRAMEID")
    out["frame_name"] = str(frame_name).strip() if frame_name is not None else _stem(path)
    out["explicit_name"] = frame_name is not None
    out["airmass"] = _number(path, meta, "AIRMASS", required=False)
    ra0 = _number(path, meta, "RA", required=False)
    dec0 = _number(path, meta, "DEC", required=False)
    if dec0 is not None and not -90 <= dec0 <= 90:
        raise InputError(f"{path}: DEC keyword out of range ({dec0})")
    out["ra0"] = None if ra0 is None else ra0 % 360.0
    out["dec0"] = dec0
    return out


def _stem(path: Path) -> str:
    name = path.name
    for s in SUFFIXES:
        if name.lower().endswith(s):
            return name[: -len(s)]
    return path.stem


def _columns(path: Path, cols: dict[str, np.ndarray], exptime: float) -> dict[str, np.ndarray]:
    missing = [c for c in _REQUIRED_COLUMNS if c not in cols]
    has_flux = "flux" in cols and "flux_err" in cols
    has_mag = "mag" in cols and "mag_err" in cols
    if not (has_flux or has_mag):
        missing.append("flux/flux_err (or mag/mag_err)")
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}")

    def num(name: str) -> np.ndarray:
        arr = cols[name]
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
            raise InputError(f"{path}: column {name} is not numeric ({arr.dtype})")
        return np.asarray(arr, dtype=np.float64)

    n = len(cols["ra"])
    if n == 0:
        raise InputError(f"{path}: catalogue has no rows")
    ra, dec, x, y = num("ra"), num("dec"), num("x"), num("y")
    for name, arr in (("ra", ra), ("dec", dec), ("x", x), ("y", y)):
        bad = ~np.isfinite(arr)
        if bad.any():
            raise InputError(f"{path}: column {name} has {int(bad.sum())} non-finite value(s)")
    bad = (ra < 0) | (ra > 360)
    if bad.any():
        raise InputError(f"{path}: column ra out of range [0, 360] (e.g. {ra[bad][0]})")
    bad = (dec < -90) | (dec > 90)
    if bad.any():
        raise InputError(f"{path}: column dec out of range [-90, 90] (e.g. {dec[bad][0]})")
    if has_flux:
        flux, flux_err = num("flux"), num("flux_err")
    else:
        mag, mag_err = num("mag"), num("mag_err")
        flux = 10.0 ** (-0.4 * mag)
        flux_err = flux * mag_err * _MAG_TO_FLUX_ERR
    if not np.isfinite(flux).all():
        raise InputError(f"{path}: flux has non-finite values")
    if not (np.isfinite(flux_err).all() and (flux_err > 0).all()):
        raise InputError(f"{path}: flux_err must be finite and > 0")
    flags = cols["flags"]
    if not np.issubdtype(flags.dtype, np.integer):
        f = num("flags")
        if not (np.isfinite(f).all() and (f == np.round(f)).all()):
            raise InputError(f"{path}: column flags must hold integers")
        flags = f
    out = {
        "ra": np.where(ra >= 360.0, ra - 360.0, ra),
        "dec": dec,
        "x": x.astype(np.float32),
        "y": y.astype(np.float32),
        "flux": (flux / exptime).astype(np.float32),
        "flux_err": (flux_err / exptime).astype(np.float32),
        "flags": np.asarray(flags).astype(np.int32),
    }
    for opt in ("fwhm", "background"):
        out[opt] = num(opt).astype(np.float32) if opt in cols else np.full(n, np.nan, np.float32)
    return out
