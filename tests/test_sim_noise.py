"""The noise model of lcdb.sim.noise against the Mini-SiTian paper's Eq. 1-5 and Fig. 12."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lcdb.sim import noise
from lcdb.sim.camera import PRESETS, get_preset

MST = PRESETS["mst"]
MMT = PRESETS["mmt"]


def _slope(camera, m, **kw):
    """d log10(sigma) / d m by a central difference."""
    lo = noise.expected_mag_error(camera, m - 0.05, **kw)
    hi = noise.expected_mag_error(camera, m + 0.05, **kw)
    return float((np.log10(hi) - np.log10(lo)) / 0.1)


def test_photon_rate_matches_eq4_written_out():
    # Eq. 4-5 as printed: N = eta pi (D/2)^2 F t / (h nu) * c / lambda^2 * dlambda,
    # F = 10^-(m + 48.6)/2.5.
    h, c = 6.62607015e-27, 2.99792458e18  # erg s; Angstrom/s
    lam, dlam = 5400.0, 900.0
    f_nu = 10 ** (-(13.0 + 48.6) / 2.5)
    expected = 0.32 * math.pi * 15.0**2 * f_nu * 300 / (h * c / lam) * c / lam**2 * dlam
    got = float(noise.photon_rate(MST, 13.0)) * 300
    assert got == pytest.approx(expected, rel=1e-12)
    # ~4e5 e- for G = 13 in 300 s: the paper's bright stars have errors of a few mmag.
    assert 3e5 < got < 5e5


def test_n_pix_eq3_with_the_papers_aperture():
    # Eq. 3: n_pix = pi (0.5 * 2 * seeing / size)^2, i.e. radius = 1 FWHM for MST.
    assert noise.n_pix(MST, 2.0 / 0.86) == pytest.approx(math.pi * (2.0 / 0.86) ** 2)


def test_curve_shape_photon_sky_and_floor():
    # Without the multiplicative terms the error is photon-limited at the bright end,
    # sigma ∝ sqrt(N)/N ∝ 10^(0.2 m), and sky-limited at the faint end, sigma ∝ 1/N ∝ 10^(0.4 m).
    # The slopes approach 0.2 and 0.4 asymptotically; 2 % tolerances are met 6 mag from the
    # crossover (MST: sky = photon noise near m = 17.5).
    bare = {"include_scintillation": False, "sys_floor": 0.0}
    assert _slope(MST, 8.0, **bare) == pytest.approx(0.2, rel=0.02)
    assert _slope(MST, 25.0, **bare) == pytest.approx(0.4, rel=0.02)
    # Scintillation (Young 1967) makes a flat floor at the bright end: 1.0857 sigma_scint.
    floor = noise.MAG_PER_FLUX * float(noise.scintillation(MST, 1.0, MST.exptime))
    bright = float(noise.expected_mag_error(MST, 3.0, sys_floor=0.0))
    assert bright == pytest.approx(floor, rel=0.01)
    assert abs(_slope(MST, 3.0, sys_floor=0.0)) < 0.01
    # The terms add in quadrature.
    b = noise.noise_budget(MST, np.array([12.0, 16.0, 19.0]), airmass=1.3)
    parts = [b.photon, b.sky, b.read, b.dark, b.scintillation, b.floor]
    np.testing.assert_allclose(b.total, np.sqrt(sum(p**2 for p in parts)), rtol=1e-12)


def test_young_formula_values():
    # 0.09 D^(-2/3) X^1.75 exp(-h/8000) (2t)^(-1/2), D in cm: for MST (D = 30 cm, h = 960 m,
    # t = 300 s, X = 1) about 4.6e-4.
    expected = 0.09 * 30 ** (-2 / 3) * math.exp(-960 / 8000) / math.sqrt(600)
    assert float(noise.scintillation(MST, 1.0, 300.0)) == pytest.approx(expected, rel=1e-12)
    assert float(noise.scintillation(MST, 2.0, 300.0)) == pytest.approx(expected * 2**1.75)


def test_mst_curve_close_to_the_papers_figure_12():
    # Fig. 12 / §4.3: ~4 mmag at G = 13, ~10 mmag at G ~ 16, ~40 mmag at G ~ 18 (read off a
    # figure, and the paper's own theory curve lies below its data at the faint end):
    # accept within a factor of 2.
    sigma = noise.expected_mag_error(MST, np.array([13.0, 16.0, 18.0]), airmass=1.2)
    for got, paper in zip(sigma, (0.004, 0.010, 0.040), strict=True):
        assert paper / 2 < got < paper * 2


def test_limiting_and_saturation_magnitudes():
    for cam in (MMT, MST):
        lim = noise.limiting_mag(cam, 5.0, airmass=1.3)
        b = noise.noise_budget(cam, lim, airmass=1.3, include_scintillation=False, sys_floor=0)
        assert float(b.snr) == pytest.approx(5.0, rel=1e-9)
        sat = noise.saturation_mag(cam, airmass=1.3)
        fwhm = noise.fwhm_px(cam, airmass=1.3)
        n_e = float(noise.photon_rate(cam, sat + cam.extinction * 0.3)) * cam.exptime
        peak_adu = n_e * float(noise.peak_fraction(fwhm)) / cam.gain
        sky_adu = float(noise.sky_rate(cam)) * cam.exptime / cam.gain
        assert peak_adu + sky_adu == pytest.approx(cam.saturation, rel=1e-9)
    # The presets behave like the instruments: MMT reaches ~14 mag in 20 s and saturates
    # near 8; MST's single 300 s frames reach well past 18.5 at SNR 5.
    assert 13.5 < noise.limiting_mag(MMT, 5.0) < 14.5
    assert 7.5 < noise.saturation_mag(MMT) < 9.0
    assert noise.limiting_mag(MST, 5.0) > 19.0
    # Longer exposures go deeper and saturate on fainter stars.
    assert noise.limiting_mag(MMT, 5.0, exptime=60) > noise.limiting_mag(MMT, 5.0)
    assert noise.saturation_mag(MMT, exptime=60) > noise.saturation_mag(MMT)


def test_camera_validation_names_every_broken_rule():
    with pytest.raises(ValueError) as info:
        get_preset("mmt", gain=-1.0, efficiency=1.5, naxis1=3)
    text = str(info.value)
    assert "gain" in text and "efficiency" in text and "naxis1" in text
    assert text.count(";") == 2  # one message per broken rule
    with pytest.raises(ValueError, match="unknown camera preset 'nope'"):
        get_preset("nope")
    with pytest.raises(ValueError, match="unknown camera parameter"):
        get_preset("mmt", focal_length=1.0)
