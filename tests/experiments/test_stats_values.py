"""Value metrics' statistics (issue 15) against scipy/statsmodels called directly and
hand-worked cases: Welch, delta method for relative lift and ratios, CUPED (OLS), capping,
power.  No database, no Django."""

from __future__ import annotations

import json
import math
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats as sps
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from experiments.stats import (
    MeanOf,
    Moments,
    RatioOf,
    cap_rank,
    compare_values,
    cs_halfwidth,
    cuped,
    estimate,
    mixture_rho,
    value_sample_size,
)

pytestmark = pytest.mark.pure

TOL = 1e-9


def arm(values: np.ndarray) -> Moments:
    """Moments of one variable from per-customer values (as the database sums them)."""
    return Moments.of_values([[float(v)] for v in values])


def arm2(*columns: np.ndarray) -> Moments:
    return Moments.of_values([[float(v) for v in row] for row in zip(*columns, strict=True)])


def revenue(rng: np.random.Generator, n: int, buy_rate: float, scale: float) -> np.ndarray:
    """Zero-inflated, skewed revenue per customer (like the events table's)."""
    return np.where(rng.random(n) < buy_rate, rng.lognormal(np.log(scale), 0.8, n), 0.0)


def json_clean(result: object) -> dict:
    data = result.to_dict()  # type: ignore[attr-defined]
    json.dumps(data, allow_nan=False)
    return data


# --------------------------------------------------------------------------
# Moments
# --------------------------------------------------------------------------


def test_moments_covariance__large_money_values__exact_where_floats_cancel() -> None:
    # Given revenue of 10 million and one cent apart, kept as Decimal (segments.money)
    values = [Decimal("10000000.01"), Decimal("10000000.02"), Decimal("10000000.03")]
    m = Moments.single(3, sum(values), sum(v * v for v in values))
    # Then the variance is exactly 0.0001 (sample variance of 0.01, 0.02, 0.03)
    assert m.covariance() == ((pytest.approx(1e-4, rel=1e-12),),)
    # (the float formula S - s^2/n is off by orders of magnitude here)
    s, s2 = float(sum(values)), float(sum(v * v for v in values))
    assert abs((s2 - s * s / 3) / 2 - 1e-4) > 1e-3


def test_moments__asymmetric_or_bad_input__raises() -> None:
    with pytest.raises(ValueError):
        Moments(2, (1, 2), ((1, 2), (3, 4)))
    with pytest.raises(ValueError):
        Moments(-1, (1,), ((1,),))
    with pytest.raises(ValueError):
        Moments(2, (float("nan"),), ((1,),))


# --------------------------------------------------------------------------
# Welch: scipy.stats.ttest_ind(equal_var=False) and statsmodels CompareMeans
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed,nc,nt", [(1, 400, 380), (2, 50, 900), (3, 3, 4), (4, 1000, 1000)])
def test_compare_values_t__random_revenue__matches_scipy_and_statsmodels(seed: int, nc: int, nt: int) -> None:
    rng = np.random.default_rng(seed)
    control, treatment = revenue(rng, nc, 0.3, 40.0), revenue(rng, nt, 0.35, 38.0)
    if treatment.var() == 0 or control.var() == 0:
        treatment[0], control[0] = 5.0, 7.0

    ours = compare_values(estimate(arm(control), MeanOf(0)), estimate(arm(treatment), MeanOf(0)), alpha=0.05)

    ref = sps.ttest_ind(treatment, control, equal_var=False)
    assert ours.statistic == pytest.approx(ref.statistic, rel=TOL)
    assert ours.p_value == pytest.approx(ref.pvalue, rel=1e-8)
    assert ours.df == pytest.approx(ref.df, rel=TOL)
    cm = CompareMeans(DescrStatsW(treatment), DescrStatsW(control))
    low, high = cm.tconfint_diff(alpha=0.05, usevar="unequal")
    assert ours.absolute_lift_ci.low == pytest.approx(low, rel=TOL)
    assert ours.absolute_lift_ci.high == pytest.approx(high, rel=TOL)
    assert ours.absolute_lift == pytest.approx(treatment.mean() - control.mean(), rel=TOL)
    json_clean(ours)


