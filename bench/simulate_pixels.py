"""Benchmark of the pixel-level frame simulator (``lcdb simulate frames``).

Each case runs in its own process so its peak memory (``ru_maxrss``) is its own. Per image
size it prints the time to draw the detector truth maps, science frames rendered per second in
memory (stars, sky, track, cosmic rays, detector read-out), bias frames per second, the time to
write one frame as FITS, and the peak resident memory.

    python bench/simulate_pixels.py                       # 1024x1024 with 2000 stars
    python bench/simulate_pixels.py --full                # also a full 9576x6388 frame
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

FULL = (9576, 6388)


def run_case(nx: int, ny: int, stars: int, frames: int, seed: int) -> dict[str, float]:
    """Time one image size in this process; return the figures."""
    from lcdb.sim import detector as dm
    from lcdb.sim.detector import Detector
    from lcdb.sim.pixels import (
        PixelSimConfig,
        make_frame_spec,
        make_star_list,
        render_science_frame,
    )

    config = PixelSimConfig(detector=Detector(nx=nx, ny=ny), n_stars=stars, seed=seed)
    rngs = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3 + frames)]
    t0 = time.perf_counter()
    truth = dm.make_detector_truth(config.detector, rngs[0])
    t_truth = time.perf_counter() - t0
    sky = make_star_list(config, rngs[1])
    canvas = np.zeros(config.detector.shape, np.float32)
    times, n_in_frame = [], 0
    for i in range(frames):
        spec = make_frame_spec(config, i, rngs[2])
        t0 = time.perf_counter()
        frame = render_science_frame(config, truth, sky, spec, rngs[3 + i], canvas=canvas)
        times.append(time.perf_counter() - t0)
        n_in_frame = frame.stars.num_rows
    t0 = time.perf_counter()
    dm.render_bias(config.detector, truth, rngs[2])
    t_bias = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        fits.PrimaryHDU(frame.image).writeto(Path(tmp) / "f.fits")
        t_write = time.perf_counter() - t0
    return {
        "nx": nx,
        "ny": ny,
        "stars_in_frame": n_in_frame,
        "truth_s": t_truth,
        "frame_s": float(np.median(times)),
        "frames_per_s": 1 / float(np.median(times)),
        "bias_per_s": 1 / t_bias,
        "write_s": t_write,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6,
    }


def _spawn(nx: int, ny: int, stars: int, frames: int, seed: int) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--case", f"{nx}x{ny}", "--stars", str(stars),
           "--frames", str(frames), "--seed", str(seed)]  # fmt: skip
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stars", type=int, default=2000, help="stars per 1024x1024 (2000)")
    parser.add_argument("--frames", type=int, default=5, help="frames per small case (5)")
    parser.add_argument("--sizes", default="256x256,1024x1024", help="small cases, WxH,...")
    parser.add_argument("--full", action="store_true", help="add a full 9576x6388 frame")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        nx, ny = (int(v) for v in args.case.split("x"))
        print(json.dumps(run_case(nx, ny, args.stars, args.frames, args.seed)))
        return
    cases = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rows = []
    for nx, ny in cases:
        n_stars = round(args.stars * nx * ny / 1024**2)
        rows.append(_spawn(nx, ny, n_stars, args.frames, args.seed))
    if args.full:
        rows.append(_spawn(*FULL, round(args.stars * FULL[0] * FULL[1] / 1024**2), 2, args.seed))
    print(f"{'size':>11} {'stars':>7} {'truth s':>8} {'frame s':>8} {'frames/s':>9} "
          f"{'bias/s':>7} {'write s':>8} {'peak GB':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['nx']:>5}x{r['ny']:<5} {r['stars_in_frame']:>7} {r['truth_s']:>8.2f} "
              f"{r['frame_s']:>8.3f} {r['frames_per_s']:>9.2f} {r['bias_per_s']:>7.2f} "
              f"{r['write_s']:>8.3f} {r['peak_rss_gb']:>8.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
