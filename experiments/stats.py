"""Statistics for conversion lift per segment.

Pure functions over frozen dataclasses of counts.  This module must not import
Django (or anything from the web app): it only needs numpy, scipy and
statsmodels, and every function is deterministic.

Public API (one entry point per question)
-----------------------------------------
``Arm(n, conversions)``
    Customers and conversions in one arm of one segment.
``compare(control, treatment, alpha=0.05, method="wald") -> Comparison``
    Did the treatment change the conversion rate?  Rates, absolute lift with its
    interval, relative lift with its interval, z statistic, two-sided p-value.
``adjust(p_values, method="holm") -> list[float | None]``
    Multiple-comparison adjusted p-values (Holm, or Benjamini-Hochberg "bh");
    same numbers as statsmodels' multipletests(method="holm" / "fdr_bh").
``verdict(comparison, adjusted_p, alpha=0.05, ...) -> Verdict``
    Plain-words verdict: significant win / significant loss / inconclusive /
    not enough data.
``srm(observed_counts, weights) -> SrmResult``
    Sample-ratio-mismatch check: was traffic split as configured?
``sample_size(baseline_rate, relative_mde, alpha=0.05, power=0.8, ratio=1.0) -> SampleSize``
    Customers needed per arm to detect the minimum detectable effect (MDE).
``days_needed(required_per_arm, daily_traffic, arms=2, customers_so_far=0) -> DaysNeeded``
    Days until that many customers per arm at a segment's daily traffic.
``power_status(plan, customers_per_arm, daily_traffic=None) -> PowerStatus``
    Customers so far versus customers needed (and days remaining).
``heterogeneity(cells, control_variant) -> HeterogeneityResult``
    Does the lift differ between the layers of one dimension?  Reported once per
    dimension, from ``Cell(layer, variant, n, conversions)`` counts.
``Interval(low, high)``, ``METHODS``, ``VerdictLabel``
    Value types and constants used in the results above.
``Reason(code, message)``
    Machine-readable code plus plain-words message.  Used for every undefined
    quantity (``result.undefined[field_name]``) and for flags and notes.

Every result dataclass has ``to_dict()`` returning JSON-serialisable data:
floats are always finite, an undefined quantity is ``None`` and its reason is in
``"undefined": {field_name: {"code": ..., "message": ...}}``.  No field is ever
NaN or infinity (``json.dumps(result.to_dict(), allow_nan=False)`` works).

What the numbers mean (plain words, for the README)
---------------------------------------------------
Conversion rate
    The share of customers in an arm who converted: conversions / customers.
Absolute lift
    Treatment rate minus control rate, in percentage points.  11.2% vs 10.0% is
    an absolute lift of +1.2 points.
Relative lift
    How much higher (or lower) the treatment rate is, as a share of the control
    rate: treatment rate / control rate - 1.  11.2% vs 10.0% is +12%.  It is not
    shown when the control arm has no conversions (you cannot divide by zero).
Interval (95% confidence interval)
    The range of lifts that fit the data.  If we repeated the experiment many
    times, 95 out of 100 such ranges would contain the true lift.  If the range
    includes 0 the data cannot rule out "no effect".  Intervals are for one
    comparison on its own; they are not widened for looking at many segments.
p-value
    If the treatment truly made no difference, the chance of seeing a
    difference at least this large by luck alone.  Small means "unlikely to be
    luck".  It is not the chance that the treatment works.
Adjusted p-value
    The p-value corrected for looking at many segments and arms at once.  With
    Holm (the default) the chance of even one false "significant" result across
    the whole family of comparisons stays at or below 5%.  The verdict uses this
    number, compared with 0.05.
Verdict
    "significant win" / "significant loss": the adjusted p-value is below 0.05
    and the treatment rate is higher / lower.  "inconclusive": we cannot tell
    the difference from noise - there may be no effect, or one too small to see
    with this much data.  "not enough data": an arm has fewer customers than the
    minimum (100 by default), there are too few conversions (or
    non-conversions) to run the test, or the test cannot be computed.
SRM (sample ratio mismatch)
    Checks that traffic was split between the arms as configured (e.g. 50/50).
    A flag means the split is further off than chance explains (p < 0.001), or
    that customers landed in an arm that should get none.  It usually means a
    bug in assignment or tracking: do not trust the results until it is
    explained.
Power status
    How many customers per arm we have versus how many we need for an 80%
    chance of detecting the smallest lift we care about (the minimum detectable
    effect), and roughly how many more days that takes at current traffic.
    Until it is reached, "inconclusive" is expected and does not mean "no
    effect".
Heterogeneity
    Whether the lift really differs between the layers of a dimension (e.g. new
    vs returning customers).  A small p-value (below 0.05) means the lift does
    differ between layers, so read the layers separately.  A large one means the
    differences between the layers' lifts are consistent with noise: trust the
    overall lift more than any single layer's.

Methods of ``compare`` and the exact library call each one reproduces
---------------------------------------------------------------------
The formulas are written out below (plain ``math``: thousands of comparisons per
report) and the tests check them against these calls to 1e-9.  statsmodels
compares sample 1 with sample 2, so the treatment is passed first and
``diff = p_t - p_c``; ``t, nt, c, nc`` = treatment conversions, treatment
customers, control conversions, control customers.  All functions are in
statsmodels.stats.proportion unless named otherwise::

  method          z and p-value                          absolute-lift interval
  "wald"          test_proportions_2indep(t, nt, c, nc,   confint_proportions_2indep(t, nt, c, nc,
  (default)         method="wald")                          method="wald")
  "pooled"        proportions_ztest([t, c], [nt, nc])    score interval without N/(N-1) (Mee 1984),
                  (= test_proportions_2indep(..., method=  the one that inverts this test (*)
                   "score", correction=False))
  "score"         test_proportions_2indep(...,            Miettinen-Nurminen score interval (*)
                    method="score")  (Miettinen-Nurminen,
                    variance x N/(N-1))
  "agresti-caffo" test_proportions_2indep(...,            confint_proportions_2indep(...,
                    method="agresti-caffo")                 method="agresti-caffo")
  "newcombe"      proportions_ztest([t, c], [nt, nc])    confint_proportions_2indep(...,
                                                           method="newcomb")
  "fisher"        p: scipy.stats.fisher_exact(            confint_proportions_2indep(...,
                    [[t, nt-t], [c, nc-c]],                 method="newcomb")
                    alternative="two-sided"); z: none

(*) These are what confint_proportions_2indep(..., method="score",
correction=False / True) is meant to return, but statsmodels 0.15 solves the
Miettinen-Nurminen cubic with a wrong coefficient (statsmodels issue #10269,
fix in open PR #10270), so its score intervals are off - by up to 0.08 on
small samples.  Ours use the published Farrington-Manning coefficients and are
tested against an independent numerical maximisation of the restricted
likelihood (to 1e-9) and against Newcombe (1998) Table II (to 4 decimals).  The
score *tests* at "no difference" are not affected and match statsmodels.

For every method the relative-lift interval is the Katz log-ratio interval,
``confint_proportions_2indep(t, nt, c, nc, compare="ratio", method="log")``
minus 1.

Reason codes for undefined values (``Comparison.undefined``)
-------------------------------------------------------------
``no_traffic``                 an arm has no customers (n = 0).
``control_rate_zero``          relative lift (and its interval): control has no
                               conversions, so the ratio divides by zero.
``treatment_conversions_zero`` relative-lift interval: the log-ratio interval
                               needs at least one treatment conversion.
``zero_variance``              the test statistic or interval has zero standard
                               error: both arms at 0% or both at 100% (for the
                               Wald method: each arm at 0% or 100%).
``not_applicable``             ``z`` for the Fisher exact test (it has none).
``numerical_failure``          safety net: a computation gave a non-finite number.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, is_dataclass
from functools import lru_cache
from numbers import Integral, Real
from typing import Any, Final, Literal

import numpy as np
from scipy import optimize, special, stats
from statsmodels.genmod import families
from statsmodels.genmod.generalized_linear_model import GLM
from statsmodels.tools.sm_exceptions import (
    ConvergenceWarning,
    IterationLimitWarning,
    PerfectSeparationWarning,
)

__all__ = [
    "METHODS",
    "SRM_THRESHOLD",
    "Arm",
    "Cell",
    "Comparison",
    "DaysNeeded",
    "HeterogeneityResult",
    "Interval",
    "PowerStatus",
    "Reason",
    "SampleSize",
    "SrmResult",
    "Verdict",
    "VerdictLabel",
    "adjust",
    "compare",
    "days_needed",
    "heterogeneity",
    "power_status",
    "sample_size",
    "srm",
    "verdict",
]

METHODS: Final[tuple[str, ...]] = (
    "wald",
    "pooled",
    "score",
    "agresti-caffo",
    "newcombe",
    "fisher",
)
# adjust() methods; statsmodels' multipletests names are "holm" and "fdr_bh".
_ADJUST_METHODS: Final[tuple[str, ...]] = ("holm", "bh")

SRM_THRESHOLD: Final[float] = 0.001

VerdictLabel = Literal["significant win", "significant loss", "inconclusive", "not enough data"]
SIGNIFICANT_WIN: Final = "significant win"
SIGNIFICANT_LOSS: Final = "significant loss"
INCONCLUSIVE: Final = "inconclusive"
NOT_ENOUGH_DATA: Final = "not enough data"


# --------------------------------------------------------------------------
# Small value types and JSON conversion
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a value is undefined, or why something was flagged/noted.

    ``code`` is stable and machine-readable (snake_case); ``message`` is plain
    words for a marketer.
    """

    code: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True, slots=True)
