"""RFM tiers, hand-worked: quintile scores with the tie rule, thresholds, means, empty window."""

from __future__ import annotations

import pytest

from segments.models import Dimension, RecomputeRun
from segments.services.dimensions import dimension_update
from tests.segments.conftest import AS_OF, DAY, World, layers_of, recompute

pytestmark = pytest.mark.django_db


@pytest.fixture
def five(world: World) -> None:
    """With N = 5 distinct values, score = rank (1..5) and each mean is 3, so high = 4 or 5.

    | customer | last order | orders | total | R | F | M | tier                  |
    | P1       | 1 day ago  | 1      | 500   | 5 | 1 | 5 | important development |
    | P2       | 2 days     | 5      | 100   | 4 | 5 | 1 | general value         |
    | P3       | 10 days    | 4      | 300   | 3 | 4 | 3 | general retention     |
    | P4       | 20 days    | 3      | 200   | 2 | 3 | 2 | general win-back      |
    | P5       | 30 days    | 2      | 400   | 1 | 2 | 4 | important win-back    |
    P6 ordered 120 days ago (outside the 90-day window), P7 never: no purchase in window.
    """
    for name, last, count, total in [
        ("P1", 1, 1, "500"),
        ("P2", 2, 5, "100"),
        ("P3", 10, 4, "300"),
        ("P4", 20, 3, "200"),
        ("P5", 30, 2, "400"),
    ]:
        world.orders(world.customer(name), [last + i for i in range(count)], total)
    world.order(world.customer("P6"), 120, "1000")
    world.customer("P7")


def test_rfm__five_distinct_customers__hand_worked_tiers(five: None) -> None:
    outcome = recompute("rfm")
    assert layers_of("rfm") == {
        "P1": "important_development",
        "P2": "general_value",
        "P3": "general_retention",
        "P4": "general_win_back",
        "P5": "important_win_back",
        "P6": "no_purchase",
        "P7": "no_purchase",
    }
    assert outcome.details["stats"] == {"in_window": 5, "mean_scores": {"r": 3.0, "f": 3.0, "m": 3.0}}
    assert outcome.details["layer_sizes"]["important_value"] == 0
    assert outcome.details["mece"]["ok"] is True


def test_rfm__ten_customers__score_is_one_plus_floor_five_rank_over_n(world: World) -> None:
    # C1..C10: Ci has i orders worth 10·i each, the last (11 − i) days ago: R, F, M all rank i.
    # score = 1 + floor(5·(i − 1)/10) = 1,1,2,2,3,3,4,4,5,5; mean 3; high (> 3) from C7 on.
    for i in range(1, 11):
        world.orders(world.customer(f"C{i}"), [11 - i + k for k in range(i)], str(10 * i * i))
    recompute("rfm")
    tiers = layers_of("rfm")
    assert {c for c, t in tiers.items() if t == "important_value"} == {"C7", "C8", "C9", "C10"}
    assert {c for c, t in tiers.items() if t == "general_win_back"} == {f"C{i}" for i in range(1, 7)}


def test_rfm__ties__equal_values_get_equal_scores(world: World) -> None:
    # F values 1,1,1,4,5 → RANK 1,1,1,4,5 → scores 1,1,1,4,5 (mean 2.4): the three tied are low
    # together. R and M are tied for everyone (same instant, same amount): all score 1 → low.
    for name, count in [("T1", 1), ("T2", 1), ("T3", 1), ("T4", 4), ("T5", 5)]:
        customer = world.customer(name)
        world.order(customer, 3, "10.00")
        for k in range(count - 1):
            world.order(customer, 10 + k, "0.00")
    recompute("rfm")
    tiers = layers_of("rfm")
    assert tiers["T1"] == tiers["T2"] == tiers["T3"] == "general_win_back"
    assert tiers["T4"] == tiers["T5"] == "general_retention"


def test_rfm__everyone_tied__all_low_is_general_win_back(world: World) -> None:
    for name in ("A1", "A2", "A3", "A4"):
        world.order(world.customer(name), 5, "25.00")
    outcome = recompute("rfm")
    assert set(layers_of("rfm").values()) == {"general_win_back"}
    assert outcome.details["stats"]["mean_scores"] == {"r": 1.0, "f": 1.0, "m": 1.0}


def test_rfm__no_purchase_in_window__everyone_in_no_purchase_layer(world: World) -> None:
    world.order(world.customer("OLD"), 200, "50.00")
    world.customer("NEVER")
    outcome = recompute("rfm")
    assert layers_of("rfm") == {"OLD": "no_purchase", "NEVER": "no_purchase"}
    assert outcome.details["stats"] == {"in_window": 0, "mean_scores": {"r": None, "f": None, "m": None}}


def test_rfm__empty_database__succeeds_with_empty_layers(db: None) -> None:
    outcome = recompute("rfm")
    assert outcome.customers == 0
    assert set(outcome.details["layer_sizes"].values()) == {0}
    assert outcome.details["mece"]["ok"] is True


def test_rfm__unchanged_data__recompute_moves_nobody(five: None) -> None:
    recompute("rfm")
    before = layers_of("rfm")
    again = recompute("rfm")
    # an hour later nobody's order leaves the window: R ranks timestamps, so ageing reorders no one
    later = recompute("rfm", as_of=AS_OF + DAY / 24)
    assert layers_of("rfm") == before
    assert again.changed == 0 and later.changed == 0


def test_rfm__thresholds__scores_by_configured_bounds(world: World) -> None:
    dimension = Dimension.objects.get(key="rfm")
    config = {**dimension.config, "scoring": {"r": [5, 10, 20, 45], "f": [2, 3, 5, 8], "m": [100, 300, 800, 2000]}}
    dimension_update(dimension=dimension, config=config)
    # H1: within 5 days (R5), 8 orders (F5), 2000 (M5); L1: 60 days (R1), 1 order (F1), 50 (M1).
    world.orders(world.customer("H1"), [3, *range(30, 37)], "2000")
    world.order(world.customer("L1"), 60, "50")
    # M1: 12 days (R3), 2 orders (F2), 900 (M4)
    world.orders(world.customer("M1"), [12, 13], "900")
    outcome = recompute("rfm")
    # means: R (5+1+3)/3 = 3, F (5+1+2)/3 ≈ 2.67, M (5+1+4)/3 ≈ 3.33
    assert layers_of("rfm") == {"H1": "important_value", "L1": "general_win_back", "M1": "important_win_back"}
    assert outcome.details["stats"]["mean_scores"]["f"] == pytest.approx(8 / 3, abs=1e-3)


def test_rfm__window_config__orders_outside_window_ignored(world: World) -> None:
    dimension = Dimension.objects.get(key="rfm")
    dimension_update(dimension=dimension, config={**dimension.config, "window_days": 30})
    world.order(world.customer("IN"), 29, "10")
    world.order(world.customer("OUT"), 31, "10")
    recompute("rfm")
    assert layers_of("rfm")["OUT"] == "no_purchase"
    assert layers_of("rfm")["IN"] != "no_purchase"
    assert RecomputeRun.objects.filter(target="dimension:rfm", status="succeeded").count() == 1
