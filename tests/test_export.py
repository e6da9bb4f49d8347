"""lcdb export: every format reads back equal with units; light-curve selection and binning."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.table import Table

import lcdb
from lcdb import cli, export, schema
from lcdb.units import column_info

SUFFIX = {"fits": ".fits", "votable": ".vot", "ecsv": ".ecsv", "csv": ".csv", "parquet": ".parquet"}


# -- a small store, searched by `lcdb find-variables` --------------------------------------------
def build_store(root: Path, frames: int = 30, stars: int = 800, seed: int = 3) -> lcdb.Store:
    """Simulate a survey, then ingest, cluster, calibrate and fit colours (no variability yet).

    Also writes ``root/known.csv``: the simulated variables that are in the reference catalogue,
    as a catalogue of known variables for ``find-variables --known``.
    """
    from ingest import IngestOptions, ingest_paths, load_refcat
    from lcdb.runner import RunnerOptions
    from lcdb.sim.survey import SurveyConfig, simulate_survey
    from variability.calibrate import calibrate
    from variability.cluster import ClusterConfig, cluster
    from variability.colours import reconstruct_colours

    quiet = RunnerOptions(progress=False)
    config = SurveyConfig(n_frames=frames, n_stars=stars, seed=seed)
    sim = simulate_survey(config, root / "survey", progress=False)
    store = lcdb.init_store(root / "store")
    load_refcat(store, sim.refcat_path)
    ingest_paths(store, [sim.frames_dir], IngestOptions(progress=False))
    cluster(store, ClusterConfig(store.config.match_radius_arcsec, store.config.order), quiet)
    calibrate(store, options=quiet)
    reconstruct_colours(store)
    truth = pl.read_parquet(root / "survey" / "truth" / "stars.parquet")
    truth.filter((pl.col("var_type") != "constant") & pl.col("in_refcat")).select(
        "ra", "dec", pl.col("name").fill_null("SIM"), pl.col("var_type").alias("type"), "period"
    ).write_csv(root / "known.csv")
    return store


def find_variables(store: lcdb.Store, known: Path) -> None:
    """``lcdb find-variables`` with a lower threshold so the small survey gives candidates."""
    from variability.findvars import FindConfig
    from variability.findvars import find_variables as run

    run(store, FindConfig(threshold=4.0, min_obs=10, known=known))


def run_cli(argv: list[str]) -> int:
    """``lcdb.cli.main`` (logging, exit codes) with a parser of the export and plot commands only,
    so these tests do not depend on the other command modules."""
    modules = cli._COMMAND_MODULES
    cli._COMMAND_MODULES = ("export", "plot")
    try:
        return cli.main(argv)
    finally:
        cli._COMMAND_MODULES = modules


def searched_store(tmp_path_factory) -> dict:
    """The store after find-variables, and a copy taken before it (no candidates).

    Built once per test session (test_plots.py uses it too) under the session's base temp
    directory; the tests only read it.
    """
    root = tmp_path_factory.getbasetemp() / "searched-store"
    if not (root / "done").exists():
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        store = build_store(root)
        shutil.copytree(root / "store", root / "before")
        find_variables(store, root / "known.csv")
        (root / "done").touch()
    store = lcdb.open(root / "store")
    assert store.count("candidates") >= 2, "the test survey should give a few candidates"
    return {"store": store, "path": str(store.root), "before": str(root / "before")}


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> dict:
    return searched_store(tmp_path_factory)


# -- reading back --------------------------------------------------------------------------------
def read_back(path: Path, fmt: str) -> tuple[dict[str, list], dict[str, str | None]]:
    """Columns (masked -> None) and units of an exported file, read as a user would."""
    if fmt == "parquet":
        t = pq.read_table(path)
        units = {f.name: (f.metadata or {}).get(b"unit", b"").decode() or None for f in t.schema}
        return {n: t.column(n).to_pylist() for n in t.column_names}, units
    if fmt == "csv":
        df = pl.read_csv(path, infer_schema_length=None)
        return {c: df[c].to_list() for c in df.columns}, {}
    t = Table.read(path, format={"votable": "votable", "fits": "fits", "ecsv": "ascii.ecsv"}[fmt])
    cols = {}
    for name in t.colnames:
        c = t[name]
        values = c.tolist()
        if hasattr(c, "mask") and np.any(c.mask):
            values = [None if m else v for v, m in zip(values, np.asarray(c.mask), strict=True)]
        cols[name] = [v.decode() if isinstance(v, bytes) else v for v in values]
    return cols, {n: (str(t[n].unit) if t[n].unit is not None else None) for n in t.colnames}


def assert_same(expected: pa.Table, got: dict[str, list], fmt: str) -> None:
    """Same columns, rows and values; float32 columns compared after rounding to float32."""
    assert list(got) == expected.column_names
    for field in expected.schema:
        want, have = expected.column(field.name).to_pylist(), got[field.name]
        assert len(have) == len(want), field.name
        if pa.types.is_floating(field.type):
            dtype = np.float32 if field.type == pa.float32() else np.float64
            w = np.array([np.nan if v is None else v for v in want], dtype)
            h = np.array([np.nan if v is None else v for v in have], float).astype(dtype)
            np.testing.assert_array_equal(h, w, err_msg=f"{fmt}: {field.name}")
        elif pa.types.is_string(field.type) and fmt in ("fits", "votable"):
            # FITS and VOTable read a null string back as empty (documented in write_table)
            assert [v or "" for v in have] == [v or "" for v in want], field.name
        elif pa.types.is_boolean(field.type) and fmt == "fits":
            # FITS logical columns carry no null: a null boolean is written as False
            assert [bool(v) for v in have] == [bool(v) for v in want], field.name
        else:
            assert have == want, f"{fmt}: {field.name}"


def assert_units(table: str, got_units: dict[str, str | None]) -> None:
    import astropy.units as u

    checked = 0
    for name, unit in got_units.items():
        info = column_info(table, name)
        if info is not None and info.unit:
            assert unit is not None and u.Unit(unit) == u.Unit(info.unit), name
            checked += 1
    assert checked >= 3


# -- tests ---------------------------------------------------------------------------------------
def test_every_exported_column_has_a_description():
    binned = ("mjd_min", "mjd_max", "mag_err_scatter", "n_points")
    names = {
        "candidates": schema.CANDIDATES.names,
        "objects": schema.OBJECTS.names + schema.VARSTATS.names,
        "lightcurves": export.LIGHTCURVE_COLUMNS,
        "lightcurves_binned": ("object_id", "mjd", "mag", "mag_err", *binned),
    }
    for table, cols in names.items():
        for col in cols:
            info = column_info(table, col)
            assert info is not None and info.description, (table, col)
    assert column_info("lightcurves_binned", "mjd").description.startswith("mean")
    assert column_info("lightcurves", "mjd").unit == "d"


@pytest.mark.parametrize("fmt", ["fits", "votable", "ecsv", "csv", "parquet"])
def test_candidates_read_back_equal_with_units(searched, tmp_path, fmt):
    out = tmp_path / f"candidates{SUFFIX[fmt]}"
    assert run_cli(["-q", "export", "candidates", "--store", searched["path"], "-o", str(out)]) == 0
    expected = searched["store"].sql(
        "SELECT * EXCLUDE (pixel) FROM candidates ORDER BY score DESC NULLS LAST, object_id"
    )
    assert expected.num_rows >= 2
    cols, units = read_back(out, fmt)
    assert_same(expected, cols, fmt)
    if fmt != "csv":  # CSV is plain
        assert_units("candidates", units)
    if fmt in ("fits", "votable", "ecsv"):
        t = Table.read(out)
        assert t["score"].description == column_info("candidates", "score").description
    if fmt == "parquet":  # the VOParquet header names the same units (TOPCAT reads it)
        from astropy.io.votable import parse

        meta = pq.read_schema(out).metadata
        assert meta[b"IVOA.VOTable-Parquet.version"] == b"1.0"
        vot = parse(pa.BufferReader(meta[b"IVOA.VOTable-Parquet.content"]))
        fields = {f.name: f for f in vot.get_first_table().fields}
        assert list(fields) == expected.column_names
        assert str(fields["period"].unit) == "d" and fields["ra"].ucd == "pos.eq.ra;meta.main"
    if fmt == "fits":  # descriptions as TCOMMn too (TOPCAT)
        from astropy.io import fits

        header = fits.getheader(out, 1)
        i = expected.column_names.index("known_sep_arcsec") + 1
        assert header[f"TCOMM{i}"] == column_info("candidates", "known_sep_arcsec").description
        assert header["EXTNAME"] == "CANDIDATES"


def test_objects_export_filters_and_stats(searched, tmp_path):
    store, out = searched["store"], tmp_path / "objects.ecsv"
    argv = ["-q", "export", "objects", "--store", searched["path"], "-o", str(out)]
    assert run_cli([*argv, "--min-obs", "20", "--with-colours"]) == 0
    cols, units = read_back(out, "ecsv")
    expected = store.sql(
        "SELECT * EXCLUDE (pixel) FROM objects WHERE n_obs >= 20 AND v IS NOT NULL "
        "AND bv IS NOT NULL ORDER BY object_id"
    )
    assert 0 < expected.num_rows < store.count("objects")
    assert_same(expected, cols, "ecsv")
    assert_units("objects", units)
    assert run_cli([*argv, "--with-stats"]) == 0
    t = Table.read(out)
    assert len(t) == store.count("objects")
    assert {"std", "iqr", "eta", "score"} <= set(t.colnames)
    assert t["std"].unit == "mag" and t["time_span"].unit == "d"


def test_lightcurves_by_id_position_and_file(searched, tmp_path):
    store = searched["store"]
    ids = store.sql("SELECT object_id FROM varstats WHERE n >= 20 ORDER BY object_id LIMIT 2")
    a, b = ids.column(0).to_pylist()
    base = ["-q", "export", "lightcurves", "--store", searched["path"]]
    out = tmp_path / "lc.parquet"
    assert run_cli([*base, "-o", str(out), "--object", str(a), str(b)]) == 0
    got = pq.read_table(out)
    assert got.column_names == list(export.LIGHTCURVE_COLUMNS)
    good = store.sql(
        "SELECT count(*) FROM lightcurves WHERE object_id IN ($a, $b) "
        "AND frame_status = 'ok' AND flags = 0",
        {"a": a, "b": b},
    ).column(0)[0]
    assert got.num_rows == good.as_py()
    assert set(got.column("object_id").to_pylist()) == {a, b}
    assert set(got.column("frame_status").to_pylist()) == {"ok"}
    assert set(got.column("flags").to_pylist()) == {0}
    mjd = got.filter(pa.compute.equal(got["object_id"], a)).column("mjd").to_numpy()
    assert np.all(np.diff(mjd) >= 0)
    # --all: every measurement
    assert run_cli([*base, "-o", str(out), "--object", str(a), "--all"]) == 0
    n_all = store.sql("SELECT count(*) FROM lightcurves WHERE object_id = $a", {"a": a})
    assert pq.read_table(out).num_rows == n_all.column(0)[0].as_py()
    # by position: the object at its own position; by ids file; one file per object
    ra, dec = (
        store.sql("SELECT ra, dec FROM objects WHERE object_id = $a", {"a": a})
        .to_pylist()[0]
        .values()
    )
    pos = tmp_path / "pos.csv"
    assert run_cli([*base, "-o", str(pos), "--ra", str(ra), "--dec", str(dec)]) == 0
    assert set(pl.read_csv(pos)["object_id"]) == {a}
    ids_file = tmp_path / "ids.txt"
    ids_file.write_text(f"# two objects\n{a}\n\n{b}  # second\n")
    folder = tmp_path / "curves"
    fmt = ["--format", "votable"]
    assert run_cli([*base, "-o", str(folder), "--ids-file", str(ids_file), *fmt]) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{a}.vot", f"{b}.vot"])
    t = Table.read(folder / f"{a}.vot")
    assert set(t["object_id"]) == {a} and t["mjd"].unit == "d" and t["mag"].unit == "mag"
    binned = tmp_path / "binned.ecsv"
    assert run_cli([*base, "-o", str(binned), "--object", str(a), "--bin", "3"]) == 0
    t = Table.read(binned)
    assert t["mjd"].description == column_info("lightcurves_binned", "mjd").description
    assert set(t["n_points"][:-1]) == {3}


def test_candidates_with_lightcurves_and_binning(searched, tmp_path):
    store = searched["store"]
    cands = store.sql("SELECT DISTINCT object_id FROM candidates").column(0).to_pylist()
    base = ["-q", "export", "candidates", "--store", searched["path"]]
    folder = tmp_path / "lcs"
    out = tmp_path / "c.fits"
    assert run_cli([*base, "-o", str(out), "--lightcurves", str(folder)]) == 0
    assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.fits" for i in cands)
    one = tmp_path / "binned.ecsv"
    assert run_cli([*base, "-o", str(out), "--lightcurves", str(one), "--bin", "5"]) == 0
    t = Table.read(one)
    # binning needs the calibrated mag: candidates without a colour have none (null mag)
    raw = pl.from_arrow(export.lightcurves(store, cands)).filter(pl.col("mag").is_not_null())
    assert set(t["object_id"]) == set(raw["object_id"]) and len(set(t["object_id"])) >= 2
    assert t["mag_err_scatter"].unit == "mag" and t["n_points"].max() == 5
    assert int(np.sum(t["n_points"])) == raw.height
    assert t["mjd"].description == column_info("lightcurves_binned", "mjd").description


def test_stdout(searched, capsysbinary):
    argv = ["-q", "export", "candidates", "--store", searched["path"], "-o", "-"]
    assert run_cli([*argv, "--format", "csv"]) == 0
    text = capsysbinary.readouterr().out.decode()
    assert text.splitlines()[0].startswith("object_id,ra,dec,")
    assert len(text.splitlines()) == searched["store"].count("candidates") + 1
    assert run_cli(argv) == 2  # stdout needs --format


def test_bad_input(searched, tmp_path, store, frames_dir, capsys):
    from ingest import IngestOptions, ingest_paths

    path = searched["path"]
    assert run_cli(["export", "candidates", "--store", path, "-o", str(tmp_path / "c.xlsx")]) == 2
    assert "give --format" in capsys.readouterr().err
    out = str(tmp_path / "c.fits")
    assert run_cli(["export", "candidates", "--store", path, "-o", out, "--format", "xls"]) == 2
    assert "unknown format 'xls'" in capsys.readouterr().err
    lc = ["export", "lightcurves", "--store", path, "-o", out]
    assert run_cli([*lc, "--object", "12345"]) == 1
    assert "not in the store: 12345" in capsys.readouterr().err
    assert run_cli([*lc, "--object", "1", "--ra", "10", "--dec", "20"]) == 2
    assert run_cli([*lc, "--object", "1", "--bin", "3", "--all"]) == 2
    assert run_cli([*lc, "--ra", "10", "--dec", "20", "--radius", "1"]) == 1
    assert "no object within 1 arcsec" in capsys.readouterr().err
    before = ["export", "candidates", "--store", searched["before"], "-o", out]
    assert run_cli(before) == 1
    assert "no candidates (run `lcdb find-variables` first)" in capsys.readouterr().err
    ingest_paths(store, [frames_dir], IngestOptions(progress=False))
    assert run_cli(["export", "objects", "--store", str(store.root), "-o", out]) == 1
    assert "run `lcdb cluster` first" in capsys.readouterr().err


# -- binning (pure) ------------------------------------------------------------------------------
def _lc(mags, errs, oid=1, t0=60000.0, **extra) -> pl.DataFrame:
    n = len(mags)
    return pl.DataFrame(
        {
            "object_id": [oid] * n,
            "mjd": t0 + np.arange(n, dtype=float),
            "mag": np.asarray(mags, float),
            "mag_err": np.asarray(errs, float),
            "flags": extra.get("flags", [0] * n),
            "frame_status": extra.get("frame_status", ["ok"] * n),
        }
    )


def test_binning_means_errors_and_partial_last_bin():
    mags = np.arange(10, dtype=float)
    lc = _lc(mags, [0.1] * 10)
    b = export.bin_lightcurves(lc, 4)
    assert b["n_points"].to_list() == [4, 4, 2]  # the incomplete last bin is kept by default
    np.testing.assert_allclose(b["mag"], [1.5, 5.5, 8.5])
    np.testing.assert_allclose(b["mjd"], 60000.0 + np.array([1.5, 5.5, 8.5]))
    np.testing.assert_allclose(b["mjd_min"], 60000.0 + np.array([0, 4, 8]))
    np.testing.assert_allclose(b["mjd_max"], 60000.0 + np.array([3, 7, 9]))
    # equal errors: sqrt(N) * 0.1 / N = 0.1 / sqrt(N)
    np.testing.assert_allclose(b["mag_err"], [0.05, 0.05, 0.1 / np.sqrt(2)])
    np.testing.assert_allclose(b["mag_err_scatter"], [np.std([0, 1, 2, 3], ddof=1) / 2] * 2 + [0.5])
    dropped = export.bin_lightcurves(lc, 4, keep_partial=False)
    assert dropped["n_points"].to_list() == [4, 4]
    one = export.bin_lightcurves(lc, 1)
    np.testing.assert_allclose(one["mag"], mags)
    np.testing.assert_allclose(one["mag_err"], 0.1)
    assert one["mag_err_scatter"].null_count() == 10


def test_binning_unequal_errors_bad_points_and_objects():
    lc = pl.concat(
        [
            _lc([10.0, 11.0, 12.0], [0.3, 0.4, 0.12], oid=7),
            _lc(
                [5.0, 99.0, 6.0, 98.0, None, 7.0],
                [0.1, 0.1, 0.1, 0.1, 0.1, 0.1],
                oid=3,
                flags=[0, 16, 0, 0, 0, 0],
                frame_status=["ok", "ok", "ok", "rejected", "ok", "ok"],
            ),
        ]
    )
    b = export.bin_lightcurves(lc, 3)
    assert b["object_id"].to_list() == [3, 7]  # bins never mix objects
    np.testing.assert_allclose(b["mag"], [6.0, 11.0])  # flagged, rejected, null mag dropped
    np.testing.assert_allclose(b["mag_err"][1], np.sqrt(0.09 + 0.16 + 0.0144) / 3)


def test_binning_errors_shrink_as_sqrt_n():
    rng = np.random.default_rng(5)
    sigma, n = 0.02, 16
    lc = _lc(12 + rng.normal(0, sigma, 16 * 400), [sigma] * (16 * 400))
    b = export.bin_lightcurves(lc, n)
    np.testing.assert_allclose(b["mag_err"], sigma / np.sqrt(n))
    # the scatter-based error agrees on average, and so does the scatter of the bin means
    assert abs(b["mag_err_scatter"].mean() / (sigma / np.sqrt(n)) - 1) < 0.05
    assert abs(np.std(b["mag"].to_numpy()) / (sigma / np.sqrt(n)) - 1) < 0.1
    with pytest.raises(lcdb.UsageError):
        export.bin_lightcurves(lc, 0)
