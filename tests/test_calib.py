"""Calibration masters (ingest/calib.py, stack.py, calibset.py, defects.py; ``lcdb calib``).

Small simulated detectors (lcdb.sim) with known bias, dark current, nonlinearity, RTN and bad
pixels; cosmic rays planted in stacks. Tolerances are derived in the comments.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from astropy.io import fits

from ingest.calib import (
    CalibConfig,
    apply_polynomial,
    make_bias,
    make_darks,
    provenance,
    quadratic_inverse_cube,
    write_nonlinearity,
)
from ingest.calibset import CalibSet, calibrate
from ingest.defects import DefectConfig, make_badpix, make_rtn
from ingest.frameio import FitsImage, frame_meta, write_image
from ingest.stack import StackConfig, clipped_mean, clipped_mean_stack, stack_blocks
from lcdb.cli import main
from lcdb.errors import InputError
from lcdb.flags import Flag
from lcdb.sim import detector as dm
from lcdb.sim.detector import Detector
from lcdb.sim.pixels import PixelSimConfig, simulate_frames

N = 192


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("calib")
    config = PixelSimConfig(detector=Detector(nx=N, ny=N), n_frames=0, n_bias=60, n_dark=5,
                            dark_exptimes=(60.0, 300.0), cosmic_rate=5.0, seed=3,
                            progress=False)  # fmt: skip
    result = simulate_frames(config, root / "sim")
    out = root / "calib"
    out.mkdir()
    det = root / "sim" / "truth" / "detector"
    return {
        "root": root, "config": config, "result": result, "out": out,
        "bias": make_bias(result.calib["bias"], out),
        "darks": make_darks(result.calib["dark"], out),
        "truth": {m: fits.getdata(det / f"{m}.fits") for m in ("bias", "gain", "dark_current")},
        "static": fits.getdata(root / "sim" / "truth" / "static_mask.fits"),
    }  # fmt: skip


def _bias_stack(tmp_path, n: int, rng: np.random.Generator, shape=(40, 50), hits: int = 30):
    """n bias frames (level 500 + pattern, read noise 4 ADU) with cosmic rays planted."""
    pattern = rng.normal(0, 3, shape).astype(np.float32)
    planted = []
    paths = []
    for k in range(n):
        frame = 500 + pattern + rng.normal(0, 4, shape)
        ys, xs = rng.integers(0, shape[0], hits), rng.integers(0, shape[1], hits)
        frame[ys, xs] += rng.uniform(300, 5000, hits)
        planted.append((k, ys, xs))
        path = tmp_path / f"b{k:02d}.fits"
        fits.PrimaryHDU(np.rint(frame).astype(np.uint16),
                        fits.Header([("MJD-OBS", 60000.1 + k / 1440)])).writeto(path)  # fmt: skip
        paths.append(path)
    return paths, pattern, planted


@pytest.mark.parametrize("n", [3, 10])
def test_master_bias_rejects_planted_cosmic_rays(tmp_path, n):
    rng = np.random.default_rng(n)
    paths, pattern, planted = _bias_stack(tmp_path, n, rng)
    master = fits.getdata(make_bias(paths, tmp_path, CalibConfig(budget=4000)))
    count = np.zeros(pattern.shape, int)
    for _, ys, xs in planted:
        count[ys, xs] += 1
    # A pixel hit in half the frames or more is lost to any robust combination (its median is a
    # cosmic ray); with 30 hits in 2000 px that happens ~once for n = 3.
    hit = (count > 0) & (count < n / 2)
    err = master - (500 + pattern)
    # Clipped mean of n frames of 4 ADU noise (rounded): sigma 4/sqrt(n); a surviving cosmic ray
    # would be >= 300/n ADU off. Where a hit was clipped the rest average to < 6 sigma.
    assert hit.sum() > 20 * n
    assert np.abs(err[hit]).max() < 6 * 4.1 / np.sqrt(n - 1)
    clean = err[count < n / 2]
    assert abs(clean.mean()) < 0.3 and clean.std() < 1.5 * 4.1 / np.sqrt(n)
    header = fits.getheader(tmp_path / next(p.name for p in tmp_path.glob("bias*.fits")))
    assert header["NCOMBINE"] == n and header["LCDBPROD"] == "bias" and header["REJFRAC"] > 0
    assert len(header["HISTORY"]) == n


def test_streamed_stack_equals_whole_and_stays_in_budget(tmp_path):
    paths, _, _ = _bias_stack(tmp_path, 7, np.random.default_rng(1))
    sizes = [cube.size for _, _, cube in stack_blocks(paths, budget=3000)]
    assert max(sizes) <= 3000 and len(sizes) >= 5
    small = clipped_mean_stack(paths, StackConfig(budget=3000)).mean
    whole = clipped_mean_stack(paths, StackConfig(budget=1 << 24)).mean
    np.testing.assert_array_equal(small, whole)


def test_clipped_mean_against_plain_mean():
    rng = np.random.default_rng(2)
    cube = rng.normal(100, 5, (20, 30, 30)).astype(np.float32)
    cube[3, 10, 10] += 1000
    mean, used = clipped_mean(cube)
    assert abs(mean[10, 10] - 100) < 4 and used[10, 10] == 19
    assert abs(float(mean.mean()) - 100) < 0.1  # no bias on clean pixels


def test_master_dark_matches_truth_and_rejects_sim_cosmics(sim):
    """The sim's darks carry cosmic rays (5/Mpx/s: ~55 hits per 300 s dark of 192x192)."""
    truth = sim["truth"]
    expect = truth["bias"] + truth["dark_current"] * 300.0 / truth["gain"]
    (path,) = [p for p in sim["darks"] if "300s" in p.name]
    master = fits.getdata(path)
    rtn = (sim["static"] & (Flag.SALT_PEPPER | Flag.BAD_PIXEL)) > 0  # RTN, hot: noisy anyway
    frames = np.stack([fits.getdata(p).astype(np.float32)
                       for p in sim["result"].calib["dark"] if "0300.0s" in p.name])  # fmt: skip
    assert frames.shape[0] == 5
    hits = (frames - np.median(frames, axis=0) > 300).any(axis=0) & ~rtn
    assert hits.sum() > 20
    resid = (master - expect)[~rtn]
    # 5 frames: read noise ~4.1 ADU -> 1.9 ADU, dark shot noise of hot pixels aside.
    assert np.median(np.abs(resid)) < 2.0
    assert np.abs((master - expect)[hits]).max() < 25  # a kept hit would be > 300/5 = 60
    assert fits.getheader(path)["EXPTIME"] == 300.0


