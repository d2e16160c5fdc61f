"""Membership expiry windows (for renewal campaigns).

Each customer's latest ``expires_at`` over their membership terms (of ``plans``, or all
plans when empty) decides the window, relative to ``as_of``:

- ``expiring_soon``: as_of ≤ latest expiry < as_of + ``expiring_within_days``
- ``valid``: latest expiry ≥ as_of + ``expiring_within_days`` (valid for longer)
- ``expired_recently``: as_of − ``expired_within_days`` ≤ latest expiry < as_of
- ``none``: no membership term, or the latest expired before that (lapsed)

A renewal is a new term, so a renewed member's latest expiry is the new term's.
"""

from __future__ import annotations

from typing import Any

from segments.dimensions.base import DAYS, LayerSpec, StageContext, check_schema, table
from segments.rules.validation import RuleIssue

KIND = "expiry"

WINDOWS = [
    ("expired_recently", "Expired within the last 3 months"),
    ("expiring_soon", "Expiring within the next 3 months"),
    ("valid", "Valid for more than 3 months"),
    ("none", "No current membership"),
]

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["expired_within_days", "expiring_within_days"],
    "properties": {
        "plans": {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
        "expired_within_days": DAYS,
        "expiring_within_days": DAYS,
    },
}


def default_config() -> dict[str, Any]:
    return {"plans": [], "expired_within_days": 90, "expiring_within_days": 90}


def layer_specs(config: dict[str, Any]) -> list[LayerSpec]:
    return [LayerSpec(key, name) for key, name in WINDOWS]


def config_issues(config: Any, path: str = "config") -> list[RuleIssue]:
    return check_schema(CONFIG_SCHEMA, config, path)


def stage_select(ctx: StageContext) -> tuple[str, list[Any]]:
    config, layers = ctx.config, ctx.layers
    plans = config.get("plans") or []
    plan_filter = f"WHERE plan IN ({', '.join(['%s'] * len(plans))})" if plans else ""
    sql = f"""
        WITH latest AS (
            SELECT customer_id, MAX(expires_at) AS expires_at
            FROM {table("Membership")} {plan_filter}
            GROUP BY customer_id
        )
        SELECT c.id AS customer_id, CASE
            WHEN l.expires_at IS NULL THEN %s
            WHEN l.expires_at >= %s THEN %s
            WHEN l.expires_at >= %s THEN %s
            WHEN l.expires_at >= %s THEN %s
            ELSE %s
        END AS layer_id,
        {ctx.null_ts} AS valid_until, {ctx.null_int} AS r, {ctx.null_int} AS f, {ctx.null_int} AS m
        FROM {table("Customer")} c LEFT JOIN latest l ON l.customer_id = c.id
    """
    params = [
        *plans,
        layers["none"],
        ctx.days_ahead(config["expiring_within_days"]),
        layers["valid"],
        ctx.dt(ctx.as_of),
        layers["expiring_soon"],
        ctx.days_ago(config["expired_within_days"]),
        layers["expired_recently"],
        layers["none"],
    ]
    return sql, params
