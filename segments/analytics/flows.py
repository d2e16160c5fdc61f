"""Layer flows and the lifecycle's new / returning / resurrecting / dormant counts, per period.

**Layer flows** (from layer history): a *move* is a customer entering a layer of the
dimension; it comes *from* the layer of their previous history row in that dimension
(``''`` for a customer's first layer: "entered"). Moves are counted per period of the
moment they happened (the recompute's time, bucketed by its UTC day, ISO week or month):
``(period, from, to, customers)``. Layers are recomputed in UTC at night, so UTC periods
are the recompute's own; a customer's local day plays no part here.

**Lifecycle counts** (from activity events, each customer's *local* day, like retention):
a customer is *active* in a period if they did an activity event then (every event type
unless chosen). For each period P:

- **new**: active in P, and P is their first active period ever;
- **returning**: active in P and in the period before;
- **resurrecting**: active in P, not in the period before, but in some earlier period;
- **dormant**: active in the period before, not in P (a count of customers lost; shown
  as a positive number).

Both are one SQL statement each, with window functions over the whole history (a move's
"from" and a period's "before" may precede the range shown).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from django.utils import timezone

from config.replica import reading_connection
from segments.analytics import sql
from segments.analytics.errors import AnalyticsInputError
from segments.models import Dimension, EventType

FlowGrain = Literal["day", "week", "month"]
MAX_BUCKETS = 400


@dataclass(frozen=True)
class LayerMove:
    period: dt.date
    from_layer: str
    to_layer: str
    customers: int


@dataclass(frozen=True)
class LayerFlows:
    dimension: str
    grain: str
    start: dt.date
    end: dt.date
    moves: tuple[LayerMove, ...]


@dataclass(frozen=True)
class LifecyclePeriod:
    period: dt.date
    new: int
    returning: int
    resurrecting: int
    dormant: int
    # False while the period has not ended in every customer's time zone (the current one):
    # its counts are so far, and "dormant" holds everyone who has not come back *yet*.
    complete: bool = True


@dataclass(frozen=True)
class LifecycleCounts:
    grain: str
    start: dt.date
    end: dt.date
    events: tuple[str, ...]
    periods: tuple[LifecyclePeriod, ...]


def _range(grain: str, start: dt.date | None, end: dt.date | None) -> tuple[dt.date, dt.date]:
    if grain not in ("day", "week", "month"):
        raise AnalyticsInputError("grain", "Use 'day', 'week' or 'month'.")
    end = end or timezone.now().astimezone(dt.UTC).date()
    start = (
        start
        or end - {"day": dt.timedelta(days=29), "week": dt.timedelta(weeks=11), "month": dt.timedelta(days=334)}[grain]
    )
    if start > end:
        raise AnalyticsInputError("start", "Must be on or before end.")
    if (end - start).days // {"day": 1, "week": 7, "month": 28}[grain] > MAX_BUCKETS:
        raise AnalyticsInputError("start", f"At most {MAX_BUCKETS} periods.")
    return sql.bucket_of(start, grain), end  # type: ignore[arg-type]


def layer_flows(
    *, dimension: str, grain: FlowGrain = "week", start: dt.date | None = None, end: dt.date | None = None
) -> LayerFlows:
    """Moves between the dimension's layers per period, largest first within a period."""
    dimension_id = Dimension.objects.filter(key=dimension).values_list("id", flat=True).first()
    if dimension_id is None:
        raise AnalyticsInputError("dimension", f"Unknown dimension '{dimension}'.")
    first, last = _range(grain, start, end)
    v = sql.vendor()
    dp = sql.date_param(v)
    period = sql.bucket_start(sql.utc_date("h.entered_at", v), grain, v)
    statement = (
        "SELECT x.period, COALESCE(lp.key, ''), ln.key, COUNT(*) FROM ("
        f"SELECT h.entered_at, {period} AS period, h.layer_id, "
        "LAG(h.layer_id) OVER (PARTITION BY h.customer_id ORDER BY h.entered_at, h.id) AS prev "
        "FROM segments_layerhistory h WHERE h.dimension_id = %s) x "
        "JOIN segments_layer ln ON ln.id = x.layer_id LEFT JOIN segments_layer lp ON lp.id = x.prev "
        f"WHERE x.period >= {dp} AND x.period <= {dp} "
        "GROUP BY x.period, COALESCE(lp.key, ''), ln.key ORDER BY x.period, COUNT(*) DESC, 2, 3"
    )
    with reading_connection().cursor() as cursor:  # the replica when fresh (config/replica.py)
        cursor.execute(statement, [dimension_id, first.isoformat(), last.isoformat()])
        rows = cursor.fetchall()
    moves = tuple(LayerMove(sql.as_date(p), f, t, int(n)) for p, f, t, n in rows)
    return LayerFlows(dimension, grain, first, last, moves)


