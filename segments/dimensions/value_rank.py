"""Value pyramid: layers by rank of a value measure (top 1% / 10% / 30% …).

The measure is the count or the amount sum of one event type over the last
``window_days`` up to ``as_of`` (or all time); a sum is exact, in integer hundredths
(``segments.money``), so equal spenders are equal on SQLite too. The customers with a
positive value are *ranked*, N of them; the others are in ``no_value``.

**Cut points** (``cuts``, ascending ``top_percent``, e.g. 1, 10, 30) define the layers from
the top: a customer is in the first cut whose ``top_percent`` p satisfies

    (number of ranked customers with a strictly greater value) < p% · N

i.e. ``RANK() OVER (ORDER BY value DESC) − 1 < p·N/100``, computed in integers as
``10000 · (RANK() − 1) < round(100·p) · N`` (p may have two decimals: 0.5%). Ranked
customers beyond the last cut are in ``rest``.

**Tie rule**: equal values have the same RANK(), hence the same layer: a tie straddling a
cut point goes *up* as a whole (the layer can hold more than p% of N), never split by row
order, so a recompute of unchanged data gives the same layers every time (``ntile()`` or
``ROW_NUMBER()`` would split a tie arbitrarily). Example: values 500, 300, 300, 100 with a
top-50% cut (N = 4): ranks 1, 2, 2, 4 → 0 < 2, 1 < 2, 1 < 2, 3 ≥ 2 → three customers
in the top 50%.

Scoped to a role (``Dimension.role``), N and the ranks count only the customers holding
the role: the top 10% of sellers, not of everyone. Layers are recomputed with the others
(nightly); the moves between them are in the layer history like any dimension's.
"""

from __future__ import annotations

from decimal import Decimal
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
    slug_issues,
    table,
)
from segments.rules.validation import RuleIssue

KIND = "value_rank"

REST = ("rest", "Everyone else with a value")
NO_VALUE = ("no_value", "No value in window")

CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["measure", "cuts"],
    "properties": {
        "measure": MEASURE_SCHEMA,
        "cuts": {
            "type": "array",
            "minItems": 1,
            "maxItems": 6,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "name", "top_percent"],
                "properties": {
                    "key": SLUG,
                    "name": NAME,
                    "top_percent": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 100},
                },
            },
        },
    },
}


def default_config() -> dict[str, Any]:
    return {
        "measure": {"event_type": "order", "agg": "sum", "window_days": 365},
        "cuts": [
            {"key": "top_1", "name": "Top 1%", "top_percent": 1},
            {"key": "top_10", "name": "Top 1–10%", "top_percent": 10},
            {"key": "top_30", "name": "Top 10–30%", "top_percent": 30},
        ],
    }


def layer_specs(config: dict[str, Any]) -> list[LayerSpec]:
    return [LayerSpec(cut["key"], cut["name"]) for cut in config["cuts"]] + [LayerSpec(*REST), LayerSpec(*NO_VALUE)]


def basis_points(top_percent: float | int) -> int | None:
    """``top_percent`` in hundredths of a percent, or None when it has more than two decimals."""
    value = Decimal(str(top_percent)) * 100
    return int(value) if value == value.to_integral_value() else None


def config_issues(config: Any, path: str = "config") -> list[RuleIssue]:
    issues = check_schema(CONFIG_SCHEMA, config, path)
    if issues:
        return issues
    cuts = config["cuts"]
    issues += slug_issues(cuts, f"{path}.cuts")
    for index, cut in enumerate(cuts):
        if cut["key"] in (REST[0], NO_VALUE[0]):
            issues.append(
                RuleIssue(f"{path}.cuts.{index}.key", f"'{cut['key']}' is reserved for the layer below the cuts")
            )
        if basis_points(cut["top_percent"]) is None:
            issues.append(RuleIssue(f"{path}.cuts.{index}.top_percent", "at most two decimals, e.g. 0.5"))
        if index and cut["top_percent"] <= cuts[index - 1]["top_percent"]:
            issues.append(
                RuleIssue(f"{path}.cuts.{index}.top_percent", "cuts go from the top down: top_percent must increase")
            )
    measure = config["measure"]
    return issues + check_event_types(
        [(f"{path}.measure.event_type", measure["event_type"])], monetary=measure["agg"] == "sum"
    )


def stage_select(ctx: StageContext) -> tuple[str, list[Any]]:
    """One statement: aggregate, rank (window function), place by the cut points."""
    from django.db import connection

    from segments.models import EventType

    config, layers = ctx.config, ctx.layers
    measure = config["measure"]
    event_type_id = EventType.objects.get(code=measure["event_type"]).id
    value = money.amount_sum_sql() if measure["agg"] == "sum" else "COUNT(*)"
    window = "AND occurred_at >= %s" if measure.get("window_days") else ""
    window_params = [ctx.days_ago(measure["window_days"])] if measure.get("window_days") else []
    cuts = config["cuts"]
    # Ranked customers, then everyone else. A LEFT JOIN of the customers to ``ranked`` made
    # SQLite scan the materialized ranking once per customer (it built no automatic index
    # on it): 60 s at 20,000 customers. SQLite's ``NOT IN`` builds its lookup once;
    # PostgreSQL's ``NOT IN`` is a hashed subplan only while the ranking fits work_mem (a
    # rescan per customer beyond), its ``NOT EXISTS`` a hash anti join at any size.
    if connection.vendor == "postgresql":
        unranked = "NOT EXISTS (SELECT 1 FROM ranked x WHERE x.customer_id = c.id)"
    else:
        unranked = "c.id NOT IN (SELECT customer_id FROM ranked)"
    # Integers only (RANK() and COUNT(*) are bigint on PostgreSQL): no float rounding at a cut.
    whens = " ".join("WHEN 10000 * (r.rnk - 1) < %s * r.n THEN %s" for _ in cuts)
    when_params: list[Any] = []
    for cut in cuts:
        when_params += [basis_points(cut["top_percent"]), layers[cut["key"]]]
    sql = f"""
        WITH measure AS (
            SELECT customer_id, {value} AS v FROM {table("Event")}
            WHERE event_type_id = %s AND occurred_at <= %s {window} {ctx.scope_filter("customer_id")}
            GROUP BY customer_id
        ),
        ranked AS (
            SELECT customer_id, RANK() OVER (ORDER BY v DESC) AS rnk, COUNT(*) OVER () AS n
            FROM measure WHERE v > 0
        )
        SELECT r.customer_id AS customer_id, CASE {whens} ELSE %s END AS layer_id,
               {ctx.null_ts} AS valid_until, {ctx.null_int} AS r, {ctx.null_int} AS f, {ctx.null_int} AS m
        FROM ranked r
        UNION ALL
        SELECT c.id, %s, {ctx.null_ts}, {ctx.null_int}, {ctx.null_int}, {ctx.null_int}
        FROM {table("Customer")} c
        WHERE {unranked}
    """
    params = [
        event_type_id,
        ctx.dt(ctx.as_of),
        *window_params,
        *when_params,
        layers[REST[0]],
        layers[NO_VALUE[0]],
    ]
    return sql, params


def stage_stats(ctx: StageContext, target: str) -> dict[str, Any]:
    ctx.cursor.execute(f"SELECT COUNT(*) FROM {target} WHERE layer_id <> %s", [ctx.layers[NO_VALUE[0]]])
    return {"ranked": ctx.cursor.fetchone()[0]}
