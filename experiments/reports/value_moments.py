"""Sufficient statistics of value metrics from the database (issue 15).

**Stored values (the usual path).** The conversion refresh materializes each analysed
customer's variables (``experiments.services.metric_values``: ``MetricValue``, only
non-zero rows). While they were computed for this metric as it is now
(``Metric.values_signature``), the moments come from ONE ``GROUP BY`` over that table alone,
like conversions: ``SUM(v_i)``, ``SUM(v_i v_j)`` per ``(variant, snapshot)``; ``n`` is the
cell's analysed customers (counted by ``aggregation.phase_counts``, passed in, or counted
here), absent rows adding zeros. Open windows: the row's copy of the first exposure
``<= as_of - window``. The cap: the nearest-rank value among ``n`` customers, the absent
ones being zeros: negatives, zeros and positives are counted, and the rank is looked up in
the stored negatives or positives (``ORDER BY … OFFSET``) or is 0. Currencies: those seen
by the refresh, judged against the experiment's rule now (undefined the same way).

**From the events (fallback)**, before the first refresh of a new or changed metric:

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
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from django.db import connection
from django.db.models import Count

from experiments.metric_kinds import kind_of
from experiments.models import Assignment, Metric, MetricValue, MetricValueCell, Phase, SegmentSnapshot
from experiments.services.metric_values import currencies_of, currency_rule, per_customer_sql, signature
from experiments.stats import Moments, Reason, cap_rank
from segments.money import UNIT

__all__ = ["ValueCells", "value_cells", "values_stored"]


@dataclass(frozen=True, slots=True)
class ValueCells:
    """A value metric's moments per variant (overall) and per (dimension, layer, variant).

    Variables: the metric kind's post variables, then (``cuped``) their pre-period twins in
    the same order.  ``undefined`` (e.g. ``mixed_currencies``) means no moments at all.
    ``stored``: read from the values materialized by the refresh (else from the events).
    """

    metric_id: int
    variables: int
    cuped: bool
    overall: dict[int, Moments]
    layers: dict[tuple[str, str | None], dict[int, Moments]]
    cap: Decimal | None = None
    currency: str | None = None
    undefined: dict[str, Reason] = field(default_factory=dict)
    stored: bool = False


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def values_stored(
    *, metric: Metric, reporting_currency: str = "", currency_rates: Mapping[str, object] | None = None
) -> bool:
    """Whether the refresh stored this metric's values for its current definition (no query)."""
    rule = currency_rule(list(metric.values_currencies or []), reporting_currency, currency_rates)
    return bool(metric.values_signature) and metric.values_signature == signature(metric, rule)