class Interval:
    """A two-sided confidence interval ``[low, high]`` (finite floats)."""

    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _jsonable(value: Any) -> Any:
    """Dataclasses/tuples/dicts to JSON-ready data; refuses NaN and infinity."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, Integral):
        return int(value)
    if isinstance(value, Real):
        number = float(value)
        if not math.isfinite(number):  # pragma: no cover - guarded upstream
            raise ValueError(f"non-finite number {number!r} in a result")
        return number
    if isinstance(value, Reason):
        return value.to_dict()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    raise TypeError(f"cannot serialise {type(value).__name__}")


def _check_count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    return int(value)


def _check_probability(name: str, value: float) -> float:
    """A number strictly between 0 and 1 (alpha, power, thresholds)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    number = float(value)
    if not 0.0 < number < 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class Arm:
    """Customers (``n``) and how many of them converted in one arm."""

    n: int
    conversions: int

    def __post_init__(self) -> None:
        n = _check_count("n", self.n)
        conversions = _check_count("conversions", self.conversions)
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if not 0 <= conversions <= n:
            raise ValueError(f"conversions must be between 0 and n={n}, got {conversions}")
        object.__setattr__(self, "n", n)
        object.__setattr__(self, "conversions", conversions)

    @property
    def rate(self) -> float | None:
        """conversions / n, or None when the arm has no customers."""
        return self.conversions / self.n if self.n else None

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


