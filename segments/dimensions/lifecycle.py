"""Lifecycle stages with a churn-warning line.

"Last seen" is the customer's latest activity event (types in ``activity_event_types``)
up to ``as_of``, or, without any activity in the look-back horizon, their sign-up time
(or, failing that, when the record was created). The first matching stage wins:

1. ``churned``: last seen more than ``churned_days`` ago.
2. ``churn_warning``: last seen more than ``churn_warning_days`` ago (the churn-warning
   line); also, when ``warning_below_events`` is set, a buyer with fewer activity events
   than that in the activity window.
3. ``new``: signed up within the last ``new_days`` days.
4. ``visitor``: never made a purchase (``purchase_event_type``): a potential customer.
5. ``core``: at least ``core_min_events`` activity events and ``core_min_purchases``
   purchases in the last ``activity_window_days`` days.
6. ``active``: everyone else (a buyer seen recently).

Empty database: no rows. No events at all: customers are new / visitor / churned by their
sign-up dates alone.
"""

from __future__ import annotations

from typing import Any

from segments.dimensions.base import (
    DAYS,
    LayerSpec,
    StageContext,
    check_event_types,
    check_schema,
    event_type_ids,
    table,
)
from segments.rules.validation import RuleIssue

KIND = "lifecycle"

STAGES = [
    ("visitor", "Visitor / potential"),
    ("new", "New"),
    ("active", "Active"),
    ("core", "Core"),
    ("churn_warning", "Churn warning"),
    ("churned", "Churned"),
]

_count = {"type": "integer", "minimum": 0, "maximum": 1_000_000}
CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "activity_event_types",
        "purchase_event_type",
        "new_days",
        "activity_window_days",
        "core_min_events",
        "core_min_purchases",
        "churn_warning_days",
        "churned_days",
    ],
    "properties": {
        "activity_event_types": {
            "type": "array",
            "items": {"type": "string", "minLength": 1},
            "minItems": 1,
            "uniqueItems": True,
        },
        "purchase_event_type": {"type": "string", "minLength": 1},
        "new_days": DAYS,
        "activity_window_days": DAYS,
        "core_min_events": _count,
        "core_min_purchases": _count,
        "churn_warning_days": DAYS,
        "churned_days": DAYS,
        "warning_below_events": {"type": ["integer", "null"], "minimum": 1, "maximum": 1_000_000},
    },
}


def default_config() -> dict[str, Any]:
    return {
        "activity_event_types": ["login", "visit", "add_to_cart", "order"],
        "purchase_event_type": "order",
        "new_days": 30,
        "activity_window_days": 30,
        "core_min_events": 10,
        "core_min_purchases": 2,
        "churn_warning_days": 30,
        "churned_days": 90,
        "warning_below_events": None,
    }


def layer_specs(config: dict[str, Any]) -> list[LayerSpec]:
    return [LayerSpec(key, name) for key, name in STAGES]


def config_issues(config: Any, path: str = "config") -> list[RuleIssue]:
    issues = check_schema(CONFIG_SCHEMA, config, path)
    if issues:
        return issues
    if config["churn_warning_days"] >= config["churned_days"]:
        issues.append(RuleIssue(f"{path}.churn_warning_days", "the churn-warning line must come before churned_days"))
    codes = [(f"{path}.activity_event_types.{i}", c) for i, c in enumerate(config["activity_event_types"])]
    codes.append((f"{path}.purchase_event_type", config["purchase_event_type"]))
    return issues + check_event_types(codes)


def stage_select(ctx: StageContext) -> tuple[str, list[Any]]:
    config, layers = ctx.config, ctx.layers
    ids = event_type_ids([*config["activity_event_types"], config["purchase_event_type"]])
    activity_ids = [ids[code] for code in config["activity_event_types"]]
    purchase_id = ids[config["purchase_event_type"]]
    horizon_days = max(config["churned_days"], config["activity_window_days"])
    window_start = ctx.days_ago(config["activity_window_days"])
    as_of = ctx.dt(ctx.as_of)
    in_list = ", ".join(["%s"] * len(activity_ids))
    warning_below = config.get("warning_below_events")
    low_activity = "OR (buyer_id IS NOT NULL AND n_active < %s)" if warning_below else ""
    sql = f"""
        WITH act AS (
            SELECT customer_id,
                   MAX(occurred_at) AS last_at,
                   SUM(CASE WHEN occurred_at >= %s THEN 1 ELSE 0 END) AS n_active,
                   SUM(CASE WHEN occurred_at >= %s AND event_type_id = %s THEN 1 ELSE 0 END) AS n_purchases
            FROM {table("Event")}
            WHERE event_type_id IN ({in_list}) AND occurred_at >= %s AND occurred_at <= %s
            GROUP BY customer_id
        ),
        buyers AS (
            SELECT customer_id FROM {table("Event")}
            WHERE event_type_id = %s AND occurred_at <= %s GROUP BY customer_id
        ),
        seen AS (
            SELECT c.id AS customer_id, c.signed_up_at,
                   COALESCE(a.last_at, c.signed_up_at, c.created_at) AS last_seen,
                   COALESCE(a.n_active, 0) AS n_active, COALESCE(a.n_purchases, 0) AS n_purchases,
                   a.customer_id AS act_id, b.customer_id AS buyer_id
            FROM {table("Customer")} c
            LEFT JOIN act a ON a.customer_id = c.id
            LEFT JOIN buyers b ON b.customer_id = c.id
        )
        SELECT customer_id, CASE
            WHEN last_seen < %s THEN %s
            WHEN last_seen < %s {low_activity} THEN %s
            WHEN signed_up_at IS NOT NULL AND signed_up_at >= %s THEN %s
            WHEN buyer_id IS NULL THEN %s
            WHEN n_active >= %s AND n_purchases >= %s THEN %s
            ELSE %s
        END AS layer_id,
        {ctx.null_ts} AS valid_until, {ctx.null_int} AS r, {ctx.null_int} AS f, {ctx.null_int} AS m
        FROM seen
    """
    params: list[Any] = [
        window_start,
        window_start,
        purchase_id,
        *activity_ids,
        ctx.days_ago(horizon_days),
        as_of,
        purchase_id,
        as_of,
        ctx.days_ago(config["churned_days"]),
        layers["churned"],
        ctx.days_ago(config["churn_warning_days"]),
        *([warning_below] if warning_below else []),
        layers["churn_warning"],
        ctx.days_ago(config["new_days"]),
        layers["new"],
        layers["visitor"],
        config["core_min_events"],
        config["core_min_purchases"],
        layers["core"],
        layers["active"],
    ]
    return sql, params
