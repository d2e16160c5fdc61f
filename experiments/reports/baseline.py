"""The power planner's "estimate from the last N days": a value metric's baseline, its
per-customer variance and the variance reduction CUPED would achieve, from the events.

Population: every customer (``segments.selectors.customers_queryset``); a customer without
events of the type in the period counts as 0, as in an experiment's value metric. For an
event type E and ``days`` = N ending at ``now``:

    post_i = E's amounts (or events) of customer i in [now - N, now)
    pre_i  = the same in [now - 2N, now - N)         (CUPED's covariate: the same metric
                                                      over a lookback of the same length)

The database returns n-independent sums in ONE ``GROUP BY customer`` wrapped in one
aggregate (sum v_i, sum v_i v_j over the customers with events; customers without events
add zeros), so no per-customer row reaches Python; money is summed as exact integer
hundredths (``segments.money.AmountSum``). Then ``experiments.stats``: the baseline and
per-customer variance by ``estimate`` (mean, or a ratio by the delta method), the variance
reduction by ``cuped`` on the one "arm" of all customers (for a mean = corr(post, pre)^2,
Deng et al. 2013).

Mixed currencies are refused with a reason (never summed silently); an event type without
events in the period gives a reason too.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal

from django.db import connection
from django.db.models import Case, Count, F, Q, When

from experiments import stats
from experiments.stats import Reason
from segments import selectors as segment_selectors
from segments.money import UNIT, AmountSum

__all__ = ["MEASURES", "ValueBaseline", "value_baseline"]

Measure = Literal["sum", "count", "ratio"]
MEASURES: dict[str, str] = {
    "sum": "amount per customer (e.g. revenue per customer)",
    "count": "events per customer (e.g. orders per customer)",
    "ratio": "amount per event (e.g. average order value)",
}


@dataclass(frozen=True, slots=True)
class ValueBaseline:
    """``None`` numbers are explained in ``undefined``."""

    event_type: str
    measure: str
    days: int
    customers: int
    baseline: float | None
    variance: float | None
    variance_reduction: float | None
    currency: str | None
    undefined: dict[str, Reason] = field(default_factory=dict)


def value_baseline(*, event_type: str, measure: Measure, days: int, now: dt.datetime) -> ValueBaseline:
    """Baseline, per-customer variance and CUPED's expected variance reduction (module doc)."""
    if measure not in MEASURES:
        raise ValueError(f"measure must be one of {', '.join(MEASURES)}, got {measure!r}")
    start, middle = now - dt.timedelta(days=2 * days), now - dt.timedelta(days=days)
    events = segment_selectors.events_queryset(event_type_codes=[event_type]).filter(
        occurred_at__gte=start, occurred_at__lt=now
    )
    customers = segment_selectors.customers_queryset().count()

    def undefined(reason: Reason, currency: str | None = None) -> ValueBaseline:
        names = ("baseline", "variance", "variance_reduction")
        return ValueBaseline(
            event_type, measure, days, customers, None, None, None, currency, {name: reason for name in names}
        )

    currency = None
    if measure != "count":
        currencies = sorted(set(events.exclude(amount=None).values_list("currency", flat=True).distinct()[:3]))
        if len(currencies) > 1:
            return undefined(
                Reason(
                    "mixed_currencies",
                    f"The {event_type} events of the last {2 * days} days use {', '.join(currencies)}; amounts in "
                    "different currencies are not summed. Enter the baseline by hand.",
                )
            )
        currency = currencies[0] if currencies else None
    post, pre = Q(occurred_at__gte=middle), Q(occurred_at__lt=middle)
    per_customer = events.values("customer_id").annotate(
        post_amount=AmountSum(Case(When(post, then=F("amount")))),
        post_events=Count("pk", filter=post),
        pre_amount=AmountSum(Case(When(pre, then=F("amount")))),
        pre_events=Count("pk", filter=pre),
    )
    # Variables: amounts in hundredths (exact integers), event counts.
    columns = {
        "sum": ["post_amount", "pre_amount"],
        "count": ["post_events", "pre_events"],
        "ratio": ["post_amount", "post_events", "pre_amount", "pre_events"],
    }[measure]
    money = [name.endswith("amount") for name in columns]
    inner, params = per_customer.query.sql_with_params()
    # bigint x bigint could overflow on PostgreSQL before SUM widens it to numeric.
    cast = "CAST({} AS numeric)" if connection.vendor == "postgresql" else "{}"
    values = [f"COALESCE(t.{c}, 0)" for c in columns]
    pairs = [(i, j) for i in range(len(columns)) for j in range(i, len(columns))]
    select = [f"SUM({v})" for v in values] + [f"SUM({cast.format(values[i])} * {values[j]})" for i, j in pairs]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*), {', '.join(select)} FROM ({inner}) t", params)
        row = cursor.fetchone()
    if not row or not row[0]:
        return undefined(
            Reason("no_events", f"No {event_type} events in the last {2 * days} days to estimate from."), currency
        )
    k = len(columns)

    def scaled(raw: object, divisor: int) -> Decimal:
        return Decimal(int(raw or 0)) / divisor

    sums = [scaled(row[1 + i], UNIT if money[i] else 1) for i in range(k)]
    products = [[Decimal(0)] * k for _ in range(k)]
    for position, (i, j) in enumerate(pairs):
        value = scaled(row[1 + k + position], (UNIT if money[i] else 1) * (UNIT if money[j] else 1))
        products[i][j] = products[j][i] = value
    moments = stats.Moments(customers, tuple(sums), tuple(tuple(r) for r in products))
    post_stat, pre_stat = (
        (stats.MeanOf(0), stats.MeanOf(1))
        if measure != "ratio"
        else (
            stats.RatioOf(0, 1),
            stats.RatioOf(2, 3),
        )
    )
    plain = stats.estimate(moments, post_stat)
    if plain.value is None or plain.variance is None:
        reason = plain.undefined.get("value") or plain.undefined.get("variance")
        assert reason is not None
        return undefined(reason, currency)
    result = stats.cuped([moments], post_stat, pre_stat)
    undefined_fields: dict[str, Reason] = {}
    reduction: float | None = None
    if result.applied and result.variance_reduction is not None:
        reduction = max(result.variance_reduction, 0.0)
    else:
        undefined_fields["variance_reduction"] = result.undefined.get("variance_reduction") or Reason(
            "no_pre_data", "No pre-period variation to adjust with."
        )
    return ValueBaseline(
        event_type, measure, days, customers, plain.value, plain.variance, reduction, currency, undefined_fields
    )