def test_calibset_picks_dark_closest_in_time(tmp_path):
    def dark(name, mjd, exptime, level):
        header = provenance("dark", [], {"MJD-OBS": mjd, "EXPTIME": exptime, "CHANNEL": "c1"})
        write_image(tmp_path / name, np.full((8, 10), level, np.float32), header)

    dark("a.fits", 60000.1, 30.0, 500.0)
    dark("b.fits", 60001.1, 30.0, 510.0)
    dark("c.fits", 60001.2, 60.0, 520.0)
    write_image(tmp_path / "bias.fits", np.full((8, 10), 490.0, np.float32),
                provenance("bias", [], {"MJD-OBS": 60001.0, "CHANNEL": "c1"}))  # fmt: skip
    cs = CalibSet.scan(tmp_path)
    meta = frame_meta(_raw(tmp_path / "f.fits", mjd=60001.15, exptime=30.0))
    sel = cs.select(meta)
    assert sel.dark.path.name == "b.fits" and sel.dark_scale is None
    # No dark of the exposure: the closest, its thermal part scaled by exposure (with a bias).
    meta = frame_meta(_raw(tmp_path / "g.fits", mjd=60001.15, exptime=120.0))
    sel = cs.select(meta)
    assert sel.dark.path.name == "c.fits" and sel.dark_scale == pytest.approx(2.0)
    with FitsImage(meta.path) as img:
        out = calibrate(img, sel, saturation=np.inf).image
    # raw 1000 - (bias + 2 x (dark - bias)) = 1000 - (490 + 2 x 30) = 450
    np.testing.assert_allclose(out, 450.0)
    other = frame_meta(_raw(tmp_path / "h.fits", mjd=60001.15, exptime=30.0, channel="c2"))
    assert cs.select(other).dark is None


