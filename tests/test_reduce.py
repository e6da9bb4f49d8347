"""Per-frame reduction (ingest/reduce.py and its stages) on simulated frames with known truth.

One module-scoped simulation (lcdb.sim.pixels, 512x512, three frames with cosmic rays, a
satellite track, saturated stars, RTN and bad pixels, a 3rd-order optical distortion) is
calibrated with ``ingest.calib``/``flats``/``defects`` and reduced against a store holding the
undistorted star list as reference catalogue. Every test compares what the reduction reports
with what was planted; tolerances are derived in the comments.
"""

from __future__ import annotations

import logging

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from scipy.spatial import cKDTree

import lcdb
from ingest.astrometry import header_wcs
from ingest.calib import make_bias, make_darks, quadratic_inverse_cube, write_nonlinearity
from ingest.calibset import CalibSet
from ingest.catalog import read_catalog
from ingest.defects import make_badpix, make_rtn
from ingest.flats import make_twilight_flats
from ingest.masks import MaskConfig, build_masks
from ingest.photometry import PhotConfig
from ingest.reduce import ReduceConfig, reduce_frames, run_frame
from ingest.refcat import RefcatOptions, load_refcat
from lcdb.cli import main
from lcdb.flags import Flag
from lcdb.sim.detector import Detector
from lcdb.sim.pixels import PixelSimConfig, frame_wcs, make_star_list, simulate_frames

N = 512
GAIN = 0.25
#: Distortion: a radial cubic (3.0 px at the corners of the 512x512 frame) plus a quadratic.
K3 = 3.0 / (N / np.sqrt(2)) ** 3
Q2 = 0.8 / (N / 2) ** 2


