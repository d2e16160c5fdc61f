"""Per-customer values of value metrics (issue 15): the SQL that computes them from the events,
and their materialization (``MetricValue``) by the conversion refresh.

Why stored: computing them at report time joins every analysed customer to the events of
the metric's types (bench/report_values.py at 100,000 customers: 1.9 s for revenue, 3.8 s
for a ratio, 18x the conversion-only report; at 10M, minutes). Conversions were already
materialized by the refresh for the same reason; values now are too, in the same pass over
the same customers, so the report's GROUP BY reads stored integers like it reads
conversions (``experiments.reports.value_moments``).

A customer's variables (``experiments.metric_kinds``): each one aggregate of one event type
within ``[first_exposed_at, first_exposed_at + window)``, and with CUPED its twin over
``[first_exposed_at - lookback, first_exposed_at)``, from ONE join of the assignments to
the events grouped per assignment (a hash join and one aggregate, not a correlated probe
per customer and variable). Money is exact: integer hundredths of the reporting currency;
another currency only by the declared rule (amount x rate, rounded to the cent per event).

Stored uncapped: the cap is a percentile over the analysed population as of the report
(``as_of`` moves it), so the report applies it to the stored raw values in SQL.

``Metric.values_signature`` records what the stored rows were computed with (kind, event
types, parts, window, lookback, currency rule); ``values_currencies`` the currencies seen.
A report uses the rows only while the signature matches the metric and the experiment's
currency settings; otherwise (a metric just added or changed, before the next refresh) it
computes the values from the events as before. An incremental refresh with a changed
signature rewrites the phase's rows in full.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from django.db import connection
from django.db.models import DateTimeField, ExpressionWrapper, F, QuerySet, Value
from django.db.models.functions import TruncDate

from experiments.metric_kinds import Variable, kind_of
from experiments.models import Assignment, Metric, MetricValue, MetricValueCell, Phase
from experiments.stats import Reason
from segments import selectors as segment_selectors
from segments.money import UNIT

WIDTH = 4  # MetricValue.v0..v3: a ratio with CUPED has four variables

_V = MetricValue._meta.db_table


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


@dataclass(frozen=True, slots=True)
class CurrencyRule:
    """The reporting currency and the declared rates of the other currencies found, or why
    the metric's amounts cannot be added up (``undefined``)."""

    wanted: str
    converted: dict[str, Decimal]
    undefined: Reason | None = None


def currencies_of(phase: Phase, metric: Metric, customers: QuerySet[Assignment] | None = None) -> list[str]:
    """Currencies of the amounts of the metric's events of the phase's customers (or of the
    ``customers`` assignments') since the phase's start minus the lookback."""
    post = kind_of(metric).variables(metric)
    type_ids = {v.event_type_id for v in post if v.money} | {
        v.refund_event_type_id for v in post if v.money and v.refund_event_type_id
    }
    if not type_ids:
        return []
    population = (
        customers if customers is not None else Assignment.objects.filter(phase=phase, first_exposed_at__isnull=False)
    ).values("customer_id")
    since = phase.started_at - dt.timedelta(days=int(metric.cuped_lookback_days))
    found = (
        segment_selectors.events_queryset()
        .filter(event_type_id__in=type_ids, amount__isnull=False, occurred_at__gte=since)
        .filter(customer_id__in=population)
        .values_list("currency", flat=True)
        .distinct()
    )
    return sorted(set(found))


def _rates(raw: Mapping[str, object]) -> dict[str, Decimal]:
    """Validated declared rates: ISO codes to positive decimals (anything else is ignored,
    so that currency counts as undeclared and is refused)."""
    out = {}
    for code, value in raw.items():
        try:
            rate = Decimal(str(value))
        except ArithmeticError:
            continue
        if re.fullmatch(r"[A-Z]{3}", str(code)) and rate.is_finite() and rate > 0:
            out[str(code)] = rate
    return out


def currency_rule(
    currencies: list[str], reporting_currency: str, currency_rates: Mapping[str, object] | None
) -> CurrencyRule:
    wanted = reporting_currency or (currencies[0] if len(currencies) == 1 else "")
    rates = _rates(currency_rates or {})
    foreign = [c for c in currencies if c != wanted]
    missing = [c for c in foreign if c not in rates] if wanted else foreign
    if missing:
        reason = Reason(
            "mixed_currencies",
            f"The events of this metric use {', '.join(currencies)}"
            + (
                f" but the experiment reports in {wanted} with no declared rate for {', '.join(missing)}"
                if wanted
                else ""
            )
            + ": amounts in different currencies are never added up. Declare a reporting currency and a rate "
            "for each other currency (the experiment's currency rates).",
        )
        return CurrencyRule(wanted, {}, reason)
    return CurrencyRule(wanted, {c: rates[c] for c in foreign})


