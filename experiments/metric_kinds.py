"""Metric kinds as plug-ins (issue 15): what each kind measures per customer and which
statistic of those per-customer values the report compares.

Contract of a kind (one class per kind, registered in ``KINDS``):

* ``variables(metric)`` -> the per-customer variables, each one aggregate of one event type
  within the metric's window after first exposure (``Variable``): ``conversion`` (1 if any
  event, else 0), ``count`` (number of events) or ``sum`` (sum of ``amount``, optionally
  minus the refund event type's amounts).  The database turns them into sufficient
  statistics (``experiments.reports.value_moments``); with CUPED each variable also gets its
  pre-exposure twin over the lookback.
* ``statistic`` -> the function of the per-customer means compared between arms
  (``experiments.stats.MeanOf`` / ``RatioOf``).
* ``distribution`` -> "t" (Welch) for means and for ratios; a ratio's t uses the
  delta-method variance with the small-sample correction and degrees of freedom from the
  number of customers with a denominator (``experiments.stats.means``: a normal reference
  was liberal with few buyers, 5.8% at alpha 5% with ~63 per arm).
* ``is_value`` -> False only for the conversion kind, whose fixed-horizon test stays the
  pooled two-proportion z test (``experiments.stats.proportions``), or with CUPED the
  pooled-variance regression ``experiments.stats.cuped_ols``; value kinds go through
  ``experiments.stats.compare_values``.

A new kind is one new class here.  No Django import: the metric is read through attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from experiments.stats import MeanOf, RatioOf, Statistic

if TYPE_CHECKING:
    from experiments.models import Metric


@dataclass(frozen=True, slots=True)
class Variable:
    """One per-customer aggregate of one event type in the metric's window."""

    event_type_id: int
    part: str  # "conversion" | "count" | "sum"
    refund_event_type_id: int | None = None
    cappable: bool = True

    @property
    def money(self) -> bool:
        return self.part == "sum"


class MetricKind(Protocol):
    code: str
    is_value: bool
    distribution: str
    statistic: Statistic

    def variables(self, metric: Metric) -> tuple[Variable, ...]: ...

    def unit(self, metric: Metric) -> str: ...


class _Conversion:
    code = "conversion"
    is_value = False
    distribution = "normal"
    statistic: Statistic = MeanOf(0)

    def variables(self, metric: Metric) -> tuple[Variable, ...]:
        return (Variable(metric.event_type_id, "conversion", cappable=False),)

    def unit(self, metric: Metric) -> str:
        return "rate"


class _Count:
    code = "count"
    is_value = True
    distribution = "t"
    statistic: Statistic = MeanOf(0)

    def variables(self, metric: Metric) -> tuple[Variable, ...]:
        return (Variable(metric.event_type_id, "count"),)

    def unit(self, metric: Metric) -> str:
        return "per customer"


class _Sum:
    code = "sum"
    is_value = True
    distribution = "t"
    statistic: Statistic = MeanOf(0)

    def variables(self, metric: Metric) -> tuple[Variable, ...]:
        return (Variable(metric.event_type_id, "sum", metric.refund_event_type_id),)

    def unit(self, metric: Metric) -> str:
        return "money per customer"


class _Ratio:
    code = "ratio"
    is_value = True
    distribution = "t"
    statistic: Statistic = RatioOf(0, 1)

    def variables(self, metric: Metric) -> tuple[Variable, ...]:
        numerator_refund = metric.refund_event_type_id if metric.numerator_part == "sum" else None
        assert metric.denominator_event_type_id is not None
        return (
            Variable(metric.event_type_id, metric.numerator_part, numerator_refund),
            # The denominator is not capped: capping orders would change what "per order" means.
            Variable(metric.denominator_event_type_id, metric.denominator_part, cappable=False),
        )

    def unit(self, metric: Metric) -> str:
        return "ratio"


KINDS: Final[dict[str, MetricKind]] = {k.code: k for k in (_Conversion(), _Count(), _Sum(), _Ratio())}


def kind_of(metric: Metric) -> MetricKind:
    return KINDS[metric.kind]
