"""Detector characterisation (``lcdb calib characterize``) on simulated calibration sequences.

Two simulated 128x128 cameras with known truth (lcdb.sim.detector): one with a bimodal gain
population (10% of pixels at +30% gain), one unimodal. Each has 100 bias frames, darks of
1-300 s (three each), a flat pair at each of six levels (the ladder) and a stack of flats at one
level (the per-pixel gain method needs many frames per pixel: with N frames a pixel's gain has a
relative error of about sqrt(2 / (N - 1)), 7% for 400). The unimodal camera is processed in
several row blocks (small memory budget), the bimodal one in a single block.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from ingest.characterize import CharacterizeConfig, characterize
from lcdb.cli import main
from lcdb.errors import InputError
from lcdb.sim import detector as dm

LEVELS = (1000.0, 3000.0, 10000.0, 20000.0, 30000.0, 45000.0)
RATE = 5000.0  # ADU/s of the flat lamp


def write_sequences(out: Path, det: dm.Detector, seed: int, n_stack: int) -> dm.DetectorTruth:
    """Render bias, darks, the flat ladder and a flat stack at 30000 ADU into out/{bias,...}."""
    truth = dm.make_detector_truth(det, np.random.default_rng(seed))
    plan = dm.calibration_plan(100, 3, (1.0, 10.0, 60.0, 300.0), LEVELS, RATE)
    plan += [dm.CalibFrame("FLAT", f"stack-{k:04d}", 6.0, 30000.0) for k in range(n_stack)]
    for kind in ("bias", "dark", "flat"):
        (out / kind).mkdir(parents=True)
    for item, ss in zip(plan, np.random.SeedSequence(seed + 1).spawn(len(plan)), strict=True):
        image = dm.render_calibration(det, truth, item, np.random.default_rng(ss))
        header = fits.Header([("IMAGETYP", item.kind), ("EXPTIME", item.exptime)])
        fits.PrimaryHDU(image, header).writeto(out / item.kind.lower() / f"{item.name}.fits")
    return truth


def run_camera(out: Path, det: dm.Detector, seed: int, n_stack: int, memory_mb: float) -> dict:
    truth = write_sequences(out, det, seed, n_stack)
    config = CharacterizeConfig(progress=False, memory_mb=memory_mb)
    summary = characterize(
        out / "char",
        bias_dir=out / "bias",
        dark_dir=out / "dark",
        flat_dir=out / "flat",
        config=config,
    )
    return {"truth": truth, "summary": summary, "out": out / "char", "n_stack": n_stack}


@pytest.fixture(scope="module")
def bimodal(tmp_path_factory: pytest.TempPathFactory) -> dict:
    det = dm.Detector(nx=128, ny=128, bimodal_gain=True, bimodal_fraction=0.1, bimodal_offset=0.3)
    return run_camera(tmp_path_factory.mktemp("bimodal"), det, 7, 400, 512.0)


@pytest.fixture(scope="module")
def unimodal(tmp_path_factory: pytest.TempPathFactory) -> dict:
    det = dm.Detector(nx=128, ny=128)
    return run_camera(tmp_path_factory.mktemp("unimodal"), det, 11, 300, 16.0)


def _mask(index: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    m = np.zeros(shape[0] * shape[1], bool)
    m[index] = True
    return m.reshape(shape)


def _central(shape: tuple[int, int]) -> tuple[slice, slice]:
    ny, nx = shape
    return slice(ny // 2 - ny // 4, ny // 2 + ny // 4), slice(nx // 2 - nx // 4, nx // 2 + nx // 4)


@pytest.mark.parametrize("camera", ["bimodal", "unimodal"])
def test_per_pixel_gain_within_its_error(camera: str, request: pytest.FixtureRequest) -> None:
    cam = request.getfixturevalue(camera)
    truth, out = cam["truth"], cam["out"]
    with fits.open(out / "gain.fits") as hdul:
        gain, err, best = hdul["PIXEL"].data, hdul["ERR"].data, hdul[0].data
        assert hdul[0].header["GAINSRC"] == "PIXEL"
    measured = np.isfinite(err)
    assert measured.mean() > 0.95  # only flagged pixels lack an estimate of their own
    assert np.array_equal(best[measured], gain[measured])
    pull = (gain - truth.gain)[measured] / err[measured]
    # ~16000 pulls: the std of a unit normal sample is known to 1/sqrt(2N) = 0.6%, its mean to
    # 0.8%; 5% allows for the normal approximation of the variance of a sample variance.
    assert abs(pull.std() - 1) < 0.05
    assert abs(pull.mean()) < 0.05
    # The stated error is the expected one: ~sqrt(2 / (n - 1)) for the stack plus the ladder.
    expected = np.sqrt(2 / (cam["n_stack"] + 6 - 1))
    assert cam["summary"]["gain_pixel"]["median_rel_err"] == pytest.approx(expected, rel=0.1)


def test_conventional_gain_and_read_noise(bimodal: dict, unimodal: dict) -> None:
    for cam in (bimodal, unimodal):
        truth, s = cam["truth"], cam["summary"]
        cen = _central(truth.gain.shape)
        keep = ~_mask(truth.rtn_index, truth.gain.shape)[cen]
        g, flat = truth.gain[cen][keep].astype(float), truth.flat[cen][keep].astype(float)
        # A pair difference measures sum(f/g) / sum(f/g^2) over the region (photons weighted by
        # response); for a bimodal camera it differs from the mean gain by ~2%.
        g_ptc = np.sum(flat / g) / np.sum(flat / g**2)
        assert s["gain_e_per_adu"] == pytest.approx(g_ptc, rel=0.02)
        rn_rms_e = np.sqrt(np.mean(truth.read_noise.astype(float) ** 2))
        assert s["read_noise_e"] == pytest.approx(rn_rms_e, rel=0.05)
    summary = dm.detector_summary(dm.Detector(nx=128, ny=128), unimodal["truth"])
    assert unimodal["summary"]["gain_e_per_adu"] == pytest.approx(
        summary["gain_e_per_adu"], rel=0.02
    )


def test_rtn_pixels_found(bimodal: dict, unimodal: dict) -> None:
    for cam in (bimodal, unimodal):
        truth = cam["truth"]
        planted = _mask(truth.rtn_index, truth.gain.shape)
        found = fits.getdata(cam["out"] / "rtn_pixels.fits").astype(bool)
        assert (found & planted).sum() / planted.sum() >= 0.95
        assert (found & ~planted).sum() / (~planted).sum() < 0.001
        mask = fits.getdata(cam["out"] / "mask.fits")
        assert np.array_equal((mask & 4) > 0, found)
        # products the reduction's calibration index recognises by LCDBPROD
        assert fits.getheader(cam["out"] / "rtn_pixels.fits")["LCDBPROD"] == "rtn"
        assert fits.getheader(cam["out"] / "bad_pixels.fits")["LCDBPROD"] == "badpix"


def test_nonlinearity_recovered(bimodal: dict, unimodal: dict) -> None:
    for cam in (bimodal, unimodal):
        truth, nl = cam["truth"], cam["summary"]["nonlinearity"]
        with fits.open(cam["out"] / "nonlinearity.fits") as hdul:
            cube, c, err = hdul[0].data, hdul["PIXEL_C"].data, hdul["PIXEL_C_ERR"].data
        flagged = fits.getdata(cam["out"] / "mask.fits") > 0
        ok = np.isfinite(err) & ~flagged
        # camera coefficient (mean of the per-pixel fits) within 3 sigma of the truth's mean
        assert abs(nl["c"] - truth.nonlinearity[ok].mean()) < 3 * nl["c_err"]
        pull = (c - truth.nonlinearity)[ok] / err[ok]
        assert abs(pull.std() - 1) < 0.1  # ~16000 pixels; 10% for the linearized propagation
        assert np.allclose(cube[0], 1) and np.allclose(cube[1], -nl["c"], rtol=1e-6)


def test_bimodal_gain_population_detected(bimodal: dict, unimodal: dict) -> None:
    gp = bimodal["summary"]["gain_pixel"]
    assert gp["bimodal"]
    minor = min(gp["populations"], key=lambda p: p["fraction"])
    # 10% planted; the mixture fraction is known to ~0.3% (binomial) plus the overlap
    assert minor["fraction"] == pytest.approx(0.1, abs=0.02)
    high = _mask(bimodal["truth"].high_gain, bimodal["truth"].gain.shape)
    assert minor["gain_e_per_adu"] == pytest.approx(
        np.median(bimodal["truth"].gain[high]), rel=0.02
    )
    assert not unimodal["summary"]["gain_pixel"]["bimodal"]


def test_dark_current_and_hot_pixels(unimodal: dict) -> None:
    truth, dark = unimodal["truth"], unimodal["summary"]["dark"]
    rtn = _mask(truth.rtn_index, truth.gain.shape)
    hot = (truth.dark_current > 0.3) & ~rtn
    cold = truth.dark_current < 0.3
    # camera mean over non-hot pixels: per-pixel noise 0.003 e-/s over 16000 pixels plus a
    # common error from the bias drift between dark sets (~3e-5 e-/s): 10% is a few sigma
    assert dark["mean_e_per_s"] == pytest.approx(truth.dark_current[cold].mean(), rel=0.1)
    bad = fits.getdata(unimodal["out"] / "bad_pixels.fits").astype(bool)
    assert bad[hot].all()
    assert bad.mean() < 0.005


def test_bias_stability_and_fixed_pattern(unimodal: dict) -> None:
    det = dm.Detector()
    bias = unimodal["summary"]["bias"]
    stab, fpn = bias["stability"], bias["fixed_pattern"]
    # frame means scatter by the truth drift (0.03 ADU) and the read noise of 16384 pixels
    expected = np.hypot(det.bias_drift_adu, stab["noise_floor_adu"])
    assert stab["std_adu"] == pytest.approx(expected, rel=0.3)  # 100 frames: 7% + clipping
    # banding amplitudes are std of 128 draws (6% error); DSNU from 16000 pixels
    assert fpn["row_banding_adu"] == pytest.approx(det.fpn_row_adu, rel=0.25)
    assert fpn["column_banding_adu"] == pytest.approx(det.fpn_col_adu, rel=0.25)
    assert fpn["dsnu_adu"] == pytest.approx(det.dsnu_adu, rel=0.2)


def test_products_and_plots(bimodal: dict) -> None:
    out = bimodal["out"]
    summary = json.loads((out / "summary.json").read_text())  # strict JSON: no NaN tokens
    for name in (
        "gain",
        "read_noise",
        "dark_current",
        "bad_pixels",
        "rtn_pixels",
        "mask",
        "master_bias",
        "nonlinearity",
    ):
        assert f"{name}.fits" in summary["files"]
        assert fits.getdata(out / f"{name}.fits").shape[-2:] == (128, 128)
    for name in (
        "gain_hist",
        "read_noise_hist",
        "linearity",
        "ptc",
        "bias_stability",
        "dark_current_hist",
        "fixed_pattern",
        "anomalous_pixels",
    ):
        assert f"{name}.png" in summary["plots"]
        assert (out / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert summary["linearity"]["r2"] > 0.9999


def test_config_lists_every_broken_rule() -> None:
    with pytest.raises(ValueError) as exc:
        CharacterizeConfig(central_fraction=2.0, clip_sigma=0.0, memory_mb=1.0)
    message = str(exc.value)
    assert "central_fraction" in message and "clip_sigma" in message and "memory_mb" in message


# --- bad input and the command line ------------------------------------------------------


def _write(
    path: Path,
    shape: tuple[int, int] = (16, 16),
    exptime: float | None = 0.0,
    level: float = 500.0,
    seed: int = 0,
) -> None:
    rng = np.random.default_rng(seed)
    data = (level + rng.normal(0, 4, shape)).astype(np.uint16)
    header = fits.Header() if exptime is None else fits.Header([("EXPTIME", exptime)])
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data, header).writeto(path)


def _small_set(root: Path) -> None:
    for k in range(4):
        _write(root / "bias" / f"b{k}.fits", seed=k)
    for k, t in enumerate((1.0, 1.0, 2.0, 2.0)):
        _write(root / "flat" / f"f{k}.fits", exptime=t, level=500 + 1000 * t, seed=10 + k)


def _main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    return main(argv)


def _cli_args(root: Path) -> list[str]:
    return ["calib", "characterize", "--bias", str(root / "bias"), "--flats", str(root / "flat"),
            "--out", str(root / "out"), "--no-progress"]  # fmt: skip


def test_mismatched_shape_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _small_set(tmp_path)
    _write(tmp_path / "flat" / "odd.fits", shape=(16, 20), exptime=1.0)
    with pytest.raises(InputError, match=r"odd\.fits.*shape 20x16"):
        characterize(
            tmp_path / "out",
            bias_dir=tmp_path / "bias",
            flat_dir=tmp_path / "flat",
            config=CharacterizeConfig(progress=False, plots=False),
        )
    argv = _cli_args(tmp_path)
    assert _main(argv, monkeypatch) == 1


def test_missing_exposure_time_names_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _small_set(tmp_path)
    _write(tmp_path / "flat" / "noexp.fits", exptime=None, level=2000)
    with pytest.raises(InputError, match=r"noexp\.fits.*EXPTIME"):
        characterize(
            tmp_path / "out",
            bias_dir=tmp_path / "bias",
            flat_dir=tmp_path / "flat",
            config=CharacterizeConfig(progress=False, plots=False),
        )
    argv = _cli_args(tmp_path)
    assert _main(argv, monkeypatch) == 1
    assert "noexp.fits" in capsys.readouterr().err


def test_cli_runs_and_usage_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _small_set(tmp_path)
    bias, flat, out = str(tmp_path / "bias"), str(tmp_path / "flat"), str(tmp_path / "out")
    base = ["calib", "characterize", "--out", out, "--no-progress", "--no-plots"]
    assert _main([*base, "--bias", bias, "--flats", flat], monkeypatch) == 0
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["gain_e_per_adu"] > 0
    assert _main([*base, "--bias", bias], monkeypatch) == 2  # summary.json exists
    assert _main([*base, "--bias", bias, "--overwrite"], monkeypatch) == 0
    assert _main(base, monkeypatch) == 2  # nothing to characterize
    assert _main([*base, "--flats", flat, "--overwrite"], monkeypatch) == 2  # flats need bias
    assert _main([*base, "--bias", str(tmp_path / "nope")], monkeypatch) == 2
    bad = [*base, "--bias", bias, "--overwrite", "--central-fraction", "3"]
    assert _main(bad, monkeypatch) == 2
    assert _main(["calib", "characterize", "--bias", bias], monkeypatch) == 2  # --out missing
