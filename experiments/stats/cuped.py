"""CUPED: variance reduction with each customer's pre-experiment value of the same metric.

Deng, Xu, Kohavi & Walker (2013), "Improving the sensitivity of online controlled
experiments by utilizing pre-experiment data", WSDM, sections 3.2 and 3.3.  For a metric
Y with a pre-period covariate X (the same metric over the lookback before exposure)::

    Y_cv = Y - theta (X - E X),      theta = Cov(Y, X) / Var(X)

keeps the mean of Y and shrinks its variance by the factor 1 - rho(Y, X)^2.

theta, pooled across arms: we use the *within-arm* pooled slope

    theta = sum_a (n_a - 1) Cov_a(f, g) / sum_a (n_a - 1) Var_a(g)

which is exactly the coefficient of the centred pre value in the OLS regression
``post ~ treatment + (pre - mean(pre))`` (Frisch-Waugh-Lovell: the treatment dummies take
out the arm means), and the adjusted difference equals that regression's treatment
coefficient.  One theta for all arms, so the adjustment cannot favour an arm (Deng et al.
3.3: theta must not depend on the assignment); the treatment cannot move X (it is measured
before exposure), so the difference keeps its expectation.

Ratio metrics (Deng et al. 3.4; Deng, Knoblich & Lu 2018 section 4): f = ratio of post
means, g = ratio of pre means; Var and Cov come from the delta method on the four-variable
moments (``experiments.stats.moments``), then the same formula.  Conversion metrics are
mean metrics of a 0/1 value (pre value: converted in the lookback); the report tests them
with ``cuped_ols`` below (one pooled residual variance), not with per-arm variances.

Per arm the adjusted value and its per-customer variance are::

    f_cv,a = f_a - theta (g_a - g_all)            g_all = g on all arms' customers together
    v_cv,a = v_f,a - 2 theta c_fg,a + theta^2 v_g,a

(theta is treated as known, as in Deng et al.; its estimation error is O(1/n)), and the
arms are compared by ``experiments.stats.means.compare_values`` as any value metric.  The
adjusted estimates carry ``covariates = 1``: for a ratio, whose small-sample t counts the
customers with a denominator, the estimated theta costs one more degree of freedom per arm
(ddof 2, as a regression with one covariate; conservative, the pooled theta costs one in
all), which with ~60 buyers per arm is not negligible (``experiments.stats.means``).

Variance reduction reported = 1 - sum_a (n_a-1) v_cv,a / sum_a (n_a-1) v_f,a (= pooled
within-arm rho^2 for mean metrics).  Fallback (no adjustment, with a reason): no pre-period
variation at all (nobody had pre-period activity, or all had the same), or the pre statistic
is undefined (a ratio whose pre-period denominator is 0).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from experiments.stats._common import Reason, _jsonable
from experiments.stats._lazy import lazy_module
from experiments.stats.moments import Estimate, Moments, Statistic, estimate, quad

# Loaded on first use: see experiments.stats._lazy (not at Django setup).
stats = lazy_module("scipy.stats")

NO_PRE_DATA = Reason(
    "no_pre_period_data",
    "No customer has pre-experiment data for this metric (or all have the same), so CUPED cannot reduce variance; "
    "the unadjusted result is shown.",
)


@dataclass(frozen=True, slots=True)
class CupedResult:
    """Adjusted estimates per arm (same order as given), theta and the variance reduction.

    ``applied`` False means ``estimates`` are the unadjusted ones; ``undefined["theta"]``
    says why.
    """

    applied: bool
    theta: float | None
    variance_reduction: float | None
    estimates: tuple[Estimate, ...]
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def cuped(arms: Sequence[Moments], post: Statistic, pre: Statistic) -> CupedResult:
    """CUPED-adjust ``post`` with ``pre`` in every arm (module docstring)."""
    if not arms:
        raise ValueError("cuped needs at least one arm")
    plain = tuple(estimate(m, post) for m in arms)

    def fallback(reason: Reason) -> CupedResult:
        return CupedResult(False, None, None, plain, {"theta": reason, "variance_reduction": reason})

    total = arms[0]
    for m in arms[1:]:
        total = total + m
    all_means = total.means()
    if all_means is None:
        return fallback(plain[0].undefined.get("value") or NO_PRE_DATA)
    g_all = pre.value(all_means)
    if isinstance(g_all, Reason):
        return fallback(g_all)

    parts = []
    cov_sum = var_g_sum = var_f_sum = 0.0
    for m, plain_estimate in zip(arms, plain, strict=True):
        means, cov = m.means(), m.covariance()
        if means is None or cov is None or plain_estimate.value is None:
            parts.append(None)
            continue
        g_a = pre.value(means)
        if isinstance(g_a, Reason):
            return fallback(g_a)
        grad_f, grad_g = post.gradient(means), pre.gradient(means)
        v_f, c_fg, v_g = quad(grad_f, cov, grad_f), quad(grad_f, cov, grad_g), quad(grad_g, cov, grad_g)
        parts.append((g_a, v_f, c_fg, v_g))
        cov_sum += (m.n - 1) * c_fg
        var_g_sum += (m.n - 1) * v_g
        var_f_sum += (m.n - 1) * v_f
    if not var_g_sum > 0.0:
        return fallback(NO_PRE_DATA)
    theta = cov_sum / var_g_sum

    adjusted: list[Estimate] = []
    var_cv_sum = 0.0
    for m, plain_estimate, part in zip(arms, plain, parts, strict=True):
        if part is None:
            adjusted.append(plain_estimate)
            continue
        g_a, v_f, c_fg, v_g = part
        assert plain_estimate.value is not None
        v_cv = max(v_f - 2.0 * theta * c_fg + theta * theta * v_g, 0.0)
        var_cv_sum += (m.n - 1) * v_cv
        adjusted.append(
            Estimate(
                m.n,
                plain_estimate.value - theta * (g_a - g_all),
                v_cv,
                {},
                plain_estimate.units,
                plain_estimate.covariates + 1,
            )
        )
    reduction = 1.0 - var_cv_sum / var_f_sum if var_f_sum > 0.0 else None
    undefined = {} if reduction is not None else {"variance_reduction": NO_PRE_DATA}
    return CupedResult(True, theta, reduction, tuple(adjusted), undefined)


# --------------------------------------------------------------------------
# CUPED with a pooled residual variance (conversion metrics)
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CupedOls:
    """The OLS fit ``post ~ 1 + treatment + (pre - mean(pre))`` of two arms, from their
    moments; ``estimate`` = the treatment coefficient (= CUPED's adjusted difference),
    ``se`` its classical (homoskedastic) standard error, ``t`` / ``p_value`` against
    Student's t with ``df`` = N - 3. ``None`` fields are in ``undefined``."""

    theta: float | None
    estimate: float | None
    se: float | None
    t: float | None
    df: int | None
    p_value: float | None
    interval: tuple[float, float] | None
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def cuped_ols(arms: Sequence[Moments], post: int = 0, pre: int = 1, alpha: float = 0.05) -> tuple[CupedOls, ...]:
    """CUPED as the regression ``post ~ arm dummies + centred pre`` with ONE residual variance
    for all arms (ordinary least squares' classical standard error); one result per
    treatment ``arms[1:]``, each against the control ``arms[0]``.

    Why pooled: for a 0/1 outcome the per-arm (Welch / unpooled) variance of a small arm
    with few conversions is itself very noisy and too small exactly when the arm converted
    rarely by chance, so unbalanced splits at low rates reject too often (the same reason the
    conversion test is the pooled z, ``experiments.stats.proportions``). Under "no effect"
    all arms share one distribution, so one residual variance is the right null variance.

    From the moments only (analysis of covariance; Frisch-Waugh-Lovell, Greene, Econometric
    Analysis, 3.3): with within-arm sums of squares W_xx, W_xy, W_yy (``Moments.covariance``
    x (n_a - 1), summed over the A arms), N customers, d_x = mean_t(pre) - mean_c(pre), d_y
    likewise::

        theta = W_xy / W_xx                      (CUPED's pooled theta, ``cuped``)
        b     = d_y - theta d_x                  (the treatment's coefficient)
        s^2   = (W_yy - W_xy^2 / W_xx) / (N - A - 1)
        Var b = s^2 (1/n_t + 1/n_c + d_x^2 / W_xx)

    t = b / se against Student's t with N - A - 1 degrees of freedom. Equals statsmodels
    ``OLS(...).fit()`` (nonrobust) on the per-customer rows. Undefined (with a reason) when
    an arm is empty, there is no pre-period variation (W_xx = 0: use the unadjusted test),
    or the residual variance is 0.
    """
    if len(arms) < 2:
        raise ValueError("cuped_ols needs a control and at least one treatment")
    treatments = len(arms) - 1
    if any(arm.n == 0 for arm in arms):
        return (_ols_undefined(NO_TRAFFIC_OLS),) * treatments
    n = sum(arm.n for arm in arms)
    df = n - len(arms) - 1
    if df < 1:
        return (_ols_undefined(TOO_FEW_OLS),) * treatments
    w_xx = w_xy = w_yy = 0.0
    for arm in arms:
        cov = arm.covariance()
        if cov is None:
            continue
        w_xx += (arm.n - 1) * cov[pre][pre]
        w_xy += (arm.n - 1) * cov[post][pre]
        w_yy += (arm.n - 1) * cov[post][post]
    if not w_xx > 0.0:
        return (_ols_undefined(NO_PRE_DATA),) * treatments
    theta = w_xy / w_xx
    s2 = max(w_yy - w_xy * w_xy / w_xx, 0.0) / df
    crit = float(stats.t.isf(alpha / 2.0, df))
    control = arms[0].means()
    assert control is not None
    out = []
    for arm in arms[1:]:
        means = arm.means()
        assert means is not None
        d_x, d_y = means[pre] - control[pre], means[post] - control[post]
        b = d_y - theta * d_x
        var = s2 * (1.0 / arm.n + 1.0 / arms[0].n + d_x * d_x / w_xx)
        if not var > 0.0:
            reasons = {k: ZERO_RESIDUAL for k in ("se", "t", "p_value", "interval")}
            out.append(CupedOls(theta, b, None, None, df, None, None, reasons))
            continue
        se = math.sqrt(var)
        t = b / se
        p = min(max(float(2.0 * stats.t.sf(abs(t), df)), 0.0), 1.0)
        out.append(CupedOls(theta, b, se, t, df, p, (b - crit * se, b + crit * se)))
    return tuple(out)


def _ols_undefined(reason: Reason) -> CupedOls:
    return CupedOls(None, None, None, None, None, None, None, {k: reason for k in ("theta", "estimate", "p_value")})


NO_TRAFFIC_OLS = Reason("no_traffic", "An arm has no customers.")
TOO_FEW_OLS = Reason("too_few_customers", "Fewer than 4 customers: the regression has no residual degrees of freedom.")
ZERO_RESIDUAL = Reason(
    "zero_variance",
    "The outcome is fully explained by the pre-period (no residual variance), so the test is undefined.",
)