def distort(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Where the optics put a star whose undistorted (TAN) pixel position is ``(x, y)``."""
    u, v = x - (N - 1) / 2, y - (N - 1) / 2
    r2 = u * u + v * v
    return x + K3 * r2 * u + Q2 * u * v, y + K3 * r2 * v + Q2 * u * u


def distorted_sky(config: PixelSimConfig, stars: pa.Table) -> pa.Table:
    """The star list moved so that the simulator's TAN WCS renders it distorted.

    The simulator renders at ``wcs.all_world2pix(ra, dec)``; replacing each star's position by
    ``wcs.all_pix2world(distort(wcs.all_world2pix(ra, dec)))`` puts it where the distortion
    says, while the frame header keeps the plain TAN WCS (frames are not dithered).
    """
    wcs = frame_wcs(config, config.ra0, config.dec0)
    x, y = wcs.all_world2pix(stars["ra"].to_numpy(), stars["dec"].to_numpy(), 0)
    ra, dec = wcs.all_pix2world(*distort(x, y), 0)
    return stars.set_column(1, "ra", pa.array(ra % 360)).set_column(2, "dec", pa.array(dec))


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("reduce")
    det = Detector(nx=N, ny=N, rtn_fraction=0.005)
    config = PixelSimConfig(detector=det, n_stars=600, mag_range=(11.5, 17.5), n_frames=3,
                            seed=21, dither_px=0, cosmic_rate=3.0, n_tracks=1, n_bias=60,
                            dark_exptimes=(60.0,), progress=False)  # fmt: skip
    sky = make_star_list(config, np.random.default_rng(5)).drop_columns(["pmra", "pmdec"])
    result = simulate_frames(config, root / "sim", stars=distorted_sky(config, sky))
    pq.write_table(sky, root / "refcat.parquet")
    cal = root / "calib"
    cal.mkdir()
    bias = make_bias(result.calib["bias"], cal)
    dark = make_darks(result.calib["dark"], cal)[0]
    c = fits.getdata(root / "sim/truth/detector/nonlinearity.fits")
    write_nonlinearity(quadratic_inverse_cube(c), det.nonlinearity_ref_adu, cal, {"CHANNEL": "sim"})
    flat = make_twilight_flats(result.calib["flat"], cal, CalibSet.scan(cal))[0]
    make_badpix(dark, cal, bias=bias, flat=flat)
    make_rtn(result.calib["bias"], cal)
    store = lcdb.init_store(root / "store", lcdb.StoreConfig(order=5))
    load_refcat(store, root / "refcat.parquet", RefcatOptions(progress=False))
    calib = CalibSet.scan(cal)
    out = root / "red"
    batch = reduce_frames(result.science, out, ReduceConfig(gain=GAIN, save_mask=True), calib,
                          str(root / "store"))  # fmt: skip
    truth = pq.read_table(root / "sim/truth/stars.parquet")
    tf, g = (fits.getdata(root / f"sim/truth/detector/{m}.fits") for m in ("flat", "gain"))
    return {"root": root, "config": config, "result": result, "calib": calib, "out": out,
            "batch": batch, "truth": truth, "sky": sky, "store": str(root / "store"),
            # A flat normalised to mean 1 leaves reduced fluxes at truth x mean(flat x <g>/g).
            "K": float(np.mean(tf * g.mean() / g, dtype=np.float64))}  # fmt: skip


def _frame_truth(sim: dict, name: str) -> pa.Table:
    return sim["truth"].filter(pc.equal(sim["truth"]["frame"], name))


def test_every_frame_reduced(sim):
    assert [o.status for o in sim["batch"].outcomes] == ["ok"] * 3, sim["batch"].outcomes
    qa = pacsv.read_csv(sim["out"] / "qa.csv")
    assert qa.num_rows == 3 and set(qa["status"].to_pylist()) == {"ok"}
    for col in ("n_measured", "fwhm", "background", "astrom_rms_arcsec", "mask_fraction"):
        assert pc.all(pc.is_valid(qa[col])).as_py(), col


def test_fluxes_unbiased_and_errors_consistent(sim):
    """Isolated unsaturated stars: median(measured / expected) = 1 within 1%, and the scatter of
    (measured - expected) / flux_err is ~1.

    expected = truth flux x K (flat normalisation) x the fraction of the PSF inside the
    aperture. PSFModel.encircled_energy is the analytic fraction of the continuous profile; the
    simulator samples the PSF at pixel centres, which puts 0.23% less light inside r ~ 4.5 px
    (measured by rendering noiseless stars and summing them with the same aperture code), so
    the expected value is corrected by that factor.
    """
    psf, ratios, chis = sim["config"].psf, [], []
    for o in sim["batch"].outcomes:
        cat = pq.read_table(o.catalogue)
        radius = float(cat.schema.metadata[b"APRADIUS"])
        t = _frame_truth(sim, o.frame)
        tx, ty, tf, tfw = (t[k].to_numpy() for k in ("x", "y", "flux", "fwhm"))
        tree = cKDTree(np.column_stack([tx, ty]))
        isolated = np.ones(tx.size, bool)  # no neighbour adding > 1% of the star's light
        for k, near in enumerate(tree.query_ball_point(np.column_stack([tx, ty]), 30)):
            d = np.hypot(tx[near] - tx[k], ty[near] - ty[k])
            others = (d > 0) & (((d < 12) & (tf[near] > 0.01 * tf[k])) | (tf[near] > 3 * tf[k]))
            isolated[k] = not others.any()
        x, y, f, fe, fl = (cat[k].to_numpy() for k in ("x", "y", "flux", "flux_err", "flags"))
        dist, i = tree.query(np.column_stack([x, y]))
        good = (dist < 1) & isolated[i] & ~t["saturated"].to_numpy()[i]
        expected = tf[i] * sim["K"] * psf.encircled_energy(radius, tfw[i]) * (1 - 0.0023)
        ratios.append((f / expected)[good & ((fl & ~Flag.SALT_PEPPER) == 0)])
        chis.append(((f - expected) / fe)[good & (fl == 0)])
    ratio, chi = np.concatenate(ratios), np.concatenate(chis)
    assert ratio.size >= 40 and chi.size >= 25
    # Median of >= 40 ratios with ~1-3% scatter each: standard error < 0.4%.
    assert abs(np.median(ratio) - 1) < 0.01, np.median(ratio)
    # Robust sigma of chi: 1 within the sampling error of ~25-60 values (~15%) plus the
    # unmodelled background-estimate error (~2%).
    sigma = 1.4826 * np.median(np.abs(chi - np.median(chi)))
    assert 0.75 < sigma < 1.3, (sigma, chi.size)
    assert abs(np.median(chi)) < 0.5


def _masks(sim: dict) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for o in sim["batch"].outcomes:
        mine = fits.getdata(sim["out"] / f"{o.frame}.mask.fits.fz")
        truth = fits.getdata(sim["root"] / f"sim/truth/masks/{o.frame}.fits")
        out.append((mine, truth))
    return out


@pytest.mark.parametrize(
    ("bit", "max_false"),
    [
        # Tracks: the band is the measured width + 1.5 px margin on each side of a 2-5 px FWHM
        # track crossing the frame: at most a few % of a 512x512 frame.
        (Flag.TRACK, 0.03),
        # Cosmic rays: neighbours grown at 1.5 sigma above their 3x3 median: ~1e-5 of pixels.
        (Flag.COSMIC_RAY, 2e-4),
        (Flag.SALT_PEPPER, 1e-4),
        # Saturated pixels are grown by 2 px (their vicinity) by design.
        (Flag.SATURATED, 3e-3),
    ],
)
def test_planted_artefacts_flagged(sim, bit, max_false):
    planted = flagged = hit = false = others = 0
    for mine, truth in _masks(sim):
        t, m = (truth & bit) > 0, (mine & bit) > 0
        planted, hit = planted + t.sum(), hit + (t & m).sum()
        false, others = false + (m & ~t).sum(), others + (~t).sum()
        flagged += m.sum()
    recall, false_rate = hit / max(planted, 1), false / others
    logging.getLogger(__name__).info("%s: %d planted, recall %.4f, false-flag rate %.2e",
                                     bit.name, planted, recall, false_rate)  # fmt: skip
    assert planted > 0
    assert recall >= 0.95, (bit.name, recall, planted)
    assert false_rate <= max_false, (bit.name, false_rate)


def test_saturated_stars_flagged_in_catalogue(sim):
    """Every measured star with a saturated pixel has the SATURATED bit."""
    n = 0
    for o in sim["batch"].outcomes:
        cat = pq.read_table(o.catalogue)
        t = _frame_truth(sim, o.frame)
        sat = t.filter(t["saturated"])
        if sat.num_rows == 0:
            continue
        d, i = cKDTree(np.column_stack([cat["x"], cat["y"]])).query(
            np.column_stack([sat["x"], sat["y"]])
        )
        found = d < 2
        n += found.sum()
        assert ((cat["flags"].to_numpy()[i[found]] & Flag.SATURATED) > 0).all()
    assert n > 0


def test_astrometry_recovers_distortion(sim):
    """The refined WCS maps truth pixel positions to the true sky within 0.1 px rms, where the
    header (TAN) WCS is off by the planted distortion (up to 3 px)."""
    sky = sim["sky"]
    pos = {s: (r, d) for s, r, d in zip(sky["star_id"].to_pylist(), sky["ra"].to_numpy(),
                                        sky["dec"].to_numpy(), strict=True)}  # fmt: skip
    for o in sim["batch"].outcomes:
        cat = pq.read_table(o.catalogue)
        meta = cat.schema.metadata
        assert float(meta[b"ASTRMSPX"]) < 0.1, meta[b"ASTRMSPX"]
        wcs = header_wcs(fits.Header.fromstring(meta[b"WCSHDR"].decode(), sep="\n"))
        t = _frame_truth(sim, o.frame)
        inside = (t["x"].to_numpy() > 5) & (t["x"].to_numpy() < N - 6)
        x, y = t["x"].to_numpy()[inside], t["y"].to_numpy()[inside]
        ra, dec = np.array([pos[s] for s in t["star_id"].to_numpy()[inside]]).T
        px, py = wcs.all_world2pix(ra, dec, 0)
        refined = np.sqrt(np.mean((px - x) ** 2 + (py - y) ** 2))
        with fits.open(o.file) as h:
            hx, hy = header_wcs(h[0].header).all_world2pix(ra, dec, 0)
        before = np.hypot(hx - x, hy - y)
        assert before.max() > 2.0  # the distortion is there (3 px at the corners)
        assert refined < 0.1, (o.frame, refined, before.max())


def test_fwhm_measured(sim):
    for o in sim["batch"].outcomes:
        truth = np.median(_frame_truth(sim, o.frame)["fwhm"].to_numpy())
        assert o.qa["fwhm"] == pytest.approx(truth, rel=0.1)


def test_catalogue_format_and_ingest(sim, tmp_path):
    """Catalogues follow docs/formats.md: `lcdb ingest` reads and loads them."""
    from ingest.load import IngestOptions, ingest_paths

    cat = read_catalog(sim["batch"].outcomes[0].catalogue)
    assert cat.meta["channel"] == "sim" and cat.meta["naxis1"] == N
    assert cat.meta["frame_name"] == "sim-0000" and cat.n_rows > 100
    meta = pq.read_table(sim["batch"].outcomes[0].catalogue).schema.metadata
    for key in (b"FWHM", b"ASTRMS", b"BKG", b"MASKFRAC", b"APRADIUS", b"CALFLAT", b"CALDARK"):
        assert key in meta, key
    store = lcdb.init_store(tmp_path / "s", lcdb.StoreConfig(order=5))
    summary = ingest_paths(store, [str(sim["out"])], IngestOptions(progress=False))
    assert not summary.rejected
    store.refresh()
    assert store.sql("SELECT count(*) AS n FROM frames")["n"][0].as_py() == 3


def test_optimal_aperture_mode(sim, tmp_path):
    """SNR-optimal aperture with the position-dependent correction to the reference aperture:
    fluxes equal truth x K x the encircled energy of the reference radius (within 1.5%: the
    correction adds its fit error to the 1% of the default mode)."""
    frame = sim["result"].science[1]
    config = ReduceConfig(gain=GAIN, phot=PhotConfig(aperture="optimal"))
    o = run_frame(frame, tmp_path, config, sim["calib"], sim["store"])
    assert o.status == "ok", o.reason
    cat = pq.read_table(o.catalogue)
    r_ref = float(cat.schema.metadata[b"APREF"])
    assert r_ref > float(cat.schema.metadata[b"APRADIUS"])
    t = _frame_truth(sim, o.frame)
    d, i = cKDTree(np.column_stack([t["x"], t["y"]])).query(np.column_stack([cat["x"], cat["y"]]))
    fl = cat["flags"].to_numpy()
    good = (d < 1) & ((fl & ~Flag.SALT_PEPPER) == 0) & (cat["flux"].to_numpy() > 2e4)
    ee = sim["config"].psf.encircled_energy(r_ref, t["fwhm"].to_numpy()[i])
    ratio = cat["flux"].to_numpy() / (t["flux"].to_numpy()[i] * sim["K"] * ee)
    assert good.sum() > 20
    assert abs(np.median(ratio[good]) - 1) < 0.015, np.median(ratio[good])


def test_frame_without_calib_or_store(sim, tmp_path):
    """No --calib: the frame is only masked and measured; no store: the header WCS is used.
    The background is written as a lossless tile-compressed FITS with the frame's WCS."""
    o = run_frame(sim["result"].science[0], tmp_path, ReduceConfig(save_background=True))
    assert o.status == "ok", o.reason
    meta = pq.read_table(o.catalogue).schema.metadata
    assert b"CALFLAT" not in meta and meta[b"ASTRMS"] == b"nan"
    back = fits.getdata(tmp_path / "sim-0000.back.fits.fz")
    header = fits.getheader(tmp_path / "sim-0000.back.fits.fz", 1)
    assert back.shape == (N, N) and header["FRAMEID"] == "sim-0000" and "CRVAL1" in header
    assert float(np.median(back)) == pytest.approx(o.qa["background"], rel=0.05)
    again = run_frame(sim["result"].science[0], tmp_path, ReduceConfig(skip_existing=True))
    assert again.status == "skipped"


def test_unmatched_wcs_is_rejected_with_reason(sim, tmp_path):
    """A refcat that does not overlap the frame: rejected, with the reason, no catalogue."""
    far = sim["sky"].set_column(1, "ra", pc.add(sim["sky"]["ra"], 0.3))
    pq.write_table(far, tmp_path / "far.parquet")
    store = lcdb.init_store(tmp_path / "s", lcdb.StoreConfig(order=5))
    load_refcat(store, tmp_path / "far.parquet", RefcatOptions(progress=False))
    o = run_frame(sim["result"].science[0], tmp_path / "out", ReduceConfig(), None,
                  str(tmp_path / "s"))  # fmt: skip
    assert o.status == "rejected"
    assert "sim-0000.fits" in o.reason and ("reference" in o.reason or "offset" in o.reason)
    assert not (tmp_path / "out" / "sim-0000.parquet").exists()


def _cli(argv: list[str]) -> int:
    return main(argv)


def test_cli_pool_goes_on_after_a_failure(sim, tmp_path, caplog):
    broken = tmp_path / "broken.fits"
    broken.write_bytes(b"SIMPLE  = T" + b"\0" * 100)
    frames = [str(sim["result"].science[0]), str(broken), str(sim["result"].science[2])]
    argv = ["reduce", *frames, "--out", str(tmp_path / "o"), "--calib", str(sim["calib"].root),
            "--store", sim["store"], "--gain", str(GAIN), "--jobs", "2",
            "--no-progress"]  # fmt: skip
    with caplog.at_level(logging.INFO):
        assert _cli(argv) == 1
    assert (tmp_path / "o" / "sim-0000.parquet").exists()
    assert (tmp_path / "o" / "sim-0002.parquet").exists()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "broken.fits" in errors[0] and "\n" not in errors[0]
    assert _cli(["reduce", "--help"]) == 0
    assert _cli(["reduce", frames[0], "--out", str(tmp_path / "o"), "--jobs", "0"]) == 2
    assert _cli(["reduce", frames[0], "--out", str(tmp_path / "o"), "--detect-sigma", "-1"]) == 2


def test_astroscrappy_method_agrees(sim):
    """The optional astroscrappy engine finds most of the same planted cosmic rays (>= 85%;
    it misses some fainter pixels next to bright ones, which the laplace method grows into)."""
    pytest.importorskip("astroscrappy")
    from ingest.calibset import calibrate
    from ingest.cosmics import CosmicConfig
    from ingest.frameio import FitsImage, frame_meta

    frame = sim["result"].science[0]
    with FitsImage(frame) as img:
        cal = calibrate(img, sim["calib"].select(frame_meta(frame)), 65535)
    config = MaskConfig(cosmics=CosmicConfig(method="astroscrappy"))
    build_masks(cal.image, cal.mask, GAIN, config, cal.saturated, cal.bad)
    truth = fits.getdata(sim["root"] / "sim/truth/masks/sim-0000.fits")
    t, m = (truth & Flag.COSMIC_RAY) > 0, (cal.mask & Flag.COSMIC_RAY) > 0
    assert (t & m).sum() / t.sum() >= 0.85
    assert (m & ~t).sum() / (~t).sum() < 1e-3
