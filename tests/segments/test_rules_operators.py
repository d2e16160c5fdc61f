"""Every rule operator against a hand-built population, on SQLite and on PostgreSQL.

Population (AS_OF = 2025-06-01 12:00 UTC):
- A: signed up 10 days ago; attributes tier=3, city="Paris", vip=true; email a@shop.test;
  orders 5 days ago (100) and 40 days ago (50); login 1 day ago; plus expires in 20 days;
  tag LOYAL; in layer expiry:expiring_soon.
- B: signed up 100 days ago; tier="3" (a string), city="paris-nord"; b@shop.test; no order;
  login 70 days ago; plus expired 30 days ago.
- C: never signed up; no attributes; no email; one order 200 days ago (500).
- D: signed up 400 days ago; tier=7, city=null; d@other.test; 5 orders 1–5 days ago (10 each);
  plus/gold expires in 200 days, basic expired 500 days ago (started 865 days ago).
- E: signed up 1 day ago; tier=3.5; e@other.test; an order dated after AS_OF (never counts).
"""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from segments.models import Customer, CustomerLayer, Layer
from segments.rules import rule_compile, rule_queryset, rule_validate
from tests.segments.conftest import AS_OF, World

pytestmark = pytest.mark.django_db

ALL = {"A", "B", "C", "D", "E"}


@pytest.fixture
def population(world: World) -> dict[str, Customer]:
    a = world.customer("A", signed_up=10, attributes={"tier": 3, "city": "Paris", "vip": True}, email="a@shop.test")
    world.order(a, 5, "100.00")
    world.order(a, 40, "50.00")
    world.event(a, "login", 1)
    world.membership(a, expires_in=20, started_ago=345)
    world.tag(a, "LOYAL")
    expiring = Layer.objects.get(dimension__key="expiry", key="expiring_soon")
    CustomerLayer.objects.create(customer=a, dimension=expiring.dimension, layer=expiring)

    b = world.customer("B", signed_up=100, attributes={"tier": "3", "city": "paris-nord"}, email="b@shop.test")
    world.event(b, "login", 70)
    world.membership(b, expires_in=-30, started_ago=395)

    c = world.customer("C", signed_up=None)
    world.order(c, 200, "500.00")

    d = world.customer("D", signed_up=400, attributes={"tier": 7, "city": None}, email="d@other.test")
    for days in (1, 2, 3, 4, 5):
        world.order(d, days, "10.00")
    world.membership(d, expires_in=200, started_ago=165, level="gold")
    world.membership(d, expires_in=-500, started_ago=865, plan="basic")

    e = world.customer("E", signed_up=1, attributes={"tier": 3.5}, email="e@other.test")
    world.order(e, -1, "999.00")
    return {c.external_id: c for c in (a, b, c, d, e)}


def field(name: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"field": name, "op": op, **({} if value is None else {"value": value})}


def attr(key: str, op: str, value: Any = None) -> dict[str, Any]:
    return {"attribute": key, "op": op, **({} if value is None else {"value": value})}


def event(agg: str, op: str, value: Any = None, window: dict[str, Any] | None = None) -> dict[str, Any]:
    node = {"event": "order", "agg": agg, "op": op, **({} if value is None else {"value": value})}
    return {**node, "window": window} if window else node


def membership(agg: str, op: str | None = None, value: Any = None, **filters: str) -> dict[str, Any]:
    node: dict[str, Any] = {"membership": filters, "agg": agg}
    if op:
        node["op"] = op
    if value is not None:
        node["value"] = value
    return node


