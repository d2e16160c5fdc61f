"""experiments.stats.guardrails: one-sided harm test beyond a non-inferiority margin, against
statsmodels called directly and for consistency of p-value and bound."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import optimize, stats
from statsmodels.stats import proportion as smp

from experiments.stats import Arm, harm_test

pytestmark = pytest.mark.pure


@pytest.mark.parametrize(("xc", "xt"), [(50, 75), (40, 40), (60, 45), (5, 12)])
def test_harm_test__margin_zero__one_sided_pooled_z_of_statsmodels(xc: int, xt: int) -> None:
    result = harm_test(Arm(5000, xc), Arm(4000, xt))
    _, p = smp.proportions_ztest([xt, xc], [4000, 5000], alternative="larger")
    assert result.p_value == pytest.approx(p, abs=1e-12)


def test_harm_test__positive_margin__restricted_mle_score_statistic_by_scipy() -> None:
    # Independent check at delta = 0.004: maximise the binomial likelihood under
    # p_t - p_c = delta numerically, then z = (d - delta) / sqrt(var at the restricted MLE).
    xc, nc, xt, nt, delta = 60, 3000, 85, 3000, 0.004

    def negloglik(pc: float) -> float:
        pt = pc + delta
        return -(xc * np.log(pc) + (nc - xc) * np.log(1 - pc) + xt * np.log(pt) + (nt - xt) * np.log(1 - pt))

    pc = optimize.minimize_scalar(
        negloglik, bounds=(1e-9, 1 - delta - 1e-9), method="bounded", options={"xatol": 1e-13}
    ).x
    pt = pc + delta
    z = (xt / nt - xc / nc - delta) / np.sqrt(pt * (1 - pt) / nt + pc * (1 - pc) / nc)
    assert harm_test(Arm(nc, xc), Arm(nt, xt), margin=delta).p_value == pytest.approx(stats.norm.sf(z), abs=1e-7)


@pytest.mark.parametrize("sequential", [False, True])
def test_harm_test__random_counts__p_below_alpha_iff_bound_above_margin(sequential: bool) -> None:
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(200, 20_000))
        xc = int(rng.binomial(n, 0.02))
        xt = int(rng.binomial(n, float(rng.uniform(0.01, 0.05))))
        margin = float(rng.choice([0.0, 0.002, 0.01]))
        result = harm_test(Arm(n, xc), Arm(n, xt), margin=margin, sequential=sequential, expected_n=2 * n)
        if result.p_value is None or abs(result.bound - margin) < 1e-9:
            continue
        assert (result.p_value < 0.05) == (result.bound > margin)


def test_harm_test__empty_arm__null_with_reason() -> None:
    result = harm_test(Arm(0, 0), Arm(10, 1))
    assert result.p_value is None and result.undefined["p_value"].code == "no_traffic"
    json.dumps(result.to_dict(), allow_nan=False)
