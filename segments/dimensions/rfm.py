"""RFM value tiers.

Over a window (default the last 90 days up to ``as_of``), for each customer with at least
one purchase event in it: R = time of the last purchase, F = number of purchases,
M = sum of their amounts, exact on every database (integer hundredths, see
``segments.money``: on SQLite a sum of binary doubles would make 12.00 + 18.30 and
30.24 + 0.06 differ and split equal spenders). Each is scored 1–5 (5 best):

- ``"quintiles"`` (default): by rank among the customers in the window, with ties kept
  together: ``score = 1 + floor(5 · (RANK() − 1) / N)`` where RANK() orders ascending
  (R by the last purchase's timestamp, so the most recent get 5) and N is the number of
  customers in the window. Equal values have equal RANK(), hence equal scores: the
  score depends only on how many customers have a strictly smaller value, never on row
  order, so recomputing unchanged data gives the same tiers every time (ntile() would
  split a tie across buckets arbitrarily and could flip a customer between runs). R uses
  the timestamp, not "days ago", so the passing of time alone (everyone ageing equally)
  does not reorder anyone; only a new purchase or a purchase leaving the window does.
  When all customers tie, all score 1.
- a list of four thresholds: R in days (``[5, 10, 20, 45]``: last purchase within 5 days
  → 5, within 10 → 4, within 20 → 3, within 45 → 2, older → 1); F and M as ascending
  minimums (``[2, 3, 5, 8]``: ≥ 8 → 5, ≥ 5 → 4, ≥ 3 → 3, ≥ 2 → 2, else 1).

Each score is compared with its mean over the customers in the window: strictly above
the mean is *high*, otherwise *low* (so when everyone ties, everyone is low). The three
high/low bits give the 8 tiers of docs/domain.md; customers with no purchase in the window
(and every customer when the window is empty) are in ``no_purchase``.
"""

from __future__ import annotations

from typing import Any

from segments import money
from segments.dimensions.base import DAYS, LayerSpec, StageContext, check_event_types, check_schema, table
from segments.rules.validation import RuleIssue

KIND = "rfm"
# The final join (customers ⋈ scores) merges the customers' primary key with the sorted
# scores when hash joins are off, so the rows come out in customer order (base.py).
IN_CUSTOMER_ORDER = True

TIERS: list[tuple[str, str, tuple[bool, bool, bool]]] = [
    # key, name, (R high, F high, M high)
    ("important_value", "Important value", (True, True, True)),
    ("important_development", "Important development", (True, False, True)),
    ("important_retention", "Important retention", (False, True, True)),
    ("important_win_back", "Important win-back", (False, False, True)),
    ("general_value", "General value", (True, True, False)),
    ("general_development", "General development", (True, False, False)),
    ("general_retention", "General retention", (False, True, False)),
    ("general_win_back", "General win-back", (False, False, False)),
]
NO_PURCHASE = ("no_purchase", "No purchase in window")

_scoring = {
    "oneOf": [
        {"const": "quintiles"},
        {"type": "array", "items": {"type": "number", "minimum": 0}, "minItems": 4, "maxItems": 4},
    ]
}
CONFIG_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["window_days", "event_type", "scoring"],
    "properties": {
        "window_days": DAYS,
        "event_type": {"type": "string", "minLength": 1},
        "scoring": {
            "type": "object",
            "additionalProperties": False,
            "required": ["r", "f", "m"],
            "properties": {"r": _scoring, "f": _scoring, "m": _scoring},
        },
    },
}


def default_config() -> dict[str, Any]:
    return {
        "window_days": 90,
        "event_type": "order",
        "scoring": {"r": "quintiles", "f": "quintiles", "m": "quintiles"},
    }


def layer_specs(config: dict[str, Any]) -> list[LayerSpec]:
    return [LayerSpec(key, name) for key, name, _ in TIERS] + [LayerSpec(*NO_PURCHASE)]


