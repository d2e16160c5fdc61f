"""Invalid rules are refused with a message that names where (service and schema)."""

from __future__ import annotations

from typing import Any

import pytest
from django.core.exceptions import ValidationError
from jsonschema import Draft202012Validator

from segments.models import Segment
from segments.rules import RULE_SCHEMA, rule_check
from segments.services.segments import segment_create, segment_update
from tests.factories import TagFactory

pytestmark = pytest.mark.django_db

ORDERS_3 = {"event": "order", "agg": "count", "window": {"last_days": 90}, "op": "gte", "value": 3}

VALID = [
    ORDERS_3,
    {"all": [ORDERS_3, {"not": {"tag": "VIP"}}]},
    {"any": [{"field": "signed_up_at", "op": "within_last_days", "value": 30}, {"layer": "rfm:important_value"}]},
    {"attribute": "city_tier", "op": "in", "value": ["1", "2"]},
    {"membership": {"plan": "plus"}, "agg": "latest_expiry", "op": "within_next_days", "value": 30},
    {"membership": {}, "agg": "active"},
    {"event": "order", "agg": "last", "op": "before_days_ago", "value": 60},
    {
        "event": "order",
        "agg": "sum",
        "window": {"between": ["2025-01-01", "2025-03-31"]},
        "op": "between",
        "value": [1, 9],
    },
    {"rank": {"event": "order", "agg": "sum", "window": {"last_days": 365}}, "top_percent": 10},
]

INVALID: list[tuple[str, Any, str, str]] = [
    # (id, rule, path, words in the message)
    ("not-an-object", [ORDERS_3], "rule", "must be an object"),
    ("unknown-node", {"events": "order"}, "rule", "unknown rule node"),
    ("two-kinds", {"tag": "VIP", "layer": "rfm:x"}, "rule", "one kind"),
    ("unknown-field", {"all": [{**ORDERS_3, "extra": 1}]}, "rule.all.0.extra", "unknown field 'extra'"),
    ("unknown-operator", {"all": [ORDERS_3, {**ORDERS_3, "op": "greater"}]}, "rule.all.1.op", "unknown operator"),
    ("operator-wrong-type", {**ORDERS_3, "op": "within_last_days"}, "rule.op", "does not apply to an event count"),
    ("unknown-event-type", {"any": [{**ORDERS_3, "event": "ordr"}]}, "rule.any.0.event", "unknown event type 'ordr'"),
    ("sum-of-non-monetary", {**ORDERS_3, "event": "login", "agg": "sum"}, "rule.event", "carries no amount"),
    ("value-wrong-type", {**ORDERS_3, "value": "3"}, "rule.value", "must be a number"),
    ("boolean-is-not-number", {**ORDERS_3, "value": True}, "rule.value", "must be a number"),
    ("missing-value", {"event": "order", "agg": "count", "op": "gte"}, "rule", "missing 'value'"),
    ("missing-op", {"event": "order", "agg": "count"}, "rule", "missing 'op'"),
    ("presence-takes-no-value", {"field": "email", "op": "exists", "value": 1}, "rule.value", "takes no value"),
    (
        "days-not-integer",
        {"field": "signed_up_at", "op": "within_last_days", "value": 1.5},
        "rule.value",
        "whole number of days",
    ),
    ("bad-date", {"field": "signed_up_at", "op": "before", "value": "yesterday"}, "rule.value", "not a date"),
    ("reversed-range", {**ORDERS_3, "op": "between", "value": [5, 1]}, "rule.value", "greater than high"),
    (
        "reversed-dates",
        {**ORDERS_3, "window": {"between": ["2025-03-01", "2025-01-01"]}},
        "rule.window.between",
        "after",
    ),
    (
        "window-both",
        {**ORDERS_3, "window": {"last_days": 3, "between": ["2025-01-01", "2025-01-02"]}},
        "rule.window",
        "either",
    ),
    ("window-zero", {**ORDERS_3, "window": {"last_days": 0}}, "rule.window.last_days", "minimum"),
    ("empty-all", {"all": []}, "rule.all", "at least 1"),
    ("unknown-tag", {"not": {"tag": "NOPE"}}, "rule.not.tag", "unknown tag 'NOPE'"),
    ("unknown-layer", {"layer": "rfm:nope"}, "rule.layer", "unknown layer 'rfm:nope'"),
    ("layer-syntax", {"layer": "important_value"}, "rule.layer", "not a layer key"),
    ("attribute-key", {"attribute": "city tier", "op": "eq", "value": "1"}, "rule.attribute", "not an attribute key"),
    ("attribute-mixed-list", {"attribute": "x", "op": "in", "value": [1, "a"]}, "rule.value", "strings or all numbers"),
    ("contains-on-number", {"attribute": "x", "op": "contains", "value": 3}, "rule.op", "does not apply"),
    ("active-takes-no-op", {"membership": {}, "agg": "active", "op": "eq"}, "rule.op", "takes no 'op'"),
    ("membership-filter", {"membership": {"tier": "x"}, "agg": "active"}, "rule.membership.tier", "unknown field"),
    ("rank-agg", {"rank": {"event": "order", "agg": "last"}, "top_percent": 10}, "rule.rank.agg", "unknown aggregate"),
    ("rank-percent", {"rank": {"event": "order", "agg": "sum"}, "top_percent": 0}, "rule.top_percent", "0"),
    ("unknown-customer-field", {"field": "password", "op": "exists"}, "rule.field", "unknown field"),
]


