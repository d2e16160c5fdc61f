"""The assignment API: GET customers/{external_id}/assignments and POST exposures."""

from __future__ import annotations

import json

import pytest

from experiments import assignment as spec
from experiments import services
from experiments.models import Assignment
from segments.models import Layer
from tests.experiments.conftest import place

pytestmark = pytest.mark.django_db

URL = "/api/v1/customers/{}/assignments"


@pytest.fixture
def reader(api_client_factory):  # type: ignore[no-untyped-def]
    return api_client_factory("offers:read")


def _expected(external_id: str, key: str) -> str:
    index = spec.assign(seed=key, hash_value=external_id, weights=[0.5, 0.5], coverage=1.0)
    assert index is not None
    return ["control", "treatment"][index]


def test_get_assignments__first_request__assigns_exposes_and_returns_variant_payload(
    reader, make_experiment, make_customers
) -> None:
    make_experiment("pricing-page")
    customer = make_customers(1)[0]

    response = reader.get(URL.format(customer.external_id))

    assert response.status_code == 200
    body = response.json()
    variant = _expected(customer.external_id, "pricing-page")
    assert body["count"] == 1
    assert body["results"] == [
        {
            "experiment": "pricing-page",
            "variant": variant,
            "is_control": variant == "control",
            "payload": {"variant": variant, "discount": 0 if variant == "control" else 10},
            "in_experiment": True,
            "reason": "assigned",
        }
    ]
    row = Assignment.objects.get(customer=customer)
    assert row.exposure_count == 1 and row.first_exposed_at is not None


def test_get_assignments__first_request__snapshot_of_current_layers_read_with_the_customer(
    reader, make_experiment, make_customers
) -> None:
    from django.db import connection

    make_experiment("pricing-page")
    placed, bare = make_customers(2)
    place([placed], Layer.objects.get(dimension__key="rfm", key="important_value"))
    place([placed], Layer.objects.get(dimension__key="expiry", key="expiring_soon"))
    statements: list[str] = []

    def record(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        assert reader.get(URL.format(placed.external_id)).status_code == 200
    assert reader.get(URL.format(bare.external_id)).status_code == 200

    layer_reads = [sql for sql in statements if "segments_customerlayer" in sql]
    assert len(layer_reads) == 1  # inside the customer's own statement, no read of its own
    assert layer_reads[0].split(" FROM ")[-1].lstrip().startswith('"segments_customer"')
    assert Assignment.objects.get(customer=placed).snapshot.layers == {
        "rfm": "important_value",
        "expiry": "expiring_soon",
    }
    assert Assignment.objects.get(customer=bare).snapshot.layers == {}


def test_get_assignments__repeated__same_answer_exposures_counted_first_time_kept(
    reader, make_experiment, make_customers
) -> None:
    make_experiment("repeat")
    customer = make_customers(1)[0]
    first = reader.get(URL.format(customer.external_id)).json()
    first_exposed = Assignment.objects.get(customer=customer).first_exposed_at

    second = reader.get(URL.format(customer.external_id)).json()
    third = reader.get(URL.format(customer.external_id) + "?expose=false").json()

    assert first["results"] == second["results"] == third["results"]
    row = Assignment.objects.get(customer=customer)
    assert row.exposure_count == 2
    assert row.first_exposed_at == first_exposed and row.last_exposed_at > first_exposed


def test_get_assignments__reasons__say_why_not_in_experiment(
    reader, make_experiment, make_customers, rfm, holdout, namespace
) -> None:
    layer = Layer.objects.get(dimension=rfm, key="important_value")
    make_experiment("targeted", include_layer_ids=(layer.pk,))
    make_experiment("tiny", coverage="0")
    paused = make_experiment("paused")
    services.experiment_pause(experiment=paused)
    make_experiment("held", holdout_id=holdout.pk)
    make_experiment("narrow", namespace_id=namespace.pk, namespace_start="0", namespace_end="0.001")
    customers = make_customers(400)
    held_out = next(c for c in customers if spec.in_holdout(c.external_id, percent=10, seed=holdout.seed))
    outside_ns = next(c for c in customers if not spec.in_namespace(c.external_id, namespace.key, 0, 0.001))

    results = reader.get(URL.format(held_out.external_id)).json()["results"]

    assert [r["experiment"] for r in results] == ["held", "narrow", "paused", "targeted", "tiny"]
    reasons = {r["experiment"]: r for r in results}
    assert reasons["targeted"]["reason"] == "not_targeted"
    assert reasons["tiny"]["reason"] == "outside_coverage"
    assert reasons["paused"]["reason"] == "not_running"
    assert reasons["held"]["reason"] == "holdout"
    for r in reasons.values():
        assert r["variant"] is None and r["payload"] == {} and r["in_experiment"] is False
    narrow = {r["experiment"]: r for r in reader.get(URL.format(outside_ns.external_id)).json()["results"]}
    assert narrow["narrow"]["reason"] == "namespace"
    place([held_out], layer)
    again = {r["experiment"]: r for r in reader.get(URL.format(held_out.external_id)).json()["results"]}
    assert again["targeted"]["reason"] == "assigned"  # targeting is re-evaluated until assigned


def test_get_assignments__experiment_filter__one_experiment_or_404(reader, make_experiment, make_customers) -> None:
    make_experiment("one")
    make_experiment("two")
    make_experiment("draft", start=False)
    customer = make_customers(1)[0]

    only = reader.get(URL.format(customer.external_id) + "?experiment=two").json()
    draft = reader.get(URL.format(customer.external_id) + "?experiment=draft").json()
    missing = reader.get(URL.format(customer.external_id) + "?experiment=nope")

    assert [r["experiment"] for r in only["results"]] == ["two"]
    assert Assignment.objects.filter(customer=customer).count() == 1
    assert draft["results"][0]["reason"] == "not_running"
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]