CASES: list[tuple[str, dict[str, Any], set[str]]] = [
    # --- customer fields: datetimes (relative and absolute) and strings
    ("signed_up-within_last_days", field("signed_up_at", "within_last_days", 30), {"A", "E"}),
    ("signed_up-before_days_ago", field("signed_up_at", "before_days_ago", 30), {"B", "D"}),
    ("signed_up-within_next_days", field("signed_up_at", "within_next_days", 30), set()),
    ("signed_up-after_days_from_now", field("signed_up_at", "after_days_from_now", 0), set()),
    ("signed_up-between-dates", field("signed_up_at", "between", ["2025-02-21", "2025-05-22"]), {"A", "B"}),
    ("signed_up-on_or_after", field("signed_up_at", "on_or_after", "2025-05-22"), {"A", "E"}),
    ("signed_up-before", field("signed_up_at", "before", "2025-05-22"), {"B", "D"}),
    ("signed_up-exists", field("signed_up_at", "exists"), {"A", "B", "D", "E"}),
    ("signed_up-not_exists", field("signed_up_at", "not_exists"), {"C"}),
    ("email-eq", field("email", "eq", "a@shop.test"), {"A"}),
    ("email-ne", field("email", "ne", "a@shop.test"), {"B", "C", "D", "E"}),
    ("email-contains-ignores-case", field("email", "contains", "SHOP"), {"A", "B"}),
    ("email-starts_with", field("email", "starts_with", "d@"), {"D"}),
    ("email-in", field("email", "in", ["a@shop.test", "d@other.test"]), {"A", "D"}),
    ("email-not_in", field("email", "not_in", ["a@shop.test", "d@other.test"]), {"B", "C", "E"}),
    ("email-exists", field("email", "exists"), {"A", "B", "D", "E"}),
    ("email-not_exists", field("email", "not_exists"), {"C"}),
    # --- attributes: numbers (never a string "3"), strings, booleans, presence
    ("tier-eq", attr("tier", "eq", 3), {"A"}),
    ("tier-ne", attr("tier", "ne", 3), {"D", "E"}),
    ("tier-gt", attr("tier", "gt", 3), {"D", "E"}),
    ("tier-gte", attr("tier", "gte", 3), {"A", "D", "E"}),
    ("tier-lt", attr("tier", "lt", 7), {"A", "E"}),
    ("tier-lte", attr("tier", "lte", 3), {"A"}),
    ("tier-between", attr("tier", "between", [3, 5]), {"A", "E"}),
    ("tier-in", attr("tier", "in", [3, 7]), {"A", "D"}),
    ("tier-not_in", attr("tier", "not_in", [3]), {"D", "E"}),
    ("tier-eq-string", attr("tier", "eq", "3"), {"B"}),
    ("city-contains", attr("city", "contains", "paris"), {"A", "B"}),
    ("city-starts_with", attr("city", "starts_with", "PARIS-"), {"B"}),
    ("city-eq", attr("city", "eq", "Paris"), {"A"}),
    ("city-ne", attr("city", "ne", "Paris"), {"B"}),
    ("city-in", attr("city", "in", ["Paris", "Lyon"]), {"A"}),
    ("city-not_in", attr("city", "not_in", ["Paris"]), {"B"}),
    ("vip-eq-true", attr("vip", "eq", True), {"A"}),
    ("vip-ne-false", attr("vip", "ne", False), {"A"}),
    ("city-exists-null-is-absent", attr("city", "exists"), {"A", "B"}),
    ("city-not_exists", attr("city", "not_exists"), {"C", "D", "E"}),
    # --- event aggregates: count, sum, first, last; windows; future events never count
    ("orders-count-gte", event("count", "gte", 2), {"A", "D"}),
    ("orders-count-eq-0", event("count", "eq", 0), {"B", "E"}),
    ("orders-count-gt-0", event("count", "gt", 0), {"A", "C", "D"}),
    ("orders-count-lt", event("count", "lt", 2), {"B", "C", "E"}),
    ("orders-count-lte", event("count", "lte", 1), {"B", "C", "E"}),
    ("orders-count-ne", event("count", "ne", 5), {"A", "B", "C", "E"}),
    ("orders-count-between", event("count", "between", [1, 2]), {"A", "C"}),
    ("orders-count-in", event("count", "in", [1, 5]), {"C", "D"}),
    ("orders-count-not_in", event("count", "not_in", [0]), {"A", "C", "D"}),
    ("orders-count-last-30-days", event("count", "gte", 1, {"last_days": 30}), {"A", "D"}),
    ("orders-count-last-30-days-eq-1", event("count", "eq", 1, {"last_days": 30}), {"A"}),
    ("orders-count-between-dates", event("count", "gte", 1, {"between": ["2024-11-01", "2024-11-30"]}), {"C"}),
    ("orders-sum-gte", event("sum", "gte", 150), {"A", "C"}),
    ("orders-sum-lt", event("sum", "lt", 60), {"B", "D", "E"}),
    ("orders-sum-gt-30-days", event("sum", "gt", 50, {"last_days": 30}), {"A"}),
    ("orders-sum-eq", event("sum", "eq", 50), {"D"}),
    ("last-order-within_last_days", event("last", "within_last_days", 3), {"D"}),
    ("last-order-before_days_ago", event("last", "before_days_ago", 30), {"C"}),
    ("last-order-exists", event("last", "exists"), {"A", "C", "D"}),
    ("last-order-not_exists", event("last", "not_exists"), {"B", "E"}),
    ("first-order-before_days_ago", event("first", "before_days_ago", 30), {"A", "C"}),
    ("first-order-on_or_after", event("first", "on_or_after", "2025-05-01"), {"D"}),
    ("first-order-between", event("first", "between", ["2024-11-13", "2024-11-13"]), {"C"}),
    # --- memberships
    ("membership-active", membership("active"), {"A", "D"}),
    ("membership-active-gold", membership("active", plan="plus", level="gold"), {"D"}),
    ("membership-count", membership("count", "gte", 2), {"D"}),
    ("expires-within_next_days", membership("latest_expiry", "within_next_days", 30), {"A"}),
    ("expires-after_days_from_now", membership("latest_expiry", "after_days_from_now", 90), {"D"}),
    ("expired-within_last_days", membership("latest_expiry", "within_last_days", 60), {"B"}),
    ("no-membership", membership("latest_expiry", "not_exists"), {"C", "E"}),
    ("member-since", membership("first_start", "before_days_ago", 600), {"D"}),
    ("plan-filter", membership("latest_expiry", "before_days_ago", 100, plan="basic"), {"D"}),
    # --- tags, layers
    ("tag", {"tag": "LOYAL"}, {"A"}),
    ("layer", {"layer": "expiry:expiring_soon"}, {"A"}),
    # --- value rank: top P% by spend (C 500, A 150, D 50; B and E have none)
    ("rank-top-20", {"rank": {"event": "order", "agg": "sum"}, "top_percent": 20}, {"C"}),
    ("rank-top-40", {"rank": {"event": "order", "agg": "sum"}, "top_percent": 40}, {"C", "A"}),
    ("rank-top-100-never-zero", {"rank": {"event": "order", "agg": "sum"}, "top_percent": 100}, {"A", "C", "D"}),
    (
        "rank-with_value",
        {"rank": {"event": "order", "agg": "sum"}, "top_percent": 50, "among": "with_value"},
        {"C", "A"},
    ),
    (
        "rank-count-window",
        {"rank": {"event": "order", "agg": "count", "window": {"last_days": 30}}, "top_percent": 20},
        {"D"},
    ),
    # --- combinators
    ("all", {"all": [attr("tier", "gte", 3), event("count", "gte", 2)]}, {"A", "D"}),
    ("any", {"any": [{"tag": "LOYAL"}, event("last", "within_last_days", 3)]}, {"A", "D"}),
    ("not", {"not": attr("tier", "gt", 3)}, {"A", "B", "C"}),
    (
        "nested",
        {"any": [{"all": [field("email", "exists"), {"not": event("count", "gt", 0)}]}, {"tag": "LOYAL"}]},
        {"A", "B", "E"},
    ),
]


