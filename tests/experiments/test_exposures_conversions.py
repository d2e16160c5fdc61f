"""Exposures (first kept, later counted, conflicts flagged) and conversions (first goal event
within the window after first exposure, set-based and incremental)."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from experiments import services
from experiments.models import Assignment, Conversion, Metric, Phase
from tests.factories import EventFactory, OrderFactory, event_type

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2026, 3, 2, 12, 0, tzinfo=dt.UTC)
H = dt.timedelta(hours=1)


def _assigned(make_experiment, make_customers, n: int = 1, **kwargs):  # type: ignore[no-untyped-def]
    experiment = make_experiment(
        "conv",
        metrics=[
            services.MetricSpec(event_type_code="order", role="primary", window_hours=48),
            services.MetricSpec(event_type_code="unsubscribe", role="guardrail", window_hours=24),
        ],
        **kwargs,
    )
    customers = make_customers(n)
    decisions = [services.assignment_get_or_create(experiment=experiment, customer=c) for c in customers]
    _backdate(experiment)
    return experiment, customers, decisions


def _backdate(experiment, at: dt.datetime = T0 - 24 * H) -> None:  # type: ignore[no-untyped-def]
    """Move the phase start and the assignments to ``at``: exposures are never recorded
    before the assignment (they would be clamped to it), and these tests expose at T0."""
    Phase.objects.filter(experiment=experiment).update(started_at=at)
    Assignment.objects.filter(experiment=experiment).update(assigned_at=at)


def _conversions(experiment, code: str = "order") -> dict[int, dt.datetime]:  # type: ignore[no-untyped-def]
    metric = Metric.objects.get(experiment=experiment, event_type__code=code)
    return dict(Conversion.objects.filter(metric=metric).values_list("assignment_id", "converted_at"))


# --- Exposures ----------------------------------------------------------------------------


def test_exposure_record__out_of_order__earliest_first_latest_last_all_counted(make_experiment, make_customers) -> None:
    _, _, (decision,) = _assigned(make_experiment, make_customers)

    services.exposure_record(assignment_id=decision.assignment_id, at=T0 + 2 * H)
    services.exposure_record(assignment_id=decision.assignment_id, at=T0)
    services.exposure_record(assignment_id=decision.assignment_id, at=T0 + H, variant_key=decision.variant_key)

    row = Assignment.objects.get(pk=decision.assignment_id)
    assert (row.first_exposed_at, row.last_exposed_at, row.exposure_count) == (T0, T0 + 2 * H, 3)
    assert not row.conflicting_exposure


def test_exposure_record__other_variant__flagged_and_conversions_dropped(make_experiment, make_customers) -> None:
    experiment, (customer,), (decision,) = _assigned(make_experiment, make_customers)
    services.exposure_record(assignment_id=decision.assignment_id, at=T0)
    OrderFactory(customer=customer, occurred_at=T0 + H)
    services.conversions_refresh(experiment=experiment)
    assert decision.assignment_id in _conversions(experiment)
    other = "control" if decision.variant_key == "treatment" else "treatment"

    services.exposure_record(assignment_id=decision.assignment_id, variant_key=other, at=T0 + 2 * H)
    services.conversions_refresh(experiment=experiment, full=True)

    assert Assignment.objects.get(pk=decision.assignment_id).conflicting_exposure
    assert _conversions(experiment) == {}


def test_exposure_record__unknown_variant_or_assignment__validation_error(make_experiment, make_customers) -> None:
    _, _, (decision,) = _assigned(make_experiment, make_customers)
    with pytest.raises(ValidationError) as unknown_variant:
        services.exposure_record(assignment_id=decision.assignment_id, variant_key="nope")
    with pytest.raises(ValidationError) as unknown_assignment:
        services.exposure_record(assignment_id=10**9)
    assert "variant_key" in unknown_variant.value.message_dict
    assert "assignment_id" in unknown_assignment.value.message_dict


# --- Conversions --------------------------------------------------------------------------


def test_conversions_refresh__first_goal_event_in_window_after_exposure__counted(
    make_experiment, make_customers
) -> None:
    experiment, customers, decisions = _assigned(make_experiment, make_customers, n=6)
    for d in decisions[:4]:
        services.exposure_record(assignment_id=d.assignment_id, at=T0)
    before, inside, late, other_type, never_exposed, two = customers  # two: exposed later
    OrderFactory(customer=before, occurred_at=T0 - H)  # before exposure: not a conversion
    OrderFactory(customer=inside, occurred_at=T0 + 47 * H)  # inside the 48 h window
    OrderFactory(customer=late, occurred_at=T0 + 48 * H)  # window is half-open: too late
    EventFactory(customer=other_type, occurred_at=T0 + H, event_type=event_type("login"))
    OrderFactory(customer=never_exposed, occurred_at=T0 + H)  # never exposed: not analysed
    OrderFactory(customer=two, occurred_at=T0 + 5 * H)
    OrderFactory(customer=two, occurred_at=T0 + 3 * H)  # the first one counts

    written = services.conversions_refresh(experiment=experiment)

    by_customer = {d.assignment_id: c for c, d in zip(customers, decisions, strict=True)}
    converted = {by_customer[a].pk: at for a, at in _conversions(experiment).items()}
    assert converted == {inside.pk: T0 + 47 * H}
    assert sum(written.values()) == 1
    services.exposure_record(assignment_id=decisions[5].assignment_id, at=T0)
    services.conversions_refresh(experiment=experiment)
    converted = {by_customer[a].pk: at for a, at in _conversions(experiment).items()}
    assert converted == {inside.pk: T0 + 47 * H, two.pk: T0 + 3 * H}
    # The conversion row carries its assignment's variant and snapshot for the report.
    row = Conversion.objects.select_related("assignment").get(assignment__customer=two, metric__role="primary")
    assert (row.variant_id, row.phase_id, row.snapshot_id) == (
        row.assignment.variant_id,
        row.assignment.phase_id,
        row.assignment.snapshot_id,
    )


def test_conversions_refresh__rerun_and_late_earlier_event__idempotent_and_moves_earlier(
    make_experiment, make_customers
) -> None:
    experiment, (customer,), (decision,) = _assigned(make_experiment, make_customers)
    services.exposure_record(assignment_id=decision.assignment_id, at=T0)
    OrderFactory(customer=customer, occurred_at=T0 + 10 * H)
    services.conversions_refresh(experiment=experiment)
    assert services.conversions_refresh(experiment=experiment) == {
        m: 0 for m in Metric.objects.filter(experiment=experiment).values_list("pk", flat=True)
    }

    OrderFactory(customer=customer, occurred_at=T0 + 2 * H)  # arrives late, happened earlier
    OrderFactory(customer=customer, occurred_at=T0 + 20 * H)
    services.conversions_refresh(experiment=experiment)

    assert _conversions(experiment) == {decision.assignment_id: T0 + 2 * H}
    assert Conversion.objects.count() == 1


def test_conversions_refresh__incremental__only_new_events_considered_until_full(
    make_experiment, make_customers
) -> None:
    experiment, (a, b), (da, db) = _assigned(make_experiment, make_customers, n=2)
    now = timezone.now()
    for d in (da, db):
        services.exposure_record(assignment_id=d.assignment_id, at=now - 30 * H)
    services.conversions_refresh(experiment=experiment, now=now - 20 * H)  # watermark 20 h ago
    # b's order was received before the watermark (and missed, e.g. written by a backfill
    # without received_at); a's order is new.
    old = OrderFactory(customer=b, occurred_at=now - 25 * H)
    type(old).objects.filter(pk=old.pk).update(received_at=now - 21 * H)
    OrderFactory(customer=a, occurred_at=now - 25 * H)

    services.conversions_refresh(experiment=experiment, now=now)
    incremental = set(_conversions(experiment))
    services.conversions_refresh(experiment=experiment, full=True)

    assert incremental == {da.assignment_id}
    assert set(_conversions(experiment)) == {da.assignment_id, db.assignment_id}


def test_conversions_refresh__guardrail_metric__own_window(make_experiment, make_customers) -> None:
    experiment, (customer,), (decision,) = _assigned(make_experiment, make_customers)
    services.exposure_record(assignment_id=decision.assignment_id, at=T0)
    EventFactory(customer=customer, occurred_at=T0 + 30 * H, event_type=event_type("unsubscribe"))

    services.conversions_refresh(experiment=experiment)

    assert _conversions(experiment, "unsubscribe") == {}  # 24 h window
    assert _conversions(experiment, "order") == {}


def test_layer_rollup__exposed_and_converted__per_variant_and_pre_treatment_layer(
    make_experiment, make_customers, rfm
) -> None:
    from experiments.selectors import layer_rollup
    from segments.models import CustomerLayer, Layer
    from tests.experiments.conftest import place

    experiment, _, _ = _assigned(make_experiment, make_customers, n=0)
    important = Layer.objects.get(dimension=rfm, key="important_value")
    general = Layer.objects.get(dimension=rfm, key="general_value")
    customers = make_customers(40)
    place(customers[:25], important)
    place(customers[25:], general)
    decisions = [services.assignment_get_or_create(experiment=experiment, customer=c) for c in customers]
    _backdate(experiment)
    for d in decisions[:30]:  # the last 10 are never exposed
        services.exposure_record(assignment_id=d.assignment_id, at=T0)
    other = "control" if decisions[0].variant_key == "treatment" else "treatment"
    services.exposure_record(assignment_id=decisions[0].assignment_id, variant_key=other, at=T0)  # excluded
    for c in customers[:12]:
        OrderFactory(customer=c, occurred_at=T0 + H)
    services.conversions_refresh(experiment=experiment)
    # Layers move after assignment: the rollup keeps the pre-treatment snapshot.
    CustomerLayer.objects.filter(customer__in=customers).update(layer=general)

    rows = {(r.variant_key, r.dimension_key, r.layer_key): r for r in layer_rollup(experiment=experiment)}

    order = Metric.objects.get(experiment=experiment, event_type__code="order").pk
    for variant in ("control", "treatment"):
        analysed = [(c, d) for c, d in zip(customers[1:30], decisions[1:30], strict=True) if d.variant_key == variant]
        in_important = [(c, d) for c, d in analysed if c in customers[:25]]
        overall = rows[(variant, None, None)]
        assert overall.exposed == len(analysed)
        assert overall.conversions.get(order, 0) == sum(1 for c, _ in analysed if c in customers[:12])
        layer = rows.get((variant, "rfm", "important_value"))
        assert (layer.exposed if layer else 0) == len(in_important)


def test_exposures_record__batch__each_counted_once_first_time_kept(make_experiment, make_customers) -> None:
    _, _, decisions = _assigned(make_experiment, make_customers, n=4)
    ids = [d.assignment_id for d in decisions]
    services.exposure_record(assignment_id=ids[0], at=T0 - H)

    updated = services.exposures_record(assignment_ids=[*ids[:3], ids[0]], at=T0)

    rows = {a.pk: a for a in Assignment.objects.filter(pk__in=ids)}
    assert updated == 3
    assert (rows[ids[0]].first_exposed_at, rows[ids[0]].exposure_count) == (T0 - H, 2)
    assert [(rows[i].first_exposed_at, rows[i].exposure_count) for i in ids[1:3]] == [(T0, 1), (T0, 1)]
    assert rows[ids[3]].first_exposed_at is None
