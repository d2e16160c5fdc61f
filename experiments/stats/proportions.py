"""Two independent proportions: ``compare(control, treatment, alpha, method)``.

The method table (which statsmodels/scipy call each method reproduces) is in the
package docstring (``experiments.stats``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from experiments.stats._common import (
    Arm,
    Interval,
    Reason,
    _check_probability,
    _finite_interval,
    _finite_or_none,
    _IntervalOutcome,
    _jsonable,
    _two_sided_p,
    _z_crit,
)
from experiments.stats._lazy import lazy_module

# Loaded on first use: see experiments.stats._lazy (not at Django setup).
optimize = lazy_module("scipy.optimize")
stats = lazy_module("scipy.stats")

# The decision test of the lift reports (issue 14, bullet 4).  Pooled z for the p-value:
# under "no difference" both arms share one rate, so the null variance is estimated from
# the pooled rate p = (x_t + x_c)/(n_t + n_c), not from each arm's own rate.  With unequal
# splits (10/90) and low rates the unpooled (Wald) variance is too small exactly when the
# small arm happens to convert little, and Wald's type-I error was measured at 6.5-8.7%;
# the pooled test stays <= 5% (tests/experiments/test_stats_simulation.py).  Its interval
# is the score interval without the N/(N-1) factor (Mee 1984), which is the set of
# differences v the same score test does not reject: at v = 0 the restricted MLE is the
# pooled rate, so "the interval excludes 0" <=> "pooled p < alpha", exactly.  The
# interval and the unadjusted p-value can never disagree (Agresti, Categorical Data
# Analysis, 3rd ed., 3.1.5 and 1.4.2: inverting a score test).
DECISION_METHOD: Final[str] = "pooled"

METHODS: Final[tuple[str, ...]] = (
    "wald",
    "pooled",
    "score",
    "agresti-caffo",
    "newcombe",
    "fisher",
)

# --------------------------------------------------------------------------
# compare(): two independent proportions
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Comparison:
    """Result of ``compare``.  ``None`` fields are explained in ``undefined``.

    absolute_lift = treatment_rate - control_rate;
    relative_lift = treatment_rate / control_rate - 1;
    z, p_value: two-sided test of "no difference" with the chosen ``method``;
    intervals have level 1 - alpha and are not adjusted for multiplicity.
    """

    control: Arm
    treatment: Arm
    method: str
    alpha: float
    control_rate: float | None
    treatment_rate: float | None
    absolute_lift: float | None
    absolute_lift_ci: Interval | None
    relative_lift: float | None
    relative_lift_ci: Interval | None
    z: float | None
    p_value: float | None
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (floats finite or None; reasons under "undefined")."""
        return _jsonable(self)


_TestOutcome = tuple[float | None, float | None, dict[str, Reason]]


def _zero_variance(message: str) -> Reason:
    return Reason("zero_variance", message)


_BOTH_FLAT = "Both arms converted at 0% (or both at 100%), so there is no variation to test."
_WALD_FLAT = (
    "Every customer in each arm behaved the same way (each arm at 0% or 100%), "
    "so the standard error is zero and this test cannot be computed."
)


def _z_outcome(diff: float, var: float, flat_message: str) -> _TestOutcome:
    if var <= 0.0:
        reason = _zero_variance(flat_message)
        return None, None, {"z": reason, "p_value": reason}
    z = diff / math.sqrt(var)
    return z, _two_sided_p(z), {}


def _test_wald(xt: int, nt: int, xc: int, nc: int) -> _TestOutcome:
    """Unpooled two-proportion z-test (Wald).

    z = (p_t - p_c) / sqrt(p_t(1-p_t)/n_t + p_c(1-p_c)/n_c)
    statsmodels.stats.proportion.test_proportions_2indep(t, nt, c, nc,
    method="wald"); Fagerland, Lydersen & Laake (2015), Stat Methods Med Res 24:224.
    """
    pt, pc = xt / nt, xc / nc
    var = pt * (1 - pt) / nt + pc * (1 - pc) / nc
    return _z_outcome(pt - pc, var, _WALD_FLAT)


