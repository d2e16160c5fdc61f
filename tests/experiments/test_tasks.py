"""Celery entry points: idempotent, missing-row guarded, and run by a real worker."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from experiments import services, tasks
from experiments.models import Assignment, Conversion
from tests.experiments.conftest import wait_until
from tests.factories import OrderFactory


@pytest.mark.django_db
def test_conversions_refresh_task__twice__second_run_writes_nothing(make_experiment, make_customers) -> None:
    experiment = make_experiment("task", metrics=[services.MetricSpec(event_type_code="order")])
    customer = make_customers(1)[0]
    decision = services.assignment_get_or_create(experiment=experiment, customer=customer, expose=True)
    OrderFactory(customer=customer, occurred_at=timezone.now() + dt.timedelta(minutes=1))

    first = tasks.experiment_conversions_refresh.apply(args=[experiment.pk, True]).get()
    second = tasks.experiment_conversions_refresh.apply(args=[experiment.pk, True]).get()

    assert sum(first.values()) == 1 and sum(second.values()) == 0
    assert list(Conversion.objects.values_list("assignment_id", flat=True)) == [decision.assignment_id]


@pytest.mark.django_db
def test_tasks__missing_experiment__return_none() -> None:
    assert tasks.experiment_conversions_refresh.apply(args=[10**9]).get() is None
    assert tasks.experiment_audience_assign.apply(args=[10**9]).get() is None


@pytest.mark.django_db
def test_conversions_refresh_due__active_and_recently_stopped__enqueued(eager, make_experiment) -> None:
    running = make_experiment("running")
    paused = make_experiment("paused")
    services.experiment_pause(experiment=paused)
    recent = make_experiment("recent", metrics=[services.MetricSpec(event_type_code="order", window_hours=24)])
    services.experiment_stop(experiment=recent)
    old = make_experiment("old", metrics=[services.MetricSpec(event_type_code="order", window_hours=24)])
    services.experiment_stop(experiment=old, at=timezone.now() - dt.timedelta(days=5))
    make_experiment("draft", start=False)

    ids = tasks.conversions_refresh_due.apply().get()

    assert sorted(ids) == sorted([running.pk, paused.pk, recent.pk])


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_audience_assign_task__real_worker__assigns_once(
    celery_worker_process, make_experiment, make_customers
) -> None:
    experiment = make_experiment("worker", coverage="0.5")
    make_customers(300)

    tasks.experiment_audience_assign.delay(experiment.pk)
    wait_until(lambda: Assignment.objects.filter(experiment=experiment).exists(), timeout=60, message="assignments")
    tasks.experiment_audience_assign.delay(experiment.pk)  # a redelivery: a no-op
    direct = services.audience_assign(experiment=experiment)

    assert direct.assigned == 0
    assert direct.already_assigned == Assignment.objects.filter(experiment=experiment).count() > 100
    assert direct.already_assigned + direct.excluded["outside_coverage"] == 300