def _raw(path, mjd, exptime, channel="c1", value=1000):
    header = fits.Header([("MJD-OBS", mjd), ("EXPTIME", exptime), ("CHANNEL", channel),
                          ("FILTER", "clear")])  # fmt: skip
    fits.PrimaryHDU(np.full((8, 10), value, np.uint16), header).writeto(path)
    return path


def test_nonlinearity_cube_inverts_detector_model(tmp_path):
    """Planes of the series inverse of m = s (1 + c s / ref), u = m / ref: the truncation
    error of order 3 is 5 (c u)^3 (2.1e-5 at c = -0.02, u = 0.8), of order 4 14 (c u)^4."""
    ref = 50000.0
    c = np.array([[-0.02, -0.01], [0.0, 0.015]], np.float32)
    s = np.array([[40000.0, 20000.0], [1000.0, 35000.0]], np.float32)
    m = dm.apply_nonlinearity(s, c, ref).astype(np.float32)
    for order, rtol in ((3, 3e-5), (4, 2e-6)):
        block = m.copy()
        apply_polynomial(block, quadratic_inverse_cube(c, order), ref)
        np.testing.assert_allclose(block, s, rtol=rtol)
    # The same through a product file, picked up by CalibSet (the characterize convention:
    # a file with NLSREF and NLORDER needs no LCDBPROD).
    path = write_nonlinearity(quadratic_inverse_cube(c, 3), ref, tmp_path)
    header = fits.getheader(path)
    assert header["NLSREF"] == ref and header["NLORDER"] == 3
    del header["LCDBPROD"]
    fits.writeto(path, fits.getdata(path), header, overwrite=True)
    assert CalibSet.scan(tmp_path).of_kind("nonlin")[0].path == path


def test_rtn_map_finds_planted_pixels(sim):
    path = make_rtn(sim["result"].calib["bias"], sim["out"])
    found = fits.getdata(path) > 0
    truth = (sim["static"] & Flag.SALT_PEPPER) > 0
    recall = (found & truth).sum() / truth.sum()
    false = (found & ~truth).sum() / (~truth).sum()
    logging.getLogger(__name__).info("RTN map: recall %.4f, false %.2e", recall, false)
    # Amplitudes 50-150 ADU, duty 0.2-0.8: std >= 20 ADU > 8 ADU in each group of 20 frames
    # unless a group never sees the displaced state (0.8^20 = 1% for the rarest duty).
    assert recall >= 0.95
    # Read noise ~4 ADU (15% lognormal spread): a normal pixel's std > 8 ADU in all 3 groups
    # is a 5-sigma event.
    assert false < 1e-4
    assert fits.getheader(path)["RTNTHR"] == 8.0


