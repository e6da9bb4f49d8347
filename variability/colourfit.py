"""The per-object fits of ``lcdb colours`` and ``lcdb refine`` as compiled kernels.

sql/colours.sql and sql/magnitudes.sql state the two fits as streaming SQL aggregates; they stay
as the reference these kernels are tested against (tests/test_colours_refine.py). Profiled at 10^8
measurements, the SQL spent ~65% of its time on what is not the scan: Z0 in Horner form and the
normalised coordinates (23%), the materialised points both passes read (17%), the joins with the
frame models and the first fit (9%). Here nothing but the kernels touches a row: a unit's files
are read a row group at a time (only the groups whose object-id statistics overlap the unit's
range), file by file on the unit's threads (the kernels release the GIL), and for each file:

1. looks up each row's frame model (a table indexed by frame id) and computes its point of seed
   Eq. 1: y = instrumental - Z0(x, y), x = the frame's C, w = 1 / (error^2 + floor^2);
2. accumulates the first pass's weighted sums per object (rows arrive in runs of one object: the
   files are sorted by object, so an object's index is looked up once per run);
3. fits each object (a straight line y = V + (B-V) C for colours; a weighted mean of
   y - C (B-V) with B-V held for magnitudes) and its reduced chi2 (at least 1);
4. accumulates the second pass over the points within ``clip`` normalised residuals of the first
   fit (scaled by sqrt(chi2)), with the rms of their residuals from that fit.

Steps 1 and 2 run per file, their sums are added, step 3 runs once and step 4 per file again.
The outputs are the columns the SQL returns, so :func:`variability.colours.solve` and
``solve_magnitudes`` serve both.

Measured (session 9, alternating runs of the job on the same stores, 2 threads): at 1.56·10^8
measurements 5.3-6.1 s against the SQL's 5.3-6.9 s (1.00-1.12x) for 1.06-1.09 GB against 0.31 GB
of peak; at 1.17·10^7 1.33-1.35 s against 0.99-1.05 s, the ~0.4 s with which numba loads its
cached kernels in a new process outweighing the gain. The previous design, DuckDB scanning the
rows into Arrow for the kernels, ran at 0.80x the SQL at 10^7 in the same session (0.97-1.39x at
10^8 in earlier ones) and held the scanned unit whole (0.77 GB). The SQL therefore stays the
default (``ColourJob.method``); this is the opt-in, equal to it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lcdb.errors import InputError
from lcdb.store import Store
from lcdb.tableio import ROW_GROUP_ROWS, row_group_ranges


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
def _points(oid, fid, x, y, flux, ferr, flags, lo, hi, uid, fm, max_err, floor2, out, j):
    """Step 1 for one batch of rows: the good ones' (object index, C, y, w) written into ``out``
    from position ``j`` on; returns the next free position. A row is good as in views.sql's
    unit_points: an object of ``uid`` (sorted ids in ``lo`` .. ``hi``), no flag bit but 4, a
    positive flux with an error of at most ``max_err`` mag, a frame with a model. ``fm``: rank,
    coeffs, naxis1, naxis2, colour, order."""
    rank, coeffs, nax1, nax2, colour, order = fm
    k_of, xx, yy, ww = out
    last, k = lo - 1, -1
    for i in range(oid.size):
        o = oid[i]
        if o < lo or o > hi or (flags[i] & 1019) != 0:
            continue
        if o != last:  # a new run of one object: the files are sorted by object
            last = o
            k = np.searchsorted(uid, o)
            if k >= uid.size or uid[k] != o:
                k = -1
        f = fid[i]
        r = rank[f] if 0 <= f < rank.size else -1
        fl = np.float64(flux[i])
        if k < 0 or r < 0 or not fl > 0:
            continue
        e = 1.0857362047581294 * np.float64(ferr[i]) / fl
        if not e <= max_err:  # NaN errors fail too, as in the SQL
            continue
        xn = 2.0 * np.float64(x[i]) / (nax1[r] - 1.0) - 1.0
        yn = 2.0 * np.float64(y[i]) / (nax2[r] - 1.0) - 1.0
        k_of[j] = k
        yy[j] = -2.5 * np.log10(fl) - _z0(coeffs[r], xn, yn, order)
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
def _line_pass1(k_of, xx, yy, ww, m):
    """Step 2 for y = V + (B-V) C over one part's points: n and the six sums per object."""
    a = np.zeros((m, 6))
    n1 = np.zeros(m, np.int64)
    for i in range(k_of.size):
        n1[k_of[i]] += 1
        _add_line_sums(a[k_of[i]], xx[i], yy[i], ww[i])
    return n1, a


