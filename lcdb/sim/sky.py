"""Star lists for the simulator: synthetic, or read from a real reference catalogue.

Every function returns a :class:`pyarrow.Table` with the columns

``star_id`` (int64, 0..n-1), ``ra``, ``dec`` (deg, ICRS, epoch J2000), ``v`` (V mag), ``bv``
(B-V), ``pmra`` (mas/yr, includes cos dec), ``pmdec`` (mas/yr), ``companion_of`` (int64,
``star_id`` of the primary of a close pair, -1 otherwise), ``name`` (string).

A field is a ``width_deg`` x ``height_deg`` box in the tangent plane (gnomonic projection)
centred on ``(ra0, dec0)``, so it works the same at any declination, poles included.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "RefcatError",
    "bv_colours",
    "catalogue_errors",
    "fill_faint",
    "from_tangent_plane",
    "refcat_from_stars",
    "stars_from_refcat",
    "synthetic_magnitudes",
    "synthetic_stars",
    "tangent_plane",
]

_log = logging.getLogger(__name__)


class RefcatError(ValueError):
    """A reference catalogue file that cannot serve as the sky (message names the file)."""


#: Column names accepted in a reference catalogue file (lower case), per simulator column.
REFCAT_ALIASES: dict[str, tuple[str, ...]] = {
    "ra": ("ra", "ra_degrees", "raj2000", "ra_deg", "ra_icrs"),
    "dec": ("dec", "dec_degrees", "dej2000", "dec_deg", "de_icrs", "decj2000"),
    "v": ("v", "magnitude", "vmag", "v_mag"),
    "bv": ("bv", "b_v", "bmv", "b-v", "bv_color"),
    "pmra": ("pmra", "ra_mas_per_year", "pmra_mas_yr"),
    "pmdec": ("pmdec", "dec_mas_per_year", "pmde", "pmdec_mas_yr"),
    "name": ("name", "tyc_id", "tyc", "id", "ref_id"),
}


def tangent_plane(
    ra: np.ndarray, dec: np.ndarray, ra0: float, dec0: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gnomonic projection about ``(ra0, dec0)``: standard coordinates xi, eta (deg).

    Returns ``(xi, eta, cos_c)``; ``cos_c <= 0`` marks points 90 deg or more away (invalid).
    """
    a, d = np.radians(ra), np.radians(dec)
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cos_c = np.sin(d0) * np.sin(d) + np.cos(d0) * np.cos(d) * np.cos(a - a0)
    with np.errstate(divide="ignore", invalid="ignore"):
        xi = np.cos(d) * np.sin(a - a0) / cos_c
        eta = (np.cos(d0) * np.sin(d) - np.sin(d0) * np.cos(d) * np.cos(a - a0)) / cos_c
    return np.degrees(xi), np.degrees(eta), cos_c


def from_tangent_plane(
    xi: np.ndarray, eta: np.ndarray, ra0: float, dec0: float
) -> tuple[np.ndarray, np.ndarray]:
    """Inverse gnomonic projection: standard coordinates (deg) to ``(ra, dec)`` (deg)."""
    x, y = np.radians(xi), np.radians(eta)
    a0, d0 = math.radians(ra0), math.radians(dec0)
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        sin_term = np.where(rho > 0, y * np.sin(c) * math.cos(d0) / rho, 0.0)
    dec = np.arcsin(np.cos(c) * math.sin(d0) + sin_term)
    ra = a0 + np.arctan2(
        x * np.sin(c), rho * math.cos(d0) * np.cos(c) - y * math.sin(d0) * np.sin(c)
    )
    return np.mod(np.degrees(ra), 360.0), np.degrees(dec)


def _in_box(ra, dec, ra0, dec0, width_deg, height_deg) -> np.ndarray:
    xi, eta, cos_c = tangent_plane(ra, dec, ra0, dec0)
    return (cos_c > 0) & (np.abs(xi) <= width_deg / 2) & (np.abs(eta) <= height_deg / 2)


def synthetic_magnitudes(
    n: int, vmin: float, vmax: float, rng: np.random.Generator, slope: float = 0.35
) -> np.ndarray:
    """``n`` magnitudes with ``log10 N(<m) = slope * m + const`` between ``vmin`` and ``vmax``."""
    lo, hi = 10.0 ** (slope * vmin), 10.0 ** (slope * vmax)
    return np.log10(lo + rng.random(n) * (hi - lo)) / slope


