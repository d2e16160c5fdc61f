"""Conversions: the first goal event of each metric within its window after first exposure.

Computed set-based, one ``INSERT … SELECT … ON CONFLICT`` per metric: the phase's exposed,
non-conflicting assignments, each with the earliest event of the metric's type in
``[first_exposed_at, first_exposed_at + window)`` read through ``segments.selectors``. An
existing conversion is moved earlier when an earlier qualifying event turns up (late
arrival), never later, so re-runs are harmless. Before inserting, the refresh deletes the
conversions of the assignments it looks at that are no longer a first goal event inside
the current window ``[first_exposed_at, first_exposed_at + window)``: a first exposure that
moved earlier, a window shortened since, or an assignment flagged for a conflicting
exposure (one ``DELETE … WHERE NOT EXISTS`` per metric; the insert then writes the right
event, if any).

Incremental refresh (the periodic task) only looks at customers with events received
since the metric's watermark (minus ``LATE_ARRIVAL_SLACK``, for transactions that were
still open) and at assignments exposed since then; ``full=True`` looks at every exposed
assignment of the phase. An exposure that moves a first exposure earlier refreshes that
assignment at once (``assignment_conversions_refresh``, called by the exposure services),
so incremental refreshes never leave a conversion outside its window either; a changed
metric window needs a full refresh (the nightly one).

Value metrics: the same refresh, for the same customers, rewrites their stored
per-customer values (``experiments.services.metric_values``), which the report reads; a
changed window, lookback or currency rule rewrites the phase's values in full at once.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from django.db import connection, transaction
from django.db.models import DateTimeField, Exists, ExpressionWrapper, F, OuterRef, Q, QuerySet, Subquery, Value
from django.db.models import IntegerField as _IntegerField
from django.utils import timezone

from experiments.models import Assignment, Conversion, Experiment, Metric, Phase
from experiments.selectors import experiment_current_phase
from experiments.services.metric_values import metric_values_refresh
from segments import selectors as segment_selectors

LATE_ARRIVAL_SLACK = dt.timedelta(minutes=10)

_C = Conversion._meta.db_table


def conversions_refresh(
    *, experiment: Experiment, full: bool = False, now: dt.datetime | None = None
) -> dict[int, int]:
    """Refresh the conversions of the experiment's current phase; ``{metric id: rows
    removed (outside the window), written or moved earlier}``."""
    phase = experiment_current_phase(experiment=experiment)
    if phase is None:
        return {}
    now = now or timezone.now()
    written: dict[int, int] = {}
    for metric in Metric.objects.filter(experiment=experiment).order_by("pk"):
        since = None if full or metric.conversions_watermark is None else metric.conversions_watermark
        with transaction.atomic():
            written[metric.pk] = _refresh_metric(phase=phase, metric=metric, since=since)
            Metric.objects.filter(pk=metric.pk).update(conversions_watermark=now)
    return written


def assignment_conversions_refresh(*, assignment_ids: Sequence[int]) -> int:
    """Recompute the conversions of these assignments for every metric of their
    experiments (their first exposure moved); rows removed, written or moved earlier."""
    ids = list(assignment_ids)
    if not ids:
        return 0
    changed = 0
    phases = Phase.objects.filter(pk__in=Assignment.objects.filter(pk__in=ids).values("phase_id"))
    for phase in phases:
        for metric in Metric.objects.filter(experiment_id=phase.experiment_id).order_by("pk"):
            changed += _refresh_metric(phase=phase, metric=metric, since=None, assignment_ids=ids)
    return changed


def _window_end(metric: Metric, first_exposed_at: F | OuterRef) -> ExpressionWrapper:
    return ExpressionWrapper(
        first_exposed_at + Value(dt.timedelta(hours=metric.window_hours)), output_field=DateTimeField()
    )


def _delete_outside_window(*, phase: Phase, metric: Metric, assignments: QuerySet[Assignment] | None) -> int:
    """Delete the metric's conversions (of ``assignments``, or of the whole phase) that are
    not inside their assignment's current window or whose assignment left the analysis."""
    inside = (
        Assignment.objects.filter(
            pk=OuterRef("assignment_id"),
            conflicting_exposure=False,
            first_exposed_at__lte=OuterRef("converted_at"),
        )
        .annotate(window_end=_window_end(metric, F("first_exposed_at")))
        .filter(window_end__gt=OuterRef("converted_at"))
    )
    stale = Conversion.objects.filter(phase=phase, metric=metric)
    if assignments is not None:
        stale = stale.filter(assignment_id__in=assignments.values("id"))
    deleted, _ = stale.filter(~Exists(inside)).delete()  # nothing depends on a conversion: one DELETE
    return deleted


