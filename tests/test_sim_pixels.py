"""Pixel-level simulator (lcdb.sim.detector, lcdb.sim.pixels, ``lcdb simulate frames``).

Every test asserts a physical truth on small seeded images: what a reduction measures from the
raw pixels must match what was planted. Tolerances are derived in the comments.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from lcdb.commands.simulate_frames import register
from lcdb.errors import UsageError
from lcdb.flags import Flag
from lcdb.sim import detector as dm
from lcdb.sim.detector import Detector
from lcdb.sim.pixels import (
    PixelSimConfig,
    frame_wcs,
    make_frame_spec,
    make_star_list,
    render_science_frame,
    simulate_frames,
)

N = 256  # image side of the tests


def _rngs(seed: int, n: int) -> list[np.random.Generator]:
    return [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(n)]


def _truth(det: Detector, seed: int) -> dm.DetectorTruth:
    return dm.make_detector_truth(det, _rngs(seed, 1)[0])


def test_isolated_star_flux_is_conserved():
    """Aperture flux on a reduced frame equals the truth flux within its error.

    The test is about flux conservation through the optics (PSF with halo, vignetting) and
    the detector (gain map, nonlinearity, bias), so RTN, hot and dead pixels, tracks and
    cosmic rays are off: they are masked in a real reduction and tested below.
    """
    det = Detector(nx=N, ny=N, rtn_fraction=0, hot_pixel_fraction=0, dead_pixel_fraction=0)
    cfg = PixelSimConfig(detector=det, n_tracks=0, cosmic_rate=0, dither_px=0, progress=False)
    r_det, r_spec, r_img = _rngs(11, 3)
    truth = dm.make_detector_truth(det, r_det)
    spec = make_frame_spec(cfg, 0, r_spec)
    flux = 6e5  # peak ~ 35000 ADU: bright, unsaturated, 1.2% nonlinear at the peak
    ra, dec = frame_wcs(cfg, spec.ra0, spec.dec0).all_pix2world([127.3], [128.6], 0)
    v = cfg.zero_point - 2.5 * np.log10(flux / spec.exptime)
    stars = pa.table({"star_id": [7], "ra": ra, "dec": dec, "v": [v], "bv": [0.0]})
    frame = render_science_frame(cfg, truth, stars, spec, r_img)
    star = frame.stars.to_pylist()[0]
    assert star["flux"] == pytest.approx(flux)
    assert (star["x"], star["y"]) == pytest.approx((127.3, 128.6), abs=1e-6)
    assert not star["saturated"]

    # Reduction with the truth maps: bias, nonlinearity, gain, flat (vignetting + PRNU).
    linear = dm.linearize(frame.image - truth.bias, truth.nonlinearity, det.nonlinearity_ref_adu)
    g_mean = truth.gain.mean(dtype=np.float64)
    reduced = linear * truth.gain / g_mean / truth.flat
    yy, xx = np.mgrid[:N, :N]
    r = np.hypot(xx - star["x"], yy - star["y"])
    annulus, aperture = (r >= 60) & (r < 100), r < 25
    background = reduced[annulus].mean()  # unbiased for the linear sky gradient
    measured = (reduced[aperture] - background).sum() / cfg.psf.encircled_energy(25, star["fwhm"])

    # Error: star Poisson (F/g ADU²), sky + read noise in the aperture, background error.
    sky_var = spec.sky_adu / g_mean + (det.read_noise_e / g_mean) ** 2
    n_ap, n_ann = aperture.sum(), annulus.sum()
    sigma = np.sqrt(flux / g_mean + n_ap * sky_var + n_ap**2 * sky_var / n_ann)  # ~0.37%
    assert abs(measured - flux) < 3 * sigma


def test_rtn_pixels_found_by_bias_stack_std():
    """Std > 8 ADU in all of three disjoint groups of a bias stack (Mini-SiTian §3.1.3)
    flags >= 95% of the planted RTN pixels and < 0.1% of the others.

    Normal pixels have a read noise of ~4.2 ADU (1.03 e / 0.25 e/ADU): std > 8 over 20
    frames is a chi2(19) > 69 event (p ~ 1e-8). An RTN pixel (50-150 ADU, duty 0.2-0.8) is
    missed only if a group of 20 frames stays in one state: p <= 0.8^20 ~ 1% per group.
    """
    det = Detector(nx=N, ny=N)
    truth = _truth(det, 21)
    n = 60
    stack = np.stack([dm.render_bias(det, truth, rng) for rng in _rngs(22, n)])
    groups = np.array_split(np.random.default_rng(23).permutation(n), 3)
    flagged = np.all([stack[g].std(axis=0, ddof=1) > 8 for g in groups], axis=0)
    planted = np.zeros(det.shape, bool)
    planted.ravel()[truth.rtn_index] = True
    assert planted.mean() == pytest.approx(det.rtn_fraction, rel=0.01)
    assert flagged[planted].mean() >= 0.95
    assert flagged[~planted].mean() < 1e-3
    assert np.all(truth.static_mask[planted] & Flag.SALT_PEPPER)


def test_photon_transfer_gain_and_read_noise():
    """A flat pair gives the mean gain within 2%; a bias pair the read noise within 5%.

    Gain = mean signal / (var(f1 - f2) / 2 - read noise²). Expected biases: nonlinearity at
    10000 ADU (c = -1% at 50000) shifts it by -3cs/s_ref ~ +0.6%; the bimodal population
    (5% of pixels at +8%) by < 0.1%; statistics over 65k pixels 0.6%. Read noise: std of a
    bias difference / sqrt(2), 0.3% statistics plus 0.25% from digitisation.
    """
    det = Detector(nx=N, ny=N, bimodal_gain=True)
    truth = _truth(det, 31)
    summary = dm.detector_summary(det, truth)
    assert summary["n_high_gain_pixels"] == round(det.bimodal_fraction * N * N)
    good = truth.static_mask == 0
    r = _rngs(32, 4)
    b1, b2 = (dm.render_bias(det, truth, rng).astype(np.float64) for rng in r[:2])
    read_noise_adu = np.std((b1 - b2)[good]) / np.sqrt(2)
    assert read_noise_adu == pytest.approx(summary["read_noise_rms_adu"], rel=0.05)
    read_noise_e = read_noise_adu * summary["gain_e_per_adu"]
    assert read_noise_e == pytest.approx(summary["read_noise_rms_e"], rel=0.05)

    f1, f2 = (dm.render_flat(det, truth, 10000.0, 2.0, rng).astype(np.float64) for rng in r[2:])
    signal = ((f1 + f2 - b1 - b2) / 2)[good].mean()
    assert signal == pytest.approx(10000 * truth.flat.mean(), rel=0.02)
    variance = np.var((f1 - f2)[good]) / 2 - read_noise_adu**2
    assert signal / variance == pytest.approx(summary["gain_e_per_adu"], rel=0.02)


def test_dark_ladder_and_flat_linearity():
    """Darks grow with exposure at the truth dark current; hot pixels stand out; the flat
    ladder shows the truth nonlinearity.

    Dark: 5-sigma clipping of the pixel distribution removes cosmic rays and hot pixels; the
    mean of ~60k pixels with 4.3 ADU noise is good to 0.02 ADU, the frame-to-frame bias drift
    (seed: +-0.03 ADU) adds 0.03 ADU: 3 sigma is 0.12 ADU of the 2.7 ADU a 300 s dark holds
    (0.002 e/s x 300 s / 0.25 e/ADU). Flats: the mean of 60k pixels at 45000 ADU
    has a 0.005% error, so measured and expected means agree to 0.1% while the nonlinearity
    (-0.9% at 45000 ADU) stands far above it.
    """
    det = Detector(nx=N, ny=N)
    truth = _truth(det, 51)
    good = truth.static_mask == 0
    r = _rngs(52, 16)
    bias = np.mean([dm.render_bias(det, truth, rng) for rng in r[:10]], axis=0)
    for exptime, rng in ((60.0, r[10]), (300.0, r[11])):
        dark = dm.render_dark(det, truth, exptime, rng) - bias
        d = dark[good]
        keep = np.abs(d - np.median(d)) < 5 * 1.4826 * np.median(np.abs(d - np.median(d)))
        expected = (truth.dark_current * exptime / truth.gain)[good][keep].mean()
        assert d[keep].mean() == pytest.approx(expected, abs=0.12)
        hot = truth.dark_current > det.hot_dark_range_e[0] * 0.999
        assert np.all(dark[hot] > np.median(d) + 3 * d[keep].std())  # >= 0.5 e/s: all found

    ratio = truth.flat * truth.gain.mean() / truth.gain  # what one ADU of light gives
    for level, rng in ((1000.0, r[12]), (45000.0, r[13])):
        flat = dm.render_flat(det, truth, level, level / 5000.0, rng) - bias
        linear = level * ratio
        expected = dm.apply_nonlinearity(linear, truth.nonlinearity, det.nonlinearity_ref_adu)
        measured = flat[good].mean()
        assert measured == pytest.approx(expected[good].mean(), rel=1e-3)
        if level > 40000:
            assert measured / linear[good].mean() - 1 < -0.005


def test_masks_cover_every_significant_artefact():
    """Every pixel > 5 sigma above the noiseless artefact-free model lies in the truth mask.

    The clean model has the same stars, sky, bias, dark and nonlinearity, and gives the
    expected variance; what stands out must be a track, a cosmic ray, an RTN or a saturated
    pixel. Poisson skewness at the sky level (75 e) gives ~0.1 such pixels per 256² frame by
    chance, so at most one unmasked outlier is allowed.
    """
    det = Detector(nx=N, ny=N)
    cfg = PixelSimConfig(detector=det, n_stars=300, cosmic_rate=5.0, progress=False)
    r_det, r_sky, r_spec, r_img = _rngs(41, 4)
    truth = dm.make_detector_truth(det, r_det)
    stars = make_star_list(cfg, r_sky)
    spec = make_frame_spec(cfg, 0, r_spec)
    noisy = render_science_frame(cfg, truth, stars, spec, r_img)
    clean = render_science_frame(cfg, truth, stars, spec, r_img, noise=False, artefacts=False)
    z = (noisy.image - clean.image) / np.sqrt(clean.variance)
    assert np.count_nonzero((np.abs(z) > 5) & (noisy.mask == 0)) <= 1

    track_px = (noisy.mask & Flag.TRACK) > 0
    cosmic_px = (noisy.mask & Flag.COSMIC_RAY) > 0
    assert noisy.tracks.num_rows == 1 and noisy.cosmics.num_rows > 5
    assert np.count_nonzero((z > 5) & track_px) > 50  # the track is really there
    assert np.count_nonzero((z > 5) & cosmic_px) >= noisy.cosmics.num_rows // 2
    t = noisy.tracks.to_pylist()[0]
    s = np.linspace(0, 1, 200)[5:-5]
    xs = np.rint(t["x0"] + s * (t["x1"] - t["x0"])).astype(int)
    ys = np.rint(t["y0"] + s * (t["y1"] - t["y0"])).astype(int)
    assert track_px[ys, xs].all()  # the centre line is masked end to end
    for star in noisy.stars.to_pylist():
        if star["saturated"]:
            assert noisy.image[round(star["y"]), round(star["x"])] == det.saturation_adu


def _small_config(seed: int, n_frames: int = 2) -> PixelSimConfig:
    return PixelSimConfig(detector=Detector(nx=64, ny=48), n_frames=n_frames, seed=seed,
                          n_stars=40, n_bias=3, n_dark=1, dark_exptimes=(10.0,),
                          flat_levels=(5000.0,), progress=False)  # fmt: skip


def _images(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): fits.getdata(p) for p in sorted(root.rglob("*.fits"))}


def test_seed_determinism_and_layout(tmp_path: Path):
    """Same seed, same bytes; frame i does not depend on the number of frames."""
    a = simulate_frames(_small_config(5), tmp_path / "a")
    simulate_frames(_small_config(5), tmp_path / "b")
    simulate_frames(_small_config(6), tmp_path / "c")
    simulate_frames(_small_config(5, n_frames=1), tmp_path / "d")
    ia, ib, ic = (_images(tmp_path / d) for d in "abc")
    assert ia.keys() == ib.keys() and len(ia) == 2 + 3 + 1 + 2 + 2 + 6 + 1  # + masks, maps
    assert all(np.array_equal(ia[k], ib[k]) for k in ia)
    assert not np.array_equal(ia["science/sim-0000.fits"], ic["science/sim-0000.fits"])
    assert np.array_equal(
        ia["science/sim-0000.fits"], _images(tmp_path / "d")["science/sim-0000.fits"]
    )
    assert pq.read_table(a.truth_dir / "stars.parquet").equals(
        pq.read_table(tmp_path / "b" / "truth" / "stars.parquet")
    )
    with pytest.raises(FileExistsError):
        simulate_frames(_small_config(5), tmp_path / "a")

    header = fits.getheader(a.science[0])
    for key in ("DATE-OBS", "MJD-OBS", "EXPTIME", "FILTER", "CHANNEL", "IMAGETYP", "CTYPE1"):
        assert key in header
    assert fits.getdata(a.science[0]).dtype == np.uint16
    stars = pq.read_table(a.truth_dir / "stars.parquet")
    first = {k: v.to_numpy() for k, v in zip(stars.column_names, stars.columns, strict=True)}
    sel = first["frame"] == "sim-0000"
    x, y = WCS(header).all_world2pix(first["ra"][sel], first["dec"][sel], 0)
    assert np.allclose(x, first["x"][sel], atol=1e-6) and np.allclose(y, first["y"][sel], atol=1e-6)
    for kind in ("bias", "dark", "flat"):
        assert all(fits.getheader(p)["IMAGETYP"] == kind.upper() for p in a.calib[kind])
    assert [fits.getheader(p)["EXPTIME"] for p in a.calib["flat"]] == [1.0, 1.0]
    info = json.loads((a.truth_dir / "detector.json").read_text())
    assert info["gain_e_per_adu"] == pytest.approx(0.25, rel=0.01)
    rtn = pq.read_table(a.truth_dir / "rtn_pixels.parquet")
    mask = fits.getdata(a.truth_dir / "static_mask.fits")
    assert np.all(mask[rtn["y"].to_numpy(), rtn["x"].to_numpy()] & Flag.SALT_PEPPER)


def test_nonlinearity_roundtrip_and_detector_validation():
    s = np.array([0.0, 10.0, 3000.0, 30000.0, 60000.0], np.float32)
    m = dm.apply_nonlinearity(s, np.float32(-0.01), 50000.0)
    assert m[-1] == pytest.approx(60000 * (1 - 0.012))
    assert np.allclose(dm.linearize(m, -0.01, 50000.0), s, rtol=1e-6, atol=1e-3)
    with pytest.raises(ValueError) as err:
        Detector(nx=0, gain_e_per_adu=-1.0, rtn_duty_range=(0.9, 0.1))
    message = str(err.value)
    assert "nx=0" in message and "gain_e_per_adu=-1.0" in message and "rtn_duty_range" in message


def _run(argv: list[str]) -> tuple[int, str]:
    """Run ``lcdb simulate <argv>`` as lcdb.cli.main would: exit code and usage message."""
    parser = argparse.ArgumentParser(prog="lcdb simulate")
    register(parser.add_subparsers(dest="what", required=True))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0), ""
    try:
        return int(args.func(args) or 0), ""
    except UsageError as exc:
        return 2, str(exc)


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        (["--size", "0x10"], "--size 0x10"),
        (["--size", "big"], "--size big"),
        (["--frames", "-1"], "--frames -1"),
        (["--gain", "-0.2"], "--gain -0.2"),
        (["--flat-levels", "a,b"], "--flat-levels a,b"),
        (["--dark-exptimes", "0,5"], "--dark-exptimes 0,5"),
        (["--nonlinearity", "-5"], "nonlinearity=-5"),
        (["--frames", "x"], ""),  # argparse's own error, exit 2
    ],
)
def test_cli_bad_arguments_exit_2(tmp_path: Path, extra: list[str], named: str):
    code, message = _run(["frames", "--out", str(tmp_path / "o"), *extra])
    assert code == 2
    assert named in message
    assert not (tmp_path / "o" / "science").exists()


def test_cli_writes_frames(tmp_path: Path):
    argv = ["frames", "--out", str(tmp_path), "--size", "64x32", "--frames", "1", "--stars", "20",
            "--n-bias", "2", "--n-dark", "1", "--dark-exptimes", "5", "--flat-levels", "2000",
            "--no-progress", "--no-truth-maps"]  # fmt: skip
    assert _run(argv) == (0, "")
    image = fits.getdata(tmp_path / "science" / "sim-0000.fits")
    assert image.shape == (32, 64)
    assert len(list((tmp_path / "calib").rglob("*.fits"))) == 2 + 1 + 2
    assert not (tmp_path / "truth" / "detector" / "gain.fits").exists()
    assert _run(argv)[0] == 2  # an existing simulation is not overwritten silently
    assert _run([*argv, "--overwrite"]) == (0, "")
