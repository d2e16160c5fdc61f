"""Always-valid (sequential) inference: normal-mixture confidence sequences.

Why: a report is recomputed on every view.  Reading a fixed-horizon test every day and
stopping at the first "significant" verdict called ~31% of A/A experiments significant
(issue 14).  A *confidence sequence* (CS) is a sequence of intervals that contains the
true lift at every look simultaneously with probability >= 1 - alpha, so the report can
be read daily and stopped at any time (Howard, Ramdas, McAuliffe & Sekhon 2021,
"Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist.
49(2):1055-1080).  The same construction GrowthBook's gbstats uses (and Eppo's
"sequential" mode): the asymptotic CS of Waudby-Smith, Arbour, Sinha, Kennedy & Ramdas
(2023), "Time-uniform central limit theory and asymptotic confidence sequences",
arXiv:2103.06476v7, which plugs an estimated variance into Howard et al.'s normal-mixture
boundary.  The tests check our numbers against gbstats' published fixtures.

Notation: ``estimate`` = the lift (absolute p_t - p_c, or relative p_t/p_c - 1),
``se`` = its standard error now, ``n`` = customers in the two arms compared
(n_t + n_c), ``s2 = se^2 n`` (the per-customer variance scale), ``alpha`` the level.

Two-sided normal-mixture CS (Waudby-Smith et al. eq. 9; Howard et al. eq. (14) with
Howard's mixture variance rho_H = s2 / rho^2)::

    halfwidth = sqrt(s2) * sqrt( 2 (n rho^2 + 1) / (n rho)^2 * ln( sqrt(n rho^2 + 1) / alpha ) )

One-sided (lower *or* upper bound only; Waudby-Smith et al. eq. 134)::

    halfwidth = sqrt( s2 * 2 (n rho^2 + 1) / (n rho)^2 * ln( 1 + sqrt(n rho^2 + 1) / (2 alpha) ) )

Tuning parameter: the *expected sample size* N* (customers in the two arms when the
experiment is expected to be read for the decision, i.e. the plan's horizon).  rho is
chosen so that the boundary is (approximately) tightest at n = N* (Waudby-Smith et al.
eq. 161, after Howard et al. section 3.5)::

    rho^2 = ( -2 ln a + ln(1 - 2 ln a) ) / N*,   a = alpha (two-sided), 2 alpha (one-sided)

The closed form approximates the exact minimiser of the half-width at n = N*; the tests
check the half-width there is within 1% of the numerically minimised one.  A badly
guessed N* never breaks validity (coverage holds for every rho); it only makes the
intervals wider than necessary far from N*.

Always-valid p-value (two-sided; Waudby-Smith et al. eq. 155, as gbstats computes it):
the mixture martingale's value is the e-value
``E = exp( rho^2 n z^2 / (2 (n rho^2 + 1)) ) / sqrt(n rho^2 + 1)`` with
z = (estimate - null) / se, and ``p = min(1, 1/E)``.  Algebra shows
``p <= alpha  <=>  |estimate - null| >= halfwidth``: the p-value and the CS never
disagree.  For any stopping time tau, P(p_tau <= alpha) <= alpha under the null (Ville's
inequality), so reading p every day is safe.  This holds at every level a, not only the
alpha rho was tuned for (P(sup_t E_t >= 1/a) <= a), so Holm over always-valid p-values
keeps its family-wise guarantee at any stopping time: Holm rejects a true null only if the
smallest null p is <= alpha/m0, and by the union bound over the m0 nulls that has
probability <= alpha.  (Benjamini-Hochberg's FDR guarantee additionally needs its usual
dependence condition, positive regression dependence, which a stopping rule can break;
Holm is the default for that reason too.)  We report the p-value at the current look,
not the running minimum (which would need the whole history); both are valid.

One-sided p (H1: lift > null), by inverting the one-sided boundary at fixed rho:
``K = (estimate - null)^2 (n rho)^2 / (2 s2 (n rho^2 + 1))``,
``p = min(1, sqrt(n rho^2 + 1) / (2 (e^K - 1)))`` when estimate > null, else 1.

Variance: the unpooled (per-arm) variance, as gbstats.  A CS must cover every true lift,
not only 0, so the pooled "no difference" variance of the fixed-horizon test does not
apply; at any single look the mixture boundary is far wider than z_{1-alpha/2}, which
more than absorbs the small-sample anti-conservatism of the unpooled variance
(bench/decisions.py measures the A/A rate, including unequal splits).

Relative lift: delta method (as gbstats with difference_type="relative"):
``r = p_t / p_c - 1``, ``se^2 = v_t / (n_t p_c^2) + v_c p_t^2 / (n_c p_c^4)``,
``v = p (1 - p)``.
"""

