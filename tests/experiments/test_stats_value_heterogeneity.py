"""Heterogeneity of a value metric across layers (experiments.stats.value_heterogeneity)
against statsmodels called directly (combine_effects' Cochran Q; OLS with interaction
terms and HC2 errors + a Wald test) and a hand-worked case.  No database."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats as sps
from statsmodels.stats.meta_analysis import combine_effects

from experiments.stats import Estimate, MeanOf, Moments, RatioOf, estimate, value_heterogeneity

pytestmark = pytest.mark.pure


def mean_estimate(values: np.ndarray) -> Estimate:
    return estimate(Moments.of_values([[float(v)] for v in values]), MeanOf(0))


def test_value_heterogeneity__two_layers_hand_worked__cochran_q() -> None:
    # Given layer a: control 10 (v 4, n 100), treatment 12 (v 9, n 100) -> d 2, V 0.04 + 0.09 = 0.13
    #       layer b: control 10 (v 4, n 400), treatment 10.5 (v 4, n 400) -> d 0.5, V 0.01 + 0.01 = 0.02
    cells = {
        ("a", "control"): Estimate(100, 10.0, 4.0, {}),
        ("a", "offer"): Estimate(100, 12.0, 9.0, {}),
        ("b", "control"): Estimate(400, 10.0, 4.0, {}),
        ("b", "offer"): Estimate(400, 10.5, 4.0, {}),
    }
    result = value_heterogeneity(cells, "control")
    # Then Q = (d_a - d_b)^2 / (V_a + V_b) = 1.5^2 / 0.15 = 15 on 1 df
    assert result.statistic == pytest.approx(15.0, rel=1e-12)
    assert result.df == 1
    assert result.p_value == pytest.approx(sps.chi2.sf(15.0, 1), rel=1e-12)
    assert result.layers == ("a", "b") and result.variants == ("control", "offer")
    assert "differs" in result.message
    json.dumps(result.to_dict(), allow_nan=False)


def test_value_heterogeneity__one_treatment_four_layers__matches_statsmodels_combine_effects() -> None:
    # Given skewed revenue in four layers, the offer's effect larger in two of them
    rng = np.random.default_rng(15)
    cells: dict[tuple[str, str], Estimate] = {}
    effects, variances = [], []
    for i, (n, shift) in enumerate([(300, 0.0), (500, 3.0), (200, 0.0), (800, 6.0)]):
        control = rng.lognormal(3.0, 0.9, n)
        treated = rng.lognormal(3.0, 0.9, n + 17) + shift
        cells[(f"layer{i}", "control")] = mean_estimate(control)
        cells[(f"layer{i}", "offer")] = mean_estimate(treated)
        effects.append(treated.mean() - control.mean())
        variances.append(treated.var(ddof=1) / len(treated) + control.var(ddof=1) / len(control))
    result = value_heterogeneity(cells, "control")
    # Then Q and its df are statsmodels' fixed-effect homogeneity statistic
    reference = combine_effects(np.array(effects), np.array(variances))
    assert result.statistic == pytest.approx(reference.q, rel=1e-9)
    assert result.df == reference.df_resid == 3
    assert result.p_value == pytest.approx(sps.chi2.sf(reference.q, 3), rel=1e-9)


def test_value_heterogeneity__two_treatments_share_the_control__matches_ols_interaction_wald_hc2() -> None:
    # Given two treatments in three layers (their differences share each layer's control)
    rng = np.random.default_rng(7)
    rows = []
    cells: dict[tuple[str, str], Estimate] = {}
    for layer, sizes, shifts in [
        ("a", (150, 160, 170), (0, 1, 4)),
        ("b", (200, 90, 210), (0, 2, 1)),
        ("c", (120, 130, 110), (0, 0, 3)),
    ]:
        for variant, n, shift in zip(("control", "t1", "t2"), sizes, shifts, strict=True):
            y = rng.gamma(2.0, 5.0 + "abc".index(layer), n) + shift
            cells[(layer, variant)] = mean_estimate(y)
            rows += [{"y": v, "layer": layer, "variant": variant} for v in y]
    result = value_heterogeneity(cells, "control")
    # Then it is the Wald test of the variant x layer interaction terms of OLS with HC2 errors
    frame = pd.DataFrame(rows)
    fit = smf.ols("y ~ C(variant, Treatment('control')) * C(layer)", data=frame).fit(cov_type="HC2")
    names = [name for name in fit.params.index if ":" in name]
    restriction = np.zeros((len(names), len(fit.params)))
    for i, name in enumerate(names):
        restriction[i, list(fit.params.index).index(name)] = 1.0
    wald = fit.wald_test(restriction, use_f=False, scalar=True)
    assert result.df == len(names) == 4
    assert result.statistic == pytest.approx(float(wald.statistic), rel=1e-8)
    assert result.p_value == pytest.approx(float(wald.pvalue), rel=1e-6)


def test_value_heterogeneity__ratio_metric__uses_delta_method_variances() -> None:
    # Given average order value (revenue / orders) in two layers
    rng = np.random.default_rng(3)
    cells = {}
    effects, variances = [], []
    for layer, bump in (("new", 0.0), ("loyal", 8.0)):
        per_arm = {}
        for variant, extra in (("control", 0.0), ("offer", bump)):
            orders = rng.poisson(2.0, 400) + 1
            revenue = orders * rng.normal(40.0 + extra, 5.0, 400)
            est = estimate(
                Moments.of_values([[float(r), float(o)] for r, o in zip(revenue, orders, strict=True)]), RatioOf(0, 1)
            )
            cells[(layer, variant)] = est
            per_arm[variant] = est
        effects.append(per_arm["offer"].value - per_arm["control"].value)
        variances.append(sum(e.variance / e.n for e in per_arm.values()))
    result = value_heterogeneity(cells, "control")
    # Then the statistic is (d1 - d2)^2 / (V1 + V2) with the delta-method variances
    expected = (effects[0] - effects[1]) ** 2 / sum(variances)
    assert result.statistic == pytest.approx(expected, rel=1e-12)
    assert result.p_value is not None and result.p_value < 0.05


def test_value_heterogeneity__one_usable_layer__undefined_with_reason() -> None:
    # Given a second layer whose control has one customer (no variance)
    cells = {
        ("a", "control"): Estimate(100, 10.0, 4.0, {}),
        ("a", "offer"): Estimate(100, 12.0, 9.0, {}),
        ("b", "control"): estimate(Moments.of_values([[3.0]]), MeanOf(0)),
        ("b", "offer"): Estimate(50, 10.5, 4.0, {}),
    }
    result = value_heterogeneity(cells, "control")
    # Then null numbers with reasons, a note saying which layer was dropped, JSON-clean
    assert result.statistic is None and result.p_value is None and result.df is None
    assert result.undefined["p_value"].code == "fewer_than_two_layers"
    assert [n.code for n in result.notes] == ["layers_without_control_dropped"]
    json.dumps(result.to_dict(), allow_nan=False)


def test_value_heterogeneity__zero_variance_differences__left_out_with_note() -> None:
    # Given one layer where every customer in both arms spent the same
    cells = {
        ("a", "control"): Estimate(100, 10.0, 4.0, {}),
        ("a", "offer"): Estimate(100, 12.0, 9.0, {}),
        ("b", "control"): Estimate(100, 5.0, 0.0, {}),
        ("b", "offer"): Estimate(100, 5.0, 0.0, {}),
        ("c", "control"): Estimate(100, 10.0, 4.0, {}),
        ("c", "offer"): Estimate(100, 12.0, 9.0, {}),
    }
    result = value_heterogeneity(cells, "control")
    # Then the test runs on the two other layers (same effects: Q = 0, p = 1)
    assert result.layers == ("a", "c") and result.df == 1
    assert result.statistic == pytest.approx(0.0, abs=1e-12) and result.p_value == pytest.approx(1.0)
    assert [n.code for n in result.notes] == ["zero_variance_dropped"]