@numba.njit(cache=True, nogil=True)
def _line_limits(n1, a, clip):
    """Step 3: each object's first fit (V, B-V) and its clipping limit clip * sqrt(chi2), chi2
    the reduced chi2 (at least 1); limit -1 where there is no fit (fewer than 3 points or no
    spread of C: as in the SQL, such an object gets no second pass)."""
    m = n1.size
    v, bv, lim = np.zeros(m), np.zeros(m), np.full(m, -1.0)
    for k in range(m):
        s, sx, sy, sxx, sxy, syy = a[k, 0], a[k, 1], a[k, 2], a[k, 3], a[k, 4], a[k, 5]
        det = s * sxx - sx * sx
        if n1[k] < 3 or not det > 0:
            continue
        v[k] = (sxx * sy - sx * sxy) / det
        bv[k] = (s * sxy - sx * sy) / det
        chi = syy - 2 * v[k] * sy - 2 * bv[k] * sxy + v[k] * v[k] * s
        chi += 2 * v[k] * bv[k] * sx + bv[k] * bv[k] * sxx
        lim[k] = clip * np.sqrt(max(chi / max(n1[k] - 2, 1), 1.0))
    return v, bv, lim


@numba.njit(cache=True, nogil=True)
def _line_pass2(k_of, xx, yy, ww, v, bv, lim):
    """Step 4 over one part's points: per object the n and six sums of the points within its
    limit, then the sum and the sum of squares of their residuals from the first fit."""
    m = v.size
    b = np.zeros((m, 8))
    n2 = np.zeros(m, np.int64)
    for i in range(k_of.size):
        k, x, y, w = k_of[i], xx[i], yy[i], ww[i]
        r = y - v[k] - bv[k] * x
        if lim[k] < 0 or abs(r) * np.sqrt(w) > lim[k]:
            continue
        n2[k] += 1
        _add_line_sums(b[k], x, y, w)
        b[k, 6] += r
        b[k, 7] += r * r
    return n2, b


@numba.njit(cache=True, nogil=True)
def _mean_pass1(k_of, xx, yy, ww, bv):
    """Step 2 for y - C (B-V) = V with B-V held (``bv`` per object, NaN: not fitted) over one
    part's points: n and the sums (s, sy, syy) per object."""
    m = bv.size
    a = np.zeros((m, 3))
    n1 = np.zeros(m, np.int64)
    for i in range(k_of.size):
        k = k_of[i]
        if np.isnan(bv[k]):
            continue
        y, w = yy[i] - xx[i] * bv[k], ww[i]
        n1[k] += 1
        a[k, 0] += w
        a[k, 1] += w * y
        a[k, 2] += w * y * y
    return n1, a


@numba.njit(cache=True, nogil=True)
def _mean_limits(n1, a, clip):
    """Step 3 for the held colour: each object's weighted mean V and its clipping limit."""
    m = n1.size
    v, lim = np.zeros(m), np.full(m, -1.0)
    for k in range(m):
        if n1[k] == 0:
            continue
        v[k] = a[k, 1] / a[k, 0]
        chi = (a[k, 2] - a[k, 1] * a[k, 1] / a[k, 0]) / max(n1[k] - 1, 1)
        lim[k] = clip * np.sqrt(max(chi, 1.0))
    return v, lim


@numba.njit(cache=True, nogil=True)
def _mean_pass2(k_of, xx, yy, ww, bv, v, lim):
    """Step 4 for the held colour over one part's points: n and the sums (s, sy, syy, sum and
    sum of squares of y - V) of the points within the limit."""
    m = bv.size
    b = np.zeros((m, 5))
    n2 = np.zeros(m, np.int64)
    for i in range(k_of.size):
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
    return n2, b


#: The columns step 1 reads, in the order of :func:`_points`'s arguments, and what stands in for
#: a null (a row that then fails the filter; NaN for the floats).
_READ_COLUMNS = {
    "object_id": -1,
    "frame_id": -1,
    "x": None,
    "y": None,
    "flux": None,
    "flux_err": None,
    "flags": -1,
}


def _column(batch: pa.RecordBatch, name: str) -> np.ndarray:
    """A column of ``batch`` as numpy, its nulls replaced as :data:`_READ_COLUMNS` says."""
    col = batch.column(name)
    fill = _READ_COLUMNS[name]
    if col.null_count and fill is not None:
        col = pc.fill_null(col, fill)
    return col.to_numpy(zero_copy_only=False)


