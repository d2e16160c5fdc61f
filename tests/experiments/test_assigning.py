"""Sticky assignment, one customer at a time and a whole audience at once."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

import pytest

from experiments import assignment as spec
from experiments import services
from experiments.models import Assignment, HoldoutMember, Variant
from experiments.selectors import assignments_queryset, experiment_current_phase
from segments.models import Layer
from tests.experiments.conftest import place, variant_specs

pytestmark = pytest.mark.django_db


def _variants(experiment) -> dict[int, str]:  # type: ignore[no-untyped-def]
    return dict(Variant.objects.filter(experiment=experiment).values_list("pk", "key"))


def _stored(experiment) -> dict[str, str]:  # type: ignore[no-untyped-def]
    keys = _variants(experiment)
    rows = assignments_queryset(experiment=experiment).values_list("customer__external_id", "variant_id")
    return {external_id: keys[variant_id] for external_id, variant_id in rows}


def _expected(external_id: str, *, seed: str, weights: list[float], coverage: float, keys: list[str]) -> str | None:
    index = spec.assign(seed=seed, hash_value=external_id, weights=weights, coverage=coverage)
    return None if index is None else keys[index]


# --- One customer ------------------------------------------------------------------------


def test_assignment_get_or_create__first_call__stores_growthbook_variant_and_snapshot(
    make_experiment, make_customers, rfm
) -> None:
    experiment = make_experiment("pricing-page")
    customer = make_customers(1)[0]
    layer = Layer.objects.get(dimension=rfm, key="important_value")
    place([customer], layer)

    decision = services.assignment_get_or_create(experiment=experiment, customer=customer)

    expected = _expected(
        customer.external_id, seed="pricing-page", weights=[0.5, 0.5], coverage=1.0, keys=["control", "treatment"]
    )
    assert decision.reason == "assigned"
    assert decision.variant_key == expected
    assert decision.is_control == (expected == "control")
    assert decision.payload == {"variant": expected, "discount": 0 if expected == "control" else 10}
    row = Assignment.objects.select_related("snapshot", "variant").get(pk=decision.assignment_id)
    assert row.variant.key == expected
    assert row.segment_snapshot == {"rfm": "important_value"}
    assert row.first_exposed_at is None and row.exposure_count == 0


def test_assignment_get_or_create__later_calls__stored_row_wins_and_exposures_counted(
    make_experiment, make_customers, rfm
) -> None:
    experiment = make_experiment("sticky")
    customer = make_customers(1)[0]
    first = services.assignment_get_or_create(experiment=experiment, customer=customer, expose=True)
    # The customer's layer changes after assignment: the snapshot keeps the old one.
    place([customer], Layer.objects.get(dimension=rfm, key="general_win_back"))
    # Force a different variant for new customers: all weight on the other arm.
    other = "control" if first.variant_key == "treatment" else "treatment"
    weights = {"control": "1", "treatment": "0"} if other == "control" else {"control": "0", "treatment": "1"}
    services.experiment_allocation_update(
        experiment=experiment,
        coverage=Decimal(1),
        variants=[
            services.VariantSpec(key=k, name=k, weight=Decimal(w), is_control=k == "control")
            for k, w in weights.items()
        ],
    )

    again = services.assignment_get_or_create(experiment=experiment, customer=customer, expose=True)

    assert (again.variant_key, again.assignment_id, again.reason) == (
        first.variant_key,
        first.assignment_id,
        "assigned",
    )
    row = Assignment.objects.get(pk=first.assignment_id)
    assert row.exposure_count == 2
    assert row.segment_snapshot == {}
    assert row.first_exposed_at <= row.last_exposed_at
    assert Assignment.objects.filter(customer=customer).count() == 1


def test_assignment_get_or_create__paused_experiment__not_running_and_nothing_written(
    make_experiment, make_customers
) -> None:
    experiment = make_experiment("paused")
    services.experiment_pause(experiment=experiment)
    customer = make_customers(1)[0]

    decision = services.assignment_get_or_create(experiment=experiment, customer=customer, expose=True)

    assert (decision.reason, decision.variant_key, decision.assignment_id) == ("not_running", None, None)
    assert not Assignment.objects.exists()


def test_assignment_get_or_create__draft_experiment__not_running(make_experiment, make_customers) -> None:
    experiment = make_experiment("draft", start=False)
    decision = services.assignment_get_or_create(experiment=experiment, customer=make_customers(1)[0])
    assert decision.reason == "not_running"


def test_assignment_get_or_create__outside_coverage__reason_and_no_row(make_experiment, make_customers) -> None:
    experiment = make_experiment("tiny", coverage="0.1")
    customers = make_customers(200)

    reasons = Counter(services.assignment_get_or_create(experiment=experiment, customer=c).reason for c in customers)

    outside = [
        c
        for c in customers
        if spec.assign(seed="tiny", hash_value=c.external_id, weights=[0.5, 0.5], coverage=0.1) is None
    ]
    assert reasons["outside_coverage"] == len(outside) > 150
    assert reasons["assigned"] == 200 - len(outside) == Assignment.objects.count()


def test_assignment_get_or_create__targeting__only_included_layer_assigned(
    make_experiment, make_customers, rfm
) -> None:
    inside, outside = make_customers(5), make_customers(5)
    layer = Layer.objects.get(dimension=rfm, key="important_win_back")
    place(inside, layer)
    experiment = make_experiment("win-back", include_layer_ids=(layer.pk,))

    decisions = {c.pk: services.assignment_get_or_create(experiment=experiment, customer=c) for c in inside + outside}

    assert {decisions[c.pk].reason for c in inside} == {"assigned"}
    assert {decisions[c.pk].reason for c in outside} == {"not_targeted"}
    assert set(assignments_queryset(experiment=experiment).values_list("customer_id", flat=True)) == {
        c.pk for c in inside
    }


# --- The checks of the issue ----------------------------------------------------------------


@pytest.mark.parametrize("path", ["single", "bulk"])
def test_raise_coverage_and_change_weights__previously_assigned__none_moved_new_follow_new_weights(
    path, make_experiment, make_customers
) -> None:
    experiment = make_experiment("sticky-check", weights=("0.5", "0.5"), coverage="0.2")
    n = 3000 if path == "bulk" else 1200  # one call per customer per round on the single path
    customers = make_customers(n)

    def assign_all() -> None:
        if path == "bulk":
            services.audience_assign(experiment=experiment, batch_size=700)
        else:
            for c in customers:
                services.assignment_get_or_create(experiment=experiment, customer=c)

    assign_all()
    before = _stored(experiment)
    keys = ["control", "treatment"]
    assert before == {
        c.external_id: v
        for c in customers
        if (v := _expected(c.external_id, seed="sticky-check", weights=[0.5, 0.5], coverage=0.2, keys=keys))
    }
    assert 0.15 * n < len(before) < 0.25 * n

    services.experiment_allocation_update(
        experiment=experiment, coverage=Decimal("0.4"), variants=variant_specs(("0.4", "0.6"))
    )
    assign_all()
    after = _stored(experiment)

    moved = [external_id for external_id, variant in before.items() if after[external_id] != variant]
    assert moved == []
    new = {external_id: variant for external_id, variant in after.items() if external_id not in before}
    expected_new = {
        c.external_id: v
        for c in customers
        if c.external_id not in before
        and (v := _expected(c.external_id, seed="sticky-check", weights=[0.4, 0.6], coverage=0.4, keys=keys))
    }
    assert new == expected_new
    assert len(new) > 0.15 * n
    # The new ranges: [0, 0.16) control, [0.4, 0.64) treatment -- new customers come from
    # the parts of those ranges the old ones did not cover, in the 40/60 proportion of the
    # new weights over all customers now in the experiment (up to hashing noise).
    share = Counter(after.values())["treatment"] / len(after)
    assert 0.52 < share < 0.68


def test_lower_coverage_or_remove_variant__running__refused_unless_new_phase(make_experiment, make_customers) -> None:
    experiment = make_experiment("refusals", weights=("0.34", "0.33", "0.33"), coverage="0.5")
    customers = make_customers(300)
    services.audience_assign(experiment=experiment)
    phase1 = experiment_current_phase(experiment=experiment)

    with pytest.raises(services_validation_error()) as lowered:
        services.experiment_allocation_update(
            experiment=experiment, coverage=Decimal("0.4"), variants=variant_specs(("0.34", "0.33", "0.33"))
        )
    assert "coverage" in lowered.value.message_dict

    two = variant_specs(("0.5", "0.5"))
    two = [two[0], services.VariantSpec(key="treatment1", name="T1", weight=Decimal("0.5"))]
    with pytest.raises(services_validation_error()) as removed:
        services.experiment_allocation_update(experiment=experiment, coverage=Decimal("0.5"), variants=two)
    assert "removes treatment2" in removed.value.message_dict["variants"][0]

    services.experiment_allocation_update(
        experiment=experiment, coverage=Decimal("0.3"), variants=two, start_new_phase=True, reason="drop T2"
    )

    phase2 = experiment_current_phase(experiment=experiment)
    assert phase2.number == 2 and phase2.seed == "refusals:phase-2" and phase1.pk != phase2.pk
    assert [w["variant"] for w in phase2.weights] == ["control", "treatment1"]
    assert not Variant.objects.get(experiment=experiment, key="treatment2").is_active
    # Phase 1 is kept for the record; phase 2 starts empty and assigns with the new seed.
    assert Assignment.objects.filter(phase=phase1).count() > 100
    assert not assignments_queryset(experiment=experiment).exists()
    services.audience_assign(experiment=experiment)
    stored = _stored(experiment)
    assert stored == {
        c.external_id: v
        for c in customers
        if (
            v := _expected(
                c.external_id,
                seed="refusals:phase-2",
                weights=[0.5, 0.5],
                coverage=0.3,
                keys=["control", "treatment1"],
            )
        )
    }


def services_validation_error() -> type[Exception]:
    from django.core.exceptions import ValidationError

    return ValidationError


@pytest.mark.parametrize("path", ["single", "bulk"])
def test_namespace__two_experiments_one_namespace__no_customer_in_both(
    path, make_experiment, make_customers, namespace
) -> None:
    first = make_experiment(
        "ns-a", namespace_id=namespace.pk, namespace_start=Decimal("0"), namespace_end=Decimal("0.5")
    )
    second = make_experiment(
        "ns-b", namespace_id=namespace.pk, namespace_start=Decimal("0.5"), namespace_end=Decimal("1")
    )
    n = 1000 if path == "bulk" else 500
    customers = make_customers(n)

    reasons: dict[str, Counter[str]] = {"ns-a": Counter(), "ns-b": Counter()}
    for experiment in (first, second):
        if path == "bulk":
            result = services.audience_assign(experiment=experiment, batch_size=300)
            reasons[experiment.key].update({"assigned": result.assigned, "namespace": result.excluded["namespace"]})
        else:
            for c in customers:
                reasons[experiment.key][
                    services.assignment_get_or_create(experiment=experiment, customer=c).reason
                ] += 1

    in_first = set(assignments_queryset(experiment=first).values_list("customer_id", flat=True))
    in_second = set(assignments_queryset(experiment=second).values_list("customer_id", flat=True))
    assert in_first and in_second
    assert in_first.isdisjoint(in_second)
    assert len(in_first | in_second) == n  # the two halves cover everyone (coverage 100%)
    expected_first = {c.pk for c in customers if spec.in_namespace(c.external_id, namespace.key, 0, 0.5)}
    assert in_first == expected_first
    assert reasons["ns-a"]["namespace"] == n - len(in_first)
    assert reasons["ns-b"]["namespace"] == n - len(in_second)


def test_namespace__overlapping_range__start_refused(make_experiment, namespace) -> None:
    make_experiment("ns-a", namespace_id=namespace.pk, namespace_start=Decimal("0"), namespace_end=Decimal("0.6"))
    clash = make_experiment(
        "ns-b", start=False, namespace_id=namespace.pk, namespace_start=Decimal("0.5"), namespace_end=Decimal("1")
    )
    with pytest.raises(services_validation_error()) as error:
        services.experiment_start(experiment=clash)
    assert "overlaps experiment 'ns-a'" in error.value.message_dict["namespace_start"][0]


@pytest.mark.parametrize("path", ["single", "bulk"])
def test_holdout__holdout_customers__never_assigned_and_recorded(
    path, make_experiment, make_customers, holdout
) -> None:
    experiment = make_experiment("with-holdout", holdout_id=holdout.pk)
    n = 1000 if path == "bulk" else 600
    customers = make_customers(n)

    if path == "bulk":
        result = services.audience_assign(experiment=experiment, batch_size=400)
    else:
        decisions = [services.assignment_get_or_create(experiment=experiment, customer=c) for c in customers]

    held = {c.pk for c in customers if spec.in_holdout(c.external_id, percent=10, seed=holdout.seed)}
    assigned = set(assignments_queryset(experiment=experiment).values_list("customer_id", flat=True))
    assert 0.05 * n < len(held) < 0.15 * n
    assert assigned.isdisjoint(held)
    assert assigned | held == {c.pk for c in customers}
    assert set(HoldoutMember.objects.filter(experiment=experiment).values_list("customer_id", flat=True)) == held
    if path == "bulk":
        assert result.excluded["holdout"] == len(held) and result.assigned == n - len(held)
    else:
        assert sum(d.reason == "holdout" for d in decisions) == len(held)
        # Sticky: asking again answers holdout without a second row.
        again = services.assignment_get_or_create(
            experiment=experiment, customer=next(c for c in customers if c.pk in held)
        )
        assert again.reason == "holdout" and again.assignment_id is None
        assert HoldoutMember.objects.filter(experiment=experiment).count() == len(held)


# --- A whole audience -----------------------------------------------------------------------


def test_audience_assign__rerun__idempotent_and_counts_add_up(make_experiment, make_customers, rfm) -> None:
    experiment = make_experiment("bulk", weights=("0.2", "0.3", "0.5"), coverage="0.8")
    customers = make_customers(2000)
    place(customers[:500], Layer.objects.get(dimension=rfm, key="important_value"))
    place(customers[500:900], Layer.objects.get(dimension=rfm, key="general_value"))

    first = services.audience_assign(experiment=experiment, batch_size=333)
    second = services.audience_assign(experiment=experiment, batch_size=333)

    stored = _stored(experiment)
    assert first.assigned == len(stored) == sum(first.per_variant.values())
    assert first.assigned + first.excluded["outside_coverage"] == 2000
    assert first.per_variant == dict(Counter(stored.values()))
    assert second.assigned == 0 and second.already_assigned == first.assigned
    assert second.excluded["outside_coverage"] == first.excluded["outside_coverage"]
    keys = ["control", "treatment1", "treatment2"]
    assert stored == {
        c.external_id: v
        for c in customers
        if (v := _expected(c.external_id, seed="bulk", weights=[0.2, 0.3, 0.5], coverage=0.8, keys=keys))
    }
    snapshots = Counter(
        tuple(sorted(a.segment_snapshot.items()))
        for a in assignments_queryset(experiment=experiment).select_related("snapshot")
    )
    assert set(snapshots) == {(("rfm", "important_value"),), (("rfm", "general_value"),), ()}
    important = sum(1 for c in customers[:500] if c.external_id in stored)
    assert snapshots[(("rfm", "important_value"),)] == important


def test_audience_assign__customers_queryset__intersected_with_targeting(make_experiment, make_customers, rfm) -> None:
    layer = Layer.objects.get(dimension=rfm, key="important_value")
    customers = make_customers(100)
    place(customers[:30], layer)
    experiment = make_experiment("intersect", include_layer_ids=(layer.pk,))
    given = customers[:10] + customers[50:60]

    result = services.audience_assign(
        experiment=experiment, customers=type(customers[0]).objects.filter(pk__in=[c.pk for c in given])
    )

    assert result.assigned == 10
    assert result.excluded["not_targeted"] == 10
    assert set(assignments_queryset(experiment=experiment).values_list("customer_id", flat=True)) == {
        c.pk for c in customers[:10]
    }


def test_audience_assign__single_call_after_bulk__same_row(make_experiment, make_customers) -> None:
    experiment = make_experiment("mixed")
    customers = make_customers(50)
    services.audience_assign(experiment=experiment)
    stored = _stored(experiment)

    decisions = [services.assignment_get_or_create(experiment=experiment, customer=c, expose=True) for c in customers]

    assert {c.external_id: d.variant_key for c, d in zip(customers, decisions, strict=True)} == stored
    assert Assignment.objects.count() == 50
    assert set(Assignment.objects.values_list("exposure_count", flat=True)) == {1}


def test_audience_assign__paused__nothing_written(make_experiment, make_customers) -> None:
    experiment = make_experiment("paused-bulk")
    services.experiment_pause(experiment=experiment)
    make_customers(20)

    result = services.audience_assign(experiment=experiment)

    assert result.assigned == 0 and result.excluded["not_running"] == 20
    assert not Assignment.objects.exists()


def test_bulk_insert__customer_assigned_concurrently__copy_falls_back_without_duplicates(
    make_experiment, make_customers
) -> None:
    import numpy as np
    from django.db import transaction
    from django.utils import timezone

    from experiments.selectors import experiment_config_get
    from experiments.services.assigning import _A, _bulk_insert

    experiment = make_experiment("fallback")
    customers = make_customers(3)
    raced = services.assignment_get_or_create(experiment=experiment, customer=customers[1])  # "the API won"
    config = experiment_config_get(experiment_id=experiment.pk)
    variant = config.variants[0].id
    snapshot = Assignment.objects.get(pk=raced.assignment_id).snapshot_id

    with transaction.atomic():
        written = _bulk_insert(
            table=_A,
            columns=("customer_id", "variant_id", "snapshot_id"),
            arrays=tuple(
                np.array(v, dtype=np.int64) for v in ([c.pk for c in customers], [variant] * 3, [snapshot] * 3)
            ),
            constants={
                "experiment_id": config.id,
                "phase_id": config.phase_id,
                "assigned_at": timezone.now(),
                "exposure_count": 0,
                "conflicting_exposure": False,
            },
            returning="customer_id",
        )

    assert sorted(written) == sorted([customers[0].pk, customers[2].pk])
    assert Assignment.objects.filter(experiment=experiment).count() == 3
    assert Assignment.objects.get(customer=customers[1]).pk == raced.assignment_id


@pytest.mark.postgres
@pytest.mark.parametrize("exposed_at", [None, "set"], ids=["text-copy-for-null", "binary-copy"])
def test_copy_rows__postgresql__stores_every_value_exactly(exposed_at, make_experiment, make_customers) -> None:
    import datetime as dt

    import numpy as np

    from experiments.selectors import experiment_config_get
    from experiments.services.assigning import _A, _copy_rows

    experiment = make_experiment("copy-values", weights=("0.5", "0.5"))
    customers = make_customers(3)
    config = experiment_config_get(experiment_id=experiment.pk)
    at = dt.datetime(2026, 3, 29, 1, 59, 58, 123457, tzinfo=dt.UTC)  # microseconds, around a DST change
    seen = at + dt.timedelta(days=400) if exposed_at else None
    variants = [v.id for v in config.variants]
    constants = {
        "experiment_id": config.id,
        "phase_id": config.phase_id,
        "assigned_at": at,
        "exposure_count": 7,
        "conflicting_exposure": True,
    }
    if seen is not None:
        constants["first_exposed_at"] = seen  # with a None constant the text format is used
    constants["last_exposed_at"] = seen

    _copy_rows(
        table=_A,
        columns=("customer_id", "variant_id", "snapshot_id"),
        arrays=(
            np.array([c.pk for c in customers], dtype=np.int64),
            np.array([variants[0], variants[1], variants[0]], dtype=np.int64),
            np.array([0, 2**40, 5], dtype=np.int64),  # db_constraint=False: any bigint
        ),
        constants=constants,
    )

    rows = Assignment.objects.filter(experiment=experiment).order_by("customer_id")
    assert [
        (
            r.customer_id,
            r.variant_id,
            r.snapshot_id,
            r.phase_id,
            r.assigned_at,
            r.first_exposed_at,
            r.last_exposed_at,
            r.exposure_count,
            r.conflicting_exposure,
        )
        for r in rows
    ] == [
        (customers[0].pk, variants[0], 0, config.phase_id, at, seen, seen, 7, True),
        (customers[1].pk, variants[1], 2**40, config.phase_id, at, seen, seen, 7, True),
        (customers[2].pk, variants[0], 5, config.phase_id, at, seen, seen, 7, True),
    ]
