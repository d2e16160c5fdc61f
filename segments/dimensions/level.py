"""Membership levels (a value pyramid of 3–7 levels).

A customer *earns* the highest level whose ``min`` their value measure reaches (the
measure: the count or amount sum of an event type over the last ``window_days``, or all
time; a sum is exact, in integer hundredths, see ``segments.money``). The level they
*hold* follows the validity rule, using their current level and its ``valid_until`` (kept
on their CustomerLayer row) as input:

- no level yet, or earned above held: **upgrade at once**; valid until as_of + the new
  level's ``validity_days``;
- earned at or below held, and the held level is still valid (valid_until > as_of):
  **keep** it, validity unchanged;
- the held level's validity has ended (or it has none): re-evaluate: hold the earned
  level (the same level renews, a lower one is a downgrade, straight to the earned
  level), valid for a new period.

A level without ``validity_days`` is held only while earned. The lowest level has
``min`` 0, so every customer holds some level.
"""

from __future__ import annotations

from typing import Any

from segments import money
from segments.dimensions.base import (
    MEASURE_SCHEMA,
    NAME,
    SLUG,
    LayerSpec,
    StageContext,
    check_event_types,
    check_schema,
    table,
)
from segments.rules.validation import RuleIssue

KIND = "level"

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["measure", "levels"],
    "properties": {
        "measure": MEASURE_SCHEMA,
        "levels": {
            "type": "array",
            "minItems": 3,
            "maxItems": 7,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "name", "min"],
                "properties": {
                    "key": SLUG,
                    "name": NAME,
                    "min": {"type": "number", "minimum": 0},
                    "validity_days": {"type": ["integer", "null"], "minimum": 1, "maximum": 36500},
                },
            },
        },
    },
}


def default_config() -> dict[str, Any]:
    return {
        "measure": {"event_type": "order", "agg": "sum", "window_days": 365},
        "levels": [
            {"key": "basic", "name": "Basic", "min": 0},
            {"key": "silver", "name": "Silver", "min": 200, "validity_days": 365},
            {"key": "gold", "name": "Gold", "min": 1000, "validity_days": 365},
            {"key": "platinum", "name": "Platinum", "min": 3000, "validity_days": 365},
            {"key": "diamond", "name": "Diamond", "min": 10000, "validity_days": 365},
        ],
    }


def layer_specs(config: dict[str, Any]) -> list[LayerSpec]:
    return [LayerSpec(level["key"], level["name"]) for level in config["levels"]]


def config_issues(config: Any, path: str = "config") -> list[RuleIssue]:
    from segments.dimensions.base import slug_issues

    issues = check_schema(CONFIG_SCHEMA, config, path)
    if issues:
        return issues
    levels = config["levels"]
    issues += slug_issues(levels, f"{path}.levels")
    if levels[0]["min"] != 0:
        issues.append(RuleIssue(f"{path}.levels.0.min", "the lowest level must start at 0 so everyone has a level"))
    for index in range(1, len(levels)):
        if levels[index]["min"] <= levels[index - 1]["min"]:
            issues.append(
                RuleIssue(f"{path}.levels.{index}.min", "levels go from lowest to highest: min must increase")
            )
    measure = config["measure"]
    return issues + check_event_types(
        [(f"{path}.measure.event_type", measure["event_type"])], monetary=measure["agg"] == "sum"
    )


def stage_select(ctx: StageContext) -> tuple[str, list[Any]]:
    from django.db import connection

    from segments.models import EventType

    config, layers = ctx.config, ctx.layers
    levels = config["levels"]
    measure = config["measure"]
    event_type_id = EventType.objects.get(code=measure["event_type"]).id
    # A sum is exact integer hundredths (segments.money), compared with each level's
    # minimum in hundredths rounded up: a total of exactly the minimum always earns the level.
    money_sum = measure["agg"] == "sum"
    value = money.amount_sum_sql() if money_sum else "COUNT(*)"
    window = "AND occurred_at >= %s" if measure.get("window_days") else ""
    window_params = [ctx.days_ago(measure["window_days"])] if measure.get("window_days") else []

    earned = " ".join(f"WHEN COALESCE(m.v, 0) >= %s THEN {i}" for i in reversed(range(1, len(levels))))
    minimums = [levels[i]["min"] for i in reversed(range(1, len(levels)))]
    earned_params = [money.at_least(m) for m in minimums] if money_sum else minimums
    held = " ".join(f"WHEN %s THEN {i}" for i in range(len(levels)))
    held_params = [layers[level["key"]] for level in levels]
    layer_of = " ".join(f"WHEN {i} THEN %s" for i in range(len(levels)))
    renewal = " ".join(f"WHEN {i} THEN %s" for i in range(len(levels)))
    renewal_params = [
        ctx.days_ahead(level["validity_days"]) if level.get("validity_days") else None for level in levels
    ]
    # PostgreSQL must know the CASE's type when every branch is a parameter (SQLite's
    # CAST to a "datetime" would turn ISO text into a number, so it gets none).
    renewal_case = f"CASE level {renewal} END"
    if connection.vendor == "postgresql":
        renewal_case = f"CAST({renewal_case} AS timestamp with time zone)"
    sql = f"""
        WITH measure AS (
            SELECT customer_id, {value} AS v FROM {table("Event")}
            WHERE event_type_id = %s AND occurred_at <= %s {window}
            GROUP BY customer_id
        ),
        held AS (
            SELECT customer_id, layer_id, valid_until FROM {table("CustomerLayer")} WHERE dimension_id = %s
        ),
        x AS (
            SELECT c.id AS customer_id,
                   CASE {earned} ELSE 0 END AS earned,
                   CASE h.layer_id {held} END AS held,
                   h.valid_until AS held_valid_until
            FROM {table("Customer")} c
            LEFT JOIN measure m ON m.customer_id = c.id
            LEFT JOIN held h ON h.customer_id = c.id
        ),
        y AS (
            SELECT customer_id, earned, held_valid_until,
                   CASE WHEN held IS NULL OR earned >= held THEN earned
                        WHEN held_valid_until > %s THEN held
                        ELSE earned END AS level,
                   CASE WHEN held IS NULL OR earned > held THEN 1
                        WHEN held_valid_until > %s THEN 0
                        ELSE 1 END AS renew
            FROM x
        )
        SELECT customer_id,
               CASE level {layer_of} END AS layer_id,
               CASE WHEN renew = 1 THEN {renewal_case} ELSE held_valid_until END AS valid_until,
               {ctx.null_int} AS r, {ctx.null_int} AS f, {ctx.null_int} AS m
        FROM y
    """
    as_of = ctx.dt(ctx.as_of)
    params = [
        event_type_id,
        as_of,
        *window_params,
        ctx.dimension_id,
        *earned_params,
        *held_params,
        as_of,
        as_of,
        *[layers[level["key"]] for level in levels],
        *renewal_params,
    ]
    return sql, params
