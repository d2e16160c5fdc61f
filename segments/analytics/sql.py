"""The few SQL fragments that differ between PostgreSQL and SQLite, for the analytics builders.

Everything else in ``segments.analytics`` is one statement for both vendors. The fragments:

- **A customer's local day.** PostgreSQL: ``(ts AT TIME ZONE tz)::date`` with the customer's
  IANA zone from the ``timezone`` column. SQLite has no time-zone database; Django registers
  ``django_datetime_cast_date(value, tzname, conn_tzname)`` on every SQLite connection (it is
  what ``TruncDate(tzinfo=...)`` compiles to) and it converts with :mod:`zoneinfo`, so both
  vendors use the same IANA rules, DST included. Values are stored in UTC (``USE_TZ``).
- **Day differences**: ``date - date`` is an integer on PostgreSQL; SQLite's dates are ISO
  text, so the difference goes through ``julianday``.
- **Week and month starts** (ISO weeks start on Monday) and the next bucket of a series.
- **Epoch milliseconds**, so that funnels compare and subtract integers on both vendors
  (SQLite: the Julian day has ~40 µs resolution at today's dates, rounded to whole ms).

Literal ``%`` is written ``%%``: statements always go through ``cursor.execute(sql, params)``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from django.db import connection, transaction

from config.replica import reading_connection

Vendor = Literal["postgresql", "sqlite"]
Grain = Literal["day", "week", "month"]


def vendor() -> Vendor:
    return "postgresql" if connection.vendor == "postgresql" else "sqlite"


def local_date(ts: str, tz: str, v: Vendor) -> str:
    if v == "postgresql":
        return f"(({ts}) AT TIME ZONE {tz})::date"
    return f"django_datetime_cast_date({ts}, {tz}, 'UTC')"


def day_diff(later: str, earlier: str, v: Vendor) -> str:
    if v == "postgresql":
        return f"(({later}) - ({earlier}))"
    return f"CAST(julianday({later}) - julianday({earlier}) AS INTEGER)"


def bucket_start(day: str, grain: Grain, v: Vendor) -> str:
    if grain == "day":
        return day
    if v == "postgresql":
        if grain == "week":
            return f"(({day}) - (EXTRACT(ISODOW FROM {day})::int - 1))"
        return f"date_trunc('month', {day})::date"
    if grain == "week":
        return f"date({day}, '-' || ((CAST(strftime('%%w', {day}) AS INTEGER) + 6) %% 7) || ' days')"
    return f"strftime('%%Y-%%m-01', {day})"


def next_bucket(day: str, grain: Grain, v: Vendor) -> str:
    step = {"day": "1 day", "week": "7 days", "month": "1 month"}[grain]
    if v == "postgresql":
        return f"(({day}) + interval '{step}')::date"
    return f"date({day}, '+{step}')"


def date_param(v: Vendor) -> str:
    return "CAST(%s AS date)" if v == "postgresql" else "%s"


def epoch_ms(ts: str, v: Vendor) -> str:
    if v == "postgresql":
        return f"FLOOR(EXTRACT(EPOCH FROM {ts}) * 1000)::bigint"
    return f"CAST(ROUND((julianday({ts}) - 2440587.5) * 86400000.0) AS INTEGER)"


def json_text(column: str, key_param: str, v: Vendor) -> str:
    """A JSON property's value as text ('true'/'false' for booleans, numbers as written)."""
    if v == "postgresql":
        return f"({column} ->> {key_param})"
    return (
        f"(CASE json_type({column}, '$.' || {key_param}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"ELSE CAST(json_extract({column}, '$.' || {key_param}) AS TEXT) END)"
    )


def timestamp(value: dt.datetime) -> Any:
    """A tz-aware instant as the database driver wants it (UTC text on SQLite)."""
    return connection.ops.adapt_datetimefield_value(value)


