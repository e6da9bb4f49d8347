"""Satellite and aircraft tracks: Hough transform on a 2x-binned image (Mini-SiTian §3.1.4).

1. Pixels of the binned, background-subtracted image above ``nsigma`` are grouped in 8-connected
   components; components at least ``min_length`` px long and ``min_elongation`` times longer
   than wide (second moments) are track candidates (stars, cosmic rays and noise are not).
2. scikit-image's ``hough_line`` over the candidate pixels; peaks are taken one at a time
   (global maximum, neighbourhood suppressed) while they hold ``min_votes`` pixels.
3. Each line is refined by a total-least-squares fit to the bright pixels near it, then
   validated on the median cross-track profile of the significance image along it: the track
   must stand above the noise there. The same profile gives the half-width, where the median
   profile is significant (3 standard errors), plus a margin, capped at ``max_halfwidth`` px
   (the seed's 10 px); the extent along the line is where 40-px segments are significant.
4. Every pixel of the band (within the half-width, between the extent's ends) is marked. The
   seed marks only band pixels above 3 sigma; a per-pixel cut leaves the track's faint wings and
   its noise-dipped core unflagged, so the profile decides the width for the whole band instead.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrackConfig:
    """Track detection settings (lengths in full-resolution px).

    Parameters
    ----------
    nsigma : float
        Threshold of candidate pixels on the binned image.
    min_length : float
        Shortest candidate component.
    min_elongation : float
        Smallest length / width ratio of a candidate component.
    min_votes : int
        Smallest Hough peak (binned pixels on the line).
    min_significance : float
        Smallest median significance (binned sigma, above the local baseline) along a track.
    max_halfwidth : float
        Largest half-width of a marked band (the seed's 10 px).
    margin : float
        Added to the measured half-width.
    n_theta : int
        Hough angles over 180 deg.
    max_tracks : int
        Most tracks looked for in a frame.
    """

    nsigma: float = 3.0
    min_length: float = 30.0
    min_elongation: float = 4.0
    min_votes: int = 15
    min_significance: float = 1.5
    max_halfwidth: float = 10.0
    margin: float = 1.5
    n_theta: int = 360
    max_tracks: int = 8

    def __post_init__(self) -> None:
        problems = [
            f"{name} must be > 0, got {getattr(self, name)}"
            for name in (
                "nsigma",
                "min_length",
                "min_elongation",
                "max_halfwidth",
                "min_significance",
            )
            if not getattr(self, name) > 0
        ]
        for name in ("min_votes", "n_theta", "max_tracks"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.margin >= 0:
            problems.append(f"margin must be >= 0, got {self.margin}")
        if problems:
            raise ValueError("invalid TrackConfig: " + "; ".join(problems))


@dataclass(frozen=True)
class Track:
    """A detected track in full-resolution pixels: the line ``x cos(theta) + y sin(theta) =
    rho``, its half-width, the extent ``t0..t1`` along the direction ``(-sin, cos)`` from the
    foot of the perpendicular, and the median peak significance (binned sigma)."""

    theta: float
    rho: float
    halfwidth: float
    t0: float
    t1: float
    significance: float


def candidate_pixels(
    hot: np.ndarray, labels: np.ndarray, n: int, config: TrackConfig
) -> np.ndarray:
    """Boolean image of the pixels of elongated components (the Hough input)."""
    idx = np.flatnonzero(labels)
    lab = labels.ravel()[idx]
    y, x = np.divmod(idx, labels.shape[1])
    count = np.bincount(lab, minlength=n + 1).astype(np.float64)
    count[0] = 1
    mx, my = (np.bincount(lab, v, n + 1) / count for v in (x, y))
    dx, dy = x - mx[lab], y - my[lab]
    sxx, syy, sxy = (np.bincount(lab, v, n + 1) / count for v in (dx * dx, dy * dy, dx * dy))
    half = (sxx + syy) / 2
    root = np.sqrt(((sxx - syy) / 2) ** 2 + sxy**2)
    major = np.sqrt(12 * (half + root))  # length of a uniform bar with this variance
    minor = np.sqrt(12 * np.maximum(half - root, 0) + 1)
    keep = (major >= config.min_length / 2) & (major >= config.min_elongation * minor)
    keep[0] = False
    out = np.zeros(labels.shape, bool)
    out.ravel()[idx[keep[lab]]] = True
    return out


def find_tracks(
    sig: np.ndarray, hot: np.ndarray, labels: np.ndarray, n: int, config: TrackConfig
) -> list[Track]:
    """Tracks in a 2x-binned significance image ``sig`` ((image - background) / rms).

    Parameters
    ----------
    sig
        Binned significance image.
    hot, labels, n
        Pixels above ``nsigma`` and their 8-connected components (``scipy.ndimage.label``).
    config
        Detection settings.

    Returns
    -------
    list of Track
        In full-resolution pixel coordinates (0-based, pixel centres at integers).
    """
    from skimage.transform import hough_line

    cand = candidate_pixels(hot, labels, n, config)
    if cand.sum() < config.min_votes:
        return []
    thetas = np.linspace(-np.pi / 2, np.pi / 2, config.n_theta, endpoint=False)
    acc, angles, dists = hough_line(cand, theta=thetas)
    acc = acc.astype(np.int32)
    found: list[Track] = []
    for _ in range(4 * config.max_tracks):
        if len(found) >= config.max_tracks:
            break
        i, j = np.unravel_index(np.argmax(acc), acc.shape)
        if acc[i, j] < config.min_votes:
            break
        acc[max(0, i - 12) : i + 13, max(0, j - 6) : j + 7] = 0  # suppress this peak's area
        track = _refine(sig, hot, float(angles[j]), float(dists[i]), config)
        if track is None or any(_same(track, t) for t in found):
            continue
        found.append(track)
        # Remove the track: the votes of its pixels (so its other Hough peaks do not come
        # back), and its light from the images the next candidates are refitted and tested on.
        if len(found) == 1:
            sig, hot = sig.copy(), hot.copy()
        c, s = np.cos(track.theta), np.sin(track.theta)
        rho_b = (track.rho - 0.5 * (c + s)) / 2
        ys, xs = band_pixels(cand.shape, track.theta, rho_b, track.halfwidth / 2 + 1)
        inside = cand[ys, xs]
        if inside.any():
            on = np.zeros(cand.shape, bool)
            on[ys[inside], xs[inside]] = True
            acc -= hough_line(on, theta=thetas)[0].astype(np.int32)
            cand[ys[inside], xs[inside]] = False
        sig[ys, xs] = 0.0
        hot[ys, xs] = False
    return found


def _same(a: Track, b: Track) -> bool:
    """Whether two lines coincide (normals within 2 deg, offsets within the bands)."""
    tol = 2 * max(a.halfwidth, b.halfwidth)
    for sign in (1.0, -1.0):  # (theta, rho) and (theta + pi, -rho) are the same line
        dtheta = abs((a.theta - b.theta - (0 if sign > 0 else np.pi) + np.pi) % (2 * np.pi) - np.pi)
        if dtheta < np.radians(2) and abs(a.rho - sign * b.rho) < tol:
            return True
    return False


def _refine(
    sig: np.ndarray, hot: np.ndarray, theta: float, rho: float, config: TrackConfig
) -> Track | None:
    """Refit a Hough line on nearby bright pixels and validate it; binned in, full res out."""
    ny, nx = sig.shape
    for width in (3.0, 1.5):
        ys, xs = band_pixels(hot.shape, theta, rho, width)
        keep = hot[ys, xs]
        if keep.sum() < config.min_votes:
            return None
        xs, ys = xs[keep].astype(np.float64), ys[keep].astype(np.float64)
        mx, my = xs.mean(), ys.mean()
        cov = np.cov(np.stack([xs - mx, ys - my]))
        evecs = np.linalg.eigh(cov)[1]
        nxv, nyv = evecs[:, 0]  # normal to the line: eigenvector of the smallest variance
        theta = float(np.arctan2(nyv, nxv))
        rho = mx * np.cos(theta) + my * np.sin(theta)
    # Cross-track profile of the significance image, sampled along the line.
    c, s = np.cos(theta), np.sin(theta)
    t = np.arange(-np.hypot(nx, ny), np.hypot(nx, ny), 1.0)
    px, py = rho * c - t * s, rho * s + t * c
    inside = (px >= 0) & (px <= nx - 1) & (py >= 0) & (py <= ny - 1)
    t, px, py = t[inside], px[inside], py[inside]
    if t.size < config.min_length / 2:
        return None
    wmax = int(np.ceil(config.max_halfwidth / 2)) + 1
    offsets = np.arange(-wmax, wmax + 1)
    outer = np.r_[-wmax - 6 : -wmax - 2, wmax + 3 : wmax + 7]
    sx = np.clip(np.rint(px[:, None] + offsets * c).astype(int), 0, nx - 1)
    sy = np.clip(np.rint(py[:, None] + offsets * s).astype(int), 0, ny - 1)
    prof = sig[sy, sx]
    # Baseline: the median significance just outside the widest band (faint stars and halos
    # lift the significance image a little everywhere in a crowded field).
    out_x = np.clip(np.rint(px[:, None] + outer * c).astype(int), 0, nx - 1)
    out_y = np.clip(np.rint(py[:, None] + outer * s).astype(int), 0, ny - 1)
    baseline = float(np.median(sig[out_y, out_x]))
    median = np.median(prof, axis=0) - baseline
    err = 1.2533 / np.sqrt(t.size)  # standard error of a median of unit-variance noise
    core = float(median[wmax])
    if core < max(config.min_significance, 5 * err):
        return None
    edge = 0  # contiguous significant offsets on both sides of the centre
    while edge < wmax and min(median[wmax - edge - 1], median[wmax + edge + 1]) > 3 * err:
        edge += 1
    halfwidth = min(config.max_halfwidth, 2 * (edge + 0.5) + config.margin)
    nseg = max(1, t.size // 20)  # segments of 20 binned = 40 px
    parts = np.array_split(prof[:, wmax - 1 : wmax + 2], nseg)
    seg_med = np.array([np.median(p) for p in parts]) - baseline
    seg_err = 1.2533 / np.sqrt(3 * max(1, t.size // nseg))
    on = np.flatnonzero(seg_med > max(0.5, 3 * seg_err))
    if on.size == 0:
        return None
    bounds = np.array_split(t, nseg)
    t0, t1 = bounds[on[0]][0], bounds[on[-1]][-1]
    # Binned (x_b, y_b) -> full resolution (2 x_b + 0.5, 2 y_b + 0.5).
    rho_full = 2 * rho + 0.5 * (c + s)
    return Track(theta, rho_full, halfwidth, 2 * t0 - 2, 2 * t1 + 2, core)


def band_spans(
    shape: tuple[int, int],
    theta: float,
    rho: float,
    halfwidth: float,
    t0: float = -np.inf,
    t1: float = np.inf,
) -> tuple[bool, np.ndarray, np.ndarray, np.ndarray]:
    """Spans of the pixels within ``halfwidth`` of a line, between ``t0`` and ``t1`` along it.

    Returns ``(by_rows, index, lo, hi)``: for a steep line one span ``lo:hi`` of columns per
    row ``index`` (``by_rows`` true), else one span of rows per column.
    """
    ny, nx = shape
    c, s = np.cos(theta), np.sin(theta)
    by_rows = abs(c) >= abs(s)
    n_idx, n_len, a, b = (ny, nx, s, c) if by_rows else (nx, ny, c, s)
    index = np.arange(n_idx)
    center = (rho - index * a) / b  # position along the span axis
    x, y = (center, index) if by_rows else (index, center)
    t = -x * s + y * c
    half = halfwidth / abs(b)
    keep = (t >= t0 - halfwidth) & (t <= t1 + halfwidth)
    lo = np.clip(np.ceil(center - half - 1e-9), 0, n_len).astype(np.int64)
    hi = np.clip(np.floor(center + half + 1e-9) + 1, 0, n_len).astype(np.int64)
    keep &= hi > lo
    return by_rows, index[keep], lo[keep], hi[keep]


def band_pixels(
    shape: tuple[int, int], theta: float, rho: float, width: float
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column indices of the pixels within ``width`` of the line."""
    by_rows, index, lo, hi = band_spans(shape, theta, rho, width)
    lengths = hi - lo
    along = np.repeat(index, lengths)
    starts = np.repeat(lo - np.cumsum(np.r_[0, lengths[:-1]]), lengths)
    across = np.arange(lengths.sum()) + starts
    return (along, across) if by_rows else (across, along)


def mark_track(mask: np.ndarray, track: Track, bit: int) -> int:
    """Set ``bit`` on the pixels of ``track``'s band in ``mask``; return the pixels marked."""
    by_rows, index, lo, hi = band_spans(
        mask.shape, track.theta, track.rho, track.halfwidth, track.t0, track.t1
    )
    value = np.uint16(bit)
    for i, a, b in zip(index, lo, hi, strict=True):
        if by_rows:
            mask[i, a:b] |= value
        else:
            mask[a:b, i] |= value
    return int((hi - lo).sum())


def label_hot(sig: np.ndarray, nsigma: float, exclude: np.ndarray | None = None) -> tuple:
    """Pixels of ``sig`` above ``nsigma`` (not ``exclude``) and their 8-connected components."""
    hot = sig > np.float32(nsigma)
    if exclude is not None:
        hot &= ~exclude
    labels, n = ndimage.label(hot, structure=np.ones((3, 3), bool))
    return hot, labels, n
