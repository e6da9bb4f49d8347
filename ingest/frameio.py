"""Reading raw and calibration frames: FITS images by row blocks, and their header keywords.

Every reader turns a broken file into :class:`~lcdb.errors.InputError` with one line naming the
file and the problem. Images are read as native-endian float32 (SEP rejects the big-endian arrays
FITS holds), in row blocks straight from a memory map, so a 61-Mpix frame never exists twice.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from lcdb.errors import InputError

_log = logging.getLogger(__name__)

#: Errors a FITS reader raises on a corrupt or foreign file.
FITS_ERRORS = (OSError, ValueError, TypeError, IndexError, KeyError, EOFError)

#: Keywords every science frame needs (docs/formats.md §1), as (name, alternatives).
SCIENCE_KEYWORDS = ("EXPTIME", "FILTER", "CHANNEL")


@dataclass(frozen=True)
class FrameMeta:
    """Header facts of one frame.

    Attributes
    ----------
    path : Path
        The file.
    name : str
        ``FRAMEID``, else the file name without extension.
    mjd : float or None
        Exposure start, MJD UTC (``MJD-OBS`` or ``DATE-OBS``).
    exptime : float or None
        Exposure time, s.
    filter, channel, focus : str or None
        Hardware configuration (``FILTER``, ``CHANNEL``, ``FOCUS``).
    imagetyp : str or None
        ``IMAGETYP``, upper case.
    shape : tuple of int
        Image shape ``(ny, nx)``.
    saturate : float or None
        ``SATURATE`` (ADU), the level of saturation of the raw data.
    gain : float or None
        ``GAIN`` (e-/ADU).
    airmass, ra, dec : float or None
        ``AIRMASS``, ``RA``, ``DEC`` (deg) when present and numeric.
    """

    path: Path
    name: str
    mjd: float | None
    exptime: float | None
    filter: str | None
    channel: str | None
    focus: str | None
    imagetyp: str | None
    shape: tuple[int, int]
    saturate: float | None
    gain: float | None
    airmass: float | None
    ra: float | None
    dec: float | None

    def require(self, *keywords: str) -> None:
        """Raise InputError naming the first of ``keywords`` this frame lacks."""
        values = {"MJD-OBS": self.mjd, "EXPTIME": self.exptime, "FILTER": self.filter,
                  "CHANNEL": self.channel}  # fmt: skip
        for key in keywords:
            if values.get(key) is None:
                extra = " (or DATE-OBS)" if key == "MJD-OBS" else ""
                raise InputError(f"{self.path}: missing header keyword {key}{extra}")

    @property
    def config_key(self) -> tuple[str, str, str]:
        """The hardware configuration ``(channel, filter, focus)`` ('' where absent)."""
        return (self.channel or "", self.filter or "", self.focus or "")


class FitsImage:
    """The first image HDU of a FITS file, read as native float32 by row blocks.

    Uncompressed data are read with plain file reads at the data's offset (no memory map, so
    the pages read do not count in the process's resident memory); tile-compressed images go
    through astropy's ``section``.

    Parameters
    ----------
    path : str or Path
        The FITS file.
    ndim : int
        Dimensions of the image looked for: 2, or 3 for a cube of planes (nonlinearity).

    Raises
    ------
    InputError
        The file is missing, not FITS, or has no image of ``ndim`` dimensions.
    """

    def __init__(self, path: str | Path, ndim: int = 2) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"{self.path}: no such file")
        try:
            with warnings.catch_warnings():  # truncation and odd keywords: reported below
                warnings.simplefilter("ignore", AstropyUserWarning)
                self._hdul = fits.open(self.path, memmap=False, lazy_load_hdus=True,
                                       do_not_scale_image_data=True)  # fmt: skip
                hdu = next((h for h in self._hdul if _is_image(h, ndim)), None)
        except FITS_ERRORS as exc:
            msg = f"{self.path}: cannot read FITS ({type(exc).__name__}: {exc})"
            raise InputError(msg) from exc
        if hdu is None:
            self._hdul.close()
            raise InputError(f"{self.path}: no {ndim}-D image in the FITS file")
        self.hdu = hdu
        self.header: fits.Header = hdu.header
        self.shape: tuple[int, int] = (int(hdu.header["NAXIS2"]), int(hdu.header["NAXIS1"]))
        self.planes = int(hdu.header.get("NAXIS3", 1)) if ndim == 3 else 1
        self._compressed = isinstance(hdu, fits.CompImageHDU)
        self._bscale = float(hdu.header.get("BSCALE", 1.0))
        self._bzero = float(hdu.header.get("BZERO", 0.0))
        self._fh = None
        if not self._compressed:
            bitpix = int(hdu.header["BITPIX"])
            self._dtype = np.dtype({8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4",
                                    -64: ">f8"}[bitpix])  # fmt: skip
            self._offset = int(hdu.fileinfo()["datLoc"])
            self._fh = open(self.path, "rb")  # closed by close()
            size = self._offset + self._dtype.itemsize * self.planes * self.shape[0] * self.shape[1]
            if self.path.stat().st_size < size:
                self.close()
                raise InputError(f"{self.path}: truncated FITS file (data end at byte {size}, "
                                 f"file has {self.path.stat().st_size})")  # fmt: skip

    def rows(self, r0: int, r1: int, out: np.ndarray | None = None, plane: int = 0) -> np.ndarray:
        """Rows ``r0:r1`` (of ``plane`` of a cube) as float32 (written into ``out`` if given)."""
        nx = self.shape[1]
        if out is None:
            out = np.empty((r1 - r0, nx), np.float32)
        try:
            if self._compressed:  # stored values (the file is opened unscaled): scaled below
                np.copyto(out, np.asarray(self.hdu.section[r0:r1, :]), casting="unsafe")
            else:
                self._read_rows(r0, r1, out, plane)
        except FITS_ERRORS as exc:
            msg = f"{self.path}: cannot read image data ({type(exc).__name__}: {exc})"
            raise InputError(msg) from exc
        if self._bscale != 1.0:
            out *= np.float32(self._bscale)
        if self._bzero != 0.0:
            out += np.float32(self._bzero)
        return out

    def _read_rows(self, r0: int, r1: int, out: np.ndarray, plane: int) -> None:
        """Stored values of rows ``r0:r1`` of an uncompressed image into ``out``."""
        nx = self.shape[1]
        assert self._fh is not None
        start = (plane * self.shape[0] + r0) * nx
        self._fh.seek(self._offset + start * self._dtype.itemsize)
        if self._dtype == np.dtype(">f4") and out.flags.c_contiguous:
            # Straight into the output buffer, then swap the bytes in place: no temporary.
            if self._fh.readinto(memoryview(out).cast("B")) != out.nbytes:
                raise EOFError(f"short read at row {r0}")
            out.view(np.uint32).byteswap(inplace=True)
        else:
            block = np.fromfile(self._fh, self._dtype, count=(r1 - r0) * nx)
            if block.size != (r1 - r0) * nx:
                raise EOFError(f"short read at row {r0}")
            np.copyto(out, block.reshape(r1 - r0, nx), casting="unsafe")

    def read(self) -> np.ndarray:
        """The whole image (first plane) as float32."""
        return self.rows(0, self.shape[0])

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None
        self._hdul.close()

    def __enter__(self) -> FitsImage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _is_image(hdu: Any, ndim: int = 2) -> bool:
    if not isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
        return False
    return int(hdu.header.get("NAXIS", 0)) == ndim and int(hdu.header.get("NAXIS1", 0)) > 0


def read_image(path: str | Path) -> np.ndarray:
    """The first 2-D image of a FITS file as native float32."""
    with FitsImage(path) as img:
        return img.read()


def frame_meta(path: str | Path, header: fits.Header | None = None) -> FrameMeta:
    """Header facts of a FITS frame (reads the header when ``header`` is not given)."""
    path = Path(path)
    if header is None:
        with FitsImage(path) as img:
            header, shape = img.header.copy(), img.shape
    else:
        shape = (int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0)))
    exptime = _number(path, header, "EXPTIME")
    if exptime is not None and exptime < 0:
        raise InputError(f"{path}: EXPTIME must be >= 0, got {exptime}")
    name = _text(header, "FRAMEID") or _stem(path)
    return FrameMeta(
        path=path,
        name=name,
        mjd=_mjd(path, header),
        exptime=exptime,
        filter=_text(header, "FILTER"),
        channel=_text(header, "CHANNEL"),
        focus=_text(header, "FOCUS"),
        imagetyp=(_text(header, "IMAGETYP") or "").upper() or None,
        shape=shape,
        saturate=_number(path, header, "SATURATE"),
        gain=_number(path, header, "GAIN"),
        airmass=_number(path, header, "AIRMASS"),
        ra=_number(path, header, "RA"),
        dec=_number(path, header, "DEC"),
    )


def _text(header: fits.Header, key: str) -> str | None:
    value = header.get(key)
    if value is None or str(value).strip() == "":
        return None
    return str(value).strip()


def _number(path: Path, header: fits.Header, key: str) -> float | None:
    value = header.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        x = float(value)
    except (TypeError, ValueError):
        if key in ("RA", "DEC"):  # sexagesimal strings are common; the WCS gives the centre
            return None
        raise InputError(f"{path}: header keyword {key} is not a number ({value!r})") from None
    if not math.isfinite(x):
        raise InputError(f"{path}: header keyword {key} is not finite ({value!r})")
    return x


def _mjd(path: Path, header: fits.Header) -> float | None:
    mjd = _number(path, header, "MJD-OBS")
    if mjd is not None:
        return mjd
    date = _text(header, "DATE-OBS")
    if date is None:
        return None
    from astropy.time import Time

    try:
        return float(Time(date, scale="utc").mjd)
    except ValueError:
        raise InputError(f"{path}: DATE-OBS is not an ISO time ({date!r})") from None


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".fits.fz", ".fits.gz", ".fits", ".fit", ".fts", ".fz"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def night_of(mjd: float, longitude_deg: float = 0.0) -> int:
    """Observing night of an MJD: the local date (at ``longitude_deg`` east) of the noon before.

    All frames from one local noon to the next share a night, so evening and morning twilight
    flats of one night stay together.
    """
    return math.floor(mjd + longitude_deg / 360.0 - 0.5)


def check_shape(frame: Path, shape: tuple[int, int], calib: Path, calib_shape: tuple) -> None:
    """Raise InputError when a calibration product does not match the frame's shape."""
    if tuple(calib_shape) != tuple(shape):
        raise InputError(
            f"{frame}: shape {shape[1]}x{shape[0]} does not match calibration {calib} "
            f"({calib_shape[-1]}x{calib_shape[-2]})"
        )


def write_image(
    path: Path,
    data: np.ndarray,
    header: fits.Header | dict[str, Any] | None = None,
    compress: str | None = None,
) -> Path:
    """Write ``data`` with ``header`` cards to ``path`` (atomically replacing it).

    ``compress`` (``RICE_1`` for integers, ``GZIP_2`` for floats: both lossless here) writes a
    tile-compressed image extension instead of a primary image.
    """
    hdr = header if isinstance(header, fits.Header) else fits.Header()
    if isinstance(header, dict):
        for key, value in header.items():
            hdr[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    if compress:
        hdu = fits.CompImageHDU(data, header=hdr, compression_type=compress, quantize_level=0.0)
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(tmp, overwrite=True)
    else:
        fits.PrimaryHDU(data=data, header=hdr).writeto(tmp, overwrite=True)
    tmp.replace(path)
    return path


def row_blocks(ny: int, nx: int, n_layers: int = 1, budget: int = 1 << 24) -> list[tuple[int, int]]:
    """Row ranges whose ``n_layers * rows * nx`` elements stay within ``budget``."""
    rows = max(1, budget // max(1, nx * n_layers))
    return [(r0, min(ny, r0 + rows)) for r0 in range(0, ny, rows)]
