"""Benchmark of the detector characterisation (``lcdb calib characterize``).

Writes bias frames and a ladder of flat pairs with the simulator's detector renderers (uint16
FITS, as a camera writes them), then times the characterisation alone in a fresh process, whose
peak resident memory (``ru_maxrss``) is its own. Prints seconds, peak memory and the headline
figures next to the truth; deletes the frames afterwards unless ``--keep``.

    python bench/characterize.py                          # 100 bias + 20 pairs, 9576x6388
    python bench/characterize.py --ny 640                 # a 9576x640 strip (10x less data)
    python bench/characterize.py --dir /tmp/charbench --keep

The full size needs ~17 GB of disk and ~8 minutes to simulate. Flats were just written, so most
of them are read from the page cache: a cold read adds ~17 GB at the disk's ~1 GB/s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

FULL = (9576, 6388)
RATE = 5000.0  # ADU/s of the flat lamp


def generate(out: Path, nx: int, ny: int, n_bias: int, n_pairs: int, seed: int) -> dict:
    """Write ``out/{bias,flat}`` and return the truth's scalar figures and the time taken."""
    from lcdb.sim import detector as dm

    det = dm.Detector(nx=nx, ny=ny)
    t0 = time.perf_counter()
    truth = dm.make_detector_truth(det, np.random.default_rng(seed))
    levels = np.geomspace(500.0, 45000.0, n_pairs)
    plan = dm.calibration_plan(n_bias, 0, (), levels, RATE)
    for kind in ("bias", "flat"):
        (out / kind).mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed + 1).spawn(len(plan))
    for k, (item, ss) in enumerate(zip(plan, seeds, strict=True)):
        image = dm.render_calibration(det, truth, item, np.random.default_rng(ss))
        header = fits.Header([("IMAGETYP", item.kind), ("EXPTIME", item.exptime)])
        fits.PrimaryHDU(image, header).writeto(out / item.kind.lower() / f"{item.name}.fits")
        if k % 20 == 0:
            print(f"  generated {k + 1}/{len(plan)} frames", file=sys.stderr, flush=True)
    rtn = np.zeros(truth.gain.size, bool)
    rtn[truth.rtn_index] = True
    facts = dm.detector_summary(det, truth)
    return {
        "gain_e_per_adu": facts["gain_e_per_adu"],
        "read_noise_rms_e": facts["read_noise_rms_e"],
        "n_rtn": facts["n_rtn_pixels"],
        "seconds": time.perf_counter() - t0,
    }


def _characterize(out: Path, memory_mb: float, queue: mp.Queue) -> None:
    from ingest.characterize import CharacterizeConfig, characterize

    t0 = time.perf_counter()
    summary = characterize(
        out / "char",
        bias_dir=out / "bias",
        flat_dir=out / "flat",
        config=CharacterizeConfig(progress=False, memory_mb=memory_mb),
    )
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB
    queue.put(
        {
            "seconds": seconds,
            "peak_gib": peak,
            "gain_e_per_adu": summary["gain_e_per_adu"],
            "gain_err": summary["gain_e_per_adu_err"],
            "read_noise_e": summary["read_noise_e"],
            "n_rtn": summary["anomalous"]["rtn"]["n"],
            "pixel_gain_median_rel_err": summary["gain_pixel"]["median_rel_err"],
        }
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/lcdb-charbench"))
    ap.add_argument("--nx", type=int, default=FULL[0])
    ap.add_argument("--ny", type=int, default=FULL[1])
    ap.add_argument("--bias", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--memory-mb", type=float, default=512.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--keep", action="store_true", help="keep the frames and products")
    args = ap.parse_args()

    need = (args.bias + 2 * args.pairs) * args.nx * args.ny * 2 / 1e9
    free = shutil.disk_usage(args.dir.parent).free / 1e9
    print(
        f"frames: {args.bias} bias + {args.pairs} flat pairs of {args.nx}x{args.ny}, "
        f"{need:.1f} GB (free {free:.0f} GB)"
    )
    if need > 0.8 * free:
        sys.exit("not enough disk space")
    ctx = mp.get_context("spawn")
    try:
        if not (args.dir / "flat").exists():
            with ctx.Pool(1) as pool:
                truth = pool.apply(
                    generate, (args.dir, args.nx, args.ny, args.bias, args.pairs, args.seed)
                )
            (args.dir / "truth.json").write_text(json.dumps(truth))
        truth = json.loads((args.dir / "truth.json").read_text())
        print(f"simulated in {truth['seconds']:.0f} s")
        queue = ctx.Queue()
        proc = ctx.Process(target=_characterize, args=(args.dir, args.memory_mb, queue))
        proc.start()
        res = queue.get()
        proc.join()
        mpix = args.nx * args.ny / 1e6
        n = args.bias + 2 * args.pairs
        print(
            f"characterize: {res['seconds']:.1f} s ({n * mpix / res['seconds']:.0f} Mpix/s "
            f"over {n} frames), peak RSS {res['peak_gib']:.2f} GiB"
        )
        print(
            f"gain {res['gain_e_per_adu']:.4f} +- {res['gain_err']:.4f} e-/ADU "
            f"(truth mean {truth['gain_e_per_adu']:.4f}); read noise "
            f"{res['read_noise_e']:.3f} e- (truth rms {truth['read_noise_rms_e']:.3f})"
        )
        print(
            f"RTN pixels {res['n_rtn']} (planted {truth['n_rtn']}); per-pixel gain error "
            f"{100 * res['pixel_gain_median_rel_err']:.0f}% ({args.pairs} pairs)"
        )
    finally:
        if not args.keep:
            shutil.rmtree(args.dir, ignore_errors=True)


if __name__ == "__main__":
    main()
