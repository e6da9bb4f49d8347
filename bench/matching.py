"""Benchmark of the cell matcher (``nearest_in_cells``) against a k-d tree (``nearest_within``).

The tree is what MEASURED.md's baseline uses (10^7 detections to 10^6 positions at ~1.4 M/s when
the clustering goal was set); the cell matcher is what clustering uses. Both run single-threaded
(clustering parallelises over partitions, not inside a query) on the same points, and the tree's
time includes the unit vectors it needs (the cell matcher needs none: rows carry ``healpix_29``).
Cases: the baseline's density (10^6 positions in 10x10 deg, 10" radius) and a survey field like
bench/pipeline.py's (2x10^4 objects, 30"), each with points in random order and sorted by
position (as store files are). Prints seconds, matches/s, the ratio and the agreement.

    python bench/matching.py [--points 10000000] [--repeat 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy.spatial import cKDTree

from lcdb import healpix
from variability import matching


def _case(n_cat: int, n_points: int, radius_arcsec: float, rng: np.random.Generator):
    ra, dec = rng.uniform(0, 10, n_cat), rng.uniform(-5, 5, n_cat)
    pick = rng.integers(0, n_cat, n_points)
    q_ra = ra[pick] + rng.normal(0, 0.1 * radius_arcsec / 3600, n_points)
    q_dec = dec[pick] + rng.normal(0, 0.1 * radius_arcsec / 3600, n_points)
    return ra, dec, q_ra, q_dec, healpix.healpix29(q_ra, q_dec)


def _tree(ra, dec, q_ra, q_dec, q29, r):
    tree = cKDTree(matching.unit_vectors(ra, dec))
    return matching.nearest_within(tree, matching.unit_vectors(q_ra, q_dec), r)


def _cells(ra, dec, q_ra, q_dec, q29, r):
    return matching.nearest_in_cells(q29, q_ra, q_dec, ra, dec, r)


def _best(repeat: int, fn, *args):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn(*args)
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(3)
    cases = (('baseline 1e6 pos, 10"', 1_000_000, 10.0), ('survey 2e4 pos, 30"', 20_000, 30.0))
    print(
        f"{'case':26} {'input':>8} {'tree s':>8} {'cells s':>8} {'cells M/s':>10} "
        f"{'ratio':>6} {'agree':>8}"
    )
    for name, n_cat, r_arcsec in cases:
        ra, dec, q_ra, q_dec, q29 = _case(n_cat, args.points, r_arcsec, rng)
        r = r_arcsec / 3600
        for label, o in (("random", rng.permutation(args.points)), ("sorted", np.argsort(q29))):
            data = (ra, dec, q_ra[o], q_dec[o], q29[o], r)
            t_tree, (i_tree, _) = _best(args.repeat, _tree, *data)
            t_cell, (i_cell, _) = _best(args.repeat, _cells, *data)
            agree = float(np.mean(i_tree == i_cell))
            print(
                f"{name:26} {label:>8} {t_tree:8.2f} {t_cell:8.2f} "
                f"{args.points / t_cell / 1e6:10.2f} {t_tree / t_cell:6.2f} {agree:8.6f}"
            )


if __name__ == "__main__":
    main()