def bv_colours(v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """B-V colours for stars of magnitude ``v``: dwarfs N(0.6, 0.25) and giants N(1.1, 0.18).

    The giant fraction grows towards bright magnitudes (0.45 at V = 8, 0.15 at V >= 18), as
    in Tycho-2 where red-clump giants make a second peak at B-V ~ 1.1. Range [-0.25, 2.0].
    """
    v = np.asarray(v, dtype=float)
    giant = rng.random(v.size) < np.clip(0.45 - 0.03 * (v - 8.0), 0.15, 0.5)
    bv = np.where(giant, rng.normal(1.1, 0.18, v.size), rng.normal(0.6, 0.25, v.size))
    return np.clip(bv, -0.25, 2.0)


def _table(ra, dec, v, bv, pmra, pmdec, companion_of, names) -> pa.Table:
    n = len(ra)
    return pa.table(
        {
            "star_id": pa.array(np.arange(n, dtype=np.int64)),
            "ra": pa.array(np.asarray(ra, dtype=float)),
            "dec": pa.array(np.asarray(dec, dtype=float)),
            "v": pa.array(np.asarray(v, dtype=float)),
            "bv": pa.array(np.asarray(bv, dtype=float)),
            "pmra": pa.array(np.asarray(pmra, dtype=float)),
            "pmdec": pa.array(np.asarray(pmdec, dtype=float)),
            "companion_of": pa.array(np.asarray(companion_of, dtype=np.int64)),
            "name": pa.array(list(names), type=pa.string()),
        }
    )


def synthetic_stars(
    *,
    ra0: float,
    dec0: float,
    width_deg: float,
    height_deg: float,
    n_stars: int,
    vmin: float,
    vmax: float,
    rng: np.random.Generator,
    count_slope: float = 0.35,
    pair_fraction: float = 0.01,
    pair_sep_arcsec: tuple[float, float] = (2.0, 20.0),
    high_pm_fraction: float = 0.005,
    max_pm: float = 1000.0,
) -> pa.Table:
    """A synthetic star list filling the field uniformly.

    Parameters
    ----------
    ra0, dec0, width_deg, height_deg
        Field centre and size (tangent-plane box), deg.
    n_stars
        Number of stars, close-pair companions included.
    vmin, vmax
        Magnitude range of the primaries; counts grow as ``10^(count_slope * V)``.
    rng
        Random generator (the only source of randomness).
    pair_fraction
        Fraction of ``n_stars`` that are companions of a close pair, separated by a
        log-uniform distance in ``pair_sep_arcsec``, up to 2.5 mag fainter, common proper motion.
    high_pm_fraction
        Fraction of stars with a proper motion log-uniform in [100, ``max_pm``] mas/yr; the
        rest move by N(0, 20 * 10^(-0.1 (V - 8))) mas/yr per axis.
    """
    n_pairs = round(pair_fraction * n_stars) if n_stars > 1 else 0
    n_single = n_stars - n_pairs
    xi = rng.uniform(-width_deg / 2, width_deg / 2, n_single)
    eta = rng.uniform(-height_deg / 2, height_deg / 2, n_single)
    v = synthetic_magnitudes(n_single, vmin, vmax, rng, count_slope)
    sigma_pm = 20.0 * 10.0 ** (-0.1 * (v - 8.0))
    pmra, pmdec = rng.normal(0, sigma_pm), rng.normal(0, sigma_pm)
    n_fast = round(high_pm_fraction * n_single)
    fast = rng.choice(n_single, n_fast, replace=False)
    pm = 10.0 ** rng.uniform(2.0, math.log10(max(max_pm, 100.0)), n_fast)
    angle = rng.uniform(0, 2 * math.pi, n_fast)
    pmra[fast], pmdec[fast] = pm * np.sin(angle), pm * np.cos(angle)
    primary = rng.choice(n_single, n_pairs, replace=False)
    sep = 10.0 ** rng.uniform(*np.log10(pair_sep_arcsec), n_pairs) / 3600.0
    angle = rng.uniform(0, 2 * math.pi, n_pairs)
    xi = np.concatenate([xi, xi[primary] + sep * np.sin(angle)])
    eta = np.concatenate([eta, eta[primary] + sep * np.cos(angle)])
    v = np.concatenate([v, v[primary] + rng.uniform(0.0, 2.5, n_pairs)])
    pmra = np.concatenate([pmra, pmra[primary] + rng.normal(0, 1.0, n_pairs)])
    pmdec = np.concatenate([pmdec, pmdec[primary] + rng.normal(0, 1.0, n_pairs)])
    companion_of = np.concatenate([np.full(n_single, -1), primary]).astype(np.int64)
    ra, dec = from_tangent_plane(xi, eta, ra0, dec0)
    names = [f"SIM-{i}" for i in range(n_stars)]
    return _table(ra, dec, v, bv_colours(v, rng), pmra, pmdec, companion_of, names)


def _read_any(path: Path) -> pa.Table:
    if path.suffix.lower() in (".parquet", ".pq"):
        return pq.read_table(path)
    from astropy.io.registry import IORegistryError
    from astropy.table import Table

    try:
        table = Table.read(path)
    except IORegistryError as exc:
        raise ValueError(f"unknown table format ({exc})") from exc
    return pa.table({name: np.asarray(table[name]) for name in table.colnames})


def stars_from_refcat(
    path: str | Path,
    *,
    ra0: float,
    dec0: float,
    width_deg: float,
    height_deg: float,
    rng: np.random.Generator,
    vmin: float | None = None,
    vmax: float | None = None,
) -> pa.Table:
    """The stars of a real reference catalogue inside the field.

    Accepts Parquet, or anything :func:`astropy.table.Table.read` reads (FITS, ECSV, ...), with
    columns named as in :data:`REFCAT_ALIASES` (e.g. the bigsky/Tycho-2 names ``ra_degrees``,
    ``dec_degrees``, ``magnitude``, ``bv``, ``ra_mas_per_year``, ``dec_mas_per_year``,
    ``tyc_id``, or lcdb's own ``ra, dec, v, bv, pmra, pmdec``). Missing or NaN B-V values
    are drawn from :func:`bv_colours`; missing proper motions are 0.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    RefcatError
        The file is unreadable, lacks a required column (ra, dec, V), or has no star in the
        field.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference catalogue {path} does not exist")
    try:
        table = _read_any(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise RefcatError(f"cannot read reference catalogue {path}: {exc}") from exc
    lower = {name.lower(): name for name in table.column_names}
    found = {
        key: next((lower[a] for a in aliases if a in lower), None)
        for key, aliases in REFCAT_ALIASES.items()
    }
    missing = [key for key in ("ra", "dec", "v") if found[key] is None]
    if missing:
        raise RefcatError(
            f"reference catalogue {path} has no column for {', '.join(missing)} "
            f"(columns: {', '.join(table.column_names)})"
        )

    def column(key: str) -> np.ndarray:
        return np.asarray(table[found[key]].to_numpy(zero_copy_only=False), dtype=float)

    ra, dec, v = column("ra"), column("dec"), column("v")
    keep = np.isfinite(ra) & np.isfinite(dec) & np.isfinite(v)
    keep &= np.abs(dec - dec0) <= math.hypot(width_deg, height_deg) / 2 + 1.0
    idx = np.flatnonzero(keep)
    idx = idx[_in_box(ra[idx], dec[idx], ra0, dec0, width_deg, height_deg)]
    if vmin is not None:
        idx = idx[v[idx] >= vmin]
    if vmax is not None:
        idx = idx[v[idx] <= vmax]
    if idx.size == 0:
        raise RefcatError(
            f"reference catalogue {path} has no star in the field "
            f"(centre ra={ra0:g} dec={dec0:g}, {width_deg:g} x {height_deg:g} deg)"
        )
    idx = idx[np.argsort(v[idx], kind="stable")]
    bv = column("bv")[idx] if found["bv"] else np.full(idx.size, np.nan)
    bad = ~np.isfinite(bv)
    if bad.any():
        _log.debug("%d stars of %s have no B-V; drawing colours", int(bad.sum()), path)
        bv[bad] = bv_colours(v[idx][bad], rng)
    pm = [
        np.nan_to_num(column(k)[idx]) if found[k] else np.zeros(idx.size) for k in ("pmra", "pmdec")
    ]
    if found["name"]:
        names = [str(s) for s in table[found["name"]].take(pa.array(idx)).to_pylist()]
    else:
        names = [f"{path.stem}-{i}" for i in idx]
    return _table(ra[idx], dec[idx], v[idx], bv, pm[0], pm[1], np.full(idx.size, -1), names)


def fill_faint(
    stars: pa.Table,
    *,
    ra0: float,
    dec0: float,
    width_deg: float,
    height_deg: float,
    vmax: float,
    rng: np.random.Generator,
    count_slope: float = 0.35,
) -> pa.Table:
    """Add synthetic stars from the faint end of a real catalogue down to ``vmax``.

    The counts of the real stars brighter than the catalogue's 95th-percentile magnitude
    ``m_c`` (where it is still complete) are extrapolated as ``10^(count_slope * V)`` from the
    faintest real star to ``vmax``. Real stars keep their ids; the new ones follow.
    """
    v = stars["v"].to_numpy()
    v_top = float(v.max())
    if v.size < 20 or vmax <= v_top:
        return stars
    m_c = float(np.percentile(v, 95))
    n_bright = int((v <= m_c).sum())
    expected = n_bright * (
        10.0 ** (count_slope * (vmax - m_c)) - 10.0 ** (count_slope * (v_top - m_c))
    )
    n_new = int(rng.poisson(max(expected, 0.0)))
    if n_new == 0:
        return stars
    extra = synthetic_stars(
        ra0=ra0,
        dec0=dec0,
        width_deg=width_deg,
        height_deg=height_deg,
        n_stars=n_new,
        vmin=v_top,
        vmax=vmax,
        rng=rng,
        count_slope=count_slope,
        pair_fraction=0.0,
    )
    n_old = stars.num_rows
    extra = extra.set_column(0, "star_id", pa.array(np.arange(n_new, dtype=np.int64) + n_old))
    extra = extra.set_column(
        extra.schema.get_field_index("name"),
        "name",
        pa.array([f"SIM-{i}" for i in range(n_old, n_old + n_new)], type=pa.string()),
    )
    return pa.concat_tables([stars, extra.cast(stars.schema)])


def catalogue_errors(v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tycho-like errors of V and B-V: 0.01 mag at V = 8, 0.1 at V = 11 (floor 0.005)."""
    v_err = np.clip(0.01 * 10.0 ** ((np.asarray(v) - 8.0) / 3.0), 0.005, 0.5)
    return v_err, 1.4 * v_err


def refcat_from_stars(
    stars: pa.Table,
    *,
    limit: float,
    blend_radius_arcsec: float,
    rng: np.random.Generator,
    completeness: float = 0.99,
    listable: np.ndarray | None = None,
) -> tuple[pa.Table, np.ndarray]:
    """The reference catalogue a real survey would have of ``stars`` (true values).

    Measured V and B-V scatter by :func:`catalogue_errors`; a star is listed when its measured
    V is at most ``limit`` (and with probability ``completeness``). Positions (epoch 2000) scatter
    by 7-60 mas and proper motions by 2.5 mas/yr, as in Tycho-2. ``blended``: another star no
    more than 2.5 mag fainter lies within ``blend_radius_arcsec``. ``listable`` (bool per star)
    restricts the catalogue to some stars (e.g. those of a real catalogue, not synthetic ones).

    Returns
    -------
    (pyarrow.Table, numpy.ndarray)
        The catalogue (ref_id, ra, dec, v, v_err, bv, bv_err, pmra, pmdec, epoch, blended,
        name) and, per input star, its ``ref_id`` or -1.
    """
    from scipy.spatial import cKDTree

    col = {k: stars[k].to_numpy() for k in ("ra", "dec", "v", "bv", "pmra", "pmdec")}
    n = col["v"].size
    v_err, bv_err = catalogue_errors(col["v"])
    v_cat = col["v"] + rng.normal(0, v_err)
    bv_cat = col["bv"] + rng.normal(0, bv_err)
    listed = (v_cat <= limit) & (rng.random(n) < completeness)
    if listable is not None:
        listed &= np.asarray(listable, dtype=bool)
    pos_err = (7.0 + 53.0 * np.clip((col["v"] - 9.0) / 3.0, 0, 1)) / 3.6e6
    dec = col["dec"] + rng.normal(0, pos_err)
    ra = col["ra"] + rng.normal(0, pos_err) / np.maximum(np.cos(np.radians(col["dec"])), 1e-6)
    pmra, pmdec = col["pmra"] + rng.normal(0, 2.5, n), col["pmdec"] + rng.normal(0, 2.5, n)
    a, d = np.radians(col["ra"]), np.radians(col["dec"])
    xyz = np.stack([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)], 1)
    chord = 2 * math.sin(math.radians(blend_radius_arcsec / 3600.0) / 2)
    blended = np.zeros(n, dtype=bool)
    pairs = cKDTree(xyz).query_pairs(chord, output_type="ndarray")
    for i, j in ((pairs[:, 0], pairs[:, 1]), (pairs[:, 1], pairs[:, 0])):
        blended[i[col["v"][j] <= col["v"][i] + 2.5]] = True
    idx = np.flatnonzero(listed)
    ref_id = np.full(n, -1, dtype=np.int64)
    ref_id[idx] = np.arange(1, idx.size + 1)
    f32 = pa.float32()
    table = pa.table(
        {
            "ref_id": pa.array(ref_id[idx]),
            "ra": pa.array(np.mod(ra[idx], 360.0)),
            "dec": pa.array(dec[idx]),
            "v": pa.array(v_cat[idx], f32),
            "v_err": pa.array(v_err[idx], f32),
            "bv": pa.array(bv_cat[idx], f32),
            "bv_err": pa.array(bv_err[idx], f32),
            "pmra": pa.array(pmra[idx], f32),
            "pmdec": pa.array(pmdec[idx], f32),
            "epoch": pa.array(np.full(idx.size, 2000.0), f32),
            "blended": pa.array(blended[idx]),
            "name": stars["name"].take(pa.array(idx)),
        }
    )
    return table, ref_id
