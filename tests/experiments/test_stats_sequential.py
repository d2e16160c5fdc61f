"""experiments.stats.sequential: normal-mixture confidence sequences and always-valid
p-values, against gbstats' published fixtures (numbers copied from growthbook's
packages/stats/tests/frequentist/test_tests.py, TestSequentialTTest and
TestSequentialOneSided*), hand-worked cases, scipy, and a bounded simulation of daily looks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import optimize

from experiments.stats import (
    Arm,
    always_valid_p,
    always_valid_p_one_sided,
    compare_sequential,
    cs_halfwidth,
    cs_halfwidth_one_sided,
    mixture_rho,
)

pytestmark = pytest.mark.pure

GB = 5  # gbstats' fixtures are rounded to 5 decimals


def _mean_var(total: float, sum_squares: float, n: int) -> tuple[float, float]:
    """gbstats SampleMeanStatistic: mean and the (n - 1) sample variance."""
    mean = total / n
    return mean, (sum_squares - total * total / n) / (n - 1)


# gbstats fixture arms: stat_a is the control, stat_b the treatment.
_A = _mean_var(1396.87, 52377.9767, 3000)
_B = _mean_var(2422.7, 134698.29, 3461)
_N_A, _N_B = 3000, 3461


def _relative(a: tuple[float, float], b: tuple[float, float], n_a: int, n_b: int) -> tuple[float, float]:
    """Delta-method relative lift and its se, as gbstats (difference_type="relative")."""
    (ma, va), (mb, vb) = a, b
    return mb / ma - 1, math.sqrt(vb / (n_b * ma**2) + va * mb**2 / (n_a * ma**4))


def test_compare_sequential__gbstats_proportion_fixture__same_relative_interval_and_p() -> None:
    # gbstats test_sequential_test_runs_prop: ProportionStatistic(1396, 3000) vs (2422, 3461),
    # default tuning 5000, alpha 0.05 -> expected 0.50386, se 0.03386, ci (0.40098, 0.60675), p 0.
    result = compare_sequential(Arm(3000, 1396), Arm(3461, 2422), alpha=0.05, expected_n=5000)

    assert round(result.relative_lift, GB) == 0.50386
    assert result.relative_lift_ci is not None
    assert (round(result.relative_lift_ci.low, GB), round(result.relative_lift_ci.high, GB)) == (0.40098, 0.60675)
    assert round(result.p_value, GB) == 0.0
    assert result.method == "sequential"


def test_cs_halfwidth__gbstats_sample_mean_fixture_tuning_1000__same_interval() -> None:
    # gbstats test_sequential_test_runs: same sums, n_a = 3000, tuning 1000 ->
    # expected 0.50336, stddev 0.33341, ci (-0.55844, 1.56516), p 1.
    estimate, se = _relative(_A, _B, _N_A, _N_B)
    assert (round(estimate, GB), round(se, GB)) == (0.50336, 0.33341)
    n = _N_A + _N_B
    rho = mixture_rho(0.05, 1000)

    half = cs_halfwidth(se, n, 0.05, rho)

    assert (round(estimate - half, GB), round(estimate + half, GB)) == (-0.55844, 1.56516)
    assert always_valid_p(estimate, se, n, rho) == 1.0


def test_cs_halfwidth_one_sided__gbstats_absolute_fixtures__same_bounds() -> None:
    # gbstats TestSequentialOneSided{Greater,Lesser}TTest.test_one_sided_ttest_absolute:
    # expected 0.23437666666666668, stddev 0.12983081254184736, default tuning 5000;
    # greater -> lower bound -0.12656844172804982, lesser -> upper bound 0.5953217750613832.
    (ma, va), (mb, vb) = _A, _B
    estimate, se = mb - ma, math.sqrt(va / _N_A + vb / _N_B)
    assert estimate == pytest.approx(0.23437666666666668, abs=1e-12)
    assert se == pytest.approx(0.12983081254184736, abs=1e-12)
    rho = mixture_rho(0.05, 5000, two_sided=False)

    half = cs_halfwidth_one_sided(se, _N_A + _N_B, 0.05, rho)

    assert estimate - half == pytest.approx(-0.12656844172804982, abs=1e-12)
    assert estimate + half == pytest.approx(0.5953217750613832, abs=1e-12)


def test_mixture_rho__gbstats_tuning_fixture__closer_guess_gives_narrower_interval() -> None:
    # gbstats test_sequential_test_tuning_as_expected: n = 6461; tuning 10 is worst,
    # 6461 (the true n) best, 10000 in between.
    _, se = _relative(_A, _B, _N_A, _N_B)
    n = _N_A + _N_B
    width = {tuning: cs_halfwidth(se, n, 0.05, mixture_rho(0.05, tuning)) for tuning in (10, 6461, 10000)}
    assert width[10] > width[10000] > width[6461]


@pytest.mark.parametrize("expected_n", [200, 5_000, 1_000_000])
@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1])
def test_mixture_rho__at_expected_n__within_1pct_of_the_tightest_boundary(alpha: float, expected_n: int) -> None:
    # The closed form approximates argmin_rho halfwidth(n = N*); scipy finds the exact one.
    def width(log_rho: float) -> float:
        return cs_halfwidth(1.0, expected_n, alpha, math.exp(log_rho))

    best = optimize.minimize_scalar(width, bounds=(-20, 5), method="bounded", options={"xatol": 1e-10})
    ours = width(math.log(mixture_rho(alpha, expected_n)))
    assert best.fun <= ours <= 1.01 * best.fun


def test_compare_sequential__hand_worked_10_vs_12_percent__interval_and_p() -> None:
    # 500/5000 vs 600/5000, alpha 0.05, N* = 10,000:
    # rho^2 = (-2 ln .05 + ln(1 - 2 ln .05)) / 10000 = (5.99146 + 1.94469) / 10000 = 7.93615e-4,
    # n rho^2 = 7.93615; se = sqrt(.12 x .88 / 5000 + .1 x .9 / 5000) = 0.0062546;
    # half = se sqrt(n) sqrt(2 x 8.93615 x ln(sqrt(8.93615) / .05) / (n rho)^2)
    #      = 0.625460 x sqrt(2 x 8.93615 x 4.09079 / 79361.5) = 0.625460 x 0.0303522 = 0.018984;
    # z = 0.02 / 0.0062546 = 3.19765; ln E = 7.93615 x 10.2250 / (2 x 8.93615) - ln(8.93615) / 2
    #   = 4.54038 - 1.09507 = 3.44531, p = e^-3.44531 = 0.03190.
    result = compare_sequential(Arm(5000, 500), Arm(5000, 600), alpha=0.05, expected_n=10_000)

    assert mixture_rho(0.05, 10_000) ** 2 == pytest.approx(7.93615e-4, rel=1e-5)
    assert result.absolute_lift_ci.low == pytest.approx(0.02 - 0.018984, abs=1e-6)
    assert result.absolute_lift_ci.high == pytest.approx(0.02 + 0.018984, abs=1e-6)
    assert result.z == pytest.approx(3.19765, abs=1e-5)
    assert result.p_value == pytest.approx(0.03190, abs=1e-5)
    # Wider than the fixed-horizon 1.96 se = 0.012259: the price of reading at any time.
    assert 0.018984 > 1.959964 * 0.0062546


def test_always_valid_p__random_cases__below_alpha_iff_interval_leaves_out_null() -> None:
    rng = np.random.default_rng(7)
    for _ in range(2_000):
        n = int(rng.integers(10, 10**7))
        se = float(rng.uniform(1e-4, 1.0)) / math.sqrt(n) * 10
        estimate = float(rng.normal(0, 4 * se))
        alpha = float(rng.choice([0.01, 0.05, 0.1]))
        rho = mixture_rho(alpha, float(rng.integers(100, 10**7)))
        half = cs_halfwidth(se, n, alpha, rho)
        if abs(abs(estimate) - half) < 1e-9 * half:
            continue
        assert (always_valid_p(estimate, se, n, rho) < alpha) == (abs(estimate) > half)
        half1 = cs_halfwidth_one_sided(se, n, alpha, mixture_rho(alpha, 5000, two_sided=False))
        p1 = always_valid_p_one_sided(estimate, se, n, mixture_rho(alpha, 5000, two_sided=False))
        if abs(estimate - half1) > 1e-9 * half1:
            assert (p1 < alpha) == (estimate - half1 > 0)


def test_compare_sequential__28_daily_looks_aa__any_look_significant_at_most_alpha() -> None:
    # Given 1,000 A/A experiments, 500 new customers per arm per day, 10% rate, 28 days
    rng = np.random.default_rng(20261207)
    sims, days, daily = 1_000, 28, 500
    control = rng.binomial(daily, 0.10, size=(sims, days)).cumsum(axis=1)
    treatment = rng.binomial(daily, 0.10, size=(sims, days)).cumsum(axis=1)
    # When each is read every day and stopped at the first p < 0.05
    ever = 0
    for i in range(sims):
        for day in range(days):
            n = daily * (day + 1)
            p = compare_sequential(
                Arm(n, int(control[i, day])), Arm(n, int(treatment[i, day])), expected_n=2 * daily * days
            ).p_value
            if p is not None and p < 0.05:
                ever += 1
                break
    # Then at most 5% are ever called significant (99% upper band over 1,000 runs: 6.8%)
    assert ever / sims <= 0.068


@pytest.mark.parametrize(
    ("control", "treatment", "field", "code"),
    [
        (Arm(0, 0), Arm(10, 1), "p_value", "no_traffic"),
        (Arm(100, 0), Arm(100, 0), "p_value", "zero_variance"),
        (Arm(100, 0), Arm(100, 3), "relative_lift_ci", "control_rate_zero"),
    ],
)
def test_compare_sequential__degenerate_counts__null_with_reason_never_nan(
    control: Arm, treatment: Arm, field: str, code: str
) -> None:
    result = compare_sequential(control, treatment)
    assert getattr(result, field) is None
    assert result.undefined[field].code == code
    json.dumps(result.to_dict(), allow_nan=False)


# --- Power of the always-valid test, and power at a fixed audience --------------------------


def test_sequential_sample_size__at_the_requirement__simulated_power_matches_stated() -> None:
    from experiments.stats import sequential_power, sequential_sample_size

    plan = sequential_sample_size(0.10, 0.20, alpha=0.05, power=0.8)
    n = plan.required_control
    assert sequential_power(0.10, 0.12, n, n, 0.05) >= 0.8 > sequential_power(0.10, 0.12, n - 50, n - 50, 0.05)
    # 2,000 simulated experiments read once at that size: ~80% reject (99% band +/- 2.3 points)
    rng = np.random.default_rng(11)
    control = rng.binomial(n, 0.10, size=2_000)
    treatment = rng.binomial(n, 0.12, size=2_000)
    rejected = sum(
        compare_sequential(Arm(n, int(c)), Arm(n, int(t)), expected_n=2 * n).p_value < 0.05
        for c, t in zip(control, treatment, strict=True)
    )
    assert abs(rejected / 2_000 - 0.8) <= 0.023


def test_detectable_lift__fixed_horizon__inverts_normal_ind_power() -> None:
    from statsmodels.stats.power import NormalIndPower

    from experiments.stats import detectable_lift

    lift = detectable_lift(0.10, 3_000, 3_000, alpha=0.05 / 4, power=0.8).relative_lift
    h = 2 * math.asin(math.sqrt(0.10 * (1 + lift))) - 2 * math.asin(math.sqrt(0.10))
    # statsmodels' power at that lift (including the far tail, negligible here) is 80%
    achieved = NormalIndPower().power(effect_size=h, nobs1=3_000, alpha=0.05 / 4, ratio=1.0)
    assert achieved == pytest.approx(0.8, abs=1e-6)


def test_detectable_lift__no_baseline__null_with_reason() -> None:
    from experiments.stats import detectable_lift

    result = detectable_lift(0.0, 3_000, 3_000)
    assert result.relative_lift is None and result.undefined["relative_lift"].code == "baseline_rate_out_of_range"
    json.dumps(result.to_dict(), allow_nan=False)


def test_family_alpha__holm_family_of_four__bonferroni_level() -> None:
    from experiments.stats import family_alpha

    assert family_alpha(0.05, 4) == 0.0125
    assert family_alpha(0.05, 0) == 0.05