def _test_agresti_caffo(xt: int, nt: int, xc: int, nc: int) -> _TestOutcome:
    """Wald test on counts with one success and one failure added per arm.

    p~ = (x + 1) / (n + 2); z = (p~_t - p~_c) / sqrt(sum p~(1-p~)/(n+2))
    test_proportions_2indep(..., method="agresti-caffo"); Agresti & Caffo (2000).
    """
    pt, pc = (xt + 1) / (nt + 2), (xc + 1) / (nc + 2)
    var = pt * (1 - pt) / (nt + 2) + pc * (1 - pc) / (nc + 2)
    return _z_outcome(pt - pc, var, _BOTH_FLAT)


def _test_pooled(xt: int, nt: int, xc: int, nc: int) -> _TestOutcome:
    """Pooled two-proportion z-test (the classic "z-test for two proportions").

    p = (x_t + x_c) / (n_t + n_c); z = (p_t - p_c) / sqrt(p(1-p)(1/n_t + 1/n_c))
    statsmodels.stats.proportion.proportions_ztest([t, c], [nt, nc]); equals the
    score test without small-sample correction; Agresti, Categorical Data
    Analysis (3rd ed.) section 3.1.
    """
    pooled = (xt + xc) / (nt + nc)
    var = pooled * (1 - pooled) * (1.0 / nt + 1.0 / nc)
    return _z_outcome(xt / nt - xc / nc, var, _BOTH_FLAT)


def _mn_score_parts(x1: int, n1: int, x0: int, n0: int, value: float, correction: bool) -> tuple[float, float]:
    """Numerator and variance of the Miettinen-Nurminen score statistic for diff.

    H0: p1 - p0 = value.  The restricted MLE (prop1, prop0 with prop1 - prop0 =
    value) is the closed-form root of a cubic (Farrington & Manning 1990,
    Stat Med 9:1447; Miettinen & Nurminen 1985, Stat Med 4:213):
        L3 = N, L2 = (n1 + 2 n0) v - N - C, L1 = (x0 v - N - 2 x0) v + C,
        L0 = x0 v (1 - v),
        q = (L2/3L3)^3 - L1 L2/(6 L3^2) + L0/(2 L3),
        p = sign(q) sqrt((L2/3L3)^2 - L1/(3 L3)),
        a = (pi + arccos(q / p^3)) / 3,  prop0 = 2 p cos(a) - L2/(3 L3).
    var = [prop1(1-prop1)/n1 + prop0(1-prop0)/n0] * (N/(N-1) if correction)
    numerator = p1 - p0 - value.  This is statsmodels'
    score_test_proportions_2indep(compare="diff") except for L1, where
    statsmodels 0.15 has ``x0`` in place of the first ``n0`` (issue #10269);
    L1 follows from d/dp0 of the restricted log-likelihood
    (x1 - n1 p1) p0 (1 - p0) + (x0 - n0 p0) p1 (1 - p1) = 0 with p1 = p0 + v.
    """
    nobs, count = n1 + n0, x1 + x0
    if value == 0:
        prop0 = prop1 = count / nobs
    else:
        l3 = nobs
        l2 = (n1 + 2 * n0) * value - nobs - count
        l1 = (n0 * value - nobs - 2 * x0) * value + count
        l0 = x0 * value * (1 - value)
        q = (l2 / (3 * l3)) ** 3 - l1 * l2 / (6 * l3**2) + l0 / (2 * l3)
        p = math.copysign(math.sqrt(max((l2 / (3 * l3)) ** 2 - l1 / (3 * l3), 0.0)), q)
        if p == 0.0:
            prop0 = -l2 / (3 * l3)
        else:
            a = (math.pi + math.acos(min(1.0, max(-1.0, q / p**3)))) / 3
            prop0 = 2 * p * math.cos(a) - l2 / (3 * l3)
        prop0 = min(max(prop0, max(0.0, -value)), min(1.0, 1.0 - value))
        prop1 = prop0 + value
    var = prop1 * (1 - prop1) / n1 + prop0 * (1 - prop0) / n0
    if correction:
        var *= nobs / (nobs - 1)
    return x1 / n1 - x0 / n0 - value, var


