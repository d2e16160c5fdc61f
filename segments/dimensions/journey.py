"""Key-path (journey) milestones: an ordered list, each later milestone a rule.

The first milestone is the starting point (no rule: everyone); a customer sits in the
*last* milestone whose rule they match (rules are the segment rules of
``segments.rules``, so any path can be described: e-commerce, education, high-ticket
sales…). The default is the e-commerce path new → first purchase → repeat buyer → VIP.
Milestones with all-time counts are monotonic: a customer never moves back.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Case, F, IntegerField, Value, When

from segments.dimensions.base import NAME, SLUG, LayerSpec, StageContext, check_schema, slug_issues
from segments.rules.validation import RuleIssue, rule_check

KIND = "journey"

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["milestones"],
    "properties": {
        "milestones": {
            "type": "array",
            "minItems": 2,
            "maxItems": 12,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "name"],
                "properties": {"key": SLUG, "name": NAME, "rule": {"type": ["object", "null"]}},
            },
        }
    },
}


def default_config() -> dict[str, Any]:
    orders = {"event": "order", "agg": "count", "op": "gte"}
    return {
        "milestones": [
            {"key": "new", "name": "New", "rule": None},
            {"key": "first_purchase", "name": "First purchase", "rule": {**orders, "value": 1}},
            {"key": "repeat_buyer", "name": "Repeat buyer", "rule": {**orders, "value": 2}},
            {
                "key": "vip",
                "name": "VIP",
                "rule": {
                    "all": [
                        {**orders, "value": 5},
                        {"event": "order", "agg": "sum", "window": {"last_days": 365}, "op": "gte", "value": 1000},
                    ]
                },
            },
        ]
    }


def layer_specs(config: dict[str, Any]) -> list[LayerSpec]:
    return [LayerSpec(m["key"], m["name"]) for m in config["milestones"]]


def config_issues(config: Any, path: str = "config") -> list[RuleIssue]:
    issues = check_schema(CONFIG_SCHEMA, config, path)
    if issues:
        return issues
    milestones = config["milestones"]
    issues += slug_issues(milestones, f"{path}.milestones")
    if milestones[0].get("rule"):
        issues.append(RuleIssue(f"{path}.milestones.0.rule", "the first milestone is the starting point: no rule"))
    for index, milestone in enumerate(milestones[1:], start=1):
        if not milestone.get("rule"):
            issues.append(RuleIssue(f"{path}.milestones.{index}.rule", "every later milestone needs a rule"))
            continue
        issues += rule_check(milestone["rule"], path=f"{path}.milestones.{index}.rule")[0]
    return issues


def stage_select(ctx: StageContext) -> tuple[str, list[Any]]:
    from segments.models import Customer
    from segments.rules import rule_compile

    milestones = ctx.config["milestones"]
    whens = [
        When(rule_compile(m["rule"], as_of=ctx.as_of), then=Value(ctx.layers[m["key"]]))
        for m in reversed(milestones[1:])
    ]
    placed = Customer.objects.annotate(
        placed_customer=F("pk"),
        placed_layer=Case(*whens, default=Value(ctx.layers[milestones[0]["key"]]), output_field=IntegerField()),
    ).values_list("placed_customer", "placed_layer")
    sql, params = placed.query.sql_with_params()
    columns = f"{ctx.null_ts} AS valid_until, {ctx.null_int} AS r, {ctx.null_int} AS f, {ctx.null_int} AS m"
    return f"SELECT q.placed_customer AS customer_id, q.placed_layer AS layer_id, {columns} FROM ({sql}) q", list(
        params
    )
