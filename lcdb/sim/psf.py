"""The effective PSF of the pixel-level simulator and the rendering of stars with it.

:class:`PSFModel` is an *effective* PSF (optics, seeing and pixel response together), so
sampling it at pixel centres gives pixel values: a Moffat core plus a broad Moffat halo holding
``halo_fraction`` of the flux, the FWHM growing towards the corners. :func:`render_stars` adds
stars to a frame as stamps whose radius grows with brightness until the profile falls below
the stamp floor (``stamp_floor_adu`` of :class:`lcdb.sim.pixels.PixelSimConfig`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PSFModel", "render_stars"]

_STAMP_ELEMS = 1 << 22  # stamp pixels evaluated at once (bounds memory)


@dataclass(frozen=True)
class PSFModel:
    """Moffat core (``beta``) plus a Moffat halo with ``halo_fraction`` of the flux and
    ``halo_fwhm_factor`` times the core FWHM; the FWHM grows by ``field_variation`` (fraction)
    from the frame centre to its corners."""

    fwhm_px: float = 3.0
    beta: float = 2.5
    halo_fraction: float = 0.05
    halo_fwhm_factor: float = 5.0
    halo_beta: float = 2.5
    field_variation: float = 0.15

    def fwhm_at(self, x: np.ndarray, y: np.ndarray, nx: int, ny: int, fwhm: float) -> np.ndarray:
        """Core FWHM (px) at 0-based pixel positions, for a central FWHM ``fwhm``."""
        rho2 = ((x - (nx - 1) / 2) ** 2 + (y - (ny - 1) / 2) ** 2) / max(
            ((nx - 1) ** 2 + (ny - 1) ** 2) / 4, 1
        )
        return fwhm * (1 + self.field_variation * np.clip(rho2, 0, 1))

    def _parts(self, fwhm: np.ndarray) -> list[tuple[np.ndarray, float, float]]:
        parts = []
        for frac, beta, width in (
            (1 - self.halo_fraction, self.beta, fwhm),
            (self.halo_fraction, self.halo_beta, fwhm * self.halo_fwhm_factor),
        ):
            alpha = np.asarray(2 * np.sqrt(2 ** (1 / beta) - 1), width.dtype)
            parts.append(((width / alpha) ** 2, beta, frac))
        return parts

    def profile(self, r2: np.ndarray, fwhm: np.ndarray | float) -> np.ndarray:
        """Fraction of the flux per pixel at squared distance ``r2`` (px²) from the centre."""
        total = np.zeros(np.broadcast_shapes(np.shape(r2), np.shape(fwhm)), np.float32)
        for alpha2, beta, frac in self._parts(np.asarray(fwhm, dtype=np.float32)):
            term = r2 / alpha2
            term += 1
            np.log(term, out=term)  # exp(-beta log(.)) is ~2x faster than np.power in float32
            term *= np.float32(-beta)
            np.exp(term, out=term)
            term *= np.float32(frac * (beta - 1) / np.pi) / alpha2
            total += term
        return total

    def encircled_energy(self, radius: np.ndarray | float, fwhm: np.ndarray | float) -> np.ndarray:
        """Fraction of the flux within ``radius`` px (analytic, circular aperture)."""
        r2 = np.asarray(radius, dtype=np.float64) ** 2
        parts = self._parts(np.asarray(fwhm, dtype=np.float64))
        return sum(frac * (1 - (1 + r2 / a2) ** (1 - b)) for a2, b, frac in parts)

    def stamp_radius(self, flux: np.ndarray, fwhm: np.ndarray, floor: float) -> np.ndarray:
        """Radius (px) beyond which each PSF component of a star of ``flux`` is below floor/2."""
        radius = np.zeros(np.shape(flux))
        for alpha2, beta, frac in self._parts(np.asarray(fwhm, dtype=np.float64)):
            ratio = np.maximum(2 * flux * frac * (beta - 1) / (np.pi * alpha2 * floor), 1.0)
            radius = np.maximum(radius, np.sqrt(alpha2 * (ratio ** (1 / beta) - 1)))
        return radius


def render_stars(
    canvas: np.ndarray,
    psf: PSFModel,
    x: np.ndarray,
    y: np.ndarray,
    flux: np.ndarray,
    fwhm: np.ndarray,
    floor: float,
    max_radius: int,
) -> np.ndarray:
    """Add stars (truth ADU) to ``canvas`` as stamps; return each star's peak pixel value.

    Stamps come in radius classes (powers of two times the smallest) evaluated in batches.
    """
    r_min = int(np.ceil(np.clip(4 * fwhm.max(initial=1), 8, max_radius)))
    radius = psf.stamp_radius(flux, fwhm, floor) / r_min
    classes = np.minimum(r_min * 2 ** np.ceil(np.log2(np.maximum(radius, 1))), max_radius)
    peak = np.zeros(x.size, np.float32)
    ix, iy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    ny, nx = canvas.shape
    for r in np.unique(classes).astype(int):
        k, width = np.arange(-r, r + 1, dtype=np.float32), 2 * r + 1
        sel = np.flatnonzero(classes == r)
        for part in np.array_split(sel, max(1, sel.size * width**2 // _STAMP_ELEMS)):
            dx = (ix[part] - x[part]).astype(np.float32)[:, None] + k
            dy = (iy[part] - y[part]).astype(np.float32)[:, None] + k
            stamps = psf.profile(dx[:, None, :] ** 2 + dy[:, :, None] ** 2, fwhm[part, None, None])
            stamps *= flux[part, None, None].astype(np.float32)
            peak[part] = stamps.max(axis=(1, 2))
            for s, cx, cy in zip(stamps, ix[part] - r, iy[part] - r, strict=True):
                a0, b0, a1, b1 = max(0, -cx), max(0, -cy), min(width, nx - cx), min(width, ny - cy)
                if a1 > a0 and b1 > b0:
                    canvas[cy + b0 : cy + b1, cx + a0 : cx + a1] += s[b0:b1, a0:a1]
    return peak
