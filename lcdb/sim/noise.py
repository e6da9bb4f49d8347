"""The photometric noise model of the Mini-SiTian imaging-pipeline paper (§4.3, Eq. 1-5).

For a star of magnitude ``m`` (in the passband, above the atmosphere) observed for ``t`` seconds
through an aperture of ``n_pix`` pixels:

* Eq. 5, 4: the flux density ``F = 10^(-(m + 48.6)/2.5)`` erg/s/cm^2/Hz gives
  ``N = eta * pi (D/2)^2 * F t / (h nu) * c / lambda^2 * dlambda = eta * A * F * t * dlambda /
  (h lambda)`` electrons; the sky (mag/arcsec^2) the same per arcsec^2, times the pixel area.
* Eq. 3: ``n_pix = pi (k FWHM)^2`` with ``k`` the aperture radius in FWHM (the paper: k = 1,
  FWHM = seeing/size).
* Eq. 1: ``SNR = N / sqrt(N + n_pix (N_sky + RN^2 + N_dark))``.

Beyond the paper, two terms proportional to the flux are added in quadrature: scintillation
from Young's (1967) formula, ``sigma = 0.09 D_cm^(-2/3) X^1.75 exp(-h/8000 m) (2t)^(-1/2)``
(relative flux), and an optional systematic floor (mag). The resulting error curve has the
shape of the seed's Fig. 12: ``sigma ∝ 10^(0.2 m)`` where photon noise dominates, ``∝ 10^(0.4 m)``
at the sky-limited faint end, and a flat floor (scintillation + systematics) at the bright end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from lcdb.sim.camera import Camera

__all__ = [
    "MAG_PER_FLUX",
    "NoiseBudget",
    "expected_mag_error",
    "flux_variance",
    "fwhm_px",
    "instrumental_zero_point",
    "limiting_mag",
    "n_pix",
    "noise_budget",
    "peak_fraction",
    "photon_rate",
    "saturation_mag",
    "scintillation",
    "sky_rate",
]

#: 2.5 / ln(10): magnitude error per unit relative flux error.
MAG_PER_FLUX = 2.5 / math.log(10.0)
_H_CGS = 6.62607015e-27  # erg s


def photon_rate(camera: Camera, mag: np.ndarray | float) -> np.ndarray:
    """Detected electrons per second from a source of magnitude ``mag`` (seed Eq. 4-5)."""
    f_nu = 10.0 ** (-(np.asarray(mag, dtype=float) + 48.6) / 2.5)
    area = math.pi * (camera.aperture * 100.0 / 2.0) ** 2  # cm^2
    return camera.efficiency * area * f_nu * camera.bandwidth / (_H_CGS * camera.wavelength)


def sky_rate(camera: Camera, sky_mag: float | np.ndarray | None = None) -> np.ndarray:
    """Sky electrons per pixel per second for a sky of ``sky_mag`` mag/arcsec^2."""
    mu = camera.sky_mag if sky_mag is None else sky_mag
    return photon_rate(camera, mu) * camera.pixscale**2


def instrumental_zero_point(camera: Camera) -> float:
    """``-2.5 log10`` of the ADU/s of a zeroth-magnitude star at zenith.

    ``mag_instr = -2.5 log10(flux_ADU / exptime) = m + instrumental_zero_point(camera)``.
    """
    return float(-2.5 * math.log10(float(photon_rate(camera, 0.0)) / camera.gain))


def fwhm_px(camera: Camera, seeing: float | None = None, airmass: float = 1.0) -> float:
    """Image FWHM, px: the seeing (scaled as X^0.6) and the optics added in quadrature."""
    s = (camera.seeing if seeing is None else seeing) * airmass**0.6 / camera.pixscale
    return float(math.hypot(s, camera.optics_fwhm))


def n_pix(camera: Camera, fwhm: float) -> float:
    """Pixels in the photometric aperture (seed Eq. 3, radius ``aperture_radius * fwhm``)."""
    return math.pi * (camera.aperture_radius * fwhm) ** 2


def scintillation(camera: Camera, airmass: np.ndarray | float, exptime: float) -> np.ndarray:
    """Relative flux rms of scintillation, Young (1967)."""
    d_cm = camera.aperture * 100.0
    x = np.asarray(airmass, dtype=float)
    return (0.09 * d_cm ** (-2.0 / 3.0) * x**1.75 * math.exp(-camera.elevation / 8000.0)) / np.sqrt(
        2.0 * exptime
    )


def peak_fraction(fwhm: float | np.ndarray) -> np.ndarray:
    """Fraction of a Gaussian star's flux in the pixel it is centred on."""
    sigma = np.asarray(fwhm, dtype=float) / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    return erf(0.5 / (math.sqrt(2.0) * sigma)) ** 2


