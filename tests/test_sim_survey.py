"""The catalogue-level survey simulator: physics, truth, determinism, format, CLI."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from scipy.spatial import cKDTree

from lcdb.cli import main
from lcdb.errors import LcdbError
from lcdb.flags import Flag
from lcdb.sim import noise, sky
from lcdb.sim.camera import get_preset
from lcdb.sim.survey import (
    SurveyConfig,
    evaluate_z0,
    frame_wcs,
    normalise_xy,
    simulate_survey,
    z0_terms,
)
from lcdb.sim.variables import VAR_TYPES, assign_variables, magnitude_offset

DATA = Path(__file__).parents[1] / ".." / "shared" / "data"
BIGSKY = DATA / "refcat" / "bigsky-v11.parquet"
MMT = get_preset("mmt")


def _small(**kw) -> SurveyConfig:
    base = {"camera": MMT, "n_frames": 40, "n_stars": 1500, "nights": 5, "seed": 7, "vmin": 5.0}
    return SurveyConfig(**{**base, **kw})


def _load(out: Path) -> tuple[pa.Table, pa.Table, pa.Table]:
    """(all detections with frame_name, truth stars, truth frames)."""
    frames = pq.read_table(out / "truth" / "frames.parquet")
    parts = []
    for name in frames["frame_name"].to_pylist():
        t = pq.read_table(out / "frames" / f"{name}.parquet")
        parts.append(t.append_column("frame_name", pa.array([name] * t.num_rows)))
    return pa.concat_tables(parts), pq.read_table(out / "truth" / "stars.parquet"), frames


def _model_mag(det: pa.Table, stars: pa.Table, frames: pa.Table) -> dict[str, np.ndarray]:
    """Per detection of a real star: the right-hand side of the identity, and what it needs."""
    det = det.filter(pc.greater_equal(det["truth_star_id"], 0))
    sid = det["truth_star_id"].to_numpy()
    fidx = {n: i for i, n in enumerate(frames["frame_name"].to_pylist())}
    fi = np.array([fidx[n] for n in det["frame_name"].to_pylist()])
    mjd = frames["mjd"].to_numpy()[fi]
    dm = magnitude_offset(stars.take(pa.array(sid)), mjd)
    xn, yn = normalise_xy(det["x"].to_numpy(), det["y"].to_numpy(), MMT.naxis1, MMT.naxis2)
    coeffs = frames["z0_coeffs"].to_pylist()
    z0 = np.empty(sid.size)
    for k in np.unique(fi):
        sel = fi == k
        z0[sel] = evaluate_z0(coeffs[k], xn[sel], yn[sel])
    v, bv = stars["v"].to_numpy()[sid], stars["bv"].to_numpy()[sid]
    c = frames["color_coeff"].to_numpy()[fi]
    return {
        "sid": sid,
        "frame": fi,
        "mag_model": v + dm + c * bv + z0,
        "flux": det["flux"].to_numpy(),
        "err": det["flux_err"].to_numpy(),
        "flags": det["flags"].to_numpy(),
        "exptime": frames["exptime"].to_numpy()[fi],
        "truth_flux": det["truth_flux"].to_numpy(),
        "dm": dm,
    }


def _isolated(stars: pa.Table, frames: pa.Table, radius_px: float) -> set[tuple[int, int]]:
    """(frame index, star id) of stars with no other star within ``radius_px`` on that frame."""
    out = set()
    ra, dec = stars["ra"].to_numpy(), stars["dec"].to_numpy()
    pmra, pmdec = stars["pmra"].to_numpy(), stars["pmdec"].to_numpy()
    for k, row in enumerate(frames.to_pylist()):
        years = (row["mjd"] - 51544.5) / 365.25
        d = dec + pmdec * years / 3.6e6
        a = ra + pmra * years / 3.6e6 / np.cos(np.radians(d))
        _, _, cos_c = sky.tangent_plane(a, d, row["ra0"], row["dec0"])
        near = np.flatnonzero(cos_c > 0.95)
        x, y = frame_wcs(MMT, row["ra0"], row["dec0"], row["rotation"]).wcs_world2pix(
            a[near], d[near], 0
        )
        counts = cKDTree(np.column_stack([x, y])).query_ball_point(
            np.column_stack([x, y]), radius_px, return_length=True
        )
        out.update((k, int(s)) for s in near[counts == 1])
    return out


@pytest.fixture(scope="module")
def noisy(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("noisy")
    simulate_survey(_small(), out, progress=False)
    return out


@pytest.fixture(scope="module")
def noiseless(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("noiseless")
    simulate_survey(_small(noiseless=True, var_fraction=0.1), out, progress=False)
    return out


def test_identity_holds_for_noiseless_isolated_stars(noiseless):
    det, stars, frames = _load(noiseless)
    m = _model_mag(det, stars, frames)
    mag_instr = -2.5 * np.log10(m["flux"] / m["exptime"])
    # truth_flux is the right-hand side for every detection of a star (at the star's true
    # position: merged pairs, flagged blended, sit at their light-weighted centre instead).
    single = (m["flags"] & Flag.BLENDED) == 0
    np.testing.assert_allclose(
        -2.5 * np.log10(m["truth_flux"][single] / m["exptime"][single]),
        m["mag_model"][single],
        atol=1e-9,
    )
    # The catalogue flux equals it for stars alone within 3 FWHM (of the frame, at most),
    # unsaturated and not truncated: mag_instr = V + dm + C (B-V) + Z0(x, y) to 1e-6 mag.
    iso = _isolated(stars, frames, 3 * float(pc.max(frames["fwhm"]).as_py()) + 0.01)
    ok = (m["flags"] == 0) & np.array(
        [(f, s) in iso for f, s in zip(m["frame"], m["sid"], strict=True)]
    )
    assert ok.sum() > 0.8 * ok.size  # sparse field: most stars are isolated
    assert np.abs(mag_instr[ok] - m["mag_model"][ok]).max() < 1e-6
    # Variable stars are among them, at the offsets of magnitude_offset().
    assert (np.abs(m["dm"][ok]) > 0.01).sum() > 100


def test_constant_star_scatter_matches_stated_errors(noisy):
    det, stars, frames = _load(noisy)
    m = _model_mag(det, stars, frames)
    const = stars["var_type"].to_numpy(zero_copy_only=False)[m["sid"]] == "constant"
    iso = _isolated(stars, frames, 3 * float(pc.max(frames["fwhm"]).as_py()) + 0.01)
    isolated = np.array([(f, s) in iso for f, s in zip(m["frame"], m["sid"], strict=True)])
    expected = m["exptime"] * 10 ** (-0.4 * m["mag_model"])
    # Stars at expected SNR > 20, so the SNR >= 5 detection cut (15 sigma away) cannot bias.
    sel = const & isolated & (m["flags"] == 0) & (expected / m["err"] > 20)
    r = (m["flux"][sel] - expected[sel]) / m["err"][sel]
    # Unflagged outliers (0.1 % by default, >= 5 sigma) are removed by a 5-sigma clip, which
    # takes away only 6e-7 of a Gaussian.
    clipped = np.abs(r) < 5
    assert clipped.mean() > 0.995
    chi2 = float(np.mean(r[clipped] ** 2))
    # With N > 5000 residuals the standard error of chi2/dof is sqrt(2/N) < 2 %: a 10 % band
    # is a > 5 sigma test that the stated errors are the true scatter.
    assert r.size > 5_000
    assert chi2 == pytest.approx(1.0, abs=0.10)
    assert abs(float(np.mean(r[clipped]))) < 0.05
    # In magnitudes: the light-curve rms of bright constant stars equals their median error.
    mag = -2.5 * np.log10(m["flux"][sel] / m["exptime"][sel]) - m["mag_model"][sel]
    err = noise.MAG_PER_FLUX * m["err"][sel] / expected[sel]
    ratios = []
    for s in np.unique(m["sid"][sel]):
        k = m["sid"][sel] == s
        if k.sum() >= 25:
            ratios.append(np.std(mag[k]) / np.median(err[k]))
    # Each ratio has ~1/sqrt(2 * 25) = 14 % noise; the median over > 50 stars is within 5 %.
    assert len(ratios) > 50
    assert float(np.median(ratios)) == pytest.approx(1.0, abs=0.05)


def test_frame_format_and_metadata(noisy):
    frames = pq.read_table(noisy / "truth" / "frames.parquet")
    row = frames.slice(0, 1).to_pylist()[0]
    path = noisy / row["file"]
    assert path.stem == row["frame_name"]
    t = pq.read_table(path)
    meta = {k.decode(): v.decode() for k, v in t.schema.metadata.items()}
    required = "MJD-OBS EXPTIME FILTER CHANNEL NAXIS1 NAXIS2 FRAMEID AIRMASS RA DEC".split()
    assert set(required) <= set(meta)
    assert meta["FRAMEID"] == row["frame_name"] and meta["FILTER"] == "clear"
    # MJD-OBS is the exposure start; the truth's mjd is mid-exposure.
    mjd_mid = float(meta["MJD-OBS"]) + float(meta["EXPTIME"]) / 2 / 86400
    assert mjd_mid == pytest.approx(row["mjd"], abs=1e-9)
    assert float(meta["AIRMASS"]) == pytest.approx(row["airmass"], abs=1e-6)
    cols = "ra dec x y flux flux_err flags fwhm background truth_star_id truth_flux".split()
    assert t.column_names == cols
    for name in ("ra", "dec", "x", "y", "flux", "flux_err"):
        assert np.isfinite(t[name].to_numpy()).all()
    assert (t["flux_err"].to_numpy() > 0).all()
    ra = t["ra"].to_numpy()
    assert ((ra >= 0) & (ra < 360)).all()
    x, y = t["x"].to_numpy(), t["y"].to_numpy()
    assert x.min() >= -0.5 and x.max() < MMT.naxis1 - 0.5
    assert y.min() >= -0.5 and y.max() < MMT.naxis2 - 0.5
    # Detections: SNR >= 5 and error <= 0.2 mag.
    assert (t["flux"].to_numpy() / t["flux_err"].to_numpy() >= noise.MAG_PER_FLUX / 0.2).all()
    # The Z0 polynomial is stored with its order; the zero point is its constant term.
    assert len(row["z0_coeffs"]) == len(z0_terms(row["z0_order"]))
    assert row["zp"] == row["z0_coeffs"][0]


def test_flags_saturation_blends_outliers(noisy):
    det, stars, frames = _load(noisy)
    flags = det["flags"].to_numpy()
    sid = det["truth_star_id"].to_numpy()
    v = np.where(sid >= 0, stars["v"].to_numpy()[np.maximum(sid, 0)], np.inf)
    # Every star a magnitude brighter than the saturation limit (at zenith, centre of the field)
    # is flagged on the clear frames, with flux lost: extinction (< 0.1), vignetting (< 0.4),
    # thin cloud and FWHM changes (< 0.1 each) dim stars by less than that.
    sat_mag = noise.saturation_mag(MMT, airmass=1.0)
    clear = ~frames["ruined"].to_numpy()[
        np.searchsorted(
            frames["frame_name"].to_numpy(zero_copy_only=False),
            det["frame_name"].to_numpy(zero_copy_only=False),
        )
    ]
    bright = (v < sat_mag - 1.0) & (sid >= 0) & clear
    assert bright.sum() > 10
    assert (flags[bright] & Flag.SATURATED).all()
    lost = det["flux"].to_numpy()[bright] / det["truth_flux"].to_numpy()[bright]
    assert np.median(lost) < 0.9
    assert not (flags[v > sat_mag + 1.0] & Flag.SATURATED).any()
    # Outliers: cosmic rays and artefacts on a few percent of detections, spurious detections.
    n = flags.size
    assert 0.005 < (flags & Flag.COSMIC_RAY).astype(bool).mean() < 0.04
    assert 0.001 < (flags & Flag.OTHER).astype(bool).mean() < 0.02
    assert (sid < 0).sum() > 0
    # Close pairs are flagged blended (or merged into one detection) on frames.
    assert (flags & Flag.BLENDED).astype(bool).sum() > 0
    assert n == frames["n_detections"].to_numpy().sum()


def test_ruined_frames_lose_light_and_stars(tmp_path):
    out = tmp_path / "ruined"
    simulate_survey(_small(n_frames=30, ruined_fraction=0.3, n_stars=600), out, progress=False)
    frames = pq.read_table(out / "truth" / "frames.parquet")
    ruined = frames["ruined"].to_numpy()
    # 30 frames at p = 0.3: 9 +- 2.5 expected; [2, 18] is beyond 3 sigma either way.
    assert 2 <= ruined.sum() <= 18
    cloud = frames["cloud"].to_numpy()
    assert (cloud[ruined] >= 0.3).all() and (cloud[~ruined] < 0.3).all()
    assert set(frames["z0_order"].to_numpy()[ruined]) == {6}
    n_det = frames["n_detections"].to_numpy()
    assert np.median(n_det[ruined]) < np.median(n_det[~ruined])


def test_seed_makes_runs_identical_and_different_seeds_differ(tmp_path):
    cfg = _small(n_frames=6, n_stars=400)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    simulate_survey(cfg, a, progress=False)
    simulate_survey(cfg, b, progress=False)
    simulate_survey(_small(n_frames=6, n_stars=400, seed=8), c, progress=False)
    files = sorted(p.relative_to(a) for p in a.rglob("*.parquet"))
    assert len(files) == 6 + 3
    assert files == sorted(p.relative_to(b) for p in b.rglob("*.parquet"))
    for rel in files:
        ta, tb = pq.read_table(a / rel), pq.read_table(b / rel)
        assert ta.equals(tb) and ta.schema.metadata == tb.schema.metadata
        assert (a / rel).read_bytes() == (b / rel).read_bytes()
    for rel in (Path("truth/stars.parquet"), Path("frames") / files[0].name):
        assert not pq.read_table(a / rel).equals(pq.read_table(c / rel))


def test_injected_variables_as_configured():
    rng = np.random.default_rng(3)
    var = assign_variables(20_000, rng=rng, fraction=0.03, t_start=60000.0, t_end=60060.0)
    types = var["var_type"]
    assert (types != "constant").sum() == 600
    assert set(types) == set(VAR_TYPES)
    amp = var["amplitude"][types != "constant"]
    assert amp.min() >= 0.01 and amp.max() <= 1.0
    # Log-uniform over two decades: median log10 amplitude -1, sd of the median ~0.024.
    assert float(np.median(np.log10(amp))) == pytest.approx(-1.0, abs=0.1)
    assert np.isnan(var["period"][types == "flare"]).all()
    assert np.isnan(var["period"][types == "constant"]).all()
    periodic = np.isin(types, ["sin", "rrlyr", "ea", "lpv"])
    p = var["period"][periodic]
    assert p.min() >= 0.1 and p.max() <= 200  # hours to months
    flares = var["t0"][types == "flare"]
    assert ((flares >= 60000.0) & (flares <= 60060.0)).all()


def test_magnitude_offset_peak_to_peak_equals_amplitude():
    rng = np.random.default_rng(5)
    n = 300
    var = assign_variables(n, rng=rng, fraction=1.0, t_start=60000.0, t_end=60001.0)
    # Dense sampling (1e-4 of a period) over 2 periods of the periodic types; for flares from
    # 6 rise times before the peak (exactly sampled) to 25 decay times after it.
    u = np.linspace(-1.0, 1.0, 20001)
    period = np.where(np.isnan(var["period"]), 1.0, var["period"])
    t = var["t0"][:, None] + period[:, None] * (u[None, :] + 1.0)
    flare = var["var_type"] == "flare"
    w, tau = var["width"][flare, None], var["shape"][flare, None]
    t[flare] = var["t0"][flare, None] + np.where(u < 0, 6 * u * w, 25 * u * tau)
    dm = magnitude_offset(var, t)
    assert dm.shape == (n, u.size)
    ptp = dm.max(axis=1) - dm.min(axis=1)
    for kind in ("sin", "rrlyr", "ea", "flare"):
        k = var["var_type"] == kind
        assert k.sum() > 10
        # The sawtooth's corners are sampled to 1e-4 / 0.1 of its amplitude; the rest exactly.
        np.testing.assert_allclose(ptp[k], var["amplitude"][k], rtol=2e-3)
    # Semi-regular variables never exceed it.
    k = var["var_type"] == "lpv"
    assert (ptp[k] <= var["amplitude"][k] * (1 + 1e-9)).all()
    # Constant stars do not vary; one time per star works too.
    const = {"var_type": np.array(["constant"]), **{c: np.array([np.nan]) for c in
             ("period", "amplitude", "t0", "shape", "width")}}  # fmt: skip
    assert magnitude_offset(const, 60000.5)[0] == 0.0
    assert magnitude_offset(var, t[:, 0]).shape == (n,)


def test_synthetic_sky_counts_colours_pairs_and_motion():
    rng = np.random.default_rng(11)
    stars = sky.synthetic_stars(
        ra0=10.0, dec0=80.0, width_deg=10.0, height_deg=8.0, n_stars=50_000, vmin=6.0,
        vmax=14.0, rng=rng,
    )  # fmt: skip
    v, bv = stars["v"].to_numpy(), stars["bv"].to_numpy()
    prim = stars["companion_of"].to_numpy() < 0
    # log N(<m) grows by 0.35 per magnitude (counts of primaries in 1-mag bins).
    counts = np.histogram(v[prim], bins=np.arange(8, 14))[0]
    slope = np.polyfit(np.arange(8, 13) + 0.5, np.log10(counts), 1)[0]
    assert slope == pytest.approx(0.35, abs=0.02)
    # Colours: range ~0-1.6, peak near 0.6.
    hist, edges = np.histogram(bv, bins=np.arange(-0.3, 2.05, 0.1))
    assert 0.4 <= edges[np.argmax(hist)] <= 0.8
    assert np.quantile(bv, 0.02) > -0.25 and np.quantile(bv, 0.98) < 1.7
    # Field box in the tangent plane, even at dec 80.
    xi, eta, _ = sky.tangent_plane(stars["ra"].to_numpy(), stars["dec"].to_numpy(), 10.0, 80.0)
    assert np.abs(xi).max() <= 5.01 and np.abs(eta).max() <= 4.01
    # Close pairs: 1 % companions, 2-20 arcsec from their primary.
    comp = np.flatnonzero(~prim)
    assert comp.size == 500
    p = stars["companion_of"].to_numpy()[comp]
    a, d = stars["ra"].to_numpy(), stars["dec"].to_numpy()
    sep = 3600 * np.degrees(
        np.arccos(
            np.clip(
                np.sin(np.radians(d[comp])) * np.sin(np.radians(d[p]))
                + np.cos(np.radians(d[comp])) * np.cos(np.radians(d[p]))
                * np.cos(np.radians(a[comp] - a[p])),
                -1, 1,
            )
        )
    )  # fmt: skip
    assert sep.min() > 1.9 and sep.max() < 20.1
    # High proper motion up to ~1"/yr.
    pm = np.hypot(stars["pmra"].to_numpy(), stars["pmdec"].to_numpy())
    assert (pm > 100).sum() >= 200 and pm.max() <= 1000.0 + 1e-6


def test_positions_follow_proper_motion(noiseless):
    det, stars, frames = _load(noiseless)
    sid = det["truth_star_id"].to_numpy()
    ok = (sid >= 0) & (det["flags"].to_numpy() == 0)
    fidx = {n: i for i, n in enumerate(frames["frame_name"].to_pylist())}
    fi = np.array([fidx[n] for n in det["frame_name"].to_pylist()])[ok]
    s = sid[ok]
    years = (frames["mjd"].to_numpy()[fi] - 51544.5) / 365.25
    d = stars["dec"].to_numpy()[s] + stars["pmdec"].to_numpy()[s] * years / 3.6e6
    a = stars["ra"].to_numpy()[s] + stars["pmra"].to_numpy()[s] * years / 3.6e6 / np.cos(
        np.radians(d)
    )
    # Noiseless positions of isolated stars are the propagated positions (merged pairs move).
    dra = (det["ra"].to_numpy()[ok] - a) * np.cos(np.radians(d)) * 3.6e6
    ddec = (det["dec"].to_numpy()[ok] - d) * 3.6e6
    assert np.median(np.hypot(dra, ddec)) < 1.0  # mas
    fast = np.hypot(stars["pmra"].to_numpy()[s], stars["pmdec"].to_numpy()[s]) > 300
    assert fast.any()
    assert np.percentile(np.hypot(dra, ddec)[fast], 90) < 1.0


def test_refcat_is_catalogue_like(noisy):
    ref = pq.read_table(noisy / "refcat.parquet")
    stars = pq.read_table(noisy / "truth" / "stars.parquet")
    assert ref.column_names[:9] == "ref_id ra dec v v_err bv bv_err pmra pmdec".split()
    in_ref = stars["in_refcat"].to_numpy()
    assert in_ref.sum() == ref.num_rows
    ids = stars["ref_id"].to_numpy(zero_copy_only=False)[in_ref]
    np.testing.assert_array_equal(np.sort(ids.astype(int)), np.sort(ref["ref_id"].to_numpy()))
    # Shallower than the frames: the catalogue stops ~2.5 mag above the detection limit.
    lim = noise.limiting_mag(MMT, 5.0)
    assert ref["v"].to_numpy().max() < lim - 2.0
    # Tycho-like errors: ~0.01 at V = 8, ~0.1 at V = 11; residuals match them.
    v_err = ref["v_err"].to_numpy()
    np.testing.assert_allclose(sky.catalogue_errors(np.array([8.0, 11.0]))[0], [0.01, 0.1])
    true_v = stars["v"].to_numpy()[in_ref]
    order = np.argsort(ids)
    resid = ref["v"].to_numpy()[np.argsort(ref["ref_id"].to_numpy())] - true_v[order]
    assert np.std(resid / v_err[np.argsort(ref["ref_id"].to_numpy())]) == pytest.approx(1, abs=0.2)


def _cli(argv: list[str]) -> int:
    return main(argv)


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (["--frames", "0"], 2, "--frames must be a positive integer (got 0)"),
        (["--preset", "hubble"], 2, "unknown --preset 'hubble'"),
        (["--var-fraction", "1.5"], 2, "--var-fraction must be in [0, 1]"),
        (["--gain", "0"], 2, "--gain must be a positive number"),
        (["--dec", "-80"], 2, "never rises above 30 deg"),
        (["--refcat", "missing.parquet"], 1, "missing.parquet does not exist"),
    ],
)
def test_cli_bad_arguments(tmp_path, extra, code, message):
    argv = ["simulate", "survey", "--out", str(tmp_path / "o"), "--no-progress", *extra]
    assert _cli(argv) == code
    # The one-line message (what lcdb.cli logs) names the bad value.
    from lcdb.commands import simulate

    parser = argparse.ArgumentParser()
    simulate.register(parser.add_subparsers())
    args = parser.parse_args(argv)
    with pytest.raises(LcdbError) as info:
        args.func(args)
    assert message in str(info.value)
    assert not (tmp_path / "o" / "frames").exists() or code == 1


def test_cli_refcat_without_stars_in_field_and_existing_output(tmp_path):
    cat = tmp_path / "cat.parquet"
    pq.write_table(pa.table({"ra": [10.0, 11.0], "dec": [-5.0, -6.0], "v": [9.0, 10.0]}), cat)
    out = tmp_path / "o"
    base = ["simulate", "survey", "--out", str(out), "--no-progress", "--frames", "3"]
    assert _cli([*base, "--refcat", str(cat), "--dec", "45"]) == 1
    assert _cli([*base, "--stars", "300"]) == 0
    assert len(list((out / "frames").glob("*.parquet"))) == 3
    assert _cli([*base, "--stars", "300"]) == 1  # catalogues there: needs --overwrite
    assert _cli([*base, "--stars", "300", "--overwrite", "--preset", "mst", "--exptime", "60"]) == 0
    frames = pq.read_table(out / "truth" / "frames.parquet")
    assert frames.num_rows == 3 and set(frames["exptime"].to_pylist()) == {60.0}


@pytest.mark.skipif(not BIGSKY.is_file(), reason=f"real catalogue {BIGSKY} is absent")
def test_real_refcat_field(tmp_path):
    rng = np.random.default_rng(1)
    stars = sky.stars_from_refcat(
        BIGSKY, ra0=150.0, dec0=45.0, width_deg=12.0, height_deg=10.0, rng=rng
    )
    v = stars["v"].to_numpy()
    # ~24 Tycho-2 stars/deg^2 to V = 11 on average; far fewer at this high latitude, but many.
    assert 800 < stars.num_rows < 6000 and v.max() <= 11.0
    assert np.isfinite(stars["bv"].to_numpy()).all()
    assert stars["name"][0].as_py().count("-") == 2  # Tycho ids: TYC1-TYC2-TYC3
    full = sky.fill_faint(
        stars, ra0=150.0, dec0=45.0, width_deg=12.0, height_deg=10.0, vmax=13.0, rng=rng
    )
    fv = full["v"].to_numpy()
    # The synthetic extension continues the real counts: N(11-12) / N(10-11) ~ 10^0.35 = 2.2.
    ratio = ((fv > 11) & (fv <= 12)).sum() / ((v > 10) & (v <= 11)).sum()
    assert 1.5 < ratio < 3.2
    out = tmp_path / "real"
    cfg = SurveyConfig(camera=MMT, n_frames=3, nights=1, refcat=BIGSKY, seed=2)
    result = simulate_survey(cfg, out, progress=False)
    truth = pq.read_table(out / "truth" / "stars.parquet")
    real = np.array([not n.startswith("SIM-") for n in truth["name"].to_pylist()])
    # The written refcat holds (nearly all) real stars and no synthetic ones.
    assert result.n_refcat > 0.95 * real.sum()
    assert not truth["in_refcat"].to_numpy()[~real].any()
    assert result.n_detections > 3 * 5000
    with pytest.raises(sky.RefcatError, match="no star in the field"):
        sky.stars_from_refcat(
            BIGSKY, ra0=0.0, dec0=0.0, width_deg=1.0, height_deg=1.0, vmin=20.0, rng=rng
        )


def test_config_validation_lists_every_problem():
    with pytest.raises(ValueError) as info:
        SurveyConfig(n_frames=0, var_fraction=-0.1, dec0=100.0)
    text = str(info.value)
    assert "n_frames" in text and "var_fraction" in text and "dec0" in text
    assert math.isfinite(SurveyConfig().resolved().vmax)