def _file_points(path: str, lo: int, hi: int, uid: np.ndarray, fm: tuple, config):
    """Step 1 for one measurement file: the points of its rows of the unit's objects, from the
    row groups whose statistics overlap ``lo`` .. ``hi`` (a neighbour partition's file holds the
    unit's objects in one run: the files are sorted by object), decoded on this thread."""
    try:
        f = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    with f:
        missing = [c for c in _READ_COLUMNS if c not in f.schema_arrow.names]
        if missing:
            raise InputError(f"{path}: no column {', '.join(missing)} (not a measurements file?)")
        groups = [
            g
            for g, span in enumerate(row_group_ranges(f.metadata, "object_id"))
            if span is None or (span[1] >= lo and span[0] <= hi)
        ]
        if not groups:
            return None
        n = sum(f.metadata.row_group(g).num_rows for g in groups)
        out = (np.empty(n, np.int64), np.empty(n), np.empty(n), np.empty(n))
        j = 0
        # a row group at a time: a 10^8 store's largest file (4.4 M rows) decoded whole held
        # ~0.16 GB per thread
        batches = f.iter_batches(
            batch_size=ROW_GROUP_ROWS, row_groups=groups, columns=list(_READ_COLUMNS),
            use_threads=False,
        )  # fmt: skip
        for batch in batches:
            cols = [_column(batch, c) for c in _READ_COLUMNS]
            j = _points(*cols, lo, hi, uid, fm, config.max_err, config.floor_mag**2, out, j)
    # a neighbour's file keeps few of its rows: copy them rather than hold the whole buffers
    return tuple(a[:j].copy() if 2 * j < n else a[:j] for a in out)


def _fit_unit(store: Store, files: list[str], lo: int, hi: int, uid, config, threads, kernels):
    """Steps 1-4 for a unit, file by file on ``threads`` threads (the kernels release the GIL):
    each file's points and first-pass sums, their total, the first fits, then each file's second
    pass and its total. ``kernels`` are (pass1, limits, pass2, width): functions of a part's
    points (pass1), of the first pass's n and sums and the clip (limits), of a part's points and
    the fits (pass2), and the number of second-pass sums; returns the first pass's n and the
    second's n and sums."""
    pass1, limits, pass2, width = kernels
    fm = frame_models(store)
    fm_arrays = (fm.rank, fm.coeffs, fm.naxis1, fm.naxis2, fm.colour, fm.order)

    def first(path: str):
        pts = _file_points(path, lo, hi, uid, fm_arrays, config)
        return None if pts is None or not pts[0].size else (pts, pass1(*pts))

    with ThreadPoolExecutor(max(int(threads), 1)) as pool:
        parts = [p for p in pool.map(first, files) if p is not None]
        n1 = sum((p[1][0] for p in parts), np.zeros(uid.size, np.int64))
        a1 = sum((p[1][1] for p in parts), 0.0)
        fit = limits(n1, a1, config.clip) if parts else None
        second = list(pool.map(lambda p: pass2(*p[0], *fit), parts))
    n2 = sum((s[0] for s in second), np.zeros(uid.size, np.int64))
    b = sum((s[1] for s in second), np.zeros((uid.size, width)))
    return n1, n2, b


def _rms(n: np.ndarray, total: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Sample standard deviation from a count, a sum and a sum of squares (NaN below 2)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        var = (squares - total * total / n) / (n - 1)
    return np.where(n > 1, np.sqrt(np.maximum(var, 0.0)), np.nan)


def colour_sums(
    store: Store, files: list[str], lo: int, hi: int, uid: np.ndarray, config, threads: int = 1
) -> pa.Table:
    """The columns of sql/colours.sql for the objects ``uid`` (sorted ids in ``lo`` .. ``hi``)
    from the measurement ``files``, on ``threads`` threads; ``config`` a
    :class:`variability.colours.ColourConfig`."""
    m = uid.size
    kernels = (lambda *p: _line_pass1(*p, m), _line_limits, _line_pass2, 8)
    n1, n2, b = _fit_unit(store, files, lo, hi, uid, config, threads, kernels)
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
    store: Store,
    files: list[str],
    lo: int,
    hi: int,
    uid: np.ndarray,
    bv: np.ndarray,
    config,
    threads: int = 1,
) -> pa.Table:
    """The columns of sql/magnitudes.sql for the objects ``uid`` with colours ``bv`` (NaN: none),
    on ``threads`` threads."""
    bv = np.ascontiguousarray(bv, np.float64)
    kernels = (
        lambda *p: _mean_pass1(*p, bv),
        _mean_limits,
        lambda k, x, y, w, v, lim: _mean_pass2(k, x, y, w, bv, v, lim),
        5,
    )
    n1, n2, b = _fit_unit(store, files, lo, hi, uid, config, threads, kernels)
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
