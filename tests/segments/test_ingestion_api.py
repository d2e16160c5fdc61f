"""The ingestion API: customers, events and memberships, one at a time and in batches."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from segments.models import Channel, Customer, Event, Membership
from tests.factories import CustomerFactory, EventFactory, MembershipFactory

pytestmark = pytest.mark.django_db

WHEN = "2025-03-01T10:00:00+01:00"


@pytest.fixture
def customers_client(api_client_factory) -> APIClient:  # type: ignore[no-untyped-def]
    return api_client_factory("customers:write")


@pytest.fixture
def events_client(api_client_factory) -> APIClient:  # type: ignore[no-untyped-def]
    return api_client_factory("events:write")


def assert_set_based(
    queries: CaptureQueriesContext, model: type, *, rows: int, other_statements: int, insert_kinds: int = 1
) -> None:
    """INSERTs as few as the backend's parameter limit allows (1 on PostgreSQL) per kind of
    insert (new customers, then updates of existing ones), plus a fixed number of other
    statements: nothing grows with the number of rows but the INSERT split."""
    fields = [f for f in model._meta.concrete_fields if not f.primary_key]
    per_insert = connection.ops.bulk_batch_size(fields, [None] * rows)
    # PostgreSQL's events go in as ``WITH … claimed AS (INSERT INTO segments_event_key …)
    # INSERT INTO segments_event …`` (the partitioned table's key claim, migration 0006).
    inserts = [q for q in queries if q["sql"].startswith("INSERT") or q["sql"].startswith("WITH r AS")]
    others = [q["sql"][:80] for q in queries if q not in inserts]
    assert len(inserts) <= insert_kinds * math.ceil(rows / per_insert)
    assert len(others) <= other_statements, others


def order(event_id: str = "e-1", customer_id: str = "c-1", **overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": event_id,
        "customer_id": customer_id,
        "type": "order",
        "occurred_at": WHEN,
        "amount": "19.90",
        "currency": "EUR",
        "properties": {"sku": "TP", "qty": 2},
    }
    body.update(overrides)
    return body


# --- Customers ----------------------------------------------------------------------


def test_customer_put__new__201_and_stored(customers_client: APIClient) -> None:
    response = customers_client.put(
        "/api/v1/customers/c-1",
        {"timezone": "Europe/Paris", "email": "a@example.com", "email_consent_at": WHEN, "phone": "+33612345678"},
        format="json",
    )
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["external_id"] == "c-1" and body["timezone"] == "Europe/Paris"
    stored = Customer.objects.get(external_id="c-1")
    assert stored.email == "a@example.com"
    assert stored.email_consent_at == dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
    assert stored.locale == "en"  # a default for a field that was not sent


def test_customer_put__existing__200_sent_fields_set_others_kept(customers_client: APIClient) -> None:
    CustomerFactory(external_id="c-1", email="old@example.com", timezone="Asia/Tokyo", attributes={"tier": "A"})
    response = customers_client.put("/api/v1/customers/c-1", {"email": "new@example.com"}, format="json")
    assert response.status_code == 200
    stored = Customer.objects.get(external_id="c-1")
    assert (stored.email, stored.timezone, stored.attributes) == ("new@example.com", "Asia/Tokyo", {"tier": "A"})


def test_customer_put__null_timestamp__clears_it(customers_client: APIClient) -> None:
    CustomerFactory(external_id="c-1")
    response = customers_client.put("/api/v1/customers/c-1", {"email_consent_at": None}, format="json")
    assert response.status_code == 200
    assert Customer.objects.get(external_id="c-1").email_consent_at is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"phone": "0612345678"}, "phone"),
        ({"phone": 33612345678}, "phone"),
        ({"email": "not-an-email"}, "email"),
        ({"signed_up_at": "2025-03-01T10:00:00"}, "signed_up_at"),
        ({"signed_up_at": "yesterday"}, "signed_up_at"),
        ({"attributes": ["a"]}, "attributes"),
        ({"locale": "english please"}, "locale"),
        ({"push_token": "x" * 256}, "push_token"),
        ({"external_id": "someone-else"}, "external_id"),
    ],
)
def test_customer_put__invalid_field__400_naming_it(customers_client: APIClient, body: dict, field: str) -> None:
    response = customers_client.put("/api/v1/customers/c-1", body, format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()
    assert not Customer.objects.exists()


def test_customer_put__malformed_json__400_with_detail(customers_client: APIClient) -> None:
    response = customers_client.put("/api/v1/customers/c-1", '{"email": ', content_type="application/json")
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_customer_put__no_key__401_and_wrong_scope__403(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    assert APIClient().put("/api/v1/customers/c-1", {}, format="json").status_code == 401
    response = api_client_factory("events:write").put("/api/v1/customers/c-1", {}, format="json")
    assert response.status_code == 403
    assert "customers:write" in response.json()["detail"]
    assert not Customer.objects.exists()


def test_customer_batch__mixed__207_valid_stored_bad_named_by_index(customers_client: APIClient) -> None:
    items = [
        {"external_id": "c-1", "timezone": "Europe/Paris"},
        {"external_id": "c-2", "phone": "12345"},
        {"external_id": "c-3", "signed_up_at": "2025-01-01T00:00:00Z"},
        {"phone": "+33612345678"},
    ]
    response = customers_client.post("/api/v1/customers/batch", {"items": items}, format="json")
    assert response.status_code == 207, response.json()
    body = response.json()
    assert set(body["errors"]) == {"items.1.phone", "items.3.external_id"}
    assert (body["received"], body["created"], body["rejected"]) == (4, 2, 2)
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"c-1", "c-3"}


def test_customer_batch__same_customer_twice__later_item_wins_field_by_field(customers_client: APIClient) -> None:
    items = [
        {"external_id": "c-1", "timezone": "Europe/Paris", "email": "first@example.com"},
        {"external_id": "c-1", "email": "second@example.com"},
    ]
    response = customers_client.post("/api/v1/customers/batch", {"items": items}, format="json")
    assert response.status_code == 200
    stored = Customer.objects.get()
    assert (stored.timezone, stored.email) == ("Europe/Paris", "second@example.com")


def test_customer_batch__1000_items__set_based_bounded_queries(customers_client: APIClient) -> None:
    for i in range(10):
        CustomerFactory(external_id=f"c-{i}")
    items = [{"external_id": f"c-{i}", "locale": "fr", "attributes": {"n": i}} for i in range(1000)]
    with CaptureQueriesContext(connection) as queries:
        response = customers_client.post("/api/v1/customers/batch", {"items": items}, format="json")
    assert response.status_code == 200
    assert (response.json()["created"], response.json()["updated"]) == (990, 10)
    assert Customer.objects.filter(locale="fr").count() == 1000
    assert_set_based(queries, Customer, rows=1000, other_statements=8, insert_kinds=2)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"items": []}, "at least one"),
        ({"items": {"external_id": "c-1"}}, "Expected a list"),
        ([{"external_id": "c-1"}], "items"),
        ({"items": [{"external_id": f"c-{i}"} for i in range(1001)]}, "At most 1000"),
    ],
)
def test_customer_batch__bad_envelope__400_naming_items(customers_client: APIClient, payload, message: str) -> None:  # type: ignore[no-untyped-def]
    response = customers_client.post("/api/v1/customers/batch", payload, format="json")
    assert response.status_code == 400
    assert message in " ".join(response.json()["errors"]["items"])
    assert not Customer.objects.exists()


# --- Events -------------------------------------------------------------------------


def test_event_post__new__201_with_stored_representation(events_client: APIClient) -> None:
    CustomerFactory(external_id="c-1")
    response = events_client.post("/api/v1/events", order(), format="json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["amount"] == "19.90" and body["type"] == "order" and body["customer_id"] == "c-1"
    event = Event.objects.get(event_id="e-1")
    assert event.amount == Decimal("19.90") and event.properties == {"sku": "TP", "qty": 2}
    assert event.occurred_at == dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)


def test_event_post__replay_same_body__same_result_nothing_new(events_client: APIClient) -> None:
    CustomerFactory(external_id="c-1")
    first = events_client.post("/api/v1/events", order(), format="json")
    # The same instant in another offset and the amount as a number are the same body.
    replay = events_client.post("/api/v1/events", order(occurred_at="2025-03-01T09:00:00Z", amount=19.9), format="json")
    assert (first.status_code, replay.status_code) == (201, 200)
    assert replay.json() == first.json()
    assert Event.objects.count() == 1


def test_event_post__same_id_different_body__409_naming_fields(events_client: APIClient) -> None:
    CustomerFactory(external_id="c-1")
    events_client.post("/api/v1/events", order(), format="json")
    response = events_client.post("/api/v1/events", order(amount="25.00", properties={}), format="json")
    assert response.status_code == 409
    message = response.json()["errors"]["event_id"][0]
    assert "amount" in message and "properties" in message and "occurred_at" not in message
    assert Event.objects.get().amount == Decimal("19.90")


def test_event_post__unknown_customer_reject_rule__400_on_customer_id(events_client: APIClient, settings) -> None:  # type: ignore[no-untyped-def]
    settings.GROWTH = {**settings.GROWTH, "UNKNOWN_CUSTOMER_EVENTS": "reject"}
    response = events_client.post("/api/v1/events", order(customer_id="ghost"), format="json")
    assert response.status_code == 400
    assert "ghost" in response.json()["errors"]["customer_id"][0]
    assert not Event.objects.exists() and not Customer.objects.exists()


def test_event_post__unknown_customer_create_rule__customer_created(events_client: APIClient, settings) -> None:  # type: ignore[no-untyped-def]
    settings.GROWTH = {**settings.GROWTH, "UNKNOWN_CUSTOMER_EVENTS": "create"}
    response = events_client.post("/api/v1/events", order(customer_id="newcomer"), format="json")
    assert response.status_code == 201
    assert Event.objects.get().customer.external_id == "newcomer"


@pytest.mark.parametrize(
    ("overrides", "fields"),
    [
        ({"occurred_at": "2025-03-01T10:00:00"}, {"occurred_at"}),
        ({"occurred_at": "2025-03-01"}, {"occurred_at"}),
        ({"occurred_at": "last tuesday"}, {"occurred_at"}),
        ({"occurred_at": 1740819600}, {"occurred_at"}),
        ({"type": "teleport"}, {"type"}),
        ({"amount": None, "currency": None}, {"amount", "currency"}),
        ({"amount": "12.345"}, {"amount"}),
        ({"amount": "abc"}, {"amount"}),
        ({"amount": True}, {"amount"}),
        ({"currency": "eur"}, {"currency"}),
        ({"event_id": 17}, {"event_id"}),
        ({"event_id": "x" * 129}, {"event_id"}),
        ({"event_id": ""}, {"event_id"}),
        ({"customer_id": None}, {"customer_id"}),
        ({"properties": "sku=TP"}, {"properties"}),
        ({"properties": {"note": "a\x00b"}}, {"properties"}),
        ({"event_id": "a\x00b"}, {"event_id"}),
    ],
)
def test_event_post__invalid__400_naming_fields(events_client: APIClient, overrides: dict, fields: set) -> None:
    CustomerFactory(external_id="c-1")
    response = events_client.post("/api/v1/events", order(**overrides), format="json")
    assert response.status_code == 400
    assert set(response.json()["errors"]) == fields, response.json()
    assert not Event.objects.exists()


def test_event_post__non_monetary_type__no_amount_needed(events_client: APIClient) -> None:
    CustomerFactory(external_id="c-1")
    body = {"event_id": "v-1", "customer_id": "c-1", "type": "visit", "occurred_at": WHEN}
    response = events_client.post("/api/v1/events", body, format="json")
    assert response.status_code == 201
    assert response.json()["amount"] is None and response.json()["properties"] == {}


def test_event_post__nan_in_json__400(events_client: APIClient) -> None:
    body = json.dumps(order()).replace('"19.90"', "NaN")
    response = events_client.post("/api/v1/events", body, content_type="application/json")
    assert response.status_code == 400


def test_event_post__customers_scope_only__403(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("customers:write").post("/api/v1/events", order(), format="json")
    assert response.status_code == 403


def test_event_batch__mixed__207_valid_stored_each_bad_item_named(events_client: APIClient) -> None:
    customer = CustomerFactory(external_id="c-1")
    EventFactory(event_id="stored", customer=customer)
    items = [
        order("e-1"),
        order("e-2", occurred_at="2025-03-01 10:00"),  # naive
        order("e-3", customer_id="ghost"),
        order("stored"),  # conflicts with the stored login event
        order("e-4", type="visit", amount=None, currency=None),
        order("e-1"),  # the same as item 0: a duplicate, not an error
    ]
    response = events_client.post("/api/v1/events/batch", {"items": items}, format="json")
    assert response.status_code == 207, response.json()
    body = response.json()
    assert set(body["errors"]) == {"items.1.occurred_at", "items.2.customer_id", "items.3.event_id"}
    assert (body["received"], body["created"], body["duplicates"], body["rejected"]) == (6, 2, 1, 3)
    assert set(Event.objects.values_list("event_id", flat=True)) == {"stored", "e-1", "e-4"}


def test_event_batch__replayed__200_all_duplicates_nothing_new(events_client: APIClient) -> None:
    CustomerFactory(external_id="c-1")
    items = [order(f"e-{i}") for i in range(5)]
    first = events_client.post("/api/v1/events/batch", {"items": items}, format="json")
    again = events_client.post("/api/v1/events/batch", {"items": items}, format="json")
    assert (first.status_code, first.json()["created"]) == (200, 5)
    assert (again.status_code, again.json()["created"], again.json()["duplicates"]) == (200, 0, 5)
    assert Event.objects.count() == 5


def test_event_batch__same_id_twice_different_bodies__second_is_conflict(events_client: APIClient) -> None:
    CustomerFactory(external_id="c-1")
    items = [order("e-1"), order("e-1", amount="1.00")]
    response = events_client.post("/api/v1/events/batch", {"items": items}, format="json")
    assert response.status_code == 207
    assert list(response.json()["errors"]) == ["items.1.event_id"]
    assert Event.objects.get().amount == Decimal("19.90")


def test_event_batch__all_invalid__400_nothing_stored(events_client: APIClient) -> None:
    response = events_client.post("/api/v1/events/batch", {"items": [{"event_id": 1}, "x"]}, format="json")
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert "items.0.event_id" in errors and "items.1" in errors
    assert response.json()["rejected"] == 2


def test_event_batch__all_conflicts__409(events_client: APIClient) -> None:
    CustomerFactory(external_id="c-1")
    events_client.post("/api/v1/events", order("e-1"), format="json")
    response = events_client.post("/api/v1/events/batch", {"items": [order("e-1", amount="2.00")]}, format="json")
    assert response.status_code == 409


def test_event_batch__oversized__400_nothing_stored(events_client: APIClient) -> None:
    CustomerFactory(external_id="c-1")
    items = [order(f"e-{i}") for i in range(1001)]
    response = events_client.post("/api/v1/events/batch", {"items": items}, format="json")
    assert response.status_code == 400
    assert "1000" in response.json()["errors"]["items"][0]
    assert not Event.objects.exists()


def test_event_batch__1000_events__set_based_bounded_queries(events_client: APIClient) -> None:
    for i in range(50):
        CustomerFactory(external_id=f"c-{i}")
    items = [order(f"e-{i}", customer_id=f"c-{i % 50}") for i in range(1000)]
    with CaptureQueriesContext(connection) as queries:
        response = events_client.post("/api/v1/events/batch", {"items": items}, format="json")
    assert response.status_code == 200 and response.json()["created"] == 1000
    assert Event.objects.count() == 1000
    # On PostgreSQL two more: the key trigger is told the ids are claimed, then untold.
    assert_set_based(queries, Event, rows=1000, other_statements=10 + 2 * (connection.vendor == "postgresql"))


# --- Memberships --------------------------------------------------------------------


def membership(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "customer_id": "c-1",
        "plan": "plus",
        "level": "gold",
        "started_at": "2025-01-01T00:00:00Z",
        "expires_at": "2026-01-01T00:00:00Z",
    }
    body.update(overrides)
    return body


def test_membership_post__new_then_same_term__201_then_200_updated(customers_client: APIClient) -> None:
    CustomerFactory(external_id="c-1")
    first = customers_client.post("/api/v1/memberships", membership(), format="json")
    second = customers_client.post(
        "/api/v1/memberships", membership(expires_at="2026-06-01T00:00:00Z", level="platinum"), format="json"
    )
    assert (first.status_code, second.status_code) == (201, 200)
    stored = Membership.objects.get()
    assert stored.level == "platinum" and stored.expires_at == dt.datetime(2026, 6, 1, tzinfo=dt.UTC)


def test_membership_post__renewal_is_a_new_term(customers_client: APIClient) -> None:
    MembershipFactory(customer=CustomerFactory(external_id="c-1"), plan="plus")
    response = customers_client.post("/api/v1/memberships", membership(), format="json")
    assert response.status_code == 201
    assert Membership.objects.count() == 2


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"customer_id": "ghost"}, "customer_id"),
        ({"expires_at": "2024-12-31T00:00:00Z"}, "expires_at"),
        ({"started_at": "2025-01-01T00:00:00"}, "started_at"),
        ({"plan": ""}, "plan"),
    ],
)
def test_membership_post__invalid__400_naming_field(customers_client: APIClient, overrides: dict, field: str) -> None:
    CustomerFactory(external_id="c-1")
    response = customers_client.post("/api/v1/memberships", membership(**overrides), format="json")
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not Membership.objects.exists()


def test_membership_batch__mixed__207(customers_client: APIClient) -> None:
    CustomerFactory(external_id="c-1")
    items = [membership(), membership(customer_id="ghost"), membership(plan="pro")]
    response = customers_client.post("/api/v1/memberships/batch", {"items": items}, format="json")
    assert response.status_code == 207
    assert list(response.json()["errors"]) == ["items.1.customer_id"]
    assert set(Membership.objects.values_list("plan", flat=True)) == {"plus", "pro"}


# --- Unsubscribe events change consent ------------------------------------------------


def test_event_post__unsubscribe_with_channel__customer_no_longer_reachable(events_client: APIClient) -> None:
    # Given a customer who consented to email before the event
    consented = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    customer = CustomerFactory(external_id="c-1", email="c1@example.com", email_consent_at=consented)
    assert customer.can_receive(Channel.EMAIL)
    # When the client posts an unsubscribe event for email (and one with a topic only)
    body = order(type="unsubscribe", amount=None, currency="", properties={"channel": "email"})
    response = events_client.post("/api/v1/events", body, format="json")
    topic_only = order(event_id="e-2", type="unsubscribe", amount=None, currency="", occurred_at="2025-03-02T09:00:00Z")
    topic_only["properties"] = {"channel": "sms", "topic": "promotions"}
    events_client.post("/api/v1/events", topic_only, format="json")
    # Then email is opted out at the event's time; the topic-only event leaves SMS alone
    assert response.status_code == 201, response.json()
    customer.refresh_from_db()
    assert customer.email_opt_out_at == dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
    assert not customer.can_receive(Channel.EMAIL)
    assert customer.sms_opt_out_at is None
    assert Customer.objects.reachable_by(Channel.EMAIL).filter(pk=customer.pk).count() == 0


def test_event_post__unsubscribe_before_later_consent__consent_wins(events_client: APIClient) -> None:
    # A late-arriving unsubscribe older than a newer consent does not withdraw it.
    customer = CustomerFactory(
        external_id="c-1", email="c1@example.com", email_consent_at=dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
    )
    body = order(type="unsubscribe", amount=None, currency="", properties={"channel": "email"})
    assert events_client.post("/api/v1/events", body, format="json").status_code == 201
    customer.refresh_from_db()
    assert customer.email_opt_out_at == dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)
    assert customer.can_receive(Channel.EMAIL)