from __future__ import annotations

import math
from typing import Final

from experiments.stats._common import Arm, Interval, Reason, _check_probability
from experiments.stats.proportions import Comparison

__all__ = [
    "DEFAULT_EXPECTED_N",
    "always_valid_p",
    "always_valid_p_one_sided",
    "compare_sequential",
    "cs_halfwidth",
    "cs_halfwidth_one_sided",
    "mixture_rho",
]

# Used only when no plan gives an expected sample size; gbstats' default too.
DEFAULT_EXPECTED_N: Final[int] = 5_000
SEQUENTIAL: Final[str] = "sequential"


def mixture_rho(alpha: float, expected_n: float, two_sided: bool = True) -> float:
    """rho with the boundary approximately tightest at n = expected_n.

    rho^2 = (-2 ln a + ln(1 - 2 ln a)) / N*, a = alpha (two-sided) or 2 alpha (one-sided);
    Waudby-Smith et al. (2023) eq. 161; gbstats ``sequential_rho``.
    """
    alpha = _check_probability("alpha", alpha)
    if not (isinstance(expected_n, (int, float)) and math.isfinite(expected_n) and expected_n > 0):
        raise ValueError(f"expected_n must be a positive number, got {expected_n!r}")
    a = alpha if two_sided else 2.0 * alpha
    if not a < 1.0:
        raise ValueError("a one-sided sequential test needs alpha < 0.5")
    return math.sqrt((-2.0 * math.log(a) + math.log(1.0 - 2.0 * math.log(a))) / expected_n)


def cs_halfwidth(se: float, n: int, alpha: float, rho: float) -> float:
    """Two-sided normal-mixture CS half-width (module docstring; gbstats
    ``sequential_interval_halfwidth``)."""
    s2 = se * se * n
    nr2 = n * rho * rho
    return math.sqrt(s2) * math.sqrt(2.0 * (nr2 + 1.0) / (n * rho) ** 2 * math.log(math.sqrt(nr2 + 1.0) / alpha))


def cs_halfwidth_one_sided(se: float, n: int, alpha: float, rho: float) -> float:
    """One-sided normal-mixture bound's distance from the estimate (gbstats
    ``sequential_interval_halfwidth_one_sided``)."""
    s2 = se * se * n
    nr2 = n * rho * rho
    return math.sqrt(s2 * 2.0 * (nr2 + 1.0) / (n * rho) ** 2 * math.log(1.0 + math.sqrt(nr2 + 1.0) / (2.0 * alpha)))


def always_valid_p(estimate: float, se: float, n: int, rho: float, null: float = 0.0) -> float:
    """Two-sided always-valid p = min(1, 1/E) (module docstring)."""
    nr2p1 = n * rho * rho + 1.0
    z2 = ((estimate - null) / se) ** 2
    log_e = rho * rho * n * z2 / (2.0 * nr2p1) - 0.5 * math.log(nr2p1)
    return 1.0 if log_e <= 0.0 else math.exp(-log_e)


def always_valid_p_one_sided(estimate: float, se: float, n: int, rho: float, null: float = 0.0) -> float:
    """One-sided always-valid p for H1: lift > null (module docstring)."""
    if estimate <= null:
        return 1.0
    s2 = se * se * n
    nr2p1 = n * rho * rho + 1.0
    k = (estimate - null) ** 2 * (n * rho) ** 2 / (2.0 * s2 * nr2p1)
    if k > 700.0:  # e^K overflows; p is 0 to double precision
        return 0.0
    return min(1.0, math.sqrt(nr2p1) / (2.0 * math.expm1(k)))