@pytest.mark.parametrize("rule", VALID)
def test_rule_check__valid_rule__no_issue_and_schema_agrees(rule: dict) -> None:
    TagFactory(code="VIP")  # layers (rfm:…) exist from the data migration
    assert rule_check(rule)[0] == []
    assert list(Draft202012Validator(RULE_SCHEMA).iter_errors(rule)) == []


@pytest.mark.parametrize(("rule", "path", "words"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_rule_check__invalid_rule__message_names_the_path(rule: Any, path: str, words: str) -> None:
    issues, _ = rule_check(rule)
    assert issues, "the rule should have been refused"
    assert any(issue.path == path and words in issue.message for issue in issues), [str(i) for i in issues]


def test_rule_schema__invalid_structure__full_schema_refuses_it_too() -> None:
    validator = Draft202012Validator(RULE_SCHEMA)
    for _, rule, _, _ in INVALID[:5]:  # the structural ones; the rest need meaning or the database
        assert list(validator.iter_errors(rule)), rule


def test_rule_check__several_problems__all_reported_with_paths() -> None:
    rule = {"all": [{**ORDERS_3, "op": "nope"}, {"tag": "NOPE"}, {**ORDERS_3, "event": "nope"}]}
    paths = {issue.path for issue in rule_check(rule)[0]}
    assert paths == {"rule.all.0.op", "rule.all.1.tag", "rule.all.2.event"}


def test_segment_create__invalid_rule__refused_with_rule_error_and_not_saved() -> None:
    with pytest.raises(ValidationError) as caught:
        segment_create(key="bad", name="Bad", rule={"all": [{**ORDERS_3, "event": "ordr"}]})
    assert "rule" in caught.value.message_dict
    assert caught.value.message_dict["rule"][0].startswith("rule.all.0.event: unknown event type 'ordr'")
    assert not Segment.objects.filter(key="bad").exists()


def test_segment_update__invalid_rule__refused_and_previous_rule_kept() -> None:
    segment = segment_create(key="good", name="Good", rule=ORDERS_3)
    with pytest.raises(ValidationError):
        segment_update(segment=segment, rule={"event": "order", "agg": "count", "op": "gte", "value": "x"})
    segment.refresh_from_db()
    assert segment.rule == ORDERS_3
