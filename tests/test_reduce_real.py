"""The photometry on a real frame against SExtractor, and bad input to the reduction.

sep-ntt (../shared/data/sep-ntt, from SEP's test data): a 256x256 ESO NTT/EMMI frame with
SExtractor's background (back.fits), background rms (rms.fits) and catalogue (image.cat:
positions, FLUX_APER in a 10-px-diameter aperture, FLAGS) made with default.sex (BACK_SIZE 64,
BACK_FILTERSIZE 3, DETECT_THRESH 1.5, DEBLEND_MINCONT 1.0, GAIN 0). SEP's own test
(kbarbary/sep test.py, test_vs_sextractor) is the model for the tolerances.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from scipy.spatial import cKDTree

from ingest.calib import provenance
from ingest.calibset import CalibSet
from ingest.cosmics import CoarseMap
from ingest.frameio import FitsImage, read_image, write_image
from ingest.photometry import PhotConfig, measure
from ingest.reduce import ReduceConfig, run_frame
from lcdb.errors import InputError
from lcdb.flags import Flag

# The NTT header has ESO-LOG cards astropy warns about; they do not matter here.
pytestmark = pytest.mark.filterwarnings("ignore::astropy.utils.exceptions.AstropyUserWarning")

NTT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sep-ntt"


@pytest.fixture(scope="module")
def ntt() -> dict:
    if not (NTT / "image.fits").is_file():
        pytest.skip(f"real-frame data not found at {NTT} (shared/data/sep-ntt)")
    image = read_image(NTT / "image.fits")
    cat = np.loadtxt(NTT / "image.cat")
    # Same settings as default.sex; no masks, no source masking (SExtractor has none);
    # apertures at the isophotal barycentre as FLUX_APER.
    config = PhotConfig(aperture="fixed", aperture_radius=5.0, windowed=False, deblend_cont=1.0,
                        detect_nsigma=1.5, mesh=64, filter_size=3, max_rel_error=1e6)  # fmt: skip
    rms = read_image(NTT / "rms.fits")
    work = image.copy()
    res = measure(work, np.zeros(image.shape, np.uint16), CoarseMap(rms, 1), None, None, config,
                  keep_background=True)  # fmt: skip
    return {"image": image, "cat": cat, "res": res, "rms": rms}


def _matched(ntt: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    c, cat = ntt["res"].columns, ntt["cat"]
    # SExtractor positions are 1-based (pixel centre 1.0); ours are 0-based.
    d, i = cKDTree(np.column_stack([cat[:, 1] - 1, cat[:, 2] - 1])).query(
        np.column_stack([c["x"], c["y"]])
    )
    return c, d, i


def test_background_matches_sextractor(ntt):
    # SEP implements SExtractor's mesh mode estimator and bicubic spline exactly; SEP's own test
    # allows rtol 1e-5 for float32 rounding.
    back = read_image(NTT / "back.fits")
    np.testing.assert_allclose(ntt["res"].background, back, rtol=1e-5)


def test_detections_and_positions_match_sextractor(ntt):
    c, d, i = _matched(ntt)
    assert c["x"].size == ntt["cat"].shape[0] == 65
    assert np.unique(i).size == 65
    # Isophotal barycentres: SEP's test allows 1e-3 px.
    assert d.max() < 1e-3


def test_aperture_fluxes_match_sextractor(ntt):
    c, _, i = _matched(ntt)
    cat = ntt["cat"]
    # FLUX_APER (10 px diameter): SExtractor samples boundary pixels 5x5, SEP with subpix=5
    # the same way; SEP's test allows rtol 2e-4.
    np.testing.assert_allclose(c["flux"], cat[i, 12], rtol=2e-4)
    # Errors: GAIN 0 (no Poisson term), so sqrt(area) x background rms. SExtractor sums the rms
    # map over the aperture's pixels, we take area x rms at the centre: equal where the rms is
    # flat, within 5% where the rms map varies across the aperture (a few objects near bright
    # ones). Apertures truncated by the edge have less area in SExtractor: left out.
    full = (cat[i, -1].astype(int) & 16) == 0
    np.testing.assert_allclose(c["flux_err"][full], cat[i, 13][full], rtol=0.05)
    assert abs(np.median(c["flux_err"][full] / cat[i, 13][full]) - 1) < 0.005


def test_truncated_apertures_flagged(ntt):
    """The 4 apertures SEP reports truncated at the edge (SEP's test) carry TRUNCATED, and
    SExtractor flags each of them 'aperture incomplete' (16) too."""
    c, _, i = _matched(ntt)
    ours = (c["flags"] & Flag.TRUNCATED) > 0
    assert ours.sum() == 4
    assert ((ntt["cat"][i, -1].astype(int) & 16) > 0)[ours].all()


# -- bad input -------------------------------------------------------------------------------
def _frame(path: Path, shape=(64, 80), **keywords) -> Path:
    header = fits.Header()
    cards = {"MJD-OBS": 60000.5, "EXPTIME": 30.0, "FILTER": "clear", "CHANNEL": "c1", **keywords}
    for key, value in cards.items():
        if value is not None:
            header[key] = value
    data = np.random.default_rng(0).normal(1000, 10, shape).astype(np.uint16)
    fits.PrimaryHDU(data, header).writeto(path)
    return path


def test_unreadable_fits_reported_with_its_name(tmp_path):
    bad = tmp_path / "garbage.fits"
    bad.write_bytes(b"this is not a FITS file at all" * 10)
    o = run_frame(bad, tmp_path / "out", ReduceConfig())
    assert o.status == "failed" and str(bad) in o.reason and "FITS" in o.reason
    truncated = tmp_path / "truncated.fits"
    truncated.write_bytes(_frame(tmp_path / "whole.fits").read_bytes()[:5000])
    o = run_frame(truncated, tmp_path / "out", ReduceConfig())
    assert o.status == "failed" and str(truncated) in o.reason
    assert "truncated" in o.reason or "cannot read" in o.reason
    with pytest.raises(InputError, match="no such file"):
        FitsImage(tmp_path / "absent.fits")


def test_missing_header_keyword_named(tmp_path):
    o = run_frame(_frame(tmp_path / "f.fits", EXPTIME=None), tmp_path / "out", ReduceConfig())
    assert o.status == "failed"
    assert o.reason == f"{tmp_path / 'f.fits'}: missing header keyword EXPTIME"
    o = run_frame(_frame(tmp_path / "g.fits", CHANNEL=None), tmp_path / "out", ReduceConfig())
    assert o.reason.endswith("missing header keyword CHANNEL")
    # The real NTT frame has no MJD-OBS/DATE-OBS keyword of its own.
    if (NTT / "image.fits").is_file():
        o = run_frame(NTT / "image.fits", tmp_path / "out", ReduceConfig())
        assert o.status == "failed" and "missing header keyword" in o.reason


def test_calibration_of_another_shape_named(tmp_path):
    frame = _frame(tmp_path / "f.fits", shape=(64, 80))
    cal = tmp_path / "cal"
    dark = write_image(cal / "dark.fits", np.zeros((64, 96), np.float32),
                       provenance("dark", [], {"EXPTIME": 30.0, "MJD-OBS": 60000.4}))  # fmt: skip
    o = run_frame(frame, tmp_path / "out", ReduceConfig(), CalibSet.scan(cal))
    assert o.status == "failed"
    assert str(frame) in o.reason and str(dark) in o.reason
    assert "80x64" in o.reason and "96x64" in o.reason


def test_frame_without_stars_rejected(tmp_path):
    o = run_frame(_frame(tmp_path / "empty.fits"), tmp_path / "out", ReduceConfig())
    assert o.status == "rejected" and "no star measured" in o.reason


@pytest.mark.parametrize("dtype", [np.uint16, np.int16, np.int32, np.float32, np.float64])
def test_frames_read_exactly(tmp_path, dtype):
    """Row-block reads equal astropy's scaled data, plain and tile-compressed (fpack)."""
    data = np.random.default_rng(1).integers(0, 30000, (37, 53)).astype(dtype)
    plain, packed = tmp_path / "p.fits", tmp_path / "p.fits.fz"
    fits.PrimaryHDU(data).writeto(plain)
    comp = "RICE_1" if np.issubdtype(dtype, np.integer) else "GZIP_2"
    hdu = fits.CompImageHDU(data, compression_type=comp, quantize_level=0.0)
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(packed)
    for path in (plain, packed):
        with FitsImage(path) as img:
            np.testing.assert_array_equal(img.read(), data.astype(np.float32))
            np.testing.assert_array_equal(img.rows(5, 9), data[5:9].astype(np.float32))
