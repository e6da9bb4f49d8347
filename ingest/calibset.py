"""A calibration directory: finding the masters for a frame and applying them, row block by block.

:class:`CalibSet` indexes the masters of a directory by their header keywords (see
:mod:`ingest.calib`) and picks, for one science frame: the dark closest in time (preferring one
of the same exposure time, and scaling the thermal part by exposure when a bias is there and the
exposure differs), the flat of the same hardware configuration (channel, filter, focus) closest
in time, and the nonlinearity cube, bad-pixel and RTN maps of the channel closest in time.
:func:`calibrate` then reads the raw frame and the masters by row blocks from their memory maps:
``(raw - dark)`` -> nonlinearity polynomial -> ``/ flat``, writing into one float32 image.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from astropy.io import fits

from ingest.calib import PRODUCTS, apply_polynomial
from ingest.frameio import FITS_ERRORS, FitsImage, FrameMeta, check_shape, frame_meta, row_blocks
from lcdb.errors import InputError
from lcdb.flags import Flag

_log = logging.getLogger(__name__)

#: Flat values below this are treated as dead pixels (flagged, set to 0 after division).
MIN_FLAT = 0.05


@dataclass(frozen=True)
class CalibEntry:
    """One master found in a calibration directory."""

    path: Path
    kind: str
    meta: FrameMeta


@dataclass(frozen=True)
class CalibSelection:
    """The masters chosen for one frame (``None`` where the directory has none)."""

    bias: CalibEntry | None = None
    dark: CalibEntry | None = None
    flat: CalibEntry | None = None
    nonlin: CalibEntry | None = None
    badpix: CalibEntry | None = None
    rtn: CalibEntry | None = None
    dark_scale: float | None = None

    def cards(self) -> dict[str, str]:
        """File names used, as catalogue metadata keywords (``CALDARK`` ...)."""
        out = {}
        for kind in ("bias", "dark", "flat", "nonlin", "badpix", "rtn"):
            entry = getattr(self, kind)
            if entry is not None:
                out[f"CAL{kind.upper()[:5]}"] = entry.path.name
        if self.dark_scale is not None:
            out["CALDSCAL"] = f"{self.dark_scale:.6g}"
        return out


@dataclass
class CalibSet:
    """The masters of one calibration directory (see :meth:`scan`)."""

    root: Path
    entries: list[CalibEntry] = field(default_factory=list)
    exptime_tol: float = 0.01

    @classmethod
    def scan(cls, root: str | Path, exptime_tol: float = 0.01) -> CalibSet:
        """Index every FITS file under ``root`` whose header has ``LCDBPROD``.

        Raises
        ------
        InputError
            ``root`` is not a directory, or holds no calibration product.
        """
        root = Path(root)
        if not root.is_dir():
            raise InputError(f"{root}: calibration directory not found")
        entries = []
        for path in sorted(root.rglob("*.fits")):
            try:
                header = fits.getheader(path)
            except FITS_ERRORS as exc:
                raise InputError(f"{path}: cannot read FITS header ({exc})") from exc
            kind = str(header.get("LCDBPROD", "")).strip()
            if not kind and "NLSREF" in header and "NLORDER" in header:
                kind = "nonlin"  # the product of lcdb calib characterize
            if kind in PRODUCTS:
                entries.append(CalibEntry(path, kind, frame_meta(path, header)))
        if not entries:
            raise InputError(f"{root}: no lcdb calibration products (FITS with LCDBPROD)")
        _log.debug("calibration directory %s: %d products", root, len(entries))
        return cls(root, entries, exptime_tol)

    def of_kind(self, *kinds: str) -> list[CalibEntry]:
        return [e for e in self.entries if e.kind in kinds]

    def select(
        self, meta: FrameMeta, flat_kinds: Iterable[str] = ("flat", "nightflat")
    ) -> CalibSelection:
        """The masters for frame ``meta`` (see the module docstring for the rules)."""
        t = meta.mjd if meta.mjd is not None else 0.0
        bias = _closest(self._matching("bias", meta), t)
        darks = self._matching("dark", meta)
        same = [d for d in darks if _same_exptime(d.meta.exptime, meta.exptime, self.exptime_tol)]
        dark = _closest(same or darks, t)
        scale = None
        if dark is not None and not same and bias is not None and meta.exptime is not None:
            scale = meta.exptime / dark.meta.exptime if dark.meta.exptime else None
        flats = [
            e
            for e in self.entries
            if e.kind in tuple(flat_kinds)
            and _matches(e.meta.channel, meta.channel)
            and _matches(e.meta.filter, meta.filter)
            and _matches(e.meta.focus, meta.focus)
        ]
        return CalibSelection(
            bias=bias,
            dark=dark,
            flat=_closest(flats, t),
            nonlin=_closest(self._matching("nonlin", meta), t),
            badpix=_closest(self._matching("badpix", meta), t),
            rtn=_closest(self._matching("rtn", meta), t),
            dark_scale=scale,
        )

    def _matching(self, kind: str, meta: FrameMeta) -> list[CalibEntry]:
        return [e for e in self.of_kind(kind) if _matches(e.meta.channel, meta.channel)]


def _matches(a: str | None, b: str | None) -> bool:
    return a is None or b is None or a == b


def _same_exptime(a: float | None, b: float | None, tol: float) -> bool:
    return a is not None and b is not None and abs(a - b) <= tol * max(a, b, 1e-9)


def _closest(entries: list[CalibEntry], mjd: float) -> CalibEntry | None:
    if not entries:
        return None
    return min(entries, key=lambda e: abs((e.meta.mjd if e.meta.mjd is not None else 0.0) - mjd))


class Calibrated(NamedTuple):
    """A calibrated frame: float32 ``image``, uint16 ``mask`` (BAD_PIXEL, SALT_PEPPER and
    SATURATED bits set), ``flat_coarse``: the flat averaged over ``coarse`` x ``coarse``
    blocks (ones without a flat), for the per-pixel gain of the photometric errors, and the
    sorted flat indices of the ``saturated`` and ``bad`` pixels (sparse: no full-frame scan
    needed later)."""

    image: np.ndarray
    mask: np.ndarray
    flat_coarse: np.ndarray
    coarse: int
    saturated: np.ndarray
    bad: np.ndarray


def calibrate(
    frame: FitsImage,
    selection: CalibSelection | None,
    saturation: float,
    budget: int = 1 << 22,
    coarse: int = 16,
) -> Calibrated:
    """Dark, nonlinearity and flat of ``frame`` with the chosen masters, in row blocks.

    Parameters
    ----------
    frame
        The opened raw frame.
    selection
        Masters from :meth:`CalibSet.select`; ``None`` (no ``--calib``): the frame is taken as
        already reduced and only its saturated pixels are flagged.
    saturation
        Raw level (ADU) at and above which a pixel is saturated.
    budget
        Float32 elements per block of each layer.
    coarse
        Block size of ``flat_coarse``.

    Raises
    ------
    InputError
        A master whose shape differs from the frame's, naming both files.
    """
    ny, nx = frame.shape
    image = np.empty((ny, nx), np.float32)
    mask = np.zeros((ny, nx), np.uint16)
    sel = selection or CalibSelection()
    with ExitStack() as stack:
        layers = {}
        # The bias is needed only without a dark, or to rescale a dark of another exposure.
        need_bias = sel.dark is None or sel.dark_scale is not None
        for kind in ("bias", "dark", "flat", "badpix", "rtn"):
            entry = getattr(sel, kind)
            if entry is not None and (kind != "bias" or need_bias):
                img = stack.enter_context(FitsImage(entry.path))
                check_shape(frame.path, frame.shape, entry.path, img.shape)
                layers[kind] = img
        cube, ref = None, 1.0
        if sel.nonlin is not None:
            cube, ref = _open_cube(stack, sel.nonlin.path, frame)
        flat_sum = np.zeros(((ny + coarse - 1) // coarse, nx), np.float64)
        scratch = np.empty(0, np.float32)
        saturated, bad = [], []
        for r0, r1 in row_blocks(ny, nx, 4, budget):
            block = frame.rows(r0, r1, out=image[r0:r1])
            hit = np.flatnonzero(block >= saturation)
            mask[r0:r1].ravel()[hit] |= np.uint16(Flag.SATURATED)
            saturated.append(hit + r0 * nx)
            if scratch.size < block.size:
                scratch = np.empty(block.size, np.float32)
            tmp = scratch[: block.size].reshape(block.shape)
            if "dark" in layers:
                block -= layers["dark"].rows(r0, r1, out=tmp)
                if sel.dark_scale is not None and "bias" in layers:
                    thermal = tmp  # dark - bias, rescaled to the frame's exposure
                    thermal -= layers["bias"].rows(r0, r1)
                    thermal *= np.float32(sel.dark_scale - 1.0)
                    block -= thermal
            elif "bias" in layers:
                block -= layers["bias"].rows(r0, r1, out=tmp)
            if isinstance(cube, FitsImage):
                planes = np.stack([cube.rows(r0, r1, plane=k) for k in range(cube.planes)])
                apply_polynomial(block, planes, ref)
            elif cube is not None:
                apply_polynomial(block, cube, ref)
            if "flat" in layers:
                flat = layers["flat"].rows(r0, r1, out=tmp)
                dead = ~(flat >= MIN_FLAT)
                flat[dead] = 1.0
                block /= flat
                block[dead] = 0.0
                hit = np.flatnonzero(dead)
                mask[r0:r1].ravel()[hit] |= np.uint16(Flag.BAD_PIXEL)
                bad.append(hit + r0 * nx)
                _add_coarse_rows(flat_sum, flat, r0, coarse)
            for kind, bit in (("badpix", Flag.BAD_PIXEL), ("rtn", Flag.SALT_PEPPER)):
                if kind in layers:
                    hit = np.flatnonzero(layers[kind].rows(r0, r1, out=tmp) > 0)
                    mask[r0:r1].ravel()[hit] |= np.uint16(bit)
                    if kind == "badpix":
                        bad.append(hit + r0 * nx)
    flat_coarse = (
        _block_mean(flat_sum, ny, coarse)
        if "flat" in layers
        else np.ones(((ny + coarse - 1) // coarse, (nx + coarse - 1) // coarse), np.float32)
    )
    sat_idx = np.concatenate(saturated) if saturated else np.zeros(0, np.int64)
    bad_idx = np.unique(np.concatenate(bad)) if bad else np.zeros(0, np.int64)
    return Calibrated(image, mask, flat_coarse, coarse, sat_idx, bad_idx)


def _open_cube(stack: ExitStack, path: Path, frame: FitsImage) -> tuple[Any, float]:
    """The nonlinearity planes: a FitsImage of a cube, or a vector (one polynomial)."""
    try:
        header = fits.getheader(path)
    except FITS_ERRORS as exc:
        raise InputError(f"{path}: cannot read nonlinearity cube ({exc})") from exc
    ref = float(header.get("NLSREF", 0.0))
    if not ref > 0:
        raise InputError(f"{path}: nonlinearity cube lacks a positive NLSREF keyword")
    naxis = int(header.get("NAXIS", 0))
    if naxis == 1:
        return np.asarray(fits.getdata(path), np.float32), ref
    if naxis != 3:
        raise InputError(
            f"{path}: nonlinearity cube must be (K,) or (K, ny, nx), got NAXIS={naxis}"
        )
    cube = stack.enter_context(FitsImage(path, ndim=3))
    check_shape(frame.path, frame.shape, path, cube.shape)
    return cube, ref


def _add_coarse_rows(sums: np.ndarray, block: np.ndarray, r0: int, coarse: int) -> None:
    """Add the rows of ``block`` (starting at image row ``r0``) to their coarse rows."""
    rows = np.arange(r0, r0 + block.shape[0]) // coarse
    starts = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]])
    sums[rows[starts]] += np.add.reduceat(block, starts, axis=0, dtype=np.float64)


def _block_mean(row_sums: np.ndarray, ny: int, coarse: int) -> np.ndarray:
    """Means over ``coarse`` x ``coarse`` blocks from per-coarse-row column sums."""
    nby, nx = row_sums.shape
    nbx = (nx + coarse - 1) // coarse
    pad = np.zeros((nby, nbx * coarse), np.float64)
    pad[:, :nx] = row_sums
    sums = pad.reshape(nby, nbx, coarse).sum(axis=2)
    rows = np.full(nby, coarse, np.float64)
    rows[-1] = ny - coarse * (nby - 1)
    cols = np.full(nbx, coarse, np.float64)
    cols[-1] = nx - coarse * (nbx - 1)
    return (sums / rows[:, None] / cols[None, :]).astype(np.float32)