def test_compare_values_normal__random_revenue__matches_compare_means_ztest() -> None:
    rng = np.random.default_rng(7)
    control, treatment = revenue(rng, 700, 0.3, 40.0), revenue(rng, 500, 0.3, 46.0)

    ours = compare_values(
        estimate(arm(control), MeanOf(0)), estimate(arm(treatment), MeanOf(0)), alpha=0.1, distribution="normal"
    )

    cm = CompareMeans(DescrStatsW(treatment), DescrStatsW(control))
    z, p = cm.ztest_ind(usevar="unequal")
    low, high = cm.zconfint_diff(alpha=0.1, usevar="unequal")
    assert (ours.statistic, ours.p_value) == (pytest.approx(z, rel=TOL), pytest.approx(p, rel=1e-8))
    assert (ours.absolute_lift_ci.low, ours.absolute_lift_ci.high) == (
        pytest.approx(low, rel=TOL),
        pytest.approx(high, rel=TOL),
    )
    assert ours.df is None and ours.undefined["df"].code == "not_applicable"


def test_compare_values_relative__hand_worked__delta_method_interval() -> None:
    # Given control mean 10 (var 4, n 100) and treatment mean 12 (var 9, n 100), normal
    ours = compare_values(_est(100, 10.0, 4.0), _est(100, 12.0, 9.0), distribution="normal")
    # r = 12/10 - 1 = 0.2;  se_r^2 = 9/(100*100) + 144*4/(100*10^4) = 0.0009 + 0.000576
    se_r = math.sqrt(0.0009 + 0.000576)
    assert ours.relative_lift == pytest.approx(0.2, abs=1e-12)
    assert ours.relative_lift_ci.low == pytest.approx(0.2 - 1.959963984540054 * se_r, rel=1e-12)
    assert ours.relative_lift_ci.high == pytest.approx(0.2 + 1.959963984540054 * se_r, rel=1e-12)
    # and the absolute: se^2 = 4/100 + 9/100
    assert ours.se == pytest.approx(math.sqrt(0.13), rel=1e-12)


def test_compare_values_sequential__any_metric__uses_the_confidence_sequence() -> None:
    ours = compare_values(_est(3000, 10.0, 4.0), _est(2000, 10.3, 9.0), sequential=True, expected_n=8000)
    se = math.sqrt(4 / 3000 + 9 / 2000)
    half = cs_halfwidth(se, 5000, 0.05, mixture_rho(0.05, 8000))
    assert ours.absolute_lift_ci.high - ours.absolute_lift_ci.low == pytest.approx(2 * half, rel=1e-12)
    assert ours.distribution == "normal" and ours.sequential
    # The CS is wider than the fixed-horizon interval
    assert half > 1.96 * se


def _est(n: int, value: float, variance: float):
    from experiments.stats import Estimate

    return Estimate(n, value, variance, {})


# --------------------------------------------------------------------------
# Degenerate arms: None with a reason, never NaN
# --------------------------------------------------------------------------


def test_compare_values__empty_arm__null_with_no_traffic() -> None:
    ours = compare_values(estimate(Moments.empty(1), MeanOf(0)), estimate(arm(np.array([1.0, 2.0])), MeanOf(0)))
    data = json_clean(ours)
    assert data["p_value"] is None and data["undefined"]["p_value"]["code"] == "no_traffic"
    assert data["control_value"] is None


def test_compare_values__zero_variance_both_arms__null_with_zero_variance() -> None:
    ours = compare_values(estimate(arm(np.zeros(50)), MeanOf(0)), estimate(arm(np.zeros(60)), MeanOf(0)))
    data = json_clean(ours)
    assert data["absolute_lift"] == 0.0
    assert data["statistic"] is None and data["undefined"]["statistic"]["code"] == "zero_variance"
    assert data["undefined"]["relative_lift"]["code"] == "control_value_zero"


