"""Colour reconstruction and refinement against the simulator's truth (issue: colours/refine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

import lcdb
from ingest import IngestOptions, ingest_paths, load_refcat
from lcdb import sqlfiles
from lcdb.errors import InputError
from lcdb.runner import RunnerOptions, run_job
from lcdb.sim import truth
from lcdb.sim.survey import SurveyConfig, simulate_survey
from variability.calibrate import calibrate
from variability.cluster import ClusterConfig, cluster
from variability.colours import ColourConfig, ColourJob, reconstruct_colours, solve
from variability.refine import refine

QUIET = RunnerOptions(progress=False)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory) -> tuple[lcdb.Store, Path]:
    """A simulated Mini-MegaTORTORA survey: ingested, clustered and calibrated on its refcat."""
    root = tmp_path_factory.mktemp("colours")
    sim = root / "survey"
    simulate_survey(SurveyConfig(n_frames=120, n_stars=1500, seed=11), sim, progress=False)
    store = lcdb.init_store(root / "store")
    load_refcat(store, sim / "refcat.parquet")
    ingest_paths(store, [sim / "frames"], IngestOptions(progress=False))
    cluster(store, ClusterConfig(store.config.match_radius_arcsec, store.config.order), QUIET)
    calibrate(store, options=QUIET)
    return store, sim


def test_weighted_line_fit_from_sums_is_exact():
    # y = 12.3 + 0.65 x exactly: the 2x2 solution from the sums must return it.
    rng = np.random.default_rng(2)
    x = rng.normal(0.1, 0.05, 40)
    w = rng.uniform(100, 1000, 40)
    y = 12.3 + 0.65 * x
    import pyarrow as pa

    sums = pa.table(
        {
            "object_id": [1],
            "n": [40],
            "s": [w.sum()],
            "sx": [(w * x).sum()],
            "sy": [(w * y).sum()],
            "sxx": [(w * x * x).sum()],
            "sxy": [(w * x * y).sum()],
            "syy": [(w * y * y).sum()],
            "rms": [0.0],
            "c_spread": [0.05],
            "n_clipped": [0],
        }
    )
    fit = solve(sums, ColourConfig())
    assert abs(fit["v"][0] - 12.3) < 1e-9 and abs(fit["bv"][0] - 0.65) < 1e-9
    flat = sums.set_column(sums.schema.get_field_index("c_spread"), "c_spread", pa.array([0.001]))
    assert np.isnan(solve(flat, ColourConfig())["bv"][0])
    assert "spread of C" in solve(flat, ColourConfig())["colour_note"][0]


def test_colour_units_agree_however_the_partitions_are_grouped(calibrated):
    """Runs of partitions (one DuckDB thread) and one partition per unit (two threads) give the
    same fit: every object is fitted once, by the unit owning it, whatever the grouping."""
    store, _sim = calibrated
    reconstruct_colours(store)
    runs = store.pl("SELECT object_id, v, bv, n_colour FROM objects ORDER BY object_id")
    job = ColourJob(ColourConfig(), store.config.order, target_rows=1)
    assert len(job.units(store)) == len(store.pixels("objects")) > 1
    run_job(store, job, RunnerOptions(workers=2, progress=False))
    single = store.pl("SELECT object_id, v, bv, n_colour FROM objects ORDER BY object_id")
    assert runs["object_id"].to_list() == single["object_id"].to_list()
    assert runs["n_colour"].to_list() == single["n_colour"].to_list()
    # the same sums in another order: equal to double-precision roundoff
    for col in ("v", "bv"):
        np.testing.assert_allclose(single[col].to_numpy(), runs[col].to_numpy(), atol=1e-9)


def test_colours_then_refinement(calibrated):
    store, sim = calibrated
    out = reconstruct_colours(store)
    assert out["fitted"] > 300
    det = truth.detection_truth(store, sim)
    objs = truth.object_truth(store, det, sim)
    before = truth.colour_score(objs)
    # Issue goal: B-V within 0.05 mag rms for bright constant stars with >= 50 frames, and V
    # unbiased: the median offset within 3 standard errors of a median (1.2533 rms / sqrt(n)).
    # (The zero points inherit the Tycho-like catalogue's errors, ~25 mmag at the stars.)
    assert before.n >= 30
    assert before.bv_rms <= 0.05, before
    assert abs(before.v_bias) < 3 * 1.2533 * before.v_rms / np.sqrt(before.n), before
    # Objects with too few points have null colours and say why.
    notes = store.pl("SELECT colour_note FROM objects WHERE bv IS NULL")["colour_note"]
    assert notes.is_not_null().all() and len(notes) > 0

    rows = refine(store, options=QUIET)
    # Converges within the iteration budget, each step smaller than the first.
    assert rows[-1]["converged"] and len(rows) <= 10
    assert rows[-1]["dzp_p99"] < rows[0]["dzp_p99"]
    log = store.pl("SELECT * FROM refine_log ORDER BY iteration")
    assert len(log) == len(rows)
    objs = truth.object_truth(store, det, sim)
    after = truth.colour_score(objs)
    assert after.bv_rms <= 0.05, after
    assert abs(after.v_bias) < 3 * 1.2533 * after.v_rms / np.sqrt(after.n), after
    # Refinement lowers the light-curve scatter of constant stars towards the simulated noise:
    # the median rms must drop, and stay above the median photometric error (the noise floor).
    bright = objs.filter(
        (pl.col("var_type") == "constant") & (pl.col("v_true") < 11) & (pl.col("n_colour") >= 50)
    )["object_id"].to_list()
    floor = (
        store.sql(
            "SELECT median(e) FROM (SELECT object_id, median(mag_err) AS e FROM lightcurves "
            "WHERE object_id IN (SELECT unnest($ids)) AND frame_status = 'ok' AND flags = 0 "
            "GROUP BY object_id)",
            {"ids": bright},
        )
        .column(0)[0]
        .as_py()
    )
    assert floor < after.lc_rms_median < before.lc_rms_median, (floor, before, after)
    # Cloud-ruined frames stay rejected.
    frames = store.pl("SELECT frame_name, status FROM frames").join(
        pl.read_parquet(sim / "truth" / "frames.parquet").select("frame_name", "ruined"),
        on="frame_name",
    )
    assert (frames.filter(pl.col("ruined"))["status"] == "rejected").all()
    # Planted variables do not end up as reference stars (those clearly above the noise).
    ref_vars = objs.filter(
        pl.col("reference").fill_null(False)
        & (pl.col("var_type") != "constant")
        & (pl.col("amplitude") > 5 * pl.col("colour_rms").median())
    )
    assert len(ref_vars) == 0, ref_vars.select("var_type", "amplitude", "v_true")


def test_bad_input(tmp_path):
    store = lcdb.init_store(tmp_path / "s")
    with pytest.raises(InputError, match="lcdb cluster"):
        reconstruct_colours(store)
    with pytest.raises(InputError, match="lcdb colours"):
        refine(store, options=QUIET)
    with pytest.raises(ValueError, match="method must be 'compiled' or 'sql', got 'fast'"):
        ColourJob(ColourConfig(), 5, method="fast")


@pytest.mark.parametrize(("hold_colour", "threads"), [(False, 1), (True, 1), (False, 2), (True, 2)])
def test_compiled_fit_equals_the_sql(calibrated, hold_colour, threads):
    """The kernels of variability.colourfit give what sql/colours.sql and sql/magnitudes.sql
    give, unit by unit, on one thread or two: same objects, same counts (clipping included),
    sums equal to 1e-9 relative (only the order of the additions differs: ~1e-15 per term, over
    <= 10^3 terms)."""
    from lcdb.runner import unit_store
    from variability import colourfit

    store, _sim = calibrated
    if hold_colour:
        reconstruct_colours(store)  # gives the objects the colours the magnitudes hold
    job = ColourJob(ColourConfig(), store.config.order, hold_colour=hold_colour, method="sql")
    clipped = 0
    for _key, payload in job.units(store):
        files = payload["files"]
        unit = unit_store(str(store.root))
        objs = unit.sql(
            "SELECT object_id, bv FROM objects WHERE object_id BETWEEN $lo AND $hi ORDER BY 1",
            {"lo": payload["lo"], "hi": payload["hi"]},
        )
        uid = objs["object_id"].to_numpy()
        cfg = job.config
        params = {
            "files": files, "lo": payload["lo"], "hi": payload["hi"], "clip": cfg.clip,
            "z0_order": payload["z0_order"], "floor": cfg.floor_mag, "max_err": cfg.max_err,
        }  # fmt: skip
        if hold_colour:
            objects = [str(store.root / p) for g in payload["objects"].values() for p in g]
            ref = unit.sql(sqlfiles.load("magnitudes"), {**params, "objects": objects})
            bv = objs["bv"].to_numpy(zero_copy_only=False).astype(float)
            got = colourfit.magnitude_sums(
                unit, files, params["lo"], params["hi"], uid, bv, cfg, threads
            )
        else:
            ref = unit.sql(sqlfiles.load("colours"), params)
            got = colourfit.colour_sums(unit, files, params["lo"], params["hi"], uid, cfg, threads)
        ref = ref.sort_by("object_id")
        assert got.column_names == ref.column_names
        assert got["object_id"].to_pylist() == ref["object_id"].to_pylist()
        assert got["n"].to_pylist() == ref["n"].to_pylist()
        assert got["n_clipped"].to_pylist() == ref["n_clipped"].to_pylist()
        clipped += sum(ref["n_clipped"].to_pylist())
        for col in ref.column_names[1:]:
            a = ref[col].to_numpy(zero_copy_only=False).astype(float)
            b = got[col].to_numpy().astype(float)
            assert np.array_equal(np.isnan(a), np.isnan(b)), col
            ok = ~np.isnan(a)
            # chi2 of the magnitudes is syy - sy^2 / s: a difference of two sums ~10^2 s
            # (V ~ 10 mag) that leaves ~n, so its rounding is ~10^4x that of the sums
            rtol = 1e-6 if col == "chi2" else 1e-9
            np.testing.assert_allclose(b[ok], a[ok], rtol=rtol, atol=1e-12, err_msg=col)
    assert clipped > 0  # the clipping pass was exercised, not only the first fit


def test_compiled_points_keep_only_the_good_rows(tmp_path):
    """Step 1 of the compiled fit reads a measurement file itself, so it must filter as
    views.sql's unit_points does: of a run of rows, only the one with an object of the unit, no
    flag but bit 4, a positive flux with an error <= max_err and a frame with a model is kept;
    nulls and NaNs drop a row. Its point: y = -2.5 log10(flux) - Z0, x = C, w = 1/(e^2 + f^2)."""
    import pyarrow as pa

    from lcdb.tableio import write_parquet
    from variability import colourfit

    nan = float("nan")
    rows = [  # (object_id, frame_id, flux, flux_err, flags): only the first is good
        (10, 1, 1000.0, 10.0, 4),
        (10, 1, 1000.0, 10.0, 1),  # flagged
        (10, 1, -5.0, 10.0, 0),  # negative flux
        (10, 1, 1000.0, 500.0, 0),  # error 0.54 mag > max_err
        (10, 1, 1000.0, nan, 0),  # NaN error
        (10, 2, 1000.0, 10.0, 0),  # frame 2 has no model
        (10, None, 1000.0, 10.0, 0),  # no frame
        (10, 1, 1000.0, 10.0, None),  # no flags
        (None, 1, 1000.0, 10.0, 0),  # not clustered
        (12, 1, 1000.0, 10.0, 0),  # an object in the range but not the unit's
        (99, 1, 1000.0, 10.0, 0),  # an object past the range
    ]
    cols = list(zip(*rows, strict=True))
    table = pa.table(
        {
            "object_id": pa.array(cols[0], pa.int64()),
            "frame_id": pa.array(cols[1], pa.int64()),
            "x": pa.array([50.0] * len(rows), pa.float32()),
            "y": pa.array([0.0] * len(rows), pa.float32()),
            "flux": pa.array(cols[2], pa.float32()),
            "flux_err": pa.array(cols[3], pa.float32()),
            "flags": pa.array(cols[4], pa.int32()),
        }
    )
    path = tmp_path / "m.parquet"
    write_parquet(table, path)
    coeffs = np.zeros((1, 28))
    coeffs[0, :3] = (20.0, 0.5, 0.25)  # Z0 = 20 + 0.5 xn + 0.25 yn
    fm = (np.array([-1, 0, -1]), coeffs, np.array([101.0]), np.array([101.0]), np.array([0.3]), 1)
    cfg = ColourConfig(max_err=0.1, floor_mag=0.005)
    k, x, y, w = colourfit._file_points(str(path), 0, 20, np.array([10, 11]), fm, cfg)
    assert k.tolist() == [0]
    # xn = 2 * 50 / 100 - 1 = 0 and yn = -1, so Z0 = 20 - 0.25
    assert y[0] == pytest.approx(-2.5 * np.log10(1000.0) - 19.75, abs=1e-12)
    e = 1.0857362047581294 * 10.0 / 1000.0
    assert x[0] == 0.3 and w[0] == pytest.approx(1.0 / (e * e + 0.005**2), rel=1e-12)
    assert colourfit._file_points(str(path), 100, 200, np.array([150]), fm, cfg) is None


def test_compiled_points_name_a_bad_file(tmp_path):
    """A file without a column step 1 needs, or one that is not Parquet, gets one InputError that
    names the file and what is wrong, not a pyarrow traceback."""
    import pyarrow as pa

    from lcdb.tableio import write_parquet
    from variability import colourfit

    fm = (np.array([0]), np.zeros((1, 28)), np.ones(1), np.ones(1), np.ones(1), 0)
    no_flags = tmp_path / "no_flags.parquet"
    cols = {"object_id": pa.int64(), "frame_id": pa.int64(), "x": pa.float32()}
    cols |= {"y": pa.float32(), "flux": pa.float32(), "flux_err": pa.float32()}
    write_parquet(pa.table({c: pa.array([1], t) for c, t in cols.items()}), no_flags)
    with pytest.raises(InputError, match=r"no_flags\.parquet: no column flags"):
        colourfit._file_points(str(no_flags), 0, 9, np.array([1]), fm, ColourConfig())
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"not parquet at all")
    with pytest.raises(InputError, match=r"junk\.parquet: not a readable Parquet file"):
        colourfit._file_points(str(junk), 0, 9, np.array([1]), fm, ColourConfig())


def test_compiled_zero_point_equals_the_sql_polynomial():
    """variability.colourfit._z0 (unrolled Horner, orders <= 4 and <= 6) against views.sql's
    z0_poly (the plain sum of terms) at random points, for every order 0..6."""
    import duckdb

    from variability.colourfit import _z0

    rng = np.random.default_rng(5)

    db = duckdb.connect()
    db.execute(sqlfiles.load("views").split("-- The same polynomial in Horner form")[0])
    for order in range(7):
        nterm = (order + 1) * (order + 2) // 2
        c = rng.normal(0, 0.1, nterm)
        padded = np.zeros(28)
        padded[:nterm] = c
        for xn, yn in rng.uniform(-1, 1, (20, 2)):
            want = db.execute("SELECT z0_poly($c, $x, $y)", {"c": list(c), "x": xn, "y": yn})
            # 1e-12: both sum <= 28 terms of size <= ~0.3 in double precision
            assert abs(_z0(padded, xn, yn, order) - want.fetchone()[0]) < 1e-12, (order, xn, yn)
