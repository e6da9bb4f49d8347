"""Benchmark of the O(N) SuperSmoother against the ``supersmoother`` package (O(N^2)).

Data like the variability search's noise-curve fit: log10(scatter) against mean magnitude,
y = log10(0.003 + 10^(0.4 (m - 14))) + noise over m in 8..14, in random order. Prints, per N,
the seconds of the package and of ours (best of ``--repeat``) and the max |difference| of the
fitted values where both ran. The package runs at 10^4 always, at 10^5 only with ``--package``
(it takes ~8-40 s there); ours also runs at 10^6.

    python bench/supersmoother.py [--package] [--alpha 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

# Run as a script, this directory is sys.path[0], and this file would shadow the package
# ``supersmoother``: put the repository root there instead.
HERE = Path(__file__).resolve().parent
sys.path[:] = [str(HERE.parent) if Path(p or ".").resolve() == HERE else p for p in sys.path]

from variability.supersmoother import supersmoother  # noqa: E402


def noise_curve(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    m = rng.uniform(8, 14, n)
    return m, np.log10(0.003 + 10 ** (0.4 * (m - 14))) + rng.normal(0, 0.05, n)


def timed(repeat: int, x: np.ndarray, y: np.ndarray, **kwargs) -> tuple[float, np.ndarray]:
    """Best-of-``repeat`` seconds of a fit, and its fitted values."""
    best = np.inf
    for _ in range(repeat):
        start = time.perf_counter()
        values = supersmoother(x, y, **kwargs).values
        best = min(best, time.perf_counter() - start)
    return best, values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--package", action="store_true", help="also run the package at 10^5")
    parser.add_argument("--alpha", type=float, help="bass enhancement (none)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of ours; the best (3)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{'N':>9} {'package s':>10} {'ours s':>8} {'speed-up':>9} {'max |diff|':>11}")
    for n in (10**4, 10**5, 10**6):
        m, y = noise_curve(n, rng)
        ours, values = timed(args.repeat, m, y, alpha=args.alpha)
        row = f"{n:9d} {'-':>10} {ours:8.3f} {'-':>9} {'-':>11}"
        if n == 10**4 or (n == 10**5 and args.package):
            pkg, reference = timed(1, m, y, alpha=args.alpha, method="package")
            diff = np.max(np.abs(values - reference))
            row = f"{n:9d} {pkg:10.3f} {ours:8.3f} {pkg / ours:9.0f} {diff:11.2e}"
        print(row, flush=True)


if __name__ == "__main__":
    main()