def test_compare_values__one_customer__null_with_too_few_customers() -> None:
    ours = compare_values(estimate(arm(np.array([3.0])), MeanOf(0)), estimate(arm(np.array([1.0, 2.0])), MeanOf(0)))
    assert ours.p_value is None and ours.undefined["p_value"].code == "too_few_customers"
    assert ours.absolute_lift == pytest.approx(-1.5)


# --------------------------------------------------------------------------
# Ratio metrics by the delta method
# --------------------------------------------------------------------------


def test_ratio_estimate__hand_worked_three_customers__delta_variance() -> None:
    # revenue x = (1, 2, 3), orders y = (1, 1, 2): R = 2 / (4/3) = 1.5
    # C_xx = 1, C_yy = 1/3, C_xy = 1/2;  v = (1 - 2*1.5*0.5 + 1.5^2/3) / (4/3)^2 = 0.25 * 9/16
    m = Moments.pair(3, 6, 14, 4, 6, 9)
    ours = estimate(m, RatioOf(0, 1))
    assert ours.value == pytest.approx(1.5, abs=1e-15)
    assert ours.variance == pytest.approx(9 / 64, abs=1e-15)


def test_ratio_estimate__linearised_values__same_variance_as_numpy() -> None:
    # The delta-method variance equals the sample variance of the influence values
    # l_i = (x_i - R y_i) / mean(y) (Deng, Knoblich & Lu 2018, eq. 3).
    rng = np.random.default_rng(11)
    orders = rng.poisson(1.2, 500).astype(float)
    rev = orders * rng.lognormal(3.5, 0.5, 500)
    ours = estimate(arm2(rev, orders), RatioOf(0, 1))
    r = rev.sum() / orders.sum()
    influence = (rev - r * orders) / orders.mean()
    assert ours.value == pytest.approx(r, rel=TOL)
    assert ours.variance == pytest.approx(np.var(influence, ddof=1), rel=1e-9)


def test_ratio_estimate__no_orders__null_with_denominator_zero() -> None:
    ours = estimate(Moments.pair(4, 0, 0, 0, 0, 0), RatioOf(0, 1))
    assert ours.value is None and ours.undefined["value"].code == "denominator_zero"
    comparison = compare_values(ours, estimate(Moments.pair(3, 6, 14, 4, 6, 9), RatioOf(0, 1)))
    assert json_clean(comparison)["undefined"]["p_value"]["code"] == "denominator_zero"


# --------------------------------------------------------------------------
# CUPED against OLS: post ~ treatment + centred pre
# --------------------------------------------------------------------------