def lifecycle_counts(
    *,
    grain: FlowGrain = "week",
    start: dt.date | None = None,
    end: dt.date | None = None,
    events: tuple[str, ...] = (),
) -> LifecycleCounts:
    """New / returning / resurrecting / dormant customers per period, every period listed."""
    first, last = _range(grain, start, end)
    codes = dict(EventType.objects.values_list("code", "id"))
    unknown = [c for c in events if c not in codes]
    if unknown:
        raise AnalyticsInputError("events", f"Unknown event type '{unknown[0]}'.")
    type_ids = [codes[c] for c in events] or list(codes.values())
    v = sql.vendor()
    dp = sql.date_param(v)
    local = sql.local_date("e.occurred_at", "c.timezone", v)
    placeholders = ", ".join(["%s"] * len(type_ids))
    statement = (
        "WITH RECURSIVE buckets(b) AS ("
        f"SELECT {dp} UNION ALL SELECT {sql.next_bucket('b', grain, v)} FROM buckets "
        f"WHERE {sql.next_bucket('b', grain, v)} <= {dp}), "
        f"active AS (SELECT DISTINCT e.customer_id, {sql.bucket_start(local, grain, v)} AS b "
        "FROM segments_event e JOIN segments_customer c ON c.id = e.customer_id "
        f"WHERE e.event_type_id IN ({placeholders})), "
        "seq AS (SELECT customer_id, b, LAG(b) OVER (PARTITION BY customer_id ORDER BY b) AS prev, "
        "LEAD(b) OVER (PARTITION BY customer_id ORDER BY b) AS nxt FROM active), "
        "marks AS ("
        "SELECT b, CASE WHEN prev IS NULL THEN 'new' "
        f"WHEN prev = {sql.previous_bucket('b', grain, v)} THEN 'returning' ELSE 'resurrecting' END AS kind FROM seq "
        f"UNION ALL SELECT {sql.next_bucket('b', grain, v)} AS b, 'dormant' AS kind FROM seq "
        f"WHERE nxt IS NULL OR nxt <> {sql.next_bucket('b', grain, v)}) "
        "SELECT bk.b, "
        "SUM(CASE WHEN m.kind = 'new' THEN 1 ELSE 0 END), SUM(CASE WHEN m.kind = 'returning' THEN 1 ELSE 0 END), "
        "SUM(CASE WHEN m.kind = 'resurrecting' THEN 1 ELSE 0 END), SUM(CASE WHEN m.kind = 'dormant' THEN 1 ELSE 0 END) "
        "FROM buckets bk LEFT JOIN marks m ON m.b = bk.b GROUP BY bk.b ORDER BY bk.b"
    )
    params: list[object] = [first.isoformat(), last.isoformat(), *type_ids]
    with reading_connection().cursor() as cursor:  # the replica when fresh (config/replica.py)
        cursor.execute(statement, params)
        rows = cursor.fetchall()
    now = timezone.now()
    periods = tuple(
        LifecyclePeriod(
            sql.as_date(b), int(n or 0), int(r or 0), int(s or 0), int(d or 0), _period_over(sql.as_date(b), grain, now)
        )
        for b, n, r, s, d in rows
    )
    return LifecycleCounts(grain, first, last, tuple(events), periods)


def _period_over(period: dt.date, grain: FlowGrain, now: dt.datetime) -> bool:
    """Whether ``period`` (of local days) has ended in every time zone at ``now``: its next
    period's first day has begun at UTC-12, the last zone to reach a date (12:00 UTC)."""
    following = sql.bucket_of(period + dt.timedelta(days={"day": 1, "week": 7, "month": 31}[grain]), grain)
    return now >= dt.datetime.combine(following, dt.time(12), tzinfo=dt.UTC)