def _no_traffic(control: Arm, treatment: Arm, alpha: float) -> Comparison:
    empty = " and ".join(name for name, arm in (("control", control), ("treatment", treatment)) if arm.n == 0)
    reason = Reason(
        "no_traffic",
        f"The {empty} arm{'s have' if ' and ' in empty else ' has'} no customers yet, so the arms cannot be compared.",
    )
    undefined = {
        name: reason
        for name in ("absolute_lift", "absolute_lift_ci", "relative_lift", "relative_lift_ci", "z", "p_value")
    }
    for arm_name, arm in (("control", control), ("treatment", treatment)):
        if arm.n == 0:
            undefined[f"{arm_name}_rate"] = Reason("no_traffic", f"The {arm_name} arm has no customers yet.")
    return Comparison(
        control,
        treatment,
        SEQUENTIAL,
        alpha,
        control.rate,
        treatment.rate,
        None,
        None,
        None,
        None,
        None,
        None,
        undefined,
    )


def compare_sequential(
    control: Arm, treatment: Arm, alpha: float = 0.05, expected_n: float = DEFAULT_EXPECTED_N
) -> Comparison:
    """Always-valid comparison of two conversion rates (method "sequential").

    absolute_lift_ci: the two-sided CS of p_t - p_c; relative_lift_ci: the CS of
    p_t/p_c - 1 (delta method); z = (p_t - p_c)/se (unpooled, for reference);
    p_value: the always-valid p of "no difference", consistent with the absolute CS
    (p < alpha exactly when the CS leaves out 0).  ``expected_n`` is the tuning
    parameter (customers in these two arms at the planned horizon).
    """
    if not isinstance(control, Arm) or not isinstance(treatment, Arm):
        raise TypeError("control and treatment must be Arm instances")
    alpha = _check_probability("alpha", alpha)
    if control.n == 0 or treatment.n == 0:
        return _no_traffic(control, treatment, alpha)
    rho = mixture_rho(alpha, expected_n)
    nc, xc, nt, xt = control.n, control.conversions, treatment.n, treatment.conversions
    pc, pt = xc / nc, xt / nt
    n = nc + nt
    undefined: dict[str, Reason] = {}
    d = pt - pc
    var = pt * (1 - pt) / nt + pc * (1 - pc) / nc
    abs_ci: Interval | None = None
    z: float | None = None
    p: float | None = None
    if var <= 0.0:
        reason = Reason(
            "zero_variance",
            "Every customer in each arm behaved the same way (each arm at 0% or 100%), "
            "so the standard error is zero and the always-valid test cannot be computed.",
        )
        for name in ("absolute_lift_ci", "z", "p_value"):
            undefined[name] = reason
    else:
        se = math.sqrt(var)
        half = cs_halfwidth(se, n, alpha, rho)
        # A difference of two rates lies in [-1, 1]; intersecting a CS with the parameter
        # space keeps its coverage and spares the reader "+218 points" at tiny n.
        abs_ci = Interval(max(d - half, -1.0), min(d + half, 1.0))
        z = d / se
        p = always_valid_p(d, se, n, rho)

    relative: float | None = None
    rel_ci: Interval | None = None
    if xc == 0:
        reason = Reason(
            "control_rate_zero", "The control arm has no conversions, so a relative lift cannot be computed."
        )
        undefined["relative_lift"] = reason
        undefined["relative_lift_ci"] = reason
    else:
        relative = pt / pc - 1.0
        rel_var = pt * (1 - pt) / (nt * pc**2) + pc * (1 - pc) * pt**2 / (nc * pc**4)
        if rel_var <= 0.0:
            undefined["relative_lift_ci"] = Reason(
                "zero_variance", "Both arms have no variation, so the interval would have zero width."
            )
        else:
            half = cs_halfwidth(math.sqrt(rel_var), n, alpha, rho)
            rel_ci = Interval(max(relative - half, -1.0), relative + half)  # a rate ratio - 1 is >= -1
    return Comparison(
        control=control,
        treatment=treatment,
        method=SEQUENTIAL,
        alpha=alpha,
        control_rate=pc,
        treatment_rate=pt,
        absolute_lift=d,
        absolute_lift_ci=abs_ci,
        relative_lift=relative,
        relative_lift_ci=rel_ci,
        z=z,
        p_value=p,
        undefined=undefined,
    )
