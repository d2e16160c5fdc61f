"""Selectors other apps call: snapshots (one customer and many), layer keys, sizes, audiences."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from segments.models import Customer
from segments.selectors import (
    audience_queryset,
    customer_get,
    customer_layer_snapshot,
    customer_layer_snapshots,
    customer_layers,
    dimension_layer_sizes,
    layer_ids_by_keys,
    layer_members_queryset,
    layer_snapshot_queryset,
    rule_members_queryset,
    segment_members_queryset,
)
from segments.services.recompute import segment_recompute
from segments.services.segments import segment_create
from tests.segments.conftest import AS_OF, World, layer_id, recompute

pytestmark = pytest.mark.django_db


@pytest.fixture
def placed(world: World) -> dict[str, Customer]:
    a, b, c = world.customer("a"), world.customer("b"), world.customer("c")
    world.membership(a, expires_in=10)
    world.membership(b, expires_in=300)
    world.order(a, 3, "50.00")
    recompute("expiry")
    recompute("rfm")
    return {"a": a, "b": b, "c": c}


def test_customer_layer_snapshot__one_customer__dimension_to_layer(placed: dict) -> None:
    assert customer_layer_snapshot(customer_id=placed["a"].pk) == {
        "expiry": "expiring_soon",
        "rfm": "general_win_back",
    }


def test_customer_get__with_layers__current_layers_in_the_same_statement(placed: dict, world: World) -> None:
    new = world.customer("new")
    with CaptureQueriesContext(connection) as queries:
        a = customer_get(external_id="a", with_layers=True)
        fresh = customer_get(external_id="new", with_layers=True)
        missing = customer_get(external_id="nobody", with_layers=True)
    assert len(queries) == 3
    assert a is not None and a.pk == placed["a"].pk
    assert (
        a.current_layers
        == customer_layer_snapshot(customer_id=a.pk)
        == {  # type: ignore[attr-defined]
            "expiry": "expiring_soon",
            "rfm": "general_win_back",
        }
    )
    assert fresh is not None and fresh.pk == new.pk and fresh.current_layers == {}  # type: ignore[attr-defined]
    assert missing is None
    assert not hasattr(customer_get(external_id="a"), "current_layers")


def test_layer_snapshot_queryset__subquery_of_ids__one_statement_rows(placed: dict) -> None:
    ids = Customer.objects.filter(external_id__in=["a", "b"]).values("pk")
    with CaptureQueriesContext(connection) as queries:
        rows = list(layer_snapshot_queryset(customer_ids=ids, dimension_keys=["expiry"]))
    assert len(queries) == 1
    assert rows == [(placed["a"].pk, "expiry", "expiring_soon"), (placed["b"].pk, "expiry", "valid")]


def test_customer_layer_snapshots__batch__includes_customers_without_layers(placed: dict, world: World) -> None:
    new = world.customer("new")
    snapshots = customer_layer_snapshots(customer_ids=[placed["c"].pk, new.pk])
    assert snapshots == {placed["c"].pk: {"expiry": "none", "rfm": "no_purchase"}, new.pk: {}}


def test_customer_layers__info__since_and_computed_at(placed: dict) -> None:
    info = customer_layers(customer_id=placed["b"].pk)
    assert [i.qualified_key for i in info] == ["expiry:valid", "rfm:no_purchase"]
    assert info[0].since == AS_OF and info[0].computed_at is not None


def test_layer_ids_by_keys__known_and_unknown(db: None) -> None:
    found = layer_ids_by_keys(keys=["rfm:important_value", "expiry:expiring_soon", "rfm:nope", "bad"])
    assert found == {
        "rfm:important_value": layer_id("rfm:important_value"),
        "expiry:expiring_soon": layer_id("expiry:expiring_soon"),
    }


def test_dimension_layer_sizes__after_recompute__every_layer_in_order(placed: dict) -> None:
    sizes = dimension_layer_sizes(dimension_id=layer_and_dimension("expiry"))
    assert [(s.key, s.size) for s in sizes] == [
        ("expired_recently", 0),
        ("expiring_soon", 1),
        ("valid", 1),
        ("none", 1),
    ]


def layer_and_dimension(key: str) -> int:
    from segments.models import Dimension

    return Dimension.objects.get(key=key).pk


def test_audience_queryset__layers_across_dimensions__and_within_or(placed: dict) -> None:
    expiring, valid = layer_id("expiry:expiring_soon"), layer_id("expiry:valid")
    no_purchase = layer_id("rfm:no_purchase")
    names = lambda qs: set(qs.values_list("external_id", flat=True))  # noqa: E731
    assert names(audience_queryset(include_layer_ids=[expiring, valid])) == {"a", "b"}
    assert names(audience_queryset(include_layer_ids=[expiring, valid, no_purchase])) == {"b"}
    assert names(audience_queryset(exclude_layer_ids=[no_purchase])) == {"a"}
    assert names(layer_members_queryset(layer_id=expiring)) == {"a"}


def test_segment_and_rule_members__materialized_and_live(placed: dict) -> None:
    rule = {"layer": "expiry:valid"}
    segment = segment_create(key="valid", name="Valid", rule=rule)
    assert not segment_members_queryset(segment_id=segment.pk).exists()
    segment_recompute(segment_id=segment.pk, as_of=AS_OF)
    assert list(segment_members_queryset(segment_id=segment.pk).values_list("external_id", flat=True)) == ["b"]
    assert list(rule_members_queryset(rule=rule).values_list("external_id", flat=True)) == ["b"]


def test_latest_memberships__two_terms_and_none__latest_by_expiry_per_customer(world: World) -> None:
    from segments.selectors import customers_queryset, latest_memberships

    a, b, c = world.customer("ma"), world.customer("mb"), world.customer("mc")
    world.membership(a, expires_in=10)
    later = world.membership(a, expires_in=40, started_ago=20)
    only = world.membership(b, expires_in=5)
    with CaptureQueriesContext(connection) as queries:
        terms = latest_memberships(customers=customers_queryset(ids=[a.pk, b.pk, c.pk]))
    assert len(queries.captured_queries) == 1
    assert terms == {a.pk: (later.pk, later.expires_at), b.pk: (only.pk, only.expires_at)}


def test_customer_layer_get_and_layers_by_dimension__placed_customers__their_layer_or_none(
    placed: dict[str, Customer],
) -> None:
    from segments.models import Dimension
    from segments.selectors import customer_layer_get, layers_queryset

    expiry = Dimension.objects.get(key="expiry")
    keys = list(layers_queryset(dimension_id=expiry.pk).values_list("key", flat=True))
    assert keys == list(expiry.layers.order_by("position").values_list("key", flat=True)) and "expiring_soon" in keys
    layer = customer_layer_get(customer_id=placed["a"].pk, dimension_id=expiry.pk)
    assert layer is not None and layer.key == "expiring_soon"
    rfm = Dimension.objects.get(key="rfm")
    assert customer_layer_get(customer_id=placed["c"].pk, dimension_id=rfm.pk) is not None
    assert customer_layer_get(customer_id=placed["c"].pk, dimension_id=Dimension.objects.get(key="level").pk) is None