# --------------------------------------------------------------------------
# Normal distribution helpers (identical to scipy.stats.norm, which statsmodels
# uses: norm.isf(q) == -ndtri(q), norm.sf(x) == ndtr(-x)).
# --------------------------------------------------------------------------


@lru_cache(maxsize=64)
def _z_crit(alpha: float) -> float:
    """Two-sided critical value z_{1-alpha/2} = scipy.stats.norm.isf(alpha / 2)."""
    return float(-special.ndtri(alpha / 2.0))


def _two_sided_p(z: float) -> float:
    """p = 2 * P(Z > |z|) = 2 * scipy.stats.norm.sf(|z|) (statsmodels _zstat_generic2)."""
    return float(2.0 * special.ndtr(-abs(z)))


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
_IntervalOutcome = Interval | Reason


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

_NUMERICAL_FAILURE = Reason("numerical_failure", "This number could not be computed reliably for these counts.")


def _finite_or_none(name: str, value: float | None, undefined: dict[str, Reason]) -> float | None:
    if value is None:
        return None
    value = float(value)
    if math.isfinite(value):
        return value
    undefined.setdefault(name, _NUMERICAL_FAILURE)
    return None


def _finite_interval(name: str, value: _IntervalOutcome, undefined: dict[str, Reason]) -> Interval | None:
    if isinstance(value, Reason):
        undefined[name] = value
        return None
    if math.isfinite(value.low) and math.isfinite(value.high):
        return value
    undefined[name] = _NUMERICAL_FAILURE
    return None


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


# --------------------------------------------------------------------------
# adjust(): multiple comparisons
# --------------------------------------------------------------------------


