"""The frame zero-point polynomial Z0(x, y) of seed Eq. 1: basis, normalisation, evaluation.

Terms by total degree, then by the power of yn: 1, xn, yn, xn², xn·yn, yn², ... in the normalised
coordinates ``xn = 2 x / (naxis1 − 1) − 1`` (same for y). The SQL macro ``z0_poly`` of
sql/views.sql uses the same basis; :mod:`variability.photcal` fits it.
"""

from __future__ import annotations

import numpy as np

MAX_ORDER = 6


def terms(order: int) -> list[tuple[int, int]]:
    """Exponents ``(i, j)`` of ``xn**i * yn**j``."""
    return [(d - j, j) for d in range(order + 1) for j in range(d + 1)]


def order_of(n_coeffs: int) -> int:
    """Polynomial order with ``n_coeffs`` coefficients."""
    for order in range(MAX_ORDER + 1):
        if len(terms(order)) == n_coeffs:
            return order
    raise ValueError(f"{n_coeffs} coefficients do not form a complete polynomial")


def normalise(x: np.ndarray, y: np.ndarray, naxis1, naxis2) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (0-based) to [-1, 1] over the detector."""
    xn = 2.0 * np.asarray(x, float) / (np.asarray(naxis1, float) - 1) - 1.0
    yn = 2.0 * np.asarray(y, float) / (np.asarray(naxis2, float) - 1) - 1.0
    return xn, yn


def design(xn: np.ndarray, yn: np.ndarray, order: int) -> np.ndarray:
    """Columns of the polynomial at (xn, yn)."""
    xp = [np.ones_like(xn)]
    yp = [np.ones_like(yn)]
    for _ in range(order):
        xp.append(xp[-1] * xn)
        yp.append(yp[-1] * yn)
    return np.stack([xp[i] * yp[j] for i, j in terms(order)], axis=1)


def evaluate(coeffs, xn: np.ndarray, yn: np.ndarray) -> np.ndarray:
    """Z0 at normalised positions for one coefficient vector."""
    coeffs = np.asarray(coeffs, float)
    return design(np.asarray(xn, float), np.asarray(yn, float), order_of(coeffs.size)) @ coeffs
