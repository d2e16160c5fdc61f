"""Computed tags in every family: the rule language's event properties and shares, the
tag code scheme, tag rules recomputed set-based with history, and manual tags that no
recompute overwrites or removes. On SQLite and on PostgreSQL.

Population (AS_OF = 2025-06-01 12:00 UTC), orders with their ``properties``:
- A: city_tier 1 (number), channel "social"; orders TP (coupon WELCOME10), TP, CM → 3 orders,
  2 of product TP, coupon share 1/3; a referral sign-up; a coupon redeemed.
- B: city_tier 2, channel "organic"; orders TP (coupon), CM (coupon) → share 2/2 = 1.
- C: city_tier "1" (a string); orders CM (coupon), CM (coupon), TP, CM → share 2/4 = 1/2
  exactly (the boundary of "at least half").
- D: no attributes, no orders → share undefined (never matches, its negation does).
- E: one order whose ``coupon`` is JSON null → not "with a coupon": share 0/1 = 0.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.core.exceptions import ValidationError

from segments.models import Customer, CustomerTag, Event, RecomputeRun, Tag, TagHistory, TagRule
from segments.rules import rule_check, rule_queryset
from segments.services.recompute import recompute_all, tag_rule_recompute
from segments.services.tags import (
    customer_tag_add,
    customer_tag_remove,
    tag_rule_create,
    tag_rule_order,
    tag_rule_update,
)
from tests.segments.conftest import AS_OF, DAY, World, recompute

pytestmark = pytest.mark.django_db

TP = {"property": "product", "op": "eq", "value": "TP"}
COUPON = {"property": "coupon", "op": "exists"}
PRICE_SENSITIVE = {"share": {"event": "order", "where": [COUPON]}, "op": "gte", "value": 0.5}


def _order(world: World, customer: Customer, days_ago: float, **properties: Any) -> Event:
    event = world.order(customer, days_ago, "20.00")
    event.properties = properties
    event.save(update_fields=["properties"])
    return event


@pytest.fixture
def shop(world: World) -> dict[str, Customer]:
    a = world.customer("A", attributes={"city_tier": 1, "channel": "social"})
    _order(world, a, 30, product="TP", coupon="WELCOME10")
    _order(world, a, 20, product="TP")
    _order(world, a, 10, product="CM")
    world.event(a, "referral_signup", 100)
    world.event(a, "coupon_redeemed", 30)
    b = world.customer("B", attributes={"city_tier": 2, "channel": "organic"})
    _order(world, b, 15, product="TP", coupon="PROMO1")
    _order(world, b, 5, product="CM", coupon="PROMO2")
    c = world.customer("C", attributes={"city_tier": "1"})
    _order(world, c, 40, product="CM", coupon="PROMO3")
    _order(world, c, 30, product="CM", coupon="PROMO4")
    _order(world, c, 20, product="TP")
    _order(world, c, 10, product="CM")
    d = world.customer("D")
    e = world.customer("E")
    _order(world, e, 3, product="KB", coupon=None)
    return {x.external_id: x for x in (a, b, c, d, e)}


def matching(rule: dict[str, Any], as_of: dt.datetime = AS_OF) -> set[str]:
    return set(rule_queryset(rule=rule, as_of=as_of).values_list("external_id", flat=True))


def holders(code: str) -> dict[str, str]:
    return dict(CustomerTag.objects.filter(tag__code=code).values_list("customer__external_id", "source"))


# --- The rule language: event properties and shares ----------------------------------------


def test_event_where__product_property__counts_only_that_products_orders(shop: dict[str, Customer]) -> None:
    # TP2 = bought product TP twice: A has 2 TP orders; B and C one each.
    rule = {"event": "order", "where": [TP], "agg": "count", "op": "gte", "value": 2}
    assert matching(rule) == {"A"}
    assert matching({**rule, "op": "eq", "value": 1}) == {"B", "C"}


def test_event_where__several_conditions__all_must_hold(shop: dict[str, Customer]) -> None:
    rule = {"event": "order", "where": [TP, COUPON], "agg": "count", "op": "gte", "value": 1}
    assert matching(rule) == {"A", "B"}


def test_event_where__json_null_property__is_not_present(shop: dict[str, Customer]) -> None:
    with_coupon = {"event": "order", "where": [COUPON], "agg": "count", "op": "gte", "value": 1}
    assert "E" not in matching(with_coupon)
    missing = {
        "event": "order",
        "where": [{"property": "coupon", "op": "not_exists"}],
        "agg": "count",
        "op": "gte",
        "value": 1,
    }
    assert matching(missing) == {"A", "C", "E"}


def test_share__at_least_half__tie_at_exactly_half_is_in(shop: dict[str, Customer]) -> None:
    # Shares: A 1/3, B 1, C 1/2 (the boundary), D undefined, E 0.
    assert matching(PRICE_SENSITIVE) == {"B", "C"}
    assert matching({**PRICE_SENSITIVE, "op": "gt"}) == {"B"}
    assert matching({**PRICE_SENSITIVE, "op": "eq"}) == {"C"}


def test_share__no_events__undefined_so_false_and_its_negation_true(shop: dict[str, Customer]) -> None:
    assert matching({**PRICE_SENSITIVE, "op": "lte", "value": 1}) == {"A", "B", "C", "E"}
    assert matching({"not": {**PRICE_SENSITIVE, "op": "lte", "value": 1}}) == {"D"}
    assert matching({**PRICE_SENSITIVE, "op": "ne", "value": 0.5}) == {"A", "B", "E"}


def test_share__thirds__compared_exactly_without_floats(shop: dict[str, Customer]) -> None:
    # 1/3 < 0.3334 and 1/3 > 0.3333: exact integer cross-multiplication, no rounding.
    assert matching({**PRICE_SENSITIVE, "op": "lt", "value": 0.3334}) == {"A", "E"}
    assert matching({**PRICE_SENSITIVE, "op": "gt", "value": 0.3333}) == {"A", "B", "C"}
    assert matching({**PRICE_SENSITIVE, "op": "between", "value": [0.3, 0.5]}) == {"A", "C"}


def test_share__window__counts_only_events_in_it(shop: dict[str, Customer]) -> None:
    # In the last 25 days C has TP (no coupon) and CM (no coupon): 0/2; A: TP, CM: 0/2.
    rule = {"share": {"event": "order", "where": [COUPON], "window": {"last_days": 25}}, "op": "gt", "value": 0}
    assert matching(rule) == {"B"}


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ({**PRICE_SENSITIVE, "value": 1.5}, "rule.value: must be a fraction from 0 to 1"),
        ({**PRICE_SENSITIVE, "value": "half"}, "rule.value: must be a fraction from 0 to 1"),
        ({**PRICE_SENSITIVE, "op": "between", "value": [0.6, 0.2]}, "rule.value: low (0.6) is greater than high"),
        ({**PRICE_SENSITIVE, "op": "contains"}, "rule.op: unknown operator"),
        ({"share": {"event": "order"}, "op": "gte", "value": 0.5}, "rule.share: missing 'where'"),
        ({"share": {"event": "nope", "where": [COUPON]}, "op": "gte", "value": 0.5}, "rule.share.event: unknown event"),
        (
            {"event": "order", "where": [{"property": "a__b", "op": "exists"}], "agg": "count", "op": "gt", "value": 0},
            "rule.where.0.property: a property key cannot contain '__'",
        ),
        (
            {
                "event": "order",
                "where": [{"property": "sku", "op": "gte", "value": "x"}],
                "agg": "count",
                "op": "gt",
                "value": 0,
            },
            "rule.where.0.op: operator 'gte' does not apply to a string property",
        ),
        (
            {"event": "order", "where": [{"property": "1x", "op": "exists"}], "agg": "count", "op": "gt", "value": 0},
            'rule.where.0.property: "1x" is not a property key',
        ),
    ],
)
def test_rule_check__bad_share_or_where__refused_with_path(rule: dict[str, Any], message: str) -> None:
    issues, _ = rule_check(rule)
    assert any(str(issue).startswith(message) for issue in issues), [str(i) for i in issues]


# --- Tag rules: the code scheme, families, one door -----------------------------------------


@pytest.mark.parametrize("code", ["F3", "TP2", "A", "VIP", "CT1", "PS", "F0", "ABCDEFGH9999"])
def test_tag_rule_create__code_in_scheme__accepted(db: None, code: str) -> None:
    tag_rule = tag_rule_create(code=code, name=code, family="consumption", rule=PRICE_SENSITIVE)
    assert tag_rule.tag.code == code and tag_rule.tag.source == Tag.Source.COMPUTED


@pytest.mark.parametrize("code", ["f3", "F03", "3F", "TP-2", "rfm.vip", "ABCDEFGHI", "F12345", "", "T P"])
def test_tag_rule_create__code_outside_scheme__refused_on_code(db: None, code: str) -> None:
    with pytest.raises(ValidationError) as error:
        tag_rule_create(code=code, name="x", family="consumption", rule=PRICE_SENSITIVE)
    assert "tag code scheme" in error.value.message_dict["code"][0]
    assert not Tag.objects.filter(code=code).exists()


def test_tag_rule_create__tier_family__refused(db: None) -> None:
    with pytest.raises(ValidationError) as error:
        tag_rule_create(code="T", name="x", family="tier", rule=PRICE_SENSITIVE)
    assert "computed by dimensions" in error.value.message_dict["family"][0]


def test_tag_rule_create__existing_code__refused(db: None) -> None:
    Tag.objects.create(code="VIP", name="VIP by hand", family="consumption", source="manual")
    with pytest.raises(ValidationError) as error:
        tag_rule_create(code="VIP", name="x", family="consumption", rule=PRICE_SENSITIVE)
    assert "already exists" in error.value.message_dict["code"][0]


def test_tag_rule_create__invalid_rule__refused_with_path_and_nothing_saved(db: None) -> None:
    with pytest.raises(ValidationError) as error:
        tag_rule_create(code="PS", name="x", family="consumption", rule={**PRICE_SENSITIVE, "value": 2})
    assert error.value.message_dict["rule"][0].startswith("rule.value:")
    assert not Tag.objects.filter(code="PS").exists()


def test_tag_rule_update__rule_reads_own_tag__refused(db: None) -> None:
    tag_rule = tag_rule_create(code="PS", name="x", family="consumption", rule=PRICE_SENSITIVE)
    with pytest.raises(ValidationError) as error:
        tag_rule_update(tag_rule=tag_rule, rule={"not": {"tag": "PS"}})
    assert "cannot read the tag PS itself" in error.value.message_dict["rule"][0]


def test_tag_rule_update__cycle_through_other_rules__refused(db: None) -> None:
    x = tag_rule_create(code="X", name="x", family="behaviour", rule=PRICE_SENSITIVE)
    tag_rule_create(code="Y", name="y", family="behaviour", rule={"tag": "X"})
    tag_rule_create(code="Z", name="z", family="behaviour", rule={"tag": "Y"})
    with pytest.raises(ValidationError) as error:
        tag_rule_update(tag_rule=x, rule={"tag": "Z"})
    assert "X → Z → Y → X" in error.value.message_dict["rule"][0]


def test_tag_rule_order__rule_reading_another__runs_after_it(db: None) -> None:
    tag_rule_create(code="Z", name="z", family="behaviour", rule=PRICE_SENSITIVE)
    tag_rule_create(code="A", name="a", family="behaviour", rule={"tag": "Z"})
    tag_rule_create(code="M", name="m", family="behaviour", rule=PRICE_SENSITIVE)
    assert tag_rule_order(["A", "M", "Z"]) == ["Z", "A", "M"]


# --- Recompute: set-based, history, manual tags untouched ----------------------------------


def _ps_rule(**kwargs: Any) -> TagRule:
    return tag_rule_create(code="PS", name="Price-sensitive", family="consumption", rule=PRICE_SENSITIVE, **kwargs)


def test_tag_rule_recompute__first_run__computed_rows_and_open_history(shop: dict[str, Customer]) -> None:
    tag_rule = _ps_rule()
    outcome = tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF)
    assert outcome.status == "succeeded", outcome.error
    assert holders("PS") == {"B": "computed", "C": "computed"}
    history = set(
        TagHistory.objects.filter(tag__code="PS").values_list("customer__external_id", "gained_at", "lost_at")
    )
    assert history == {("B", AS_OF, None), ("C", AS_OF, None)}
    tag_rule.refresh_from_db()
    assert tag_rule.size == 2 and outcome.changed == 2
    run = RecomputeRun.objects.get(pk=outcome.run_id)
    assert run.target == "tag:PS" and run.details["gained"] == 2 and run.details["lost"] == 0


def test_tag_rule_recompute__unchanged_data__writes_nothing(shop: dict[str, Customer]) -> None:
    tag_rule = _ps_rule()
    tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF)
    again = tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF + DAY)
    assert again.status == "succeeded" and again.changed == 0
    assert TagHistory.objects.filter(tag__code="PS").count() == 2
    assert set(CustomerTag.objects.filter(tag__code="PS").values_list("assigned_at", flat=True)) == {AS_OF}


def test_tag_rule_recompute__customer_stops_matching__loses_tag_history_closed(
    world: World, shop: dict[str, Customer]
) -> None:
    tag_rule = _ps_rule()
    tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF)
    # C orders again without a coupon: 2/5 < 1/2. A orders twice with one: 2/5 still < 1/2.
    _order(world, shop["C"], 1, product="TP")
    later = AS_OF + 2 * DAY
    outcome = tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=later)
    assert holders("PS") == {"B": "computed"}
    assert outcome.changed == 1
    rows = TagHistory.objects.filter(tag__code="PS", customer=shop["C"]).values_list("gained_at", "lost_at")
    assert list(rows) == [(AS_OF, later)]


def test_tag_rule_recompute__customer_regains__second_history_period(world: World, shop: dict[str, Customer]) -> None:
    tag_rule = _ps_rule()
    tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF)
    _order(world, shop["C"], 1, product="TP")  # 2/5: loses
    t1 = AS_OF + DAY
    tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=t1)
    _order(world, shop["C"], 0.5, coupon="BACK")  # 3/6: regains at exactly half
    t2 = AS_OF + 2 * DAY
    tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=t2)
    rows = TagHistory.objects.filter(tag__code="PS", customer=shop["C"]).order_by("gained_at")
    assert list(rows.values_list("gained_at", "lost_at")) == [(AS_OF, t1), (t2, None)]


def test_tag_rule_recompute__manual_holder_not_matching__keeps_manual_tag(
    shop: dict[str, Customer], growth_user: Any
) -> None:
    tag_rule = _ps_rule()
    set_at = AS_OF - DAY
    customer_tag_add(customer=shop["D"], tag=tag_rule.tag, by=growth_user, at=set_at)
    tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF)
    row = CustomerTag.objects.get(customer=shop["D"], tag=tag_rule.tag)
    assert (row.source, row.assigned_by, row.assigned_at) == ("manual", growth_user, set_at)
    history = TagHistory.objects.filter(customer=shop["D"], tag=tag_rule.tag)
    assert list(history.values_list("source", "gained_at", "lost_at", "changed_by")) == [
        ("manual", set_at, None, growth_user.pk)
    ]


def test_tag_rule_recompute__manual_holder_matching__no_computed_row_added(
    shop: dict[str, Customer], growth_user: Any
) -> None:
    tag_rule = _ps_rule()
    customer_tag_add(customer=shop["B"], tag=tag_rule.tag, by=growth_user, at=AS_OF - DAY)
    outcome = tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF)
    assert holders("PS") == {"B": "manual", "C": "computed"}
    assert outcome.changed == 1  # only C gained
    assert TagHistory.objects.filter(customer=shop["B"], tag=tag_rule.tag).count() == 1


def test_customer_tag_add__computed_holder__becomes_manual_and_survives_losing_the_rule(
    world: World, shop: dict[str, Customer], growth_user: Any
) -> None:
    tag_rule = _ps_rule()
    tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF)
    pinned_at = AS_OF + DAY / 2
    customer_tag_add(customer=shop["C"], tag=tag_rule.tag, by=growth_user, at=pinned_at)
    _order(world, shop["C"], 0, product="TP")  # 2/5: the rule no longer matches C
    tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF + DAY)
    assert holders("PS") == {"B": "computed", "C": "manual"}
    rows = TagHistory.objects.filter(customer=shop["C"], tag=tag_rule.tag).order_by("gained_at")
    assert list(rows.values_list("source", "gained_at", "lost_at")) == [
        ("computed", AS_OF, pinned_at),
        ("manual", pinned_at, None),
    ]


def test_customer_tag_remove__manual__history_records_who_and_when(shop: dict[str, Customer], growth_user: Any) -> None:
    tag = Tag.objects.create(code="CALLBACK", name="Asked for a call", family="behaviour", source="manual")
    customer_tag_add(customer=shop["A"], tag=tag, by=growth_user, at=AS_OF)
    assert customer_tag_remove(customer=shop["A"], tag=tag, by=growth_user, at=AS_OF + DAY) is True
    assert customer_tag_remove(customer=shop["A"], tag=tag, by=growth_user, at=AS_OF + DAY) is False
    assert not CustomerTag.objects.filter(tag=tag).exists()
    row = TagHistory.objects.get(tag=tag)
    assert (row.gained_at, row.lost_at, row.changed_by_id) == (AS_OF, AS_OF + DAY, growth_user.pk)


def test_customer_tag_add__tier_tag__refused(shop: dict[str, Customer], growth_user: Any) -> None:
    tier = Tag.objects.filter(family="tier").first()
    with pytest.raises(ValidationError):
        customer_tag_add(customer=shop["A"], tag=tier, by=growth_user)


def test_dimension_recompute__manual_row_on_tier_tag__not_removed_when_customer_moves(
    world: World, growth_user: Any
) -> None:
    # A manual row on a tier tag (set before sources were recorded) outlives the recompute.
    customer = world.customer("M")
    no_purchase = Tag.objects.get(code="rfm.no_purchase")
    value = Tag.objects.get(code="rfm.important_value")
    recompute("rfm")
    assert set(CustomerTag.objects.filter(customer=customer).values_list("tag__code", flat=True)) == {"rfm.no_purchase"}
    CustomerTag.objects.filter(customer=customer, tag=no_purchase).update(source="manual")
    CustomerTag.objects.create(customer=customer, tag=value, source="manual", assigned_by=growth_user)
    world.order(customer, 1, "50.00")
    recompute("rfm", as_of=AS_OF + DAY)
    rows = dict(CustomerTag.objects.filter(customer=customer).values_list("tag__code", "source"))
    assert rows["rfm.no_purchase"] == "manual" and rows["rfm.important_value"] == "manual"


def test_recompute_all__tag_rules_between_dimensions_and_segments__dependencies_first(
    shop: dict[str, Customer],
) -> None:
    # "A" reads the computed tag "Z" and "Z" reads a layer: sorted by code, A would run
    # first and see no holders of Z.
    tag_rule_create(code="Z", name="z", family="consumption", rule={"layer": "rfm:no_purchase"})
    tag_rule_create(code="A", name="a", family="consumption", rule={"tag": "Z"})
    from segments.services.segments import segment_create

    segment_create(key="holds-a", name="holds A", rule={"tag": "A"})
    outcomes = recompute_all(as_of=AS_OF)
    targets = [o.target for o in outcomes]
    assert targets.index("dimension:rfm") < targets.index("tag:Z") < targets.index("tag:A")
    assert targets.index("tag:A") < targets.index("segment:holds-a")
    assert all(o.status == "succeeded" for o in outcomes), [o.error for o in outcomes]
    assert set(holders("A")) == set(holders("Z")) == {"D"}
    from segments.models import Segment

    assert Segment.objects.get(key="holds-a").size == len(holders("Z"))


def test_recompute_all__inactive_tag_rule__skipped_holders_kept(shop: dict[str, Customer]) -> None:
    tag_rule = _ps_rule()
    tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF)
    tag_rule_update(tag_rule=tag_rule, is_active=False, rule={**PRICE_SENSITIVE, "value": 0})
    outcomes = recompute_all(as_of=AS_OF + DAY)
    assert "tag:PS" not in [o.target for o in outcomes]
    assert set(holders("PS")) == {"B", "C"}


def test_tag_rule_recompute__as_of_before_last_run__fails_and_keeps_holders(shop: dict[str, Customer]) -> None:
    tag_rule = _ps_rule()
    tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF)
    outcome = tag_rule_recompute(tag_rule_id=tag_rule.pk, as_of=AS_OF - DAY)
    assert outcome.status == "failed" and "before the last recompute" in outcome.error
    assert set(holders("PS")) == {"B", "C"}


def test_tag_rule_recompute__every_family__hand_worked_holders(shop: dict[str, Customer]) -> None:
    rules = {
        # static: city tier 1 (the number; C's "1" is a string and is not tier 1)
        ("CT1", "static"): {"attribute": "city_tier", "op": "eq", "value": 1},
        # consumption: repurchased (2+ orders), bought TP twice, price-sensitive
        ("F1", "consumption"): {"event": "order", "agg": "count", "op": "gte", "value": 2},
        ("TP2", "consumption"): {"event": "order", "where": [TP], "agg": "count", "op": "gte", "value": 2},
        ("PS", "consumption"): PRICE_SENSITIVE,
        # behaviour: acquisition channel, joined a referral, claimed a coupon
        ("CHS", "behaviour"): {"attribute": "channel", "op": "eq", "value": "social"},
        ("REF", "behaviour"): {"event": "referral_signup", "agg": "count", "op": "gte", "value": 1},
        ("CPN", "behaviour"): {"event": "coupon_redeemed", "agg": "count", "op": "gte", "value": 1},
    }
    for (code, family), rule in rules.items():
        tag_rule_create(code=code, name=code, family=family, rule=rule)
    outcomes = recompute_all(as_of=AS_OF, dimension_keys=[], tag_codes=[code for code, _ in rules])
    assert all(o.status == "succeeded" for o in outcomes)
    assert {code: set(holders(code)) for code, _ in rules} == {
        "CT1": {"A"},
        "F1": {"A", "B", "C"},
        "TP2": {"A"},
        "PS": {"B", "C"},
        "CHS": {"A"},
        "REF": {"A"},
        "CPN": {"A"},
    }


def test_tag_rule_recompute__vip_rank_tie_at_boundary__both_tied_customers_hold_it(world: World) -> None:
    # Spend: P 300, Q 200, R 200, S 100, T 0 (among "with_value": N = 4). Top 25%:
    # (rank − 1)·100 < 25·4 = 100 → rank 1 only (P). Top 50%: < 200 → ranks 1 and 2; Q and R
    # tie at rank 2, so both are in (S has rank 4).
    spend = {"P": "300.00", "Q": "200.00", "R": "200.00", "S": "100.00"}
    for code, amount in spend.items():
        world.order(world.customer(code), 5, amount)
    world.customer("T")
    rank = {"rank": {"event": "order", "agg": "sum", "window": {"last_days": 365}}, "among": "with_value"}
    top25 = tag_rule_create(code="VIP", name="VIP", family="consumption", rule={**rank, "top_percent": 25})
    top50 = tag_rule_create(code="TOPB", name="Top half", family="consumption", rule={**rank, "top_percent": 50})
    tag_rule_recompute(tag_rule_id=top25.pk, as_of=AS_OF)
    tag_rule_recompute(tag_rule_id=top50.pk, as_of=AS_OF)
    assert set(holders("VIP")) == {"P"}
    assert set(holders("TOPB")) == {"P", "Q", "R"}
