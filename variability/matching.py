"""Positional matching on the sphere: HEALPix cells for the bulk, k-d trees for the rest.

scipy's ``cKDTree`` over unit vectors matches 10^7 detections to 10^6 positions at ~1.4 M/s on
this machine (MEASURED.md), but a query costs ~0.5 us even against a small tree, and computing
the unit vectors costs as much again. Every stored row already carries its order-29 HEALPix
index, so :func:`nearest_in_cells` looks its candidates up by integer cell instead (a binary
search, no trigonometry per detection): 8x faster than the tree at a survey field's density on
rows sorted by position, as store files are (1.2-1.7x in random order; bench/matching.py), and
equal to :func:`nearest_within`, its slow, obviously correct
twin (tests/test_matching.py). On top we add what catalogue matching needs: angular radii as
chords, nearest neighbour within a radius, and positions propagated by proper motion to each
detection's epoch.
"""

from __future__ import annotations

import numba
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


def to_radec(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ra, dec (deg) of the directions of (n, 3) vectors (normalised here): the inverse of
    :func:`unit_vectors`."""
    xyz = xyz / np.maximum(np.linalg.norm(xyz, axis=1), 1e-300)[:, None]
    ra = np.degrees(np.arctan2(xyz[:, 1], xyz[:, 0])) % 360.0
    return ra, np.degrees(np.arcsin(np.clip(xyz[:, 2], -1, 1)))


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


def wrap180(d: np.ndarray) -> np.ndarray:
    """Differences of ra (degrees, each within -360..360) brought to -180..180, in place.

    Two masked adds: 4x faster than ``(d + 540) % 360 - 180`` on 10^6-10^7 rows (float modulo).
    """
    np.subtract(d, 360.0, out=d, where=d > 180.0)
    np.add(d, 360.0, out=d, where=d < -180.0)
    return d


def nearest_in_cells(
    index29: np.ndarray,
    ra: np.ndarray,
    dec: np.ndarray,
    cat_ra: np.ndarray,
    cat_dec: np.ndarray,
    radius_deg: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Index of the nearest catalogue position within ``radius_deg`` (-1 if none) and its
    separation in arcsec: :func:`nearest_within` without a tree.

    1. Each catalogue position is registered in its cell (at :func:`lcdb.healpix.near_order`)
       and that cell's 8 neighbours; the registrations are sorted by cell.
    2. Each point's cell is its ``index29`` shifted right; a binary search finds the catalogue
       positions registered there (once per run of points in one cell: store files are sorted
       by position or by object).
    3. Separations are computed for those candidates only, to second order in the tangent plane
       of the catalogue position (relative error < 1e-7 within a few arcmin), and exactly by
       haversine for catalogue positions within 10 deg of a pole, where the expansion fails.
    """
    from astropy_healpix import neighbours

    n = len(index29)
    idx = np.full(n, -1, np.int64)
    sep = np.full(n, np.inf)
    nc = len(cat_ra)
    if n == 0 or nc == 0:
        return idx, sep
    cat_ra = _kernel_array(cat_ra, np.float64)
    cat_dec = _kernel_array(cat_dec, np.float64)
    m = healpix.near_order(radius_deg)
    shift = 2 * (healpix.FINE_ORDER - m)
    # 1. registrations (cell, star); a star registered twice in one cell (at a vertex pixel)
    # only costs a repeated candidate
    own = healpix.healpix29(cat_ra, cat_dec, threads=1) >> shift
    with np.errstate(invalid="ignore"):  # -1 where a vertex pixel has 7 neighbours
        nb = neighbours(own, 2**m, order="nested")
    cells = np.concatenate([own, nb.ravel()])
    stars = np.tile(np.arange(nc, dtype=np.int64), 9)
    o = np.argsort(cells)
    cells, stars = cells[o], stars[o]
    start = np.flatnonzero(np.r_[True, cells[1:] != cells[:-1]])
    count = np.diff(np.r_[start, cells.size])
    ucell = cells[start]
    # 2.-3. per point: its cell's candidates, their separations, the nearest within the radius
    rad = np.radians(cat_dec)
    _cells_kernel(
        _kernel_array(index29, np.int64),
        shift,
        _kernel_array(ra, np.float64),
        _kernel_array(dec, np.float64),
        ucell,
        start,
        count,
        stars,
        cat_ra,
        cat_dec,
        np.cos(rad) ** 2,
        np.cos(rad) * np.sin(rad),
        float(radius_deg),
        idx,
        sep,
    )
    return idx, sep


_I8, _F8 = numba.int64[:], numba.float64[:]


def _kernel_array(a, dtype) -> np.ndarray:
    """``a`` as the kernels' signatures take it: writeable (Arrow's zero-copy views are not),
    contiguous, of ``dtype``."""
    out = np.ascontiguousarray(a, dtype)
    return out if out.flags.writeable else out.copy()


@numba.njit(
    numba.void(
        _I8, numba.int64, _F8, _F8, _I8, _I8, _I8, _I8, _F8, _F8, _F8, _F8, numba.float64, _I8, _F8
    ),
    cache=True,
    nogil=True,
)
def _cells_kernel(
    q29, shift, ra, dec, ucell, start, count, stars, c_ra, c_dec, cc, cs, r, idx, sep
):  # fmt: skip
    """Steps 2-3 of :func:`nearest_in_cells`, one pass per point (compiled: the same steps as
    numpy array operations cost ~10 temporaries of the size of the input and ran only 1.2x faster
    than the k-d tree, bench/matching.py)."""
    r2 = r * r
    last_cell, j = -1, 0
    for i in range(q29.size):
        c = q29[i] >> shift
        if c != last_cell:  # rows sorted by position share cells: search only on a change
            j = np.searchsorted(ucell, c)
            last_cell = c
        if j >= ucell.size or ucell[j] != c:
            continue
        best_d2, best = np.inf, -1
        for k in range(start[j], start[j] + count[j]):
            s = stars[k]
            dd = dec[i] - c_dec[s]
            dr = ra[i] - c_ra[s]  # to -180..180 by a branch: a float modulo cost ~10% here
            if dr > 180.0:
                dr -= 360.0
            elif dr < -180.0:
                dr += 360.0
            if abs(c_dec[s]) > 80.0:  # the expansion fails near the poles: haversine
                d1, d2_ = np.radians(c_dec[s]), np.radians(dec[i])
                h = (
                    np.sin((d2_ - d1) / 2) ** 2
                    + np.cos(d1) * np.cos(d2_) * np.sin(np.radians(dr) / 2) ** 2
                )
                t = np.degrees(2.0 * np.arcsin(np.sqrt(min(max(h, 0.0), 1.0))))
                d2 = t * t
            else:
                # hav(theta) ~ hav(dd) + cos d1 cos d2 hav(dr), with cos d2 ~ cos d1 - sin d1 dd
                d2 = dd * dd + dr * dr * (cc[s] - cs[s] * np.radians(dd))
            if d2 < best_d2:
                best_d2, best = d2, s
        if best_d2 <= r2:
            idx[i] = best
            sep[i] = np.sqrt(best_d2) * 3600.0


def nearest_moving(
    ra: np.ndarray,
    dec: np.ndarray,
    year: np.ndarray,
    cat: dict[str, np.ndarray],
    radius_deg: float,
    k: int = 4,
    points: np.ndarray | None = None,
    index29: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Nearest catalogue star within ``radius_deg`` of each detection at the detection's epoch.

    ``cat`` holds ``ra``, ``dec`` (at ``epoch``), ``pmra``, ``pmdec`` (mas/yr, NaN = 0) and
    ``epoch`` (Julian year). Stars that move less than a tenth of the radius over the time span
    are matched with one plain nearest-neighbour query (by HEALPix cell with ``index29``, the
    detections' order-29 indices; by k-d tree without); the few that move more are matched at
    each detection's own epoch among the ``k`` nearest of a tree widened by their largest
    displacement, for the detections in a cell near one of them. ``points``, the detections'
    unit vectors, saves recomputing them when the caller has them.
    Returns the index into ``cat`` (-1: none) and the separation in arcsec.
    """
    n = ra.size
    idx = np.full(n, -1, np.int64)
    sep = np.full(n, np.inf)
    if n == 0 or cat["ra"].size == 0:
        return idx, sep
    pmra = np.nan_to_num(np.asarray(cat["pmra"], float))
    pmdec = np.nan_to_num(np.asarray(cat["pmdec"], float))
    mean_epoch = float(np.mean(cat["epoch"]))
    dt_max = max(abs(float(year.max()) - mean_epoch), abs(float(year.min()) - mean_epoch)) + 1.0
    reach = np.hypot(pmra, pmdec) * dt_max / MAS_PER_DEG
    moving = reach > 0.1 * radius_deg
    static = np.flatnonzero(~moving)
    if static.size:
        c_ra, c_dec = np.asarray(cat["ra"])[static], np.asarray(cat["dec"])[static]
        if index29 is not None:
            i, s = nearest_in_cells(index29, ra, dec, c_ra, c_dec, radius_deg)
        else:
            points = unit_vectors(ra, dec) if points is None else points
            i, s = nearest_within(cKDTree(unit_vectors(c_ra, c_dec)), points, radius_deg)
        hit = i >= 0
        idx[hit], sep[hit] = static[i[hit]], s[hit]
    fast = np.flatnonzero(moving)
    if fast.size:
        rows = _candidates(n, index29, cat, fast, radius_deg + float(reach[fast].max()))
        i, s = _nearest_propagated(
            ra[rows],
            dec[rows],
            unit_vectors(ra[rows], dec[rows]) if points is None else points[rows],
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


def order_by_object(
    obj_rank: np.ndarray, frame_rank: np.ndarray, sep: np.ndarray, n_obj: int, n_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """Row order by (object, time) after :func:`one_per_group`, in O(n).

    ``obj_rank`` in [0, ``n_obj``] ranks each row's object (``n_obj``: none), ``frame_rank`` in
    [0, ``n_frames``) its frame by time (one rank per frame), ``sep`` its separation (the
    nearest of a frame's rows of one object is kept; ties: the first row). Returns the
    permutation (assigned rows by object and time, then the rest by time) and the mask of rows
    still assigned. Equals ``one_per_group`` and ``np.lexsort((frame_rank, rank or n_obj))``
    (:func:`order_by_object_slow`), by two counting sorts and a scan: 6x faster.
    """
    for name, v, hi in (("obj_rank", obj_rank, n_obj), ("frame_rank", frame_rank, n_frames - 1)):
        if v.size and (v.min() < 0 or v.max() > hi):
            raise ValueError(f"{name} outside [0, {hi}]: a row's frame or object is not known")
    keep = obj_rank < n_obj
    perm = np.empty(obj_rank.size, np.int64)
    by_frame = np.empty(obj_rank.size, np.int64)
    _order_kernel(
        _kernel_array(obj_rank, np.int64),
        _kernel_array(frame_rank, np.int64),
        _kernel_array(sep, np.float64),
        n_obj,
        n_frames,
        keep,
        perm,
        by_frame,
    )
    return perm, keep


def order_by_object_slow(
    obj_rank: np.ndarray, frame_rank: np.ndarray, sep: np.ndarray, n_obj: int, n_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`order_by_object` by :func:`one_per_group` and a lexsort: the slow twin."""
    group = np.where(obj_rank < n_obj, obj_rank, -1)
    keep = one_per_group(group, frame_rank, sep)
    return np.lexsort((frame_rank, np.where(keep, obj_rank, n_obj))), keep


@numba.njit(numba.void(_I8, numba.int64, _I8, _I8), cache=True, nogil=True)
def _counting_sort(keys, n_keys, rows, out):
    """Stable counting sort of ``rows`` by ``keys[rows]`` (keys in [0, n_keys)) into ``out``."""
    start = np.zeros(n_keys + 1, np.int64)
    for r in rows:
        start[keys[r] + 1] += 1
    for k in range(n_keys):
        start[k + 1] += start[k]
    for r in rows:
        out[start[keys[r]]] = r
        start[keys[r]] += 1


@numba.njit(
    numba.void(_I8, _I8, _F8, numba.int64, numba.int64, numba.boolean[:], _I8, _I8),
    cache=True,
    nogil=True,
)
def _order_kernel(obj, frame, sep, n_obj, n_frames, keep, perm, by_frame):
    n = obj.size
    # 1. rows by frame (time), then stably by object: sorted by (object, time)
    _counting_sort(frame, n_frames, np.arange(n), by_frame)
    _counting_sort(obj, n_obj + 1, by_frame, perm)
    # 2. runs of one (object, frame): the nearest row stays, the others are unassigned
    i = 0
    while i < n:
        o, f = obj[perm[i]], frame[perm[i]]
        j = i + 1
        while j < n and obj[perm[j]] == o and frame[perm[j]] == f:
            j += 1
        if o < n_obj and j - i > 1:
            best = i
            for k in range(i + 1, j):
                if sep[perm[k]] < sep[perm[best]]:
                    best = k
            for k in range(i, j):
                keep[perm[k]] = k == best
        i = j
    # 3. assigned rows in (object, time) order, then the others by time
    w = 0
    for k in range(n):
        if keep[perm[k]]:
            perm[w] = perm[k]
            w += 1
    for k in range(n):
        if not keep[by_frame[k]]:
            perm[w] = by_frame[k]
            w += 1
