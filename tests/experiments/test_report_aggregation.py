"""experiments.reports.aggregation: the GROUP BY behind the report, on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from experiments.models import Phase
from experiments.reports.aggregation import layer_labels, phase_counts
from tests.experiments.report_builders import PHASE_START, Group, dimension_create, experiment_create, populate

pytestmark = pytest.mark.django_db


def _ids(experiment):  # type: ignore[no-untyped-def]
    variants = {v.key: v.pk for v in experiment.variants.all()}
    metrics = {m.event_type.code: m.pk for m in experiment.metrics.select_related("event_type")}
    phase = experiment.phases.get(number=1)
    return variants, metrics, phase


def test_phase_counts__mixed_population__counts_only_exposed_unflagged_customers_of_the_phase() -> None:
    # Given exposed, never-exposed and conflicting customers, and another experiment
    experiment = experiment_create(metrics=(("order", "primary"), ("unsubscribe", "guardrail")))
    other = experiment_create(key="other-test")
    populate(
        experiment,
        [
            Group("control", 40, {"order": 4, "unsubscribe": 1}, {"tier": "new"}),
            Group("treatment", 50, {"order": 9}, {"tier": "new"}),
            Group("treatment", 7, {}, {"tier": "new"}, exposed=False),
            Group("control", 5, {}, {"tier": "new"}, conflicting=True),
        ],
    )
    populate(other, [Group("control", 30, {"order": 30}, {"tier": "new"})])
    variants, metrics, phase = _ids(experiment)

    # When
    counts = phase_counts(phase_id=phase.pk, metric_ids=[metrics["order"], metrics["unsubscribe"]])

    # Then
    by_variant = {v.variant_id: v for v in counts.overall}
    assert by_variant[variants["control"]].customers == 40
    assert by_variant[variants["control"]].conversions == (4, 1)
    assert by_variant[variants["treatment"]].customers == 50
    assert by_variant[variants["treatment"]].conversions == (9, 0)
    assert counts.customers == 90
    assert counts.inconsistencies == ()


def test_phase_counts__several_dimensions__rolls_snapshots_up_to_each_dimensions_layers() -> None:
    experiment = experiment_create()
    populate(
        experiment,
        [
            Group("control", 10, {"order": 1}, {"tier": "new", "channel": "email"}),
            Group("control", 20, {"order": 2}, {"tier": "vip", "channel": "email"}),
            Group("treatment", 30, {"order": 3}, {"tier": "vip", "channel": "sms"}),
            Group("treatment", 4, {"order": 4}, {"tier": "vip"}),  # no channel layer when assigned
        ],
    )
    variants, metrics, phase = _ids(experiment)

    counts = phase_counts(phase_id=phase.pk, metric_ids=[metrics["order"]])

    table = {
        (layer.dimension, layer.layer, v.variant_id): (v.customers, v.conversions[0])
        for layer in counts.layers
        for v in layer.variants
    }
    c, t = variants["control"], variants["treatment"]
    assert table == {
        ("channel", "email", c): (30, 3),
        ("channel", "sms", t): (30, 3),
        ("channel", None, t): (4, 4),
        ("tier", "new", c): (10, 1),
        ("tier", "vip", c): (20, 2),
        ("tier", "vip", t): (34, 7),
    }
    # Every dimension partitions the same population.
    for dimension in ("tier", "channel"):
        assert sum(v.customers for layer in counts.layers if layer.dimension == dimension for v in layer.variants) == 64
    # Layers come sorted by dimension, then layer key, "no layer" last.
    assert [(layer.dimension, layer.layer) for layer in counts.layers] == [
        ("channel", "email"),
        ("channel", "sms"),
        ("channel", None),
        ("tier", "new"),
        ("tier", "vip"),
    ]


def test_phase_counts__new_phase__analyses_only_that_phase() -> None:
    experiment = experiment_create()
    populate(experiment, [Group("control", 25, {"order": 5}), Group("treatment", 25, {"order": 5})])
    first = experiment.phases.get(number=1)
    first.ended_at = PHASE_START + dt.timedelta(days=3)
    first.save()
    second = Phase.objects.create(
        experiment=experiment,
        number=2,
        seed="offer-test-2",
        coverage=1,
        weights=first.weights,
        started_at=PHASE_START + dt.timedelta(days=3),
    )
    populate(experiment, [Group("control", 11, {"order": 1})], phase=second)
    _, metrics, _ = _ids(experiment)

    counts = phase_counts(phase_id=second.pk, metric_ids=[metrics["order"]])

    assert [(v.customers, v.conversions) for v in counts.overall] == [(11, (1,))]


def test_phase_counts__conversions_of_unanalysed_customers__left_out_and_reported() -> None:
    # The engine never writes these; if it did, the report must not count them silently.
    experiment = experiment_create()
    populate(
        experiment,
        [
            Group("control", 10, {"order": 2}, {"tier": "new"}),
            Group("treatment", 5, {"order": 5}, {"tier": "vip"}, conflicting=True),
        ],
    )
    variants, metrics, phase = _ids(experiment)

    counts = phase_counts(phase_id=phase.pk, metric_ids=[metrics["order"]])

    assert [(v.variant_id, v.customers, v.conversions) for v in counts.overall] == [(variants["control"], 10, (2,))]
    [problem] = counts.inconsistencies
    assert (problem.kind, problem.variant_id, problem.conversions) == (
        "outside_population",
        variants["treatment"],
        5,
    )


def test_phase_counts__daily__exposures_by_first_exposure_day_and_conversions_by_conversion_day() -> None:
    experiment = experiment_create()
    populate(
        experiment,
        [
            Group("control", 10, {"order": 3}, day=0, conversion_day=2),
            Group("control", 5, {"order": 1}, day=1, conversion_day=2),
            Group("treatment", 8, {"order": 4}, day=1, conversion_day=3),
            Group("treatment", 2, {}, day=1, exposed=False),
        ],
    )
    variants, metrics, phase = _ids(experiment)

    counts = phase_counts(
        phase_id=phase.pk, metric_ids=[metrics["order"]], daily_metric_id=metrics["order"], daily=True
    )

    day = PHASE_START.date()
    got = {(p.day, p.variant_id): (p.exposed, p.conversions) for p in counts.daily}
    c, t = variants["control"], variants["treatment"]
    assert got == {
        (day, c): (10, 0),
        (day + dt.timedelta(days=1), c): (5, 0),
        (day + dt.timedelta(days=1), t): (8, 0),
        (day + dt.timedelta(days=2), c): (0, 4),
        (day + dt.timedelta(days=3), t): (0, 4),
    }
    assert phase_counts(phase_id=phase.pk, metric_ids=[metrics["order"]], daily_metric_id=metrics["order"]).daily == ()


def test_phase_counts__no_assignments__empty_counts() -> None:
    experiment = experiment_create()
    _, metrics, phase = _ids(experiment)

    counts = phase_counts(
        phase_id=phase.pk, metric_ids=[metrics["order"]], daily_metric_id=metrics["order"], daily=True
    )

    assert (counts.overall, counts.layers, counts.daily, counts.customers) == ((), (), (), 0)


def test_phase_counts__ten_times_the_customers__same_statements_and_rows() -> None:
    # Aggregation happens in the database: the number of statements and of rows fetched
    # depends on variants x snapshots x days, never on customers.
    experiment = experiment_create()
    _, metrics, phase = _ids(experiment)
    fetched = []
    for size in (20, 200):
        populate(
            experiment,
            [
                Group("control", size, {"order": size // 10}, {"tier": "new"}),
                Group("treatment", size, {"order": size // 5}, {"tier": "vip"}),
            ],
        )
        with CaptureQueriesContext(connection) as queries:
            counts = phase_counts(
                phase_id=phase.pk, metric_ids=[metrics["order"]], daily_metric_id=metrics["order"], daily=True
            )
        fetched.append((len(queries), len(counts.layers), len(counts.daily)))
    assert fetched[0] == fetched[1]
    assert fetched[0][0] <= 7  # 5 SELECTs (+ savepoint statements on some backends)


def test_layer_labels__configured_dimension__names_in_layer_order_and_keys_for_unknown() -> None:
    dimension_create("tier", ["vip", "new"], name="Customer tier")

    labels = layer_labels(dimension_keys=["tier", "gone"])

    assert labels["tier"].name == "Customer tier"
    assert labels["tier"].layers == (("vip", "Vip"), ("new", "New"))
    assert (labels["gone"].name, labels["gone"].layers) == ("gone", ())