def value_cells(
    *,
    phase: Phase,
    metric: Metric,
    as_of: dt.datetime | None,
    reporting_currency: str = "",
    currency_rates: Mapping[str, object] | None = None,
    customers: Mapping[tuple[int, int], int] | None = None,
) -> ValueCells:
    """Moments of ``metric`` (a value kind, or a conversion with CUPED) per cell of ``phase``.

    ``customers``: the analysed customers counted for this metric per ``(variant,
    snapshot)`` (``PhaseCounts.cell_counts``), saving the stored path a pass over the
    assignments; counted here when not given."""
    kind = kind_of(metric)
    post = kind.variables(metric)
    k = len(post)
    cuped = int(metric.cuped_lookback_days) > 0

    stored_rule = currency_rule(list(metric.values_currencies or []), reporting_currency, currency_rates)
    stored = bool(metric.values_signature) and metric.values_signature == signature(metric, stored_rule)
    rule = stored_rule if stored else currency_rule(currencies_of(phase, metric), reporting_currency, currency_rates)
    if rule.undefined is not None:
        return ValueCells(metric.pk, k, cuped, {}, {}, None, None, {"moments": rule.undefined}, stored)
    wanted = rule.wanted
    names = [f"v{i}" for i in range(k * (2 if cuped else 1))]
    cutoff = as_of - dt.timedelta(hours=metric.window_hours) if as_of is not None else None

    if stored:
        table = _q(MetricValue._meta.db_table)
        where = f"t.{_q('phase_id')} = %s AND t.{_q('metric_id')} = %s"
        where_params: list[object] = [phase.pk, metric.pk]
        if cutoff is not None:
            where += f" AND t.{_q('first_exposed_at')} <= %s"
            where_params.append(connection.ops.adapt_datetimefield_value(cutoff))
        source, source_params = f"{table} t WHERE {where}", where_params
        if customers is None:
            customers = _customers(phase, cutoff)
    else:
        population = Assignment.objects.filter(phase=phase, first_exposed_at__isnull=False, conflicting_exposure=False)
        if cutoff is not None:
            population = population.filter(first_exposed_at__lte=cutoff)
        inner_sql, inner_params, _ = per_customer_sql(metric=metric, population=population, converted=rule.converted)
        source, source_params = f"({inner_sql}) t", inner_params
    columns = [f"t.{_q(name)}" for name in names]

    cap: int | None = None
    capped = [False] * len(names)
    if metric.cap_percentile is not None and metric.kind != Metric.Kind.CONVERSION:
        for i, variable in enumerate(post):
            if not variable.cappable:
                continue
            n = sum(customers.values()) if customers is not None else population.count()
            rank = cap_rank(n, float(metric.cap_percentile))
            if rank is None:
                break
            if stored:
                cap = _stored_rank(source, source_params, columns[i], n, rank)
            else:
                with connection.cursor() as cursor:
                    cursor.execute(
                        f"SELECT {columns[i]} FROM {source} ORDER BY 1 LIMIT 1 OFFSET %s", [*source_params, rank - 1]
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
    group = f" GROUP BY t.{_q('variant_id')}, t.{_q('snapshot_id')}"
    sql = f"SELECT t.{_q('variant_id')}, t.{_q('snapshot_id')}, COUNT(*), {select} FROM {source}{group}"
    if stored and cap is None:
        # Uncapped: the refresh's per-day cells, plus the rows of the cutoff's own day that
        # were first exposed by the cutoff (the only day a cell would split).
        cell_table = _q(MetricValueCell._meta.db_table)
        cell_columns = [f"SUM(t.{_q(f's{i}')})" for i in range(len(names))] + [
            f"SUM(t.{_q(f'p{i}{j}')})" for i, j in products
        ]
        rollup_sql = (
            f"SELECT t.{_q('variant_id')}, t.{_q('snapshot_id')}, SUM(t.{_q('rows')}), {', '.join(cell_columns)}"
            f" FROM {cell_table} t WHERE t.{_q('phase_id')} = %s AND t.{_q('metric_id')} = %s"
        )
        statements = [(rollup_sql, [phase.pk, metric.pk])]
        if cutoff is not None:
            day = connection.ops.adapt_datefield_value(cutoff.astimezone(dt.UTC).date())
            statements = [
                (rollup_sql + f" AND t.{_q('first_exposed_on')} < %s", [phase.pk, metric.pk, day]),
                (
                    f"SELECT t.{_q('variant_id')}, t.{_q('snapshot_id')}, COUNT(*), {select} FROM {source}"
                    f" AND t.{_q('first_exposed_on')} = %s",
                    [*source_params, day],
                ),
            ]
        merged: dict[tuple[int, int], list[int]] = {}
        with connection.cursor() as cursor:
            for statement, statement_params in statements:
                cursor.execute(statement + group, statement_params)
                for row in cursor.fetchall():
                    target = merged.setdefault((row[0], row[1]), [0] * (len(row) - 2))
                    for position, x in enumerate(row[2:]):
                        target[position] += int(x or 0)
        rows = [(v, s_, *numbers) for (v, s_), numbers in merged.items()]
    else:
        with connection.cursor() as cursor:
            cursor.execute(sql, source_params)
            rows = cursor.fetchall()

    scale = [UNIT if (post[i % k].money) else 1 for i in range(len(names))]

    def exact(raw: object, divisor: int) -> Decimal | int:
        number = int(raw or 0)
        return Decimal(number) / divisor if divisor != 1 else number

    m = len(names)
    raw: dict[tuple[int, int], tuple[int, int, list[int], list[int]]] = {}  # n, rows, sums, products
    for row in rows:
        n = int(row[2])
        raw[(row[0], row[1])] = (n, n, [int(x or 0) for x in row[3 : 3 + m]], [int(x or 0) for x in row[3 + m :]])
    if stored and customers is not None:
        # The customers without a stored row are zeros: they count in n, and where the cap is
        # below zero (a net metric) they are capped up to it: cap, and cap^2 in the products.
        for key in set(customers) | set(raw):
            n_rows, _, sums, prods = raw.get(key, (0, 0, [0] * m, [0] * len(products)))
            absent = max(int(customers.get(key, 0)) - n_rows, 0)
            if absent and cap is not None and cap < 0:
                sums = [x + (absent * cap if capped[i] else 0) for i, x in enumerate(sums)]
                prods = [
                    x + (absent * cap * cap if capped[i] and capped[j] else 0)
                    for x, (i, j) in zip(prods, products, strict=True)
                ]
            raw[key] = (n_rows + absent, n_rows, sums, prods)
    # Rolled up to the overall row and every layer as exact integers (a few hundred cells;
    # adding Moments per cell, Fraction-checked, measured 2.7 s of a 3.6 s report at 1M),
    # then one Moments per (layer, variant), scaled back to currency units.
    snapshot_layers: dict[int, dict[str, str]] = dict(
        SegmentSnapshot.objects.filter(pk__in={s for (_, s), r in raw.items() if r[0]}).values_list("id", "layers")
    )
    dimensions = sorted({d for layers in snapshot_layers.values() for d in layers})
    width = 1 + m + len(products)
    overall_raw: dict[int, list[int]] = defaultdict(lambda: [0] * width)
    layers_raw: dict[tuple[str, str | None], dict[int, list[int]]] = defaultdict(
        lambda: defaultdict(lambda: [0] * width)
    )
    for (variant_id, snapshot_id), (n, _, sums_raw, prods_raw) in raw.items():
        if n == 0:
            continue
        found = snapshot_layers.get(snapshot_id, {})
        targets = [overall_raw[variant_id]] + [layers_raw[(d, found.get(d))][variant_id] for d in dimensions]
        for target in targets:
            for position, x in enumerate((n, *sums_raw, *prods_raw)):
                target[position] += x

    def moments_of(numbers: list[int]) -> Moments:
        sums = tuple(exact(numbers[1 + i], scale[i]) for i in range(m))
        grid: list[list[Decimal | int]] = [[0] * m for _ in range(m)]
        for position, (i, j) in enumerate(products):
            grid[i][j] = grid[j][i] = exact(numbers[1 + m + position], scale[i] * scale[j])
        return Moments(numbers[0], sums, tuple(tuple(r) for r in grid))

    overall = {v: moments_of(numbers) for v, numbers in overall_raw.items()}
    layers = {key: {v: moments_of(numbers) for v, numbers in by.items()} for key, by in layers_raw.items()}
    cap_value = (Decimal(cap) / UNIT if post[0].money else Decimal(cap)) if cap is not None else None
    return ValueCells(metric.pk, k, cuped, overall, dict(layers), cap_value, wanted or None, {}, stored)


def _customers(phase: Phase, cutoff: dt.datetime | None) -> dict[tuple[int, int], int]:
    """Analysed customers per (variant, snapshot), first exposed by ``cutoff`` if given."""
    population = Assignment.objects.filter(phase=phase, first_exposed_at__isnull=False, conflicting_exposure=False)
    if cutoff is not None:
        population = population.filter(first_exposed_at__lte=cutoff)
    counted = population.values_list("variant_id", "snapshot_id").order_by().annotate(n=Count("id"))
    return {(v, s): n for v, s, n in counted}


def _stored_rank(source: str, params: list[object], column: str, n: int, rank: int) -> int:
    """The ``rank``-th smallest (1-based) of ``n`` customers' values, the customers without
    a stored row being zeros: in the stored negatives, zero, or in the stored positives."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT COALESCE(SUM(CASE WHEN {column} < 0 THEN 1 ELSE 0 END), 0),"
            f" COALESCE(SUM(CASE WHEN {column} > 0 THEN 1 ELSE 0 END), 0) FROM {source}",
            params,
        )
        negatives, positives = (int(x) for x in cursor.fetchone())
        zeros = n - negatives - positives
        if rank <= negatives:
            sign, offset = "<", rank - 1
        elif rank <= negatives + zeros:
            return 0
        else:
            sign, offset = ">", rank - 1 - negatives - zeros
        cursor.execute(
            f"SELECT {column} FROM {source} AND {column} {sign} 0 ORDER BY 1 LIMIT 1 OFFSET %s", [*params, offset]
        )
        return int(cursor.fetchone()[0])
