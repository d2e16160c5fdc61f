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
mean metrics of a 0/1 value (pre value: converted in the lookback, or a count).

Per arm the adjusted value and its per-customer variance are::

    f_cv,a = f_a - theta (g_a - g_all)            g_all = g on all arms' customers together
    v_cv,a = v_f,a - 2 theta c_fg,a + theta^2 v_g,a

(theta is treated as known, as in Deng et al.; its estimation error is O(1/n)), and the
arms are compared by ``experiments.stats.means.compare_values`` as any value metric.

Variance reduction reported = 1 - sum_a (n_a-1) v_cv,a / sum_a (n_a-1) v_f,a (= pooled
within-arm rho^2 for mean metrics).  Fallback (no adjustment, with a reason): no pre-period
variation at all (nobody had pre-period activity, or all had the same), or the pre statistic
is undefined (a ratio whose pre-period denominator is 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from experiments.stats._common import Reason, _jsonable
from experiments.stats.moments import Estimate, Moments, Statistic, estimate, quad

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
        adjusted.append(Estimate(m.n, plain_estimate.value - theta * (g_a - g_all), v_cv, {}))
    reduction = 1.0 - var_cv_sum / var_f_sum if var_f_sum > 0.0 else None
    undefined = {} if reduction is not None else {"variance_reduction": NO_PRE_DATA}
    return CupedResult(True, theta, reduction, tuple(adjusted), undefined)
