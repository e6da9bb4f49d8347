"""Positional matching on the sphere with k-d trees over unit vectors.

scipy's ``cKDTree`` matches 10^7 detections to 10^6 positions at ~1.4 M/s on this machine
(MEASURED.md); we add what catalogue matching needs on top: angular radii as chords, nearest
neighbour within a radius, and positions propagated by proper motion to each detection's epoch.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from lcdb import healpix

MAS_PER_DEG = 3.6e6
DAYS_PER_YEAR = 365.25
MJD_J2000 = 51544.5


def unit_vectors(ra_deg: np.ndarray, dec_deg: np.ndarray) -> np.ndarray:
    """(n, 3) unit vectors of positions in degrees."""
    r, d = np.radians(ra_deg), np.radians(dec_deg)
    out = np.empty((r.size, 3))  # filled in place: no temporaries stacked and copied
    cd = np.cos(d)
    np.multiply(cd, np.cos(r), out=out[:, 0])
    np.multiply(cd, np.sin(r), out=out[:, 1])
    np.sin(d, out=out[:, 2])
    return out


def chord(radius_deg: float) -> float:
    """Chord length of an angular radius on the unit sphere."""
    return 2.0 * np.sin(np.radians(radius_deg) / 2.0)


def chord_to_arcsec(c: np.ndarray) -> np.ndarray:
    """Angular separation (arcsec) of a chord length."""
    return np.degrees(2.0 * np.arcsin(np.clip(c / 2.0, 0.0, 1.0))) * 3600.0


def mjd_to_year(mjd: np.ndarray) -> np.ndarray:
    """Julian year of an MJD."""
    return 2000.0 + (np.asarray(mjd) - MJD_J2000) / DAYS_PER_YEAR


def propagate(
    ra: np.ndarray, dec: np.ndarray, pmra: np.ndarray, pmdec: np.ndarray, dt_years: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Positions moved by proper motion (mas/yr, ``pmra`` includes cos dec) over ``dt_years``.

    Linear in the tangent plane: exact to < 1 mas for 1"/yr over decades away from the poles.
    """
    dec_t = dec + pmdec * dt_years / MAS_PER_DEG
    cosd = np.maximum(np.cos(np.radians(dec)), 1e-9)
    ra_t = (ra + pmra * dt_years / MAS_PER_DEG / cosd) % 360.0
    return ra_t, dec_t


