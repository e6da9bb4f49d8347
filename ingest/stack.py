"""Streamed stacks of frames: sigma-clipped means and per-pixel statistics by row blocks.

A stack of N frames is read block by block (the same rows of every frame, straight from their
memory maps), so memory is bounded by ``StackConfig.budget`` float32 elements whatever N and the
frame size: 100 frames of 9576x6388 px never sit in memory whole.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm.auto import tqdm

from ingest.frameio import FitsImage, row_blocks
from lcdb.errors import InputError

_log = logging.getLogger(__name__)

#: ``transform(index, block, r0, r1)`` edits the rows ``r0:r1`` of frame ``index`` in place.
Transform = Callable[[int, np.ndarray, int, int], None]


@dataclass(frozen=True)
class StackConfig:
    """How a stack is combined.

    Parameters
    ----------
    nsigma : float
        Clipping threshold in robust standard deviations.
    iterations : int
        Clipping iterations (the first about the median, later ones about the clipped mean).
    budget : int
        Float32 elements of one block of the stack (frames x rows x columns).
    progress : bool
        Show a progress bar over the blocks.
    """

    nsigma: float = 3.0
    iterations: int = 2
    budget: int = 1 << 24
    progress: bool = False

    def __post_init__(self) -> None:
        problems = []
        if not self.nsigma > 0:
            problems.append(f"nsigma must be > 0, got {self.nsigma}")
        if self.iterations < 1:
            problems.append(f"iterations must be >= 1, got {self.iterations}")
        if self.budget < 1:
            problems.append(f"budget must be >= 1, got {self.budget}")
        if problems:
            raise ValueError("invalid StackConfig: " + "; ".join(problems))


class StackResult(NamedTuple):
    """A combined stack: the clipped ``mean``, the frames kept per pixel (``n_used``), and the
    fraction of all pixel values rejected."""

    mean: np.ndarray
    n_used: np.ndarray
    rejected_fraction: float


def stack_blocks(
    paths: Sequence[Path],
    budget: int = 1 << 24,
    transform: Transform | None = None,
    progress: bool = False,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(r0, r1, cube)``: rows ``r0:r1`` of every frame as a float32 ``(n, rows, nx)``.

    Raises
    ------
    InputError
        No frames, or a frame whose shape differs from the first one's.
    """
    if not paths:
        raise InputError("no frames to stack")
    with ExitStack() as stack:
        images = _open_all(stack, paths)
        shape = images[0].shape
        blocks = row_blocks(shape[0], shape[1], len(images), budget)
        bar = tqdm(blocks, desc="stack", unit="block", disable=not progress, leave=False)
        for r0, r1 in bar:
            cube = np.empty((len(images), r1 - r0, shape[1]), np.float32)
            for i, img in enumerate(images):
                img.rows(r0, r1, out=cube[i])
                if transform is not None:
                    transform(i, cube[i], r0, r1)
            yield r0, r1, cube


def _median0(cube: np.ndarray) -> np.ndarray:
    """Median along axis 0 (partition of a copy; float32)."""
    n = cube.shape[0]
    k = n // 2
    part = np.partition(cube, [k - 1, k] if n % 2 == 0 else [k], axis=0)
    if n % 2:
        return part[k]
    return (part[k - 1] + part[k]) * np.float32(0.5)