def test_bad_pixel_map_from_dark_and_flat(sim, tmp_path):
    """Hot pixels from the dark (> 3 sigma), dead ones from a flat; the seed's 3-sigma rule also
    flags the dark-current and read-noise tails (and RTN pixels, flagged as such anyway)."""
    dark = next(p for p in sim["darks"] if "60s" in p.name)
    truth = sim["static"]
    t_flat = fits.getdata(sim["root"] / "sim/truth/detector/flat.fits")
    flat = write_image(tmp_path / "flat.fits", (t_flat / t_flat.mean()).astype(np.float32))
    path = make_badpix(dark, sim["out"], bias=sim["bias"], flat=flat)
    found = fits.getdata(path) > 0
    bad, rtn = (truth & Flag.BAD_PIXEL) > 0, (truth & Flag.SALT_PEPPER) > 0
    assert (found & bad).sum() / bad.sum() >= 0.95
    false = (found & ~bad & ~rtn).sum() / (~bad & ~rtn).sum()
    logging.getLogger(__name__).info("bad pixels: false-flag rate %.4f (non-RTN)", false)
    assert false < 0.015  # 3 sigma: 0.27% for a Gaussian; the tails of the sim add ~0.5%
    # Without the flat, dead pixels (0-0.3 response) are invisible in the dark.
    only_dark = fits.getdata(make_badpix(dark, tmp_path, bias=sim["bias"])) > 0
    assert (only_dark & bad).sum() < (found & bad).sum()
    # Merging a given map.
    given = np.zeros(found.shape, np.uint8)
    given[5, 7] = 1
    merged = make_badpix(dark, tmp_path, bias=sim["bias"], merge=[write_image(tmp_path / "m.fits",
                         given)], config=DefectConfig(dark_nsigma=5))  # fmt: skip
    assert fits.getdata(merged)[5, 7] == 1


def test_bad_input_named(tmp_path):
    paths, _, _ = _bias_stack(tmp_path, 3, np.random.default_rng(4))
    fits.PrimaryHDU(np.zeros((10, 10), np.uint16)).writeto(tmp_path / "small.fits")
    with pytest.raises(InputError, match=r"small\.fits: shape 10x10 differs"):
        make_bias([*paths, tmp_path / "small.fits"], tmp_path)
    (tmp_path / "junk.fits").write_bytes(b"junk" * 100)
    with pytest.raises(InputError, match=r"junk\.fits: cannot read FITS"):
        make_bias([*paths, tmp_path / "junk.fits"], tmp_path)
    with pytest.raises(InputError, match="missing header keyword EXPTIME"):
        make_darks(paths, tmp_path)
    with pytest.raises(InputError, match=r"junk\.fits: cannot read FITS header"):
        CalibSet.scan(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no lcdb calibration products"):
        CalibSet.scan(tmp_path / "empty")


def _cli(argv: list[str]) -> int:
    return main(argv)


def test_calib_cli(sim, tmp_path):
    for action in ("bias", "dark", "flat", "nightflat", "badpix", "rtn", "nonlin"):
        assert _cli(["calib", action, "--help"]) == 0
    cal = sim["result"].calib
    out = str(tmp_path / "m")
    assert _cli(["calib", "bias", str(cal["bias"][0].parent), "--out", out, "--no-progress"]) == 0
    assert _cli(["calib", "dark", *map(str, cal["dark"]), "--out", out, "--no-progress"]) == 0
    c_map = sim["root"] / "sim/truth/detector/nonlinearity.fits"
    assert _cli(["calib", "nonlin", "--quadratic", str(c_map), "--ref", "50000", "--out", out,
                 "--channel", "sim"]) == 0  # fmt: skip
    assert _cli(["calib", "rtn", *map(str, cal["bias"]), "--out", out]) == 0
    assert _cli(["calib", "flat", str(cal["flat"][0].parent), "--calib", out, "--out", out,
                 "--no-progress"]) == 0  # fmt: skip
    kinds = {e.kind for e in CalibSet.scan(out).entries}
    assert kinds == {"bias", "dark", "nonlin", "rtn", "flat"}
    assert _cli(["calib", "bias", str(tmp_path / "nothing.fits"), "--out", out]) == 1
    assert _cli(["calib", "bias", str(cal["bias"][0]), "--out", out, "--sigma", "0"]) == 2
    assert _cli(["calib", "flat", str(cal["flat"][0]), "--out", out, "--window", "50"]) == 2
    assert _cli(["calib", "badpix", "--dark", "x.fits", "--out", out, "--flat-range", "2"]) == 2
