"""SuperSmoother: the O(N) prefix-sum version equals the ``supersmoother`` package and the loops."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from supersmoother import SuperSmoother

from variability.supersmoother import (
    METHODS,
    MIN_POINTS,
    SuperSmootherFit,
    _LoopSmoother,
    _PrefixSumSmoother,
    smooth,
    supersmoother,
)

TOL = 1e-8


def noise_curve(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """log10(scatter) against magnitude, like the variability search's expected-noise fit."""
    m = rng.uniform(8, 14, n)
    return m, np.log10(0.003 + 10 ** (0.4 * (m - 14))) + rng.normal(0, 0.05, n)


def package(x, y, dy=None, xq=None, **kwargs) -> tuple[np.ndarray, ...]:
    """The package used directly: fitted values at x, predictions at xq, spans at x."""
    model = SuperSmoother(**kwargs).fit(x, y, 1.0 if dy is None else dy)
    spans = np.empty(x.size)
    spans[model.isort] = np.clip(model.spansmoother.cv_values(cv=False), 0.05, 0.5)
    return model.predict(x), None if xq is None else model.predict(xq), spans


def assert_matches_package(x, y, dy=None, **kwargs) -> SuperSmootherFit:
    span = x.max() - x.min()
    xq = np.linspace(x.min() - 0.05 * span, x.max() + 0.05 * span, 201)
    fit = supersmoother(x, y, dy, **kwargs)
    values, predicted, spans = package(x, y, dy, xq, **kwargs)
    np.testing.assert_allclose(fit.values, values, rtol=0, atol=TOL)
    np.testing.assert_allclose(fit.predict(xq), predicted, rtol=0, atol=TOL)
    np.testing.assert_allclose(fit.spans, spans, rtol=0, atol=TOL)
    return fit


@pytest.mark.parametrize(
    ("n", "with_dy", "alpha"),
    [
        (100, False, None),
        (100, True, 8.0),
        (101, True, None),
        (257, False, 2.5),
        (1000, True, None),
        (1000, False, 0.0),
        (5000, True, 5.0),
        (20000, False, None),
    ],
)
def test_noise_curve_matches_package(n, with_dy, alpha):
    rng = np.random.default_rng(n + 7 * with_dy)
    m, y = noise_curve(n, rng)
    dy = rng.uniform(0.02, 0.1, n) if with_dy else None
    assert_matches_package(m, y, dy, alpha=alpha)


@pytest.mark.parametrize(
    ("n", "alpha", "period"),
    [(300, None, None), (2000, 4.0, None), (300, None, 1.7), (2000, 7.0, 1.7)],
)
def test_noisy_sine_matches_package(n, alpha, period):
    rng = np.random.default_rng(n)
    t = rng.uniform(0, 40, n)  # unsorted on purpose
    y = np.sin(2 * np.pi * t / 1.7) + rng.normal(0, 0.3, n)
    assert_matches_package(t, y, rng.uniform(0.2, 0.4, n), alpha=alpha, period=period)


def test_tied_x_matches_package_and_gets_one_value():
    rng = np.random.default_rng(3)
    m, y = noise_curve(2000, rng)
    m = np.round(m, 2)  # catalogue precision: ~600 distinct values
    fit = assert_matches_package(m, y, alpha=6.0)
    for value in np.unique(m)[:50]:
        assert np.ptp(fit.values[m == value]) == 0


def test_package_raises_on_flat_windows_we_do_not():
    rng = np.random.default_rng(1)
    m = rng.uniform(8, 14, 50)  # 3-point windows: one point left out of 2 at the edges
    truth = np.log10(0.003 + 10 ** (0.4 * (m - 14)))
    y = truth + rng.normal(0, 0.05, 50)
    with pytest.raises(ValueError, match="Zero denominator"):
        package(m, y)
    values = smooth(m, y)
    assert np.all(np.isfinite(values)) and np.median(np.abs(values - truth)) < 0.03
    x = np.repeat(np.arange(12.0), 4)  # every x four times
    with pytest.raises(ValueError, match="Zero denominator"):
        package(x, np.sin(x))
    np.testing.assert_allclose(smooth(x, np.sin(x)), smooth(x, np.sin(x), method="slow"), atol=TOL)