def config_issues(config: Any, path: str = "config") -> list[RuleIssue]:
    issues = check_schema(CONFIG_SCHEMA, config, path)
    if issues:
        return issues
    for letter, scoring in config["scoring"].items():
        if isinstance(scoring, list) and sorted(scoring) != scoring:
            issues.append(RuleIssue(f"{path}.scoring.{letter}", "thresholds must be in ascending order"))
    if isinstance(config["scoring"]["r"], list) and config["scoring"]["r"][-1] > config["window_days"]:
        issues.append(
            RuleIssue(f"{path}.scoring.r", f"the last R threshold exceeds the window ({config['window_days']} days)")
        )
    return issues + check_event_types([(f"{path}.event_type", config["event_type"])], monetary=True)


def _score_sql(letter: str, value: str, scoring: Any, ctx: StageContext) -> tuple[str, list[Any]]:
    if scoring == "quintiles":
        return f"1 + (5 * (RANK() OVER (ORDER BY {value}) - 1)) / COUNT(*) OVER ()", []
    if letter == "r":  # days: within t[0] days → 5 … older than t[3] → 1
        cutoffs = [ctx.days_ago(days) for days in scoring]
        whens = " ".join(f"WHEN {value} >= %s THEN {5 - i}" for i in range(4))
        return f"CASE {whens} ELSE 1 END", cutoffs
    if letter == "m":  # monetary is in integer hundredths: minimums rounded up to them
        scoring = [money.at_least(minimum) for minimum in scoring]
    whens = " ".join(f"WHEN {value} >= %s THEN {5 - i}" for i in range(4))
    return f"CASE {whens} ELSE 1 END", list(reversed(scoring))


def stage_select(ctx: StageContext) -> tuple[str, list[Any]]:
    """One statement computing every customer's tier; the benchmark's anchor is this
    statement written by hand."""
    from segments.models import EventType

    event_type_id = EventType.objects.get(code=ctx.config["event_type"]).id
    config = ctx.config
    start = ctx.days_ago(config["window_days"])
    scores, score_params = [], []
    for letter, value in (("r", "last_at"), ("f", "frequency"), ("m", "monetary")):
        sql, params = _score_sql(letter, value, config["scoring"][letter], ctx)
        scores.append(f"{sql} AS {letter}")
        score_params += params
    tier_cases, tier_params = [], []
    for key, _, (r_high, f_high, m_high) in TIERS:
        cond = " AND ".join(
            f"s.{letter} {'>' if high else '<='} mm.mean_{letter}"
            for letter, high in (("r", r_high), ("f", f_high), ("m", m_high))
        )
        tier_cases.append(f"WHEN {cond} THEN %s")
        tier_params.append(ctx.layers[key])
    sql = f"""
        WITH agg AS (
            SELECT customer_id, MAX(occurred_at) AS last_at, COUNT(*) AS frequency,
                   COALESCE({money.amount_sum_sql()}, 0) AS monetary
            FROM {table("Event")}
            WHERE event_type_id = %s AND occurred_at >= %s AND occurred_at <= %s {ctx.scope_filter("customer_id")}
            GROUP BY customer_id
        ),
        scored AS (SELECT customer_id, {", ".join(scores)} FROM agg),
        means AS (SELECT AVG(r) AS mean_r, AVG(f) AS mean_f, AVG(m) AS mean_m FROM scored)
        SELECT c.id AS customer_id,
               CASE WHEN s.customer_id IS NULL THEN %s {" ".join(tier_cases)} END AS layer_id,
               {ctx.null_ts} AS valid_until, s.r AS r, s.f AS f, s.m AS m
        FROM {table("Customer")} c
        CROSS JOIN means mm
        LEFT JOIN scored s ON s.customer_id = c.id
    """
    if ctx.in_customer_order:
        sql += "ORDER BY c.id"
    params = [
        event_type_id,
        start,
        ctx.dt(ctx.as_of),
        *score_params,
        ctx.layers[NO_PURCHASE[0]],
        *tier_params,
    ]
    return sql, params


def stage_stats(ctx: StageContext, target: str) -> dict[str, Any]:
    ctx.cursor.execute(f"SELECT COUNT(*), AVG(r), AVG(f), AVG(m) FROM {target} WHERE r IS NOT NULL")
    in_window, mean_r, mean_f, mean_m = ctx.cursor.fetchone()
    return {
        "in_window": in_window,
        "mean_scores": {
            "r": None if mean_r is None else round(float(mean_r), 4),
            "f": None if mean_f is None else round(float(mean_f), 4),
            "m": None if mean_m is None else round(float(mean_m), 4),
        },
    }
