"""Benchmark of the catalogue-level survey simulator (``lcdb simulate survey``).

Prints, per camera preset, frames simulated per second and measurements (detections) per
second, for the frame simulation alone (in memory) and for the whole survey written to disk.

    python bench/simulate.py --presets mmt mst --frames 100
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from lcdb.sim.camera import get_preset
from lcdb.sim.survey import (
    StarArrays,
    SurveyConfig,
    make_stars,
    plan_survey,
    simulate_frame,
    simulate_survey,
)
from lcdb.sim.variables import assign_variables


def bench_frames(config: SurveyConfig, repeat: int) -> tuple[float, float, int]:
    """Best-of-``repeat`` in-memory frame rate: (frames/s, measurements/s, stars)."""
    cfg = config.resolved()
    rng = np.random.default_rng(cfg.seed)
    stars, _ = make_stars(cfg, rng)
    specs = plan_survey(cfg, rng)
    var = assign_variables(
        stars.num_rows, rng=rng, fraction=cfg.var_fraction, t_start=specs[0].mjd,
        t_end=specs[-1].mjd,
    )  # fmt: skip
    for name, values in var.items():
        stars = stars.append_column(name, [list(values)])
    arrays = StarArrays.from_table(stars)
    best, n_meas = np.inf, 0
    for _ in range(repeat):
        start, n_meas = time.perf_counter(), 0
        for spec in specs:
            n_meas += simulate_frame(spec, arrays, cfg, np.random.default_rng(spec.index)).num_rows
        best = min(best, time.perf_counter() - start)
    return len(specs) / best, n_meas / best, stars.num_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=["mmt", "mst"], help="camera presets")
    parser.add_argument("--frames", type=int, default=100, help="frames per run (100)")
    parser.add_argument("--stars", type=int, help="stars in the field (preset default)")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the best is reported (3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'preset':6} {'stars':>7} {'det/frame':>9} {'frames/s':>9} {'meas/s':>11}  what")
    for preset in args.presets:
        config = SurveyConfig(
            camera=get_preset(preset), n_frames=args.frames, n_stars=args.stars, seed=args.seed
        )
        fps, mps, n_stars = bench_frames(config, args.repeat)
        print(f"{preset:6} {n_stars:7d} {mps / fps:9.0f} {fps:9.1f} {mps:11.0f}  frames in memory")
        with tempfile.TemporaryDirectory() as tmp:
            result = simulate_survey(config, tmp, progress=False)
        fps = result.n_frames / result.seconds
        mps = result.n_detections / result.seconds
        print(
            f"{preset:6} {result.n_stars:7d} {mps / fps:9.0f} {fps:9.1f} {mps:11.0f}  "
            f"whole survey written ({result.seconds:.2f} s)"
        )


if __name__ == "__main__":
    main()