def test_package_nan_bass_enhancement_is_finite_here():
    rng = np.random.default_rng(24)
    m, y = noise_curve(100, rng)
    dy = rng.uniform(0.02, 0.1, 100)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        values, _, _ = package(m, y, dy, alpha=2.5)  # negative smoothed residual ** 7.5 = NaN
    bad = ~np.isfinite(values)
    assert bad.any()
    ours = smooth(m, y, dy, alpha=2.5)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours[~bad], values[~bad], rtol=0, atol=TOL)


@pytest.mark.parametrize("direct_span", [0, 64])  # prefix sums for all windows, or the default
@pytest.mark.parametrize("periodic", [False, True])
@pytest.mark.parametrize("cv", [False, True])
def test_prefix_sum_windows_equal_loops(direct_span, periodic, cv):
    rng = np.random.default_rng(5)
    for n in (5, 6, 17, 120):
        x = np.sort(np.round(rng.uniform(-1, 1, n), 1))  # many duplicates
        if periodic:
            x = (x + 1) / 2 * 0.8  # phases in [0, 1): the scaled period is 1
        w = rng.uniform(0.5, 2, n)
        y = rng.normal(0, 1, (2, n))
        p = 1.0 if periodic else None
        fast, slow = _PrefixSumSmoother(x, w, p), _LoopSmoother(x, w, p)
        fast.direct_span = direct_span
        for span in sorted({3, 4, 5, n // 3 + 3, max(3, n // 2), n}):
            (ym, slope, xm), (ym0, slope0, xm0) = (s.smooth(y, span, cv) for s in (fast, slow))
            msg = f"{n=} {span=}"
            np.testing.assert_allclose(ym, ym0, rtol=0, atol=1e-12, err_msg=msg)
            np.testing.assert_allclose(xm, xm0, rtol=0, atol=1e-12, err_msg=msg)
            np.testing.assert_allclose(slope, slope0, rtol=1e-9, atol=1e-12, err_msg=msg)
            nodes, nodes0 = ym + slope * (x - xm), ym0 + slope0 * (x - xm0)
            np.testing.assert_allclose(nodes, nodes0, rtol=0, atol=1e-10, err_msg=msg)


@pytest.mark.parametrize("seed", range(8))
def test_fast_equals_slow_on_random_input(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    x = rng.uniform(0, 10, n)
    x[rng.random(n) < 0.1] = 4.25  # a cluster of ties
    x = np.where(rng.random(n) < 0.3, np.round(x), x)  # and integer ties
    y, dy = rng.normal(0, 1, n) + np.cos(x), rng.uniform(0.5, 2, n)
    kwargs = {"alpha": [None, 3.0][seed % 2], "period": [None, None, 3.3][seed % 3]}
    fast, slow = supersmoother(x, y, dy, **kwargs), supersmoother(x, y, dy, method="slow", **kwargs)
    np.testing.assert_allclose(fast.values, slow.values, rtol=0, atol=1e-10)
    np.testing.assert_allclose(fast.spans, slow.spans, rtol=0, atol=1e-10)
    xq = np.linspace(-1, 11, 50)
    np.testing.assert_allclose(fast.predict(xq), slow.predict(xq), rtol=0, atol=1e-10)


grid_x = st.lists(st.integers(-4000, 4000), min_size=MIN_POINTS, max_size=60)
periods = st.none() | st.floats(0.5, 100)
alphas = st.none() | st.floats(0, 10)


@settings(max_examples=60, deadline=None)
@given(grid_x, st.floats(-1e6, 1e6), alphas, periods, st.booleans())
def test_constant_is_reproduced(xi, c, alpha, period, with_dy):
    x = np.array(xi) / 8.0
    dy = np.linspace(0.1, 3, x.size) if with_dy else None
    fit = supersmoother(x, np.full(x.size, c), dy, alpha=alpha, period=period)
    tol = 1e-12 * max(1.0, abs(c))
    np.testing.assert_allclose(fit.values, c, rtol=0, atol=tol)
    np.testing.assert_allclose(fit.predict(np.linspace(-600, 600, 7)), c, rtol=0, atol=tol)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-4000, 4000), min_size=100, max_size=160, unique=True),
       st.floats(-100, 100), st.floats(-100, 100), alphas)  # fmt: skip
