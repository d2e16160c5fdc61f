"""Exposure validity: exposure times stay inside the experiment (client times checked,
platform times clamped), and conversions stay inside the current window."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from experiments import services
from experiments.models import Assignment, Conversion, Metric, Phase
from segments.models import Event
from tests.factories import OrderFactory

pytestmark = pytest.mark.django_db

H = dt.timedelta(hours=1)
URL = "/api/v1/exposures"


@pytest.fixture
def writer(api_client_factory):  # type: ignore[no-untyped-def]
    return api_client_factory("events:write")


def _assigned(make_experiment, make_customers, *, phase_start: dt.datetime, assigned_at: dt.datetime):  # type: ignore[no-untyped-def]
    experiment = make_experiment(
        "validity", metrics=[services.MetricSpec(event_type_code="order", role="primary", window_hours=48)]
    )
    (customer,) = make_customers(1)
    decision = services.assignment_get_or_create(experiment=experiment, customer=customer)
    Phase.objects.filter(experiment=experiment).update(started_at=phase_start)
    Assignment.objects.filter(pk=decision.assignment_id).update(assigned_at=assigned_at)
    return experiment, customer, decision


def _post(writer, customer, decision, occurred_at: dt.datetime):  # type: ignore[no-untyped-def]
    return writer.post(
        URL,
        {
            "customer_id": customer.external_id,
            "experiment": "validity",
            "variant": decision.variant_key,
            "occurred_at": occurred_at.isoformat(),
        },
        format="json",
    )


def _row(decision) -> Assignment:  # type: ignore[no-untyped-def]
    return Assignment.objects.get(pk=decision.assignment_id)


# --- Client exposures (POST /exposures) ------------------------------------------------------


def test_post_exposure__before_assignment__400_names_occurred_at(writer, make_experiment, make_customers) -> None:
    now = timezone.now()
    _, customer, decision = _assigned(make_experiment, make_customers, phase_start=now - 48 * H, assigned_at=now - H)

    response = _post(writer, customer, decision, now - 3 * H)  # after the phase start, before the assignment

    assert response.status_code == 400
    body = response.json()
    assert set(body["errors"]) == {"occurred_at"} and "detail" in body
    assert "before the customer was assigned" in body["errors"]["occurred_at"][0]
    assert (_row(decision).first_exposed_at, _row(decision).exposure_count) == (None, 0)


def test_post_exposure__before_phase_start__400_names_occurred_at(writer, make_experiment, make_customers) -> None:
    now = timezone.now()
    _, customer, decision = _assigned(make_experiment, make_customers, phase_start=now - H, assigned_at=now - H)

    response = _post(writer, customer, decision, now - 30 * 24 * H)  # a pre-experiment order's time

    assert response.status_code == 400
    assert "before the experiment's current phase started" in response.json()["errors"]["occurred_at"][0]
    assert _row(decision).first_exposed_at is None


def test_post_exposure__future_beyond_skew__400_names_occurred_at(writer, make_experiment, make_customers) -> None:
    now = timezone.now()
    _, customer, decision = _assigned(make_experiment, make_customers, phase_start=now - H, assigned_at=now - H)

    response = _post(writer, customer, decision, now + dt.timedelta(minutes=6))  # skew: 5 minutes

    assert response.status_code == 400
    assert "in the future" in response.json()["errors"]["occurred_at"][0]
    assert _row(decision).first_exposed_at is None


def test_post_exposure__within_skew__accepted_and_clamped_to_assignment_and_now(
    writer, make_experiment, make_customers
) -> None:
    now = timezone.now()
    assigned_at = now - H
    _, customer, decision = _assigned(make_experiment, make_customers, phase_start=now - 2 * H, assigned_at=assigned_at)

    early = _post(writer, customer, decision, assigned_at - dt.timedelta(minutes=4))  # client clock behind
    late = _post(writer, customer, decision, timezone.now() + dt.timedelta(minutes=4))  # client clock ahead

    assert (early.status_code, late.status_code) == (200, 200)
    row = _row(decision)
    assert row.first_exposed_at == assigned_at
    assert row.last_exposed_at <= timezone.now() and row.exposure_count == 2


def test_post_exposure__skew_setting__governs_the_tolerance(writer, make_experiment, make_customers, settings) -> None:
    settings.GROWTH = {**settings.GROWTH, "EXPOSURE_CLOCK_SKEW_SECONDS": 3600}
    now = timezone.now()
    _, customer, decision = _assigned(make_experiment, make_customers, phase_start=now - H, assigned_at=now - H)

    within = _post(writer, customer, decision, now + dt.timedelta(minutes=30))
    beyond = _post(writer, customer, decision, now + dt.timedelta(minutes=70))

    assert (within.status_code, beyond.status_code) == (200, 400)
    assert "3600 s" in beyond.json()["errors"]["occurred_at"][0]


# --- Exposures the platform records itself -------------------------------------------------


def test_exposure_record__server_time_before_assignment__clamped_to_assignment(make_experiment, make_customers) -> None:
    now = timezone.now()
    _, _, decision = _assigned(make_experiment, make_customers, phase_start=now - 2 * H, assigned_at=now - H)

    services.exposure_record(assignment_id=decision.assignment_id, at=now - 10 * H)

    assert _row(decision).first_exposed_at == now - H


def test_exposures_record__batch_time_before_assignment__clamped_per_assignment(
    make_experiment, make_customers
) -> None:
    now = timezone.now()
    _, _, decision = _assigned(make_experiment, make_customers, phase_start=now - 2 * H, assigned_at=now - H)

    services.exposures_record(assignment_ids=[decision.assignment_id], at=now - 10 * H)

    row = _row(decision)
    assert (row.first_exposed_at, row.last_exposed_at) == (now - H, now - H)


def test_post_exposure__pre_experiment_order__never_a_conversion(writer, make_experiment, make_customers) -> None:
    """The measured bug: an exposure dated before the assignment let an order placed
    before the experiment count as a conversion."""
    now = timezone.now()
    experiment, customer, decision = _assigned(
        make_experiment, make_customers, phase_start=now - 2 * H, assigned_at=now - H
    )
    OrderFactory(customer=customer, occurred_at=now - 5 * H)

    _post(writer, customer, decision, now - 6 * H)
    services.conversions_refresh(experiment=experiment, full=True)

    assert not Conversion.objects.filter(assignment_id=decision.assignment_id).exists()


# --- Conversions stay inside the current window ---------------------------------------------


def _order_metric(experiment) -> Metric:  # type: ignore[no-untyped-def]
    return Metric.objects.get(experiment=experiment, event_type__code="order")


def _converted(decision) -> list[dt.datetime]:  # type: ignore[no-untyped-def]
    return list(Conversion.objects.filter(assignment_id=decision.assignment_id).values_list("converted_at", flat=True))


def test_conversions_refresh_full__first_exposure_moved_earlier__conversion_outside_window_removed(
    make_experiment, make_customers
) -> None:
    now = timezone.now()
    experiment, customer, decision = _assigned(
        make_experiment, make_customers, phase_start=now - 200 * H, assigned_at=now - 200 * H
    )
    services.exposure_record(assignment_id=decision.assignment_id, at=now - 100 * H)
    OrderFactory(customer=customer, occurred_at=now - 90 * H)
    services.conversions_refresh(experiment=experiment, full=True)
    assert _converted(decision) == [now - 90 * H]
    # The first exposure moves earlier behind the services' back (a backfill, a repair):
    # the window is now [-150 h, -102 h) and the order at -90 h falls outside it.
    Assignment.objects.filter(pk=decision.assignment_id).update(first_exposed_at=now - 150 * H)

    written = services.conversions_refresh(experiment=experiment, full=True)

    assert _converted(decision) == []
    assert written[_order_metric(experiment).pk] == 1


def test_conversions_refresh_full__window_shortened__conversion_outside_removed(
    make_experiment, make_customers
) -> None:
    now = timezone.now()
    experiment, customer, decision = _assigned(
        make_experiment, make_customers, phase_start=now - 200 * H, assigned_at=now - 200 * H
    )
    services.exposure_record(assignment_id=decision.assignment_id, at=now - 100 * H)
    OrderFactory(customer=customer, occurred_at=now - 70 * H)  # 30 h after exposure
    services.conversions_refresh(experiment=experiment, full=True)
    assert _converted(decision) == [now - 70 * H]
    Metric.objects.filter(pk=_order_metric(experiment).pk).update(window_hours=24)

    services.conversions_refresh(experiment=experiment, full=True)

    assert _converted(decision) == []


def test_exposure_record__moves_first_exposure_earlier__conversion_outside_window_gone_before_any_refresh(
    make_experiment, make_customers
) -> None:
    now = timezone.now()
    experiment, customer, decision = _assigned(
        make_experiment, make_customers, phase_start=now - 200 * H, assigned_at=now - 200 * H
    )
    services.exposure_record(assignment_id=decision.assignment_id, at=now - 100 * H)
    OrderFactory(customer=customer, occurred_at=now - 90 * H)
    services.conversions_refresh(experiment=experiment, full=True)

    # A delayed exposure from earlier arrives: window [-150 h, -102 h).
    services.exposure_record(assignment_id=decision.assignment_id, at=now - 150 * H)
    services.conversions_refresh(experiment=experiment)  # incremental

    assert _row(decision).first_exposed_at == now - 150 * H
    assert _converted(decision) == []


def test_exposures_record__moves_first_exposure_earlier__earlier_event_becomes_the_conversion(
    make_experiment, make_customers
) -> None:
    now = timezone.now()
    experiment, customer, decision = _assigned(
        make_experiment, make_customers, phase_start=now - 200 * H, assigned_at=now - 200 * H
    )
    OrderFactory(customer=customer, occurred_at=now - 120 * H)  # before the first exposure, for now
    OrderFactory(customer=customer, occurred_at=now - 90 * H)
    # Received long ago: the incremental refresh has no new event of this customer to look at.
    Event.objects.filter(customer=customer).update(received_at=now - 80 * H)
    services.exposure_record(assignment_id=decision.assignment_id, at=now - 100 * H)
    services.conversions_refresh(experiment=experiment, full=True)
    assert _converted(decision) == [now - 90 * H]

    services.exposures_record(assignment_ids=[decision.assignment_id], at=now - 130 * H)  # window [-130 h, -82 h)
    services.conversions_refresh(experiment=experiment)  # incremental: no new event, no new last exposure

    assert _converted(decision) == [now - 120 * H]
    # The conversion's copy of its window start follows (the report's open-window filter reads it).
    assert Conversion.objects.get(assignment_id=decision.assignment_id).first_exposed_at == now - 130 * H
