"""lcdb plot: the PNGs exist, are images of a sensible size, and show the data they were given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
from matplotlib.image import imread
from test_export import run_cli, searched_store

from lcdb.errors import InputError
from lcdb.plots import plot_colours, plot_diagram, plot_lightcurve

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_width: int = 600, min_height: int = 300) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    assert 10_000 < len(data) < 2_000_000, f"{path}: {len(data)} bytes"
    height, width = imread(path).shape[:2]
    assert width >= min_width and height >= min_height


@pytest.fixture(scope="module")
def searched(tmp_path_factory) -> dict:
    return searched_store(tmp_path_factory)


# -- synthetic data -------------------------------------------------------------------------------
def _noise(mag: np.ndarray) -> np.ndarray:
    return 0.006 + 0.08 * 10 ** (0.4 * (mag - 14.0))


@pytest.fixture
def diagram_data() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    rng = np.random.default_rng(1)
    n = 500
    mag = rng.uniform(8, 14, n)
    std = _noise(mag) * np.exp(rng.normal(0, 0.15, n))
    std[:5] *= 12  # five variables
    eta = rng.normal(2.0, 0.2, n)
    eta[:5] = 0.2
    ids = np.arange(1000, 1000 + n)
    varstats = pl.DataFrame(
        {
            "object_id": ids,
            "mean_mag": mag,
            "det_mag": mag + 0.1,
            "std": std,
            "iqr": 1.349 * std,
            "eta": eta,
        }
    )
    # rows the diagram cannot draw: no magnitude, zero scatter
    bad = pl.DataFrame(
        {"object_id": [1, 2], "mean_mag": [None, 10.0], "det_mag": [None, 10.1], "std": [0.01, 0.0]}
    ).with_columns(iqr=pl.col("std"), eta=pl.lit(2.0))
    varstats = pl.concat([varstats, bad], how="vertical_relaxed")
    grid = np.linspace(8, 14, 40)
    curve = pl.concat(
        pl.DataFrame(
            {
                "index": [index] * grid.size,
                "mag": grid + 0.1,
                "log_trend": np.log10(scale * _noise(grid)) if index != "inv_eta" else -0.3,
                "log_spread": np.full(grid.size, 0.07),
                "threshold": np.full(grid.size, 4.0),
            }
        )
        for index, scale in (("std", 1.0), ("iqr", 1.349), ("inv_eta", 1.0))
    )
    candidates = pl.DataFrame(
        {
            "object_id": ids[:5],
            "index": ["std"] * 5,
            "known": [True, True, False, False, None],
        }
    )
    return varstats, curve, candidates


# -- the plot functions ---------------------------------------------------------------------------
def test_diagram_draws_what_it_is_given(diagram_data, tmp_path):
    varstats, curve, candidates = diagram_data
    path = tmp_path / "d.png"
    fig = plot_diagram(varstats, curve, candidates, path, title="before refinement")
    assert_png(path)
    ax = fig.axes[0]
    assert ax.get_title() == "before refinement" and ax.get_yscale() == "log"
    objects, new, known = (c.get_offsets() for c in ax.collections[:3])
    good = varstats.filter(pl.col("std") > 0).drop_nulls()
    assert objects.shape == (500, 2)  # the two undrawable rows are left out
    np.testing.assert_allclose(objects[:, 0], good["det_mag"])  # the noise curve's abscissa
    np.testing.assert_allclose(objects[:, 1], good["std"])
    assert len(new) == 3 and len(known) == 2  # a null `known` counts as not known
    np.testing.assert_allclose(sorted(known[:, 1]), sorted(good["std"][:2]))
    std_curve = curve.filter(pl.col("index") == "std")
    trend, line = ax.lines[0], ax.lines[1]
    np.testing.assert_allclose(trend.get_ydata(), 10 ** std_curve["log_trend"])
    np.testing.assert_allclose(
        line.get_ydata(), 10 ** (std_curve["log_trend"] + 4.0 * std_curve["log_spread"])
    )
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "objects (500)" in labels and "known variables (2)" in labels


def test_diagram_other_indices_and_no_curve(diagram_data, tmp_path):
    varstats, curve, candidates = diagram_data
    fig = plot_diagram(varstats, curve, candidates, tmp_path / "eta.png", index="inv_eta")
    y = fig.axes[0].collections[0].get_offsets()[:, 1]
    np.testing.assert_allclose(y, 1.0 / varstats.drop_nulls()["eta"])  # std = 0 is fine here
    # without det_mag the x axis is the mean magnitude; without a curve only points are drawn
    plain = varstats.drop("det_mag")
    fig = plot_diagram(plain, curve.clear(), candidates, tmp_path / "iqr.png", index="iqr")
    assert_png(tmp_path / "iqr.png")
    x = fig.axes[0].collections[0].get_offsets()[:, 0]
    np.testing.assert_allclose(x, plain.filter(pl.col("std") > 0).drop_nulls()["mean_mag"])
    assert not fig.axes[0].lines
    with pytest.raises(InputError, match="unknown index"):
        plot_diagram(varstats, curve, candidates, tmp_path / "x.png", index="chi2")
    with pytest.raises(InputError, match="no object"):
        plot_diagram(varstats.clear(), curve, candidates, tmp_path / "x.png")


def _lightcurve(n: int = 120, period: float = 0.7) -> pl.DataFrame:
    rng = np.random.default_rng(2)
    mjd = np.sort(60000 + rng.uniform(0, 30, n))
    mag = 11 + 0.3 * np.sin(2 * np.pi * mjd / period) + rng.normal(0, 0.02, n)
    flags = np.zeros(n, np.int32)
    flags[:3] = 16
    mag[0] = 5.0  # a wild flagged point
    status = ["ok"] * n
    status[5] = "rejected"
    return pl.DataFrame(
        {
            "mjd": mjd,
            "mag": mag,
            "mag_err": np.full(n, 0.02),
            "mag_instr": mag - 20.0,
            "z0": np.full(n, -20.0),
            "flags": flags,
            "frame_status": status,
        }
    )


def test_lightcurve_raw_and_folded(tmp_path):
    lc = _lightcurve()
    path = tmp_path / "lc.png"
    fig = plot_lightcurve(lc, path, period=0.7, title="a star")
    assert_png(path, min_height=500)
    top, folded = fig.axes
    good = lc.filter((pl.col("flags") == 0) & (pl.col("frame_status") == "ok"))
    x = top.containers[0].lines[0].get_xdata()
    np.testing.assert_allclose(x, good["mjd"] - 60000.0)
    np.testing.assert_allclose(top.containers[0].lines[0].get_ydata(), good["mag"])
    lo = min(top.get_ylim())
    assert top.get_ylim()[0] > top.get_ylim()[1]  # magnitudes: bright at the top
    bad = top.lines[-1]
    assert len(bad.get_ydata()) == 4 and lo <= min(bad.get_ydata())  # the 5 mag one is clipped
    phase = folded.containers[0].lines[0].get_xdata()
    assert len(phase) == 2 * good.height and phase.min() >= 0 and phase.max() < 2
    assert "P = 0.7 d" in folded.get_xlabel()
    single = plot_lightcurve(lc, tmp_path / "one.png")
    assert len(single.axes) == 1
    assert_png(tmp_path / "one.png")


def test_lightcurve_without_colour_and_empty(tmp_path):
    lc = _lightcurve().with_columns(mag=pl.lit(None, pl.Float64))
    fig = plot_lightcurve(lc, tmp_path / "instr.png")
    assert "instr. - Z0" in fig.axes[0].get_ylabel()
    y = fig.axes[0].containers[0].lines[0].get_ydata()
    good = lc.filter((pl.col("flags") == 0) & (pl.col("frame_status") == "ok"))
    np.testing.assert_allclose(y, good["mag_instr"] - good["z0"])
    with pytest.raises(InputError, match="no points"):
        plot_lightcurve(lc.clear(), tmp_path / "none.png")


def test_colours_panels_and_rms(tmp_path):
    rng = np.random.default_rng(3)
    n = 200
    v_cat, bv_cat = rng.uniform(7, 11.5, n), rng.uniform(0, 1.6, n)
    df = pl.DataFrame(
        {
            "v": v_cat + rng.normal(0, 0.03, n),
            "bv": bv_cat + rng.normal(0, 0.05, n),
            "v_cat": v_cat,
            "bv_cat": bv_cat,
        }
    )
    df = pl.concat([df, pl.DataFrame({"v": [None], "bv": [0.5], "v_cat": [9.0], "bv_cat": [0.5]})])
    path = tmp_path / "colours.png"
    fig = plot_colours(df, path)
    assert_png(path, min_height=600)
    top, bottom = fig.axes
    ok = df.drop_nulls()
    np.testing.assert_allclose(top.collections[0].get_offsets()[:, 1], ok["v"] - ok["v_cat"])
    np.testing.assert_allclose(bottom.collections[0].get_offsets()[:, 0], ok["bv_cat"])
    rms_v = float(np.sqrt(np.mean((ok["v"] - ok["v_cat"]).to_numpy() ** 2)))
    rms_bv = float(np.sqrt(np.mean((ok["bv"] - ok["bv_cat"]).to_numpy() ** 2)))
    assert f"rms {rms_v:.3f}" in top.get_legend().get_texts()[0].get_text()
    assert f"{n} objects" in top.get_legend().get_texts()[0].get_text()
    assert f"rms {rms_bv:.3f}" in bottom.get_legend().get_texts()[0].get_text()
    one_to_one = bottom.lines[0]
    np.testing.assert_allclose(one_to_one.get_xdata(), one_to_one.get_ydata())
    with pytest.raises(InputError):
        plot_colours(df.clear(), tmp_path / "none.png")


# -- the command line on a store ------------------------------------------------------------------
def test_plot_commands(searched, tmp_path):
    store, path, out = searched["store"], searched["path"], tmp_path / "png"
    base = ["-q", "plot"]
    assert run_cli([*base, "diagram", "--store", path, "--out", str(out)]) == 0
    assert_png(out / "diagram-std.png")
    label = ["--index", "iqr", "--label", "After refine!"]
    assert run_cli([*base, "diagram", "--store", path, "--out", str(out), *label]) == 0
    assert_png(out / "diagram-iqr-after-refine.png")
    lc = [*base, "lightcurve", "--store", path, "--out", str(out)]
    assert run_cli([*lc, "--candidates", "2"]) == 0
    top = store.sql(
        "SELECT object_id FROM candidates GROUP BY object_id ORDER BY max(score) DESC LIMIT 2"
    )
    for oid in top.column(0).to_pylist():
        assert_png(out / f"lc-{oid}.png", min_height=500)  # candidates have periods: 2 panels
    oid = store.sql("SELECT object_id FROM varstats ORDER BY n DESC LIMIT 1").column(0)[0]
    assert run_cli([*lc, "--object", str(oid), "--all"]) == 0
    assert_png(out / f"lc-{oid}.png")
    assert run_cli([*base, "colours", "--store", path, "--out", str(out)]) == 0
    assert_png(out / "colours.png", min_height=600)


def test_plot_bad_input(searched, tmp_path, store, frames_dir, capsys):
    from ingest import IngestOptions, ingest_paths

    out = ["--out", str(tmp_path)]
    lc = ["plot", "lightcurve", "--store", searched["path"], *out]
    assert run_cli([*lc, "--object", "12345"]) == 1
    assert "not in the store: 12345" in capsys.readouterr().err
    assert run_cli(lc) == 2
    assert run_cli([*lc, "--object", "1", "--candidates", "3"]) == 2
    assert run_cli(["plot", "diagram", "--store", searched["before"], *out]) == 1
    assert "run `lcdb find-variables`" in capsys.readouterr().err
    ingest_paths(store, [frames_dir], IngestOptions(progress=False))
    assert run_cli(["plot", "colours", "--store", str(store.root), *out]) == 1
    assert "run `lcdb cluster` first" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.png"))