def matches(rule: dict[str, Any]) -> set[str]:
    return set(rule_queryset(rule=rule, as_of=AS_OF).values_list("external_id", flat=True))


@pytest.mark.parametrize(("rule", "expected"), [(r, e) for _, r, e in CASES], ids=[c[0] for c in CASES])
def test_rule_operator__population__matches_hand_worked_set(population: dict, rule: dict, expected: set) -> None:
    assert matches(rule) == expected


@pytest.mark.parametrize(("rule", "expected"), [(r, e) for _, r, e in CASES], ids=[c[0] for c in CASES])
def test_rule_not__any_operator__is_exact_complement(population: dict, rule: dict, expected: set) -> None:
    # Missing values (NULL) must not fall out of both a rule and its negation.
    assert matches({"not": rule}) == ALL - expected


def test_rank__tie_at_the_boundary__all_tied_customers_are_in(world: World) -> None:
    # 10 customers: two tied at the top; top 10% (one place) takes both.
    customers = [world.customer(f"T{i}") for i in range(10)]
    world.order(customers[0], 3, "90.00")
    world.order(customers[1], 4, "90.00")
    world.order(customers[2], 5, "50.00")
    rule = {"rank": {"event": "order", "agg": "sum"}, "top_percent": 10}
    assert matches(rule) == {"T0", "T1"}


def test_rule_compile__complex_rule__is_one_sql_query(population: dict) -> None:
    rule = {
        "all": [
            {"any": [attr("city", "contains", "paris"), {"tag": "LOYAL"}]},
            event("sum", "gte", 10, {"last_days": 90}),
            {"not": membership("latest_expiry", "not_exists")},
            {"rank": {"event": "order", "agg": "sum"}, "top_percent": 50},
        ]
    }
    catalog = rule_validate(rule)
    with CaptureQueriesContext(connection) as queries:
        found = set(
            Customer.objects.filter(rule_compile(rule, as_of=AS_OF, catalog=catalog)).values_list(
                "external_id", flat=True
            )
        )
    assert found == {"A"}
    assert len(queries) == 1
