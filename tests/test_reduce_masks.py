"""Mask stages on synthetic images: tracks, cosmic rays vs stars, large objects, unreliable
background, saturation vicinity (ingest/masks.py, tracks.py, cosmics.py)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from ingest.masks import MaskConfig, build_masks, grow, grow_indices
from ingest.tracks import Track, mark_track
from lcdb.flags import Flag
from lcdb.sim.pixels import PSFModel, render_stars

SKY, SIGMA, GAIN = 300.0, 35.0, 0.25  # 300 ADU sky at 0.25 e-/ADU: 34.6 ADU photon noise


def _image(rng, n=400, stars=150, flux=(3e3, 3e5), fwhm=3.0):
    image = np.zeros((n, n), np.float32)
    x, y = rng.uniform(0, n - 1, stars), rng.uniform(0, n - 1, stars)
    f = np.exp(rng.uniform(*np.log(flux), stars))
    render_stars(image, PSFModel(), x, y, f, np.full(stars, fwhm), 0.05, 128)
    image += SKY
    return image, (x, y, f)


def _noisy(image, rng):
    return (rng.poisson(np.maximum(image, 0) * GAIN) / GAIN).astype(np.float32)


def _track_truth(shape, theta, rho, fwhm, peak, floor):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    d = xx * np.cos(theta) + yy * np.sin(theta) - rho
    light = peak * np.exp(-0.5 * (d / (fwhm / 2.3548)) ** 2)
    return light.astype(np.float32), light > floor


@pytest.mark.parametrize(("peak", "fwhm"), [(100.0, 2.0), (2000.0, 5.0)])
def test_tracks_faint_and_bright(peak, fwhm):
    """A 100-ADU track of 2 px FWHM is ~3 sigma per pixel, ~4.6 sigma after 2x binning: found;
    every pixel where it adds more than half the noise is flagged (the simulator's rule)."""
    rng = np.random.default_rng(int(peak))
    image, _ = _image(rng)
    light, planted = _track_truth(image.shape, 0.6, 150.0, fwhm, peak, 0.5 * SIGMA)
    image = _noisy(image + light, rng)
    mask = np.zeros(image.shape, np.uint16)
    info = build_masks(image, mask, GAIN, MaskConfig())
    assert len(info.tracks) == 1
    flagged = (mask & Flag.TRACK) > 0
    assert (flagged & planted).sum() / planted.sum() >= 0.95
    assert (flagged & ~planted).sum() / (~planted).sum() < 0.03


def test_no_track_in_a_crowded_field():
    rng = np.random.default_rng(3)
    image, _ = _image(rng, stars=1500, flux=(2e3, 1e5))
    mask = np.zeros(image.shape, np.uint16)
    info = build_masks(_noisy(image, rng), mask, GAIN, MaskConfig())
    assert info.tracks == [] and not (mask & Flag.TRACK).any()


def test_cosmic_rays_found_and_stars_left_alone():
    """Planted hits of 1-6 px (300-6000 e-) on a field of stars of FWHM 2-3.5 px: >= 95% of hit
    pixels flagged, none at the stars (the fine-structure test). The few false flags are
    neighbours of hits with noise above the growth threshold (2.5 sigma), which the growth step
    takes for the charge a real cosmic ray spreads."""
    rng = np.random.default_rng(4)
    image, (x, y, _) = _image(rng, stars=120, flux=(1e4, 1e6), fwhm=2.0)
    extra, _ = _image(rng, stars=60, flux=(1e4, 5e5), fwhm=3.5)
    image = _noisy(image + extra - SKY, rng)
    truth = np.zeros(image.shape, bool)
    for _ in range(80):
        x0, y0, angle = *rng.uniform(5, 395, 2).tolist(), rng.uniform(0, np.pi)
        for k in range(rng.integers(1, 7)):
            xi, yi = int(x0 + k * np.cos(angle)), int(y0 + k * np.sin(angle))
            image[yi, xi] += rng.uniform(300, 6000) / GAIN
            truth[yi, xi] = True
    mask = np.zeros(image.shape, np.uint16)
    build_masks(image, mask, GAIN, MaskConfig(saturation_grow=0))
    cr = (mask & Flag.COSMIC_RAY) > 0
    assert (cr & truth).sum() / truth.sum() >= 0.95
    assert (cr & ~truth).sum() / (~truth).sum() < 2e-4
    iy, ix = np.rint(y).astype(int), np.rint(x).astype(int)
    # No star core taken for a cosmic ray (but a hit next to a core grows into it).
    near_hit = ndimage.binary_dilation(truth, iterations=2)[iy, ix]
    assert not cr[iy, ix][~near_hit].any()


def test_large_object_footprint():
    """An extended glow (Gaussian, sigma 20 px, 4e6 ADU) among point sources: its footprint is a
    LARGE_OBJECT (grown 10 px); the stars are not."""
    rng = np.random.default_rng(5)
    n = 512
    image, _ = _image(rng, n=n, stars=200, flux=(3e3, 1e5))
    yy, xx = np.mgrid[:n, :n]
    r2 = (xx - 150.0) ** 2 + (yy - 160.0) ** 2
    image += (4e6 / (2 * np.pi * 20**2) * np.exp(-r2 / (2 * 20**2))).astype(np.float32)
    mask = np.zeros(image.shape, np.uint16)
    build_masks(_noisy(image, rng), mask, GAIN, MaskConfig())
    large = (mask & Flag.LARGE_OBJECT) > 0
    assert large[r2 < 45**2].all()
    assert not large[r2 > 130**2].any()


def test_unreliable_background_region():
    """A region of scattered light (+400 ADU, ~11 sigma, 260x260 px with soft edges): the 64-px
    mesh follows it (it spans more than the 3x3 meshes of SEP's median filter), the 256-px mesh
    does not; where they differ by > 5 sigma the background is unreliable, grown by ~100 px.
    Far from it nothing is flagged."""
    rng = np.random.default_rng(6)
    n = 768
    image, _ = _image(rng, n=n, stars=300, flux=(3e3, 1e5))
    yy, xx = np.mgrid[:n, :n]
    edge = np.minimum.reduce([xx - 250, 510 - xx, yy - 250, 510 - yy]).astype(np.float32)
    image += 400 * np.clip(edge / 10 + 0.5, 0, 1)
    mask = np.zeros(image.shape, np.uint16)
    build_masks(_noisy(image, rng), mask, GAIN, MaskConfig())
    bad = (mask & Flag.BAD_BACKGROUND) > 0
    assert bad[edge > 30].all()  # the region
    assert bad[edge > -60].mean() > 0.85  # and around it (measured 0.90)
    far = edge < -180
    assert not bad[far].any()


def test_growth_helpers():
    shape = (50, 60)
    idx = np.array([10 * 60 + 20, 0])
    grown = grow_indices(idx, shape, 2)
    yy, xx = np.divmod(grown, 60)
    assert grown.size == 13 + 6  # a radius-2 disc, and a corner quarter of one (+ edges)
    assert ((yy - 10) ** 2 + (xx - 20) ** 2 <= 4).sum() == 13
    m = np.zeros(shape, bool)
    m[25, 30] = True
    g = grow(m, 10.0, tile=16)
    assert g.sum() == np.sum(
        (np.mgrid[:50, :60][0] - 25) ** 2 + (np.mgrid[:50, :60][1] - 30) ** 2 <= 100
    )
    band = np.zeros((40, 40), np.uint16)
    n = mark_track(band, Track(np.pi / 2, 20.0, 2.0, -1e9, 1e9, 10.0), int(Flag.TRACK))
    assert n == 40 * 5 and (band[18:23] == Flag.TRACK).all()  # rows 18..22: |y - 20| <= 2
