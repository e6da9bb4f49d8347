"""Calibration sequences on disk for ``lcdb calib characterize``: discovery, header checks,
grouping by exposure, and streamed row blocks.

A sequence is a directory of 2-D FITS images (``*.fits``, ``*.fit``, ``*.fts``; the first HDU
holding a 2-D image is used). Exposure times come from ``EXPTIME`` (or ``EXPOSURE``); darks and
flats must carry one, a bias without one is taken as 0 s. Frames are never loaded whole: the
header pass records where each file's pixels start, and :func:`iter_row_blocks` reads the same
rows of every file (plain seeks, no astropy per block), one block ahead in a reader thread.
Problems are :class:`~lcdb.errors.InputError` naming the file and what is wrong.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits
from tqdm.auto import tqdm

from lcdb.errors import InputError

_log = logging.getLogger(__name__)

SUFFIXES = (".fits", ".fit", ".fts")
_BITPIX = {8: "u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
#: Expected IMAGETYP words per sequence kind (a mismatch is only logged).
_IMAGETYP_WORDS = {"bias": ("BIAS", "ZERO"), "dark": ("DARK",), "flat": ("FLAT",)}
#: Half-size of the central patch whose median gives a frame's rough level (px).
_PATCH = 32


@dataclass(frozen=True)
class FrameFile:
    """One calibration frame: where its pixels are and what its header says.

    ``level`` is the median of a central patch (raw ADU), used to group flats of equal
    exposure and illumination; ``saturate``, ``channel`` and ``mjd`` are the header's
    ``SATURATE``, ``CHANNEL`` and ``MJD-OBS`` (or ``None``).
    """

    path: Path
    shape: tuple[int, int]
    dtype: str
    offset: int
    bzero: float
    bscale: float
    exptime: float
    imagetyp: str
    saturate: float | None
    level: float
    channel: str | None = None
    mjd: float | None = None

    def read_rows(
        self, r0: int, r1: int, out: np.ndarray | None = None, buffer: np.ndarray | None = None
    ) -> np.ndarray:
        """Rows ``r0:r1`` as float32 ADU (BZERO/BSCALE applied), into ``out`` if given.

        ``buffer`` (uint8, at least the rows' size in bytes) is reused for the raw bytes, so
        that streaming many files allocates nothing per file.
        """
        nx = self.shape[1]
        dtype = np.dtype(self.dtype)
        nbytes = (r1 - r0) * nx * dtype.itemsize
        if buffer is None or buffer.size < nbytes:
            buffer = np.empty(nbytes, np.uint8)
        with open(self.path, "rb") as fh:
            fh.seek(self.offset + r0 * nx * dtype.itemsize)
            got = fh.readinto(memoryview(buffer)[:nbytes])
        if got != nbytes:
            raise InputError(f"{self.path}: file is truncated (rows {r0}:{r1} missing)")
        raw = buffer[:nbytes].view(dtype).reshape(r1 - r0, nx)
        if out is None:
            out = np.empty((r1 - r0, nx), np.float32)
        np.copyto(out, raw, casting="unsafe")
        if self.bscale != 1.0:
            out *= np.float32(self.bscale)
        if self.bzero != 0.0:
            out += np.float32(self.bzero)
        return out

    @property
    def max_value(self) -> float:
        """Largest value the stored type can hold (ADU), the ADC ceiling for integer data."""
        dtype = np.dtype(self.dtype)
        if dtype.kind == "f":
            return float("inf")
        return float(np.iinfo(dtype).max) * self.bscale + self.bzero


@dataclass(frozen=True)
class FrameGroup:
    """Frames of one exposure time and illumination level (a flat pair, a stack, a dark set)."""

    exptime: float
    level: float
    frames: tuple[FrameFile, ...]

    @property
    def n(self) -> int:
        return len(self.frames)


def list_fits(directory: Path) -> list[Path]:
    """Sorted FITS files of ``directory`` (InputError if it holds none)."""
    if not directory.is_dir():
        raise InputError(f"{directory}: not a directory")
    files = sorted(p for p in directory.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        raise InputError(f"{directory}: no FITS files ({', '.join(SUFFIXES)})")
    return files


def _image_hdu(hdul: fits.HDUList, path: Path) -> int:
    for i, hdu in enumerate(hdul):
        if isinstance(hdu, fits.CompImageHDU):
            raise InputError(f"{path}: tile-compressed images are not supported (funpack first)")
        if hdu.header.get("NAXIS", 0) == 2 and hdu.is_image:
            return i
        if hdu.header.get("NAXIS", 0) > 2 and hdu.is_image:
            raise InputError(f"{path}: HDU {i} is a {hdu.header['NAXIS']}-D cube, not a frame")
    raise InputError(f"{path}: no 2-D image HDU")


def _exptime(header: fits.Header, path: Path, kind: str) -> float:
    value = header.get("EXPTIME", header.get("EXPOSURE"))
    if value is None:
        if kind == "bias":
            return 0.0
        raise InputError(f"{path}: no exposure time in the header (EXPTIME or EXPOSURE)")
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{path}: EXPTIME={value!r} is not a number") from None
    if not np.isfinite(t) or t < 0:
        raise InputError(f"{path}: EXPTIME={value!r} must be a finite number >= 0")
    if kind == "flat" and t <= 0:
        raise InputError(f"{path}: a flat needs EXPTIME > 0, got {t}")
    return t


def read_frame_header(path: Path, kind: str) -> FrameFile:
    """Check one file and record its layout, exposure time and rough level."""
    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdul:
            index = _image_hdu(hdul, path)
            hdu = hdul[index]
            header = hdu.header
            bitpix = int(header["BITPIX"])
            shape = (int(header["NAXIS2"]), int(header["NAXIS1"]))
            offset = int(hdul.fileinfo(index)["datLoc"])
    except OSError as exc:
        raise InputError(f"{path}: not a readable FITS file ({exc})") from None
    if bitpix not in _BITPIX:
        raise InputError(f"{path}: unsupported BITPIX={bitpix}")
    imagetyp = str(header.get("IMAGETYP", "")).strip()
    if imagetyp and not any(w in imagetyp.upper() for w in _IMAGETYP_WORDS[kind]):
        _log.warning("%s: IMAGETYP=%r in the %s sequence", path, imagetyp, kind)
    sat = header.get("SATURATE")
    frame = FrameFile(
        path=path,
        shape=shape,
        dtype=_BITPIX[bitpix],
        offset=offset,
        bzero=float(header.get("BZERO", 0.0)),
        bscale=float(header.get("BSCALE", 1.0)),
        exptime=_exptime(header, path, kind),
        imagetyp=imagetyp,
        saturate=float(sat) if isinstance(sat, int | float) else None,
        channel=str(header["CHANNEL"]).strip() if header.get("CHANNEL") else None,
        mjd=float(mjd) if isinstance(mjd := header.get("MJD-OBS"), int | float) else None,
        level=float("nan"),
    )
    ny, nx = shape
    r0, r1 = max(0, ny // 2 - _PATCH), min(ny, ny // 2 + _PATCH)
    c0, c1 = max(0, nx // 2 - _PATCH), min(nx, nx // 2 + _PATCH)
    level = float(np.median(frame.read_rows(r0, r1)[:, c0:c1]))
    return FrameFile(**{**frame.__dict__, "level": level})


def scan_sequence(
    directory: Path, kind: str, *, progress: bool | None = None, max_bias_exptime: float = 0.1
) -> list[FrameFile]:
    """Read and check the headers of every frame of one sequence.

    Parameters
    ----------
    directory
        Folder of FITS frames.
    kind
        ``"bias"``, ``"dark"`` or ``"flat"`` (sets which header rules apply).
    progress
        Show a progress bar (``None``: only on a terminal).
    max_bias_exptime
        Longest exposure accepted in a bias sequence (s).

    Returns
    -------
    list of FrameFile
        In file-name order; all of one shape (else InputError naming the odd file).
    """
    files = list_fits(Path(directory))
    disable = None if progress is None else not progress
    frames = [
        read_frame_header(p, kind)
        for p in tqdm(files, desc=f"{kind} headers", unit="file", disable=disable)
    ]
    for f in frames:
        if kind == "bias" and f.exptime > max_bias_exptime:
            raise InputError(
                f"{f.path}: EXPTIME={f.exptime} s in the bias sequence (> {max_bias_exptime} s; "
                "a dark?)"
            )
    check_shapes({kind: frames})
    return frames


def check_shapes(sequences: dict[str, Sequence[FrameFile]]) -> tuple[int, int]:
    """The common ``(ny, nx)`` of all frames; InputError naming the first frame that differs."""
    ref: FrameFile | None = None
    for frames in sequences.values():
        for f in frames:
            if ref is None:
                ref = f
            elif f.shape != ref.shape:
                raise InputError(
                    f"{f.path}: shape {f.shape[1]}x{f.shape[0]} differs from "
                    f"{ref.shape[1]}x{ref.shape[0]} of {ref.path}"
                )
    if ref is None:
        raise InputError("no calibration frames")
    return ref.shape


def group_frames(
    frames: Sequence[FrameFile], level_tolerance: float, zero: float = 0.0
) -> list[FrameGroup]:
    """Group frames of equal exposure time whose levels agree within ``level_tolerance``
    (fractional, of the signal above ``zero``, plus 3 ADU); sorted by time, then level."""
    groups: list[list[FrameFile]] = []
    for f in sorted(frames, key=lambda f: (f.exptime, f.level)):
        last = groups[-1][0] if groups else None
        if (
            last is not None
            and np.isclose(f.exptime, last.exptime, rtol=1e-6, atol=1e-9)
            and abs(f.level - last.level) <= level_tolerance * max(last.level - zero, 0.0) + 3.0
        ):
            groups[-1].append(f)
        else:
            groups.append([f])
    return [
        FrameGroup(g[0].exptime, float(np.median([f.level for f in g])), tuple(g)) for g in groups
    ]


def block_edges(ny: int, nx: int, n_files: int, megabytes: float) -> np.ndarray:
    """Row edges of blocks whose float32 data for ``n_files`` frames (twice: one block is read
    ahead) fit in ``megabytes``; at least 4096 pixels a block where the frame allows."""
    per_row = 2 * 4 * nx * max(n_files, 1)
    rows = max(int(megabytes * 2**20 // per_row), -(-4096 // nx), 1)
    n_blocks = max(1, -(-ny // min(rows, ny)))
    return np.linspace(0, ny, n_blocks + 1).round().astype(int)


def iter_row_blocks(
    stacks: dict[str, Sequence[FrameFile]],
    edges: np.ndarray,
    *,
    progress: bool | None = None,
) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Yield ``(r0, r1, {name: cube})`` with each cube ``(n_frames, r1 - r0, nx)`` float32.

    The next block is read in a background thread while the caller works on this one.
    """

    def read(r0: int, r1: int) -> dict[str, np.ndarray]:
        out = {}
        buffer = None
        for name, frames in stacks.items():
            cube = np.empty((len(frames), r1 - r0, frames[0].shape[1]), np.float32)
            for k, f in enumerate(frames):
                if buffer is None:
                    buffer = np.empty((r1 - r0) * f.shape[1] * 8, np.uint8)
                f.read_rows(r0, r1, out=cube[k], buffer=buffer)
            out[name] = cube
        return out

    pairs = list(zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True))
    disable = None if progress is None else not progress
    with (
        ThreadPoolExecutor(max_workers=1) as pool,
        tqdm(total=int(edges[-1]), desc="row blocks", unit="row", disable=disable) as bar,
    ):
        future = pool.submit(read, *pairs[0])
        for i, (r0, r1) in enumerate(pairs):
            data = future.result()
            if i + 1 < len(pairs):
                future = pool.submit(read, *pairs[i + 1])
            yield r0, r1, data
            del data
            bar.update(r1 - r0)
