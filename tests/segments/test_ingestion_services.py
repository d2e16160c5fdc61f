"""The ingestion services and the record parsers they share with the API and importers."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from segments.importing import RecordError, parse_amount, parse_customer, parse_event, parse_timestamp
from segments.models import Customer, Event, Membership
from segments.services.ingestion import (
    CustomerInput,
    EventInput,
    MembershipInput,
    Outcome,
    customers_upsert,
    events_record,
    memberships_upsert,
    unknown_customer_rule,
)
from tests.factories import CustomerFactory, EventFactory, event_type

UTC = dt.UTC
T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
TYPES = {"visit": False, "order": True}


# --- Parsers (no database) ----------------------------------------------------------


@pytest.mark.pure
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-03-01T10:00:00+01:00", T0),
        ("2025-03-01T09:00:00Z", T0),
        ("2025-03-01T09:00:00.000000+00:00", T0),
        ("2025-03-01 04:00:00-05:00", T0),
    ],
)
def test_parse_timestamp__aware_iso8601__normalized_to_utc(text: str, expected: dt.datetime) -> None:
    parsed = parse_timestamp(text)
    assert parsed == expected and parsed.utcoffset() == dt.timedelta(0)


@pytest.mark.pure
@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("2025-03-01T10:00:00", "naive"),
        ("2025-03-01", "naive"),
        ("01/03/2025 10:00", "not a timestamp"),
        ("", "not a timestamp"),
        (1740819600, "Expected a string"),
        ("0001-01-01T00:00:00+01:00", "out of range"),
    ],
)
def test_parse_timestamp__naive_or_unparsable__refused_with_reason(value: object, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_timestamp(value)


@pytest.mark.pure
@pytest.mark.parametrize(
    ("value", "expected"),
    [("19.90", Decimal("19.90")), (19.9, Decimal("19.90")), (7, Decimal("7.00")), ("-3.5", Decimal("-3.50"))],
)
def test_parse_amount__numbers_and_strings__two_places(value: object, expected: Decimal) -> None:
    assert parse_amount(value) == expected


@pytest.mark.pure
@pytest.mark.parametrize("value", ["1.001", "NaN", "Infinity", "1e12", True, [1], "twelve", 10**12])
def test_parse_amount__invalid__refused(value: object) -> None:
    with pytest.raises(ValueError):
        parse_amount(value)


@pytest.mark.pure
def test_parse_event__every_bad_field_named_at_once() -> None:
    with pytest.raises(RecordError) as caught:
        parse_event(
            {"event_id": 5, "customer_id": "", "type": "order", "occurred_at": "2025-01-01T00:00:00", "currency": "e"},
            event_types=TYPES,
        )
    assert set(caught.value.errors) == {"event_id", "customer_id", "occurred_at", "amount", "currency"}


@pytest.mark.pure
def test_parse_event__csv_text__json_properties_decoded() -> None:
    parsed = parse_event(
        {"event_id": "e", "customer_id": "c", "type": "visit", "occurred_at": "2025-03-01T09:00:00Z",
         "properties": '{"page": "home"}'},
        event_types=TYPES,
        text=True,
    )  # fmt: skip
    assert parsed.properties == {"page": "home"} and parsed.occurred_at == T0


@pytest.mark.pure
@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"properties": {"x": "\ud800"}}, "properties"),
        ({"properties": {"x": float("nan")}}, "properties"),
        ({"customer_id": "a\x00"}, "customer_id"),
        ({"type": "Order"}, "type"),
    ],
)
def test_parse_event__text_postgres_cannot_store__refused(record: dict, field: str) -> None:
    base = {"event_id": "e", "customer_id": "c", "type": "visit", "occurred_at": "2025-03-01T09:00:00Z"}
    with pytest.raises(RecordError) as caught:
        parse_event({**base, **record}, event_types=TYPES)
    assert field in caught.value.errors


@pytest.mark.pure
def test_parse_customer__only_sent_fields__nulls_clear() -> None:
    parsed = parse_customer({"external_id": "c", "email": None, "sms_consent_at": None, "timezone": "Asia/Tokyo"})
    assert parsed.values == {"email": "", "sms_consent_at": None, "timezone": "Asia/Tokyo"}


@pytest.mark.pure
@pytest.mark.parametrize("phone", ["+33612345678", "+12025550143", ""])
def test_parse_customer__e164_or_blank_phone__accepted(phone: str) -> None:
    assert parse_customer({"external_id": "c", "phone": phone}).values["phone"] == phone


@pytest.mark.pure
@pytest.mark.parametrize("phone", ["0612345678", "+0612345678", "+33 6 12 34 56 78", "+1234567890123456"])
def test_parse_customer__non_e164_phone__refused(phone: str) -> None:
    with pytest.raises(RecordError, match=r"E\.164"):
        parse_customer({"external_id": "c", "phone": phone})


# --- Services -----------------------------------------------------------------------


def visit(event_id: str, customer_id: str = "c-1", **kwargs: object) -> EventInput:
    return EventInput(event_id=event_id, customer_id=customer_id, type="visit", occurred_at=T0, **kwargs)  # type: ignore[arg-type]


@pytest.mark.django_db
def test_customers_upsert__new_and_existing__created_updated_defaults_kept() -> None:
    CustomerFactory(external_id="c-1", timezone="Asia/Tokyo", locale="ja")
    result = customers_upsert(
        customers=[
            CustomerInput("c-1", {"locale": "ja-JP"}),
            CustomerInput("c-2", {"email": "b@example.com"}),
            CustomerInput("c-2", {"timezone": "Europe/Paris"}),
        ]
    )
    assert [i.outcome for i in result.items] == [Outcome.UPDATED, Outcome.CREATED, Outcome.UPDATED]
    c1, c2 = Customer.objects.order_by("external_id")
    assert (c1.timezone, c1.locale) == ("Asia/Tokyo", "ja-JP")
    assert (c2.email, c2.timezone, c2.locale) == ("b@example.com", "Europe/Paris", "en")


@pytest.mark.django_db
def test_customers_upsert__run_twice__same_state() -> None:
    batch = [CustomerInput(f"c-{i}", {"attributes": {"i": i}, "signed_up_at": T0}) for i in range(20)]
    customers_upsert(customers=batch)
    first = list(Customer.objects.order_by("id").values("external_id", "attributes", "signed_up_at"))
    customers_upsert(customers=batch)
    assert list(Customer.objects.order_by("id").values("external_id", "attributes", "signed_up_at")) == first


@pytest.mark.django_db
def test_events_record__duplicate_conflict_and_unknown__classified() -> None:
    customer = CustomerFactory(external_id="c-1")
    EventFactory(event_id="old", customer=customer, event_type=event_type("visit"), occurred_at=T0)
    result = events_record(
        events=[
            visit("new"),
            visit("old"),  # same body: duplicate
            visit("old", properties={"x": 1}),  # different body: conflict
            visit("lost", customer_id="ghost"),
        ],
        unknown_customers="reject",
    )
    assert [i.outcome for i in result.items] == [
        Outcome.CREATED,
        Outcome.DUPLICATE,
        Outcome.CONFLICT,
        Outcome.UNKNOWN_CUSTOMER,
    ]
    assert "properties" in result.items[2].message
    assert Event.objects.count() == 2


@pytest.mark.django_db
def test_events_record__money__stored_and_compared_at_two_places() -> None:
    CustomerFactory(external_id="c-1")
    order = EventInput("o-1", "c-1", "order", T0, {}, Decimal("10.5"), "EUR")
    assert events_record(events=[order]).items[0].outcome == Outcome.CREATED
    same = EventInput(
        "o-1", "c-1", "order", T0.astimezone(dt.timezone(dt.timedelta(hours=2))), {}, Decimal("10.50"), "EUR"
    )
    assert events_record(events=[same]).items[0].outcome == Outcome.DUPLICATE
    assert Event.objects.get().amount == Decimal("10.50")


@pytest.mark.django_db
def test_events_record__create_rule__bare_customer_created_once() -> None:
    result = events_record(events=[visit("a", "fresh"), visit("b", "fresh")], unknown_customers="create")
    assert [i.outcome for i in result.items] == [Outcome.CREATED, Outcome.CREATED]
    fresh = Customer.objects.get(external_id="fresh")
    assert (fresh.timezone, fresh.email) == ("UTC", "")


def test_unknown_customer_rule__bad_setting__improperly_configured(settings) -> None:  # type: ignore[no-untyped-def]
    from django.core.exceptions import ImproperlyConfigured

    settings.GROWTH = {**settings.GROWTH, "UNKNOWN_CUSTOMER_EVENTS": "ignore"}
    with pytest.raises(ImproperlyConfigured, match="reject, create"):
        unknown_customer_rule()


@pytest.mark.django_db
def test_memberships_upsert__same_term_updated_new_term_created() -> None:
    CustomerFactory(external_id="c-1")
    term = MembershipInput("c-1", "plus", T0, T0 + dt.timedelta(days=365), "silver")
    assert memberships_upsert(memberships=[term]).items[0].outcome == Outcome.CREATED
    extended = MembershipInput("c-1", "plus", T0, T0 + dt.timedelta(days=400), "gold")
    renewal = MembershipInput("c-1", "plus", T0 + dt.timedelta(days=365), T0 + dt.timedelta(days=730), "gold")
    result = memberships_upsert(memberships=[extended, renewal])
    assert [i.outcome for i in result.items] == [Outcome.UPDATED, Outcome.CREATED]
    assert list(Membership.objects.order_by("started_at").values_list("level", flat=True)) == ["gold", "gold"]
    assert Membership.objects.get(started_at=T0).expires_at == T0 + dt.timedelta(days=400)
