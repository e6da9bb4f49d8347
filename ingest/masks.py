"""Per-frame masks with the flag bits of DESIGN §5 (Mini-MegaTORTORA §2.2, Mini-SiTian §3.1).

:func:`build_masks` adds, to the bad-pixel, RTN and saturation bits set by calibration:

* SATURATED grown by ``saturation_grow`` px (the vicinity of saturated pixels);
* TRACK: satellite and aircraft tracks (:mod:`ingest.tracks`, on the 2x-binned image);
* COSMIC_RAY (:mod:`ingest.cosmics`); cosmic-ray and bad pixels are then replaced by the median
  of their good neighbours, so detection and apertures do not see them (the flags remain);
* BAD_BACKGROUND: where SEP backgrounds with meshes of 64 and 256 px differ by more than
  ``bkg_nsigma`` times the pixel noise, grown by ``bkg_grow`` (~100) px;
* LARGE_OBJECT: footprints of objects much larger than point sources of their flux, grown by
  ``large_grow`` (10) px.

Everything but the cosmic rays works on the 2x-binned image (a quarter of the pixels): the two
meshes there are 32 and 128 binned px (64 and 256 px), the binned pixel noise is half the
pixel noise. Grown masks are computed tile by tile on coarse grids, so a 61-Mpix frame never
needs a full-size float mask.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import sep
from scipy import ndimage

from ingest.cosmics import CoarseMap, CosmicConfig, clean_pixels, detect_cosmics
from ingest.tracks import Track, TrackConfig, find_tracks, label_hot, mark_track
from lcdb.flags import Flag

_log = logging.getLogger(__name__)

#: Bits set by calibration that exclude a pixel from the background estimates.
STATIC_BITS = Flag.BAD_PIXEL | Flag.SALT_PEPPER | Flag.SATURATED


@dataclass(frozen=True)
class MaskConfig:
    """Mask settings (lengths in full-resolution px).

    Parameters
    ----------
    saturation_grow : int
        Saturated pixels are grown by this radius.
    bkg_mesh : tuple of int
        The two SEP background meshes compared (the seed's 64 and 256).
    bkg_nsigma : float
        Backgrounds differing by more than this many pixel sigmas are unreliable.
    bkg_grow : int
        Unreliable-background regions are grown by this radius (the seed's ~100).
    large_factor : float
        An object is large when its area exceeds this factor times the area of point sources of
        its flux (the median area-flux relation of the frame).
    large_min_area : int
        ... and it covers at least this many px.
    large_grow : int
        Large-object footprints are grown by this radius (the seed's 10).
    source_grow : int
        Source footprints (3-sigma binned pixels) are grown by this many px (a square) and left
        out of the final background, so star light does not lift it.
    tracks, cosmics : TrackConfig, CosmicConfig
        Track and cosmic-ray settings.
    """

    saturation_grow: int = 2
    bkg_mesh: tuple[int, int] = (64, 256)
    bkg_nsigma: float = 5.0
    bkg_grow: int = 100
    large_factor: float = 5.0
    large_min_area: int = 400
    large_grow: int = 10
    source_grow: int = 4
    tracks: TrackConfig = field(default_factory=TrackConfig)
    cosmics: CosmicConfig = field(default_factory=CosmicConfig)

    def __post_init__(self) -> None:
        problems = []
        for name in ("saturation_grow", "bkg_grow", "large_grow", "large_min_area", "source_grow"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        small, large = self.bkg_mesh
        if not (8 <= small < large and small % 2 == 0 and large % 2 == 0):
            problems.append(
                f"bkg_mesh must be two even sizes 8 <= small < large, got {self.bkg_mesh}"
            )
        for name in ("bkg_nsigma", "large_factor"):
            if not getattr(self, name) > 0:
                problems.append(f"{name} must be > 0, got {getattr(self, name)}")
        if problems:
            raise ValueError("invalid MaskConfig: " + "; ".join(problems))


class MaskInfo(NamedTuple):
    """What :func:`build_masks` found: coarse background and rms maps (full-resolution units on
    the binned grid), the sources (binned pixels above the threshold, grown by
    ``source_grow``: left out of the final background), tracks, counts of pixels per flag, and
    the seconds of each step."""

    bkg: CoarseMap
    rms: CoarseMap
    sources: np.ndarray
    tracks: list[Track]
    n_cosmic: int
    n_large: int
    counts: dict[str, int]
    timing: dict[str, float]


def bin2(image: np.ndarray) -> np.ndarray:
    """Mean of 2x2 blocks (a trailing odd row or column is dropped)."""
    ny, nx = image.shape[0] // 2 * 2, image.shape[1] // 2 * 2
    out = np.empty((ny // 2, nx // 2), np.float32)
    for r0 in range(0, ny, 1024):
        r1 = min(ny, r0 + 1024)
        b = image[r0:r1:2, 0:nx:2] + image[r0 + 1 : r1 : 2, 0:nx:2]
        b += image[r0:r1:2, 1:nx:2]
        b += image[r0 + 1 : r1 : 2, 1:nx:2]
        b *= np.float32(0.25)
        out[r0 // 2 : r1 // 2] = b
    return out


def any2(mask: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Boolean 2x2-binned map: a binned pixel is set when any of its four pixels is (has any
    of ``bits``, when given)."""
    ny, nx = mask.shape[0] // 2 * 2, mask.shape[1] // 2 * 2
    out = np.empty((ny // 2, nx // 2), bool)
    for r0 in range(0, ny, 1024):
        m = mask[r0 : min(ny, r0 + 1024), :nx]
        m = (m & bits) != 0 if bits is not None else m != 0
        out[r0 // 2 : (r0 + m.shape[0]) // 2] = (
            m[0::2, 0::2] | m[1::2, 0::2] | m[0::2, 1::2] | m[1::2, 1::2]
        )
    return out


def grow_square(mask: np.ndarray, radius: int) -> np.ndarray:
    """``mask`` dilated by a (2r+1)-px square (two 1-D maximum filters: cheap on any size)."""
    if radius <= 0:
        return mask.copy()
    m = mask.view(np.uint8)
    m = ndimage.maximum_filter1d(m, 2 * radius + 1, axis=0)
    m = ndimage.maximum_filter1d(m, 2 * radius + 1, axis=1)
    return m.view(bool)


def grow(mask: np.ndarray, radius: float, tile: int = 256) -> np.ndarray:
    """``mask`` dilated by a disc of ``radius`` px (tile by tile, only where ``mask`` is set)."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    ny, nx = mask.shape
    out = mask.copy()
    r = int(np.ceil(radius))
    rows = np.flatnonzero(mask.any(axis=1))
    for t0 in np.unique(rows // tile) * tile:
        band = mask[t0 : t0 + tile]
        for c0 in np.unique(np.flatnonzero(band.any(axis=0)) // tile) * tile:
            y0, y1 = max(0, t0 - r), min(ny, t0 + tile + r)
            x0, x1 = max(0, c0 - r), min(nx, c0 + tile + r)
            sub = np.zeros((y1 - y0, x1 - x0), bool)
            sub[t0 - y0 : t0 - y0 + band.shape[0], c0 - x0 : c0 - x0 + min(tile, nx - c0)] = band[
                :, c0 : c0 + tile
            ]
            out[y0:y1, x0:x1] |= ndimage.distance_transform_edt(~sub) <= radius
    return out


def set_upsampled(mask: np.ndarray, coarse: np.ndarray, scale: int, bit: int) -> int:
    """OR ``bit`` into ``mask`` wherever the coarse boolean map (cells of ``scale`` px) is set;
    return the number of cells set."""
    nx = mask.shape[1]
    value = np.uint16(bit)
    for i in np.flatnonzero(coarse.any(axis=1)):
        cols = np.repeat(coarse[i], scale)[:nx]
        if cols.size < nx:
            cols = np.r_[cols, np.zeros(nx - cols.size, bool)]
        mask[i * scale : (i + 1) * scale, cols] |= value
    return int(coarse.sum())


def unreliable_background(
    binned: np.ndarray, exclude: np.ndarray, config: MaskConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where the two background meshes disagree, on a grid of 4x4 binned px (not yet grown);
    and the small-mesh background and rms maps of the binned image (the frame's first
    background estimate)."""
    small, large = config.bkg_mesh
    b_small = sep.Background(binned, mask=exclude, bw=small // 2, bh=small // 2, fw=3, fh=3)
    back, rms = b_small.back(), b_small.rms()
    # The large mesh on the 8x-binned image (same 256-px mesh, 16x fewer pixels to evaluate);
    # both maps are then compared every 8 px, where they are smooth splines of their meshes.
    # An 8x8 block is excluded when most of it is (any-of-64 would drop most blocks of a CMOS
    # with a few per cent of RTN pixels).
    bin8, excl8 = bin2(bin2(binned)), bin2(bin2(exclude.astype(np.float32))) > 0.5
    b_large = sep.Background(bin8, mask=excl8, bw=large // 8, bh=large // 8, fw=3, fh=3)
    large_back = b_large.back()
    ny, nx = large_back.shape
    diff = np.abs(back[: 4 * ny : 4, : 4 * nx : 4] - large_back)
    noise = 2 * rms[: 4 * ny : 4, : 4 * nx : 4]  # pixel sigma = 2 x binned sigma
    return diff > config.bkg_nsigma * noise, back, rms


def large_objects(labels: np.ndarray, n: int, signal: np.ndarray, config: MaskConfig) -> np.ndarray:
    """Labels (1..n) of components much larger than point sources of the same flux.

    The area-flux relation of point sources is the median of log area in bins of log flux,
    continued beyond the brightest bin by a straight line fitted to the upper half of the bins
    (isophotal areas of a Moffat star grow as a power of its flux).
    """
    if n == 0:
        return np.zeros(0, np.int64)
    idx = np.flatnonzero(labels)
    lab = labels.ravel()[idx]
    area = np.bincount(lab, minlength=n + 1)[1:] * 4.0  # full-resolution px
    flux = np.bincount(lab, weights=signal.ravel()[idx], minlength=n + 1)[1:] * 4.0
    ok = (area >= 12) & (flux > 0)
    if ok.sum() < 20:
        return np.zeros(0, np.int64)
    lf, la = np.log10(flux[ok]), np.log10(area[ok])
    edges = np.unique(np.quantile(lf, np.linspace(0, 1, min(20, ok.sum() // 10) + 1)))
    centers, medians = [], []
    for a, b in itertools.pairwise(edges):
        sel = (lf >= a) & (lf <= b)
        if sel.sum() >= 5:
            centers.append(np.median(lf[sel]))
            medians.append(np.median(la[sel]))
    if len(centers) < 2:
        return np.zeros(0, np.int64)
    centers, medians = np.asarray(centers), np.asarray(medians)
    upper = slice(len(centers) // 2, None)
    slope = np.polyfit(centers[upper], medians[upper], 1)[0] if len(centers) >= 4 else 0.5
    logf = np.log10(np.maximum(flux, 1e-30))
    expect = np.interp(logf, centers, medians)
    beyond = logf > centers[-1]
    expect[beyond] = medians[-1] + max(slope, 0.0) * (logf[beyond] - centers[-1])
    big = (area >= config.large_min_area) & (np.log10(np.maximum(area, 1)) > expect + np.log10(
        config.large_factor))  # fmt: skip
    return np.flatnonzero(big) + 1


def grow_indices(index: np.ndarray, shape: tuple[int, int], radius: float) -> np.ndarray:
    """Flat indices of the pixels within ``radius`` of the pixels ``index`` (sparse dilation)."""
    if index.size == 0 or radius <= 0:
        return index
    ny, nx = shape
    r = int(np.floor(radius))
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = dy**2 + dx**2 <= radius**2
    dy, dx = dy[disc], dx[disc]
    out = []
    for part in np.array_split(index, max(1, index.size // 200000)):
        y, x = np.divmod(part, nx)
        yy, xx = y[:, None] + dy, x[:, None] + dx
        ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        out.append((yy * nx + xx)[ok])
    return np.unique(np.concatenate(out))


def build_masks(
    image: np.ndarray,
    mask: np.ndarray,
    gain: float | None,
    config: MaskConfig,
    saturated: np.ndarray | None = None,
    bad: np.ndarray | None = None,
) -> MaskInfo:
    """Add the per-frame mask bits to ``mask`` (in place) and clean ``image`` (in place).

    Parameters
    ----------
    image
        Calibrated float32 image (background not subtracted).
    mask
        uint16 flags from calibration (bad, RTN, saturated pixels).
    gain
        e-/ADU of the image (Poisson noise of bright pixels in the cosmic-ray test) or None.
    config
        Mask settings.
    saturated, bad
        Flat indices of the saturated and bad pixels (from calibration; found in ``mask`` when
        not given).
    """
    clock = [time.perf_counter()]
    timing: dict[str, float] = {}

    def lap(name: str) -> None:
        now = time.perf_counter()
        timing[f"t_masks_{name}"] = now - clock[0]
        clock[0] = now

    if saturated is None:
        saturated = np.flatnonzero(mask & Flag.SATURATED)
    if bad is None:
        bad = np.flatnonzero(mask & Flag.BAD_PIXEL)
    if config.saturation_grow and saturated.size:
        grown = grow_indices(saturated, mask.shape, config.saturation_grow)
        mask.ravel()[grown] |= np.uint16(Flag.SATURATED)
    lap("saturated")
    binned = bin2(image)
    static = any2(mask, int(STATIC_BITS))
    unreliable, back, rms_b = unreliable_background(binned, static, config)
    lap("background_test")

    # Tracks and large objects share the components of the binned significance image.
    signal = binned - back
    sig = signal / np.maximum(rms_b, np.float32(1e-12))
    hot, labels, n = label_hot(sig, config.tracks.nsigma, exclude=static)
    tracks = find_tracks(sig, hot, labels, n, config.tracks)
    for t in tracks:
        mark_track(mask, t, Flag.TRACK)
        _log.debug("track theta=%.2f deg rho=%.1f half-width %.1f px significance %.1f",
                   np.degrees(t.theta), t.rho, t.halfwidth, t.significance)  # fmt: skip
    lap("tracks")
    big = large_objects(labels, n, signal, config)
    if big.size and tracks:  # a track is flagged as such, not as a large object
        on_track = any2(mask, int(Flag.TRACK))
        share = np.bincount(labels[on_track], minlength=n + 1) / np.maximum(
            np.bincount(labels.ravel(), minlength=n + 1), 1
        )  # fmt: skip
        big = big[share[big] < 0.5]
    if big.size:
        foot = grow(np.isin(labels, big), config.large_grow / 2)
        set_upsampled(mask, foot, 2, Flag.LARGE_OBJECT)
    n_large = int(big.size)
    sources = grow_square(hot, config.source_grow // 2)
    del hot, labels, sig, signal
    # The noise (and level) of the sky with the sources left out: the first estimate, made
    # with them, is ~30% high in a crowded field (their faint light inflates the clipped rms).
    small = config.bkg_mesh[0] // 2
    sky = sep.Background(binned, mask=static | sources, bw=small, bh=small, fw=3, fh=3)
    bkg_map, rms_map = CoarseMap(sky.back(), 2), CoarseMap(2 * sky.rms(), 2)
    del binned, back, rms_b, sky
    if unreliable.any():
        cells = grow(unreliable, config.bkg_grow / 8)  # cells of 4 binned = 8 px
        set_upsampled(mask, cells, 8, Flag.BAD_BACKGROUND)

    lap("large_objects")
    cr = detect_cosmics(image, mask, bkg_map, rms_map, gain, config.cosmics)
    mask.ravel()[cr] |= np.uint16(Flag.COSMIC_RAY)
    clean_pixels(image, np.union1d(cr, bad), mask, int(Flag.COSMIC_RAY | Flag.BAD_PIXEL))
    lap("cosmics")
    counts = flag_counts(mask)
    return MaskInfo(bkg_map, rms_map, sources, tracks, int(cr.size), n_large, counts, timing)


def flag_counts(mask: np.ndarray) -> dict[str, int]:
    """Pixels carrying each flag bit, and ``any`` (pixels with any bit)."""
    hist = np.zeros(1 << 16, np.int64)
    for r0 in range(0, mask.shape[0], 256):  # chunks: bincount widens its input to int64
        hist += np.bincount(mask[r0 : r0 + 256].ravel(), minlength=1 << 16)
    values = np.arange(hist.size)
    out = {f.name.lower(): int(hist[(values & f) > 0].sum()) for f in Flag}
    out["any"] = int(hist[1:].sum())
    return out