def adjust(p_values: Sequence[float | None], method: str = "holm") -> list[float | None]:
    """Adjust a family of p-values for multiple comparisons.

    With p_(1) <= ... <= p_(m) the sorted defined p-values:
    ``method="holm"`` (default): Holm (1979), Scand J Stat 6:65, step-down,
    controls the family-wise error rate:
        adj_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)).
    ``method="bh"``: Benjamini & Hochberg (1995), JRSS B 57:289, step-up,
    controls the false discovery rate:
        adj_(i) = min(1, min_{j >= i} m p_(j) / j).
    Identical (same arithmetic, tested to 1e-9) to
    statsmodels.stats.multitest.multipletests(p, method="holm") and
    multipletests(p, method="fdr_bh").  Mind that multipletests' *default* is
    Holm-Sidak ("hs"), so always name the method when calling it.  It is written
    out here because multipletests' "holm" branch calls gc.collect() on every
    call (statsmodels 0.15; unmerged PR #8671), which costs 50-150 ms each in a
    large process - too slow for a report with many families.

    ``None`` entries (undefined tests) are left out of the family - they are
    not counted in m - and come back as ``None`` in the same position.  The
    result has the input's length and order.
    """
    if method not in _ADJUST_METHODS:
        raise ValueError(f"unknown method {method!r}; choose 'holm' or 'bh'")
    defined: list[float] = []
    for p in p_values:
        if p is None:
            continue
        if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 <= float(p) <= 1.0:
            raise ValueError(f"p-values must be numbers in [0, 1] or None, got {p!r}")
        defined.append(float(p))
    if not defined:
        return [None] * len(p_values)
    pvals = np.asarray(defined)
    order = np.argsort(pvals)
    ranked = pvals[order]
    m = len(ranked)
    if method == "holm":
        ranked_adjusted = np.maximum.accumulate(ranked * np.arange(m, 0, -1))
    else:
        ranked_adjusted = np.minimum.accumulate((ranked / (np.arange(1, m + 1) / m))[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(ranked_adjusted, 1.0)
    values = iter(adjusted.tolist())
    return [None if p is None else next(values) for p in p_values]


# --------------------------------------------------------------------------
# verdict()
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    """Plain-words verdict.  ``label`` is one of the four VerdictLabel strings;
    ``reason`` is a machine-readable code; ``message`` is for the marketer."""

    label: VerdictLabel
    reason: str
    message: str

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def verdict(
    comparison: Comparison,
    adjusted_p: float | None,
    alpha: float = 0.05,
    min_n_per_arm: int = 100,
    min_expected: float = 5.0,
) -> Verdict:
    """Turn a comparison and its adjusted p-value into a plain-words verdict.

    "not enough data" when any of (checked in this order; ``reason``):
      * an arm has fewer than ``min_n_per_arm`` customers (``arm_below_min_n``);
      * the test is undefined: ``comparison.p_value`` or ``adjusted_p`` is None
        (``test_undefined``);
      * for the normal-approximation methods (all but "fisher"), either arm's
        expected conversions or non-conversions under "no difference"
        (pooled rate x n, (1 - pooled rate) x n) is below ``min_expected``
        (Cochran's rule of 5; ``too_few_conversions``).
    Otherwise "significant win" / "significant loss" when adjusted_p < alpha and
    the absolute lift is > 0 / < 0 (higher conversion is assumed better), else
    "inconclusive".  Only ``adjusted_p`` decides significance.
    """
    alpha = _check_probability("alpha", alpha)
    control, treatment = comparison.control, comparison.treatment
    smallest = min(control.n, treatment.n)
    if smallest < min_n_per_arm:
        return Verdict(
            NOT_ENOUGH_DATA,
            "arm_below_min_n",
            f"Not enough data yet: an arm has {smallest:,} customers; at least "
            f"{min_n_per_arm:,} per arm are needed before we call a result.",
        )
    if comparison.p_value is None or adjusted_p is None:
        why = comparison.undefined.get("p_value")
        return Verdict(
            NOT_ENOUGH_DATA,
            "test_undefined",
            "Not enough data to test: " + (why.message if why else "the p-value is not available."),
        )
    if comparison.method != "fisher":
        pooled = (control.conversions + treatment.conversions) / (control.n + treatment.n)
        expected = min(min(pooled, 1.0 - pooled) * control.n, min(pooled, 1.0 - pooled) * treatment.n)
        if expected < min_expected:
            return Verdict(
                NOT_ENOUGH_DATA,
                "too_few_conversions",
                "Not enough data yet: there are too few conversions (or too few non-conversions) for a reliable test.",
            )
    diff = comparison.absolute_lift
    if adjusted_p < alpha and diff is not None and diff != 0:
        if diff > 0:
            return Verdict(
                SIGNIFICANT_WIN,
                "adjusted_p_below_alpha",
                "Significant win: the treatment converts better, and the difference is "
                f"larger than chance explains (adjusted p = {adjusted_p:.3g} < {alpha:g}).",
            )
        return Verdict(
            SIGNIFICANT_LOSS,
            "adjusted_p_below_alpha",
            "Significant loss: the treatment converts worse, and the difference is "
            f"larger than chance explains (adjusted p = {adjusted_p:.3g} < {alpha:g}).",
        )
    return Verdict(
        INCONCLUSIVE,
        "adjusted_p_not_below_alpha",
        "Inconclusive: the difference could be chance "
        f"(adjusted p = {adjusted_p:.3g}, needs < {alpha:g}). There may be no effect, "
        "or one too small to see with this much data.",
    )


# --------------------------------------------------------------------------
# srm(): sample ratio mismatch
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SrmResult:
    """Sample-ratio-mismatch check.

    expected: expected customers per arm (0 for zero-weight arms);
    statistic/df/p_value: chi-square goodness of fit over the positive-weight
    arms; flagged: True when p_value < threshold or an arm with weight 0 has
    customers (``flags`` lists why).
    """

    observed: tuple[int, ...]
    weights: tuple[float, ...]
    expected: tuple[float, ...]
    statistic: float | None
    df: int | None
    p_value: float | None
    threshold: float
    flagged: bool
    flags: tuple[Reason, ...]
    message: str
    notes: tuple[Reason, ...] = ()
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def srm(
    observed_counts: Sequence[int],
    weights: Sequence[float],
    threshold: float = SRM_THRESHOLD,
) -> SrmResult:
    """Chi-square goodness-of-fit of observed arm sizes against configured weights.

    expected_i = N w_i / sum(w) over arms with w_i > 0, N = their total;
    X^2 = sum (o_i - e_i)^2 / e_i, df = k - 1, p = P(chi2_df > X^2)
    (scipy.stats.chisquare(observed, expected)); flagged at p < 0.001.
    Zero-weight arms: customers in one is itself a mismatch (flagged, reason
    ``traffic_in_zero_weight_arm``); zero-weight arms are never part of the
    chi-square test.  Fewer than two positive-weight arms
    (``fewer_than_two_arms``) or no customers in them (``no_traffic``) leave
    the test undefined.
    """
    observed = tuple(_check_count("observed count", o) for o in observed_counts)
    if any(o < 0 for o in observed):
        raise ValueError("observed counts must be >= 0")
    if len(observed) != len(weights):
        raise ValueError("observed_counts and weights must have the same length")
    w = tuple(float(x) for x in weights)
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise ValueError("weights must be finite and >= 0")
    threshold = _check_probability("threshold", threshold)

    positive = [i for i, x in enumerate(w) if x > 0]
    total = sum(observed[i] for i in positive)
    weight_sum = sum(w[i] for i in positive)
    expected = tuple(total * x / weight_sum if x > 0 else 0.0 for x in w)

    flags: list[Reason] = []
    leaked = [i for i, x in enumerate(w) if x == 0 and observed[i] > 0]
    if leaked:
        flags.append(
            Reason(
                "traffic_in_zero_weight_arm",
                f"{sum(observed[i] for i in leaked):,} customers landed in arm(s) "
                f"{', '.join(str(i) for i in leaked)} configured to get no traffic.",
            )
        )

    undefined: dict[str, Reason] = {}
    notes: list[Reason] = []
    statistic: float | None = None
    p_value: float | None = None
    df: int | None = None
    if len(positive) < 2:
        undefined_reason = Reason("fewer_than_two_arms", "Fewer than two arms are configured to get traffic.")
    elif total == 0:
        undefined_reason = Reason("no_traffic", "No customers have been assigned yet.")
    else:
        undefined_reason = None
        obs = [observed[i] for i in positive]
        exp = [expected[i] for i in positive]
        statistic = sum((o - e) ** 2 / e for o, e in zip(obs, exp, strict=True))
        df = len(positive) - 1
        p_value = float(special.chdtrc(df, statistic))
        if min(exp) < 5:
            notes.append(
                Reason(
                    "small_expected_counts",
                    "Very little traffic so far; this check becomes reliable with more.",
                )
            )
        if p_value < threshold:
            flags.append(
                Reason(
                    "split_mismatch",
                    f"Traffic split is off from the configured weights by more than chance "
                    f"explains (p = {p_value:.2g} < {threshold:g}).",
                )
            )
    if undefined_reason is not None:
        for name in ("statistic", "df", "p_value"):
            undefined[name] = undefined_reason

    flagged = bool(flags)
    if flagged:
        message = (
            "Sample ratio mismatch: "
            + " ".join(f.message for f in flags)
            + (" Check assignment and tracking before trusting results.")
        )
    elif undefined_reason is not None:
        message = "Sample ratio check not possible: " + undefined_reason.message
    else:
        message = "Traffic split matches the configured weights."
    return SrmResult(
        observed=observed,
        weights=w,
        expected=expected,
        statistic=statistic,
        df=df,
        p_value=p_value,
        threshold=threshold,
        flagged=flagged,
        flags=tuple(flags),
        message=message,
        notes=tuple(notes),
        undefined=undefined,
    )


# --------------------------------------------------------------------------
# Power: sample_size(), days_needed(), power_status()
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SampleSize:
    """Customers needed to detect ``relative_mde`` with probability ``power``.

    required_control: customers in the control arm; required_treatment:
    customers in each treatment arm (= ratio x control, rounded up);
    target_rate = baseline_rate x (1 + relative_mde); effect_size = Cohen's h.
    """

    baseline_rate: float
    relative_mde: float
    alpha: float
    power: float
    ratio: float
    target_rate: float | None
    effect_size: float | None
    required_control: int | None
    required_treatment: int | None
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _solve_nobs1(effect_size: float, alpha: float, power: float, ratio: float) -> float:
    """Exact (unrounded) control-arm size for NormalIndPower, two-sided.

    statsmodels' NormalIndPower: power = Phi(h sqrt(m) - c) + Phi(-h sqrt(m) - c),
    c = z_{1-alpha/2}, m = 1 / (1/n1 + 1/(ratio n1)) = n1 ratio / (1 + ratio).
    We solve for t = |h| sqrt(m) by Brent's method, then n1 = (t/h)^2 (1 + ratio) / ratio.
    Without the far tail this is the textbook n1 = (1 + 1/ratio) ((c + z_power)/h)^2
    (Cohen 1988, ch. 6).  statsmodels' own solve_power only solves to xtol=1e-5.
    """
    c = _z_crit(alpha)

    def excess(t: float) -> float:
        return float(special.ndtr(t - c) + special.ndtr(-t - c)) - power

    upper = c + float(special.ndtri(power)) + 10.0
    t = optimize.brentq(excess, 0.0, upper, xtol=1e-15)
    return (t / abs(effect_size)) ** 2 * (1.0 + ratio) / ratio


def sample_size(
    baseline_rate: float,
    relative_mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
) -> SampleSize:
    """Customers per arm to detect a relative lift of ``relative_mde``.

    p1 = baseline_rate, p2 = p1 (1 + relative_mde);
    h = 2 asin(sqrt(p2)) - 2 asin(sqrt(p1))
        (statsmodels.stats.proportion.proportion_effectsize(p2, p1));
    control = ceil(NormalIndPower().solve_power(effect_size=h, alpha=alpha,
    power=power, ratio=ratio, alternative="two-sided")); treatment =
    ceil(ratio x unrounded control).  Undefined (with reasons) when the baseline
    is not strictly between 0 and 1, the MDE is 0, or p2 is not strictly between
    0 and 1.
    """
    alpha = _check_probability("alpha", alpha)
    power = _check_probability("power", power)
    if power <= alpha:
        raise ValueError("power must be larger than alpha")
    for name, value in (("baseline_rate", baseline_rate), ("relative_mde", relative_mde)):
        if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if isinstance(ratio, bool) or not isinstance(ratio, Real) or not 0 < ratio < math.inf:
        raise ValueError(f"ratio must be a positive number, got {ratio!r}")
    p1, mde, ratio = float(baseline_rate), float(relative_mde), float(ratio)

    reason: Reason | None = None
    p2: float | None = None
    if not 0.0 < p1 < 1.0:
        reason = Reason(
            "baseline_rate_out_of_range",
            "The baseline conversion rate must be above 0% and below 100% to plan a test.",
        )
    elif mde == 0.0:
        reason = Reason("mde_zero", "A minimum detectable effect of 0% can never be detected.")
    else:
        p2 = p1 * (1.0 + mde)
        if not 0.0 < p2 < 1.0:
            reason = Reason(
                "target_rate_out_of_range",
                f"A {mde:+.1%} lift on a {p1:.2%} baseline gives a rate outside 0%-100%.",
            )
    if reason is not None:
        target = p2 if p2 is not None and 0.0 <= p2 <= 1.0 else None
        names = ["effect_size", "required_control", "required_treatment"]
        if target is None:
            names.insert(0, "target_rate")
        undefined = {name: reason for name in names}
        return SampleSize(p1, mde, alpha, power, ratio, target, None, None, None, undefined)
    assert p2 is not None

    h = 2.0 * math.asin(math.sqrt(p2)) - 2.0 * math.asin(math.sqrt(p1))
    n1 = _solve_nobs1(h, alpha, power, ratio)
    return SampleSize(
        baseline_rate=p1,
        relative_mde=mde,
        alpha=alpha,
        power=power,
        ratio=ratio,
        target_rate=p2,
        effect_size=h,
        required_control=math.ceil(n1),
        required_treatment=math.ceil(n1 * ratio),
    )


@dataclass(frozen=True, slots=True)
class DaysNeeded:
    """Whole days until every arm has ``required_per_arm`` customers."""

    days: int | None
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def days_needed(
    required_per_arm: int | None,
    daily_traffic: float,
    arms: int = 2,
    customers_so_far: int = 0,
) -> DaysNeeded:
    """Days to reach ``required_per_arm`` customers per arm.

    days = ceil(max(required - so_far, 0) x arms / daily_traffic), assuming the
    segment's ``daily_traffic`` (customers entering the experiment per day, all
    arms together) is split equally between ``arms`` arms.  0 when already
    reached.  Undefined when the requirement is unknown (``sample_size_undefined``)
    or there is no traffic (``no_traffic``).
    """
    arms = _check_count("arms", arms)
    so_far = _check_count("customers_so_far", customers_so_far)
    if arms < 1:
        raise ValueError("arms must be >= 1")
    if not isinstance(daily_traffic, Real) or not math.isfinite(daily_traffic):
        raise ValueError(f"daily_traffic must be a finite number, got {daily_traffic!r}")
    if required_per_arm is None:
        return DaysNeeded(
            None,
            {"days": Reason("sample_size_undefined", "The required sample size is unknown.")},
        )
    remaining = max(_check_count("required_per_arm", required_per_arm) - so_far, 0)
    if remaining == 0:
        return DaysNeeded(0)
    if daily_traffic <= 0:
        return DaysNeeded(
            None,
            {"days": Reason("no_traffic", "This segment gets no daily traffic, so it never finishes.")},
        )
    return DaysNeeded(math.ceil(remaining * arms / float(daily_traffic)))


@dataclass(frozen=True, slots=True)
class PowerStatus:
    """Customers so far versus customers needed for the configured MDE.

    customers_per_arm: control first, then treatment arms; required_per_arm:
    the requirement for each of those arms; progress: the smallest
    customers/required over the arms (1.0 or more = reached);
    days_remaining: at ``daily_traffic`` split equally across the arms.
    """

    customers_per_arm: tuple[int, ...]
    required_per_arm: tuple[int, ...] | None
    progress: float | None
    reached: bool
    days_remaining: int | None
    message: str
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def power_status(
    plan: SampleSize,
    customers_per_arm: Sequence[int],
    daily_traffic: float | None = None,
) -> PowerStatus:
    """How far the experiment is towards the sample size in ``plan``.

    ``customers_per_arm``: control first, then each treatment arm.  The control
    needs ``plan.required_control``, each treatment ``plan.required_treatment``.
    """
    counts = tuple(_check_count("customers", c) for c in customers_per_arm)
    if len(counts) < 2 or any(c < 0 for c in counts):
        raise ValueError("customers_per_arm needs >= 2 non-negative counts (control first)")
    undefined: dict[str, Reason] = {}
    if plan.required_control is None or plan.required_treatment is None:
        reason = plan.undefined.get("required_control") or Reason(
            "sample_size_undefined", "The required sample size is unknown."
        )
        for name in ("required_per_arm", "progress", "days_remaining"):
            undefined[name] = reason
        return PowerStatus(
            counts,
            None,
            None,
            False,
            None,
            "Cannot tell how much data is needed: " + reason.message,
            undefined,
        )
    required = (plan.required_control,) + (plan.required_treatment,) * (len(counts) - 1)
    progress = min(c / r for c, r in zip(counts, required, strict=True))
    reached = progress >= 1.0
    days: int | None = None
    if daily_traffic is None:
        undefined["days_remaining"] = Reason("no_traffic_given", "Daily traffic was not provided.")
    else:
        remaining = max(r - c for c, r in zip(counts, required, strict=True))
        result = days_needed(max(remaining, 0), daily_traffic, arms=len(counts))
        days = result.days
        if "days" in result.undefined:
            undefined["days_remaining"] = result.undefined["days"]
    mde = f"{plan.relative_mde:+.1%} relative lift"
    if reached:
        message = f"Enough customers to detect a {mde} with {plan.power:.0%} power (needed {max(required):,} per arm)."
    else:
        behind = min(range(len(counts)), key=lambda i: counts[i] / required[i])
        message = (
            f"{progress:.0%} of the way: the arm furthest behind has {counts[behind]:,} of the "
            f"{required[behind]:,} customers it needs to detect a {mde} with {plan.power:.0%} power"
        )
        message += f"; about {days:,} more days at current traffic." if days is not None else "."
    return PowerStatus(counts, required, progress, reached, days, message, undefined)


# --------------------------------------------------------------------------
# heterogeneity(): does the lift differ between layers?
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Cell:
    """Counts for one (layer, variant) cell of a dimension."""

    layer: str
    variant: str
    n: int
    conversions: int

    def __post_init__(self) -> None:
        arm = Arm(self.n, self.conversions)
        object.__setattr__(self, "n", arm.n)
        object.__setattr__(self, "conversions", arm.conversions)
        object.__setattr__(self, "layer", str(self.layer))
        object.__setattr__(self, "variant", str(self.variant))


@dataclass(frozen=True, slots=True)
class HeterogeneityResult:
    """Likelihood-ratio test of variant x layer interaction (one per dimension).

    statistic = 2 (llf_full - llf_reduced), df = difference in the number of
    (identifiable) parameters, p_value = P(chi2_df > statistic).
    layers/variants: those used after dropping uninformative ones (``notes``).
    """

    statistic: float | None
    df: int | None
    p_value: float | None
    layers: tuple[str, ...]
    variants: tuple[str, ...]
    message: str
    notes: tuple[Reason, ...] = ()
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _undefined_heterogeneity(
    reason: Reason, layers: Sequence[str], variants: Sequence[str], notes: list[Reason]
) -> HeterogeneityResult:
    return HeterogeneityResult(
        None,
        None,
        None,
        tuple(layers),
        tuple(variants),
        "Cannot test whether the lift differs between layers: " + reason.message,
        tuple(notes),
        {"statistic": reason, "df": reason, "p_value": reason},
    )


def _binomial_loglik(x: np.ndarray, n: np.ndarray, prob: np.ndarray) -> float:
    """sum log C(n, x) + x log p + (n - x) log(1 - p), with 0 log 0 = 0."""
    log_comb = special.gammaln(n + 1) - special.gammaln(x + 1) - special.gammaln(n - x + 1)
    return float(np.sum(log_comb + special.xlogy(x, prob) + special.xlog1py(n - x, -prob)))


def _separated(design: np.ndarray, x: np.ndarray, n: np.ndarray) -> bool:
    """Does the binomial MLE fail to exist (complete or quasi-complete separation)?

    Linear-programming check (Albert & Anderson 1984, Biometrika 71:1; Konis 2007,
    DPhil thesis, Oxford, "Linear programming algorithms for detecting separated
    data in binary logistic regression models"): the MLE is infinite iff some
    direction b moves every cell's linear predictor towards its data, without
    changing cells that have both outcomes: s_i x_i'b >= 0 for one-sided cells
    (s = +1 if all converted, -1 if none did), x_i'b = 0 for two-sided cells, and
    x_i'b != 0 somewhere.  We maximise sum s_i x_i'b within the box |b| <= 1.
    """
    one_sided = (x == 0) | (x == n)
    if not one_sided.any():
        return False
    sign = np.where(x[one_sided] == n[one_sided], 1.0, -1.0)
    rows = sign[:, None] * design[one_sided]
    two_sided = design[~one_sided]
    result = optimize.linprog(
        -rows.sum(axis=0),
        A_ub=-rows,
        b_ub=np.zeros(len(rows)),
        A_eq=two_sided if len(two_sided) else None,
        b_eq=np.zeros(len(two_sided)) if len(two_sided) else None,
        bounds=[(-1.0, 1.0)] * design.shape[1],
        method="highs",
    )
    return bool(result.status == 0 and -result.fun > 1e-9)


def heterogeneity(cells: Sequence[Cell], control_variant: str) -> HeterogeneityResult:
    """Does the lift (on the log-odds scale) differ between layers?

    Binomial GLM with logit link on the aggregated (layer, variant) counts,
    endog = [conversions, n - conversions] (statsmodels GLM, families.Binomial()):
      reduced: variant + layer;  full: variant + layer + variant x layer.
    LR = 2 (llf_full - llf_reduced) ~ chi2(df), df = #params(full) -
    #params(reduced) (Agresti, Categorical Data Analysis, 3rd ed., 4.4.4/5.2.4;
    McCullagh & Nelder 1989, 4.4.3).

    The full model has one free parameter per non-empty cell (it is saturated),
    so its maximised log-likelihood is closed-form: p_hat = x / n per cell.  It
    is computed that way instead of by IRLS, which avoids false separation
    warnings for cells at 0% or 100%; then LR is the reduced model's deviance
    and df = #cells - rank(reduced design).  The tests check this against two
    statsmodels GLM fits.

    Data handling (each reported in ``notes``): cells are summed per
    (layer, variant); cells with n = 0 are dropped; a layer (or a non-control
    variant) whose cells are all at 0% or all at 100% is dropped, repeatedly -
    it carries no information about the interaction and, in the limit, adds
    nothing to either likelihood.  Undefined (with reasons) when fewer than 2
    layers or 2 variants remain, the control variant is missing or has no
    variation, no layer has both control and treatment (df = 0), or the reduced
    fit shows separation or does not converge.
    """
    notes: list[Reason] = []
    totals: dict[tuple[str, str], list[int]] = {}
    for cell in cells:
        if not isinstance(cell, Cell):
            raise TypeError("cells must be Cell instances")
        counts = totals.setdefault((cell.layer, cell.variant), [0, 0])
        counts[0] += cell.n
        counts[1] += cell.conversions
    control_variant = str(control_variant)
    all_layers = sorted({layer for layer, _ in totals})
    all_variants = sorted({variant for _, variant in totals})

    empty = [key for key, (n, _) in totals.items() if n == 0]
    if empty:
        notes.append(
            Reason("empty_cells_dropped", f"{len(empty)} layer/variant cell(s) with no customers were left out.")
        )
    present = {key: (n, x) for key, (n, x) in totals.items() if n > 0}
    if not any(variant == control_variant for _, variant in present):
        reason = Reason("control_variant_missing", f"The control variant {control_variant!r} has no customers.")
        return _undefined_heterogeneity(reason, all_layers, all_variants, notes)

    # Drop layers/variants without variation (all cells 0% or all 100%) until stable.
    while True:
        dropped_any = False
        for position, kind in ((0, "layer"), (1, "variant")):
            groups: dict[str, list[tuple[int, int]]] = {}
            for key, counts in present.items():
                groups.setdefault(key[position], []).append(counts)
            for name, group in sorted(groups.items()):
                flat = all(x == 0 for _, x in group) or all(x == n for n, x in group)
                if not flat:
                    continue
                if kind == "variant" and name == control_variant:
                    reason = Reason(
                        "control_without_variation",
                        "The control converted at 0% (or 100%) in every layer, so lifts are undefined.",
                    )
                    return _undefined_heterogeneity(reason, all_layers, all_variants, notes)
                notes.append(
                    Reason(
                        f"{kind}_without_variation_dropped",
                        f"{kind.capitalize()} {name!r} converted at 0% (or 100%) in every cell "
                        "and tells us nothing about differences in lift; it was left out.",
                    )
                )
                present = {k: v for k, v in present.items() if k[position] != name}
                dropped_any = True
        if not dropped_any:
            break

    layers = sorted({layer for layer, _ in present})
    variants = [control_variant, *sorted({v for _, v in present} - {control_variant})]
    if len(layers) < 2:
        reason = Reason("fewer_than_two_layers", "Fewer than two layers have usable data.")
        return _undefined_heterogeneity(reason, layers, variants, notes)
    if len(variants) < 2:
        reason = Reason("fewer_than_two_variants", "Fewer than two variants have usable data.")
        return _undefined_heterogeneity(reason, layers, variants, notes)

    keys = sorted(present, key=lambda k: (layers.index(k[0]), variants.index(k[1])))
    n = np.array([present[k][0] for k in keys], dtype=float)
    x = np.array([present[k][1] for k in keys], dtype=float)
    # Reduced design: intercept + variant dummies (reference: control) + layer
    # dummies (reference: first layer in sorted order).
    columns = [np.ones(len(keys))]
    columns += [np.array([k[1] == v for k in keys], dtype=float) for v in variants[1:]]
    columns += [np.array([k[0] == layer for k in keys], dtype=float) for layer in layers[1:]]
    design = np.column_stack(columns)
    rank = int(np.linalg.matrix_rank(design))
    df = len(keys) - rank
    if df <= 0:
        reason = Reason(
            "no_overlap",
            "No layer has both the control and a treatment with data, so lifts cannot be compared.",
        )
        return _undefined_heterogeneity(reason, layers, variants, notes)

    if _separated(design, x, n):
        reason = Reason(
            "separation",
            "Some layer/variant combinations are perfectly predictable (a 0% or 100% "
            "pattern across cells), so the lifts cannot be compared on the model's scale.",
        )
        return _undefined_heterogeneity(reason, layers, variants, notes)

    endog = np.column_stack([x, n - x])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            fit = GLM(endog, design, family=families.Binomial()).fit(maxiter=100)
        except (ValueError, np.linalg.LinAlgError) as exc:  # pragma: no cover - defensive
            reason = Reason("did_not_converge", f"The model could not be fitted ({exc}).")
            return _undefined_heterogeneity(reason, layers, variants, notes)
    fitted = np.asarray(fit.mu, dtype=float)
    categories = {type(w.message) for w in caught}
    if (
        not fit.converged
        or categories & {ConvergenceWarning, IterationLimitWarning}
        or not np.all((fitted > 0.0) & (fitted < 1.0))
    ):
        reason = Reason("did_not_converge", "The model fit did not converge.")
        return _undefined_heterogeneity(reason, layers, variants, notes)
    # statsmodels raises PerfectSeparationWarning whenever fitted == observed
    # rates, i.e. also for a perfect but finite fit; real separation was ruled
    # out above, so this only means the main-effects model fits exactly.
    if PerfectSeparationWarning in categories:
        notes.append(Reason("perfect_fit", "The lift (as an odds ratio) is exactly the same in every layer."))

    llf_full = _binomial_loglik(x, n, x / n)
    llf_reduced = _binomial_loglik(x, n, fitted)
    statistic = max(0.0, 2.0 * (llf_full - llf_reduced))
    p_value = float(stats.chi2.sf(statistic, df))
    if not (math.isfinite(statistic) and math.isfinite(p_value)):  # pragma: no cover
        return _undefined_heterogeneity(_NUMERICAL_FAILURE, layers, variants, notes)
    if p_value < 0.05:
        message = f"The lift differs between layers (p = {p_value:.2g}): read the layers separately."
    else:
        message = (
            f"No evidence that the lift differs between layers (p = {p_value:.2g}): "
            "differences between layers are consistent with noise."
        )
    return HeterogeneityResult(statistic, df, p_value, tuple(layers), tuple(variants), message, tuple(notes))