def nearest_within(
    tree: cKDTree, points: np.ndarray, radius_deg: float, workers: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest tree point within ``radius_deg`` (-1 if none) and its separation (")."""
    if tree.n == 0 or len(points) == 0:
        return np.full(len(points), -1, np.int64), np.full(len(points), np.inf)
    dist, idx = tree.query(points, k=1, distance_upper_bound=chord(radius_deg), workers=workers)
    found = np.isfinite(dist)
    idx = np.where(found, idx, -1).astype(np.int64)
    return idx, np.where(found, chord_to_arcsec(dist), np.inf)


def nearest_moving(
    ra: np.ndarray,
    dec: np.ndarray,
    year: np.ndarray,
    cat: dict[str, np.ndarray],
    radius_deg: float,
    k: int = 4,
    points: np.ndarray | None = None,
    index29: np.ndarray | None = None,
    sparse: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest catalogue star within ``radius_deg`` of each detection at the detection's epoch.

    ``cat`` holds ``ra``, ``dec`` (at ``epoch``), ``pmra``, ``pmdec`` (mas/yr, NaN = 0) and
    ``epoch`` (Julian year). Stars that move less than a tenth of the radius over the time span
    are matched with one plain nearest-neighbour query; the few that move more are matched at each
    detection's own epoch among the ``k`` nearest of a tree widened by their largest displacement.
    ``points``, the detections' unit vectors, saves recomputing them when the caller has them;
    with ``index29``, their order-29 HEALPix indices, detections in no cell near a star are set
    aside by a binary search first (most of a field, against a sparse catalogue; with
    ``sparse=False``, a catalogue near every detection, only for the few moving stars).
    Returns the index into ``cat`` (-1: none) and the separation in arcsec.
    """
    n = ra.size
    idx = np.full(n, -1, np.int64)
    sep = np.full(n, np.inf)
    if n == 0 or cat["ra"].size == 0:
        return idx, sep
    pmra = np.nan_to_num(np.asarray(cat["pmra"], float))
    pmdec = np.nan_to_num(np.asarray(cat["pmdec"], float))
    dt_max = float(np.max(np.abs(year - np.mean(cat["epoch"])))) + 1.0
    reach = np.hypot(pmra, pmdec) * dt_max / MAS_PER_DEG
    moving = reach > 0.1 * radius_deg
    points = unit_vectors(ra, dec) if points is None else points
    static = np.flatnonzero(~moving)
    if static.size:
        rows = _candidates(n, index29 if sparse else None, cat, static, radius_deg)
        tree = cKDTree(unit_vectors(cat["ra"][static], cat["dec"][static]))
        i, s = nearest_within(tree, points[rows], radius_deg)
        hit = i >= 0
        idx[rows[hit]], sep[rows[hit]] = static[i[hit]], s[hit]
    fast = np.flatnonzero(moving)
    if fast.size:
        rows = _candidates(n, index29, cat, fast, radius_deg + float(reach[fast].max()))
        i, s = _nearest_propagated(
            ra[rows],
            dec[rows],
            points[rows],
            year[rows],
            {c: np.asarray(cat[c])[fast] for c in ("ra", "dec", "epoch")},
            pmra[fast],
            pmdec[fast],
            radius_deg,
            dt_max,
            k,
        )
        better = (i >= 0) & (s < sep[rows])
        idx[rows[better]], sep[rows[better]] = fast[i[better]], s[better]
    return idx, sep


def _candidates(
    n: int, index29: np.ndarray | None, cat: dict, stars: np.ndarray, radius_deg: float
) -> np.ndarray:
    """Detections that may lie within ``radius_deg`` of the given stars (all without indices)."""
    if index29 is None:
        return np.arange(n)
    near = healpix.near_mask(index29, cat["ra"][stars], cat["dec"][stars], radius_deg)
    return np.flatnonzero(near)


def _nearest_propagated(ra, dec, points, year, cat, pmra, pmdec, radius_deg, dt_max, k):
    """Exact matching at each detection's epoch against a few moving stars."""
    n = ra.size
    out_i = np.full(n, -1, np.int64)
    out_s = np.full(n, np.inf)
    slack = float(np.max(np.hypot(pmra, pmdec))) * dt_max / MAS_PER_DEG
    tree = cKDTree(unit_vectors(cat["ra"], cat["dec"]))
    # Only detections with a moving star within the widened radius need the exact test: one
    # nearest-neighbour query finds them (a k-nearest query of every detection costs 3x more).
    near, _ = nearest_within(tree, points, radius_deg + slack)
    rows = np.flatnonzero(near >= 0)
    if rows.size == 0:
        return out_i, out_s
    k = min(k, cat["ra"].size)
    dist, idx = tree.query(points[rows], k=k, distance_upper_bound=chord(radius_deg + slack))
    dist, idx = dist.reshape(rows.size, k), idx.reshape(rows.size, k)
    valid = np.isfinite(dist)
    safe = np.where(valid, idx, 0)
    dt = year[rows, None] - cat["epoch"][safe]
    ra_t, dec_t = propagate(cat["ra"][safe], cat["dec"][safe], pmra[safe], pmdec[safe], dt)
    d1, r1 = np.radians(dec[rows, None]), np.radians(ra[rows, None])
    d2, r2 = np.radians(dec_t), np.radians(ra_t)
    hav = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    s = np.where(valid, np.degrees(2 * np.arcsin(np.sqrt(np.clip(hav, 0, 1)))), np.inf)
    best = np.argmin(s, axis=1)
    best_sep = s[np.arange(rows.size), best]
    hit = best_sep <= radius_deg
    out_i[rows[hit]] = idx[np.arange(rows.size), best][hit]
    out_s[rows[hit]] = best_sep[hit] * 3600.0
    return out_i, out_s


def one_per_group(group: np.ndarray, frame: np.ndarray, sep: np.ndarray) -> np.ndarray:
    """Mask keeping, for each (group, frame) pair, only the row with the smallest separation.

    Rows with ``group < 0`` are never kept. Pairs are combined into one int64 key so a single
    argsort finds the (rare) duplicates; only those are sorted by separation.
    """
    keep = group >= 0
    cand = np.flatnonzero(keep)
    if cand.size == 0:
        return keep
    fr = frame[cand].astype(np.int64)
    fr = fr - fr.min()
    _, rank = np.unique(group[cand], return_inverse=True)  # object ids are ~2^58: rank them
    key = rank.astype(np.int64) * (int(fr.max()) + 1) + fr
    order = np.argsort(key, kind="stable")
    ks = key[order]
    dup = np.zeros(ks.size, bool)
    dup[1:] = ks[1:] == ks[:-1]
    dup[:-1] |= dup[1:]
    if not dup.any():
        return keep
    rows = cand[order[dup]]  # every row of a duplicated pair
    sub = np.lexsort((sep[rows], key[order[dup]]))
    rows, ksub = rows[sub], key[order[dup]][sub]
    first = np.ones(rows.size, bool)
    first[1:] = ksub[1:] != ksub[:-1]
    keep[rows[~first]] = False
    return keep
