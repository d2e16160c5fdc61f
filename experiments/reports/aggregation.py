"""The report's only contact with assignments and conversions: GROUP BY in the database.

Everything that knows how assignments, exposures, conversions and segment snapshots are
stored lives here, behind one narrow function, :func:`phase_counts`, which returns frozen
dataclasses of counts. The statistics (``experiments.stats``) and the report
(``experiments.reports.assemble``) only ever see those counts, so a change of storage
(the snapshot encoding, a per-dimension table, a rollup...) changes this module and
nothing else.

The analysis population of a phase: its assignments that were exposed
(``first_exposed_at IS NOT NULL``) and not flagged for a conflicting exposure. A
customer converted on a metric when the engine materialized a ``Conversion`` row for
their assignment and that metric (the first goal event within the metric's window after
first exposure).

Storage as of this writing (``experiments.models``): an assignment points at a
dictionary-encoded ``SegmentSnapshot`` (``{dimension key: layer key}``, a few hundred
distinct rows), and a conversion carries its assignment's phase, variant and snapshot.
So the statements are (whatever the number of dimensions and metrics):

1. customers per ``(variant, snapshot)``: one parallel pass over the phase's assignments;
2. conversions per ``(metric, variant, snapshot)`` from the conversion table alone;
3. (time series, on request) first exposures per ``(variant, day)`` and conversions of one
   metric per ``(variant, day of conversion)``; see :func:`_stored_exposure_day` for why
   the first of these costs as much as statement 1 at best, and up to 3x more today.

The few hundred snapshot rows are then rolled up to every dimension's layers in memory.

Why conversions are not joined to the assignments: the join makes "converted" a subset of
"analysed" by construction, but at 10M assignments it costs 5-8x the GROUP BY itself
(three hash joins probed 10M times each; measured in ``bench/report.py``). The engine
guarantees the subset instead (a conversion exists only after a first exposure, and the
conversions of an assignment flagged for a conflicting exposure are deleted with the
flag); :func:`phase_counts` checks what it can see of that promise (no cell may have more
conversions than customers, none may convert without customers) and reports any breach
in ``PhaseCounts.inconsistencies``, which the report shows as a caveat.

**Open windows.** With ``as_of`` (the report's default), each metric also counts only the
customers whose window has closed: ``first_exposed_at + window <= as_of``. A customer
still inside the window may yet convert, so counting them as non-converted biases the
rate towards the arm that converts *sooner* (an offer that pulls purchases forward shows
a lift that fades). In SQL, not per customer: statement 1 adds one
``SUM(CASE WHEN first_exposed_at <= as_of - window THEN 1 ELSE 0 END)`` per distinct
window (one pass still); statement 2 keeps a conversion when its own copy of the first
exposure (``Conversion.first_exposed_at``, written by the engine) is ``<= cutoff``, still
from the conversion table alone. Rows written without that copy (by hand, by an old
version) fall back to ``converted_at <= cutoff`` (the first exposure came before it) or an
index probe of their assignment: measured at 1M customers with the last week's windows
open, probing every recent conversion cost 3.3x the whole aggregation, the copy costs
nothing measurable. ``VariantCounts.customers`` stays every analysed customer (SRM, traffic).

No GROUPING SETS: on PostgreSQL 15 a grouping-sets aggregate is not parallelised; it
measured 3x slower and more than separate statements. Days are calendar days in the database
connection's time zone, which Django sets to UTC (``USE_TZ``).
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from django.core.exceptions import FieldDoesNotExist
from django.db import connection

from config.replica import reading_connection, reading_transaction
from experiments.models import Assignment, Conversion, Metric, SegmentSnapshot
from segments import selectors as segment_selectors

__all__ = [
    "DailyCounts",
    "DimensionLabels",
    "Inconsistency",
    "LayerCounts",
    "PhaseCounts",
    "VariantCounts",
    "layer_labels",
    "phase_counts",
]


@dataclass(frozen=True, slots=True)
class VariantCounts:
    """Analysed customers of one variant (in one layer, or overall) and how many of them
    converted, per metric: ``conversions[i]`` belongs to ``PhaseCounts.metric_ids[i]``."""

    variant_id: int
    customers: int
    conversions: tuple[int, ...]
    # Per metric: the customers counted (window closed at ``PhaseCounts.as_of``); empty
    # when open windows are not excluded (then every customer counts).
    counted: tuple[int, ...] = ()

    def counted_for(self, index: int) -> int:
        """Customers in the denominator of metric ``index``."""
        return self.counted[index] if self.counted else self.customers


@dataclass(frozen=True, slots=True)
class LayerCounts:
    """One layer of one dimension at assignment time. ``layer`` is ``None`` for customers
    who were in no layer of the dimension when assigned (e.g. it was computed later)."""

    dimension: str
    layer: str | None
    variants: tuple[VariantCounts, ...]


@dataclass(frozen=True, slots=True)
class DailyCounts:
    """Per UTC day and variant: customers first exposed that day, and conversions of the
    daily metric that happened that day (by ``converted_at``)."""

    day: dt.date
    variant_id: int
    exposed: int
    conversions: int


@dataclass(frozen=True, slots=True)
class Inconsistency:
    """A breach of "converted customers are analysed customers" seen in the counts.

    ``outside_population``: conversions in a (variant, snapshot) group without analysed
    customers (left out); ``more_than_customers``: a group with more conversions than
    customers (capped at the customers)."""

    kind: str
    metric_id: int
    variant_id: int
    conversions: int
    customers: int


@dataclass(frozen=True, slots=True)
class PhaseCounts:
    phase_id: int
    metric_ids: tuple[int, ...]
    daily_metric_id: int | None
    overall: tuple[VariantCounts, ...]
    layers: tuple[LayerCounts, ...]
    daily: tuple[DailyCounts, ...]
    inconsistencies: tuple[Inconsistency, ...] = ()
    as_of: dt.datetime | None = None  # open windows excluded as of this time; None: not excluded
    # Per (variant, snapshot): the customers counted per metric (value metrics' ``n``).
    cells: tuple[tuple[int, int, tuple[int, ...]], ...] = ()

    def cell_counts(self, index: int) -> dict[tuple[int, int], int]:
        """Customers in the denominator of metric ``index`` per (variant, snapshot)."""
        return {(v, s): counted[index] for v, s, counted in self.cells}

    @property
    def customers(self) -> int:
        return sum(v.customers for v in self.overall)

    def open_window(self, index: int) -> int:
        """Analysed customers left out of metric ``index`` because their window is still open."""
        return sum(v.customers - v.counted_for(index) for v in self.overall)


@dataclass(frozen=True, slots=True)
class DimensionLabels:
    """Display names of a dimension and its layers, layers in their configured order."""

    key: str
    name: str
    layers: tuple[tuple[str, str], ...]  # (layer key, layer name)


# --------------------------------------------------------------------------------------
# SQL
# --------------------------------------------------------------------------------------


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _column(model: type, field: str) -> str:
    return _q(model._meta.get_field(field).column)  # type: ignore[attr-defined]


def _day(expression: str) -> str:
    """SQL for the calendar day of a timestamp column, in the connection's time zone (UTC).

    PostgreSQL: a plain ``::date`` cast (``AT TIME ZONE 'UTC'`` costs a time-zone lookup
    per row, measurable over 10M rows). SQLite stores UTC text: its date part."""
    if connection.vendor == "postgresql":
        return f"({expression})::date"
    return f"date({expression})"


def _stored_exposure_day() -> str | None:
    """The column holding the UTC day of first exposure, if the engine stores one.

    Grouping 10M assignments by a day computed per row is slow on PostgreSQL for two
    reasons: the expression is evaluated per row, and, worse, the planner has no
    statistics for it, estimates one group per row and so refuses a parallel partial
    aggregate (measured 2.6x the main GROUP BY, see ``bench/report.py``). A stored day
    column has ordinary statistics (a few dozen distinct days) and makes the daily pass
    cost the same as the main one (measured). Proposed to the engine as
    ``Assignment.first_exposed_on``: a plain ``DateField`` the exposure service writes
    with ``first_exposed_at`` (portable), or on PostgreSQL a stored generated column
    ``((first_exposed_at AT TIME ZONE 'UTC')::date)``. This module uses it as soon as the
    model has it.
    """
    try:
        field = Assignment._meta.get_field("first_exposed_on")
    except FieldDoesNotExist:  # the engine has not adopted it (yet)
        return None
    return field.column  # type: ignore[union-attr]


# Overridable by the benchmark, which adds the column to its own database to measure it.
EXPOSURE_DAY_COLUMN: str | None = _stored_exposure_day()


def _population(alias: str) -> tuple[str, list[object]]:
    """WHERE clause of the analysis population of a phase (first parameter: phase id)."""
    return (
        f"{alias}.{_column(Assignment, 'phase')} = %s"
        f" AND {alias}.{_column(Assignment, 'first_exposed_at')} IS NOT NULL"
        f" AND {alias}.{_column(Assignment, 'conflicting_exposure')} = %s",
        [False],
    )


def _fetch(sql: str, params: Sequence[object]) -> list[tuple]:
    # The replica inside replica_reads when fresh (config/replica.py), else the primary.
    with reading_connection().cursor() as cursor:
        cursor.execute(sql, list(params))
        return list(cursor.fetchall())


def _db_time(value: dt.datetime) -> object:
    return connection.ops.adapt_datetimefield_value(value)


def _customers(phase_id: int, cutoffs: Sequence[dt.datetime] = ()) -> list[tuple[int, ...]]:
    """(variant, snapshot, customers, closed at cutoff 1, ...) of the analysis population:
    one conditional count per cutoff (first exposure at or before it), in the same pass."""
    assignment = _q(Assignment._meta.db_table)
    variant, snapshot = _column(Assignment, "variant"), _column(Assignment, "snapshot")
    first = f"a.{_column(Assignment, 'first_exposed_at')}"
    closed = "".join(f", SUM(CASE WHEN {first} <= %s THEN 1 ELSE 0 END)" for _ in cutoffs)
    where, params = _population("a")
    sql = (
        f"SELECT a.{variant}, a.{snapshot}, COUNT(*){closed} FROM {assignment} a"
        f" WHERE {where} GROUP BY a.{variant}, a.{snapshot}"
    )
    rows = _fetch(sql, [*(_db_time(c) for c in cutoffs), phase_id, *params])
    return [tuple(int(x) for x in r) for r in rows]


def _conversions(
    phase_id: int, metric_ids: Sequence[int], cutoffs: Mapping[int, dt.datetime] | None = None
) -> list[tuple[int, int, int, int]]:
    """(metric, variant, snapshot, conversions) from the conversion table's own columns;
    with ``cutoffs`` (per metric), only conversions of customers whose window had closed."""
    if not metric_ids:
        return []
    conversion = _q(Conversion._meta.db_table)
    metric, variant, snapshot = (_column(Conversion, f) for f in ("metric", "variant", "snapshot"))
    marks = ", ".join(["%s"] * len(metric_ids))
    closed, closed_params = "", []
    if cutoffs:
        assignment = _q(Assignment._meta.db_table)
        probe = (
            f"EXISTS (SELECT 1 FROM {assignment} a WHERE a.{_q(Assignment._meta.pk.column)}"
            f" = c.{_column(Conversion, 'assignment')} AND a.{_column(Assignment, 'first_exposed_at')} <= %s)"
        )
        converted_at = f"c.{_column(Conversion, 'converted_at')}"
        exposed_at = f"c.{_column(Conversion, 'first_exposed_at')}"
        cases = []
        for metric_id in metric_ids:
            cases.append(
                f"(c.{metric} = %s AND ({converted_at} <= %s OR {exposed_at} <= %s"
                f" OR ({exposed_at} IS NULL AND {probe})))"
            )
            cutoff = _db_time(cutoffs[metric_id])
            closed_params += [metric_id, cutoff, cutoff, cutoff]
        closed = " AND (" + " OR ".join(cases) + ")"
    sql = (
        f"SELECT c.{metric}, c.{variant}, c.{snapshot}, COUNT(*) FROM {conversion} c"
        f" WHERE c.{_column(Conversion, 'phase')} = %s AND c.{metric} IN ({marks}){closed}"
        f" GROUP BY c.{metric}, c.{variant}, c.{snapshot}"
    )
    return [(r[0], r[1], r[2], r[3]) for r in _fetch(sql, [phase_id, *metric_ids, *closed_params])]


def _daily_exposures(phase_id: int) -> list[tuple[object, int, int]]:
    """(day of first exposure, variant, customers) of the analysis population."""
    assignment = _q(Assignment._meta.db_table)
    variant = _column(Assignment, "variant")
    if EXPOSURE_DAY_COLUMN:
        day = f"a.{_q(EXPOSURE_DAY_COLUMN)}"
    else:
        day = _day(f"a.{_column(Assignment, 'first_exposed_at')}")
    where, params = _population("a")
    sql = f"SELECT {day}, a.{variant}, COUNT(*) FROM {assignment} a WHERE {where} GROUP BY {day}, a.{variant}"
    return [(r[0], r[1], r[2]) for r in _fetch(sql, [phase_id, *params])]


def _daily_conversions(phase_id: int, metric_id: int) -> list[tuple[object, int, int]]:
    """(day of conversion, variant, conversions) of one metric."""
    conversion = _q(Conversion._meta.db_table)
    variant = _column(Conversion, "variant")
    day = _day(f"c.{_column(Conversion, 'converted_at')}")
    sql = (
        f"SELECT {day}, c.{variant}, COUNT(*) FROM {conversion} c"
        f" WHERE c.{_column(Conversion, 'phase')} = %s AND c.{_column(Conversion, 'metric')} = %s"
        f" GROUP BY {day}, c.{variant}"
    )
    return [(r[0], r[1], r[2]) for r in _fetch(sql, [phase_id, metric_id])]


def _as_date(value: object) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    return dt.date.fromisoformat(str(value))


# --------------------------------------------------------------------------------------
# Public
# --------------------------------------------------------------------------------------


def phase_counts(
    *,
    phase_id: int,
    metric_ids: Sequence[int],
    daily_metric_id: int | None = None,
    daily: bool = False,
    as_of: dt.datetime | None = None,
) -> PhaseCounts:
    """Counts of the analysis population of one phase, overall and per layer of every
    dimension found in the assignment-time snapshots, for each metric in ``metric_ids``;
    with ``daily``, first exposures per day and conversions of ``daily_metric_id`` per day;
    with ``as_of``, each metric's ``counted`` customers and its conversions are those whose
    window had closed at ``as_of`` (first exposure + window <= as_of).

    ``overall`` and each layer list every variant that has analysed customers. Nothing is
    loaded per customer: the database returns one row per (variant, snapshot), per
    (metric, variant, snapshot) and per (variant, day). One transaction (on PostgreSQL
    each statement still sees its own snapshot: counts can move by the few exposures that
    land between two statements).
    """
    metric_ids = tuple(int(m) for m in metric_ids)
    position = {m: i for i, m in enumerate(metric_ids)}
    cutoff_of: dict[int, dt.datetime] = {}
    if as_of is not None and metric_ids:
        windows = dict(Metric.objects.filter(pk__in=metric_ids).values_list("pk", "window_hours"))
        cutoff_of = {m: as_of - dt.timedelta(hours=windows.get(m, 0)) for m in metric_ids}
    cutoffs = sorted(set(cutoff_of.values()))
    with reading_transaction():  # one snapshot, on the replica or the primary (config/replica.py)
        customers = _customers(phase_id, cutoffs)
        converted = _conversions(phase_id, metric_ids, cutoff_of or None)
        exposures = _daily_exposures(phase_id) if daily else []
        daily_converted = _daily_conversions(phase_id, daily_metric_id) if daily and daily_metric_id is not None else []

    # cell (variant, snapshot) -> [customers, counted per metric..., conversions per metric...]
    width = len(metric_ids)
    column_of = {c: 3 + i for i, c in enumerate(cutoffs)}  # cutoff -> its column in a customers row
    cells: dict[tuple[int, int], list[int]] = {}
    for row in customers:
        variant_id, snapshot_id, n = row[0], row[1], row[2]
        counted = [row[column_of[cutoff_of[m]]] if cutoff_of else n for m in metric_ids]
        cells[(variant_id, snapshot_id)] = [n, *counted] + [0] * width
    inconsistencies: list[Inconsistency] = []
    for metric_id, variant_id, snapshot_id, n in converted:
        cell = cells.get((variant_id, snapshot_id))
        if cell is None:
            inconsistencies.append(Inconsistency("outside_population", metric_id, variant_id, n, 0))
            continue
        cell[1 + width + position[metric_id]] += n
    for (variant_id, _), cell in cells.items():
        for i, metric_id in enumerate(metric_ids):
            x, denominator = cell[1 + width + i], cell[1 + i]
            if x > denominator:
                inconsistencies.append(Inconsistency("more_than_customers", metric_id, variant_id, x, denominator))
                cell[1 + width + i] = denominator

    snapshot_layers: dict[int, dict[str, str]] = dict(
        SegmentSnapshot.objects.filter(pk__in={snapshot for _, snapshot in cells}).values_list("id", "layers")
    )
    dimensions = sorted({d for layers in snapshot_layers.values() for d in layers})

    overall: dict[int, list[int]] = defaultdict(lambda: [0] * (2 * width + 1))
    by_layer: dict[tuple[str, str | None, int], list[int]] = defaultdict(lambda: [0] * (2 * width + 1))
    for (variant_id, snapshot_id), cell in cells.items():
        layers = snapshot_layers.get(snapshot_id, {})
        for target in [overall[variant_id]] + [by_layer[(d, layers.get(d), variant_id)] for d in dimensions]:
            for i, x in enumerate(cell):
                target[i] += x

    def variant_counts(counts: dict[int, list[int]]) -> tuple[VariantCounts, ...]:
        return tuple(
            VariantCounts(v, c[0], tuple(c[1 + width :]), tuple(c[1 : 1 + width]) if cutoff_of else ())
            for v, c in sorted(counts.items())
        )

    grouped: dict[tuple[str, str | None], dict[int, list[int]]] = defaultdict(dict)
    for (dimension, layer, variant_id), counts in by_layer.items():
        grouped[(dimension, layer)][variant_id] = counts
    layer_rows = tuple(
        LayerCounts(dimension, layer, variant_counts(grouped[(dimension, layer)]))
        for dimension, layer in sorted(grouped, key=lambda k: (k[0], k[1] is None, k[1] or ""))
    )

    days: dict[tuple[dt.date, int], list[int]] = defaultdict(lambda: [0, 0])
    for day, variant_id, n in exposures:
        days[(_as_date(day), variant_id)][0] += n
    for day, variant_id, n in daily_converted:
        days[(_as_date(day), variant_id)][1] += n
    return PhaseCounts(
        phase_id=phase_id,
        metric_ids=metric_ids,
        daily_metric_id=daily_metric_id,
        overall=variant_counts(overall),
        layers=layer_rows,
        daily=tuple(DailyCounts(day, v, e, c) for (day, v), (e, c) in sorted(days.items())),
        inconsistencies=tuple(inconsistencies),
        as_of=as_of,
        cells=tuple((v, s, tuple(cell[1 : 1 + width])) for (v, s), cell in cells.items()),
    )


def layer_labels(*, dimension_keys: Sequence[str]) -> dict[str, DimensionLabels]:
    """Names of the dimensions and layers seen in snapshots, layers in their configured
    order (keys stand in for the names of dimensions or layers deleted since)."""
    keys = list(dimension_keys)
    known = segment_selectors.dimension_layers(dimension_keys=keys)
    return {
        key: DimensionLabels(key=key, name=known[key].name, layers=known[key].layers)
        if key in known
        else DimensionLabels(key=key, name=key, layers=())
        for key in keys
    }
