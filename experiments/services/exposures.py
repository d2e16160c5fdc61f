"""Exposures: the moment a customer actually saw their variant.

Recorded on the assignment row: the first exposure time is kept (the earliest, when
exposures arrive out of order), later ones are counted. An exposure naming a variant other
than the assigned one flags the assignment (``conflicting_exposure``): the customer saw
two variants, so they are excluded from analysis and their conversions are deleted.

Exposure times are kept inside the experiment: nobody sees a variant before being given
it. A client's time (``exposure_log``, ``POST /exposures``) before the customer's
assignment or the phase start, or in the future, by more than
``GROWTH["EXPOSURE_CLOCK_SKEW_SECONDS"]`` (5 minutes) is refused on ``occurred_at``;
within that skew it is clamped to ``[assigned_at, now]``. Times the platform records
itself are clamped to ``assigned_at`` in SQL (``_sql.exposure_sql``).

When an exposure moves an assignment's first exposure earlier, its conversion window
moves: the assignment's conversions are recomputed at once
(``conversions.assignment_conversions_refresh``), so no conversion outside the new window
stays and an event inside its new start counts, without waiting for a full refresh.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from experiments.models import Assignment, Conversion, Experiment, Variant
from experiments.selectors import experiment_current_phase
from experiments.services._sql import ASSIGNMENT_TABLE, db_datetime, exposure_params, exposure_sql
from experiments.services.conversions import assignment_conversions_refresh

if TYPE_CHECKING:
    from segments.models import Customer

# Ids per UPDATE of exposures_record (well under SQLite's bound-parameter limit).
EXPOSURE_BATCH = 5000
DEFAULT_CLOCK_SKEW_SECONDS = 300


def clock_skew() -> dt.timedelta:
    """How far a client's clock may be off the server's (``GROWTH["EXPOSURE_CLOCK_SKEW_SECONDS"]``)."""
    return dt.timedelta(seconds=settings.GROWTH.get("EXPOSURE_CLOCK_SKEW_SECONDS", DEFAULT_CLOCK_SKEW_SECONDS))


def exposure_time_check(
    *, at: dt.datetime, assigned_at: dt.datetime, phase_started_at: dt.datetime, now: dt.datetime
) -> dt.datetime:
    """The time to record for a client's exposure at ``at``, or ``ValidationError`` on
    ``occurred_at``: refused when more than the clock skew before the phase start or the
    assignment, or after ``now``; within the skew, clamped to ``[assigned_at, now]``."""
    if timezone.is_naive(at):
        raise ValidationError({"occurred_at": "Give a time zone (e.g. 2024-05-01T12:00:00Z)."})
    skew = clock_skew()
    allowed = f"(allowed clock skew: {int(skew.total_seconds())} s)"
    if at > now + skew:
        raise ValidationError(
            {"occurred_at": f"{at.isoformat()} is in the future: the server's time is {now.isoformat()} {allowed}."}
        )
    if at < phase_started_at - skew:
        raise ValidationError(
            {
                "occurred_at": f"{at.isoformat()} is before the experiment's current phase started "
                f"({phase_started_at.isoformat()}) {allowed}."
            }
        )
    if at < assigned_at - skew:
        raise ValidationError(
            {
                "occurred_at": f"{at.isoformat()} is before the customer was assigned to the experiment "
                f"({assigned_at.isoformat()}) {allowed}."
            }
        )
    return min(max(at, assigned_at, phase_started_at), now)


@transaction.atomic
def exposure_record(*, assignment_id: int, variant_key: str | None = None, at: dt.datetime | None = None) -> None:
    """Record one exposure of an assignment; ``variant_key`` is what the customer saw.
    A time before the assignment is recorded as the assignment time (see the module doc)."""
    at = at or timezone.now()
    row = (
        Assignment.objects.filter(pk=assignment_id)
        .values_list("experiment_id", "variant__key", "first_exposed_at")
        .first()
    )
    if row is None:
        raise ValidationError({"assignment_id": f"No assignment with id {assignment_id}."})
    experiment_id, assigned_key, first_before = row
    conflicting = variant_key is not None and variant_key != assigned_key
    if conflicting and not Variant.objects.filter(experiment_id=experiment_id, key=variant_key).exists():
        raise ValidationError({"variant_key": f"'{variant_key}' is not a variant of this experiment."})
    sql = exposure_sql("id = %s")
    params = [*exposure_params(at), assignment_id]
    if conflicting:
        sql = sql.replace("SET ", "SET conflicting_exposure = %s, ", 1)
        params.insert(0, True)
    with connection.cursor() as cursor:
        cursor.execute(sql + " RETURNING first_exposed_at", params)
        (first_after,) = cursor.fetchone()
    if conflicting:
        Conversion.objects.filter(assignment_id=assignment_id).delete()
    elif first_before is not None and _as_datetime(first_after) < first_before:
        assignment_conversions_refresh(assignment_ids=[assignment_id])


def _as_datetime(value: object) -> dt.datetime:
    """A raw ``RETURNING`` timestamp as an aware datetime (SQLite returns UTC text)."""
    if isinstance(value, dt.datetime):
        return value if timezone.is_aware(value) else value.replace(tzinfo=dt.UTC)
    return dt.datetime.fromisoformat(str(value)).replace(tzinfo=dt.UTC)


def exposure_log(
    *, experiment: Experiment, customer: Customer, variant_key: str, at: dt.datetime | None = None
) -> Assignment:
    """Client-side exposure logging: the customer saw ``variant_key`` of the experiment.

    The customer must hold an assignment in the current phase (the API assigns them); the
    time is checked by ``exposure_time_check`` (``ValidationError`` on ``occurred_at``).
    The updated assignment is returned.
    """
    phase = experiment_current_phase(experiment=experiment)
    assignment = (
        Assignment.objects.filter(phase=phase, customer=customer).only("id", "assigned_at").first()
        if phase is not None
        else None
    )
    if assignment is None or phase is None:
        raise ValidationError(
            {"experiment": f"Customer '{customer.external_id}' has no assignment in experiment '{experiment.key}'."}
        )
    if at is not None:
        at = exposure_time_check(
            at=at, assigned_at=assignment.assigned_at, phase_started_at=phase.started_at, now=timezone.now()
        )
    exposure_record(assignment_id=assignment.pk, variant_key=variant_key, at=at)
    return Assignment.objects.select_related("variant", "experiment").get(pk=assignment.pk)


def exposures_record(*, assignment_ids: Sequence[int], at: dt.datetime | None = None) -> int:
    """Record one exposure of each assignment, at ``at`` (e.g. a campaign's send decision),
    in statements of at most ``EXPOSURE_BATCH`` ids; the exposed variant is the assigned
    one (nothing to flag). Returns how many assignments were updated.

    Assignments whose first exposure this moves earlier (an exposure recorded out of
    order) are found first, with the same statement's ids, and their conversions are
    recomputed after the update (see the module doc)."""
    at = at or timezone.now()
    ids = sorted(set(assignment_ids))
    updated = 0
    moved: list[int] = []
    when = db_datetime(at)
    earlier = (
        f"SELECT id FROM {ASSIGNMENT_TABLE} WHERE first_exposed_at IS NOT NULL"
        " AND first_exposed_at > (CASE WHEN assigned_at > %s THEN assigned_at ELSE %s END) AND "
    )
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(ids), EXPOSURE_BATCH):
            chunk = ids[start : start + EXPOSURE_BATCH]
            if connection.vendor == "postgresql":  # one array parameter: a short statement, parsed quickly
                where, where_params = "id = ANY(%s::bigint[])", [chunk]
            else:
                where, where_params = f"id IN ({', '.join(['%s'] * len(chunk))})", list(chunk)
            cursor.execute(earlier + where, [when, when, *where_params])
            moved.extend(row[0] for row in cursor.fetchall())
            cursor.execute(exposure_sql(where), [*exposure_params(at), *where_params])
            updated += cursor.rowcount
        if moved:
            assignment_conversions_refresh(assignment_ids=moved)
    return updated
