"""Exposures: the moment a customer actually saw their variant.

Recorded on the assignment row: the first exposure time is kept (the earliest, when
exposures arrive out of order), later ones are counted. An exposure naming a variant other
than the assigned one flags the assignment (``conflicting_exposure``): the customer saw
two variants, so they are excluded from analysis and their conversions are deleted.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from experiments.models import Assignment, Conversion, Experiment, Variant
from experiments.selectors import experiment_current_phase
from experiments.services._sql import exposure_params, exposure_sql

if TYPE_CHECKING:
    from segments.models import Customer

# Ids per UPDATE of exposures_record (well under SQLite's bound-parameter limit).
EXPOSURE_BATCH = 5000


@transaction.atomic
def exposure_record(*, assignment_id: int, variant_key: str | None = None, at: dt.datetime | None = None) -> None:
    """Record one exposure of an assignment; ``variant_key`` is what the customer saw."""
    at = at or timezone.now()
    row = Assignment.objects.filter(pk=assignment_id).values_list("experiment_id", "variant__key").first()
    if row is None:
        raise ValidationError({"assignment_id": f"No assignment with id {assignment_id}."})
    experiment_id, assigned_key = row
    conflicting = variant_key is not None and variant_key != assigned_key
    if conflicting and not Variant.objects.filter(experiment_id=experiment_id, key=variant_key).exists():
        raise ValidationError({"variant_key": f"'{variant_key}' is not a variant of this experiment."})
    sql = exposure_sql("id = %s")
    params = [*exposure_params(at), assignment_id]
    if conflicting:
        sql = sql.replace("SET ", "SET conflicting_exposure = %s, ", 1)
        params.insert(0, True)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    if conflicting:
        Conversion.objects.filter(assignment_id=assignment_id).delete()


def exposure_log(
    *, experiment: Experiment, customer: Customer, variant_key: str, at: dt.datetime | None = None
) -> Assignment:
    """Client-side exposure logging: the customer saw ``variant_key`` of the experiment.

    The customer must hold an assignment in the current phase (the API assigns them);
    the updated assignment is returned.
    """
    phase = experiment_current_phase(experiment=experiment)
    assignment = (
        Assignment.objects.filter(phase=phase, customer=customer).only("id").first() if phase is not None else None
    )
    if assignment is None:
        raise ValidationError(
            {"experiment": f"Customer '{customer.external_id}' has no assignment in experiment '{experiment.key}'."}
        )
    if at is not None and timezone.is_naive(at):
        raise ValidationError({"occurred_at": "Give a time zone (e.g. 2024-05-01T12:00:00Z)."})
    exposure_record(assignment_id=assignment.pk, variant_key=variant_key, at=at)
    return Assignment.objects.select_related("variant", "experiment").get(pk=assignment.pk)


def exposures_record(*, assignment_ids: Sequence[int], at: dt.datetime | None = None) -> int:
    """Record one exposure of each assignment, at ``at`` (e.g. a campaign's send decision),
    in statements of at most ``EXPOSURE_BATCH`` ids; the exposed variant is the assigned
    one (nothing to flag). Returns how many assignments were updated."""
    at = at or timezone.now()
    ids = sorted(set(assignment_ids))
    updated = 0
    with transaction.atomic(), connection.cursor() as cursor:
        for start in range(0, len(ids), EXPOSURE_BATCH):
            chunk = ids[start : start + EXPOSURE_BATCH]
            if connection.vendor == "postgresql":  # one array parameter: a short statement, parsed quickly
                cursor.execute(exposure_sql("id = ANY(%s::bigint[])"), [*exposure_params(at), chunk])
            else:
                marks = ", ".join(["%s"] * len(chunk))
                cursor.execute(exposure_sql(f"id IN ({marks})"), [*exposure_params(at), *chunk])
            updated += cursor.rowcount
    return updated
