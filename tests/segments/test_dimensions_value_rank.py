"""Value pyramid (kind ``value_rank``) and role-scoped dimensions: hand-worked cases.

Run on SQLite and on PostgreSQL (the same SQL on both): ranks, the tie rule, cut points
with decimals, exact money ties, and what a role scope includes and drops.
"""

from __future__ import annotations

from typing import Any

import pytest

from segments.dimensions import config_issues
from segments.models import Customer, CustomerRole, CustomerTag, Dimension, LayerHistory, Role
from segments.services.dimensions import dimension_create, dimension_update
from tests.segments.conftest import AS_OF, DAY, World, layers_of, recompute

pytestmark = pytest.mark.django_db


def pyramid(
    cuts: list[tuple[str, float]], *, key: str = "pyramid", role: Role | None = None, **measure: Any
) -> Dimension:
    return dimension_create(
        key=key,
        name="Value pyramid",
        kind="value_rank",
        role=role,
        config={
            "measure": {"event_type": "order", "agg": "sum", "window_days": 365, **measure},
            "cuts": [{"key": k, "name": k, "top_percent": p} for k, p in cuts],
        },
    )


def spenders(world: World, totals: dict[str, str]) -> None:
    for external_id, total in totals.items():
        customer = world.customer(external_id)
        if total != "0":
            world.order(customer, 10, total)


def test_value_rank__default_cuts__top_1_10_30_rest_no_value(world: World) -> None:
    # Given 20 spenders 1..20 (× 10.00) and one customer who never bought; N = 20.
    spenders(world, {f"c{v:02d}": f"{v * 10}.00" for v in range(1, 21)} | {"none": "0"})
    pyramid([("top_1", 1), ("top_10", 10), ("top_30", 30)])
    recompute("pyramid")
    # top 1%: fewer than 0.2 above → only rank 1; top 10%: fewer than 2 above → ranks 1–2;
    # top 30%: fewer than 6 above → ranks 1–6.
    layers = layers_of("pyramid")
    assert layers["c20"] == "top_1"
    assert layers["c19"] == "top_10"
    assert [layers[f"c{v:02d}"] for v in (18, 17, 16, 15)] == ["top_30"] * 4
    assert {layers[f"c{v:02d}"] for v in range(1, 15)} == {"rest"}
    assert layers["none"] == "no_value"


def test_value_rank__tie_straddles_a_cut__whole_tie_goes_up(world: World) -> None:
    # The module docstring's example: 500, 300, 300, 100 with a top-50% cut (N = 4):
    # ranks 1, 2, 2, 4; fewer than 2 above for the first three.
    spenders(world, {"a": "500.00", "b": "300.00", "c": "300.00", "d": "100.00"})
    pyramid([("top_half", 50)])
    recompute("pyramid")
    assert layers_of("pyramid") == {"a": "top_half", "b": "top_half", "c": "top_half", "d": "rest"}


def test_value_rank__equal_sums_of_different_amounts__same_layer_on_every_database(world: World) -> None:
    # 12.00 + 18.30 and 30.24 + 0.06 are both 30.30; as binary doubles the sums differ,
    # which would rank one above the other and split them across the top-25% cut (N = 4:
    # fewer than 1 above).
    first, second = world.customer("first"), world.customer("second")
    world.order(first, 5, "12.00")
    world.order(first, 6, "18.30")
    world.order(second, 5, "30.24")
    world.order(second, 6, "0.06")
    spenders(world, {"low1": "1.00", "low2": "2.00"})
    pyramid([("top", 25)])
    recompute("pyramid")
    assert layers_of("pyramid") == {"first": "top", "second": "top", "low1": "rest", "low2": "rest"}


def test_value_rank__fractional_cut_and_count_measure__integer_boundary(world: World) -> None:
    # N = 8 ranked by order count; 12.5% of 8 = 1: only the customer with nobody above.
    # 37.5% of 8 = 3: ranks 1–3. Orders outside the 30-day window do not count.
    for index, count in enumerate([8, 7, 6, 5, 4, 3, 2, 1]):
        customer = world.customer(f"n{count}")
        for day in range(count):
            world.order(customer, 1 + day + index * 0.01)
    late = world.customer("old_orders_only")
    world.order(late, 31)
    pyramid([("top", 12.5), ("upper", 37.5)], agg="count", window_days=30)
    recompute("pyramid")
    layers = layers_of("pyramid")
    assert layers.pop("old_orders_only") == "no_value"
    assert layers == {
        "n8": "top",
        "n7": "upper",
        "n6": "upper",
        "n5": "rest",
        "n4": "rest",
        "n3": "rest",
        "n2": "rest",
        "n1": "rest",
    }


def test_value_rank__everyone_ties__all_in_the_top_layer(world: World) -> None:
    spenders(world, {"a": "10.00", "b": "10.00", "c": "10.00"})
    pyramid([("top", 1)])
    recompute("pyramid")
    assert set(layers_of("pyramid").values()) == {"top"}


def test_value_rank__no_orders_at_all__everyone_no_value_and_mece(world: World) -> None:
    spenders(world, {"a": "0", "b": "0"})
    pyramid([("top", 10)])
    outcome = recompute("pyramid")
    assert layers_of("pyramid") == {"a": "no_value", "b": "no_value"}
    assert outcome.details["mece"]["ok"] is True


