"""Power planning with the configured traffic split: customers needed per arm, and days.

Used by the report's power status and by the admin's power planner page. No database.

For each treatment t against the control c, ``experiments.stats.sample_size`` gives the
customers needed to detect a relative lift ``mde`` on a baseline rate ``p`` with a
two-sided test at ``alpha`` and the given ``power`` (statsmodels ``NormalIndPower`` on
Cohen's h = 2 asin(sqrt(p (1 + mde))) - 2 asin(sqrt(p))), with the arms in the ratio of
their weights (``ratio = w_t / w_c``). The control needs the largest of its requirements.

Days: traffic is split by the configured weights (``experiments.stats.days_needed``
assumes an equal split, which is wrong for 10/90 experiments), so arm i receives
``daily_traffic x w_i / sum(w)`` customers a day and

    days = ceil( max_i  max(required_i - customers_i, 0) / (daily_traffic x w_i / sum(w)) ).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from experiments import stats
from experiments.stats import Reason

__all__ = ["Arm", "Requirement", "days_to_reach", "requirement"]


@dataclass(frozen=True, slots=True)
class Arm:
    key: str
    weight: float
    is_control: bool


@dataclass(frozen=True, slots=True)
class Requirement:
    """Customers needed per arm (``None`` with reasons when it cannot be planned)."""

    baseline_rate: float
    relative_mde: float
    alpha: float
    power: float
    required_per_arm: dict[str, int] | None
    total: int | None
    undefined: dict[str, Reason] = field(default_factory=dict)


def requirement(
    *,
    baseline_rate: float,
    relative_mde: float,
    arms: Sequence[Arm],
    alpha: float,
    power: float,
    sequential: bool = False,
    variance: float | None = None,
    variance_reduction: float = 0.0,
) -> Requirement:
    """Customers per arm; ``sequential``: for the always-valid test
    (``stats.sequential_sample_size``, mixture tuned at the requirement itself).

    Value metrics (mean or ratio per customer, issue 15): pass the control's per-customer
    ``variance`` (and CUPED's ``variance_reduction``): ``stats.value_sample_size`` (normal
    approximation on sigma^2 (1 - R)); ``baseline_rate`` is then the control's mean or
    ratio; ``sequential`` plans the always-valid test for them too."""

    def size(baseline: float, mde: float, *, alpha: float, power: float, ratio: float):  # type: ignore[no-untyped-def]
        if variance is not None:
            return stats.value_sample_size(
                baseline,
                variance,
                mde,
                alpha=alpha,
                power=power,
                ratio=ratio,
                variance_reduction=variance_reduction,
                sequential=sequential,
            )
        plan = stats.sequential_sample_size if sequential else stats.sample_size
        return plan(baseline, mde, alpha=alpha, power=power, ratio=ratio)

    control = next((a for a in arms if a.is_control), None)

    def undefined(reason: Reason) -> Requirement:
        return Requirement(
            baseline_rate, relative_mde, alpha, power, None, None, {"required_per_arm": reason, "total": reason}
        )

    if control is None:
        return undefined(Reason("no_control", "The experiment has no control variant."))
    if control.weight <= 0:
        return undefined(Reason("control_gets_no_traffic", "The control is configured to get no traffic."))
    required: dict[str, int] = {}
    for arm in arms:
        if arm.is_control or arm.weight <= 0:
            continue
        plan = size(baseline_rate, relative_mde, alpha=alpha, power=power, ratio=arm.weight / control.weight)
        if plan.required_control is None or plan.required_treatment is None:
            return undefined(
                plan.undefined.get("required_control")
                or Reason("sample_size_undefined", "The required sample size is unknown.")
            )
        required[control.key] = max(required.get(control.key, 0), plan.required_control)
        required[arm.key] = plan.required_treatment
    if not required:
        return undefined(Reason("no_treatment_traffic", "No treatment variant is configured to get traffic."))
    ordered = {a.key: required[a.key] for a in arms if a.key in required}
    return Requirement(baseline_rate, relative_mde, alpha, power, ordered, sum(ordered.values()))


def days_to_reach(
    *,
    required_per_arm: Mapping[str, int],
    arms: Sequence[Arm],
    daily_traffic: float,
    customers_so_far: Mapping[str, int] | None = None,
) -> tuple[int | None, Reason | None]:
    """Whole days until every arm has its requirement, at ``daily_traffic`` customers a
    day (all arms together) split by weight; ``(None, reason)`` when it never happens."""
    so_far = customers_so_far or {}
    remaining = {key: max(need - so_far.get(key, 0), 0) for key, need in required_per_arm.items()}
    if not any(remaining.values()):
        return 0, None
    if daily_traffic <= 0:
        return None, Reason("no_traffic", "No daily traffic, so the sample size is never reached.")
    positive = sum(a.weight for a in arms if a.weight > 0)
    share = {a.key: a.weight / positive for a in arms if a.weight > 0}
    days = max(left / (daily_traffic * share[key]) for key, left in remaining.items() if left)
    return math.ceil(days - 1e-9), None
