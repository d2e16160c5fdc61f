"""Sufficient statistics of value metrics from the database (issue 15).

For one metric of one phase the database returns, per ``(variant, snapshot)`` cell,

    n, sum v_i, sum v_i v_j       (i <= j over the metric's per-customer variables)

in ONE ``GROUP BY`` over a derived table of the analysis population (the same population as
``aggregation``: exposed, not conflicting, window closed at ``as_of`` when open windows are
excluded).  Each customer's variables come from ONE join of the population to the events
of the metric's types inside ``[first_exposed_at - lookback, first_exposed_at + window)``
(the lookback only with CUPED), grouped per assignment with conditional sums for the
window and the pre-period.  No per-customer row leaves the database.  The cells are rolled up to the overall row and to
every layer in Python (a few hundred cells, exact ``Moments`` addition).

Money is exact: per customer the amounts are summed as integer hundredths
(``segments.money.AmountSum``), so every sum and product is an integer (SQLite: 64-bit,
which fails loudly rather than wrap above ~9.2e18 hundredths^2; PostgreSQL: ``SUM`` over
bigint is numeric), scaled back to currency units exactly as ``Decimal``.

Capping (``Metric.cap_percentile``): the cap is the nearest-rank percentile of the post
values over all customers of the phase (``experiments.stats.cap_rank``), found by the
database with ``ORDER BY v LIMIT 1 OFFSET rank - 1``; the sums then use ``MIN(v, cap)``
(``CASE``, portable); the pre-period twin is capped at the same cap.  One more pass.

Currency: value metrics over amounts need one currency.  The distinct currencies of the
events involved (since the phase's start minus the lookback) are read first; a currency
other than ``Experiment.reporting_currency`` (or, without one, a second currency) is
converted only by the declared rule, ``Experiment.currency_rates`` (``{"USD": "0.92"}``:
each event's amount x rate, rounded to the cent); a currency without a declared rate makes
the metric undefined with a reason naming it.  Amounts are never summed across currencies
silently.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection
from django.db.models import DateTimeField, ExpressionWrapper, F, Value

from experiments.metric_kinds import Variable, kind_of
from experiments.models import Assignment, Metric, Phase, SegmentSnapshot
from experiments.stats import Moments, Reason, cap_rank
from segments import selectors as segment_selectors
from segments.money import UNIT

__all__ = ["ValueCells", "value_cells"]


@dataclass(frozen=True, slots=True)
class ValueCells:
    """A value metric's moments per variant (overall) and per (dimension, layer, variant).

    Variables: the metric kind's post variables, then (``cuped``) their pre-period twins in
    the same order.  ``undefined`` (e.g. ``mixed_currencies``) means no moments at all.
    """

    metric_id: int
    variables: int
    cuped: bool
    overall: dict[int, Moments]
    layers: dict[tuple[str, str | None], dict[int, Moments]]
    cap: Decimal | None = None
    currency: str | None = None
    undefined: dict[str, Reason] = field(default_factory=dict)


def _currencies(phase: Phase, variables: tuple[Variable, ...], lookback_days: int) -> list[str]:
    type_ids = {v.event_type_id for v in variables if v.money} | {
        v.refund_event_type_id for v in variables if v.money and v.refund_event_type_id
    }
    if not type_ids:
        return []
    population = Assignment.objects.filter(phase=phase, first_exposed_at__isnull=False).values("customer_id")
    since = phase.started_at - dt.timedelta(days=lookback_days)
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


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def value_cells(
    *,
    phase: Phase,
    metric: Metric,
    as_of: dt.datetime | None,
    reporting_currency: str = "",
    currency_rates: Mapping[str, object] | None = None,
) -> ValueCells:
    """Moments of ``metric`` (a value kind, or a conversion with CUPED) per cell of ``phase``."""
    kind = kind_of(metric)
    post = kind.variables(metric)
    k = len(post)
    lookback = int(metric.cuped_lookback_days)
    cuped = lookback > 0

    currencies = _currencies(phase, post, lookback)
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
        return ValueCells(metric.pk, k, cuped, {}, {}, None, None, {"moments": reason})
    converted = {c: rates[c] for c in foreign}

    population = Assignment.objects.filter(phase=phase, first_exposed_at__isnull=False, conflicting_exposure=False)
    if as_of is not None:
        population = population.filter(first_exposed_at__lte=as_of - dt.timedelta(hours=metric.window_hours))
    # The population with each customer's window bounds (Django compiles the date
    # arithmetic per backend), then ONE join to the events of the metric's types inside
    # [pre-period start, window end), grouped per assignment: a hash join and one
    # aggregate instead of a correlated probe per customer and variable (measured 10x
    # slower at 100k customers, bench/report_values.py).
    window = dt.timedelta(hours=metric.window_hours)
    bounds = population.annotate(
        w_start=F("first_exposed_at"),
        w_end=ExpressionWrapper(F("first_exposed_at") + Value(window), output_field=DateTimeField()),
        pre_start=ExpressionWrapper(
            F("first_exposed_at") - Value(dt.timedelta(days=lookback)), output_field=DateTimeField()
        ),
    ).values("id", "customer_id", "variant_id", "snapshot_id", "w_start", "w_end", "pre_start")
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
    inner_sql = (
        f"SELECT b.{_q('variant_id')}, b.{_q('snapshot_id')}, "
        + ", ".join(f"{sql} AS {_q(name)}" for (sql, _), name in zip(pieces, names, strict=True))
        + f" FROM ({bounds_sql}) b LEFT JOIN {event_table} e ON e.{_q('customer_id')} = b.{_q('customer_id')}"
        f" AND e.{_q('event_type_id')} IN ({', '.join(['%s'] * len(type_ids))})"
        f" AND e.{_q('occurred_at')} >= b.{_q(lower)} AND e.{_q('occurred_at')} < b.{_q('w_end')}"
        f" GROUP BY b.{_q('id')}, b.{_q('variant_id')}, b.{_q('snapshot_id')}"
    )
    params = [p for _, piece_params in pieces for p in piece_params] + list(bounds_params) + type_ids
    columns = [f"t.{_q(name)}" for name in names]

    cap: int | None = None
    capped = [False] * len(names)
    if metric.cap_percentile is not None and metric.kind != Metric.Kind.CONVERSION:
        for i, variable in enumerate(post):
            if not variable.cappable:
                continue
            n = population.count()
            rank = cap_rank(n, float(metric.cap_percentile))
            if rank is None:
                break
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT t.{_q(f'v{i}')} FROM ({inner_sql}) t ORDER BY 1 LIMIT 1 OFFSET %s", [*params, rank - 1]
                )
                cap = int(cursor.fetchone()[0])
            capped[i] = True
            if cuped:
                capped[k + i] = True
            break  # at most one capped variable per kind (the numerator)
    values = [
        f"(CASE WHEN {c} > {cap} THEN {cap} ELSE {c} END)" if capped[i] and cap is not None else c
        for i, c in enumerate(columns)
    ]
    products = [(i, j) for i in range(len(values)) for j in range(i, len(values))]
    select = ", ".join([f"SUM({v})" for v in values] + [f"SUM({values[i]} * {values[j]})" for i, j in products])
    sql = (
        f"SELECT t.{_q('variant_id')}, t.{_q('snapshot_id')}, COUNT(*), {select} FROM ({inner_sql}) t "
        f"GROUP BY t.{_q('variant_id')}, t.{_q('snapshot_id')}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()

    scale = [UNIT if (post[i % k].money) else 1 for i in range(len(names))]

    def exact(raw: object, divisor: int) -> Decimal | int:
        number = int(raw or 0)
        return Decimal(number) / divisor if divisor != 1 else number

    m = len(names)
    cells: dict[tuple[int, int], Moments] = {}
    for row in rows:
        variant_id, snapshot_id, n = row[0], row[1], int(row[2])
        sums = tuple(exact(row[3 + i], scale[i]) for i in range(m))
        table: list[list[Decimal | int]] = [[0] * m for _ in range(m)]
        for position, (i, j) in enumerate(products):
            table[i][j] = table[j][i] = exact(row[3 + m + position], scale[i] * scale[j])
        cells[(variant_id, snapshot_id)] = Moments(n, sums, tuple(tuple(r) for r in table))

    snapshot_layers: dict[int, dict[str, str]] = dict(
        SegmentSnapshot.objects.filter(pk__in={s for _, s in cells}).values_list("id", "layers")
    )
    dimensions = sorted({d for layers in snapshot_layers.values() for d in layers})
    overall: dict[int, Moments] = {}
    layers: dict[tuple[str, str | None], dict[int, Moments]] = defaultdict(dict)

    def add(target: dict[int, Moments], variant_id: int, moments: Moments) -> None:
        target[variant_id] = target[variant_id] + moments if variant_id in target else moments

    for (variant_id, snapshot_id), moments in cells.items():
        add(overall, variant_id, moments)
        found = snapshot_layers.get(snapshot_id, {})
        for dimension in dimensions:
            add(layers[(dimension, found.get(dimension))], variant_id, moments)
    cap_value = (Decimal(cap) / UNIT if post[0].money else Decimal(cap)) if cap is not None else None
    return ValueCells(metric.pk, k, cuped, overall, dict(layers), cap_value, wanted or None)