def test_line_is_reproduced(xi, a, b, alpha):
    # From 100 points on, every leave-one-out window holds >= 2 points (below, a line cannot
    # be fitted at the edges and the package raises); distinct x for the same reason.
    x = np.array(xi) / 8.0
    fit = supersmoother(x, a + b * x, alpha=alpha)
    tol = 1e-9 * (abs(a) + abs(b) * np.abs(x).max() + 1)
    np.testing.assert_allclose(fit.values, a + b * x, rtol=0, atol=tol)
    np.testing.assert_allclose(fit.predict(x[:10] + 0.01), a + b * (x[:10] + 0.01), atol=tol)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-4000, 4000), min_size=MIN_POINTS, max_size=80, unique=True),
       st.randoms(use_true_random=False), alphas, periods)  # fmt: skip
def test_input_order_does_not_matter(xi, random, alpha, period):
    x = np.array(xi) / 8.0
    if period is not None and np.unique(x % period).size < x.size:
        return  # distinct x, tied phases: the (unstable) sort of ties depends on input order
    y = np.sin(x) + np.cos(3 * x)
    order = list(range(x.size))
    random.shuffle(order)
    fit = supersmoother(x, y, alpha=alpha, period=period)
    shuffled = supersmoother(x[order], y[order], alpha=alpha, period=period)
    np.testing.assert_array_equal(shuffled.values, fit.values[order])
    np.testing.assert_array_equal(shuffled.spans, fit.spans[order])


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (([1.0] * 6, [1.0] * 5), {}, "same length, got 6 and 5"),
        (([1.0, 2, 3], [1.0, 2, 3]), {}, "at least 5 points to smooth, got 3"),
        (([1.0, np.nan, 3, 4, 5], [1.0] * 5), {}, "x contains 1 non-finite"),
        (([1.0, 2, 3, 4, 5], [1.0, 2, np.inf, 4, -np.inf]), {}, "y contains 2 non-finite"),
        (([1.0, 2, 3, 4, 5], [1.0] * 5, [1, 1, np.nan, 1, 1]), {}, "dy contains 1 non-finite"),
        (([1.0, 2, 3, 4, 5], [1.0] * 5, [1, 1, 1]), {}, "dy must be a scalar or have the length"),
        (([1.0, 2, 3, 4, 5], [1.0] * 5, 0.0), {}, "dy must be strictly positive"),
        (([[1.0, 2, 3, 4, 5]], [1.0] * 5), {}, "x must be one-dimensional"),
        (([1.0, 2, 3, 4, 5], [1.0] * 5), {"primary_spans": (0.1, 1.5)}, "primary_spans must"),
        (([1.0, 2, 3, 4, 5], [1.0] * 5), {"primary_spans": (0.2, 0.2)}, "two distinct spans"),
        (([1.0, 2, 3, 4, 5], [1.0] * 5), {"final_span": 0.0}, "final_span must lie in"),
        (([1.0, 2, 3, 4, 5], [1.0] * 5), {"alpha": np.nan}, "alpha must be finite"),
        (([1.0, 2, 3, 4, 5], [1.0] * 5), {"period": -1.0}, "period must be positive"),
        (([1.0, 2, 3, 4, 5], [1.0] * 5), {"method": "fastest"}, "method must be one of"),
    ],
)
def test_bad_input_raises_value_error(args, kwargs, message):
    with pytest.raises(ValueError, match=message):
        supersmoother(*args, **kwargs)


def test_api():
    rng = np.random.default_rng(9)
    m, y = noise_curve(500, rng)
    fit = supersmoother(m, y)
    assert set(METHODS) == {"fast", "slow", "package"} and fit.method == "fast"
    np.testing.assert_array_equal(smooth(m, y), fit.values)
    assert np.all((fit.spans >= 0.05) & (fit.spans <= 0.5))
    grid = np.linspace(8, 14, 12).reshape(3, 4)
    assert fit.predict(grid).shape == (3, 4) and np.array_equal(fit(grid), fit.predict(grid))
    with pytest.raises(dataclasses.FrozenInstanceError):
        fit.values = y  # type: ignore[misc]
    with pytest.raises(ValueError, match="read-only"):
        fit.values[0] = 0.0
