"""HEALPix helpers: the order-29 spatial index every row carries, and partition pruning.

Like HATS' ``_healpix_29``: a nested order-29 index (int64) whose pixel at any coarser order ``k``
is a right shift by ``2 (29 - k)`` bits, so partition assignment and cone pruning are integer
operations. astropy-healpix does the trigonometry; we only chunk it over two threads (its C core
releases the GIL: 10 M points in 1.1 s instead of 2.4 s, bench/store.py).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import astropy.units as u
import numpy as np
from astropy_healpix import HEALPix
from astropy_healpix import core as _hpcore

#: Order of the fine spatial index (nside = 2**29; pixels of ~0.4 mas).
FINE_ORDER = 29
_CHUNK = 1_000_000


def healpix29(ra_deg: np.ndarray, dec_deg: np.ndarray, threads: int = 2) -> np.ndarray:
    """Nested order-29 HEALPix index of each position (int64).

    Parameters
    ----------
    ra_deg, dec_deg : array_like
        ICRS coordinates in degrees.
    threads : int
        Worker threads for large inputs.
    """
    ra = np.asarray(ra_deg, dtype=np.float64)
    dec = np.asarray(dec_deg, dtype=np.float64)
    nside = 2**FINE_ORDER

    def one(sl: slice) -> np.ndarray:
        return _hpcore.lonlat_to_healpix(ra[sl] * u.deg, dec[sl] * u.deg, nside, order="nested")

    if ra.size <= _CHUNK or threads <= 1:
        return np.asarray(one(slice(None)), dtype=np.int64)
    slices = [slice(i, i + _CHUNK) for i in range(0, ra.size, _CHUNK)]
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(one, slices))
    return np.concatenate(parts).astype(np.int64, copy=False)


def coarsen(index29: np.ndarray | int, order: int) -> np.ndarray | int:
    """The nested pixel at ``order`` containing each order-29 index."""
    return np.right_shift(index29, 2 * (FINE_ORDER - order))


def index_range(pixel: int, order: int) -> tuple[int, int]:
    """Inclusive range of order-29 indices inside nested ``pixel`` at ``order``."""
    shift = 2 * (FINE_ORDER - order)
    return pixel << shift, ((pixel + 1) << shift) - 1


def cone_pixels(ra_deg: float, dec_deg: float, radius_deg: float, order: int) -> np.ndarray:
    """Nested pixels at ``order`` that overlap a cone (sorted int64).

    astropy-healpix's cone search is fast only at coarse orders (MEASURED.md), which is where we
    call it: the partition order. Pixels touching the cone are included (conservative).
    """
    hp = HEALPix(nside=2**order, order="nested")
    pix = hp.cone_search_lonlat(ra_deg * u.deg, dec_deg * u.deg, radius_deg * u.deg)
    return np.unique(np.asarray(pix, dtype=np.int64))


def angular_separation_deg(
    ra1: np.ndarray, dec1: np.ndarray, ra2: float | np.ndarray, dec2: float | np.ndarray
) -> np.ndarray:
    """Great-circle separation in degrees (haversine, stable at small angles)."""
    r1, d1, r2, d2 = (np.radians(np.asarray(a, dtype=np.float64)) for a in (ra1, dec1, ra2, dec2))
    s = np.sin((d2 - d1) / 2) ** 2 + np.cos(d1) * np.cos(d2) * np.sin((r2 - r1) / 2) ** 2
    return np.degrees(2 * np.arcsin(np.sqrt(np.clip(s, 0.0, 1.0))))


def neighbour_pixels(pixel: int, order: int) -> list[int]:
    """The (up to 8) nested pixels at ``order`` adjacent to ``pixel``."""
    from astropy_healpix import neighbours

    with np.errstate(invalid="ignore"):  # -1 where a vertex pixel has 7 neighbours
        nb = neighbours(np.array([pixel]), 2**order, order="nested")[:, 0]
    return sorted({int(p) for p in nb if p >= 0})


def margin_pixels(pixel: int, order: int, margin_deg: float) -> tuple[np.ndarray, int]:
    """Pixels just outside ``pixel`` (at a finer order) that cover a margin of ``margin_deg``.

    Returns the sorted margin pixels and their order ``m``: the finest order whose pixels are
    still at least ``margin_deg`` wide, capped at ``order + 8`` (the margin is then wider than
    asked, which costs a few rows, never correctness). A row belongs to the margin when
    ``healpix_29 >> 2 (29 - m)`` is in the returned set.
    """
    from astropy_healpix import neighbours

    m = _margin_order(order, margin_deg)
    shift = 2 * (m - order)
    children = np.arange(pixel << shift, (pixel + 1) << shift, dtype=np.int64)
    with np.errstate(invalid="ignore"):  # -1 where a vertex pixel has 7 neighbours
        nb = neighbours(children, 2**m, order="nested").ravel()
    nb = np.unique(nb[nb >= 0])
    outside = nb[(nb >> shift) != pixel]
    return outside, m


def _margin_order(order: int, margin_deg: float) -> int:
    m = int(np.floor(np.log2(58.6 / max(margin_deg, 1e-9))))
    return int(np.clip(m, order, order + 8))


def margin_targets(pixel: int, order: int, margin_deg: float) -> tuple[np.ndarray, np.ndarray, int]:
    """The other side of :func:`margin_pixels`: which cells of ``pixel`` lie in which
    neighbour's margin.

    Returns ``cells`` (order-``m`` pixels inside ``pixel``, sorted, repeated for a cell in the
    margins of several neighbours, near a corner), the neighbour ``targets`` they serve, and
    ``m``. ``cells[targets == q]`` equals the part of ``margin_pixels(q, ...)`` inside ``pixel``:
    adjacency is symmetric, and a cell is in q's margin when one of its neighbours lies in q.
    """
    from astropy_healpix import neighbours

    m = _margin_order(order, margin_deg)
    shift = 2 * (m - order)
    children = np.arange(pixel << shift, (pixel + 1) << shift, dtype=np.int64)
    with np.errstate(invalid="ignore"):  # -1 where a vertex pixel has 7 neighbours
        nb = neighbours(children, 2**m, order="nested")  # (8, n)
    owner = np.where(nb >= 0, nb >> shift, pixel)
    cell = np.broadcast_to(children, nb.shape)
    out = owner != pixel
    pairs = np.unique(np.column_stack([cell[out], owner[out]]), axis=0)  # sorted by cell
    return pairs[:, 0].copy(), pairs[:, 1].copy(), m


def near_order(radius_deg: float) -> int:
    """Finest order whose cells are at least twice ``radius_deg`` wide: a point within the radius
    of a position lies in the position's cell or one of its 8 neighbours."""
    return int(np.clip(np.floor(np.log2(58.6 / max(2.0 * radius_deg, 1e-9))), 0, 29))


def near_mask(index29: np.ndarray, ra_deg: np.ndarray, dec_deg: np.ndarray, radius_deg: float):
    """Which order-29 indices may lie within ``radius_deg`` of one of the positions.

    True for every index in a cell (at the finest order whose cells are at least twice the radius
    wide) holding a position or next to one: a superset of the true answer, found by a binary
    search per index instead of a distance computation, to skip most of a field before an exact
    match against a sparse catalogue.
    """
    from astropy_healpix import neighbours

    index29 = np.asarray(index29, np.int64)
    if np.size(ra_deg) == 0:
        return np.zeros(index29.size, bool)
    m = near_order(radius_deg)
    shift = 2 * (29 - m)
    cells = np.unique(healpix29(np.asarray(ra_deg), np.asarray(dec_deg), threads=1) >> shift)
    nb = neighbours(cells, 2**m, order="nested").ravel()
    cells = np.unique(np.concatenate([cells, nb[nb >= 0]]))
    coarse = index29 >> shift
    pos = np.clip(np.searchsorted(cells, coarse), 0, cells.size - 1)
    return cells[pos] == coarse
