"""Detector characterisation from bias, dark and flat sequences: ``lcdb calib characterize``.

The method of the Mini-SiTian CMOS characterisation (DESIGN.md §6): bias stability and fixed
pattern (:mod:`ingest.charbias`), dark current (:mod:`ingest.chardark`), linearity and the
nonlinearity correction (:mod:`ingest.charlinearity`), conventional and per-pixel gain and read
noise (:mod:`ingest.ptc`), salt-and-pepper (RTN) and bad pixels, gain and dark populations
(:mod:`ingest.mixture`), plots (:mod:`ingest.charplots`). Frames are streamed: every sequence is
read in row blocks across its files, so memory is a few full-frame float32 maps (~250 MB each
at 9576x6388) plus one block.

Outputs in ``out_dir`` (FITS images are float32 ``(ny, nx)`` in the frames' pixel order):

``summary.json``
    Every figure. ``gain_e_per_adu`` and ``read_noise_e`` are the conventional (central-region
    photon-transfer) values; per-pixel figures are under ``gain_pixel``, ``read_noise_pixel``.
``gain.fits``
    Gain (e-/ADU) for the reduction's error model: the per-pixel estimate where the pixel has
    one (not flagged, relative error < 1) and the per-pixel errors are small enough to be
    useful (median <= ``population_max_rel_err``), the conventional gain elsewhere (header
    ``GAINSRC`` = ``PIXEL`` or ``CONV``, ``GAINCONV``). HDU ``PIXEL``: the per-pixel estimates
    (NaN where none); HDU ``ERR``: their 1-sigma errors.
``read_noise.fits``
    Read noise (e-) = bias std x the gain above (per pixel: the seed's pixel-level read
    noise); HDU ``ADU``: bias std (ADU); HDU ``ERR``: error (e-).
``dark_current.fits``
    Dark current (e-/s, conventional gain; ADU/s when no flats, see ``BUNIT``); HDU ``ERR``.
``master_bias.fits``
    Mean of the bias frames (ADU), cosmic rays clipped.
``mask.fits``
    uint16 flag bits of :class:`lcdb.flags.Flag`: ``BAD_PIXEL`` (1: hot, dead or low/high
    response, bias outlier) and ``SALT_PEPPER`` (4: RTN). OR it into each frame's mask.
``bad_pixels.fits``, ``rtn_pixels.fits``
    The same two masks as uint8 0/1 images, with ``LCDBPROD`` = ``badpix`` / ``rtn`` (and
    ``CHANNEL``, ``MJD-OBS`` of the inputs) so that a calibration directory of
    :mod:`ingest.calibset` picks them up: the reduction sets the flag bits where they are > 0.
``nonlinearity.fits``
    The per-pixel correction polynomial cube; convention in :mod:`ingest.charlinearity`
    (``NLSREF``, ``NLORDER``: found by the reduction's calibration index as ``nonlin``).
``*.png``
    Gain and read-noise histograms, linearity and residuals, photon transfer, bias stability,
    dark-current distribution, fixed pattern, anomalous-pixel map.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ingest import charproducts
from ingest.charbias import BiasStats
from ingest.chardark import DarkStats
from ingest.charframes import (
    FrameFile,
    block_edges,
    check_shapes,
    group_frames,
    iter_row_blocks,
    scan_sequence,
)
from ingest.ptc import FlatStats
from lcdb.errors import InputError, UsageError

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CharacterizeConfig:
    """Settings of :func:`characterize`; invalid values raise ``ValueError``, one message per
    broken rule. Sigma thresholds are in units of the typical (median) per-pixel noise.

    Attributes
    ----------
    central_fraction
        Side of the central region (conventional PTC, read noise, linearity) over the frame's.
    normalize_flats
        Rescale the frames of a flat group to their mean level (removes lamp flicker).
    per_pixel_nonlinearity
        Put the per-pixel ``c`` in the correction cube (else the camera ``c`` everywhere).
    nonlinearity_ref_adu, nonlinearity_order
        ``s_ref`` of the model and number of planes of the correction cube.
    linearity_min_signal_adu
        Signal above which the seed's "nonlinearity above 3000 ADU" figure is taken.
    min_signal_adu, ptc_max_fraction
        Flat signal range used for gains: above ``min_signal_adu`` and, for the conventional
        PTC, below ``ptc_max_fraction`` of the range from bias to saturation.
    saturation_adu
        Saturation level (ADU); ``None``: header ``SATURATE``, else the data type's maximum.
    rtn_candidate_factor, rtn_gap_sigma, rtn_min_fraction
        RTN search: candidates with bias std above this factor times the typical std; a gap
        between two levels above ``rtn_gap_sigma``; each level in at least this fraction of
        the frames (and three).
    clip_sigma
        Outlier clipping (cosmic rays) of bias stacks, dark sets and flat pair differences.
    hot_sigma, bias_outlier_sigma, response_limits
        Bad pixels: dark current beyond ``hot_sigma``; master-bias residual beyond
        ``bias_outlier_sigma``; flat response outside ``response_limits`` of the local one.
    noise_outlier_sigma
        Threshold of the noisy-pixel fraction (the seed's ">5 sigma in standard deviation").
    mesh_px, corner_fraction
        Cell of the local backgrounds; size of the corner boxes and edge strips of the FPN.
    level_tolerance
        Flats of equal exposure whose levels differ by more than this fraction are two groups.
    max_bias_exptime
        Longest exposure (s) accepted in the bias sequence.
    bimodal_min_fraction, bimodal_min_separation, bimodal_min_delta_bic
        Gain populations: see :func:`ingest.mixture.bimodality`.
    population_max_rel_err
        Populations are only searched for when the median per-pixel gain error is below this.
    max_mixture_pixels
        Pixels (a fixed random subset) used by the mixture fits.
    memory_mb
        Budget of the row blocks read from the files (two blocks are held at a time).
    plots, progress
        Write the PNG plots; show progress bars (``None``: only on a terminal).
    """

    central_fraction: float = 0.5
    normalize_flats: bool = True
    per_pixel_nonlinearity: bool = False
    nonlinearity_ref_adu: float = 50000.0
    nonlinearity_order: int = 4
    linearity_min_signal_adu: float = 3000.0
    min_signal_adu: float = 200.0
    ptc_max_fraction: float = 0.8
    saturation_adu: float | None = None
    rtn_candidate_factor: float = 1.5
    rtn_gap_sigma: float = 4.0
    rtn_min_fraction: float = 0.03
    clip_sigma: float = 6.0
    hot_sigma: float = 5.0
    bias_outlier_sigma: float = 8.0
    noise_outlier_sigma: float = 5.0
    response_limits: tuple[float, float] = (0.5, 1.5)
    mesh_px: int = 32
    corner_fraction: float = 0.05
    level_tolerance: float = 0.05
    max_bias_exptime: float = 0.1
    bimodal_min_fraction: float = 0.01
    bimodal_min_separation: float = 2.0
    bimodal_min_delta_bic: float = 25.0
    population_max_rel_err: float = 0.2
    max_mixture_pixels: int = 200_000
    memory_mb: float = 512.0
    plots: bool = True
    progress: bool | None = None

    def __post_init__(self) -> None:
        rules = [
            ("central_fraction", 0 < self.central_fraction <= 1, "must be in (0, 1]"),
            ("nonlinearity_ref_adu", self.nonlinearity_ref_adu > 0, "must be > 0"),
            ("nonlinearity_order", 2 <= self.nonlinearity_order <= 8, "must be in 2..8"),
            ("linearity_min_signal_adu", self.linearity_min_signal_adu >= 0, "must be >= 0"),
            ("min_signal_adu", self.min_signal_adu >= 0, "must be >= 0"),
            ("ptc_max_fraction", 0 < self.ptc_max_fraction <= 1, "must be in (0, 1]"),
            (
                "saturation_adu",
                self.saturation_adu is None or self.saturation_adu > 0,
                "must be > 0 (or None: from the headers)",
            ),
            ("rtn_candidate_factor", self.rtn_candidate_factor > 1, "must be > 1"),
            ("rtn_min_fraction", 0 < self.rtn_min_fraction < 0.5, "must be in (0, 0.5)"),
            (
                "response_limits",
                0 <= self.response_limits[0] < 1 < self.response_limits[1],
                "must satisfy 0 <= lo < 1 < hi",
            ),
            ("mesh_px", self.mesh_px >= 4, "must be >= 4"),
            ("corner_fraction", 0 < self.corner_fraction < 0.5, "must be in (0, 0.5)"),
            ("level_tolerance", 0 < self.level_tolerance < 1, "must be in (0, 1)"),
            ("max_bias_exptime", self.max_bias_exptime >= 0, "must be >= 0"),
            ("bimodal_min_fraction", 0 < self.bimodal_min_fraction < 0.5, "must be in (0, 0.5)"),
            ("max_mixture_pixels", self.max_mixture_pixels >= 1000, "must be >= 1000"),
            ("population_max_rel_err", self.population_max_rel_err > 0, "must be > 0"),
            ("memory_mb", self.memory_mb >= 16, "must be >= 16"),
        ]
        for name in (
            "rtn_gap_sigma",
            "clip_sigma",
            "hot_sigma",
            "bias_outlier_sigma",
            "noise_outlier_sigma",
            "bimodal_min_separation",
            "bimodal_min_delta_bic",
        ):
            rules.append((name, getattr(self, name) > 0, "must be > 0"))
        errors = [f"{name}={getattr(self, name)!r} {msg}" for name, ok, msg in rules if not ok]
        if errors:
            raise ValueError("invalid CharacterizeConfig: " + "; ".join(errors))


def _release_memory() -> None:
    """Give freed heap memory back to the system (glibc keeps the many block-sized temporaries
    of the streamed pass, ~0.5 GB at full frame size, which would add to the final peak)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _central_box(shape: tuple[int, int], fraction: float) -> tuple[int, int, int, int]:
    ny, nx = shape
    hy, hx = max(1, round(ny * fraction / 2)), max(1, round(nx * fraction / 2))
    return ny // 2 - hy, ny // 2 + hy, nx // 2 - hx, nx // 2 + hx


def _saturation(flats: list[FrameFile], config: CharacterizeConfig) -> float:
    if config.saturation_adu is not None:
        return float(config.saturation_adu)
    from_headers = [f.saturate for f in flats if f.saturate is not None]
    return float(min(from_headers)) if from_headers else min(f.max_value for f in flats)


def _scan(
    bias_dir: Path | None, dark_dir: Path | None, flat_dir: Path | None, config: CharacterizeConfig
) -> dict[str, list[FrameFile]]:
    if bias_dir is None and dark_dir is None and flat_dir is None:
        raise UsageError("nothing to characterize: give --bias, --darks and/or --flats")
    if bias_dir is None:
        raise UsageError("darks and flats need --bias (master bias and per-pixel read noise)")
    seqs = {
        "bias": scan_sequence(
            Path(bias_dir),
            "bias",
            progress=config.progress,
            max_bias_exptime=config.max_bias_exptime,
        )
    }
    if dark_dir is not None:
        seqs["dark"] = scan_sequence(Path(dark_dir), "dark", progress=config.progress)
    if flat_dir is not None:
        seqs["flat"] = scan_sequence(Path(flat_dir), "flat", progress=config.progress)
    check_shapes(seqs)
    if len(seqs["bias"]) < 2:
        raise InputError(f"{bias_dir}: needs at least 2 bias frames, found {len(seqs['bias'])}")
    if "dark" in seqs and max(f.exptime for f in seqs["dark"]) <= 0:
        raise InputError(f"{dark_dir}: every dark has EXPTIME=0; need exposures > 0")
    return seqs


def characterize(
    out_dir: str | Path,
    *,
    bias_dir: str | Path | None = None,
    dark_dir: str | Path | None = None,
    flat_dir: str | Path | None = None,
    config: CharacterizeConfig | None = None,
) -> dict[str, Any]:
    """Characterise a camera from its calibration sequences and write the products.

    Parameters
    ----------
    out_dir
        Output directory (created); see the module docstring for its files.
    bias_dir, dark_dir, flat_dir
        Directories of bias frames, darks (any exposure times) and flats (pairs or stacks on an
        exposure ladder). Darks and flats need the bias.
    config
        Settings (defaults: :class:`CharacterizeConfig`).

    Returns
    -------
    dict
        The content of ``summary.json``.

    Raises
    ------
    InputError
        A frame is unreadable, of another shape, or lacks an exposure time (the message names
        the file), or a sequence is too short.
    UsageError
        The combination of sequences cannot be characterised.
    """
    config = config or CharacterizeConfig()
    start = time.perf_counter()
    seqs = _scan(bias_dir, dark_dir, flat_dir, config)
    shape = seqs["bias"][0].shape
    central = _central_box(shape, config.central_fraction)
    zero = float(np.median([f.level for f in seqs["bias"]]))
    n_bias = len(seqs["bias"])
    bias = BiasStats(
        n_bias,
        shape,
        central,
        rtn_candidate_factor=config.rtn_candidate_factor,
        rtn_gap_sigma=config.rtn_gap_sigma,
        rtn_min_fraction=config.rtn_min_fraction,
        clip_sigma=config.clip_sigma,
    )
    stacks: dict[str, list[FrameFile]] = {"bias": seqs["bias"]}
    darks = flats = None
    if "dark" in seqs:
        groups = group_frames(seqs["dark"], 1e9, zero)  # one group per exposure time
        darks = DarkStats(groups, shape, n_bias, clip_sigma=config.clip_sigma)
        stacks |= {f"dark{i}": list(g.frames) for i, g in enumerate(groups)}
    if "flat" in seqs:
        groups = group_frames(seqs["flat"], config.level_tolerance, zero)
        saturation = _saturation(seqs["flat"], config)
        flats = FlatStats(
            groups,
            shape,
            central,
            n_bias,
            saturation=saturation,
            normalize=config.normalize_flats,
            clip_sigma=config.clip_sigma,
            ref=config.nonlinearity_ref_adu,
            min_signal=config.min_signal_adu,
            response_limits=config.response_limits,
            mesh_px=config.mesh_px,
        )
        stacks |= {f"flat{i}": list(g.frames) for i, g in enumerate(groups)}
    n_files = sum(len(v) for v in stacks.values())
    edges = block_edges(shape[0], shape[1], n_files, config.memory_mb)
    _log.info(
        "characterizing %d frames of %dx%d in %d row blocks",
        n_files,
        shape[1],
        shape[0],
        edges.size - 1,
    )
    for r0, r1, data in iter_row_blocks(stacks, edges, progress=config.progress):
        bias.add(r0, data.pop("bias"))
        master, std, rtn = bias.master[r0:r1], bias.std[r0:r1], bias.rtn[r0:r1]
        dark_blk = None
        if darks is not None:
            darks.add(r0, [data.pop(f"dark{i}") for i in range(len(darks.groups))], master, std)
            dark_blk = np.nan_to_num(darks.slope[r0:r1])
        if flats is not None:
            flat_cubes = [data.pop(f"flat{i}") for i in range(len(flats.groups))]
            flats.add(r0, flat_cubes, master, std**2, dark_blk, rtn)
            del flat_cubes
    del data
    _release_memory()
    result = charproducts.finish(bias, darks, flats, seqs, config, Path(out_dir), zero=zero)
    result["elapsed_s"] = round(time.perf_counter() - start, 2)
    charproducts.write_json(Path(out_dir) / "summary.json", result)
    _log.info("wrote %s (%.1f s)", Path(out_dir) / "summary.json", result["elapsed_s"])
    return result


__all__ = ["CharacterizeConfig", "characterize"]
