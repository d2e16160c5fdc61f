"""Statistics for conversion and value lift per segment.

A package by concern (no Django anywhere): ``proportions`` (two-proportion tests and
intervals; ``DECISION_METHOD``), ``sequential`` (always-valid confidence sequences),
``guardrails`` (one-sided harm tests), ``multiple_testing`` (Holm, BH), ``verdicts``,
``sample_ratio`` (SRM), ``power`` (sample sizes, power under a family's correction),
``interaction`` (heterogeneity).  Everything public is re-exported here.

Pure functions over frozen dataclasses of counts.  This module must not import
Django (or anything from the web app): it only needs numpy, scipy and
statsmodels, and every function is deterministic.

Public API (one entry point per question)
-----------------------------------------
``Arm(n, conversions)``
    Customers and conversions in one arm of one segment.
``compare_sequential(control, treatment, alpha=0.05, expected_n=5000) -> Comparison``
    The always-valid version (``experiments.stats.sequential``): a normal-mixture
    confidence sequence and an always-valid p-value, safe to read at every look.
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
``harm_test(control, treatment, margin=0, alpha=0.05, sequential=False) -> HarmTest``
    Guardrails (``experiments.stats.guardrails``): one-sided test of harm beyond a
    non-inferiority margin, fixed horizon or always valid.
``family_alpha(alpha, m)``, ``sequential_sample_size(...)``, ``sequential_power(...)``,
``detectable_lift(baseline, n_control, n_treatment, ...) -> DetectableLift``
    Power under the rules in use: the per-comparison level of a family, the always-valid
    test's requirement, the smallest lift a fixed audience can detect.
``heterogeneity(cells, control_variant) -> HeterogeneityResult``
    Does the lift differ between the layers of one dimension?  Reported once per
    dimension, from ``Cell(layer, variant, n, conversions)`` counts.
``value_heterogeneity({(layer, variant): Estimate}, control_variant) -> HeterogeneityResult``
    The same question for a value metric: Cochran / Wald test of equal differences
    (``experiments.stats.value_heterogeneity``).
``Moments(n, sums, products)``, ``estimate(moments, MeanOf(i) | RatioOf(a, b)) -> Estimate``
    Value metrics (``experiments.stats.moments``): per-arm sufficient statistics n, sums and
    sums of products, and a mean or ratio with its delta-method variance.
``compare_values(control, treatment, alpha, distribution="t", sequential=False) -> ValueComparison``
    Welch t (or normal, or always-valid) test of a value metric; relative lift with a
    delta-method interval (``experiments.stats.means``).
``cuped(arms, post, pre) -> CupedResult``
    CUPED with theta pooled across arms (``experiments.stats.cuped``).
``cuped_ols(control, treatment, post, pre) -> CupedOls``
    CUPED as OLS post ~ treatment + centred pre with one pooled residual variance
    (conversion metrics: valid at unbalanced splits and low rates).
``cap_rank(n, percentile)``, ``value_sample_size(baseline, variance, relative_mde, ...)``
    Nearest-rank capping (``capping``) and power for mean/ratio metrics with CUPED
    (``value_power``).
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

from experiments.stats._common import (
    INCONCLUSIVE,
    NOT_ENOUGH_DATA,
    SIGNIFICANT_LOSS,
    SIGNIFICANT_WIN,
    SRM_THRESHOLD,
    Arm,
    Interval,
    Reason,
    VerdictLabel,
)
from experiments.stats.capping import cap_rank
from experiments.stats.cuped import CupedOls, CupedResult, cuped, cuped_ols
from experiments.stats.guardrails import HarmTest, harm_test
from experiments.stats.interaction import Cell, HeterogeneityResult, heterogeneity
from experiments.stats.means import DISTRIBUTIONS, ValueComparison, compare_values, value_harm_test, welch_df
from experiments.stats.moments import Estimate, MeanOf, Moments, RatioOf, Statistic, estimate
from experiments.stats.multiple_testing import adjust
from experiments.stats.power import (
    DaysNeeded,
    DetectableLift,
    PowerStatus,
    SampleSize,
    days_needed,
    detectable_lift,
    family_alpha,
    power_status,
    sample_size,
    sequential_power,
    sequential_sample_size,
)
from experiments.stats.power import (
    _solve_nobs1 as _solve_nobs1,
)
from experiments.stats.proportions import DECISION_METHOD, METHODS, Comparison, compare
from experiments.stats.sample_ratio import SrmResult, srm
from experiments.stats.sequential import (
    DEFAULT_EXPECTED_N,
    always_valid_p,
    always_valid_p_one_sided,
    compare_sequential,
    cs_halfwidth,
    cs_halfwidth_one_sided,
    mixture_rho,
)
from experiments.stats.value_heterogeneity import value_heterogeneity
from experiments.stats.value_power import ValueSampleSize, value_sample_size
from experiments.stats.verdicts import Verdict, verdict

__all__ = [
    "DECISION_METHOD",
    "DEFAULT_EXPECTED_N",
    "DISTRIBUTIONS",
    "INCONCLUSIVE",
    "METHODS",
    "NOT_ENOUGH_DATA",
    "SIGNIFICANT_LOSS",
    "SIGNIFICANT_WIN",
    "SRM_THRESHOLD",
    "Arm",
    "Cell",
    "Comparison",
    "CupedOls",
    "CupedResult",
    "DaysNeeded",
    "DetectableLift",
    "Estimate",
    "HarmTest",
    "HeterogeneityResult",
    "Interval",
    "MeanOf",
    "Moments",
    "PowerStatus",
    "RatioOf",
    "Reason",
    "SampleSize",
    "SrmResult",
    "Statistic",
    "ValueComparison",
    "ValueSampleSize",
    "Verdict",
    "VerdictLabel",
    "adjust",
    "always_valid_p",
    "always_valid_p_one_sided",
    "cap_rank",
    "compare",
    "compare_sequential",
    "compare_values",
    "cs_halfwidth",
    "cs_halfwidth_one_sided",
    "cuped",
    "cuped_ols",
    "days_needed",
    "detectable_lift",
    "estimate",
    "family_alpha",
    "harm_test",
    "heterogeneity",
    "mixture_rho",
    "power_status",
    "sample_size",
    "sequential_power",
    "sequential_sample_size",
    "srm",
    "value_harm_test",
    "value_heterogeneity",
    "value_sample_size",
    "verdict",
    "welch_df",
]