def clipped_mean(
    cube: np.ndarray, nsigma: float = 3.0, iterations: int = 2, floor: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel sigma-clipped mean along axis 0 of ``cube``.

    The first pass clips about the median with sigma = 1.4826 MAD; later passes about the mean
    of the kept values with their standard deviation. Each pixel's sigma is floored at
    ``floor`` (default: the median sigma of the cube), so a pixel whose few values happen to
    agree closely does not reject its good values (this matters for stacks of 3-5 frames).
    Stacks of fewer than 3 frames are averaged without clipping.

    Returns
    -------
    mean : ndarray
        float32 clipped mean.
    n_used : ndarray
        uint16 number of values kept per pixel.
    """
    n = cube.shape[0]
    if n < 3:
        return cube.mean(axis=0, dtype=np.float32), np.full(cube.shape[1:], n, np.uint16)
    center = _median0(cube)
    dev = np.abs(cube - center)
    sigma = _median0(dev)
    sigma *= np.float32(1.4826)
    floor = np.float32(np.median(sigma) if floor is None else floor)
    keep = np.empty(cube.shape, bool)
    for it in range(iterations):
        np.maximum(sigma, floor, out=sigma)
        np.less_equal(dev, np.float32(nsigma) * sigma, out=keep)
        count = keep.sum(axis=0, dtype=np.int32)
        total = np.sum(cube, axis=0, where=keep, dtype=np.float32)
        mean = np.divide(total, count, out=center, where=count > 0)  # no value kept: median
        if it + 1 == iterations:
            break
        np.subtract(cube, mean, out=dev)
        np.square(dev, out=dev)
        sq = np.sum(dev, axis=0, where=keep, dtype=np.float32)
        sigma = np.sqrt(sq / np.maximum(count - 1, 1))
        np.sqrt(dev, out=dev)
    return mean.astype(np.float32, copy=False), count.astype(np.uint16)


def _open_all(stack: ExitStack, paths: Sequence[Path]) -> list[FitsImage]:
    """Open every frame of a stack; InputError naming the first of another shape."""
    images = [stack.enter_context(FitsImage(p)) for p in paths]
    shape = images[0].shape
    for img in images[1:]:
        if img.shape != shape:
            raise InputError(
                f"{img.path}: shape {img.shape[1]}x{img.shape[0]} differs from "
                f"{images[0].path} ({shape[1]}x{shape[0]}) in the same stack"
            )
    return images


def stack_shape(paths: Sequence[Path]) -> tuple[int, int]:
    """Shape ``(ny, nx)`` of the first frame of a stack."""
    if not paths:
        raise InputError("no frames to stack")
    with FitsImage(paths[0]) as img:
        return img.shape


def noise_floor(paths: Sequence[Path], transform: Transform | None = None, rows: int = 16) -> float:
    """Typical per-pixel scatter of a stack (median of 1.4826 MAD over the frames) from
    ``rows`` rows spread over the frame: one floor for every block, so the result does not
    depend on how the stack is cut into blocks."""
    ny, nx = stack_shape(paths)
    if len(paths) < 3:
        return 0.0
    sample = np.unique(np.linspace(0, ny - 1, min(rows, ny)).astype(int))
    cube = np.empty((len(paths), sample.size, nx), np.float32)
    with ExitStack() as stack:
        for i, img in enumerate(_open_all(stack, paths)):
            for j, r in enumerate(sample):
                img.rows(r, r + 1, out=cube[i, j : j + 1])
                if transform is not None:
                    transform(i, cube[i, j : j + 1], r, r + 1)
    dev = np.abs(cube - np.median(cube, axis=0))
    return float(1.4826 * np.median(np.median(dev, axis=0)))


def clipped_mean_stack(
    paths: Sequence[Path],
    config: StackConfig | None = None,
    transform: Transform | None = None,
) -> StackResult:
    """Sigma-clipped mean of a stack of FITS frames, streamed by row blocks.

    Parameters
    ----------
    paths
        The frames (same shape).
    config
        Clipping and memory settings.
    transform
        Optional per-frame edit of each block before combining (e.g. subtract a master,
        normalise); see :data:`Transform`.
    """
    config = config or StackConfig()
    mean = np.empty(stack_shape(paths), np.float32)
    n_used = np.empty(mean.shape, np.uint16)
    floor = noise_floor(paths, transform)
    rejected = 0
    for r0, r1, cube in stack_blocks(paths, config.budget, transform, config.progress):
        m, k = clipped_mean(cube, config.nsigma, config.iterations, floor)
        mean[r0:r1], n_used[r0:r1] = m, k
        rejected += int(cube.shape[0] * k.size - k.sum(dtype=np.int64))
    frac = rejected / max(1, len(paths) * mean.size)
    _log.debug("stacked %d frames: %.4f%% of values rejected", len(paths), 100 * frac)
    return StackResult(mean, n_used, frac)