def _score_p(x1: int, n1: int, x0: int, n0: int, value: float, correction: bool) -> float:
    numerator, var = _mn_score_parts(x1, n1, x0, n0, value, correction)
    if var <= 0.0:
        return 1.0 if numerator == 0.0 else 0.0
    return _two_sided_p(numerator / math.sqrt(var))


def _test_score(xt: int, nt: int, xc: int, nc: int) -> _TestOutcome:
    """Miettinen-Nurminen score test (value 0: pooled variance x N/(N-1)).

    test_proportions_2indep(t, nt, c, nc, method="score") (correction=True).
    """
    numerator, var = _mn_score_parts(xt, nt, xc, nc, 0.0, True)
    return _z_outcome(numerator, var, _BOTH_FLAT)


def _test_fisher(xt: int, nt: int, xc: int, nc: int) -> _TestOutcome:
    """Fisher's exact test (conditional on both margins), two-sided.

    scipy.stats.fisher_exact([[t, nt - t], [c, nc - c]], alternative="two-sided").
    Defined for any counts with n > 0 in both arms; there is no z statistic.
    """
    table = [[xt, nt - xt], [xc, nc - xc]]
    p = float(stats.fisher_exact(table, alternative="two-sided").pvalue)
    reason = Reason("not_applicable", "Fisher's exact test has no z statistic; see the p-value.")
    return None, min(1.0, p), {"z": reason}


def _ci_wald_like(xt: int, nt: int, xc: int, nc: int, alpha: float, add: int) -> _IntervalOutcome:
    pt, pc = (xt + add) / (nt + 2 * add), (xc + add) / (nc + 2 * add)
    var = pt * (1 - pt) / (nt + 2 * add) + pc * (1 - pc) / (nc + 2 * add)
    if var <= 0.0:
        return _zero_variance(_WALD_FLAT + " The interval would have zero width.")
    half = _z_crit(alpha) * math.sqrt(var)
    return Interval(pt - pc - half, pt - pc + half)


def _ci_wald(xt: int, nt: int, xc: int, nc: int, alpha: float) -> _IntervalOutcome:
    """Wald interval: (p_t - p_c) +/- z_{1-alpha/2} sqrt(p_t(1-p_t)/n_t + p_c(1-p_c)/n_c).

    confint_proportions_2indep(t, nt, c, nc, method="wald").
    """
    return _ci_wald_like(xt, nt, xc, nc, alpha, 0)


def _ci_agresti_caffo(xt: int, nt: int, xc: int, nc: int, alpha: float) -> _IntervalOutcome:
    """Agresti-Caffo: the Wald interval on (x + 1)/(n + 2) in each arm.

    confint_proportions_2indep(..., method="agresti-caffo"); Agresti & Caffo
    (2000), Am Stat 54:280.
    """
    return _ci_wald_like(xt, nt, xc, nc, alpha, 1)


def _wilson(x: int, n: int, z: float) -> tuple[float, float]:
    """Wilson score interval for one proportion, clipped to [0, 1].

    centre = (p + z^2/2n) / (1 + z^2/n);
    half = z sqrt(p(1-p)/n + z^2/4n^2) / (1 + z^2/n)
    statsmodels.stats.proportion.proportion_confint(x, n, method="wilson").
    """
    p, z2 = x / n, z * z
    denom = 1 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1.0 - p) / n + z2 / (4.0 * n**2)) / denom
    return min(max(centre - half, 0.0), 1.0), min(max(centre + half, 0.0), 1.0)


