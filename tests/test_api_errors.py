"""Every answer under /api/ is JSON in the one error shape, whatever went wrong: bodies too
deep or too large, unknown routes, bad pagination, unhandled errors. Elsewhere (the admin)
Django's own pages stay."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest
from django.test import Client

from campaigns.services import lifecycle
from segments.models import Customer, Event
from tests.campaigns.builders import campaign
from tests.experiments.conftest import app_server  # noqa: F401 - a gunicorn process on the test database
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

WHEN = "2025-03-01T10:00:00Z"
MIB = 2**20


def _nested(levels: int) -> str:
    return '{"a":' * levels + "1" + "}" * levels


def _json_error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json", response["Content-Type"]
    body = json.loads(response.content)
    assert isinstance(body.get("detail"), str) and body["detail"], body
    return body


@pytest.fixture
def key_client(api_client_factory) -> Client:  # type: ignore[no-untyped-def]
    api = api_client_factory("customers:write", "events:write", "offers:read", "coupons:redeem", "segments:read")
    # A plain Django client: it sends bytes as given and does not re-raise server errors.
    return Client(HTTP_AUTHORIZATION=f"Api-Key {api.raw_key}", raise_request_exception=False)


# --- Nested and oversized bodies -----------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "wrap"),
    [
        ("post", "/api/v1/events", lambda deep: f'{{"event_id":"e","customer_id":"c","properties":{deep}}}'),
        ("post", "/api/v1/events/batch", lambda deep: f'{{"items":[{{"properties":{deep}}}]}}'),
        ("put", "/api/v1/customers/c-1", lambda deep: f'{{"attributes":{deep}}}'),
        ("post", "/api/v1/customers/batch", lambda deep: f'{{"items":[{deep}]}}'),
        ("post", "/api/v1/memberships", lambda deep: deep),
        ("post", "/api/v1/exposures", lambda deep: f'{{"customer_id":{deep}}}'),
        ("post", "/api/v1/coupons/ABC/redeem", lambda deep: f'{{"customer_id":{deep}}}'),
    ],
)
@pytest.mark.parametrize("levels", [100, 950, 5000])
def test_json_endpoints__nested_too_deep__400_json_nothing_stored(
    key_client: Client, method: str, path: str, wrap: Any, levels: int
) -> None:
    response = getattr(key_client, method)(path, wrap(_nested(levels)), content_type="application/json")
    body = _json_error(response, 400)
    assert "nested deeper than" in body["detail"]
    assert not Event.objects.exists() and not Customer.objects.exists()


def test_event_post__nesting_at_then_past_the_limit__stored_then_400(key_client: Client) -> None:
    CustomerFactory(external_id="c-1")

    def post(event_id: str, levels: int) -> Any:
        body = f'{{"event_id":"{event_id}","customer_id":"c-1","type":"visit","occurred_at":"{WHEN}","properties":'
        return key_client.post("/api/v1/events", body + _nested(levels) + "}", content_type="application/json")

    assert post("at-limit", 63).status_code == 201  # the body is level 1: 1 + 63 = 64
    _json_error(post("past-limit", 64), 400)
    assert list(Event.objects.values_list("event_id", flat=True)) == ["at-limit"]


def test_event_batch__valid_1000_items_of_2_8_mb__accepted(key_client: Client) -> None:
    CustomerFactory(external_id="c-1")
    items = [
        {
            "event_id": f"e-{i}",
            "customer_id": "c-1",
            "type": "visit",
            "occurred_at": WHEN,
            "properties": {"p": "x" * 2700},
        }
        for i in range(1000)
    ]
    payload = json.dumps({"items": items})
    assert len(payload) > 2.5 * MIB  # Django's default limit, which refused it
    response = key_client.post("/api/v1/events/batch", payload, content_type="application/json")
    assert response.status_code == 200, response.content[:300]
    assert response.json()["created"] == 1000


def test_event_batch__body_over_limit__413_json_naming_limit(key_client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    payload = json.dumps({"items": [{"event_id": "x" * 100}] * 110_000})
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 10 * MIB < len(payload)
    response = key_client.post("/api/v1/events/batch", payload, content_type="application/json")
    body = _json_error(response, 413)
    assert str(10 * MIB) in body["detail"] and "MiB" in body["detail"]


def test_customer_put__body_over_configured_limit__413(key_client: Client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = key_client.put(
        "/api/v1/customers/c-1", {"attributes": {"x": "y" * 2000}}, content_type="application/json"
    )
    assert "1000 bytes" in _json_error(response, 413)["detail"]
    assert not Customer.objects.exists()


# --- Routes, methods and unhandled errors ---------------------------------------------------


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/customers/c-1/nope", "/api/v2/events", "/api/"])
def test_unknown_api_route__404_json_and_html_elsewhere(key_client: Client, path: str) -> None:
    assert "/api/schema/" in _json_error(key_client.get(path), 404)["detail"]
    elsewhere = key_client.get("/not-the-api/")
    assert elsewhere.status_code == 404 and elsewhere["Content-Type"].startswith("text/html")


def test_api_route__host_not_allowed__400_json(key_client: Client) -> None:
    # Refused by Django before any view (DisallowedHost): still the API's shape under /api/.
    _json_error(key_client.get("/api/v1/customers/c-1/segments", HTTP_HOST="evil.example"), 400)


def test_api_view__unhandled_error__500_json(key_client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(**kwargs: Any) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr("segments.api.customer_segments.customer_get", boom)
    body = _json_error(key_client.get("/api/v1/customers/c-1/segments"), 500)
    assert "boom" not in body["detail"] and "X-Request-ID" in body["detail"]


# --- Pagination ----------------------------------------------------------------------------


@pytest.fixture
def offers_path(db: None) -> str:
    CustomerFactory(external_id="p-1")  # first: a broadcast to nobody is refused at launch
    lifecycle.campaign_launch(campaign=campaign(key="pages"))
    return "/api/v1/customers/p-1/offers"


@pytest.mark.parametrize("path_fixture", ["offers_path", "assignments_path"])
@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=abc", "limit"),
        ("limit=0", "limit"),
        ("limit=-5", "limit"),
        ("limit=1.5", "limit"),
        ("offset=-1", "offset"),
        ("offset=x", "offset"),
        ("offset=9223372036854775808", "offset"),
    ],
)
def test_paginated_routes__bad_limit_or_offset__400_naming_it(
    key_client: Client, request: pytest.FixtureRequest, path_fixture: str, query: str, field: str
) -> None:
    path = request.getfixturevalue(path_fixture)
    body = _json_error(key_client.get(f"{path}?{query}"), 400)
    assert list(body["errors"]) == [field]


@pytest.fixture
def assignments_path(db: None) -> str:
    CustomerFactory(external_id="p-2")
    return "/api/v1/customers/p-2/assignments"


def test_customer_offers__limit_past_bigint__capped_200(key_client: Client, offers_path: str) -> None:
    response = key_client.get(f"{offers_path}?limit=9223372036854775808")
    assert response.status_code == 200, response.content[:300]
    assert response.json()["count"] == 1 and len(response.json()["results"]) == 1
    assert "limit=500" in (response.json()["next"] or "limit=500")


# --- Customer fields -------------------------------------------------------------------------


def test_customer_put__locale_null__clears_it(key_client: Client) -> None:
    CustomerFactory(external_id="c-1", locale="pt-BR")
    response = key_client.put("/api/v1/customers/c-1", {"locale": None}, content_type="application/json")
    assert response.status_code == 200 and response.json()["locale"] == ""
    assert Customer.objects.get(external_id="c-1").locale == ""


# --- Through a real server ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_real_server__body_over_limit__client_reads_413_json_not_a_reset(app_server: str, api_client_factory) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    # A client writes the whole body before reading; a 413 sent mid-upload reached it as a
    # connection reset. The server now reads the refused body (bounded) and answers.
    key = api_client_factory("events:write").raw_key
    payload = json.dumps({"items": [{"event_id": "x" * 100}] * 110_000}).encode()
    assert 10 * MIB < len(payload) < 4 * 10 * MIB
    request = urllib.request.Request(
        f"{app_server}/api/v1/events/batch",
        data=payload,
        method="POST",
        headers={"Authorization": f"Api-Key {key}", "Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as answer:
        urllib.request.urlopen(request, timeout=60)
    assert answer.value.code == 413
    assert answer.value.headers["Content-Type"] == "application/json"
    assert "10485760 bytes" in json.loads(answer.value.read())["detail"]
