"""CUPED for conversion metrics (issue 15): ``stats.cuped_ols`` (OLS post ~ treatment +
centred pre with one pooled residual variance) against statsmodels' OLS called directly on
the per-customer 0/1 values, and its A/A false-positive rate at an unbalanced split and a
low rate, where the per-arm (Welch) variance is too optimistic."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf

from bench.values_decisions import conversion_aa
from experiments.stats import Moments, cuped, cuped_ols

pytestmark = pytest.mark.pure


def _frame(seed: int, n_control: int, n_treatment: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    n = n_control + n_treatment
    pre = (rng.random(n) < 0.2).astype(int)
    post = (rng.random(n) < np.where(pre == 1, 0.3, 0.05)).astype(int)
    return pd.DataFrame({"treatment": [0] * n_control + [1] * n_treatment, "post": post, "pre": pre})


def _moments(df: pd.DataFrame, treated: int) -> Moments:
    rows = df[df.treatment == treated][["post", "pre"]].to_numpy().tolist()
    return Moments.of_values(rows)


def test_cuped_ols__binary_outcome_unbalanced__equals_statsmodels_ols_with_centred_pre() -> None:
    # Given 0/1 conversions in a 10/90 split, the pre-period conversion as the covariate
    df = _frame(3, 300, 2700)

    (result,) = cuped_ols([_moments(df, 0), _moments(df, 1)])

    fit = smf.ols("post ~ treatment + I(pre - pre.mean())", data=df).fit()
    assert result.theta == pytest.approx(fit.params["I(pre - pre.mean())"], rel=1e-9)
    assert result.estimate == pytest.approx(fit.params["treatment"], rel=1e-9)
    assert result.se == pytest.approx(fit.bse["treatment"], rel=1e-9)
    assert result.t == pytest.approx(fit.tvalues["treatment"], rel=1e-9)
    assert result.p_value == pytest.approx(fit.pvalues["treatment"], rel=1e-9)
    assert result.df == fit.df_resid
    low, high = fit.conf_int().loc["treatment"]
    assert result.interval == pytest.approx((low, high), rel=1e-9)
    # and the estimate and theta are CUPED's (pooled theta, adjusted difference)
    adjusted = cuped([_moments(df, 0), _moments(df, 1)], *_stats())
    assert result.theta == pytest.approx(adjusted.theta, rel=1e-12)
    assert result.estimate == pytest.approx(adjusted.estimates[1].value - adjusted.estimates[0].value, rel=1e-9)


def test_cuped_ols__three_arms__equals_statsmodels_ancova_contrasts_with_one_theta() -> None:
    # Given a control and two treatments (10/45/45), one regression for all three
    df = _frame(8, 200, 1800)
    df["treatment"] = [0] * 200 + [1] * 900 + [2] * 900
    arms = [_moments(df, a) for a in range(3)]

    results = cuped_ols(arms)

    fit = smf.ols("post ~ C(treatment) + I(pre - pre.mean())", data=df).fit()
    for a, result in enumerate(results, start=1):
        name = f"C(treatment)[T.{a}]"
        assert result.estimate == pytest.approx(fit.params[name], rel=1e-9)
        assert result.se == pytest.approx(fit.bse[name], rel=1e-9)
        assert result.p_value == pytest.approx(fit.pvalues[name], rel=1e-9)
        assert result.theta == pytest.approx(fit.params["I(pre - pre.mean())"], rel=1e-9)
        assert result.df == fit.df_resid


def _stats():  # type: ignore[no-untyped-def]
    from experiments.stats import MeanOf

    return MeanOf(0), MeanOf(1)


def test_cuped_ols__no_pre_period_variation__undefined_with_reason() -> None:
    flat = Moments.of_values([[1, 0], [0, 0], [0, 0]])
    (result,) = cuped_ols([flat, flat])
    assert result.p_value is None and result.undefined["p_value"].code == "no_pre_period_data"
    (empty,) = cuped_ols([Moments.empty(2), flat])
    assert empty.p_value is None and empty.undefined["p_value"].code == "no_traffic"


@pytest.mark.slow
def test_conversion_cuped__aa_ten_ninety_two_percent__pooled_ols_at_most_5pct_welch_above() -> None:
    # Given 4,000 A/A experiments of 5,000 customers split 10/90 with a 2% conversion rate
    result = conversion_aa(4000, 5000, 0.1, seed=5)

    rates = result["false_positive_rate"]
    # Then CUPED with one pooled residual variance stays at or below 5% (interval not above)
    assert rates["cuped_ols_pooled"]["ci95"][0] <= 0.05, rates
    assert rates["pooled_z_unadjusted"]["ci95"][0] <= 0.05, rates
    # while CUPED + Welch (per-arm variance) rejects too often at this split
    assert rates["cuped_welch"]["ci95"][0] > 0.05, rates