def _ci_newcombe(xt: int, nt: int, xc: int, nc: int, alpha: float) -> _IntervalOutcome:
    """Newcombe hybrid score interval (Newcombe 1998, Stat Med 17:873, method 10).

    With Wilson limits (l_t, u_t), (l_c, u_c):
      low  = d - sqrt((p_t - l_t)^2 + (u_c - p_c)^2)
      high = d + sqrt((u_t - p_t)^2 + (p_c - l_c)^2)
    confint_proportions_2indep(t, nt, c, nc, method="newcomb").
    """
    z = _z_crit(alpha)
    pt, pc = xt / nt, xc / nc
    lt, ut = _wilson(xt, nt, z)
    lc, uc = _wilson(xc, nc, z)
    d = pt - pc
    return Interval(
        d - math.sqrt((pt - lt) ** 2 + (uc - pc) ** 2),
        d + math.sqrt((pc - lc) ** 2 + (ut - pt) ** 2),
    )


_EDGE: Final[float] = 1e-12


def _ci_score(xt: int, nt: int, xc: int, nc: int, alpha: float, correction: bool) -> _IntervalOutcome:
    """Score interval: all differences v not rejected by the MN score test.

    {v : p_score(v) >= alpha}; roots by Brent's method on each side of the
    estimate.  What confint_proportions_2indep(t, nt, c, nc, method="score",
    correction=correction) computes, minus statsmodels issue #10269
    (Miettinen & Nurminen 1985; Mee 1984 without the correction; Newcombe &
    Nurminen 2011).  With correction=False it inverts the pooled z-test.
    Defined even when both arms are at 0% or 100%.
    """
    d = xt / nt - xc / nc

    def excess(v: float) -> float:
        return _score_p(xt, nt, xc, nc, v, correction) - alpha

    if d >= 1.0 or excess(1.0 - _EDGE) >= 0.0:
        high = 1.0
    else:
        high = optimize.brentq(excess, d, 1.0 - _EDGE, xtol=1e-14)
    if d <= -1.0 or excess(-1.0 + _EDGE) >= 0.0:
        low = -1.0
    else:
        low = optimize.brentq(excess, -1.0 + _EDGE, d, xtol=1e-14)
    return Interval(float(low), float(high))


def _ci_katz_relative(xt: int, nt: int, xc: int, nc: int, alpha: float) -> _IntervalOutcome:
    """Relative-lift interval from the Katz log risk-ratio interval, minus 1.

    log(RR) +/- z_{1-alpha/2} sqrt(1/x_t - 1/n_t + 1/x_c - 1/n_c),
    RR = p_t / p_c; Katz, Baptista, Azen & Pike (1978), Biometrics 34:469.
    confint_proportions_2indep(t, nt, c, nc, compare="ratio", method="log") - 1.
    """
    if xc == 0:
        return Reason(
            "control_rate_zero",
            "The control arm has no conversions, so a relative lift cannot be computed.",
        )
    if xt == 0:
        return Reason(
            "treatment_conversions_zero",
            "The treatment arm has no conversions yet, so the range for the relative "
            "lift cannot be computed (the point estimate is -100%).",
        )
    var = 1 / xt - 1 / nt + 1 / xc - 1 / nc
    if var <= 0.0:
        return _zero_variance("Every customer in both arms converted, so the interval would have zero width.")
    log_ratio = math.log((xt / nt) / (xc / nc))
    half = _z_crit(alpha) * math.sqrt(var)
    return Interval(math.exp(log_ratio - half) - 1.0, math.exp(log_ratio + half) - 1.0)


def _ci_score_corrected(xt: int, nt: int, xc: int, nc: int, alpha: float) -> _IntervalOutcome:
    return _ci_score(xt, nt, xc, nc, alpha, True)


def _ci_score_uncorrected(xt: int, nt: int, xc: int, nc: int, alpha: float) -> _IntervalOutcome:
    return _ci_score(xt, nt, xc, nc, alpha, False)