def test_get_assignments__unknown_customer__404(reader, make_experiment) -> None:
    make_experiment("x")
    response = reader.get(URL.format("who"))
    assert response.status_code == 404
    assert response.json() == {"detail": "Unknown customer 'who'."}


def test_get_assignments__key_without_offers_read__403_and_nothing_written(
    api_client_factory, make_experiment, make_customers
) -> None:
    make_experiment("guarded")
    customer = make_customers(1)[0]
    client = api_client_factory("events:write", "segments:read")

    response = client.get(URL.format(customer.external_id))

    assert response.status_code == 403
    assert "offers:read" in response.json()["detail"]
    assert not Assignment.objects.exists()


def test_get_assignments__no_key__401(client, make_experiment, make_customers) -> None:  # type: ignore[no-untyped-def]
    make_experiment("guarded")
    assert client.get(URL.format(make_customers(1)[0].external_id)).status_code == 401


def test_get_assignments__response__only_this_customer_and_no_seed(reader, make_experiment, make_customers) -> None:
    experiment = make_experiment("secretive")
    services.experiment_new_phase(experiment=experiment, reason="reseed")
    one, other = make_customers(2)
    reader.get(URL.format(other.external_id))

    raw = reader.get(URL.format(one.external_id)).content.decode()

    assert other.external_id not in raw and one.external_id not in raw
    for secret in ("seed", "phase", "weight", "coverage", "secretive:phase-2", "assignment_id"):
        assert secret not in raw
    assert set(json.loads(raw)["results"][0]) == {
        "experiment",
        "variant",
        "is_control",
        "payload",
        "in_experiment",
        "reason",
    }


def test_get_assignments__pagination__limit_offset(reader, make_experiment, make_customers) -> None:
    for key in ("a", "b", "c"):
        make_experiment(key)
    customer = make_customers(1)[0]

    page = reader.get(URL.format(customer.external_id) + "?limit=2&offset=1").json()

    assert page["count"] == 3
    assert [r["experiment"] for r in page["results"]] == ["b", "c"]
    assert Assignment.objects.filter(customer=customer).count() == 2  # only the page is assigned


def test_get_assignments__invalid_expose__400_names_field(reader, make_experiment, make_customers) -> None:
    make_experiment("x")
    response = reader.get(URL.format(make_customers(1)[0].external_id) + "?expose=maybe")
    assert response.status_code == 400
    assert "expose" in response.json()["errors"]


# --- POST exposures --------------------------------------------------------------------------


def test_post_exposure__assigned_variant__counted(api_client_factory, reader, make_experiment, make_customers) -> None:
    make_experiment("client-side")
    customer = make_customers(1)[0]
    variant = reader.get(URL.format(customer.external_id) + "?expose=false").json()["results"][0]["variant"]
    writer = api_client_factory("events:write")

    response = writer.post(
        "/api/v1/exposures",
        {"customer_id": customer.external_id, "experiment": "client-side", "variant": variant},
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    assert body["variant"] == variant and body["exposure_count"] == 1 and body["conflicting"] is False


def test_post_exposure__other_variant__flagged_conflicting(
    api_client_factory, reader, make_experiment, make_customers
) -> None:
    make_experiment("client-side")
    customer = make_customers(1)[0]
    variant = reader.get(URL.format(customer.external_id)).json()["results"][0]["variant"]
    other = "control" if variant == "treatment" else "treatment"
    writer = api_client_factory("events:write")

    response = writer.post(
        "/api/v1/exposures",
        {"customer_id": customer.external_id, "experiment": "client-side", "variant": other},
        format="json",
    )

    assert response.status_code == 200
    assert response.json()["conflicting"] is True and response.json()["variant"] == variant
    assert Assignment.objects.get(customer=customer).conflicting_exposure


def test_post_exposure__errors__name_the_field(api_client_factory, make_experiment, make_customers) -> None:
    make_experiment("client-side")
    customer = make_customers(1)[0]
    writer = api_client_factory("events:write")

    unassigned = writer.post(
        "/api/v1/exposures",
        {"customer_id": customer.external_id, "experiment": "client-side", "variant": "control"},
        format="json",
    )
    missing = writer.post("/api/v1/exposures", {"customer_id": customer.external_id}, format="json")
    forbidden = api_client_factory("offers:read").post(
        "/api/v1/exposures",
        {"customer_id": customer.external_id, "experiment": "client-side", "variant": "control"},
        format="json",
    )

    assert unassigned.status_code == 400 and "experiment" in unassigned.json()["errors"]
    assert missing.status_code == 400 and {"experiment", "variant"} <= set(missing.json()["errors"])
    assert forbidden.status_code == 403
