"""GET /api/v1/customers/{external_id}/segments: layers and segments of one customer."""

from __future__ import annotations

import pytest

from segments.services.recompute import segment_recompute
from segments.services.segments import segment_create
from tests.segments.conftest import AS_OF, World, recompute

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_customers(world: World) -> None:
    alice, bob = world.customer("alice"), world.customer("bob")
    world.membership(alice, expires_in=10)
    world.membership(bob, expires_in=300)
    world.order(alice, 2, "80.00")
    recompute("expiry")
    recompute("rfm")
    segment = segment_create(key="members", name="Members expiring", rule={"layer": "expiry:expiring_soon"})
    segment_recompute(segment_id=segment.pk, as_of=AS_OF)


def test_customer_segments__segments_read_scope__own_layers_and_segments(api_client_factory, two_customers) -> None:  # type: ignore[no-untyped-def]
    client = api_client_factory("segments:read")
    response = client.get("/api/v1/customers/alice/segments")
    assert response.status_code == 200
    body = response.json()
    assert body["external_id"] == "alice"
    layers = {layer["key"]: layer for layer in body["layers"]}
    assert set(layers) == {"expiry:expiring_soon", "rfm:general_win_back"}
    assert layers["expiry:expiring_soon"]["since"].startswith("2025-06-01T12:00:00")
    assert layers["expiry:expiring_soon"]["computed_at"] is not None
    assert layers["rfm:general_win_back"]["dimension_name"] == "RFM value tiers"
    assert [s["segment"] for s in body["segments"]] == ["members"]
    other = client.get("/api/v1/customers/bob/segments").json()
    assert [layer["key"] for layer in other["layers"]] == ["expiry:valid", "rfm:no_purchase"]
    assert other["segments"] == []


def test_customer_segments__unknown_customer__404(api_client_factory, db) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("segments:read").get("/api/v1/customers/nobody/segments")
    assert response.status_code == 404
    assert "nobody" in response.json()["detail"]


def test_customer_segments__no_key_or_wrong_scope__401_403(client, api_client_factory, two_customers) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/v1/customers/alice/segments").status_code == 401
    assert api_client_factory("events:write").get("/api/v1/customers/alice/segments").status_code == 403


def test_customer_segments__not_computed_yet__empty_lists(api_client_factory, world) -> None:  # type: ignore[no-untyped-def]
    world.customer("fresh")
    body = api_client_factory("segments:read").get("/api/v1/customers/fresh/segments").json()
    assert body == {"external_id": "fresh", "layers": [], "segments": []}


def test_openapi_schema__documents_the_operation(client, db) -> None:  # type: ignore[no-untyped-def]
    schema = client.get("/api/schema/?format=json").json()
    operation = schema["paths"]["/api/v1/customers/{external_id}/segments"]["get"]
    assert "segments:read" in operation["description"]
    assert "404" in operation["responses"]