def as_date(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def layer_at(customer: str, instant: str) -> str:
    """The key of the layer ``customer`` held at ``instant`` in one dimension (two ``%s``: its id).

    From layer history, never today's layer: the row open at the instant (entered at or
    before it, not left by then). A customer who was not yet layered then (layers are
    recomputed nightly, so a sign-up is layered the next night) gets the first layer they
    entered afterwards. Never layered: ``''``. The history index (customer, dimension,
    entered_at) serves both probes.
    """
    held = (
        "SELECT l.key FROM segments_layerhistory h JOIN segments_layer l ON l.id = h.layer_id "
        f"WHERE h.customer_id = {customer} AND h.dimension_id = %s AND h.entered_at <= {instant} "
        f"AND (h.left_at IS NULL OR h.left_at > {instant}) ORDER BY h.entered_at DESC, h.id DESC LIMIT 1"
    )
    first_after = (
        "SELECT l.key FROM segments_layerhistory h JOIN segments_layer l ON l.id = h.layer_id "
        f"WHERE h.customer_id = {customer} AND h.dimension_id = %s AND h.entered_at > {instant} "
        "ORDER BY h.entered_at, h.id LIMIT 1"
    )
    return f"COALESCE(({held}), ({first_after}), '')"


def bucket_of(day: dt.date, grain: Grain) -> dt.date:
    """The first day of ``day``'s bucket, as :func:`bucket_start` computes it in SQL."""
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    if grain == "month":
        return day.replace(day=1)
    return day


def bucket_last_day(day: dt.date, grain: Grain) -> dt.date:
    """The last day of ``day``'s bucket."""
    if grain == "week":
        return bucket_of(day, grain) + dt.timedelta(days=6)
    if grain == "month":
        return (day.replace(day=28) + dt.timedelta(days=4)).replace(day=1) - dt.timedelta(days=1)
    return day


def previous_bucket(day: str, grain: Grain, v: Vendor) -> str:
    step = {"day": "1 day", "week": "7 days", "month": "1 month"}[grain]
    if v == "postgresql":
        return f"(({day}) - interval '{step}')::date"
    return f"date({day}, '-{step}')"


def utc_date(ts: str, v: Vendor) -> str:
    if v == "postgresql":
        return f"(({ts}) AT TIME ZONE 'UTC')::date"
    return f"date({ts})"


def plus_seconds(ts: str, seconds: int, v: Vendor) -> str:
    """``ts`` + whole seconds, comparable with stored values (SQLite: ISO text to the ms)."""
    if v == "postgresql":
        return f"({ts} + interval '{int(seconds)} seconds')"
    return f"strftime('%%Y-%%m-%%d %%H:%%M:%%f', {ts}, '+{int(seconds)} seconds')"


def no_flatten(v: Vendor) -> str:
    """A subquery suffix that keeps the planner from flattening it into the outer query, so its
    computed columns (a time-zone conversion per event) are computed once per row, not again
    in every expression that reads them. PostgreSQL: ``OFFSET 0`` (still parallel-safe: a
    zero offset needs no Limit node). SQLite never flattens a subquery with an OFFSET; it
    needs a LIMIT to write one (-1: none)."""
    return " OFFSET 0" if v == "postgresql" else " LIMIT -1 OFFSET 0"


def one_bigint(v: Vendor) -> str:
    """The integer 1 as a 64-bit value, for bit shifts up to 62 (PostgreSQL's ``1`` is int4)."""
    return "CAST(1 AS bigint)" if v == "postgresql" else "1"


def bit_or_agg(expression: str, v: Vendor) -> str:
    """Bitwise OR over a group of powers of two (or 0). PostgreSQL: ``bit_or``, which has a
    combine function, so parallel workers can aggregate partially. SQLite has no ``bit_or``:
    the sum of the *distinct* powers of two is the same number."""
    if v == "postgresql":
        return f"bit_or({expression})"
    return f"SUM(DISTINCT {expression})"


def run(
    statement: str,
    params: list[object],
    *,
    hash_joins: bool = True,
    hash_aggregates: bool = True,
    work_mem: str | None = None,
) -> list[tuple]:
    """Run an analytics statement on the reading connection (the replica when fresh,
    config/replica.py) and return its rows.

    ``hash_joins=False`` (PostgreSQL): plan this one statement without hash joins. Where the
    statement's big inputs can be read in customer order from the events' (customer, type,
    time) index, a merge join grouped as it streams costs about half the CPU of the hash
    joins the planner picks (measured per statement with ``log_statement_stats``, README
    "Growth analytics"). ``hash_aggregates=False``: without hash aggregates, so a GROUP BY
    customer over that ordered read groups as it streams instead of hashing every row and
    sorting the groups again for the next merge join. ``work_mem``: the sort / hash memory
    of this statement (e.g. ``'256MB'``: the funnel sorts ~1M chosen attempts several times,
    which spill to disk at the server's 64 MB). PostgreSQL has no per-query plan hints:
    ``set_config(..., is_local => true)`` inside a transaction (a savepoint inside an outer
    one) scopes each setting to it, which is also what keeps them from leaking to the next
    client through a transaction-mode pooler (PgBouncer), and the previous values are put
    back right after the statement.
    """
    conn = reading_connection()
    settings = {}
    if not hash_joins:
        settings["enable_hashjoin"] = "off"
    if not hash_aggregates:
        settings["enable_hashagg"] = "off"
    if work_mem:
        settings["work_mem"] = work_mem
    if not settings or conn.vendor != "postgresql":
        with conn.cursor() as cursor:
            cursor.execute(statement, params)
            return list(cursor.fetchall())
    with transaction.atomic(using=conn.alias), conn.cursor() as cursor:
        names = list(settings)
        # current_setting is read before set_config in the same row (left to right)
        swap = ", ".join("current_setting(%s), set_config(%s, %s, true)" for _ in names)
        cursor.execute(f"SELECT {swap}", [x for n in names for x in (n, n, settings[n])])
        previous = cursor.fetchone()[0::2]
        cursor.execute(statement, params)
        rows = list(cursor.fetchall())
        back = ", ".join("set_config(%s, %s, true)" for _ in names)
        cursor.execute(f"SELECT {back}", [x for n, old in zip(names, previous, strict=True) for x in (n, old)])
        return rows
