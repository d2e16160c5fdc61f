"""Layer flows and lifecycle counts: hand-worked cases."""

from __future__ import annotations

import datetime as dt

import pytest
import time_machine

from segments.analytics.errors import AnalyticsInputError
from segments.analytics.flows import layer_flows, lifecycle_counts
from segments.models import Dimension, Layer, LayerHistory
from tests.factories import CustomerFactory, EventFactory, event_type

pytestmark = pytest.mark.django_db

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_layer_flows__moves_per_week__from_the_previous_history_row() -> None:
    rfm = Dimension.objects.get(key="rfm")
    layer = {lay.key: lay for lay in Layer.objects.filter(dimension=rfm)}
    path_x = [
        ("important_value", "2026-01-05T02:30:00"),
        ("important_retention", "2026-01-12T02:30:00"),
        ("general_win_back", "2026-01-20T02:30:00"),
    ]
    path_y = [("important_value", "2026-01-05T02:30:00"), ("important_retention", "2026-01-13T02:30:00")]
    for path in (path_x, path_y):
        customer = CustomerFactory()
        for i, (key, when) in enumerate(path):
            left = at(path[i + 1][1]) if i + 1 < len(path) else None
            LayerHistory.objects.create(
                customer=customer, dimension=rfm, layer=layer[key], entered_at=at(when), left_at=left
            )
    flows = layer_flows(dimension="rfm", grain="week", start=dt.date(2026, 1, 12), end=dt.date(2026, 1, 25))
    assert [(m.period, m.from_layer, m.to_layer, m.customers) for m in flows.moves] == [
        (dt.date(2026, 1, 12), "important_value", "important_retention", 2),
        (dt.date(2026, 1, 19), "important_retention", "general_win_back", 1),
    ]
    first_week = layer_flows(dimension="rfm", grain="week", start=dt.date(2026, 1, 5), end=dt.date(2026, 1, 11))
    assert [(m.from_layer, m.to_layer, m.customers) for m in first_week.moves] == [("", "important_value", 2)]


def test_lifecycle_counts__daily__new_returning_resurrecting_dormant_in_local_days() -> None:
    # A (Tokyo) is active on local Jan 1, 2 and 4 (the Jan 4 event is Jan 3 16:00 UTC); B on Jan 2.
    a = CustomerFactory(timezone="Asia/Tokyo")
    for when in ("2026-01-01T03:00:00", "2026-01-02T03:00:00", "2026-01-02T04:00:00", "2026-01-03T16:00:00"):
        EventFactory(customer=a, event_type=event_type("login"), occurred_at=at(when))
    b = CustomerFactory()
    EventFactory(customer=b, event_type=event_type("visit"), occurred_at=at("2026-01-02T12:00:00"))
    counts = lifecycle_counts(grain="day", start=dt.date(2026, 1, 1), end=dt.date(2026, 1, 5))
    assert [(p.period.day, p.new, p.returning, p.resurrecting, p.dormant) for p in counts.periods] == [
        (1, 1, 0, 0, 0),
        (2, 1, 1, 0, 0),
        (3, 0, 0, 0, 2),
        (4, 0, 0, 1, 0),
        (5, 0, 0, 0, 1),
    ]
    only_visits = lifecycle_counts(grain="day", start=dt.date(2026, 1, 1), end=dt.date(2026, 1, 2), events=("visit",))
    assert [(p.new, p.returning) for p in only_visits.periods] == [(0, 0), (1, 0)]


def test_lifecycle_counts__period_not_over_in_every_zone__marked_not_complete() -> None:
    # Given a customer active in January and not (yet) in February
    EventFactory(customer=CustomerFactory(), event_type=event_type("login"), occurred_at=at("2026-01-10T10:00:00"))

    # When the months are counted on Feb 10, then on Mar 1 11:59 UTC (Feb 28 still runs at
    # UTC-12) and at 12:00 UTC (February is over everywhere)
    def complete(now: str) -> list[tuple[int, int, bool]]:
        with time_machine.travel(at(now), tick=False):
            counts = lifecycle_counts(grain="month", start=dt.date(2026, 1, 1), end=dt.date(2026, 2, 1))
        return [(p.period.month, p.dormant, p.complete) for p in counts.periods]

    # Then February's dormant customer is flagged as "not back yet" until February is over
    assert complete("2026-02-10T00:00:00") == [(1, 0, True), (2, 1, False)]
    assert complete("2026-03-01T11:59:00") == [(1, 0, True), (2, 1, False)]
    assert complete("2026-03-01T12:00:00") == [(1, 0, True), (2, 1, True)]


def test_flows__bad_input__error_names_the_field() -> None:
    with pytest.raises(AnalyticsInputError) as info:
        layer_flows(dimension="nope")
    assert info.value.field == "dimension"
    with pytest.raises(AnalyticsInputError) as info:
        lifecycle_counts(grain="year")  # type: ignore[arg-type]
    assert info.value.field == "grain"
