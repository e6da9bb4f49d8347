"""Camera and site presets of the survey simulator.

A :class:`Camera` holds everything the catalogue-level simulator needs to know about one
channel of a survey instrument and the site it looks from: detector geometry, optics, the
noise-model parameters of the Mini-SiTian imaging-pipeline paper (§4.3, Eq. 1-5), the
saturation level, and the photometric behaviour of the atmosphere over the site (extinction,
colour term, scintillation altitude).

Two presets are provided (:data:`PRESETS`):

``mmt``
    One Mini-MegaTORTORA channel: Canon EF 85 mm f/1.2 lens (71 mm clear aperture) on an Andor
    Neo sCMOS, 2560x2160 px of 15.8", about 11x9.5 deg, white light, 20 s survey exposures,
    limit ~13.5-14 mag, saturation ~8 mag. Site: Special Astrophysical Observatory.
``mst``
    One Mini-SiTian telescope: D = 30 cm, ZWO ASI6200MM (IMX411), 9576x6388 px of 0.86",
    gain 0.25 e/ADU, read noise 1.03 e, dark 0.002 e/px/s, g-like filter, 300 s exposures,
    sky 21 mag/arcsec^2, seeing 2". Site: Xinglong Observatory.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import numpy as np

__all__ = ["PRESETS", "Camera", "airmass", "altitude", "get_preset"]


@dataclass(frozen=True)
class Camera:
    """One channel of a survey instrument and its site.

    Parameters
    ----------
    name, channel, filter
        Preset name, channel id written as ``CHANNEL``, filter name written as ``FILTER``.
    naxis1, naxis2
        Detector size in pixels (x, y).
    pixscale
        Pixel scale, arcsec/px.
    aperture
        Clear aperture diameter D of the optics, m.
    efficiency
        Combined efficiency eta of optics, detector QE and filter (seed Eq. 4); atmospheric
        transmission at zenith is included, extinction away from zenith is not.
    wavelength, bandwidth
        Central wavelength and width of the passband, Angstrom (seed Eq. 4).
    gain
        e-/ADU.
    read_noise
        e-/px rms.
    dark_current
        e-/px/s.
    saturation
        Per-pixel level, ADU, above which a pixel is saturated (sky included).
    exptime
        Default exposure time, s.
    sky_mag
        Dark-sky surface brightness in the passband, mag/arcsec^2 at zenith.
    seeing
        Median atmospheric FWHM at zenith, arcsec.
    optics_fwhm
        FWHM of the optics and detector alone, px (added in quadrature to the seeing).
    aperture_radius
        Photometric aperture radius in units of the FWHM (MMT 1.5; MST Eq. 3 uses 1.0).
    latitude, longitude, elevation
        Site: deg (north), deg (east), m.
    extinction
        Mean extinction coefficient, mag/airmass.
    color_mean, color_sd, color_airmass
        Colour coefficient C of the frame model: ``C = color_mean + color_airmass (X - 1) +
        N(0, color_sd)`` per frame.
    vignetting
        Residual vignetting from centre to corner, mag.
    sys_floor
        Systematic error floor added in quadrature to every measurement, mag.
    jitter
        Pointing jitter (sigma per axis), deg.
    centroid_floor
        Centroid error floor, px.
    """

    name: str
    channel: str
    filter: str
    naxis1: int
    naxis2: int
    pixscale: float
    aperture: float
    efficiency: float
    wavelength: float
    bandwidth: float
    gain: float
    read_noise: float
    dark_current: float
    saturation: float
    exptime: float
    sky_mag: float
    seeing: float
    optics_fwhm: float
    aperture_radius: float
    latitude: float
    longitude: float
    elevation: float
    extinction: float
    color_mean: float
    color_sd: float
    color_airmass: float
    vignetting: float
    sys_floor: float
    jitter: float
    centroid_floor: float = 0.02

    def __post_init__(self) -> None:
        problems = []
        for field in ("naxis1", "naxis2"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 16:
                problems.append(f"{field} must be an integer of at least 16 px (got {value!r})")
        positive = (
            "pixscale aperture wavelength bandwidth gain saturation exptime seeing aperture_radius"
        ).split()
        for field in positive:
            value = getattr(self, field)
            if not (_is_number(value) and value > 0):
                problems.append(f"{field} must be a positive number (got {value!r})")
        non_negative = (
            "read_noise dark_current optics_fwhm elevation extinction color_sd vignetting "
            "sys_floor jitter centroid_floor"
        ).split()
        for field in non_negative:
            value = getattr(self, field)
            if not (_is_number(value) and value >= 0):
                problems.append(f"{field} must be a non-negative number (got {value!r})")
        if not (_is_number(self.efficiency) and 0 < self.efficiency <= 1):
            problems.append(f"efficiency must be in (0, 1] (got {self.efficiency!r})")
        if not (_is_number(self.latitude) and -90 <= self.latitude <= 90):
            problems.append(f"latitude must be in [-90, 90] deg (got {self.latitude!r})")
        if not _is_number(self.longitude):
            problems.append(f"longitude must be a number (got {self.longitude!r})")
        for field in ("color_mean", "color_airmass"):
            if not _is_number(getattr(self, field)):
                problems.append(f"{field} must be a number (got {getattr(self, field)!r})")
        if (
            _is_number(self.bandwidth)
            and _is_number(self.wavelength)
            and self.bandwidth >= 2 * self.wavelength
        ):
            problems.append("bandwidth must be less than twice the wavelength")
        for field in ("name", "channel", "filter"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                problems.append(f"{field} must be a non-empty string")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def width_deg(self) -> float:
        """Field of view along x, deg."""
        return self.naxis1 * self.pixscale / 3600.0

    @property
    def height_deg(self) -> float:
        """Field of view along y, deg."""
        return self.naxis2 * self.pixscale / 3600.0

    def replace(self, **changes: object) -> Camera:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


def _is_number(value: object) -> bool:
    """True for a finite real number (bool excluded)."""
    return (
        isinstance(value, int | float | np.integer | np.floating)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )


PRESETS: dict[str, Camera] = {
    "mmt": Camera(
        name="mmt",
        channel="mmt1",
        filter="clear",
        naxis1=2560,
        naxis2=2160,
        pixscale=15.8,  # 6.5 um pixels at 85 mm focal length
        aperture=0.0708,  # 85 mm / f1.2
        efficiency=0.30,
        wavelength=6000.0,
        bandwidth=3500.0,  # white light: the sCMOS response
        gain=0.6,
        read_noise=1.5,
        dark_current=0.02,
        saturation=60000.0,  # ~36 ke full well at 0.6 e/ADU
        exptime=20.0,
        sky_mag=20.0,
        seeing=2.0,  # negligible against 15.8"/px
        optics_fwhm=3.0,  # the lens' PSF dominates
        aperture_radius=1.5,
        latitude=43.65,
        longitude=41.43,
        elevation=2100.0,
        extinction=0.20,
        color_mean=0.10,
        color_sd=0.05,
        color_airmass=0.05,
        vignetting=0.30,
        sys_floor=0.005,
        jitter=0.3,
    ),
    "mst": Camera(
        name="mst",
        channel="mst1",
        filter="g",
        naxis1=9576,
        naxis2=6388,
        pixscale=0.86,
        aperture=0.30,
        efficiency=0.32,
        wavelength=5400.0,
        bandwidth=900.0,
        gain=0.25,
        read_noise=1.03,
        dark_current=0.002,
        saturation=65000.0,  # 16-bit ADC at 0.25 e/ADU
        exptime=300.0,
        sky_mag=21.0,
        seeing=2.0,
        optics_fwhm=1.2,
        aperture_radius=1.0,
        latitude=40.39,
        longitude=117.58,
        elevation=960.0,
        extinction=0.18,
        color_mean=0.10,
        color_sd=0.05,
        color_airmass=0.04,
        vignetting=0.10,
        sys_floor=0.003,
        jitter=0.01,
    ),
}


def get_preset(name: str, **overrides: object) -> Camera:
    """The preset ``name`` with some fields overridden.

    Raises
    ------
    ValueError
        For an unknown preset, an unknown field, or an override that breaks a rule.
    """
    if name not in PRESETS:
        raise ValueError(f"unknown camera preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    known = {f.name for f in dataclasses.fields(Camera)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown camera parameter(s): {', '.join(unknown)}")
    return dataclasses.replace(PRESETS[name], **overrides) if overrides else PRESETS[name]


def local_sidereal_time(mjd: np.ndarray | float, longitude: float) -> np.ndarray:
    """Local mean sidereal time, deg, from the IAU 1982 GMST linear term (~0.1 s accuracy)."""
    gmst = 280.46061837 + 360.98564736629 * (np.asarray(mjd, dtype=float) - 51544.5)
    return np.mod(gmst + longitude, 360.0)


def altitude(latitude: float, dec: np.ndarray, hour_angle: np.ndarray) -> np.ndarray:
    """Altitude, deg, of a direction at declination ``dec`` and ``hour_angle`` (deg)."""
    lat, d, h = np.radians(latitude), np.radians(dec), np.radians(hour_angle)
    sin_alt = np.sin(lat) * np.sin(d) + np.cos(lat) * np.cos(d) * np.cos(h)
    return np.degrees(np.arcsin(np.clip(sin_alt, -1.0, 1.0)))


def airmass(alt: np.ndarray | float) -> np.ndarray:
    """Airmass at altitude ``alt`` (deg), Kasten & Young (1989); finite down to the horizon."""
    a = np.asarray(alt, dtype=float)
    return 1.0 / (np.sin(np.radians(a)) + 0.50572 * (a + 6.07995) ** -1.6364)
