"""The zero-point polynomial Z0(x, y): numpy, the SQL list form and the SQL Horner form agree."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lcdb import zeropoint


def _rows(order: int, coeffs: np.ndarray, xn: np.ndarray, yn: np.ndarray) -> pa.Table:
    """What _frame_models gives a job: 28 coefficient columns, zeros past the order."""
    padded = np.zeros(28)
    padded[: coeffs.size] = coeffs
    cols = {f"c{k}": np.full(xn.size, padded[k]) for k in range(28)}
    cols["coeffs"] = pa.array([coeffs.tolist()] * xn.size, pa.list_(pa.float64()))
    return pa.table({**cols, "xn": xn, "yn": yn, "z0_order": np.full(xn.size, order)})


# the store only provides the macros: sharing it between examples is harmless
@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(order=st.integers(0, 6), seed=st.integers(0, 2**32 - 1))
def test_horner_equals_numpy_and_list_forms(store, order: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = len(zeropoint.terms(order))
    coeffs = rng.normal(0, 1, n) * np.r_[20.0, np.ones(n - 1)]  # a zero point of ~20 mag
    xn, yn = rng.uniform(-1, 1, (2, 200))
    rows = _rows(order, coeffs, xn, yn)
    con = store.con
    con.register("t", rows)
    for max_order in sorted({o for o in (order, 4, 6) if o >= order}):  # any true maximum
        got = con.sql(
            "SELECT z0_horner(t, xn, yn, $o) AS h, z0_poly(coeffs, xn, yn) AS l FROM t",
            params={"o": max_order},
        ).to_arrow_table()
        want = zeropoint.evaluate(coeffs, xn, yn)
        # both are double-precision sums of ~30 terms of order 20 mag: 1e-12 mag is roundoff
        np.testing.assert_allclose(got["h"].to_numpy(), want, rtol=0, atol=1e-12)
        np.testing.assert_allclose(got["l"].to_numpy(), want, rtol=0, atol=1e-12)
    con.unregister("t")


def test_horner_needs_the_true_highest_order(store) -> None:
    """With max_order 4 the order-5/6 terms are skipped: the caller must pass the real maximum."""
    coeffs = np.zeros(28)
    coeffs[27] = 1.0  # yn**6
    rows = _rows(6, coeffs, np.array([0.5]), np.array([0.5]))
    store.con.register("t", rows)
    low, high = (
        store.con.sql("SELECT z0_horner(t, xn, yn, $o) FROM t", params={"o": o}).fetchall()[0][0]
        for o in (4, 6)
    )
    store.con.unregister("t")
    assert low == 0.0
    assert high == pytest.approx(0.5**6)
