"""Lifecycle, journey, membership levels and expiry windows: boundaries, hand-worked."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from segments.dimensions import KINDS, config_issues, default_config
from segments.models import CustomerLayer, Dimension, Layer, LayerHistory
from segments.services.dimensions import dimension_create, dimension_update
from tests.segments.conftest import AS_OF, DAY, World, layers_of, recompute

pytestmark = pytest.mark.django_db


# --- lifecycle --------------------------------------------------------------------------


def test_lifecycle__each_stage_and_its_boundary__hand_worked(world: World) -> None:
    # defaults: new 30 d, activity window 30 d, core ≥ 10 events and ≥ 2 orders, warning 30 d, churned 90 d
    churned = world.customer("churned", signed_up=200)
    world.event(churned, "login", 91)
    on_line = world.customer("exactly_90_days", signed_up=200)
    world.event(on_line, "login", 90)  # not *more* than 90 days: warning, not churned
    warning = world.customer("warning", signed_up=200)
    world.order(warning, 45)
    world.customer("new", signed_up=10)  # no activity yet: seen at sign-up
    visitor = world.customer("visitor", signed_up=60)
    world.event(visitor, "login", 5)  # active but never bought
    core = world.customer("core", signed_up=200)
    world.order(core, 2)
    world.order(core, 3)
    for days in range(4, 12):
        world.event(core, "login", days)  # 10 activity events, 2 orders in 30 days
    almost_core = world.customer("almost_core", signed_up=200)
    world.order(almost_core, 2)
    world.order(almost_core, 3)
    for days in range(4, 11):
        world.event(almost_core, "login", days)  # 9 events: active
    active = world.customer("active", signed_up=200)
    world.order(active, 3)
    world.customer("no_signup_old", signed_up=None, created=200)  # only created_at: churned
    recompute("lifecycle")
    assert layers_of("lifecycle") == {
        "churned": "churned",
        "exactly_90_days": "churn_warning",
        "warning": "churn_warning",
        "new": "new",
        "visitor": "visitor",
        "core": "core",
        "almost_core": "active",
        "active": "active",
        "no_signup_old": "churned",
    }


def test_lifecycle__warning_below_events__low_activity_buyer_is_warned(world: World) -> None:
    dimension = Dimension.objects.get(key="lifecycle")
    dimension_update(dimension=dimension, config={**dimension.config, "warning_below_events": 3})
    low = world.customer("low", signed_up=200)
    world.order(low, 3)
    busy = world.customer("busy", signed_up=200)
    world.order(busy, 3)
    world.event(busy, "login", 4)
    world.event(busy, "login", 5)
    recompute("lifecycle")
    assert layers_of("lifecycle") == {"low": "churn_warning", "busy": "active"}


def test_lifecycle__events_after_as_of__ignored(world: World) -> None:
    later = world.customer("later", signed_up=200)
    world.order(later, -2)
    recompute("lifecycle")
    assert layers_of("lifecycle") == {"later": "churned"}


# --- journey ------------------------------------------------------------------------------


def test_journey__default_milestones__highest_matched_wins(world: World) -> None:
    world.customer("new")
    world.order(world.customer("first"), 10)
    world.orders(world.customer("repeat"), [10, 20], "40")
    world.orders(world.customer("vip"), [1, 2, 3, 4, 5], "1500")
    world.orders(world.customer("many_small"), [1, 2, 3, 4, 5], "100")  # 5 orders, but < 1000 in a year
    recompute("journey")
    assert layers_of("journey") == {
        "new": "new",
        "first": "first_purchase",
        "repeat": "repeat_buyer",
        "vip": "vip",
        "many_small": "repeat_buyer",
    }


def test_journey__custom_path__layers_follow_the_config(world: World) -> None:
    config = {
        "milestones": [
            {"key": "stranger", "name": "Stranger", "rule": None},
            {"key": "trial", "name": "Trial", "rule": {"event": "visit", "agg": "count", "op": "gte", "value": 1}},
            {"key": "paid", "name": "Paid", "rule": {"event": "order", "agg": "count", "op": "gte", "value": 1}},
        ]
    }
    dimension = dimension_create(key="education", name="Education path", kind="journey", config=config)
    assert list(Layer.objects.filter(dimension=dimension).values_list("key", flat=True)) == [
        "stranger",
        "trial",
        "paid",
    ]
    world.event(world.customer("t"), "visit", 3)
    world.customer("s")
    world.order(world.customer("p"), 3)
    recompute("education")
    assert layers_of("education") == {"t": "trial", "s": "stranger", "p": "paid"}


# --- membership levels ------------------------------------------------------------------------

LEVELS = {
    "measure": {"event_type": "order", "agg": "count", "window_days": 20},
    "levels": [
        {"key": "l0", "name": "Level 0", "min": 0},
        {"key": "l1", "name": "Level 1", "min": 2, "validity_days": 30},
        {"key": "l2", "name": "Level 2", "min": 4, "validity_days": 30},
    ],
}


def test_level__upgrade_at_once_keep_while_valid_downgrade_after__history(world: World) -> None:
    dimension_create(key="tiers", name="Tiers", kind="level", config=LEVELS)
    x = world.customer("x")
    for days in (1, 2):
        world.order(x, days)
    recompute("tiers")  # 2 orders in 20 days: l1, valid 30 days
    assert layers_of("tiers") == {"x": "l1"}
    t1 = AS_OF + 5 * DAY
    for days in (3, 4):
        world.order(x, -5 + days)  # two more orders, before t1: 4 in the window
    recompute("tiers", as_of=t1)
    row = CustomerLayer.objects.get(customer=x, dimension__key="tiers")
    assert (row.layer.key, row.since, row.valid_until) == ("l2", t1, t1 + 30 * DAY)  # upgrade at once
    t2 = t1 + 25 * DAY  # orders have left the 20-day window: earned l0, but l2 still valid
    recompute("tiers", as_of=t2)
    assert layers_of("tiers") == {"x": "l2"}
    t3 = t1 + 30 * DAY  # validity over: straight down to the earned level
    recompute("tiers", as_of=t3)
    row.refresh_from_db()
    assert (row.layer.key, row.since, row.valid_until) == ("l0", t3, None)
    history = list(
        LayerHistory.objects.filter(customer=x, dimension__key="tiers")
        .order_by("entered_at")
        .values_list("layer__key", "entered_at", "left_at")
    )
    assert history == [("l1", AS_OF, t1), ("l2", t1, t3), ("l0", t3, None)]


def test_level__still_earned_when_validity_ends__renewed_for_a_new_period(world: World) -> None:
    dimension_create(key="tiers", name="Tiers", kind="level", config=LEVELS)
    y = world.customer("y")
    world.order(y, 1)
    world.order(y, 2)
    recompute("tiers")
    t1 = AS_OF + 31 * DAY
    world.order(y, -30)
    world.order(y, -29)  # re-qualified before the period ended
    recompute("tiers", as_of=t1)
    row = CustomerLayer.objects.get(customer=y, dimension__key="tiers")
    assert (row.layer.key, row.since, row.valid_until) == ("l1", AS_OF, t1 + 30 * DAY)
    assert LayerHistory.objects.filter(customer=y).count() == 1


def test_level__default_config__everyone_has_a_level(world: World) -> None:
    world.customer("nobody")
    world.orders(world.customer("gold"), [10, 20], "1500")
    recompute("level")
    assert layers_of("level") == {"nobody": "basic", "gold": "gold"}


# --- expiry windows ---------------------------------------------------------------------------


def test_expiry__boundaries__hand_worked(world: World) -> None:
    cases = {
        "expires_now": 0,  # as_of ≤ expiry < as_of + 90 d
        "expires_89": 89.99,
        "expires_90": 90,  # ≥ as_of + 90 d: valid
        "expired_just": -0.01,
        "expired_90": -90,  # as_of − 90 d ≤ expiry: expired recently
        "expired_91": -91,  # lapsed: no current membership
    }
    for name, expires_in in cases.items():
        world.membership(world.customer(name), expires_in=expires_in, started_ago=400)
    world.customer("never")
    renewed = world.customer("renewed")
    world.membership(renewed, expires_in=10, started_ago=355)
    world.membership(renewed, expires_in=375, started_ago=-10)  # the renewal term counts
    recompute("expiry")
    assert layers_of("expiry") == {
        "expires_now": "expiring_soon",
        "expires_89": "expiring_soon",
        "expires_90": "valid",
        "expired_just": "expired_recently",
        "expired_90": "expired_recently",
        "expired_91": "none",
        "never": "none",
        "renewed": "valid",
    }


def test_expiry__plans_and_boundaries_configured__only_those_plans_count(world: World) -> None:
    dimension = Dimension.objects.get(key="expiry")
    config = {"plans": ["plus"], "expired_within_days": 30, "expiring_within_days": 30}
    dimension_update(dimension=dimension, config=config)
    c = world.customer("c")
    world.membership(c, expires_in=20, plan="plus")
    world.membership(c, expires_in=300, plan="other", started_ago=10)
    world.membership(world.customer("d"), expires_in=-40)
    recompute("expiry")
    assert layers_of("expiry") == {"c": "expiring_soon", "d": "none"}


# --- configs ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_default_config__every_kind__valid(db: None, kind: str) -> None:
    assert config_issues(kind, default_config(kind)) == []


@pytest.mark.parametrize(
    ("kind", "config", "path", "words"),
    [
        (
            "rfm",
            {
                "window_days": 0,
                "event_type": "order",
                "scoring": {"r": "quintiles", "f": "quintiles", "m": "quintiles"},
            },
            "config.window_days",
            "minimum",
        ),
        (
            "rfm",
            {
                "window_days": 90,
                "event_type": "login",
                "scoring": {"r": "quintiles", "f": "quintiles", "m": "quintiles"},
            },
            "config.event_type",
            "carries no amount",
        ),
        (
            "rfm",
            {"window_days": 90, "event_type": "order", "scoring": {"r": [1, 2, 3], "f": "quintiles", "m": "quintiles"}},
            "config.scoring.r",
            "",
        ),
        (
            "rfm",
            {
                "window_days": 90,
                "event_type": "order",
                "scoring": {"r": "quintiles", "f": [5, 3, 2, 1], "m": "quintiles"},
            },
            "config.scoring.f",
            "ascending",
        ),
        ("lifecycle", {**default_config("lifecycle"), "churn_warning_days": 90}, "config.churn_warning_days", "before"),
        (
            "lifecycle",
            {**default_config("lifecycle"), "activity_event_types": ["login", "nope"]},
            "config.activity_event_types.1",
            "unknown event type",
        ),
        ("lifecycle", {**default_config("lifecycle"), "typo": 1}, "config.typo", "unknown field"),
        ("level", {**LEVELS, "levels": LEVELS["levels"][:2]}, "config.levels", "at least 3"),
        (
            "level",
            {**LEVELS, "levels": [{**LEVELS["levels"][0], "min": 1}, *LEVELS["levels"][1:]]},
            "config.levels.0.min",
            "start at 0",
        ),
        (
            "level",
            {**LEVELS, "levels": [LEVELS["levels"][0], LEVELS["levels"][2], LEVELS["levels"][1]]},
            "config.levels.2.min",
            "must increase",
        ),
        (
            "expiry",
            {"expired_within_days": "90", "expiring_within_days": 90},
            "config.expired_within_days",
            "must be integer",
        ),
        (
            "journey",
            {"milestones": [{"key": "a", "name": "A"}, {"key": "b", "name": "B", "rule": {"tag": "NOPE"}}]},
            "config.milestones.1.rule.tag",
            "unknown tag",
        ),
        (
            "journey",
            {"milestones": [{"key": "a", "name": "A"}, {"key": "a", "name": "B", "rule": {"tag": "x"}}]},
            "config.milestones.1.key",
            "duplicate",
        ),
    ],
)
def test_config_issues__invalid_config__path_precise_message(
    db: None, kind: str, config: dict, path: str, words: str
) -> None:
    issues = config_issues(kind, config)
    assert any(i.path == path and words in i.message for i in issues), [str(i) for i in issues]


def test_dimension_update__invalid_config__refused_and_kept(db: None) -> None:
    dimension = Dimension.objects.get(key="rfm")
    before = dict(dimension.config)
    with pytest.raises(ValidationError) as caught:
        dimension_update(dimension=dimension, config={**before, "window_days": -1})
    assert caught.value.message_dict["config"][0].startswith("config.window_days")
    dimension.refresh_from_db()
    assert dimension.config == before


def test_dimension_update__dropping_a_populated_layer__refused(world: World) -> None:
    dimension = dimension_create(key="tiers", name="Tiers", kind="level", config=LEVELS)
    world.orders(world.customer("x"), [1, 2, 3, 4], "40")
    recompute("tiers")
    config = {**LEVELS, "levels": [*LEVELS["levels"][:2], {"key": "l3", "name": "L3", "min": 4}]}
    with pytest.raises(ValidationError, match="l2"):
        dimension_update(dimension=dimension, config=config)