def _cuped_data(seed: int, n: int = 2000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    treat = (rng.random(n) < 0.45).astype(int)
    pre = revenue(rng, n, 0.5, 30.0)
    post = 0.6 * pre + revenue(rng, n, 0.3, 20.0) + 3.0 * treat
    return pd.DataFrame({"post": post, "pre": pre, "treatment": treat})


def test_cuped_mean__random_data__theta_and_lift_equal_ols_coefficients() -> None:
    df = _cuped_data(5)
    c, t = df[df.treatment == 0], df[df.treatment == 1]

    ours = cuped([arm2(c.post, c.pre), arm2(t.post, t.pre)], MeanOf(0), MeanOf(1))
    comparison = compare_values(*ours.estimates)

    fit = smf.ols("post ~ treatment + I(pre - pre.mean())", data=df).fit()
    assert ours.theta == pytest.approx(fit.params["I(pre - pre.mean())"], rel=1e-9)
    assert comparison.absolute_lift == pytest.approx(fit.params["treatment"], rel=1e-9)
    # The intercept is the control's adjusted mean (pre centred at the overall mean)
    assert ours.estimates[0].value == pytest.approx(fit.params["Intercept"], rel=1e-9)
    # Welch on the adjusted per-customer values Y - theta (X - mean X), as scipy computes it
    adjusted = df.post - ours.theta * (df.pre - df.pre.mean())
    ref = sps.ttest_ind(adjusted[df.treatment == 1], adjusted[df.treatment == 0], equal_var=False)
    assert comparison.statistic == pytest.approx(ref.statistic, rel=1e-9)
    assert comparison.p_value == pytest.approx(ref.pvalue, rel=1e-6)
    # and the variance reduction is the pooled within-arm rho^2
    resid = fit.resid
    within = df.post - df.groupby("treatment").post.transform("mean")
    assert ours.variance_reduction == pytest.approx(1 - (resid**2).sum() / (within**2).sum(), rel=1e-9)
    assert ours.variance_reduction > 0.3


def test_cuped_conversion__binary_post_and_pre__matches_ols() -> None:
    rng = np.random.default_rng(9)
    n = 3000
    treat = (rng.random(n) < 0.5).astype(int)
    pre = (rng.random(n) < 0.2).astype(float)
    post = (rng.random(n) < 0.05 + 0.3 * pre + 0.02 * treat).astype(float)
    df = pd.DataFrame({"post": post, "pre": pre, "treatment": treat})
    c, t = df[df.treatment == 0], df[df.treatment == 1]

    ours = cuped([arm2(c.post, c.pre), arm2(t.post, t.pre)], MeanOf(0), MeanOf(1))

    fit = smf.ols("post ~ treatment + I(pre - pre.mean())", data=df).fit()
    assert ours.theta == pytest.approx(fit.params["I(pre - pre.mean())"], rel=1e-9)
    assert ours.estimates[1].value - ours.estimates[0].value == pytest.approx(fit.params["treatment"], rel=1e-9)


def test_cuped_mean__three_arms__one_theta_from_ols_with_arm_dummies() -> None:
    df = _cuped_data(13, 1500)
    df["arm"] = np.random.default_rng(1).integers(0, 3, len(df))
    arms = [arm2(g.post, g.pre) for _, g in df.groupby("arm")]
    ours = cuped(arms, MeanOf(0), MeanOf(1))
    fit = smf.ols("post ~ C(arm) + I(pre - pre.mean())", data=df).fit()
    assert ours.theta == pytest.approx(fit.params["I(pre - pre.mean())"], rel=1e-9)
    assert ours.estimates[2].value - ours.estimates[0].value == pytest.approx(fit.params["C(arm)[T.2]"], rel=1e-9)


def test_cuped_ratio__orders_and_revenue__theta_from_ols_on_linearised_values() -> None:
    rng = np.random.default_rng(21)
    n = 2000
    treat = (rng.random(n) < 0.5).astype(int)
    pre_orders = rng.poisson(1.0, n).astype(float)
    pre_rev = pre_orders * rng.lognormal(3.5, 0.4, n)
    orders = rng.poisson(0.5 + 0.5 * pre_orders).astype(float)
    rev = orders * (0.5 * pre_rev / np.maximum(pre_orders, 1) + rng.lognormal(3.0, 0.4, n))
    df = pd.DataFrame({"rev": rev, "orders": orders, "prev": pre_rev, "preo": pre_orders, "treatment": treat})
    groups = [df[df.treatment == 0], df[df.treatment == 1]]

    ours = cuped([arm2(g.rev, g.orders, g.prev, g.preo) for g in groups], RatioOf(0, 1), RatioOf(2, 3))

    # Reference: per arm, influence values of both ratios, then OLS slope with arm dummies.
    parts = []
    for g in groups:
        r, rp = g.rev.sum() / g.orders.sum(), g.prev.sum() / g.preo.sum()
        parts.append(
            pd.DataFrame(
                {
                    "lf": (g.rev - r * g.orders) / g.orders.mean(),
                    "lg": (g.prev - rp * g.preo) / g.preo.mean(),
                    "treatment": g.treatment,
                }
            )
        )
    lin = pd.concat(parts)
    fit = smf.ols("lf ~ treatment + lg", data=lin).fit()
    assert ours.applied and ours.theta == pytest.approx(fit.params["lg"], rel=1e-8)
    for g, est in zip(groups, ours.estimates, strict=True):
        r, rp = g.rev.sum() / g.orders.sum(), g.prev.sum() / g.preo.sum()
        overall = df.prev.sum() / df.preo.sum()
        assert est.value == pytest.approx(r - ours.theta * (rp - overall), rel=1e-9)
    assert 0 < ours.variance_reduction < 1


def test_cuped__no_pre_period_activity__falls_back_with_reason() -> None:
    rng = np.random.default_rng(3)
    post_c, post_t = revenue(rng, 300, 0.3, 40), revenue(rng, 300, 0.3, 40)
    ours = cuped([arm2(post_c, np.zeros(300)), arm2(post_t, np.zeros(300))], MeanOf(0), MeanOf(1))
    assert not ours.applied and ours.theta is None
    assert ours.undefined["theta"].code == "no_pre_period_data"
    assert ours.estimates[0].value == pytest.approx(post_c.mean())
    json_clean(ours)


def test_cuped_ratio__no_pre_orders__falls_back_with_denominator_reason() -> None:
    zeros = np.zeros(10)
    m = arm2(np.arange(10.0), np.ones(10), zeros, zeros)
    ours = cuped([m, m], RatioOf(0, 1), RatioOf(2, 3))
    assert not ours.applied and ours.undefined["theta"].code == "denominator_zero"


# --------------------------------------------------------------------------
# Capping
# --------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 5, 99, 100, 101, 1000])
@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99, 1.0])
def test_cap_rank__any_n__same_value_as_numpy_inverted_cdf(n: int, q: float) -> None:
    values = np.arange(1, n + 1, dtype=float) * 3.0
    assert values[cap_rank(n, q) - 1] == np.percentile(values, 100 * q, method="inverted_cdf")


