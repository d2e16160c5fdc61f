"""The lift report as frozen dataclasses (built by ``experiments.reports.assemble``).

Every number that can be undefined is ``None`` with a ``Reason`` under the enclosing
object's ``undefined[field]``; :func:`to_jsonable` turns a report into JSON-ready data and
refuses NaN and infinity. The API's OpenAPI schema is derived from these classes.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from decimal import Decimal
from typing import Any, Literal

from experiments.stats import Interval, Reason

__all__ = [
    "ArmResult",
    "CupedView",
    "DailyPoint",
    "DimensionResult",
    "Direction",
    "ExperimentInfo",
    "Family",
    "HeterogeneityView",
    "LiftResult",
    "MetricInfo",
    "MetricReport",
    "PhaseInfo",
    "PlanInfo",
    "PowerResult",
    "Report",
    "RowResult",
    "Settings",
    "SrmStatus",
    "VariantInfo",
    "VerdictResult",
    "to_jsonable",
]

Direction = Literal["higher_is_better", "higher_is_worse"]
# Which family a comparison belongs to (issue 14): the one declared decision family, a
# guardrail's harm test, or exploratory (never a decision, never a playbook winner).
FamilyKind = Literal["confirmatory", "guardrail", "exploratory"]


@dataclass(frozen=True, slots=True)
class ExperimentInfo:
    key: str
    name: str
    status: str
    hypothesis: str
    minimum_detectable_effect: float
    started_at: dt.datetime | None
    stopped_at: dt.datetime | None
    managed_by: str = ""  # the owner of the experiment's audience (e.g. "campaign:7"), "" if none


@dataclass(frozen=True, slots=True)
class PhaseInfo:
    number: int
    started_at: dt.datetime
    ended_at: dt.datetime | None
    days_elapsed: float


@dataclass(frozen=True, slots=True)
class GuardrailPlan:
    metric: str
    margin: float  # tolerated worsening, absolute points (0.002 = 0.2 pts)


@dataclass(frozen=True, slots=True)
class PlanInfo:
    """The analysis plan of the phase, as recorded when it opened (``recorded`` False:
    the phase predates plans and the experiment's current settings are used instead)."""

    recorded: bool
    recorded_at: dt.datetime | None
    primary_metric: str
    secondary_metrics: tuple[str, ...]
    guardrails: tuple[GuardrailPlan, ...]
    confirmatory_dimensions: tuple[str, ...]
    inference_mode: str
    inference_mode_name: str
    planned_sample_size: int | None
    planned_end_at: dt.datetime | None
    fixed_audience: bool
    minimum_detectable_effect: float
    alpha: float
    correction: str
    correction_name: str
    horizon_reached: bool
    horizon_message: str


@dataclass(frozen=True, slots=True)
class Settings:
    alpha: float
    comparison_method: str
    adjustment: str
    adjustment_name: str
    min_customers_per_arm: int
    power: float
    inference_mode: str = "sequential"
    # Customers whose metric window is still open at ``generated_at`` are left out of the
    # counts and verdicts (README: "Who is counted"); False: everyone exposed counts.
    exclude_open_windows: bool = False


@dataclass(frozen=True, slots=True)
class VariantInfo:
    key: str
    name: str
    is_control: bool
    weight: float


@dataclass(frozen=True, slots=True)
class MetricInfo:
    event_type: str
    name: str
    role: str
    window_hours: int
    direction: Direction
    # Analysed customers left out of this metric because their window is still open (0 when
    # ``Settings.exclude_open_windows`` is off).
    open_window_customers: int = 0
    # Value metrics (issue 15). ``kind``: conversion / count / sum / ratio; ``event_type`` above
    # is the metric's key (``Metric.key``: the event code for a conversion, e.g. ``order:sum``
    # or ``order:sum/order:count`` otherwise); ``unit``: rate / per customer / money per
    # customer / ratio; ``currency``: of money values; ``cap``: the value each customer's
    # value was capped at (None: no capping); ``cuped_lookback_days``: 0 = CUPED off.
    kind: str = "conversion"
    unit: str = "rate"
    currency: str | None = None
    cap: float | None = None
    cuped_lookback_days: int = 0
    undefined: dict[str, Reason] = field(default_factory=dict)
    # Where a value metric's numbers came from: "stored" (the per-customer values written by
    # the refresh at ``values_stored_at``) or "events" (computed from the events at report
    # time: not refreshed since the metric was added or its definition changed); None for
    # conversions. ``values_source_message`` says which, in words.
    values_source: str | None = None
    values_stored_at: dt.datetime | None = None
    values_source_message: str = ""


@dataclass(frozen=True, slots=True)
class ArmResult:
    """One variant in one row: customers, conversions, rate = conversions / customers."""

    variant: str
    is_control: bool
    customers: int
    conversions: int
    rate: float | None
    undefined: dict[str, Reason] = field(default_factory=dict)
    # Value metrics: the arm's mean (or ratio) per customer, CUPED-adjusted when
    # ``RowResult.cuped.applied``, and the unadjusted one (None for conversion metrics).
    value: float | None = None
    unadjusted_value: float | None = None


@dataclass(frozen=True, slots=True)
class VerdictResult:
    """``label``: significant win / significant loss / inconclusive / not enough data,
    from the business's point of view (direction applied); ``harm``: a significant change
    in the bad direction; ``caveats``: why not to trust it yet (SRM)."""

    label: str
    reason: str
    message: str
    harm: bool
    caveats: tuple[Reason, ...] = ()


@dataclass(frozen=True, slots=True)
class LiftResult:
    """One treatment variant against the control in one row."""

    variant: str
    absolute_lift: float | None
    absolute_lift_ci: Interval | None
    relative_lift: float | None
    relative_lift_ci: Interval | None
    z: float | None
    p_value: float | None
    adjusted_p_value: float | None
    verdict: VerdictResult
    notes: tuple[Reason, ...] = ()
    undefined: dict[str, Reason] = field(default_factory=dict)
    family_kind: FamilyKind = "exploratory"


@dataclass(frozen=True, slots=True)
class SrmStatus:
    """Sample-ratio-mismatch check of one row's traffic (variants in the phase's order)."""

    variants: tuple[str, ...]
    observed: tuple[int, ...]
    expected: tuple[float, ...]
    weights: tuple[float, ...]
    statistic: float | None
    df: int | None
    p_value: float | None
    threshold: float
    flagged: bool
    message: str
    flags: tuple[Reason, ...] = ()
    notes: tuple[Reason, ...] = ()
    undefined: dict[str, Reason] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PowerResult:
    """Customers so far versus needed for the experiment's minimum detectable effect at
    the control's observed rate (two-sided, alpha 5%, 80% power, per treatment)."""

    baseline_rate: float | None
    relative_mde: float
    required_per_arm: dict[str, int] | None
    customers_per_arm: dict[str, int]
    progress: float | None
    reached: bool
    daily_traffic: float
    days_remaining: int | None
    message: str
    undefined: dict[str, Reason] = field(default_factory=dict)
    alpha: float = 0.05  # the per-comparison level the requirement is computed at
    alpha_rule: str = ""  # in words: which family and correction that level comes from
    inference_mode: str = "sequential"
    detectable_lift: float | None = None  # fixed audience: smallest relative lift detectable


@dataclass(frozen=True, slots=True)
class CupedView:
    """CUPED in one row (``experiments.stats.cuped``): theta pooled across the row's arms
    and the share of variance removed; ``applied`` False: unadjusted, reason in
    ``undefined["theta"]``."""

    applied: bool
    lookback_days: int
    theta: float | None
    variance_reduction: float | None
    undefined: dict[str, Reason] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RowResult:
    """The overall row (``dimension`` None) or one layer of a dimension (``layer`` None:
    customers who were in no layer of that dimension when assigned)."""

    dimension: str | None
    layer: str | None
    label: str
    customers: int
    arms: tuple[ArmResult, ...]
    lifts: tuple[LiftResult, ...]
    srm: SrmStatus
    power: PowerResult
    cuped: CupedView | None = None  # value metrics only


@dataclass(frozen=True, slots=True)
class Family:
    """The comparisons adjusted together (``method``), described in words. ``kind``:
    confirmatory (the one declared decision family), guardrail (one-sided harm tests) or
    exploratory (its own correction; never a decision)."""

    scope: str
    method: str
    size: int
    kind: FamilyKind = "exploratory"
    alpha: float = 0.05


@dataclass(frozen=True, slots=True)
class HeterogeneityView:
    """Does the lift differ between the layers of this dimension? ``scale``: "log_odds"
    (conversion metrics: likelihood-ratio test of variant x layer in a logistic model) or
    "difference" (value metrics: Wald / Cochran test of equal absolute differences)."""

    statistic: float | None
    df: int | None
    p_value: float | None
    differs: bool | None
    message: str
    notes: tuple[Reason, ...] = ()
    undefined: dict[str, Reason] = field(default_factory=dict)
    adjusted_p_value: float | None = None  # Holm across the dimensions tested for this metric
    scale: str = "log_odds"


@dataclass(frozen=True, slots=True)
class DimensionResult:
    key: str
    name: str
    family: Family
    heterogeneity: HeterogeneityView
    layers: tuple[RowResult, ...]
    confirmatory: bool = False


@dataclass(frozen=True, slots=True)
class MetricReport:
    metric: MetricInfo
    overall: RowResult
    overall_family: Family
    dimensions: tuple[DimensionResult, ...]
    harms: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DailyPoint:
    """Per UTC day and variant: first exposures and conversions (primary metric) that
    day, and the cumulative conversion rate = conversions so far / exposed so far."""

    day: dt.date
    variant: str
    exposed: int
    conversions: int
    cumulative_exposed: int
    cumulative_conversions: int
    cumulative_rate: float | None
    undefined: dict[str, Reason] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Report:
    experiment: ExperimentInfo
    phase: PhaseInfo | None
    plan: PlanInfo
    confirmatory_family: Family
    settings: Settings
    variants: tuple[VariantInfo, ...]
    srm: SrmStatus
    caveats: tuple[Reason, ...]
    metrics: tuple[MetricReport, ...]
    timeseries: tuple[DailyPoint, ...]
    generated_at: dt.datetime
    undefined: dict[str, Reason] = field(default_factory=dict)

    @property
    def primary(self) -> MetricReport | None:
        return next((m for m in self.metrics if m.metric.role == "primary"), None)

    @property
    def secondary(self) -> tuple[MetricReport, ...]:
        return tuple(m for m in self.metrics if m.metric.role == "secondary")

    @property
    def guardrails(self) -> tuple[MetricReport, ...]:
        return tuple(m for m in self.metrics if m.metric.role == "guardrail")

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(self)


def to_jsonable(value: Any) -> Any:
    """Report dataclasses (and the stats results inside) to JSON-ready data.

    Floats are finite or the call fails (an undefined number is None with its reason);
    datetimes are ISO 8601 in UTC, dates ISO, Decimals floats, tuples lists.
    """
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite number {value!r} in the report")
        return value
    if isinstance(value, Decimal):
        return to_jsonable(float(value))
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, dt.date):
        return value.isoformat()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    raise TypeError(f"cannot serialise {type(value).__name__}")
