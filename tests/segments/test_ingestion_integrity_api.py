"""What a client cannot do to the event stream, and what it is told: platform-written
event types and ids are refused, replays compare equal after the database's round trip,
and of concurrent identical creates exactly one is told "created" (real concurrent
connections on PostgreSQL: one thread, one connection, released together by a barrier)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from rest_framework.test import APIClient

from segments.models import Customer, Event
from segments.services.ingestion import canonical_json
from tests.factories import CustomerFactory

WHEN = "2025-03-01T10:00:00+01:00"
THREADS = 20


def visit(event_id: str = "v-1", customer_id: str = "c-1", **overrides: Any) -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": customer_id, "type": "visit", "occurred_at": WHEN, **overrides}


# --- Platform-written types and ids ------------------------------------------------------


@pytest.mark.django_db
def test_event_post__platform_type_coupon_redeemed__400_naming_type_nothing_stored(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    CustomerFactory(external_id="c-1")
    client = api_client_factory("events:write")
    response = client.post("/api/v1/events", visit(type="coupon_redeemed"), format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["type"]
    assert "platform" in response.json()["errors"]["type"][0]
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_event_post__reserved_platform_id__400_naming_event_id(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    CustomerFactory(external_id="c-1")
    client = api_client_factory("events:write")
    response = client.post("/api/v1/events", visit(event_id="platform:coupon_redeemed:X1"), format="json")
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["event_id"]
    assert not Event.objects.exists()


@pytest.mark.django_db
def test_event_batch__platform_items__counted_rejected_others_stored(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    CustomerFactory(external_id="c-1")
    client = api_client_factory("events:write")
    items = [visit("ok-1"), visit("forged", type="coupon_redeemed"), visit("platform:x"), visit("ok-2")]
    response = client.post("/api/v1/events/batch", {"items": items}, format="json")
    assert response.status_code == 207
    body = response.json()
    assert (body["created"], body["duplicates"], body["rejected"]) == (2, 0, 2)
    assert set(body["errors"]) == {"items.1.type", "items.2.event_id"}
    assert set(Event.objects.values_list("event_id", flat=True)) == {"ok-1", "ok-2"}


# --- Canonical comparison -----------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    "properties",
    [{"big": 1e16}, {"zero": -0.0}, {"tiny": 1e-7, "huge": 1.2345678901234567e300}, {"n": [1.5, 2.0, 1e22]}],
    ids=["1e16", "negative-zero", "exponents", "list"],
)
def test_event_post__numbers_jsonb_respells__201_then_replay_200(api_client_factory, properties: dict) -> None:  # type: ignore[no-untyped-def]
    CustomerFactory(external_id="c-1")
    client = api_client_factory("events:write")
    first = client.post("/api/v1/events", visit(properties=properties), format="json")
    replay = client.post("/api/v1/events", visit(properties=properties), format="json")
    assert (first.status_code, replay.status_code) == (201, 200), (first.content, replay.content)


@pytest.mark.django_db
def test_event_batch__jsonb_respelled_numbers__all_created_none_rejected(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    CustomerFactory(external_id="c-1")
    client = api_client_factory("events:write")
    items = [visit(f"n-{i}", properties={"x": 10.0 ** (15 + i), "z": -0.0}) for i in range(10)]
    first = client.post("/api/v1/events/batch", {"items": items}, format="json").json()
    replay = client.post("/api/v1/events/batch", {"items": items}, format="json").json()
    assert (first["created"], first["rejected"]) == (10, 0), first
    assert (replay["duplicates"], replay["rejected"]) == (10, 0), replay


@pytest.mark.pure
@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ({"x": 1e16}, {"x": 10**16}, True),
        ({"x": -0.0}, {"x": 0.0}, True),
        ({"x": 1}, {"x": 1.0}, True),
        ({"x": 1}, {"x": True}, False),
        ({"x": 0}, {"x": False}, False),
        ({"x": None}, {"x": False}, False),
        ({"x": "1"}, {"x": 1}, False),
        ({"x": 10**40 + 1}, {"x": 10**40 + 2}, False),
        ({"x": [1, 2]}, {"x": [2, 1]}, False),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}, True),
    ],
)
def test_canonical_json__jsonb_equal_values__equal_and_distinct_kinds_distinct(a: Any, b: Any, same: bool) -> None:
    assert (canonical_json(a) == canonical_json(b)) is same


# --- Exactly one "created" under concurrency (PostgreSQL) ---------------------------------


def _concurrently(call: Callable[[], Any], threads: int = THREADS) -> list[Any]:
    """Run ``call`` from ``threads`` threads released together; each thread has its own
    database connection (Django's are per thread), closed when it is done."""
    barrier = threading.Barrier(threads)
    results: list[Any] = []
    lock = threading.Lock()

    def run() -> None:
        try:
            barrier.wait(timeout=30)
            outcome = call()
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            outcome = exc
        finally:
            connection.close()
        with lock:
            results.append(outcome)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    return results


def _client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_event_post__20_concurrent_identical__exactly_one_201(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    Customer.objects.create(external_id="c-1")
    key = api_client_factory("events:write").raw_key
    body = visit("race-1", properties={"n": 1})
    statuses = Counter(
        r.status_code for r in _concurrently(lambda: _client(key).post("/api/v1/events", body, format="json"))
    )
    assert statuses == {201: 1, 200: THREADS - 1}
    assert Event.objects.filter(event_id="race-1").count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_customer_put__20_concurrent_new__exactly_one_201(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    key = api_client_factory("customers:write").raw_key
    body = {"locale": "fr", "email": "new@example.com"}
    statuses = Counter(
        r.status_code
        for r in _concurrently(lambda: _client(key).put("/api/v1/customers/brand-new", body, format="json"))
    )
    assert statuses == {201: 1, 200: THREADS - 1}
    assert Customer.objects.get(external_id="brand-new").email == "new@example.com"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_event_batch__3_concurrent_identical_300__created_total_300(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    Customer.objects.create(external_id="c-1")
    key = api_client_factory("events:write").raw_key
    items = [visit(f"b-{i}", properties={"i": i}) for i in range(300)]
    answers = _concurrently(
        lambda: _client(key).post("/api/v1/events/batch", {"items": items}, format="json"), threads=3
    )
    bodies = [answer.json() for answer in answers]
    assert sum(b["created"] for b in bodies) == 300, bodies
    assert all(b["created"] + b["duplicates"] == 300 and b["rejected"] == 0 for b in bodies), bodies
    assert Event.objects.filter(event_id__startswith="b-").count() == 300


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_customer_batch__3_concurrent_identical__created_total_once_per_customer(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    key = api_client_factory("customers:write").raw_key
    items = [{"external_id": f"cb-{i}", "locale": "de"} for i in range(200)]
    answers = _concurrently(
        lambda: _client(key).post("/api/v1/customers/batch", {"items": items}, format="json"), threads=3
    )
    bodies = [answer.json() for answer in answers]
    assert sum(b["created"] for b in bodies) == 200, bodies
    assert all(b["created"] + b["updated"] == 200 for b in bodies), bodies


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_membership_post__20_concurrent_new_term__exactly_one_201(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    Customer.objects.create(external_id="m-1")
    key = api_client_factory("customers:write").raw_key
    body = {"customer_id": "m-1", "plan": "gold", "started_at": WHEN, "expires_at": "2026-03-01T10:00:00+01:00"}
    statuses = Counter(
        r.status_code for r in _concurrently(lambda: _client(key).post("/api/v1/memberships", body, format="json"))
    )
    assert statuses == {201: 1, 200: THREADS - 1}
