"""Power: sample sizes for a minimum detectable effect, days needed, progress."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from experiments.stats._common import Reason, _check_count, _check_probability, _jsonable, _z_crit
from experiments.stats._lazy import lazy_module

# Loaded on first use: see experiments.stats._lazy (not at Django setup).
optimize = lazy_module("scipy.optimize")
special = lazy_module("scipy.special")

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
# Power under the rules in use: the family's adjusted alpha, the sequential test,
# a fixed audience (issue 14, bullet 5).
# --------------------------------------------------------------------------


def family_alpha(alpha: float, family_size: int) -> float:
    """The per-comparison level to plan a family of ``family_size`` comparisons for.

    alpha / m: the Bonferroni level, which is Holm's first (strictest) step, so the
    power computed at it is a lower bound on each comparison's power under Holm (Holm
    1979: a hypothesis rejected by Bonferroni is rejected by Holm).  Under
    Benjamini-Hochberg the per-comparison level lies between alpha/m and alpha
    depending on how many others are rejected; alpha / m is again the conservative
    choice.  The report states the level used.
    """
    alpha = _check_probability("alpha", alpha)
    size = _check_count("family_size", family_size)
    return alpha / max(size, 1)


def _sequential_boundary_factor(n: float, alpha: float, rho: float) -> float:
    """sqrt(n) c(n): the CS half-width in units of the standard error (sequential module)."""
    nr2 = n * rho * rho
    return math.sqrt(n) * math.sqrt(2.0 * (nr2 + 1.0) / (n * rho) ** 2 * math.log(math.sqrt(nr2 + 1.0) / alpha))


def _sequential_rho(alpha: float, expected_n: float) -> float:
    # Same as sequential.mixture_rho (imported lazily there to avoid a cycle).
    return math.sqrt((-2.0 * math.log(alpha) + math.log(1.0 - 2.0 * math.log(alpha))) / expected_n)


def sequential_power(
    p1: float, p2: float, n_control: float, n_treatment: float, alpha: float, expected_n: float | None = None
) -> float:
    """Chance that the always-valid test rejects at a look with these arm sizes.

    Under H1 the lift estimate is ~ N(d, se^2), d = p2 - p1,
    se^2 = p2(1-p2)/n_t + p1(1-p1)/n_c; the CS leaves out 0 when |estimate| > k se with
    k = sqrt(n) c(n) (the half-width in se units; ``sequential.cs_halfwidth``), so
    power = Phi(|d|/se - k) + Phi(-|d|/se - k).  It is the power *at that look*; a
    sequential test read every day has rejected by then at least as often, so this is a
    lower bound of the chance to have a verdict by the horizon.  ``expected_n`` tunes rho
    (None: tightest at this n).
    """
    n = n_control + n_treatment
    rho = _sequential_rho(alpha, expected_n if expected_n else n)
    se = math.sqrt(p2 * (1 - p2) / n_treatment + p1 * (1 - p1) / n_control)
    k = _sequential_boundary_factor(n, alpha, rho)
    shift = abs(p2 - p1) / se
    return float(special.ndtr(shift - k) + special.ndtr(-shift - k))


def sequential_sample_size(
    baseline_rate: float,
    relative_mde: float,
    alpha: float = 0.05,
    power: float = 0.8,
    ratio: float = 1.0,
    expected_n: float | None = None,
) -> SampleSize:
    """Customers per arm for the always-valid test to reach ``power`` at the MDE.

    Solves sequential_power(n_c, ratio n_c) = power for n_c by Brent's method (it is
    increasing in n_c).  ``expected_n=None`` tunes the mixture at the solution itself
    (the plan's horizon equals the required size: the best case); otherwise at the
    plan's horizon.  Undefined cases as ``sample_size``.
    """
    fixed = sample_size(baseline_rate, relative_mde, alpha=alpha, power=power, ratio=ratio)
    if fixed.required_control is None or fixed.target_rate is None:
        return fixed
    p1, p2 = fixed.baseline_rate, fixed.target_rate

    def excess(log_nc: float) -> float:
        nc = math.exp(log_nc)
        return sequential_power(p1, p2, nc, ratio * nc, alpha, expected_n) - power

    low = math.log(max(fixed.required_control, 2) / 2.0)
    high = math.log(fixed.required_control * 50.0 + 10.0)
    while excess(high) < 0 and high < 60:
        high += 2.0
    if excess(low) >= 0:
        nc = math.exp(low)
    else:
        nc = math.exp(optimize.brentq(excess, low, high, xtol=1e-12))
    return SampleSize(
        baseline_rate=p1,
        relative_mde=fixed.relative_mde,
        alpha=alpha,
        power=power,
        ratio=ratio,
        target_rate=p2,
        effect_size=fixed.effect_size,
        required_control=math.ceil(nc),
        required_treatment=math.ceil(nc * ratio),
    )


@dataclass(frozen=True, slots=True)
class DetectableLift:
    """Smallest relative lift detectable with ``power`` at these (final) arm sizes."""

    baseline_rate: float | None
    n_control: int
    n_treatment: int
    alpha: float
    power: float
    sequential: bool
    relative_lift: float | None
    undefined: dict[str, Reason] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(self)


def detectable_lift(
    baseline_rate: float | None,
    n_control: int,
    n_treatment: int,
    alpha: float = 0.05,
    power: float = 0.8,
    sequential: bool = False,
    expected_n: float | None = None,
) -> DetectableLift:
    """For a fixed audience: the smallest relative lift (upwards) detectable at its size.

    Fixed horizon: Cohen's h = (z_{1-alpha/2} + z_power) / sqrt(n_c n_t / (n_c + n_t))
    (NormalIndPower without the far tail), p2 = sin(asin(sqrt(p1)) + h/2)^2, lift =
    p2/p1 - 1.  Sequential: the lift r solving sequential_power(p1, p1 (1 + r)) = power.
    Undefined when the baseline is not in (0, 1), an arm is empty, or no lift up to
    100% conversion is detectable.
    """
    alpha = _check_probability("alpha", alpha)
    power = _check_probability("power", power)
    nc, nt = _check_count("n_control", n_control), _check_count("n_treatment", n_treatment)

    def undefined(reason: Reason) -> DetectableLift:
        return DetectableLift(baseline_rate, nc, nt, alpha, power, sequential, None, {"relative_lift": reason})

    if baseline_rate is None or not 0.0 < baseline_rate < 1.0:
        return undefined(Reason("baseline_rate_out_of_range", "The control's conversion rate must be above 0%."))
    if nc < 2 or nt < 2:
        return undefined(Reason("no_traffic", "An arm has (almost) no customers."))
    p1 = float(baseline_rate)
    if not sequential:
        h = (_z_crit(alpha) + float(special.ndtri(power))) / math.sqrt(nc * nt / (nc + nt))
        angle = math.asin(math.sqrt(p1)) + h / 2.0
        if angle >= math.pi / 2:
            return undefined(Reason("not_detectable", "No lift is detectable with this audience."))
        return DetectableLift(p1, nc, nt, alpha, power, False, math.sin(angle) ** 2 / p1 - 1.0)

    def excess(r: float) -> float:
        return sequential_power(p1, p1 * (1.0 + r), nc, nt, alpha, expected_n) - power

    top = (1.0 - 1e-9) / p1 - 1.0
    if excess(top) < 0:
        return undefined(Reason("not_detectable", "No lift is detectable with this audience."))
    return DetectableLift(p1, nc, nt, alpha, power, True, float(optimize.brentq(excess, 1e-9, top, xtol=1e-12)))