def signature(metric: Metric, rule: CurrencyRule) -> str:
    """What a metric's stored values depend on (not the cap: applied at report time)."""
    post = kind_of(metric).variables(metric)
    described = {
        "kind": metric.kind,
        "variables": [[v.event_type_id, v.part, v.refund_event_type_id] for v in post],
        "window_hours": int(metric.window_hours),
        "lookback_days": int(metric.cuped_lookback_days),
        "currency": rule.wanted,
        "rates": {c: str(r) for c, r in sorted(rule.converted.items())},
        "undefined": rule.undefined.code if rule.undefined else None,
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()


def per_customer_sql(
    *, metric: Metric, population: QuerySet[Assignment], converted: Mapping[str, Decimal]
) -> tuple[str, list[object], list[str]]:
    """SELECT of one row per assignment of ``population``: ``id, variant_id, snapshot_id,
    w_start`` (its first exposure), ``w_day`` (its UTC day) and the variables ``v0..`` (post, then pre with CUPED),
    integers; returns (sql, params, variable column names)."""
    post = kind_of(metric).variables(metric)
    lookback = int(metric.cuped_lookback_days)
    cuped = lookback > 0
    window = dt.timedelta(hours=metric.window_hours)
    bounds = population.annotate(
        w_start=F("first_exposed_at"),
        w_end=ExpressionWrapper(F("first_exposed_at") + Value(window), output_field=DateTimeField()),
        pre_start=ExpressionWrapper(
            F("first_exposed_at") - Value(dt.timedelta(days=lookback)), output_field=DateTimeField()
        ),
        w_day=TruncDate("first_exposed_at", tzinfo=dt.UTC),
    ).values("id", "customer_id", "variant_id", "snapshot_id", "w_start", "w_end", "pre_start", "w_day")
    bounds_sql, bounds_params = bounds.query.sql_with_params()
    event_table = _q(segment_selectors.events_queryset().model._meta.db_table)
    integer = "bigint" if connection.vendor == "postgresql" else "INTEGER"
    exact = (
        "CAST(e.amount * 100 AS bigint)"
        if connection.vendor == "postgresql"
        else f"CAST(ROUND(e.amount * 100) AS {integer})"
    )
    # The declared rule: another currency's amount x its rate, rounded to the cent per event.
    # Codes and rates are validated (``_rates``) before they are written into the SQL.
    amount = (
        "(CASE "
        + " ".join(
            f"WHEN e.{_q('currency')} = '{code}' THEN CAST(ROUND(e.amount * {rate} * 100) AS {integer})"
            for code, rate in sorted(converted.items())
        )
        + f" ELSE {exact} END)"
        if converted
        else exact
    )
    assert UNIT == 100

    def column(variable: Variable, lower: str, upper: str) -> tuple[str, list[object]]:
        inside = f"e.{_q('occurred_at')} >= b.{_q(lower)} AND e.{_q('occurred_at')} < b.{_q(upper)}"

        def one(type_id: int) -> tuple[str, list[object]]:
            value = {"conversion": "1", "count": "1", "sum": amount}[variable.part]
            return f"CASE WHEN e.{_q('event_type_id')} = %s AND {inside} THEN {value} ELSE 0 END", [type_id]

        sql, params = one(variable.event_type_id)
        if variable.part == "sum" and variable.refund_event_type_id:
            refund_sql, refund_params = one(variable.refund_event_type_id)
            sql, params = f"{sql} - {refund_sql}", [*params, *refund_params]
        aggregate = "MAX" if variable.part == "conversion" else "SUM"
        return f"COALESCE({aggregate}({sql}), 0)", params

    pieces = [column(v, "w_start", "w_end") for v in post]
    if cuped:
        pieces += [column(v, "pre_start", "w_start") for v in post]
    names = [f"v{i}" for i in range(len(pieces))]
    type_ids = sorted(
        {v.event_type_id for v in post} | {v.refund_event_type_id for v in post if v.refund_event_type_id}
    )
    lower = "pre_start" if cuped else "w_start"
    sql = (
        f"SELECT b.{_q('id')}, b.{_q('variant_id')}, b.{_q('snapshot_id')}, b.{_q('w_start')}, b.{_q('w_day')}, "
        + ", ".join(f"{piece} AS {_q(name)}" for (piece, _), name in zip(pieces, names, strict=True))
        + f" FROM ({bounds_sql}) b LEFT JOIN {event_table} e ON e.{_q('customer_id')} = b.{_q('customer_id')}"
        f" AND e.{_q('event_type_id')} IN ({', '.join(['%s'] * len(type_ids))})"
        f" AND e.{_q('occurred_at')} >= b.{_q(lower)} AND e.{_q('occurred_at')} < b.{_q('w_end')}"
        f" GROUP BY b.{_q('id')}, b.{_q('variant_id')}, b.{_q('snapshot_id')}, b.{_q('w_start')}, b.{_q('w_day')}"
    )
    params = [p for _, piece_params in pieces for p in piece_params] + list(bounds_params) + type_ids
    return sql, params, names


def metric_values_refresh(
    *,
    phase: Phase,
    metric: Metric,
    assignments: QuerySet[Assignment],
    considered: QuerySet[Assignment] | None,
) -> int:
    """Rewrite the stored values of a value metric, or of a conversion metric with CUPED
    (its conversion and pre-period conversion), for the ``considered`` assignments (None:
    the whole phase) from ``assignments`` (the analysed ones among them); rows written.
    Called by the conversion refresh inside its transaction."""
    if not kind_of(metric).is_value and not int(metric.cuped_lookback_days):
        return 0
    experiment = phase.experiment
    if considered is not None and metric.values_signature:
        # An incremental refresh: the currencies seen so far and those of these customers'
        # events (a full refresh, the nightly one, forgets currencies no longer present).
        currencies = sorted(set(metric.values_currencies or []) | set(currencies_of(phase, metric, considered)))
    else:
        currencies = currencies_of(phase, metric)
    rule = currency_rule(currencies, experiment.reporting_currency, experiment.currency_rates)
    current = signature(metric, rule)
    if current != metric.values_signature:  # computed otherwise (or never): the whole phase again
        considered = None
        assignments = Assignment.objects.filter(phase=phase, first_exposed_at__isnull=False, conflicting_exposure=False)
    stale = MetricValue.objects.filter(phase=phase, metric=metric)
    days: set[dt.date] | None = None  # the days whose cells change (None: all)
    if considered is not None:
        stale = stale.filter(assignment_id__in=considered.values("id"))
        days = set(stale.values_list("first_exposed_on", flat=True).distinct()) | set(
            assignments.annotate(day=TruncDate("first_exposed_at", tzinfo=dt.UTC))
            .values_list("day", flat=True)
            .distinct()
        )
    stale._raw_delete(stale.db)  # nothing depends on a stored value: one DELETE, no cascade collection
    written = 0
    if rule.undefined is None:
        select_sql, params, names = per_customer_sql(metric=metric, population=assignments, converted=rule.converted)
        columns = ", ".join(f"v{i}" for i in range(WIDTH))
        nonzero = " OR ".join(f"src.{n} <> 0" for n in names)
        sql = (
            f"INSERT INTO {_V} (assignment_id, metric_id, phase_id, variant_id, snapshot_id, first_exposed_at, "
            f"first_exposed_on, {columns}) SELECT src.id, %s, %s, src.variant_id, src.snapshot_id, src.w_start, "
            "src.w_day, "
            + ", ".join([f"src.{n}" for n in names] + ["0"] * (WIDTH - len(names)))
            + f" FROM ({select_sql}) AS src WHERE {nonzero}"
        )
        with connection.cursor() as cursor:
            cursor.execute(sql, [metric.pk, phase.pk, *params])
            written = max(cursor.rowcount, 0)
    _cells_rebuild(phase=phase, metric=metric, days=days)
    Metric.objects.filter(pk=metric.pk).update(values_signature=current, values_currencies=currencies)
    metric.values_signature, metric.values_currencies = current, currencies
    return written


def _cells_rebuild(*, phase: Phase, metric: Metric, days: set[dt.date] | None) -> None:
    """Recompute ``MetricValueCell`` of these days of first exposure (None: all) from the
    stored rows: one DELETE and one INSERT … SELECT … GROUP BY (variant, snapshot, day)."""
    if days is not None and not days:
        return
    cells = MetricValueCell.objects.filter(phase=phase, metric=metric)
    day_sql, day_params = "", []
    if days is not None:
        cells = cells.filter(first_exposed_on__in=sorted(days))
        day_sql = f" AND first_exposed_on IN ({', '.join(['%s'] * len(days))})"
        day_params = [connection.ops.adapt_datefield_value(d) for d in sorted(days)]
    cells._raw_delete(cells.db)
    pairs = [(i, j) for i in range(WIDTH) for j in range(i, WIDTH)]
    sums = ", ".join([f"SUM(v{i})" for i in range(WIDTH)] + [f"SUM(v{i} * v{j})" for i, j in pairs])
    sql = (
        f"INSERT INTO {_q(MetricValueCell._meta.db_table)} (metric_id, phase_id, variant_id, snapshot_id, "
        f"first_exposed_on, {_q('rows')}, "
        + ", ".join([f"s{i}" for i in range(WIDTH)] + [f"p{i}{j}" for i, j in pairs])
        + f") SELECT metric_id, phase_id, variant_id, snapshot_id, first_exposed_on, COUNT(*), {sums} FROM {_V}"
        f" WHERE phase_id = %s AND metric_id = %s{day_sql}"
        " GROUP BY metric_id, phase_id, variant_id, snapshot_id, first_exposed_on"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [phase.pk, metric.pk, *day_params])
