"""Guardrails: a one-sided test of harm beyond a non-inferiority margin.

A guardrail metric (unsubscribes, complaints) is "higher is worse".  The question is not
"did it change?" but "did the treatment make it worse by more than we tolerate?".  With
d = p_t - p_c and the margin delta >= 0 (absolute points) set per metric:

    H0: d <= delta  (no harm beyond the margin)   against   H1: d > delta (harm)

Rejecting H0 flags harm.  The p-value is one-sided, so it is not inflated by
improvements, and a tiny increase inside the margin never flags.  (A non-inferiority
trial reverses the roles: H0: d >= delta; we test for harm because a guardrail should
stop a launch only on evidence.  Reference: Chow, Shao & Wang, Sample Size Calculations
in Clinical Research, 2nd ed., 4.2; Farrington & Manning 1990, Stat Med 9:1447, for the
score test at a non-zero difference.)

Fixed horizon: the Farrington-Manning / Miettinen-Nurminen score statistic at v = delta
without the N/(N-1) factor (``proportions._mn_score_parts``; at delta = 0 it is the pooled
z of the decision test), p = 1 - Phi(z).  ``bound`` is the one-sided lower limit of the
matching score interval: harm is flagged exactly when bound > delta.

Sequential: the one-sided always-valid p of ``sequential.always_valid_p_one_sided`` with
null = delta, rho tuned for a one-sided boundary; ``bound`` = d - one-sided CS distance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from experiments.stats._common import Arm, Reason, _check_probability, _jsonable
from experiments.stats._lazy import lazy_module
from experiments.stats.proportions import _mn_score_parts
from experiments.stats.sequential import always_valid_p_one_sided, cs_halfwidth_one_sided, mixture_rho

# Loaded on first use: see experiments.stats._lazy (not at Django setup).
optimize = lazy_module("scipy.optimize")
special = lazy_module("scipy.special")

__all__ = ["HarmTest", "harm_test"]


@dataclass(frozen=True, slots=True)
class HarmTest:
    """One-sided test of H1: p_t - p_c > margin.  ``bound``: lower confidence bound of
    p_t - p_c at level 1 - alpha (harm beyond the margin is shown when bound > margin)."""

    margin: float
    sequential: bool
    p_value: float | None
    bound: float | None
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def _score_one_sided_p(xt: int, nt: int, xc: int, nc: int, value: float) -> float:
    numerator, var = _mn_score_parts(xt, nt, xc, nc, value, False)
    if var <= 0.0:
        return 0.0 if numerator > 0 else 1.0
    return float(special.ndtr(-numerator / math.sqrt(var)))


def harm_test(
    control: Arm,
    treatment: Arm,
    margin: float = 0.0,
    alpha: float = 0.05,
    sequential: bool = False,
    expected_n: float = 5_000,
) -> HarmTest:
    """One-sided harm test beyond ``margin`` (module docstring)."""
    alpha = _check_probability("alpha", alpha)
    if not (math.isfinite(margin) and 0.0 <= margin < 1.0):
        raise ValueError(f"margin must be in [0, 1), got {margin!r}")
    if control.n == 0 or treatment.n == 0:
        reason = Reason("no_traffic", "An arm has no customers yet.")
        return HarmTest(margin, sequential, None, None, {"p_value": reason, "bound": reason})
    xt, nt, xc, nc = treatment.conversions, treatment.n, control.conversions, control.n
    d = xt / nt - xc / nc
    if sequential:
        var = (xt / nt) * (1 - xt / nt) / nt + (xc / nc) * (1 - xc / nc) / nc
        if var <= 0.0:
            reason = Reason("zero_variance", "Each arm converted at 0% or 100%, so the test cannot be computed.")
            return HarmTest(margin, True, None, None, {"p_value": reason, "bound": reason})
        se, n = math.sqrt(var), nt + nc
        rho = mixture_rho(alpha, expected_n, two_sided=False)
        p = always_valid_p_one_sided(d, se, n, rho, null=margin)
        return HarmTest(margin, True, p, d - cs_halfwidth_one_sided(se, n, alpha, rho))
    p = _score_one_sided_p(xt, nt, xc, nc, margin)
    # Lower bound: the v with one-sided score p at v equal to alpha (p increases with v).
    low_edge = -1.0 + 1e-12
    if _score_one_sided_p(xt, nt, xc, nc, low_edge) >= alpha:
        bound = -1.0
    elif d >= 1.0 or _score_one_sided_p(xt, nt, xc, nc, min(d, 1.0 - 1e-12)) <= alpha:
        bound = d
    else:
        bound = float(
            optimize.brentq(
                lambda v: _score_one_sided_p(xt, nt, xc, nc, v) - alpha, low_edge, min(d, 1.0 - 1e-12), xtol=1e-14
            )
        )
    return HarmTest(margin, False, p, bound)