def _refresh_metric(
    *, phase: Phase, metric: Metric, since: dt.datetime | None, assignment_ids: Sequence[int] | None = None
) -> int:
    events = segment_selectors.events_queryset().filter(event_type_id=metric.event_type_id)
    assignments = Assignment.objects.filter(phase=phase, first_exposed_at__isnull=False, conflicting_exposure=False)
    considered: QuerySet[Assignment] | None = None
    if assignment_ids is not None:
        assignments = assignments.filter(pk__in=list(assignment_ids))
        considered = Assignment.objects.filter(pk__in=list(assignment_ids))
    elif since is not None:
        since = since - LATE_ARRIVAL_SLACK
        recent_customers = events.filter(received_at__gte=since).values("customer_id")
        assignments = assignments.filter(Q(customer_id__in=recent_customers) | Q(last_exposed_at__gte=since))
        considered = Assignment.objects.filter(phase=phase).filter(
            Q(customer_id__in=recent_customers) | Q(last_exposed_at__gte=since)
        )
    removed = _delete_outside_window(phase=phase, metric=metric, assignments=considered)
    first_event = (
        events.filter(
            customer_id=OuterRef("customer_id"),
            occurred_at__gte=OuterRef("first_exposed_at"),
            occurred_at__lt=_window_end(metric, OuterRef("first_exposed_at")),
        )
        .order_by("occurred_at")
        .values("occurred_at")[:1]
    )
    rows = (
        assignments.annotate(
            converted_at=Subquery(first_event, output_field=DateTimeField()),
            metric_ref=Value(metric.pk, output_field=_IntegerField()),
        )
        .filter(converted_at__isnull=False)
        .values("id", "metric_ref", "phase_id", "variant_id", "snapshot_id", "converted_at", "first_exposed_at")
    )
    select_sql, params = rows.query.sql_with_params()
    # A reconsidered row takes the recomputed values: after the delete above, the existing
    # conversion is inside the window, so the first event found is never later than it;
    # ``first_exposed_at`` follows a first exposure that moved. Unchanged rows are not written.
    differs = "IS DISTINCT FROM" if connection.vendor == "postgresql" else "IS NOT"
    # Columns are picked by name from the compiled SELECT, whatever order Django emits.
    sql = (
        f"INSERT INTO {_C} (assignment_id, metric_id, phase_id, variant_id, snapshot_id, converted_at, "
        f"first_exposed_at) "
        f"SELECT src.id, src.metric_ref, src.phase_id, src.variant_id, src.snapshot_id, src.converted_at, "
        f"src.first_exposed_at FROM ({select_sql}) AS src WHERE true "
        f"ON CONFLICT (assignment_id, metric_id) DO UPDATE SET converted_at = excluded.converted_at, "
        f"first_exposed_at = excluded.first_exposed_at "
        f"WHERE excluded.converted_at < {_C}.converted_at "
        f"OR excluded.first_exposed_at {differs} {_C}.first_exposed_at"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        changed = removed + max(cursor.rowcount, 0)
    # A value metric's per-customer values, for the same customers (metric_values.py).
    metric_values_refresh(phase=phase, metric=metric, assignments=assignments, considered=considered)
    return changed
