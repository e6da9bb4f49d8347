"""Period search for variability candidates: Lomb-Scargle, then a harmonic check.

astropy's Lomb-Scargle (generalised, floating mean, errors as weights) finds the best frequency
and its false-alarm probability (Baluev 2008). Eclipsing binaries and other non-sinusoidal
variables often peak at half their period, so the best period P and 2P are compared with a
3-harmonic Fourier fit; 2P wins when it lowers chi2 by more than the extra freedom explains.
The kind hint: ``periodic`` (FAP below ``max_fap``), ``transient`` (the variance comes from a few
points far from the median), else ``aperiodic``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from astropy.timeseries import LombScargle


@dataclass(frozen=True)
class PeriodConfig:
    """Parameters of the period search.

    Parameters
    ----------
    min_period : float
        Shortest period searched, days.
    max_period_fraction : float
        Longest period as a fraction of the time span.
    oversampling : int
        Frequency grid samples per peak width.
    max_fap : float
        False-alarm probability below which a candidate is called periodic.
    """

    min_period: float = 0.05
    max_period_fraction: float = 0.5
    oversampling: int = 5
    max_fap: float = 1e-3

    def __post_init__(self) -> None:
        problems = []
        if not self.min_period > 0:
            problems.append(f"min_period must be > 0, got {self.min_period}")
        if not 0 < self.max_period_fraction <= 1:
            problems.append(
                f"max_period_fraction must be in (0, 1], got {self.max_period_fraction}"
            )
        if self.oversampling < 1:
            problems.append(f"oversampling must be >= 1, got {self.oversampling}")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True)
class PeriodResult:
    """Best period of one light curve."""

    period: float
    power: float
    fap: float
    amplitude: float
    kind: str


def _harmonic_chi2(t: np.ndarray, y: np.ndarray, dy: np.ndarray, period: float, nterms: int = 3):
    phase = 2 * np.pi * t / period
    cols = [np.ones_like(t)]
    for k in range(1, nterms + 1):
        cols += [np.sin(k * phase), np.cos(k * phase)]
    a = np.column_stack(cols) / dy[:, None]
    coef, *_ = np.linalg.lstsq(a, y / dy, rcond=None)
    model = np.column_stack(cols) @ coef
    return float(np.sum(((y - model) / dy) ** 2)), model


def search_period(
    t: np.ndarray, mag: np.ndarray, err: np.ndarray, config: PeriodConfig | None = None
) -> PeriodResult:
    """Best period, power, FAP, amplitude and kind of one light curve."""
    cfg = config or PeriodConfig()
    t, mag, err = (np.asarray(a, float) for a in (t, mag, err))
    span = float(t.max() - t.min()) if t.size else 0.0
    kind = _kind_without_period(mag)
    if t.size < 10 or span <= 2 * cfg.min_period:
        return PeriodResult(float("nan"), float("nan"), float("nan"), float("nan"), kind)
    ls = LombScargle(t, mag, err)
    freq, power = ls.autopower(
        minimum_frequency=1.0 / (cfg.max_period_fraction * span),
        maximum_frequency=1.0 / cfg.min_period,
        samples_per_peak=cfg.oversampling,
    )
    best = int(np.argmax(power))
    period = 1.0 / freq[best]
    fap = float(
        ls.false_alarm_probability(
            power[best], minimum_frequency=freq[0], maximum_frequency=freq[-1]
        )
    )
    chi1, model1 = _harmonic_chi2(t, mag, err, period)
    if 2 * period <= cfg.max_period_fraction * span * 2:
        chi2, model2 = _harmonic_chi2(t, mag, err, 2 * period)
        # 2P has the same number of parameters: prefer it when clearly better (odd/even eclipses).
        if chi2 < 0.8 * chi1:
            period, model1 = 2 * period, model2
    amplitude = float(np.ptp(model1))
    if fap < cfg.max_fap:
        kind = "periodic"
    return PeriodResult(float(period), float(power[best]), fap, amplitude, kind)


def _kind_without_period(mag: np.ndarray) -> str:
    """``transient`` when a few points carry the variability, else ``aperiodic``."""
    if mag.size < 5:
        return "aperiodic"
    med = np.median(mag)
    sig = 1.4826 * np.median(np.abs(mag - med))
    far = np.abs(mag - med) > 5 * max(sig, 1e-4)
    return "transient" if 0 < far.sum() <= max(3, 0.05 * mag.size) else "aperiodic"
