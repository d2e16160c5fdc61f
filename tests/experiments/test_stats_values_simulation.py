"""Simulations for value metrics (issue 15): A/A false-positive rates of the mean and ratio
tests, with and without CUPED, on demo-like zero-inflated skewed revenue; CUPED's variance
reduction.  Bounded: 400 A/A experiments of 1,000 customers per arm (~20 s);
``bench/values_decisions.py`` runs the same at full size."""

from __future__ import annotations

import math

import pytest

from bench.values_decisions import simulate

pytestmark = pytest.mark.pure

SIMS = 400
# One-sided 99% upper band for a 5% rate over 400 experiments: 0.05 + 2.326 * sqrt(0.05 * 0.95 / 400)
UPPER = 0.05 + 2.326 * math.sqrt(0.05 * 0.95 / SIMS)


def test_value_tests__400_aa_experiments_capped_p99__false_positive_rate_at_most_5pct_and_cuped_reduces_variance() -> (
    None
):
    # Given demo-like revenue capped at its 99th percentile. The bound is the 99% band
    # around 5%, not 5% itself: Welch's t on this skewed revenue sits near nominal, not
    # safely below it (bench/values_decisions.py, 1,000 runs at 2,000 per arm: 4.8-6.2%,
    # capped or not; uncapped at this seed and 1,000 per arm: 7.75%, outside the band).
    result = simulate(SIMS, 1000, seed=7, cap=0.99)

    rates = result["false_positive_rate"]
    assert set(rates) >= {
        "revenue_per_customer",
        "revenue_per_customer_cuped",
        "orders_per_customer",
        "average_order_value",
        "average_order_value_cuped",
        "revenue_sequential",
    }
    assert all(result["defined"][k] == SIMS for k in rates)
    assert all(rate <= UPPER for rate in rates.values()), rates
    # CUPED removes a real share of the variance on data whose past predicts its future
    assert result["variance_reduction"]["revenue_per_customer"] > 0.2
    assert result["se_ratio"]["revenue_per_customer"] < 0.9
