"""Step funnels: hand-worked cases (order, windows, ties, repeated events, filters, breakdowns)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from segments.analytics.errors import AnalyticsInputError
from segments.analytics.funnels import PRESETS, FunnelSpec, FunnelStep, funnel
from segments.models import Dimension, Layer, LayerHistory
from tests.factories import CustomerFactory, EventFactory, event_type

pytestmark = pytest.mark.django_db

UTC = dt.UTC
DAY = 86400


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def ev(customer, code: str, when: str, **properties: Any):  # type: ignore[no-untyped-def]
    extra = {"amount": Decimal("10.00"), "currency": "EUR"} if code == "order" else {}
    return EventFactory(
        customer=customer, event_type=event_type(code), occurred_at=at(when), properties=properties, **extra
    )


def spec(*codes: str, **kw: Any) -> FunnelSpec:
    base: dict[str, Any] = dict(
        steps=tuple(FunnelStep(c) for c in codes),
        window_seconds=DAY,
        start=at("2026-01-01T00:00:00"),
        end=at("2026-02-01T00:00:00"),
    )
    return FunnelSpec(**{**base, **kw})


def reached(result) -> list[int]:  # type: ignore[no-untyped-def]
    return [s.reached for s in result.steps]


@pytest.fixture
def three_customers() -> None:
    a = CustomerFactory()
    ev(a, "visit", "2026-01-10T10:00:00")
    ev(a, "add_to_cart", "2026-01-10T10:05:00")
    ev(a, "order", "2026-01-10T10:20:00")
    b = CustomerFactory()  # ordered before adding to cart
    ev(b, "visit", "2026-01-10T11:00:00")
    ev(b, "order", "2026-01-10T11:10:00")
    ev(b, "add_to_cart", "2026-01-10T11:20:00")
    c = CustomerFactory()  # cart one minute past the 24 h window
    ev(c, "visit", "2026-01-10T12:00:00")
    ev(c, "add_to_cart", "2026-01-11T12:01:00")
    d = CustomerFactory()  # never did step 1
    ev(d, "add_to_cart", "2026-01-10T12:00:00")


def test_funnel__strict_order__later_steps_must_follow_and_medians_are_per_step(three_customers: None) -> None:
    result = funnel(spec=spec("visit", "add_to_cart", "order"))
    assert reached(result) == [3, 2, 1]
    assert [s.conversion_from_previous for s in result.steps] == [1.0, 2 / 3, 1 / 2]
    assert [s.conversion_overall for s in result.steps] == [1.0, 2 / 3, 1 / 3]
    # step 2: A 300 s, B 1,200 s -> median 750 s; step 3: A 900 s
    assert [s.median_seconds_from_previous for s in result.steps] == [None, 750.0, 900.0]


def test_funnel__any_order__all_steps_inside_the_window_count(three_customers: None) -> None:
    result = funnel(spec=spec("visit", "add_to_cart", "order", order="any"))
    assert reached(result) == [3, 2, 2]
    assert all(s.median_seconds_from_previous is None for s in result.steps)


def test_funnel__window_edge__exactly_the_window_converts_one_millisecond_more_does_not() -> None:
    inside = CustomerFactory()
    ev(inside, "visit", "2026-01-10T10:00:00")
    ev(inside, "order", "2026-01-11T10:00:00")
    outside = CustomerFactory()
    ev(outside, "visit", "2026-01-10T10:00:00")
    ev(outside, "order", "2026-01-11T10:00:00.001")
    assert reached(funnel(spec=spec("visit", "order"))) == [2, 1]


def test_funnel__tie__same_instant_is_not_one_after_the_other_in_strict_order() -> None:
    c = CustomerFactory()
    ev(c, "visit", "2026-01-10T10:00:00")
    ev(c, "add_to_cart", "2026-01-10T10:00:00")
    assert reached(funnel(spec=spec("visit", "add_to_cart"))) == [1, 0]
    assert reached(funnel(spec=spec("visit", "add_to_cart", order="any"))) == [1, 1]


def test_funnel__repeated_events__one_customer_counts_once_with_the_attempt_that_went_furthest() -> None:
    c = CustomerFactory()
    ev(c, "visit", "2026-01-05T10:00:00")  # first attempt: nothing follows within a day
    ev(c, "visit", "2026-01-09T10:00:00")
    ev(c, "add_to_cart", "2026-01-09T10:30:00")
    result = funnel(spec=spec("visit", "add_to_cart"))
    assert reached(result) == [1, 1]
    assert result.steps[1].median_seconds_from_previous == 1800.0


def test_funnel__same_event_type_twice__needs_two_distinct_events() -> None:
    once = CustomerFactory()
    ev(once, "order", "2026-01-10T10:00:00")
    twice = CustomerFactory()
    ev(twice, "order", "2026-01-10T10:00:00")
    ev(twice, "order", "2026-01-10T18:00:00")
    assert reached(funnel(spec=spec("order", "order"))) == [2, 1]


def test_funnel__property_filter__only_matching_events_complete_the_step() -> None:
    home = CustomerFactory()
    ev(home, "visit", "2026-01-10T10:00:00", page="home")
    ev(home, "visit", "2026-01-10T10:01:00", page="home")
    product = CustomerFactory()
    ev(product, "visit", "2026-01-10T10:00:00", page="home")
    ev(product, "visit", "2026-01-10T10:01:00", page="product", first=True)
    steps = (FunnelStep("visit"), FunnelStep("visit", {"page": "product"}))
    assert reached(funnel(spec=spec(steps=steps))) == [2, 1]
    steps_bool = (FunnelStep("visit"), FunnelStep("visit", {"first": True}))
    assert reached(funnel(spec=spec(steps=steps_bool))) == [2, 1]


def test_funnel__entries_outside_the_range__not_counted() -> None:
    c = CustomerFactory()
    ev(c, "visit", "2025-12-31T23:59:59")
    ev(c, "add_to_cart", "2026-01-01T00:10:00")
    result = funnel(spec=spec("visit", "add_to_cart"))
    assert reached(result) == [0, 0]
    assert result.steps[0].conversion_overall is None and result.steps[0].reason


def test_funnel__breakdown_by_attribute_and_by_layer_at_entry__groups_split_the_counts() -> None:
    rfm = Dimension.objects.get(key="rfm")
    value = Layer.objects.get(dimension=rfm, key="important_value")
    winback = Layer.objects.get(dimension=rfm, key="general_win_back")
    a = CustomerFactory(attributes={"channel": "social"})
    ev(a, "visit", "2026-01-10T10:00:00")
    ev(a, "order", "2026-01-10T11:00:00")
    LayerHistory.objects.create(
        customer=a, dimension=rfm, layer=value, entered_at=at("2026-01-01T00:00:00"), left_at=at("2026-01-20T00:00:00")
    )
    LayerHistory.objects.create(customer=a, dimension=rfm, layer=winback, entered_at=at("2026-01-20T00:00:00"))
    b = CustomerFactory(attributes={"channel": "organic"})
    ev(b, "visit", "2026-01-10T10:00:00")
    by_channel = funnel(spec=spec("visit", "order", breakdown="attribute:channel"))
    assert {g.group: reached(g) for g in by_channel.groups} == {"organic": [1, 0], "social": [1, 1]}
    assert reached(by_channel) == [2, 1]
    by_tier = funnel(spec=spec("visit", "order", breakdown="layer:rfm"))
    assert {g.group: reached(g) for g in by_tier.groups} == {"important_value": [1, 1], "": [1, 0]}


def test_funnel__presets__five_steps_and_aarrr_run() -> None:
    c = CustomerFactory()
    ev(c, "login", "2026-01-10T10:00:00")
    ev(c, "visit", "2026-01-10T10:01:00", page="home")
    ev(c, "visit", "2026-01-10T10:02:00", page="product")
    ev(c, "add_to_cart", "2026-01-10T10:03:00")
    ev(c, "order", "2026-01-10T10:04:00")
    five = PRESETS["five_step"]
    result = funnel(
        spec=FunnelSpec(**{**five.__dict__, "start": at("2026-01-01T00:00:00"), "end": at("2026-02-01T00:00:00")})
    )
    assert reached(result) == [1, 1, 1, 1, 1]
    assert [s.label for s in result.steps] == ["Channel", "Scene", "Product", "Decision", "Done"]
    assert [s.label for s in PRESETS["aarrr"].steps] == [
        "Acquisition",
        "Activation",
        "Retention",
        "Revenue",
        "Referral",
    ]


def test_funnel__aarrr_preset__referral_step_counts_the_inviter_not_the_invited_friend() -> None:
    # Given: four sign-ups that each went acquisition -> activation -> retention -> revenue
    inviter = CustomerFactory()  # invites a friend after ordering, on day 3
    friend = CustomerFactory()  # signed up through a referral (recorded on the friend), then bought
    early = CustomerFactory()  # invited before ordering: the referral step must follow revenue
    late = CustomerFactory()  # invited 31 days after sign-up: outside the 30-day window
    for c, day in ((inviter, 10), (friend, 11), (early, 12), (late, 13)):
        ev(c, "signup", f"2026-01-{day}T08:00:00")
        if c is friend:
            ev(c, "referral_signup", f"2026-01-{day}T08:00:05")
        ev(c, "add_to_cart", f"2026-01-{day}T09:00:00")
        ev(c, "login", f"2026-01-{day + 1}T09:00:00")
        if c is early:
            ev(c, "referral_invite_sent", f"2026-01-{day + 1}T09:30:00")
        ev(c, "order", f"2026-01-{day + 2}T09:00:00")
    ev(inviter, "referral_invite_sent", "2026-01-13T10:00:00")
    ev(late, "referral_invite_sent", "2026-02-13T08:00:01")  # sign-up + 31 days

    # When: the AARRR preset runs over January's sign-ups
    aarrr = PRESETS["aarrr"]
    result = funnel(
        spec=FunnelSpec(**{**aarrr.__dict__, "start": at("2026-01-01T00:00:00"), "end": at("2026-02-01T00:00:00")})
    )

    # Then: four reach revenue, and only the inviter reaches referral: 1 of 4, 25%, 25 hours
    # after their order (2026-01-12T09:00 -> 2026-01-13T10:00 = 25 h = 90,000 s)
    assert reached(result) == [4, 4, 4, 4, 1]
    referral = result.steps[-1]
    assert referral.event == "referral_invite_sent" and referral.label == "Referral"
    assert referral.conversion_from_previous == 0.25 and referral.conversion_overall == 0.25
    assert referral.median_seconds_from_previous == 90000


def test_funnel__bad_input__error_names_the_field() -> None:
    with pytest.raises(AnalyticsInputError) as info:
        funnel(spec=spec("visit", "nope"))
    assert info.value.field == "steps.1.event"
    with pytest.raises(AnalyticsInputError) as info:
        funnel(spec=spec("visit", breakdown="layer:nope"))
    assert info.value.field == "breakdown"
    with pytest.raises(AnalyticsInputError) as info:
        funnel(spec=spec(steps=(FunnelStep("visit", {"a.b": 1}),)))
    assert info.value.field == "steps.0.where"


def test_funnel__nobody_entered__counts_zero_rates_null_with_reason_never_nan() -> None:
    # Given events of the later steps only (nobody did step 1 in the range)
    ev(CustomerFactory(), "add_to_cart", "2026-01-10T10:00:00")
    result = funnel(spec=spec("visit", "add_to_cart"))
    assert reached(result) == [0, 0]
    assert [(s.conversion_from_previous, s.conversion_overall) for s in result.steps] == [(None, None), (None, None)]
    assert all(s.reason == "nobody entered the funnel" for s in result.steps)


@pytest.mark.postgres
def test_funnel_sql__strict_on_postgresql__no_per_step_copies_of_the_attempts() -> None:
    # Given the five-step preset by tier
    from django.db import connection

    from segments.analytics.funnels import _resolve, funnel_sql

    spec = FunnelSpec(steps=PRESETS["five_step"].steps, window_seconds=3 * 86400, breakdown="layer:rfm")
    statement, params = funnel_sql(_resolve(spec), "postgresql")
    # When
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN " + statement, params)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    # Then: no materialized CTE re-read per step (at 1M customers each copy of the 3M
    # attempts cost seconds); the steps are index probes joined laterally. The one
    # materialized set is ``tried`` (one row per customer: the attempt counted), read again
    # by the layer join.
    scanned = {line.split("CTE Scan on ", 1)[1].split()[0] for line in plan.splitlines() if "CTE Scan on " in line}
    assert scanned <= {"tried"}
