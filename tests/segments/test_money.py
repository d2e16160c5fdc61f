"""Money is exact on every backend: equal spenders tie in RFM, levels, rule sums and ranks.

On SQLite the amounts are stored as binary doubles: summed as such, 12.00 + 18.30 = 30.3 but
30.24 + 0.06 = 30.299999999999997, 0.10 + 0.20 = 0.30000000000000004, a hundred 0.10 make
9.99999999999998, and 0.01 + 0.02 + 0.30 is 0.33 or 0.32999999999999996 depending on the
order the rows are added in. Every case here is one of those.
"""

from __future__ import annotations

import itertools
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from segments import money
from segments.dimensions import rfm
from segments.dimensions.base import StageContext
from segments.models import Customer, Dimension
from segments.rules import rule_queryset
from segments.services.dimensions import dimension_create, dimension_update
from tests.segments.conftest import AS_OF, World, layers_of, recompute

# --- the conversion of thresholds (pure) ---------------------------------------------------------


@pytest.mark.pure
@pytest.mark.parametrize(
    ("value", "least", "most", "exact"),
    [
        (30.3, 3030, 3030, 3030),  # the float 30.3 means the decimal it prints as
        (Decimal("30.30"), 3030, 3030, 3030),
        (30.295, 3030, 3029, None),  # between two hundredths: ≥ rounds up, ≤ rounds down
        (0, 0, 0, 0),
        (-0.015, -1, -2, None),
        (10**30, 2**63 - 1, 2**63 - 1, None),  # beyond any 64-bit sum: clamped
    ],
)
def test_money_bounds__threshold_in_currency_units__exact_hundredths(
    value: Any, least: int, most: int, exact: int | None
) -> None:
    assert (money.at_least(value), money.at_most(value), money.exactly(value)) == (least, most, exact)


# --- RFM ----------------------------------------------------------------------------------------


def rfm_scores() -> dict[str, tuple[int, int, int]]:
    """``{external_id: (R, F, M)}`` from the RFM dimension's own stage statement."""
    dimension = Dimension.objects.get(key="rfm")
    layers = dict(dimension.layers.values_list("key", "id"))
    with connection.cursor() as cursor:
        ctx = StageContext(
            dimension_id=dimension.pk, config=dimension.config, layers=layers, as_of=AS_OF, cursor=cursor
        )
        sql, params = rfm.stage_select(ctx)
        cursor.execute(f"SELECT customer_id, r, f, m FROM ({sql}) s WHERE r IS NOT NULL", params)
        rows = cursor.fetchall()
    names = dict(Customer.objects.values_list("id", "external_id"))
    return {names[customer_id]: (r, f, m) for customer_id, r, f, m in rows}


@pytest.mark.django_db
def test_rfm__equal_spenders_from_float_unfriendly_orders__equal_m_score_and_tier(world: World) -> None:
    # Everyone: two orders, 3 and 5 days ago, so R and F tie (all score 1, low). M totals:
    # 0.30 twice, 30.30 twice, 1000 → RANK 1,1,3,3,5 → scores 1,1,3,3,5, mean 2.6: the
    # 30.30 pair is high (important win-back), the 0.30 pair low (general win-back).
    for name, first, second in [
        ("Y1", "0.10", "0.20"),
        ("Y2", "0.30", "0.00"),
        ("X1", "12.00", "18.30"),
        ("X2", "30.24", "0.06"),
        ("W", "999.99", "0.01"),
    ]:
        customer = world.customer(name)
        world.order(customer, 5, first)
        world.order(customer, 3, second)

    scores = rfm_scores()
    outcome = recompute("rfm")

    assert {name: m for name, (_, _, m) in scores.items()} == {"Y1": 1, "Y2": 1, "X1": 3, "X2": 3, "W": 5}
    tiers = layers_of("rfm")
    assert tiers["X1"] == tiers["X2"] == "important_win_back"
    assert tiers["Y1"] == tiers["Y2"] == "general_win_back"
    assert outcome.details["stats"]["mean_scores"]["m"] == 2.6


@pytest.mark.django_db
def test_rfm_thresholds__many_small_orders_total_exactly_a_minimum__reach_it(world: World) -> None:
    dimension = Dimension.objects.get(key="rfm")
    config = {**dimension.config, "scoring": {"r": "quintiles", "f": "quintiles", "m": [10, 30.3, 50, 80]}}
    dimension_update(dimension=dimension, config=config)
    small = world.customer("small")
    for _ in range(100):
        world.order(small, 2, "0.10")  # 10.00 in all: M ≥ 10 → 2
    pair = world.customer("pair")
    world.order(pair, 2, "30.24")
    world.order(pair, 2, "0.06")  # 30.30: M ≥ 30.3 → 3

    scores = rfm_scores()

    assert (scores["small"][2], scores["pair"][2]) == (2, 3)


# --- levels -------------------------------------------------------------------------------------

MONEY_LEVELS = {
    "measure": {"event_type": "order", "agg": "sum", "window_days": 30},
    "levels": [
        {"key": "basic", "name": "Basic", "min": 0},
        {"key": "silver", "name": "Silver", "min": 0.33},
        {"key": "gold", "name": "Gold", "min": 30.3},
    ],
}


