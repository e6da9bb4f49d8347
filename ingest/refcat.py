"""Loading a reference catalogue into the store: ``lcdb refcat load``.

Accepts Parquet, FITS or CSV/ECSV with V and B−V, or Tycho-2 BT/VT converted by the official
transformation (Høg et al. 2000): V = VT − 0.090 (BT − VT), B−V = 0.850 (BT − VT). Columns are
recognised by common names or mapped explicitly. Each star gets a ``blended`` flag: another star
within ``blend_radius_arcsec`` brighter than its own V + ``blend_dmag``. The catalogue is
HEALPix-partitioned like the measurements and replaces any refcat the store held.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
from scipy.spatial import cKDTree

from lcdb import healpix, layout, manifest, schema
from lcdb.errors import InputError
from lcdb.store import Store
from lcdb.tableio import write_parquet

_log = logging.getLogger(__name__)

# Recognised spellings (lower case), first match wins.
_ALIASES: dict[str, tuple[str, ...]] = {
    "ra": ("ra", "ra_deg", "ra_degrees", "raj2000", "_raj2000", "ra_icrs", "radeg", "ramdeg"),
    "dec": ("dec", "dec_deg", "dec_degrees", "dej2000", "_dej2000", "de_icrs", "dedeg", "decdeg"),
    "v": ("v", "vmag", "v_mag", "mag_v", "magnitude"),
    "v_err": ("v_err", "e_vmag", "vmag_err", "verr", "e_v"),
    "bv": ("bv", "b_v", "b-v", "bmv", "b_minus_v"),
    "bv_err": ("bv_err", "e_b-v", "e_bv", "b_v_err", "bverr"),
    "bt": ("bt", "btmag", "bt_mag"),
    "vt": ("vt", "vtmag", "vt_mag"),
    "bt_err": ("bt_err", "e_btmag", "btmag_err"),
    "vt_err": ("vt_err", "e_vtmag", "vtmag_err"),
    "pmra": ("pmra", "pm_ra", "ra_mas_per_year", "pmra_mas_yr", "pmra_cosdec"),
    "pmdec": ("pmdec", "pmde", "pm_dec", "dec_mas_per_year", "pmdec_mas_yr"),
    "epoch": ("epoch", "epoch_year", "ref_epoch"),
    "name": ("name", "tyc_id", "tyc", "id", "source_id", "designation", "hip"),
}
TARGETS = tuple(_ALIASES)


@dataclass(frozen=True)
class RefcatOptions:
    """How to read a reference catalogue.

    Parameters
    ----------
    columns : dict
        Explicit mapping target -> column of the file (targets: ``ra``, ``dec``, ``v``, ``bv``,
        ``v_err``, ``bv_err``, ``bt``, ``vt``, ``bt_err``, ``vt_err``, ``pmra``, ``pmdec``,
        ``epoch``, ``name``).
    default_epoch : float
        Julian year of the positions when the file has no epoch column.
    progress : bool
        Log progress.
    """

    columns: dict[str, str] = field(default_factory=dict)
    default_epoch: float = 2000.0
    progress: bool = True

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(TARGETS))
        if unknown:
            raise InputError(
                f"unknown refcat column target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}"
            )


def parse_mapping(text: str) -> dict[str, str]:
    """Parse ``ra=ra_degrees,dec=dec_degrees`` into a dict."""
    out = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        if "=" not in item:
            raise InputError(f"--columns: expected target=column, got {item!r}")
        k, v = (s.strip() for s in item.split("=", 1))
        out[k.lower()] = v
    return out


def _read(path: Path) -> dict[str, np.ndarray]:
    name = path.name.lower()
    try:
        if name.endswith((".parquet", ".pq")):
            import pyarrow.parquet as pq

            t = pq.read_table(path)
            return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
        if name.endswith(".csv"):
            import pyarrow.csv as pacsv

            t = pacsv.read_csv(path)
            return {c: t.column(c).to_numpy(zero_copy_only=False) for c in t.column_names}
        if name.endswith((".fits", ".fit", ".fts", ".fits.gz", ".ecsv", ".vot", ".xml")):
            from astropy.table import Table

            t = Table.read(path)
            out = {}
            for c in t.colnames:
                col = t[c]
                arr = np.asarray(
                    col.filled(np.nan) if hasattr(col, "filled") and col.dtype.kind == "f" else col
                )
                if arr.dtype.kind in "fiu":
                    arr = arr.astype(arr.dtype.newbyteorder("="), copy=False)
                out[c] = arr
            return out
    except Exception as exc:  # a reader failure means a corrupt or foreign file
        raise InputError(f"{path}: cannot read catalogue ({type(exc).__name__}: {exc})") from exc
    raise InputError(f"{path}: unknown catalogue format (Parquet, FITS, CSV or ECSV expected)")


def _resolve(path: Path, raw: dict[str, np.ndarray], explicit: dict[str, str]) -> dict[str, str]:
    lower = {c.lower(): c for c in raw}
    found = {}
    for target, col in explicit.items():
        if col not in raw and col.lower() not in lower:
            raise InputError(f"{path}: column {col!r} (mapped to {target}) not found")
        found[target] = col if col in raw else lower[col.lower()]
    for target, aliases in _ALIASES.items():
        if target in found:
            continue
        for a in aliases:
            if a in lower:
                found[target] = lower[a]
                break
    return found


def _float(path: Path, raw: dict[str, np.ndarray], col: str) -> np.ndarray:
    arr = raw[col]
    if arr.dtype.kind not in "fiub":
        try:
            return arr.astype(np.float64)
        except (TypeError, ValueError):
            raise InputError(f"{path}: column {col!r} is not numeric") from None
    return arr.astype(np.float64)


def read_refcat(path: Path, options: RefcatOptions) -> tuple[pa.Table, str]:
    """Read, convert and validate a reference catalogue into the refcat schema (minus ids)."""
    raw = _read(path)
    cols = _resolve(path, raw, options.columns)
    if "ra" not in cols or "dec" not in cols:
        raise InputError(
            f"{path}: no ra/dec columns found (map them with --columns ra=...,dec=...)"
        )
    n = len(raw[cols["ra"]])
    if n == 0:
        raise InputError(f"{path}: catalogue has no rows")
    ra, dec = _float(path, raw, cols["ra"]), _float(path, raw, cols["dec"])
    bad = ~np.isfinite(ra) | ~np.isfinite(dec) | (ra < 0) | (ra > 360) | (np.abs(dec) > 90)
    if bad.any():
        raise InputError(
            f"{path}: {int(bad.sum())} row(s) with missing or out-of-range ra/dec "
            f"(first at row {int(np.flatnonzero(bad)[0])})"
        )
    nan = np.full(n, np.nan)

    def get(target: str) -> np.ndarray:
        return _float(path, raw, cols[target]) if target in cols else nan

    if "v" in cols:
        source = "V and B-V columns"
        v, bv, v_err, bv_err = get("v"), get("bv"), get("v_err"), get("bv_err")
    elif "bt" in cols and "vt" in cols:
        source = "Tycho-2 BT/VT (Hog et al. 2000 transformation)"
        bt, vt, e_bt, e_vt = get("bt"), get("vt"), get("bt_err"), get("vt_err")
        v = vt - 0.090 * (bt - vt)
        bv = 0.850 * (bt - vt)
        v_err = np.hypot(1.090 * e_vt, 0.090 * e_bt)
        bv_err = 0.850 * np.hypot(e_bt, e_vt)
    else:
        raise InputError(
            f"{path}: no V (or BT and VT) magnitude column found (map it with --columns v=...)"
        )
    keep = np.isfinite(v)
    if not keep.any():
        raise InputError(f"{path}: no star has a finite V magnitude")
    epoch = get("epoch")
    epoch = np.where(np.isfinite(epoch), epoch, options.default_epoch)
    names = raw[cols["name"]] if "name" in cols else None
    columns = {
        "ra": pa.array(np.where(ra >= 360, ra - 360, ra)[keep], pa.float64()),
        "dec": pa.array(dec[keep], pa.float64()),
        "v": pa.array(v[keep], pa.float32()),
        "v_err": _nullable(v_err[keep]),
        "bv": _nullable(bv[keep]),
        "bv_err": _nullable(bv_err[keep]),
        "pmra": _nullable(get("pmra")[keep]),
        "pmdec": _nullable(get("pmdec")[keep]),
        "epoch": pa.array(epoch[keep], pa.float32()),
    }
    if names is not None:
        columns["name"] = pa.array([_name(x) for x in np.asarray(names)[keep]], pa.string())
    table = pa.table(columns)
    if int((~keep).sum()):
        _log.warning("%s: %d star(s) without a finite V skipped", path, int((~keep).sum()))
    return table, source


def _nullable(a: np.ndarray) -> pa.Array:
    return pa.array(a, pa.float32(), mask=~np.isfinite(a))


def _name(x: object) -> str | None:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return None
    if isinstance(x, float) and x == int(x):
        return str(int(x))
    return str(x)


def blended_flags(
    ra: np.ndarray, dec: np.ndarray, v: np.ndarray, radius_arcsec: float, dmag: float
) -> np.ndarray:
    """True where another star within ``radius_arcsec`` is brighter than own V + ``dmag``."""
    out = np.zeros(ra.size, bool)
    if radius_arcsec <= 0 or ra.size < 2:
        return out
    r, d = np.radians(ra), np.radians(dec)
    xyz = np.column_stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])
    chord = 2 * np.sin(np.radians(radius_arcsec / 3600.0) / 2)
    pairs = cKDTree(xyz).query_pairs(chord, output_type="ndarray")
    if pairs.size:
        i, j = pairs[:, 0], pairs[:, 1]
        out[i[v[j] < v[i] + dmag]] = True
        out[j[v[i] < v[j] + dmag]] = True
    return out


def load_refcat(store: Store, path: str | Path, options: RefcatOptions | None = None) -> dict:
    """Load a reference catalogue into ``store``, replacing the previous one; returns a summary."""
    options = options or RefcatOptions()
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    table, source = read_refcat(path, options)
    ra = table.column("ra").to_numpy()
    dec = table.column("dec").to_numpy()
    v = table.column("v").to_numpy()
    cfg = store.config
    blended = blended_flags(ra, dec, v, cfg.blend_radius_arcsec, cfg.blend_dmag)
    idx29 = healpix.healpix29(ra, dec)
    ref_id = np.arange(1, ra.size + 1, dtype=np.int64)  # input row order: stable across reloads
    table = (
        table.append_column("ref_id", pa.array(ref_id))
        .append_column("healpix_29", pa.array(idx29))
        .append_column("blended", pa.array(blended))
    )
    if "name" not in table.column_names:
        table = table.append_column("name", pa.nulls(table.num_rows, pa.string()))
    table = table.select(schema.REFCAT.names).cast(schema.REFCAT)
    order = np.argsort(idx29, kind="stable")
    table = table.take(pa.array(order))
    pixels = healpix.coarsen(idx29[order], cfg.order)
    cuts = np.flatnonzero(np.diff(pixels)) + 1
    bounds = zip(np.r_[0, cuts].tolist(), np.r_[cuts, pixels.size].tolist(), strict=True)

    def write(ab: tuple[int, int]) -> tuple[Path, int]:
        a, b = ab
        fpath = layout.new_partition_file(store.root, "refcat", int(pixels[a]), "refcat")
        write_parquet(table.slice(a, b - a), fpath)
        return fpath, b - a

    with manifest.transaction(store.root) as tx:
        for entry in tx.live_entries("refcat"):
            tx.remove("refcat", entry["path"])
        with ThreadPoolExecutor(2) as pool:  # pyarrow writes release the GIL
            for fpath, rows in pool.map(write, bounds):
                tx.add("refcat", fpath, rows)
        tx.commit()
    store.refresh()
    summary = {
        "file": str(path),
        "stars": int(table.num_rows),
        "source": source,
        "blended": int(blended.sum()),
        "with_bv": int(np.isfinite(table.column("bv").to_numpy(zero_copy_only=False)).sum()),
        "partitions": len(set(pixels.tolist())),
    }
    _log.info(
        "refcat: %d stars from %s (%s); %d blended; %d partitions",
        summary["stars"],
        path,
        source,
        summary["blended"],
        summary["partitions"],
    )
    return summary
