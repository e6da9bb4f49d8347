"""Period search for variability candidates: Lomb-Scargle, then a harmonic check.

astropy's Lomb-Scargle (generalised, floating mean, errors as weights) finds the best frequency
and its false-alarm probability (Baluev 2008). Eclipsing binaries and other non-sinusoidal
variables often peak at half their period, so the light curve is folded at the best period P and
at 2P and the phase dispersion (Stellingwerf 1978: variance within phase bins) compared; 2P wins
when it is clearly lower (unequal eclipses separate only at the true period).
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


def phase_dispersion(t: np.ndarray, y: np.ndarray, period: float, bins: int = 20) -> float:
    """Mean variance within phase bins over the total variance (PDM theta statistic)."""
    phase = (t / period) % 1.0
    idx = np.minimum((phase * bins).astype(int), bins - 1)
    total = np.var(y)
    if total <= 0:
        return 1.0
    within, count = 0.0, 0
    for b in range(bins):
        sel = y[idx == b]
        if sel.size > 1:
            within += np.var(sel) * (sel.size - 1)
            count += sel.size - 1
    return float(within / max(count, 1) / total)


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
    # Refine the peak on a grid 20x finer than the search grid (its step, 1/(oversampling x
    # span), would shift narrow eclipses by several % of phase over the baseline).
    step = freq[1] - freq[0] if freq.size > 1 else freq[0] * 1e-3
    fine = np.linspace(freq[best] - step, freq[best] + step, 41)
    fine = fine[fine > 0]
    fine_power = ls.power(fine)
    if fine_power.max() > power[best]:
        power = power.copy()
        power[best] = fine_power.max()
    f_best = fine[int(np.argmax(fine_power))] if fine_power.max() >= power[best] else freq[best]
    period = 1.0 / f_best
    fap = float(
        ls.false_alarm_probability(
            power[best], minimum_frequency=freq[0], maximum_frequency=freq[-1]
        )
    )
    # Odd and even eclipses differ only when folded at the true period: prefer 2P when its
    # phase dispersion is clearly lower (a sinusoid folds equally well at P and 2P).
    if 2 * period <= span and t.size >= 40:
        # Same bin width in time at both periods (twice the bins at 2P).
        bins = int(np.clip(t.size // 10, 5, 40))
        if phase_dispersion(t, mag, 2 * period, 2 * bins) < 0.8 * phase_dispersion(
            t, mag, period, bins
        ):
            period = 2 * period
    _, model = _harmonic_chi2(t, mag, err, period)
    amplitude = float(np.ptp(model))
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