def test_cap_rank__hand_worked__caps_the_outlier() -> None:
    # 5 customers 1, 2, 3, 4, 100; 80th percentile: rank ceil(0.8 * 5) = 4 -> cap 4
    values = sorted([100, 3, 1, 4, 2])
    cap = values[cap_rank(5, 0.8) - 1]
    assert cap == 4
    assert [min(v, cap) for v in values] == [1, 2, 3, 4, 4]
    assert cap_rank(100, 0.99) == 99  # not 100 from 0.99 * 100 = 99.00000000000001
    assert cap_rank(0, 0.9) is None


# --------------------------------------------------------------------------
# Power
# --------------------------------------------------------------------------


@pytest.mark.parametrize("ratio", [1.0, 0.25, 3.0])
def test_value_sample_size__mean_metric__matches_normal_ind_power(ratio: float) -> None:
    ours = value_sample_size(40.0, 900.0, 0.05, ratio=ratio)
    d = 40.0 * 0.05 / 30.0
    ref = NormalIndPower().solve_power(effect_size=d, alpha=0.05, power=0.8, ratio=ratio)
    assert ours.effect_size == pytest.approx(d, rel=1e-12)
    assert abs(ours.required_control - ref) <= 1.0
    assert abs(ours.required_treatment - ratio * ref) <= 1.0


def test_value_sample_size__hand_worked__sixteen_sigma_squared_rule_and_cuped() -> None:
    # sigma^2 = 100, delta = 1: n = 2 (1.96 + 0.8416)^2 * 100 = 1569.8 per arm
    plain = value_sample_size(10.0, 100.0, 0.1)
    assert plain.required_control == 1570
    # CUPED removing 40% of the variance needs 60% of the customers
    with_cuped = value_sample_size(10.0, 100.0, 0.1, variance_reduction=0.4)
    assert with_cuped.required_control == math.ceil(0.6 * 1569.7759)


def test_value_sample_size__flat_metric_or_zero_effect__null_with_reason() -> None:
    assert value_sample_size(10.0, 0.0, 0.1).undefined["required_control"].code == "zero_variance"
    assert value_sample_size(0.0, 5.0, 0.1).undefined["required_control"].code == "mde_zero"


# --------------------------------------------------------------------------
# Ratio metrics at small arms: t with the denominator's units (Cochran 6.13, Satterthwaite)
# --------------------------------------------------------------------------


