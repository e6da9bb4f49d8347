"""One-dimensional Gaussian mixtures of noisy measurements (extreme deconvolution).

Per-pixel estimates ``x_i`` with known errors ``e_i`` are modelled as drawn from
``sum_k w_k N(mu_k, tau_k^2 + e_i^2)``: the ``tau_k`` are the *intrinsic* widths of the pixel
populations, the measurement noise deconvolved (Bovy, Hogg & Roweis 2011, the EM updates of
their Eq. 17-19 in one dimension). Used for the gain populations (bimodal gain in the seed's
MST3) and the dark-current populations. Model choice by BIC = -2 ln L + (3K - 1) ln n.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MixtureFit:
    """A K-component fit: weights, means, intrinsic widths, log-likelihood and BIC."""

    weights: np.ndarray
    means: np.ndarray
    widths: np.ndarray
    loglike: float
    bic: float
    n: int
    iterations: int

    @property
    def k(self) -> int:
        return int(self.weights.size)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready components sorted by weight (largest first)."""
        order = np.argsort(-self.weights)
        return {
            "k": self.k,
            "bic": self.bic,
            "components": [
                {
                    "weight": float(self.weights[i]),
                    "mean": float(self.means[i]),
                    "width": float(self.widths[i]),
                }
                for i in order
            ],
        }


def _log_normal_pdf(x: np.ndarray, mu: float, var: np.ndarray) -> np.ndarray:
    return -0.5 * (np.log(2 * np.pi * var) + (x - mu) ** 2 / var)


def fit_mixture(
    x: np.ndarray, err: np.ndarray, k: int, *, max_iter: int = 300, tol: float = 1e-7
) -> MixtureFit:
    """Fit ``k`` Gaussian components to ``x`` with per-point errors ``err`` by EM.

    Starts from components at the quantiles ``(j + 0.5) / k`` of ``x`` with equal weights.
    """
    x = np.asarray(x, np.float64)
    e2 = np.asarray(err, np.float64) ** 2
    n = x.size
    spread = float(np.var(x)) or 1.0
    floor = 1e-10 * spread
    mu = np.quantile(x, (np.arange(k) + 0.5) / k)
    tau2 = np.full(k, max(spread - float(np.mean(e2)), spread * 0.01) / k)
    w = np.full(k, 1.0 / k)
    prev, it, ll = -np.inf, 0, -np.inf
    for it in range(1, max_iter + 1):  # noqa: B007 (the count is reported)
        var = tau2[:, None] + e2[None, :]
        logp = np.log(w)[:, None] + np.stack([_log_normal_pdf(x, mu[j], var[j]) for j in range(k)])
        top = logp.max(axis=0)
        norm = top + np.log(np.exp(logp - top).sum(axis=0))
        ll = float(norm.sum())
        r = np.exp(logp - norm)
        rs = r.sum(axis=1) + 1e-300
        b = mu[:, None] + tau2[:, None] / var * (x[None, :] - mu[:, None])
        big_b = tau2[:, None] - tau2[:, None] ** 2 / var
        mu = (r * b).sum(axis=1) / rs
        tau2 = np.maximum((r * ((mu[:, None] - b) ** 2 + big_b)).sum(axis=1) / rs, floor)
        w = np.maximum(rs / n, 1e-12)
        w /= w.sum()
        if abs(ll - prev) <= tol * abs(ll):
            break
        prev = ll
    bic = -2 * ll + (3 * k - 1) * np.log(n)
    return MixtureFit(w, mu, np.sqrt(tau2), ll, float(bic), n, it)


def select_mixture(x: np.ndarray, err: np.ndarray, k_max: int) -> list[MixtureFit]:
    """Fits with 1..``k_max`` components (index 0 is K = 1)."""
    return [fit_mixture(x, err, k) for k in range(1, k_max + 1)]


def subsample(n: int, limit: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``limit`` of ``n`` items, a fixed random choice (all if n <= limit)."""
    if n <= limit:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def bimodality(
    x: np.ndarray,
    err: np.ndarray,
    *,
    min_fraction: float,
    min_separation: float,
    min_delta_bic: float,
) -> dict[str, Any]:
    """Test for two pixel populations in ``x`` (errors ``err``).

    Bimodal when the 2-component fit lowers the BIC by more than ``min_delta_bic``, its minor
    component holds at least ``min_fraction`` of the pixels, and the means differ by more than
    ``min_separation`` times the rms of the two intrinsic widths and the median error (the
    populations would stand apart in a histogram, not just be a skewed tail).
    """
    one, two = select_mixture(x, err, 2)
    minor = int(np.argmin(two.weights))
    major = 1 - minor
    scale = np.sqrt((two.widths[0] ** 2 + two.widths[1] ** 2) / 2 + np.median(err) ** 2)
    separation = float(abs(two.means[1] - two.means[0]) / scale)
    delta_bic = float(one.bic - two.bic)
    bimodal = bool(
        delta_bic > min_delta_bic
        and two.weights[minor] >= min_fraction
        and separation > min_separation
    )
    return {
        "bimodal": bimodal,
        "delta_bic": delta_bic,
        "separation": separation,
        "minor_fraction": float(two.weights[minor]),
        "major_mean": float(two.means[major]),
        "minor_mean": float(two.means[minor]),
        "major_width": float(two.widths[major]),
        "minor_width": float(two.widths[minor]),
        "one_component": one.as_dict(),
        "two_components": two.as_dict(),
        "n_pixels": int(np.asarray(x).size),
    }