def flux_variance(
    signal_e: np.ndarray,
    sky_e: float | np.ndarray,
    npix: float | np.ndarray,
    read_noise: float,
    dark_e: float,
    rel_sigma: float | np.ndarray = 0.0,
) -> np.ndarray:
    """Variance, e^2, of an aperture flux (seed Eq. 1 plus terms proportional to the flux).

    Parameters
    ----------
    signal_e
        Electrons from the star in the aperture.
    sky_e, dark_e
        Sky and dark electrons per pixel during the exposure.
    npix
        Pixels in the aperture.
    read_noise
        e-/px rms.
    rel_sigma
        Relative flux rms of the multiplicative terms (scintillation, systematics), combined.
    """
    s = np.asarray(signal_e, dtype=float)
    return (
        np.maximum(s, 0.0)
        + npix * (sky_e + read_noise**2 + dark_e)
        + (np.asarray(rel_sigma) * s) ** 2
    )


@dataclass(frozen=True)
class NoiseBudget:
    """Expected noise of a measurement, each term as a magnitude error (1.0857 sigma/N)."""

    mag: np.ndarray
    signal_e: np.ndarray
    photon: np.ndarray
    sky: np.ndarray
    read: np.ndarray
    dark: np.ndarray
    scintillation: np.ndarray
    floor: np.ndarray
    total: np.ndarray

    @property
    def snr(self) -> np.ndarray:
        """Signal-to-noise ratio of the total."""
        return MAG_PER_FLUX / self.total


def noise_budget(
    camera: Camera,
    mag: np.ndarray | float,
    *,
    exptime: float | None = None,
    airmass: float = 1.0,
    sky_mag: float | None = None,
    fwhm: float | None = None,
    sys_floor: float | None = None,
    include_scintillation: bool = True,
) -> NoiseBudget:
    """Every term of the expected error of a star of magnitude ``mag``.

    ``mag`` is above the atmosphere in the passband; the star is dimmed by
    ``camera.extinction * (airmass - 1)``, and the sky brightens by the airmass as in the
    simulator. Defaults come from ``camera``; ``fwhm`` defaults to :func:`fwhm_px` at ``airmass``.
    """
    t = camera.exptime if exptime is None else exptime
    fw = fwhm_px(camera, airmass=airmass) if fwhm is None else fwhm
    npx = n_pix(camera, fw)
    m = np.asarray(mag, dtype=float)
    signal = photon_rate(camera, m + camera.extinction * (airmass - 1.0)) * t
    sky = float(sky_rate(camera, sky_mag)) * t
    dark = camera.dark_current * t
    scint = scintillation(camera, airmass, t) if include_scintillation else 0.0
    floor = (camera.sys_floor if sys_floor is None else sys_floor) / MAG_PER_FLUX
    terms = {
        "photon": signal,
        "sky": np.full_like(signal, npx * sky),
        "read": np.full_like(signal, npx * camera.read_noise**2),
        "dark": np.full_like(signal, npx * dark),
        "scintillation": (scint * signal) ** 2,
        "floor": (floor * signal) ** 2,
    }
    total = sum(terms.values())
    as_mag = {k: MAG_PER_FLUX * np.sqrt(v) / signal for k, v in terms.items()}
    return NoiseBudget(
        mag=m, signal_e=signal, total=MAG_PER_FLUX * np.sqrt(total) / signal, **as_mag
    )


def expected_mag_error(camera: Camera, mag: np.ndarray | float, **kwargs: object) -> np.ndarray:
    """Expected magnitude error vs magnitude (the theoretical curve of the seed's Fig. 12).

    Keyword arguments are those of :func:`noise_budget`.
    """
    return noise_budget(camera, mag, **kwargs).total  # type: ignore[arg-type]


def limiting_mag(
    camera: Camera,
    snr: float = 5.0,
    *,
    exptime: float | None = None,
    airmass: float = 1.0,
    sky_mag: float | None = None,
    fwhm: float | None = None,
) -> float:
    """Magnitude at which the SNR of Eq. 1 (without the multiplicative terms) equals ``snr``.

    Solves ``N^2 = snr^2 (N + B)`` for the star's electrons ``N``, with ``B`` the sky, read and
    dark variance of the aperture.
    """
    t = camera.exptime if exptime is None else exptime
    fw = fwhm_px(camera, airmass=airmass) if fwhm is None else fwhm
    b = n_pix(camera, fw) * (
        float(sky_rate(camera, sky_mag)) * t + camera.read_noise**2 + camera.dark_current * t
    )
    s2 = snr * snr
    n = 0.5 * (s2 + math.sqrt(s2 * s2 + 4.0 * s2 * b))
    rate0 = float(photon_rate(camera, 0.0)) * t
    return -2.5 * math.log10(n / rate0) - camera.extinction * (airmass - 1.0)


def saturation_mag(
    camera: Camera,
    *,
    exptime: float | None = None,
    airmass: float = 1.0,
    sky_mag: float | None = None,
    fwhm: float | None = None,
) -> float:
    """Magnitude at which the central pixel of a star reaches ``camera.saturation``."""
    t = camera.exptime if exptime is None else exptime
    fw = fwhm_px(camera, airmass=airmass) if fwhm is None else fwhm
    sky_adu = float(sky_rate(camera, sky_mag)) * t / camera.gain
    room_e = max(camera.saturation - sky_adu, 1e-9) * camera.gain
    n = room_e / float(peak_fraction(fw))
    rate0 = float(photon_rate(camera, 0.0)) * t
    return -2.5 * math.log10(n / rate0) - camera.extinction * (airmass - 1.0)