def _buyers_arm(rng: np.random.Generator, n: int, buyers: int) -> tuple[Moments, np.ndarray]:
    """n customers, ``buyers`` of them with one order (revenue log-normal), the rest 0/0."""
    revenue = np.zeros(n)
    revenue[:buyers] = np.round(rng.lognormal(np.log(45.0), 0.8, buyers) * 100)
    orders = (np.arange(n) < buyers).astype(int)
    return Moments.of_values([[int(r), int(o)] for r, o in zip(revenue, orders, strict=True)]), revenue[:buyers]


def test_compare_values_ratio__one_order_per_buyer__welch_t_on_the_buyers_order_values() -> None:
    # Every denominator 0 or 1: average order value = the buyers' mean order value, so the
    # corrected ratio test must be exactly Welch's t test on the buyers' values (scipy).
    rng = np.random.default_rng(7)
    control, control_values = _buyers_arm(rng, 500, 60)
    treatment, treatment_values = _buyers_arm(rng, 480, 75)
    result = compare_values(estimate(control, RatioOf(0, 1)), estimate(treatment, RatioOf(0, 1)), distribution="t")
    reference = sps.ttest_ind(treatment_values, control_values, equal_var=False)
    assert result.statistic == pytest.approx(reference.statistic, rel=TOL)
    assert result.df == pytest.approx(reference.df, rel=TOL)
    assert result.p_value == pytest.approx(reference.pvalue, rel=TOL)
    low, high = CompareMeans(DescrStatsW(treatment_values), DescrStatsW(control_values)).tconfint_diff(usevar="unequal")
    assert result.absolute_lift_ci.low == pytest.approx(low, rel=TOL)
    assert result.absolute_lift_ci.high == pytest.approx(high, rel=TOL)


def test_estimate_ratio__orders_1_2_3__kish_units_hand_worked() -> None:
    # Denominators 1, 2, 3 and two zeros: (1 + 2 + 3)^2 / (1 + 4 + 9) = 36 / 14 units.
    moments = Moments.of_values([[10, 1], [30, 2], [50, 3], [0, 0], [0, 0]])
    assert estimate(moments, RatioOf(0, 1)).units == pytest.approx(36 / 14, rel=TOL)
    assert estimate(moments, MeanOf(0)).units is None


def test_compare_values_ratio_cuped__theta_estimated__one_degree_of_freedom_less_per_arm() -> None:
    # After CUPED each arm's df is m - 2 and its variance v (n-1)/n m/(m-2) (hand-worked from
    # the adjusted estimates' delta variances).
    rng = np.random.default_rng(11)
    arms = []
    for n, buyers in ((400, 40), (400, 50)):
        rows = []
        for i in range(n):
            pre_orders = int(rng.integers(0, 3))
            pre_revenue = int(rng.integers(1000, 9000)) * pre_orders
            orders = 1 if i < buyers else 0
            rows.append(
                [int(rng.integers(1000, 9000)) * orders + pre_revenue // 10 * orders, orders, pre_revenue, pre_orders]
            )
        arms.append(Moments.of_values(rows))
    adjusted = cuped(arms, RatioOf(0, 1), RatioOf(2, 3))
    assert adjusted.applied
    c, t = adjusted.estimates
    assert (c.units, t.units, c.covariates, t.covariates) == (40, 50, 1, 1)
    a = t.variance * 399 / 400 * 50 / 48 / 400
    b = c.variance * 399 / 400 * 40 / 38 / 400
    result = compare_values(c, t, distribution="t")
    assert result.se == pytest.approx(math.sqrt(a + b), rel=TOL)
    assert result.df == pytest.approx((a + b) ** 2 / (a * a / 48 + b * b / 38), rel=TOL)


def test_compare_values_ratio__one_buyer_in_an_arm__null_with_too_few_denominator_units() -> None:
    rng = np.random.default_rng(3)
    control, _ = _buyers_arm(rng, 200, 1)
    treatment, _ = _buyers_arm(rng, 200, 30)
    result = compare_values(estimate(control, RatioOf(0, 1)), estimate(treatment, RatioOf(0, 1)), distribution="t")
    assert result.p_value is None
    assert result.undefined["p_value"].code == "too_few_denominator_units"
    assert result.absolute_lift is not None
