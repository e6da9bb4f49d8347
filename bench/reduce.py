"""Benchmark of the per-frame reduction (``lcdb reduce``): seconds and peak memory per stage.

For each size it simulates one raw frame (``lcdb.sim.pixels``; cached in the work directory),
writes calibration masters from the simulator's truth maps (dark = bias pattern + dark current,
flat, nonlinearity cube, bad-pixel and RTN maps: the reduction reads them like any masters),
loads the field's stars as the reference catalogue of a store, and reduces the frame in a fresh
process so its peak resident memory (``ru_maxrss``) is its own. It prints the seconds of each
stage (calibrate, masks, photometry, astrometry, write), the peak memory after each stage, and
with ``--jobs N`` the throughput of a pool of N workers over 2N copies of the frame. ``--stack``
also times a streamed master bias of that many frames of the size.

    python bench/reduce.py                 # a 2560x2160 Mini-MegaTORTORA-like frame
    python bench/reduce.py --full          # also a 9576x6388 Mini-SiTian frame, ~50,000 stars
    python bench/reduce.py --full --jobs 2 --stack 10
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

SIZES = {
    "mmt": {"nx": 2560, "ny": 2160, "stars": 15000, "pixel_scale": 14.0, "exptime": 20.0},
    "mst": {"nx": 9576, "ny": 6388, "stars": 80000, "pixel_scale": 0.862, "exptime": 60.0},
}


def simulate(work: Path, case: dict, seed: int) -> Path:
    """One raw frame and the truth (skipped when ``work`` already holds it)."""
    from lcdb.sim.detector import Detector
    from lcdb.sim.pixels import PixelSimConfig, simulate_frames

    if (work / "science").is_dir() and any((work / "science").glob("*.fits")):
        return work
    config = PixelSimConfig(
        detector=Detector(nx=case["nx"], ny=case["ny"]),
        n_stars=case["stars"],
        n_frames=1,
        calib=False,
        seed=seed,
        pixel_scale=case["pixel_scale"],
        exptime=case["exptime"],
        progress=False,
    )
    t0 = time.perf_counter()
    simulate_frames(config, work, overwrite=True)
    print(f"  simulated in {time.perf_counter() - t0:.1f} s")
    return work


def masters_from_truth(work: Path, exptime: float) -> Path:
    """Calibration masters made from the truth maps (so the benchmark needs no stacks)."""
    from ingest.calib import provenance, quadratic_inverse_cube, write_nonlinearity
    from ingest.frameio import write_image

    cal = work / "calib_masters"
    if cal.is_dir():
        return cal
    cal.mkdir()
    det = work / "truth" / "detector"
    info = json.loads((work / "truth" / "detector.json").read_text())
    bias, gain = fits.getdata(det / "bias.fits"), fits.getdata(det / "gain.fits")
    dark = bias + fits.getdata(det / "dark_current.fits") * np.float32(exptime) / gain
    header = provenance("dark", [], {"EXPTIME": exptime, "MJD-OBS": 60000.4, "CHANNEL": "sim"})
    write_image(cal / "dark.fits", dark.astype(np.float32), header)
    flat = fits.getdata(det / "flat.fits") * np.float32(gain.mean()) / gain
    flat /= np.float32(flat.mean())
    write_image(cal / "flat.fits", flat, provenance("flat", [], {"CHANNEL": "sim",
                                                               "FILTER": "clear"}))  # fmt: skip
    del dark, flat, gain, bias
    c = fits.getdata(det / "nonlinearity.fits")
    ref = info["nonlinearity"]["s_ref_adu"]
    write_nonlinearity(quadratic_inverse_cube(c, 3), ref, cal, {"CHANNEL": "sim"})
    static = fits.getdata(work / "truth" / "static_mask.fits")
    write_image(cal / "badpix.fits", ((static & 1) > 0).astype(np.uint8),
                provenance("badpix", [], {"CHANNEL": "sim"}))  # fmt: skip
    write_image(cal / "rtn.fits", ((static & 4) > 0).astype(np.uint8),
                provenance("rtn", [], {"CHANNEL": "sim"}))  # fmt: skip
    return cal


def make_store(work: Path) -> Path:
    import lcdb
    from ingest.refcat import RefcatOptions, load_refcat

    path = work / "store"
    if not path.is_dir():
        store = lcdb.init_store(path, lcdb.StoreConfig(order=5))
        load_refcat(store, work / "truth" / "sky_stars.parquet", RefcatOptions(progress=False))
    return path


def run_one(frame: str, out: str, calib: str, store: str, aperture: str) -> dict:
    """Reduce one frame in this process; return its QA (stage times, memory)."""
    from ingest.calibset import CalibSet
    from ingest.photometry import PhotConfig
    from ingest.reduce import ReduceConfig, reduce_frame

    config = ReduceConfig(gain=0.25, phot=PhotConfig(aperture=aperture))
    return reduce_frame(frame, out, config, CalibSet.scan(calib), store).qa


def bench_case(name: str, case: dict, args: argparse.Namespace) -> None:
    work = Path(args.workdir) / name
    print(f"{name}: {case['nx']}x{case['ny']} px, {case['stars']} stars in the field")
    simulate(work, case, args.seed)
    frame = next((work / "science").glob("*.fits"))
    calib, store = masters_from_truth(work, case["exptime"]), make_store(work)
    out = work / "reduced"
    shutil.rmtree(out, ignore_errors=True)
    qa = _in_subprocess(f"run_one({str(frame)!r}, {str(out)!r}, {str(calib)!r}, {str(store)!r}, "
                        f"{args.aperture!r})")  # fmt: skip
    print(f"  detected {qa['n_detected']}, measured {qa['n_measured']}, FWHM {qa['fwhm']:.2f} px, "
          f"astrometric rms {qa['astrom_rms_arcsec']:.3f}\" ({qa['astrom_nmatch']} stars), "
          f"{100 * qa['mask_fraction']:.2f}% masked")  # fmt: skip
    for stage in ("calibrate", "masks", "photometry", "astrometry", "write"):
        t, m = qa["t_" + stage], qa["m_" + stage]
        print(f"  {stage:<11} {t:6.2f} s   peak RSS after it {m:7.0f} MB")
        prefix = {"masks": "t_masks_", "photometry": "t_phot_"}.get(stage)
        for key in (k for k in qa if prefix and k.startswith(prefix)):
            print(f"    {key[len(prefix) :]:<17} {qa[key]:6.2f} s")
    print(f"  total       {qa['t_total']:6.2f} s   peak RSS {qa['peak_rss_mb']:.0f} MB")
    if args.jobs > 1:
        copies = work / "copies"
        shutil.rmtree(copies, ignore_errors=True)
        copies.mkdir()
        paths = []
        for k in range(2 * args.jobs):
            dst = copies / f"copy{k}.fits"
            shutil.copy(frame, dst)
            with fits.open(dst, mode="update") as h:
                h[0].header["FRAMEID"] = f"copy{k}"
            paths.append(dst)
        from ingest.calibset import CalibSet
        from ingest.reduce import ReduceConfig, reduce_frames

        t0 = time.perf_counter()
        res = reduce_frames(paths, copies / "out", ReduceConfig(gain=0.25), CalibSet.scan(calib),
                            str(store), jobs=args.jobs)  # fmt: skip
        wall = time.perf_counter() - t0
        peak = max(o.qa.get("peak_rss_mb", 0) for o in res.outcomes)
        per = wall / len(paths)
        print(f"  pool of {args.jobs}: {len(paths)} frames in {wall:.1f} s = {per:.2f} s/frame "
              f"(startup included); peak RSS per worker {peak:.0f} MB")  # fmt: skip
    if args.stack:
        bench_stack(work, case, args.stack)


def stack_one(paths: list[str], out: str) -> dict:
    """Make a master bias of ``paths`` in this process; seconds and peak memory."""
    from ingest.calib import CalibConfig, make_bias
    from ingest.reduce import peak_rss_mb

    t0 = time.perf_counter()
    make_bias([Path(p) for p in paths], out, CalibConfig())
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}


def bench_stack(work: Path, case: dict, n: int) -> None:
    """Time a streamed master bias of ``n`` frames in a fresh process (bounded memory)."""
    stack = work / "bias_stack"
    stack.mkdir(exist_ok=True)
    rng = np.random.default_rng(1)
    for k in range(n):
        path = stack / f"b{k:03d}.fits"
        if not path.exists():
            data = rng.normal(500, 4, (case["ny"], case["nx"])).astype(np.uint16)
            fits.PrimaryHDU(data, fits.Header([("MJD-OBS", 60000.0 + k / 1440)])).writeto(path)
    paths = [str(p) for p in sorted(stack.glob("b*.fits"))[:n]]
    res = _in_subprocess(f"stack_one({paths!r}, {str(work)!r})")
    print(f"  master bias of {n} frames: {res['seconds']:.1f} s ({res['seconds'] / n:.2f} s/frame),"
          f" peak RSS {res['peak_rss_mb']:.0f} MB")  # fmt: skip


def _in_subprocess(call: str) -> dict:
    """Run ``call`` (a function of this module) in a fresh interpreter; its JSON result."""
    root = str(Path(__file__).resolve().parents[1])
    code = f"import json, sys; sys.path.insert(0, {root!r}); from bench.reduce import *; "
    code += f"print(json.dumps({call}))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--full", action="store_true", help="also the 9576x6388 Mini-SiTian frame")
    p.add_argument("--only-full", action="store_true", help="only the 9576x6388 frame")
    p.add_argument("--jobs", type=int, default=1, help="also a pool of this many workers")
    p.add_argument("--stack", type=int, default=0, help="also a master bias of N frames")
    p.add_argument("--aperture", default="fwhm", choices=("fwhm", "optimal", "fixed"))
    p.add_argument("--workdir", default="/tmp/lcdb-bench-reduce", help="cache of simulations")
    p.add_argument("--seed", type=int, default=3)
    args = p.parse_args()
    cases = [] if args.only_full else ["mmt"]
    if args.full or args.only_full:
        cases.append("mst")
    for name in cases:
        bench_case(name, SIZES[name], args)


if __name__ == "__main__":
    main()