@pytest.mark.django_db
def test_level__orders_total_exactly_the_minimum_in_any_order__level_earned(world: World) -> None:
    dimension_create(key="spend", name="Spend", kind="level", config=MONEY_LEVELS)
    # 0.01 + 0.02 + 0.30 = 0.33 in each of the six orders (insertion and time alike).
    for i, amounts in enumerate(itertools.permutations(["0.01", "0.02", "0.30"])):
        customer = world.customer(f"s{i}")
        for days, amount in zip((3, 2, 1), amounts, strict=True):
            world.order(customer, days, amount)
    for name, amounts in [("g1", ["30.24", "0.06"]), ("g2", ["0.06", "30.24"]), ("g3", ["12.00", "18.30"])]:
        customer = world.customer(name)
        for days, amount in zip((2, 1), amounts, strict=True):
            world.order(customer, days, amount)
    below = world.customer("below")
    world.order(below, 1, "30.29")

    recompute("spend")

    assert layers_of("spend") == {
        **{f"s{i}": "silver" for i in range(6)},
        "g1": "gold",
        "g2": "gold",
        "g3": "gold",
        "below": "silver",
    }


# --- rule sums and value rank -------------------------------------------------------------------


@pytest.fixture
def spenders(world: World) -> None:
    """X1 and X2 spent 30.30, Y1 and Y2 0.30, each in two orders; T 10.00 in a hundred."""
    for name, amounts in [
        ("X1", ["12.00", "18.30"]),
        ("X2", ["30.24", "0.06"]),
        ("Y1", ["0.10", "0.20"]),
        ("Y2", ["0.30", "0.00"]),
        ("T", ["0.10"] * 100),
    ]:
        customer = world.customer(name)
        for amount in amounts:
            world.order(customer, 2, amount)
    world.customer("none")


def matching(rule: dict[str, Any]) -> set[str]:
    return set(rule_queryset(rule=rule, as_of=AS_OF).values_list("external_id", flat=True))


def order_sum(op: str, value: Any) -> dict[str, Any]:
    return {"event": "order", "agg": "sum", "window": {"last_days": 30}, "op": op, "value": value}


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("gte", 30.3, {"X1", "X2"}),
        ("eq", 30.3, {"X1", "X2"}),
        ("gt", 0.3, {"X1", "X2", "T"}),
        ("lt", 30.3, {"Y1", "Y2", "T", "none"}),
        ("lte", 0.3, {"Y1", "Y2", "none"}),
        ("eq", 0.3, {"Y1", "Y2"}),
        ("in", [0.3, 10], {"Y1", "Y2", "T"}),
        ("ne", 0.3, {"X1", "X2", "T", "none"}),
        ("not_in", [0.3, 30.3], {"T", "none"}),
        ("between", [0.01, 0.3], {"Y1", "Y2"}),
        ("between", [10, 30.3], {"X1", "X2", "T"}),
        ("gte", 10, {"X1", "X2", "T"}),
        ("eq", 10.0, {"T"}),
        # SQLite's float total for X2 as the bound: between two hundredths, so no sum
        # equals it, and ≥/≤ round it the way the operator means (3030 / 3029).
        ("eq", 30.299999999999997, set()),
        ("in", [30.299999999999997, 0.3], {"Y1", "Y2"}),
        ("gt", 30.299999999999997, {"X1", "X2"}),
        ("lte", 30.299999999999997, {"Y1", "Y2", "T", "none"}),
    ],
)
def test_rule_sum__total_equal_to_the_threshold__compares_exactly(
    spenders: None, op: str, value: Any, expected: set[str]
) -> None:
    assert matching(order_sum(op, value)) == expected


@pytest.mark.django_db
def test_rule_rank__equal_spenders_at_the_boundary__both_in(spenders: None, world: World) -> None:
    world.order(world.customer("big"), 2, "100.00")
    rank = {"rank": {"event": "order", "agg": "sum", "window": {"last_days": 30}}, "top_percent": 20}
    # 7 customers; values 100 > 30.30 = 30.30 > 10 > …: RANK 1, 2, 2, 4, …; top 20% is
    # (rank − 1) · 100 < 20 · 7, i.e. rank ≤ 2: big and both 30.30 spenders, tied.
    assert matching(rank) == {"big", "X1", "X2"}


@pytest.mark.django_db
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
# Orders up to 10¹¹ (where doubles are 2⁻¹⁶ apart), totals below 10¹³: 15 significant
# digits, so the float a JSON rule carries still prints as the exact total.
@given(st.lists(st.integers(min_value=0, max_value=10**13), min_size=2, max_size=12))
def test_rule_sum__any_decomposition_of_a_total__equals_the_single_order(world: World, hundredths: list[int]) -> None:
    total = sum(hundredths)
    value = float(Decimal(total) / 100)  # as a JSON rule carries it; prints as the exact decimal
    with transaction.atomic():
        parts, whole = world.customer(), world.customer()
        for h in hundredths:
            world.order(parts, 2, str(Decimal(h) / 100))
        world.order(whole, 2, value)
        both = {parts.external_id, whole.external_id}
        for op in ("eq", "gte", "lte"):
            assert matching(order_sum(op, value)) == both, op
        assert matching(order_sum("gt", value)) & both == set()
        transaction.set_rollback(True)