_TestFn = Callable[[int, int, int, int], _TestOutcome]
_IntervalFn = Callable[[int, int, int, int, float], _IntervalOutcome]
_METHOD_IMPL: Final[dict[str, tuple[_TestFn, _IntervalFn]]] = {
    "wald": (_test_wald, _ci_wald),
    "pooled": (_test_pooled, _ci_score_uncorrected),
    "score": (_test_score, _ci_score_corrected),
    "agresti-caffo": (_test_agresti_caffo, _ci_agresti_caffo),
    "newcombe": (_test_pooled, _ci_newcombe),
    "fisher": (_test_fisher, _ci_newcombe),
}


def compare(control: Arm, treatment: Arm, alpha: float = 0.05, method: str = "wald") -> Comparison:
    """Compare the conversion rate of ``treatment`` with ``control``.

    Returns rates, absolute lift (treatment - control) with its 1 - alpha
    interval, relative lift (treatment / control - 1) with the Katz interval,
    the z statistic and the two-sided p-value of the chosen ``method`` (see the
    module docstring for the exact statsmodels/scipy call per method).
    Undefined quantities are ``None`` with a ``Reason`` in ``undefined``.
    """
    if not isinstance(control, Arm) or not isinstance(treatment, Arm):
        raise TypeError("control and treatment must be Arm instances")
    alpha = _check_probability("alpha", alpha)
    if method not in _METHOD_IMPL:
        raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")
    undefined: dict[str, Reason] = {}
    xc, nc, xt, nt = control.conversions, control.n, treatment.conversions, treatment.n

    if nc == 0 or nt == 0:
        for arm_name, arm in (("control", control), ("treatment", treatment)):
            if arm.n == 0:
                undefined[f"{arm_name}_rate"] = Reason("no_traffic", f"The {arm_name} arm has no customers yet.")
        empty = " and ".join(name for name, arm in (("control", control), ("treatment", treatment)) if arm.n == 0)
        reason = Reason(
            "no_traffic",
            f"The {empty} arm{'s have' if ' and ' in empty else ' has'} no customers yet, "
            "so the arms cannot be compared.",
        )
        for name in (
            "absolute_lift",
            "absolute_lift_ci",
            "relative_lift",
            "relative_lift_ci",
            "z",
            "p_value",
        ):
            undefined[name] = reason
        return Comparison(
            control=control,
            treatment=treatment,
            method=method,
            alpha=alpha,
            control_rate=control.rate,
            treatment_rate=treatment.rate,
            absolute_lift=None,
            absolute_lift_ci=None,
            relative_lift=None,
            relative_lift_ci=None,
            z=None,
            p_value=None,
            undefined=undefined,
        )

    pc, pt = xc / nc, xt / nt
    relative: float | None
    if xc == 0:
        relative = None
        undefined["relative_lift"] = Reason(
            "control_rate_zero",
            "The control arm has no conversions, so a relative lift cannot be computed.",
        )
    else:
        relative = pt / pc - 1.0

    test_fn, interval_fn = _METHOD_IMPL[method]
    z, p, test_reasons = test_fn(xt, nt, xc, nc)
    undefined.update(test_reasons)
    abs_ci = _finite_interval("absolute_lift_ci", interval_fn(xt, nt, xc, nc, alpha), undefined)
    rel_ci = _finite_interval("relative_lift_ci", _ci_katz_relative(xt, nt, xc, nc, alpha), undefined)
    return Comparison(
        control=control,
        treatment=treatment,
        method=method,
        alpha=alpha,
        control_rate=pc,
        treatment_rate=pt,
        absolute_lift=pt - pc,
        absolute_lift_ci=abs_ci,
        relative_lift=_finite_or_none("relative_lift", relative, undefined),
        relative_lift_ci=rel_ci,
        z=_finite_or_none("z", z, undefined),
        p_value=_finite_or_none("p_value", p, undefined),
        undefined=undefined,
    )
