"""The expected-noise curve of the scatter-vs-magnitude diagram and variability scores (seed §3.2).

For every object with enough points we have a scatter index (std, or IQR) and a mean magnitude.
Most objects are constant, so the bulk of the diagram traces the noise at each magnitude (photon,
sky and systematic floors; seed Fig. 6). Following the seed, a SuperSmoother (our O(N)
:mod:`variability.supersmoother`) of log10(index) against magnitude gives the trend; a second
smoother of the absolute residuals gives the robust spread (1.2533 x mean |r| is sigma for
Gaussian residuals). An object's score is its residual over that spread. Variables pull the trend
up, so the fit is repeated once without the objects above the threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from variability.supersmoother import supersmoother

_GAUSS_MEAN_ABS = 1.2533141373155  # sigma / E|r| for a normal distribution


@dataclass(frozen=True)
class NoiseCurve:
    """A fitted noise curve: trend and spread of log10(index) as functions of magnitude."""

    index: str
    mag: np.ndarray  # sorted grid
    log_trend: np.ndarray
    log_spread: np.ndarray

    def trend(self, mag: np.ndarray) -> np.ndarray:
        """log10 of the expected index at ``mag`` (linear interpolation, flat beyond the grid)."""
        return np.interp(mag, self.mag, self.log_trend)

    def spread(self, mag: np.ndarray) -> np.ndarray:
        """Robust spread of log10(index) at ``mag``."""
        return np.interp(mag, self.mag, self.log_spread)

    def score(self, mag: np.ndarray, value: np.ndarray) -> np.ndarray:
        """(log10(value) − trend) / spread."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return (np.log10(value) - self.trend(mag)) / self.spread(mag)


def fit_noise_curve(
    mag: np.ndarray,
    value: np.ndarray,
    index: str = "std",
    threshold: float = 4.0,
    grid_points: int = 200,
    min_spread: float = 0.01,
) -> NoiseCurve:
    """Fit the trend and spread of log10(``value``) against ``mag``.

    Parameters
    ----------
    mag, value : array
        Mean magnitude and scatter index of each object (positive values).
    index : str
        Name of the index (stored with the curve).
    threshold : float
        Objects above this score are left out of the second fit.
    grid_points : int
        Magnitudes at which the curve is tabulated.
    min_spread : float
        Floor of the spread in dex (a perfect trend must not make every tiny residual significant).
    """
    mag = np.asarray(mag, float)
    y = np.log10(np.asarray(value, float))
    ok = np.isfinite(mag) & np.isfinite(y)
    if ok.sum() < 20:
        raise ValueError(f"need at least 20 objects with a finite {index} to fit the noise curve")
    use = ok.copy()
    for _ in range(2):
        trend = supersmoother(mag[use], y[use])
        r = y[use] - trend.values
        spread = supersmoother(mag[use], np.abs(r))
        grid = np.linspace(mag[use].min(), mag[use].max(), grid_points)
        log_trend = trend.predict(grid)
        log_spread = np.maximum(_GAUSS_MEAN_ABS * spread.predict(grid), min_spread)
        curve = NoiseCurve(index, grid, log_trend, log_spread)
        use = ok & (curve.score(mag, np.asarray(value, float)) <= threshold)
    return curve
