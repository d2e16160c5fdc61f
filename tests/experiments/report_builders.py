"""Test data for the report tests: experiments with variants and metrics, and populations
of customers, assignments and conversions written with set-based SQL (a 10,000-customer
experiment takes well under a second on SQLite and PostgreSQL).

The only test code that knows how assignments, snapshots and conversions are stored
(like ``experiments.reports.aggregation`` for the product code).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.db import connection
from django.utils import timezone

from experiments.models import Assignment, Conversion, Experiment, Metric, Phase, SegmentSnapshot, Variant
from experiments.services.lifecycle import _plan_record
from segments.models import Customer, Dimension, EventType, Layer

PHASE_START = dt.datetime(2024, 5, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Group:
    """``n`` customers of one variant with the same assignment-time layers, of whom
    ``conversions[event code]`` converted (the first ones)."""

    variant: str
    n: int
    conversions: Mapping[str, int] = field(default_factory=dict)
    layers: Mapping[str, str] = field(default_factory=dict)
    exposed: bool = True
    conflicting: bool = False
    day: int = 0  # first exposure on PHASE_START + day days
    conversion_day: int = 1  # conversion on PHASE_START + conversion_day days


def experiment_create(
    *,
    key: str = "offer-test",
    variants: Sequence[tuple[str, float]] = (("control", 0.5), ("treatment", 0.5)),
    metrics: Sequence[tuple[str, str]] = (("order", "primary"),),
    mde: str = "0.10",
    status: str = Experiment.Status.RUNNING,
    phase_start: dt.datetime = PHASE_START,
    phase_end: dt.datetime | None = None,
    plan: dict[str, Any] | None = None,
    margins: dict[str, str] | None = None,
) -> Experiment:
    """Variants ``(key, weight)``, the first is the control; metrics ``(event code, role)``.

    ``plan``: analysis-plan fields recorded for phase 1 (``lifecycle._plan_record``). The
    default is a fixed-horizon plan whose horizon (1 customer) is already reached, so the
    report shows the pooled decision test's numbers, which most tests check against
    statsmodels; sequential tests pass ``plan={"inference_mode": "sequential", ...}``.
    ``margins``: guardrail non-inferiority margins by event code."""
    experiment = Experiment.objects.create(
        key=key,
        name=key.replace("-", " ").title(),
        status=status,
        minimum_detectable_effect=Decimal(mde),
        started_at=phase_start,
        **(plan if plan is not None else {"inference_mode": "fixed", "planned_sample_size": 1}),
    )
    for position, (variant_key, weight) in enumerate(variants):
        Variant.objects.create(
            experiment=experiment,
            key=variant_key,
            name=variant_key.title(),
            weight=Decimal(str(weight)),
            is_control=position == 0,
            position=position,
        )
    phase = Phase.objects.create(
        experiment=experiment,
        number=1,
        seed=key,
        coverage=Decimal(1),
        weights=[{"variant": k, "weight": str(w)} for k, w in variants],
        started_at=phase_start,
        ended_at=phase_end,
    )
    for code, role in metrics:
        Metric.objects.create(
            experiment=experiment,
            event_type=EventType.objects.get(code=code),
            role=role,
            noninferiority_margin=Decimal((margins or {}).get(code, "0")),
        )
    _plan_record(experiment=experiment, phase=phase, at=phase_start)
    return experiment


def dimension_create(key: str, layers: Sequence[str], name: str | None = None) -> Dimension:
    dimension, _ = Dimension.objects.get_or_create(
        key=key, defaults={"name": name or key.title(), "kind": Dimension.Kind.JOURNEY, "is_active": False}
    )
    for position, layer in enumerate(layers):
        Layer.objects.get_or_create(
            dimension=dimension, key=layer, defaults={"name": layer.replace("_", " ").title(), "position": position}
        )
    return dimension


def snapshot_id(layers: Mapping[str, str]) -> int:
    key = SegmentSnapshot.canonical_key(dict(layers))
    return SegmentSnapshot.objects.get_or_create(key=key, defaults={"layers": dict(layers)})[0].pk


def _customer_columns() -> tuple[list[str], list[object]]:
    """Every NOT NULL column of the customer table but the id and external id, with its
    model default prepared for the database (so new customer fields need no change here)."""
    columns, values = [], []
    for f in Customer._meta.concrete_fields:
        if f.primary_key or f.name == "external_id" or f.null:
            continue
        value = timezone.now() if f.name in ("created_at", "updated_at") else f.get_default()
        columns.append(f.column)
        values.append(f.get_db_prep_save(value, connection))
    return columns, values


def populate(experiment: Experiment, groups: Sequence[Group], *, phase: Phase | None = None) -> int:
    """Write the groups' customers, assignments and conversions with set-based SQL
    (``INSERT ... SELECT`` over a recursive counter, three statements per group);
    returns the customers written."""
    phase = phase or experiment.phases.order_by("-number").first()
    assert phase is not None
    variants = {v.key: v.pk for v in experiment.variants.all()}
    metrics = {m.event_type.code: m.pk for m in experiment.metrics.select_related("event_type")}
    q = connection.ops.quote_name
    customer_t, assignment_t, conversion_t = (q(m._meta.db_table) for m in (Customer, Assignment, Conversion))
    columns, defaults = _customer_columns()
    now = timezone.now()
    start = Customer.objects.count()
    with connection.cursor() as cursor:
        for index, group in enumerate(groups):
            prefix = f"{experiment.key}-p{phase.number}-c{start}-g{index}-"
            # The group's rows are those with an id above the largest before it (one
            # connection writes them): an index range, where a join on the external id
            # prefix left the planner guessing on never-analysed test tables.
            cursor.execute(f"SELECT COALESCE(MAX(id), 0) FROM {customer_t}")
            (above,) = cursor.fetchone()
            cursor.execute(
                f"WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < %s)"
                f" INSERT INTO {customer_t} ({q('external_id')}, {', '.join(q(c) for c in columns)})"
                f" SELECT %s || i, {', '.join(['%s'] * len(columns))} FROM seq",
                [group.n, prefix, *defaults],
            )
            exposed_at = phase.started_at + dt.timedelta(days=group.day, hours=1) if group.exposed else None
            cursor.execute(
                f"INSERT INTO {assignment_t} (experiment_id, phase_id, customer_id, variant_id, assigned_at,"
                " snapshot_id, first_exposed_at, last_exposed_at, exposure_count, conflicting_exposure)"
                f" SELECT %s, %s, c.id, %s, %s, %s, %s, %s, %s, %s FROM {customer_t} c"
                " WHERE c.id > %s",
                [
                    experiment.pk,
                    phase.pk,
                    variants[group.variant],
                    exposed_at or now,
                    snapshot_id(group.layers),
                    exposed_at,
                    exposed_at,
                    1 if group.exposed else 0,
                    group.conflicting,
                    above,
                ],
            )
            converted_at = phase.started_at + dt.timedelta(days=group.conversion_day, hours=2)
            for code, count in group.conversions.items():
                assert count <= group.n, "more conversions than customers"
                cursor.execute(
                    f"INSERT INTO {conversion_t} (assignment_id, metric_id, phase_id, variant_id, snapshot_id,"
                    " converted_at)"
                    " SELECT a.id, %s, a.phase_id, a.variant_id, a.snapshot_id, %s"
                    f" FROM {assignment_t} a"
                    " WHERE a.customer_id > %s AND a.phase_id = %s ORDER BY a.id LIMIT %s",
                    [metrics[code], converted_at, above, phase.pk, count],
                )
    return sum(g.n for g in groups)


def without_clock(data: dict) -> dict:
    """A report document minus what moves with the wall clock between two builds (when
    it was generated, days elapsed, and what the power status derives from them)."""
    data = json.loads(json.dumps(data))
    data.pop("generated_at")
    if data.get("phase"):
        data["phase"].pop("days_elapsed")
    for metric in data["metrics"]:
        for row in [metric["overall"], *(r for d in metric["dimensions"] for r in d["layers"])]:
            for key in ("daily_traffic", "days_remaining", "message", "undefined"):
                row["power"].pop(key)
    return data
