"""The per-object fits of ``lcdb colours`` and ``lcdb refine`` as compiled kernels.

sql/colours.sql and sql/magnitudes.sql state the two fits as streaming SQL aggregates; they stay
as the reference these kernels are tested against (tests/test_colourfit.py). Profiled at 10^8
measurements, the SQL spent ~65% of its time on what is not the scan: Z0 in Horner form and the
normalised coordinates (23%), the materialised points both passes read (17%), the joins with the
frame models and the first fit (9%), so it ran at 0.27-0.30x DuckDB's plain aggregation of the
same columns. Here DuckDB only scans and filters the unit's measurements; the kernel then:

1. looks up each row's frame model (a table indexed by frame id) and computes its point of seed
   Eq. 1: y = instrumental - Z0(x, y), x = the frame's C, w = 1 / (error^2 + floor^2);
2. accumulates the first pass's weighted sums per object (rows arrive in runs of one object: the
   files are sorted by object, so an object's index is looked up once per run);
3. fits each object (a straight line y = V + (B-V) C for colours; a weighted mean of
   y - C (B-V) with B-V held for magnitudes) and its reduced chi2 (at least 1);
4. accumulates the second pass over the points within ``clip`` normalised residuals of the first
   fit (scaled by sqrt(chi2)), with the rms of their residuals from that fit.

The outputs are the columns the SQL returns, so :func:`variability.colours.solve` and
``solve_magnitudes`` serve both.

Measured (bench/pipeline.py, stages colours-sql and colours in one run): at 10^8, 0.97x, 1.12x and
1.39x the SQL's speed over three runs, 0.66-1.03x at 10^7 (0.66x in the two latest runs,
where the SQL ran at 0.35-0.42x the aggregation), for a peak of 0.77 GB against 0.46-0.48 GB.
The kernels are cheap (per 10^7 unit of 6.2 M rows: points 0.23 s, fits 0.05 s); DuckDB's scan of
the rows into Arrow is not (0.43 s, against 0.32 s for a plain aggregation of the same rows), so
this design cannot go much past 0.5x of that aggregation. The SQL therefore stays the default
(``ColourJob.method``); this is the opt-in, equal to it (tests/test_colours_refine.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
import pyarrow as pa

from lcdb import sqlfiles
from lcdb.store import Store


@dataclass(frozen=True)
class FrameModels:
    """The photometric models of the calibrated (status ok) frames, indexed by frame id.

    ``rank[frame_id]`` is the row of a frame in the other arrays (-1: no usable model);
    ``coeffs`` holds the 28 Z0 coefficients of order 6 (zeros past a frame's own order).
    """

    rank: np.ndarray
    coeffs: np.ndarray
    naxis1: np.ndarray
    naxis2: np.ndarray
    colour: np.ndarray
    order: int


def frame_models(store: Store) -> FrameModels:
    """The frame models of ``store``, read once per manifest version (units of one job share
    them)."""
    return _frame_models(store, store.manifest.version)


@lru_cache(maxsize=2)
def _frame_models(store: Store, version: int) -> FrameModels:
    t = store.sql("SELECT * FROM _frame_models WHERE status = 'ok'")
    ids = t["frame_id"].to_numpy()
    size = int(ids.max()) + 1 if ids.size else 0
    if ids.size and (ids.min() < 0 or size > 4 * ids.size + 1_000_000):
        raise ValueError(f"{store.root}: frame ids span {ids.min()}..{ids.max()}: too sparse")
    rank = np.full(size, -1, np.int64)
    rank[ids] = np.arange(ids.size)
    order = store.sql("SELECT max(z0_order) FROM frames").column(0)[0].as_py() or 0
    return FrameModels(
        rank,
        np.ascontiguousarray(np.stack([t[f"c{i}"].to_numpy() for i in range(28)], axis=1)),
        t["naxis1"].to_numpy().astype(np.float64),
        t["naxis2"].to_numpy().astype(np.float64),
        t["color_coeff"].to_numpy().astype(np.float64),
        int(order),
    )


@numba.njit(cache=True, nogil=True)
def _z0(c, xn, yn, order):
    """Z0 of coefficients ``c`` (views.sql's z0_horner: Horner in xn per power of yn, unrolled:
    step 1 took 0.40 s for 6.2 M rows with a loop over the terms, 0.23 s with this)."""
    if order <= 4:
        return (
            ((((c[14]) * yn + (c[13]) * xn + c[9]) * yn
              + ((c[12]) * xn + c[8]) * xn + c[5]) * yn
             + (((c[11]) * xn + c[7]) * xn + c[4]) * xn + c[2]) * yn
            + ((((c[10]) * xn + c[6]) * xn + c[3]) * xn + c[1]) * xn + c[0]
        )  # fmt: skip
    return (
        ((((((c[27]) * yn
             + (c[26]) * xn + c[20]) * yn
            + ((c[25]) * xn + c[19]) * xn + c[14]) * yn
           + (((c[24]) * xn + c[18]) * xn + c[13]) * xn + c[9]) * yn
          + ((((c[23]) * xn + c[17]) * xn + c[12]) * xn + c[8]) * xn + c[5]) * yn
         + (((((c[22]) * xn + c[16]) * xn + c[11]) * xn + c[7]) * xn + c[4]) * xn + c[2]) * yn
        + ((((((c[21]) * xn + c[15]) * xn + c[10]) * xn + c[6]) * xn + c[3]) * xn + c[1]) * xn
        + c[0]
    )  # fmt: skip


@numba.njit(cache=True, nogil=True)
def _points(oid, fid, x, y, flux, ferr, uid, fm, max_err, floor2, out, j):
    """Step 1 for one batch of rows: their (object index, y, C, w) written into ``out`` from
    position ``j`` on; returns the next free position. Rows of objects not in ``uid`` or of
    frames without a model are dropped. ``fm``: rank, coeffs, naxis1, naxis2, colour, order."""
    rank, coeffs, nax1, nax2, colour, order = fm
    k_of, yy, xx, ww = out
    last, k = -1, -1
    for i in range(oid.size):
        if oid[i] != last:  # a new run of one object
            last = oid[i]
            k = np.searchsorted(uid, last)
            if k >= uid.size or uid[k] != last:
                k = -1
        f = fid[i]
        r = rank[f] if 0 <= f < rank.size else -1
        e = 1.0857362047581294 * np.float64(ferr[i]) / np.float64(flux[i])
        if k < 0 or r < 0 or e > max_err:
            continue
        xn = 2.0 * np.float64(x[i]) / (nax1[r] - 1.0) - 1.0
        yn = 2.0 * np.float64(y[i]) / (nax2[r] - 1.0) - 1.0
        k_of[j] = k
        yy[j] = -2.5 * np.log10(np.float64(flux[i])) - _z0(coeffs[r], xn, yn, order)
        xx[j] = colour[r]
        ww[j] = 1.0 / (e * e + floor2)
        j += 1
    return j


@numba.njit(cache=True, nogil=True, inline="always")
def _add_line_sums(row, x, y, w):
    """Add a point to the weighted sums (s, sx, sy, sxx, sxy, syy) of a straight-line fit."""
    row[0] += w
    row[1] += w * x
    row[2] += w * y
    row[3] += w * x * x
    row[4] += w * x * y
    row[5] += w * y * y


@numba.njit(cache=True, nogil=True)
def _line_fit(k_of, xx, yy, ww, m, clip):
    """Steps 2-4 for y = V + (B-V) C: per object the second pass's n and sums
    (s, sx, sy, sxx, sxy, syy), the rms of its residuals and the first pass's n."""
    a = np.zeros((m, 6))
    n1 = np.zeros(m, np.int64)
    for i in range(k_of.size):  # step 2
        n1[k_of[i]] += 1
        _add_line_sums(a[k_of[i]], xx[i], yy[i], ww[i])
    v, bv, lim = np.zeros(m), np.zeros(m), np.full(m, -1.0)
    for k in range(m):  # step 3
        s, sx, sy, sxx, sxy, syy = a[k, 0], a[k, 1], a[k, 2], a[k, 3], a[k, 4], a[k, 5]
        det = s * sxx - sx * sx
        if n1[k] < 3 or not det > 0:
            continue  # no fit: the object gets no second pass (as in the SQL)
        v[k] = (sxx * sy - sx * sxy) / det
        bv[k] = (s * sxy - sx * sy) / det
        chi = syy - 2 * v[k] * sy - 2 * bv[k] * sxy + v[k] * v[k] * s
        chi += 2 * v[k] * bv[k] * sx + bv[k] * bv[k] * sxx
        lim[k] = clip * np.sqrt(max(chi / max(n1[k] - 2, 1), 1.0))
    b = np.zeros((m, 8))  # the six sums, then the sum and the sum of squares of residuals
    n2 = np.zeros(m, np.int64)
    for i in range(k_of.size):  # step 4
        k, x, y, w = k_of[i], xx[i], yy[i], ww[i]
        r = y - v[k] - bv[k] * x
        if lim[k] < 0 or abs(r) * np.sqrt(w) > lim[k]:
            continue
        n2[k] += 1
        _add_line_sums(b[k], x, y, w)
        b[k, 6] += r
        b[k, 7] += r * r
    return n1, n2, b


@numba.njit(cache=True, nogil=True)
def _mean_fit(k_of, xx, yy, ww, bv, m, clip):
    """Steps 2-4 for y - C (B-V) = V with B-V held (``bv`` per object, NaN: not fitted): per
    object the second pass's n and sums (s, sy, syy, sum and sum of squares of y) and the first
    pass's n."""
    a = np.zeros((m, 3))
    n1 = np.zeros(m, np.int64)
    for i in range(k_of.size):  # step 2
        k = k_of[i]
        if np.isnan(bv[k]):
            continue
        y, w = yy[i] - xx[i] * bv[k], ww[i]
        n1[k] += 1
        a[k, 0] += w
        a[k, 1] += w * y
        a[k, 2] += w * y * y
    v, lim = np.zeros(m), np.full(m, -1.0)
    for k in range(m):  # step 3
        if n1[k] == 0:
            continue
        v[k] = a[k, 1] / a[k, 0]
        chi = (a[k, 2] - a[k, 1] * a[k, 1] / a[k, 0]) / max(n1[k] - 1, 1)
        lim[k] = clip * np.sqrt(max(chi, 1.0))
    b = np.zeros((m, 5))
    n2 = np.zeros(m, np.int64)
    for i in range(k_of.size):  # step 4
        k = k_of[i]
        if lim[k] < 0:
            continue
        y, w = yy[i] - xx[i] * bv[k], ww[i]
        if abs(y - v[k]) * np.sqrt(w) > lim[k]:
            continue
        n2[k] += 1
        b[k, 0] += w
        b[k, 1] += w * y
        b[k, 2] += w * y * y
        b[k, 3] += y - v[k]  # about the first fit: sum y^2 would cancel ~10^4 digits' worth
        b[k, 4] += (y - v[k]) * (y - v[k])
    return n1, n2, b


def _unit_points(store: Store, files: list[str], lo: int, hi: int, uid: np.ndarray, config):
    """Step 1 for a unit: its rows scanned by DuckDB, their points computed by the kernel batch
    by batch (no copy of the scanned columns into one array)."""
    raw = store.sql(sqlfiles.load("colour_rows"), {"files": files, "lo": lo, "hi": hi})
    fm = frame_models(store)
    fm_arrays = (fm.rank, fm.coeffs, fm.naxis1, fm.naxis2, fm.colour, fm.order)
    n = raw.num_rows
    out = (np.empty(n, np.int64), np.empty(n), np.empty(n), np.empty(n))
    j = 0
    for batch in raw.to_batches():
        cols = [batch.column(c).to_numpy() for c in _RAW_COLUMNS]
        j = _points(*cols, uid, fm_arrays, config.max_err, config.floor_mag**2, out, j)
    return tuple(a[:j] for a in out)


_RAW_COLUMNS = ("object_id", "frame_id", "x", "y", "flux", "flux_err")


def _rms(n: np.ndarray, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Sample standard deviation from a count, a sum and a sum of squares (NaN below 2)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (squares - total * total / n) / (n - 1)
    return np.where(n > 1, np.sqrt(np.maximum(var, 0.0)), np.nan)


def colour_sums(
    store: Store, files: list[str], lo: int, hi: int, uid: np.ndarray, config
) -> pa.Table:
    """The columns of sql/colours.sql for the objects ``uid`` (sorted ids in ``lo`` .. ``hi``)
    from the measurement ``files``; ``config`` a :class:`variability.colours.ColourConfig`."""
    k_of, yy, xx, ww = _unit_points(store, files, lo, hi, uid, config)
    n1, n2, b = _line_fit(k_of, xx, yy, ww, uid.size, config.clip)
    keep = n2 > 0
    b, n = b[keep], n2[keep]
    s, sx, sxx = b[:, 0], b[:, 1], b[:, 3]
    return pa.table(
        {
            "object_id": uid[keep],
            "n": n,
            "s": s,
            "sx": sx,
            "sy": b[:, 2],
            "sxx": sxx,
            "sxy": b[:, 4],
            "syy": b[:, 5],
            "rms": _rms(n, b[:, 6], b[:, 7]),
            "c_spread": np.sqrt(np.maximum(sxx / s - (sx / s) ** 2, 0.0)),
            "n_clipped": n1[keep] - n,
        }
    )


def magnitude_sums(
    store: Store, files: list[str], lo: int, hi: int, uid: np.ndarray, bv: np.ndarray, config
) -> pa.Table:
    """The columns of sql/magnitudes.sql for the objects ``uid`` with colours ``bv`` (NaN: none)."""
    k_of, yy, xx, ww = _unit_points(store, files, lo, hi, uid, config)
    n1, n2, b = _mean_fit(k_of, xx, yy, ww, np.asarray(bv, np.float64), uid.size, config.clip)
    keep = n2 > 0
    b, n = b[keep], n2[keep]
    s, sy, syy = b[:, 0], b[:, 1], b[:, 2]
    return pa.table(
        {
            "object_id": uid[keep],
            "n": n,
            "v": sy / s,
            "v_err_stat": np.sqrt(1.0 / s),
            "chi2": (syy - sy * sy / s) / np.maximum(n - 1, 1),
            "rms": _rms(n, b[:, 3], b[:, 4]),
            "n_clipped": n1[keep] - n,
        }
    )