@pytest.mark.parametrize(
    ("cuts", "path", "message"),
    [
        (
            [{"key": "a", "name": "A", "top_percent": 30}, {"key": "b", "name": "B", "top_percent": 10}],
            "config.cuts.1.top_percent",
            "must increase",
        ),
        ([{"key": "rest", "name": "R", "top_percent": 10}], "config.cuts.0.key", "reserved"),
        ([{"key": "a", "name": "A", "top_percent": 0.125}], "config.cuts.0.top_percent", "two decimals"),
        ([{"key": "a", "name": "A", "top_percent": 100}], "config.cuts.0.top_percent", "100"),
        (
            [{"key": "a", "name": "A", "top_percent": 1}, {"key": "a", "name": "A", "top_percent": 2}],
            "config.cuts.1.key",
            "duplicate",
        ),
    ],
)
def test_value_rank_config__bad_cuts__path_precise_issue(
    db: None, cuts: list[dict[str, Any]], path: str, message: str
) -> None:
    issues = config_issues("value_rank", {"measure": {"event_type": "order", "agg": "sum"}, "cuts": cuts})
    assert any(issue.path == path and message in issue.message for issue in issues), issues


def test_value_rank_config__sum_of_a_non_monetary_type__refused(db: None) -> None:
    issues = config_issues(
        "value_rank",
        {"measure": {"event_type": "login", "agg": "sum"}, "cuts": [{"key": "a", "name": "A", "top_percent": 5}]},
    )
    assert [issue.path for issue in issues] == ["config.measure.event_type"]


# --- roles ------------------------------------------------------------------------------------


def give(role: Role, *customers: Any) -> None:
    CustomerRole.objects.bulk_create([CustomerRole(customer=c, role=role) for c in customers])


def test_value_rank__scoped_to_sellers__ranked_among_sellers_only(world: World) -> None:
    # Given two big buyers and three sellers; the sellers' top 33% is fewer than 0.99
    # sellers above: the biggest seller only. (Ranked with the buyers, N = 5, s1 would
    # have 2 above, not fewer than 1.65, and be in "rest".)
    seller, buyer = Role.objects.get(key="seller"), Role.objects.get(key="buyer")
    spenders(world, {"b1": "900.00", "b2": "800.00", "s1": "30.00", "s2": "20.00", "s3": "10.00"})
    customers = {c.external_id: c for c in Customer.objects.all()}
    give(buyer, customers["b1"], customers["b2"])
    give(seller, customers["s1"], customers["s2"], customers["s3"])
    pyramid([("top", 33)], role=seller)
    outcome = recompute("pyramid")
    assert layers_of("pyramid") == {"s1": "top", "s2": "rest", "s3": "rest"}
    assert outcome.details["mece"] == {
        "ok": True,
        "customers": 3,
        "placed": 3,
        "rows": 3,
        "duplicates": 0,
        "unplaced": 0,
        "foreign": 0,
    }


def test_dimension_recompute__customer_loses_the_role__row_dropped_history_closed_tag_removed(world: World) -> None:
    seller = Role.objects.get(key="seller")
    spenders(world, {"s1": "30.00", "s2": "20.00"})
    s1, s2 = Customer.objects.get(external_id="s1"), Customer.objects.get(external_id="s2")
    give(seller, s1, s2)
    pyramid([("top", 50)], role=seller)
    recompute("pyramid")
    assert CustomerTag.objects.filter(customer=s1, tag__code="pyramid.top").exists()

    CustomerRole.objects.filter(customer=s1).delete()
    later = AS_OF + DAY
    outcome = recompute("pyramid", as_of=later)

    # s2 is now the only seller, hence the top; s1 has left the dimension entirely.
    assert layers_of("pyramid") == {"s2": "top"}
    assert not CustomerTag.objects.filter(customer=s1, tag__layer__dimension__key="pyramid").exists()
    history = LayerHistory.objects.get(customer=s1, dimension__key="pyramid")
    assert (history.layer.key, history.entered_at, history.left_at) == ("top", AS_OF, later)
    assert ["top", None, 1] in outcome.details["transitions"]
    assert outcome.details["mece"]["ok"] is True


def test_dimension_update__lifecycle_scoped_to_buyers__only_buyers_placed(world: World) -> None:
    buyer = Role.objects.get(key="buyer")
    a, b = world.customer("a", signed_up=10), world.customer("b", signed_up=10)
    give(buyer, a)
    dimension = Dimension.objects.get(key="lifecycle")
    recompute("lifecycle")
    assert set(layers_of("lifecycle")) == {"a", "b"}
    dimension_update(dimension=dimension, role=buyer)
    recompute("lifecycle", as_of=AS_OF + DAY)
    assert layers_of("lifecycle") == {"a": "new"}
    assert b.layers.count() == 0


def test_layer_flows__value_pyramid_recomputed_monthly__moves_between_its_layers(world: World) -> None:
    # Given a pyramid recomputed on Jun 1 and Jul 1 (top half of N = 2): on Jun 1 "a" leads;
    # by Jul 1 "b" has spent more and the two swap.
    from segments.analytics.flows import layer_flows

    a, b = world.customer("a"), world.customer("b")
    world.order(a, 10, "100.00")
    world.order(b, 10, "50.00")
    pyramid([("top_half", 50)])
    recompute("pyramid")
    july = AS_OF + 30 * DAY
    world.order(b, -20, "500.00")  # 20 days after AS_OF, before July's recompute
    recompute("pyramid", as_of=july)
    assert layers_of("pyramid") == {"a": "rest", "b": "top_half"}
    flows = layer_flows(dimension="pyramid", grain="month", start=AS_OF.date(), end=july.date())
    assert [(m.period.isoformat(), m.from_layer, m.to_layer, m.customers) for m in flows.moves] == [
        ("2025-06-01", "", "rest", 1),
        ("2025-06-01", "", "top_half", 1),
        ("2025-07-01", "rest", "top_half", 1),
        ("2025-07-01", "top_half", "rest", 1),
    ]
