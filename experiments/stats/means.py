"""Two arms of a value metric: Welch's test, relative lift by the delta method.

Input: one ``Estimate`` per arm (``experiments.stats.moments``): its value (a mean, a ratio,
or a CUPED-adjusted one) and its per-customer variance v, so Var(estimate) = v / n.

Absolute difference d = value_t - value_c, se^2 = v_t / n_t + v_c / n_c (unpooled: the
arms may differ in spread, and a coupon changes the spread of revenue).

``distribution="t"`` (default): Welch's t test with Welch-Satterthwaite degrees of freedom
(Welch 1947, Biometrika 34:28)::

    df = se^4 / ( (v_t/n_t)^2 / (n_t - 1) + (v_c/n_c)^2 / (n_c - 1) )
    t = d / se,  p = 2 P(T_df > |t|),  interval d +/- t_{df, 1-alpha/2} se

= scipy.stats.ttest_ind(treatment, control, equal_var=False) and statsmodels
CompareMeans(DescrStatsW(treatment), DescrStatsW(control)).ttest_ind(usevar="unequal") /
.tconfint_diff(usevar="unequal") on the per-customer values.

``distribution="normal"``: the same statistic against N(0, 1) (CompareMeans.ztest_ind /
zconfint_diff with usevar="unequal"); what the sequential mode and ratio metrics use.

``sequential=True``: the always-valid normal-mixture confidence sequence and p-value of
``experiments.stats.sequential`` with this se (valid for any metric whose estimate is
asymptotically normal: Waudby-Smith et al. 2023, the asymptotic CS).

Relative lift r = value_t / value_c - 1 with the delta-method standard error (Deng,
Knoblich & Lu 2018, section 3.3; gbstats ``difference_type="relative"``)::

    se_r^2 = v_t / (n_t value_c^2) + value_t^2 v_c / (n_c value_c^4)

and interval r +/- crit se_r with the same critical value (t_df, z, or the sequential
half-width factor) as the absolute difference.  Undefined when the control's value is 0.

Ratio metrics (revenue / orders) with ``distribution="t"``: small-sample correction by the
denominator's units.  A ratio's linearised value l_i = (y_i - R x_i) / mean(x) is 0 for every
customer without a denominator (no order), so with few buyers the delta-method variance
(ddof over all n customers) is an estimate from m buyers and a normal reference is liberal
(bench/values_decisions.py, A/A at 500 per arm, ~63 buyers: 5.8% [5.3, 6.2] at alpha 5%).
Each arm with ``Estimate.units`` = m (Kish's effective number of customers with a
denominator) and k = 1 + ``covariates`` estimated parameters (the ratio; CUPED's theta) uses::

    v'_a  = v_a (n_a - 1) / n_a * m_a / (m_a - k)        df_a = m_a - k
    df    = se^4 / sum_a (v'_a / n_a)^2 / df_a            (Welch-Satterthwaite on the v'_a)

i.e. the classical variance of the ratio estimator over the m units with ddof = k (Cochran
1977, Sampling Techniques, 3rd ed., eq. 6.13: v(R) = sum (y_i - R x_i)^2 / (m (m - 1) xbar^2),
and one more degree of freedom per estimated regression coefficient, as in OLS), read
against Student's t with Satterthwaite's degrees of freedom (Satterthwaite 1946, Biometrics
Bulletin 2:110).  When every denominator is 0 or 1 this IS Welch's t test on the buyers'
numerators (scipy.stats.ttest_ind(equal_var=False); the tests check it); when every
customer has a denominator of 1 it is Welch's test on the means.  Measured A/A at 500, 1,000
and 2,000 per arm: README, "values_decisions".  Undefined (with a reason) when an arm has
m <= k units.  ``distribution="normal"`` and ``sequential`` keep the plain delta method
(asymptotic).  Mean metrics (``units`` None) keep Welch's n - 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from experiments.stats._common import (
    Interval,
    Reason,
    _check_probability,
    _jsonable,
    _two_sided_p,
    _z_crit,
)
from experiments.stats._lazy import lazy_module
from experiments.stats.guardrails import HarmTest
from experiments.stats.moments import NO_TRAFFIC, TOO_FEW, Estimate

# Loaded on first use: see experiments.stats._lazy (not at Django setup).
special = lazy_module("scipy.special")
stats = lazy_module("scipy.stats")

Distribution = Literal["t", "normal"]
DISTRIBUTIONS: Final[tuple[str, ...]] = ("t", "normal")

ZERO_VARIANCE = Reason(
    "zero_variance",
    "Every customer in both arms has the same value, so the standard error is zero and the test cannot be computed.",
)
TOO_FEW_UNITS = Reason(
    "too_few_denominator_units",
    "An arm has too few customers with a denominator (e.g. buyers for a per-order metric) to estimate the ratio's "
    "spread.",
)
CONTROL_ZERO = Reason("control_value_zero", "The control's value is 0, so a relative lift would divide by zero.")

_COMPARATIVE = (
    "absolute_lift",
    "absolute_lift_ci",
    "relative_lift",
    "relative_lift_ci",
    "statistic",
    "df",
    "p_value",
    "se",
)


@dataclass(frozen=True, slots=True)
class ValueComparison:
    """Treatment versus control for a value metric.  ``None`` fields are in ``undefined``.

    statistic: Welch t (distribution "t") or z; df: Welch-Satterthwaite (t only);
    se: standard error of the absolute lift; intervals have level 1 - alpha (or are
    confidence sequences when ``sequential``).
    """

    control: Estimate
    treatment: Estimate
    alpha: float
    distribution: str
    sequential: bool
    control_value: float | None
    treatment_value: float | None
    absolute_lift: float | None
    absolute_lift_ci: Interval | None
    relative_lift: float | None
    relative_lift_ci: Interval | None
    statistic: float | None
    df: float | None
    se: float | None
    p_value: float | None
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)

    @property
    def z(self) -> float | None:
        """The test statistic (t or z), under the name the conversion comparisons use."""
        return self.statistic


def value_harm_test(
    comparison: ValueComparison, margin: float = 0.0, alpha: float = 0.05, expected_n: float | None = None
) -> HarmTest:
    """One-sided harm test of a value metric: H1 value_t - value_c > margin (in the
    metric's units).  Fixed horizon: p = 1 - Phi((d - margin) / se), lower bound
    d - z_{1-alpha} se (normal, as the delta method); sequential (``comparison.sequential``):
    the one-sided normal-mixture bound and always-valid p (``experiments.stats.sequential``)."""
    from experiments.stats.sequential import (
        DEFAULT_EXPECTED_N,
        always_valid_p_one_sided,
        cs_halfwidth_one_sided,
        mixture_rho,
    )

    alpha = _check_probability("alpha", alpha)
    if not (math.isfinite(margin) and margin >= 0.0):
        raise ValueError(f"margin must be >= 0, got {margin!r}")
    d, se = comparison.absolute_lift, comparison.se
    if d is None or se is None:
        reason = comparison.undefined.get("p_value") or ZERO_VARIANCE
        return HarmTest(margin, comparison.sequential, None, None, {"p_value": reason, "bound": reason})
    if comparison.sequential:
        n = comparison.control.n + comparison.treatment.n
        rho = mixture_rho(alpha, expected_n or DEFAULT_EXPECTED_N, two_sided=False)
        p = always_valid_p_one_sided(d, se, n, rho, null=margin)
        return HarmTest(margin, True, p, d - cs_halfwidth_one_sided(se, n, alpha, rho))
    p = float(special.ndtr(-(d - margin) / se))
    return HarmTest(margin, False, p, d - float(-special.ndtri(alpha)) * se)


def welch_df(vt: float, nt: int, vc: float, nc: int) -> float:
    """Welch-Satterthwaite degrees of freedom (module docstring)."""
    a, b = vt / nt, vc / nc
    return (a + b) ** 2 / (a * a / (nt - 1) + b * b / (nc - 1))


def _units_corrected(arm: Estimate) -> tuple[float, float] | None:
    """(v', df) of one arm (module docstring, ratio metrics); None when m <= k."""
    assert arm.variance is not None
    if arm.units is None:
        return arm.variance, arm.n - 1.0
    k = 1 + arm.covariates
    if not arm.units > k:
        return None
    return arm.variance * (arm.n - 1) / arm.n * arm.units / (arm.units - k), arm.units - k


def compare_values(
    control: Estimate,
    treatment: Estimate,
    alpha: float = 0.05,
    distribution: str = "t",
    sequential: bool = False,
    expected_n: float | None = None,
) -> ValueComparison:
    """Did the treatment change the metric's value?  (Formulas in the module docstring.)"""
    alpha = _check_probability("alpha", alpha)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"distribution must be one of {DISTRIBUTIONS}, got {distribution!r}")
    if sequential:
        distribution = "normal"
    undefined: dict[str, Reason] = {}
    for name, arm in (("control_value", control), ("treatment_value", treatment)):
        if arm.value is None:
            undefined[name] = arm.undefined.get("value", NO_TRAFFIC)

    def finish(**values: Any) -> ValueComparison:
        full = {name: values.get(name) for name in _COMPARATIVE}
        for name in _COMPARATIVE:
            if full[name] is None and name not in undefined:
                undefined[name] = values.get("_reason", ZERO_VARIANCE)
        if distribution != "t" and "df" in undefined:
            undefined["df"] = Reason("not_applicable", "Degrees of freedom apply to the t distribution only.")
        return ValueComparison(
            control,
            treatment,
            alpha,
            distribution,
            sequential,
            control.value,
            treatment.value,
            full["absolute_lift"],
            full["absolute_lift_ci"],
            full["relative_lift"],
            full["relative_lift_ci"],
            full["statistic"],
            full["df"],
            full["se"],
            full["p_value"],
            undefined,
        )

    if control.value is None or treatment.value is None:
        reason = undefined.get("control_value") or undefined["treatment_value"]
        return finish(_reason=reason)
    diff = treatment.value - control.value
    relative = treatment.value / control.value - 1.0 if control.value != 0 else None
    if relative is None:
        undefined["relative_lift"] = undefined["relative_lift_ci"] = CONTROL_ZERO
    if control.variance is None or treatment.variance is None:
        reason = control.undefined.get("variance") or treatment.undefined.get("variance") or TOO_FEW
        return finish(absolute_lift=diff, relative_lift=relative, _reason=reason)
    nt, nc, vt, vc = treatment.n, control.n, treatment.variance, control.variance
    arm_df = (nt - 1.0, nc - 1.0)
    if distribution == "t" and not sequential and (treatment.units is not None or control.units is not None):
        corrected = [_units_corrected(arm) for arm in (treatment, control)]
        if any(c is None for c in corrected):
            return finish(absolute_lift=diff, relative_lift=relative, _reason=TOO_FEW_UNITS)
        (vt, df_t), (vc, df_c) = corrected  # type: ignore[misc]
        arm_df = (df_t, df_c)
    se2 = vt / nt + vc / nc
    if not se2 > 0.0:
        return finish(absolute_lift=diff, relative_lift=relative)
    se = math.sqrt(se2)
    statistic = diff / se
    df: float | None = None
    if sequential:
        # Imported here: sequential imports proportions, which is heavier than needed.
        from experiments.stats.sequential import DEFAULT_EXPECTED_N, always_valid_p, cs_halfwidth, mixture_rho

        n_total = nt + nc
        rho = mixture_rho(alpha, expected_n or DEFAULT_EXPECTED_N)
        crit = cs_halfwidth(se, n_total, alpha, rho) / se
        p = always_valid_p(diff, se, n_total, rho)
    elif distribution == "t":
        a, b = vt / nt, vc / nc
        df = (a + b) ** 2 / (a * a / arm_df[0] + b * b / arm_df[1])
        crit = float(stats.t.isf(alpha / 2.0, df))
        p = float(2.0 * stats.t.sf(abs(statistic), df))
    else:
        crit = _z_crit(alpha)
        p = _two_sided_p(statistic)
    relative_ci: Interval | None = None
    if relative is not None:
        c = control.value
        se_r = math.sqrt(vt / (nt * c * c) + treatment.value**2 * vc / (nc * c**4))
        relative_ci = Interval(relative - crit * se_r, relative + crit * se_r)
        if se_r == 0.0:  # pragma: no cover - se2 > 0 implies se_r > 0 when c != 0
            relative_ci = None
    return finish(
        absolute_lift=diff,
        absolute_lift_ci=Interval(diff - crit * se, diff + crit * se),
        relative_lift=relative,
        relative_lift_ci=relative_ci,
        statistic=statistic,
        df=df,
        se=se,
        p_value=min(max(p, 0.0), 1.0),
    )
