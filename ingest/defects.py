"""Static defect maps: bad pixels (dark outliers, dead flat pixels, given maps) and RTN pixels.

Bad pixels (Mini-SiTian §3.1): pixels of the master dark more than ``dark_nsigma`` robust
standard deviations from the typical dark level, after removing the smooth pattern (corner glow,
gradients: the mesh large scale of :func:`ingest.flats.large_scale`) and row and column banding;
optionally pixels whose small-scale flat response lies outside ``flat_range`` (dead and
over-responsive pixels, invisible in darks); merged with any given maps (non-zero = bad).

Salt-and-pepper (random-telegraph, RTN) pixels (Mini-SiTian §3.1.3): the bias stack is split
into ``rtn_groups`` disjoint groups in time; a pixel is RTN when its standard deviation exceeds
``rtn_threshold`` ADU in every group (the intersection guards against chance excursions). The
stack is streamed by row blocks.

Both maps are uint8 FITS (1 = flagged) with ``LCDBPROD`` = ``badpix`` / ``rtn``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ingest.calib import CalibConfig, product_name, provenance, read_metas
from ingest.flats import large_scale
from ingest.frameio import FitsImage, check_shape, frame_meta, write_image
from ingest.stack import stack_blocks, stack_shape
from lcdb.errors import InputError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DefectConfig:
    """Thresholds of the defect maps.

    Parameters
    ----------
    dark_nsigma : float
        Dark outliers: robust sigmas from the typical level (the seed's 3).
    flat_range : tuple of float
        Accepted small-scale flat response (low, high); outside is bad.
    rtn_threshold : float
        Per-pixel standard deviation (ADU) above which a pixel is RTN in a group (the seed's 8).
    rtn_groups : int
        Disjoint groups of the bias stack (the seed's 3); each needs >= 2 frames.
    """

    dark_nsigma: float = 3.0
    flat_range: tuple[float, float] = (0.5, 1.5)
    rtn_threshold: float = 8.0
    rtn_groups: int = 3

    def __post_init__(self) -> None:
        problems = []
        if not self.dark_nsigma > 0:
            problems.append(f"dark_nsigma must be > 0, got {self.dark_nsigma}")
        lo, hi = self.flat_range
        if not 0 <= lo < 1 < hi:
            problems.append(f"flat_range must satisfy 0 <= low < 1 < high, got {self.flat_range}")
        if not self.rtn_threshold > 0:
            problems.append(f"rtn_threshold must be > 0, got {self.rtn_threshold}")
        if self.rtn_groups < 1:
            problems.append(f"rtn_groups must be >= 1, got {self.rtn_groups}")
        if problems:
            raise ValueError("invalid DefectConfig: " + "; ".join(problems))


def dark_outliers(dark: np.ndarray, nsigma: float) -> tuple[np.ndarray, float]:
    """Pixels of a (bias-subtracted) dark beyond ``nsigma`` robust sigmas, and that sigma.

    The smooth pattern and the row and column banding are removed first, so the test sees the
    pixel-to-pixel scatter only.
    """
    resid = dark - large_scale(dark)
    resid -= np.median(resid, axis=1, keepdims=True)
    resid -= np.median(resid, axis=0, keepdims=True)
    sample = resid[:: max(1, resid.shape[0] // 1024), :: max(1, resid.shape[1] // 1024)]
    center = float(np.median(sample))
    sigma = 1.4826 * float(np.median(np.abs(sample - center)))
    if not sigma > 0:
        sigma = float(np.std(sample)) or 1.0
    return np.abs(resid - center) > nsigma * sigma, sigma


def make_badpix(
    dark: str | Path,
    out_dir: str | Path,
    bias: str | Path | None = None,
    flat: str | Path | None = None,
    merge: Sequence[str | Path] = (),
    config: DefectConfig | None = None,
) -> Path:
    """Bad-pixel map from a master dark (minus a master bias when given), a flat and given maps.

    Raises
    ------
    InputError
        Unreadable inputs, or inputs whose shapes differ.
    """
    config = config or DefectConfig()
    dark = Path(dark)
    with FitsImage(dark) as img:
        d, shape = img.read(), img.shape
    if bias is not None:
        with FitsImage(bias) as img:
            check_shape(dark, shape, Path(bias), img.shape)
            d -= img.read()
    bad, sigma = dark_outliers(d, config.dark_nsigma)
    del d
    counts = {"NBADDARK": (int(bad.sum()), "dark outliers")}
    if flat is not None:
        with FitsImage(flat) as img:
            check_shape(dark, shape, Path(flat), img.shape)
            f = img.read()
        small = f / large_scale(f)
        lo, hi = config.flat_range
        dead = ~((small >= lo) & (small <= hi))
        counts["NBADFLAT"] = (int(dead.sum()), "flat response outside FLATRNG")
        bad |= dead
    for path in merge:
        with FitsImage(path) as img:
            check_shape(dark, shape, Path(path), img.shape)
            given = img.read() != 0
        counts[f"NBADM{len(counts)}"] = (int(given.sum()), f"from {Path(path).name}"[:47])
        bad |= given
    metas = [frame_meta(dark)]
    header = provenance("badpix", metas, {
        "BPNSIG": (config.dark_nsigma, "dark outlier threshold, robust sigma"),
        "BPSIGMA": (sigma, "robust sigma of the dark, ADU"),
        "FLATRNG": (f"{config.flat_range[0]:g},{config.flat_range[1]:g}", "accepted flat"),
        "NBAD": (int(bad.sum()), "bad pixels"),
        "BADFRAC": (float(bad.mean()), "fraction of pixels bad"),
        **counts,
    })  # fmt: skip
    header["NCOMBINE"] = 1 + (bias is not None) + (flat is not None) + len(merge)
    for p in (bias, flat, *merge):
        if p is not None:
            header.add_history(f"input: {Path(p).name}")
    path = Path(out_dir) / product_name("badpix", header)
    _log.info("bad-pixel map %s: %d pixels (%.3f%%)", path, bad.sum(), 100 * bad.mean())
    return write_image(path, bad.astype(np.uint8), header)


def rtn_map(
    paths: Sequence[Path], config: DefectConfig, budget: int = 1 << 24, progress: bool = False
) -> tuple[np.ndarray, list[list[int]]]:
    """RTN pixels of a bias stack (``paths`` in time order) and the groups used."""
    n = len(paths)
    if n < 2 * config.rtn_groups:
        raise InputError(f"an RTN map needs >= {2 * config.rtn_groups} bias frames "
                         f"({config.rtn_groups} groups of >= 2), got {n}")  # fmt: skip
    groups = [g.tolist() for g in np.array_split(np.arange(n), config.rtn_groups)]
    rtn = np.ones(stack_shape(paths), bool)
    thr = np.float32(config.rtn_threshold)
    for r0, r1, cube in stack_blocks(paths, budget, progress=progress):
        for g in groups:
            sub = cube[g[0] : g[-1] + 1]
            rtn[r0:r1] &= sub.std(axis=0, ddof=1, dtype=np.float64) > thr
    return rtn, groups


def make_rtn(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    config: DefectConfig | None = None,
    calib_config: CalibConfig | None = None,
) -> Path:
    """RTN (salt-and-pepper) pixel map from a bias stack; see the module docstring."""
    config, cc = config or DefectConfig(), calib_config or CalibConfig()
    metas = read_metas(paths)
    metas.sort(key=lambda m: (m.mjd if m.mjd is not None else 0.0, m.path.name))
    rtn, groups = rtn_map([m.path for m in metas], config, cc.budget, cc.progress)
    header = provenance("rtn", metas, {
        "RTNTHR": (config.rtn_threshold, "std threshold, ADU"),
        "RTNGRP": (config.rtn_groups, "disjoint groups in time, flagged in all"),
        "NRTN": (int(rtn.sum()), "RTN pixels"),
        "RTNFRAC": (float(rtn.mean()), "fraction of pixels RTN"),
    })  # fmt: skip
    path = Path(out_dir) / product_name("rtn", header, cc.longitude_deg)
    _log.info("RTN map %s: %d pixels (%.3f%%) from %d frames in %d groups", path, rtn.sum(),
              100 * rtn.mean(), len(metas), len(groups))  # fmt: skip
    return write_image(path, rtn.astype(np.uint8), header)
