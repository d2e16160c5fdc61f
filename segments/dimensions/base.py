"""What every dimension kind provides, and the SQL helpers they share.

A kind module exposes:

- ``default_config() -> dict``
- ``CONFIG_SCHEMA`` (JSON Schema) and ``config_issues(config, path) -> list[RuleIssue]``
  (schema plus meaning: thresholds in order, event types that exist, …)
- ``layer_specs(config) -> list[LayerSpec]``: the layers, in display order
- ``stage_select(ctx) -> (sql, params)``: one SELECT giving exactly one row per customer
  with the columns ``customer_id, layer_id, valid_until, r, f, m`` (NULL where a kind
  has no use for them; typed with ``ctx.null_ts`` / ``ctx.null_int``). The recompute
  materializes it with ``CREATE TEMP TABLE … AS`` — on PostgreSQL that form may run in
  parallel, where ``INSERT … SELECT`` may not.
- optionally ``stage_stats(ctx, table) -> dict``: statistics for the run record. On a
  nightly run on PostgreSQL of an ``IN_CUSTOMER_ORDER`` kind the stage also holds the dimension's current rows (columns
  ``staged``, ``old_layer_id``, ``old_valid_until``), including a row for each current row
  whose customer the kind did not stage, with every kind column NULL: statistics count rows
  by a kind column (``WHERE r IS NOT NULL``, ``WHERE layer_id <> …``), never all rows.
- optionally ``IN_CUSTOMER_ORDER = True``: the kind's final join can hand its rows out in
  customer order at no cost when hash joins are off (the customers' primary key merged with
  per-customer aggregates). When ``ctx.in_customer_order`` is set the statement must end with
  ``ORDER BY`` the customer id; a nightly run on PostgreSQL then merges the rows with the
  dimension's current rows, and a first run (unscoped) takes them in that order instead of
  sorting its stage (materialize.dimension_write).

A dimension scoped to a role (``Dimension.role``) layers only the customers holding it:
the recompute keeps only their rows of ``stage_select``, and a kind whose layers depend
on the whole population (ranks, quintiles, means) restricts that population with
``ctx.scope_filter(column)`` so that "top 10%" means the top 10% *of sellers*.

Stage SQL is plain, portable SQL (SQLite ≥ 3.33 and PostgreSQL): datetimes only ever
appear as parameters computed from ``as_of`` in Python, so no vendor date arithmetic is
needed; window functions, CTEs and CASE are standard. The one vendor-specific piece is a
sum of amounts: it comes from ``segments.money.amount_sum_sql()`` (exact integer hundredths
on both backends), and thresholds compared with it from ``segments.money.at_least``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db import connection
from jsonschema import Draft202012Validator

from segments.rules.validation import RuleIssue, schema_issues

# A value measure per customer: the count or the amount sum of one event type over the last
# ``window_days`` (or all time). Levels and the value pyramid rank customers by it.
MEASURE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["event_type", "agg"],
    "properties": {
        "event_type": {"type": "string", "minLength": 1},
        "agg": {"enum": ["count", "sum"]},
        "window_days": {"type": ["integer", "null"], "minimum": 1, "maximum": 36500},
    },
}

STAGE_TABLE = "segments_stage_layer"
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class LayerSpec:
    key: str
    name: str


@dataclass
class StageContext:
    """What a kind's ``stage`` needs: the dimension, its layers by key, the instant."""

    dimension_id: int
    config: dict[str, Any]
    layers: dict[str, int]  # layer key -> id
    as_of: dt.datetime
    cursor: Any
    # A table of the customer ids in scope (``customer_id``) when the dimension is scoped to a role.
    scope_table: str | None = None
    # Rows wanted in customer order (kinds with IN_CUSTOMER_ORDER; see the contract above).
    in_customer_order: bool = False

    def scope_filter(self, column: str) -> str:
        """``AND <column> IN (customers in scope)``, or nothing when the dimension is unscoped."""
        if self.scope_table is None:
            return ""
        return f"AND {column} IN (SELECT customer_id FROM {self.scope_table})"

    def dt(self, value: dt.datetime | None) -> Any:
        """A datetime as the backend stores it (SQLite compares ISO text)."""
        return None if value is None else connection.ops.adapt_datetimefield_value(value)

    def days_ago(self, days: float) -> Any:
        return self.dt(self.as_of - days * DAY)

    def days_ahead(self, days: float) -> Any:
        return self.dt(self.as_of + days * DAY)

    @property
    def null_ts(self) -> str:
        return "CAST(NULL AS timestamp with time zone)" if connection.vendor == "postgresql" else "NULL"

    @property
    def null_int(self) -> str:
        return "CAST(NULL AS smallint)" if connection.vendor == "postgresql" else "NULL"

    def execute(self, sql: str, params: list[Any] | tuple[Any, ...] = ()) -> int:
        self.cursor.execute(sql, list(params))
        return self.cursor.rowcount


def table(model_name: str) -> str:
    from django.apps import apps

    return apps.get_model("segments", model_name)._meta.db_table


def event_type_ids(codes: list[str]) -> dict[str, int]:
    from segments.models import EventType

    return dict(EventType.objects.filter(code__in=codes).values_list("code", "id"))


def check_schema(schema: dict[str, Any], config: Any, path: str) -> list[RuleIssue]:
    return schema_issues(Draft202012Validator(schema), config, path)


def check_event_types(codes: list[tuple[str, str]], *, monetary: bool = False) -> list[RuleIssue]:
    """``codes``: (path, code). Unknown codes (and non-monetary ones when ``monetary``)."""
    from segments.models import EventType

    known = {code: is_monetary for code, is_monetary in EventType.objects.values_list("code", "is_monetary")}
    issues = []
    for path, code in codes:
        if code not in known:
            issues.append(RuleIssue(path, f"unknown event type '{code}'; known: {', '.join(sorted(known))}"))
        elif monetary and not known[code]:
            issues.append(RuleIssue(path, f"event type '{code}' carries no amount"))
    return issues


def case_sql(column: str, mapping: list[tuple[str, Any]], default: Any) -> tuple[str, list[Any]]:
    """``CASE WHEN <cond_i> THEN %s … ELSE %s END`` for conditions that take no params."""
    parts, params = [], []
    for condition, value in mapping:
        parts.append(f"WHEN {condition} THEN %s")
        params.append(value)
    params.append(default)
    return f"CASE {' '.join(parts)} ELSE %s END", params


def slug_issues(items: list[dict[str, Any]], path: str, field: str = "key") -> list[RuleIssue]:
    issues, seen = [], set()
    for index, item in enumerate(items):
        key = item.get(field)
        if key in seen:
            issues.append(RuleIssue(f"{path}.{index}.{field}", f"duplicate key '{key}'"))
        seen.add(key)
    return issues


SLUG = {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_]*$", "maxLength": 40}
NAME = {"type": "string", "minLength": 1, "maxLength": 100}
DAYS = {"type": "integer", "minimum": 1, "maximum": 36500}
