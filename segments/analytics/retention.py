"""Retention cohort tables, computed by SQL in the database (PostgreSQL and SQLite).

Definitions (docs/domain.md, README "Growth analytics"):

- **Anchor**: a customer's sign-up time (``signed_up_at``) or their first purchase (the
  earliest event of the purchase type, ``order`` by default, up to ``as_of``).
- **Day 0** is the anchor's calendar day *in the customer's own time zone*
  (``Customer.timezone``); **day N** is the local day N days later; **week N** is days
  7N … 7N+6 (counted from the anchor's day, not calendar weeks).
- **Cohort**: customers whose anchor day falls in the same day / ISO week (Monday) / month;
  the table covers the buckets from ``cohort_from`` to ``cohort_to`` (local anchor days).
- **Retained on period N**: did at least one *return event* (any event type but ``signup``
  unless chosen) on a day of period N. **On or after period N** ("unbounded"): on any day of
  period N or later, up to ``as_of``. Events before day 0 are ignored; period 0 counts the
  anchor's own day, so a first-purchase cohort with ``order`` as return event retains 100%
  on day 0.
- **Observable**: period N of a cohort is reported only once it is over for every customer of
  the cohort in their own time zone (each customer's local "today" at ``as_of`` is after the
  period's last day); before that its counts are null with a reason, never a partial rate.
- **D1 / D7 / D30** (headlines): over all customers of the range whose day N is over,
  retained on (or on or after) day N / those customers.
- **Breakdown by layer**: the layer of a dimension the customer held *at the anchor instant*
  (layer history; the first layer entered afterwards when not yet layered then; ``''`` when
  never layered). Not today's layer. ``breakdown=<dimension>`` or ``layer:<dimension>``.
- **Breakdown by attribute** (``attribute:<name>``, e.g. ``attribute:channel``, the acquisition
  channel, or ``attribute:city_tier``): the customer attribute's value as text, ``''`` when
  missing. Attributes have no history: this is the value stored now, meant for what a
  customer has from sign-up on (acquisition channel, city tier), so that sign-up cohorts
  split by something they carried on day 0 (a tier computed from purchases is the same
  "no purchase" for everyone at sign-up).

Every count comes out of one SQL statement per table; Python only shapes the result rows.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from django.utils import timezone

from config.replica import reading_connection
from segments.analytics import sql
from segments.analytics.errors import AnalyticsInputError
from segments.analytics.funnels import ATTRIBUTE_KEY
from segments.models import Dimension, EventType

Anchor = Literal["signup", "first_purchase"]
Period = Literal["day", "week"]
PERIOD_DAYS = {"day": 1, "week": 7}
HEADLINE_DAYS = (1, 7, 30)
MAX_PERIODS = 400
MAX_CELLS = 40_000
NOT_OVER = "period not over yet for every customer of the cohort"
EMPTY = "no customers in this cohort"


@dataclass(frozen=True)
class RetentionSpec:
    anchor: Anchor = "signup"
    cohort_grain: sql.Grain = "week"
    period: Period = "day"
    periods: int = 30
    return_events: tuple[str, ...] = ()
    purchase_event: str = "order"
    cohort_from: dt.date | None = None
    cohort_to: dt.date | None = None
    as_of: dt.datetime | None = None
    breakdown: str | None = None  # a dimension key, layer:<dimension key> or attribute:<name>


@dataclass(frozen=True)
class RetentionCell:
    period: int
    retained: int | None
    rate: float | None
    retained_on_or_after: int | None
    rate_on_or_after: float | None
    reason: str | None = None


@dataclass(frozen=True)
class RetentionCohort:
    cohort: dt.date
    size: int
    cells: tuple[RetentionCell, ...]


@dataclass(frozen=True)
class Headline:
    day: int
    eligible: int
    retained: int | None
    rate: float | None
    retained_on_or_after: int | None
    rate_on_or_after: float | None
    reason: str | None = None


@dataclass(frozen=True)
class LayerRetention:
    layer: str
    cohorts: tuple[RetentionCohort, ...]
    headlines: tuple[Headline, ...]


@dataclass(frozen=True)
class RetentionTable:
    anchor: str
    cohort_grain: str
    period: str
    periods: int
    return_events: tuple[str, ...]
    cohort_from: dt.date
    cohort_to: dt.date
    as_of: dt.datetime
    cohorts: tuple[RetentionCohort, ...]
    headlines: tuple[Headline, ...]
    breakdown: str | None = None
    by_layer: tuple[LayerRetention, ...] = field(default=())


@dataclass(frozen=True)
class _Resolved:
    spec: RetentionSpec
    as_of: dt.datetime
    cohort_from: dt.date
    cohort_to: dt.date
    return_type_ids: tuple[int, ...]
    purchase_type_id: int | None
    dimension_id: int | None
    attribute: str | None = None  # breakdown by this customer attribute (then dimension_id is None)


def _resolve(spec: RetentionSpec) -> _Resolved:
    if spec.anchor not in ("signup", "first_purchase"):
        raise AnalyticsInputError("anchor", "Use 'signup' or 'first_purchase'.")
    if spec.cohort_grain not in ("day", "week", "month"):
        raise AnalyticsInputError("cohort", "Use 'day', 'week' or 'month'.")
    if spec.period not in PERIOD_DAYS:
        raise AnalyticsInputError("period", "Use 'day' or 'week'.")
    if not 0 <= spec.periods <= MAX_PERIODS:
        raise AnalyticsInputError("periods", f"Between 0 and {MAX_PERIODS}.")
    as_of = spec.as_of or timezone.now()
    if timezone.is_naive(as_of):
        raise AnalyticsInputError("as_of", "Give a time zone offset.")
    cohort_to = spec.cohort_to or as_of.astimezone(dt.UTC).date()
    default_span = {"day": dt.timedelta(days=29), "week": dt.timedelta(weeks=11), "month": dt.timedelta(days=334)}
    cohort_from = spec.cohort_from or cohort_to - default_span[spec.cohort_grain]
    if cohort_from > cohort_to:
        raise AnalyticsInputError("cohort_from", "Must be on or before cohort_to.")
    if (cohort_to - cohort_from).days > 3 * 366:
        raise AnalyticsInputError("cohort_from", "At most three years of cohorts.")
    buckets = (cohort_to - cohort_from).days // {"day": 1, "week": 7, "month": 28}[spec.cohort_grain] + 2
    if buckets * (spec.periods + 1) > MAX_CELLS:
        raise AnalyticsInputError("periods", f"At most {MAX_CELLS:,} cells (cohorts × periods): narrow the range.")
    codes = dict(EventType.objects.values_list("code", "id"))
    unknown = [c for c in spec.return_events if c not in codes]
    if unknown:
        raise AnalyticsInputError("return_events", f"Unknown event type '{unknown[0]}'.")
    if spec.return_events:
        return_ids = tuple(codes[c] for c in spec.return_events)
    else:
        return_ids = tuple(i for c, i in codes.items() if c != "signup")
    purchase_id = None
    if spec.anchor == "first_purchase":
        if spec.purchase_event not in codes:
            raise AnalyticsInputError("purchase_event", f"Unknown event type '{spec.purchase_event}'.")
        purchase_id = codes[spec.purchase_event]
    dimension_id, attribute = None, None
    if spec.breakdown:
        kind, colon, name = spec.breakdown.partition(":")
        if not colon:  # a bare dimension key, as before the prefixes
            kind, name = "layer", spec.breakdown
        if kind == "layer":
            dimension_id = Dimension.objects.filter(key=name).values_list("id", flat=True).first()
            if dimension_id is None:
                raise AnalyticsInputError("breakdown", f"Unknown dimension '{name}'.")
        elif kind == "attribute" and ATTRIBUTE_KEY.match(name):
            attribute = name
        else:
            raise AnalyticsInputError(
                "breakdown", "Use a dimension key, 'layer:<dimension key>' or 'attribute:<name>'."
            )
    return _Resolved(spec, as_of, cohort_from, cohort_to, return_ids, purchase_id, dimension_id, attribute)


def _cohort_ctes(r: _Resolved, v: sql.Vendor) -> tuple[str, list[object]]:
    """CTEs ``cohort(customer_id, tz, t0, d0, cohort, age, layer)`` and ``dret(customer_id, d)``.

    ``age`` = local today − d0 in days (day N is over iff N < age); ``d`` = local day of a
    return event − d0, only d ≥ 0.
    """
    as_of = sql.timestamp(r.as_of)
    params: list[object] = []
    if r.spec.anchor == "signup":
        anchor = (
            "SELECT c.id AS customer_id, c.timezone AS tz, c.signed_up_at AS t0 FROM segments_customer c "
            "WHERE c.signed_up_at IS NOT NULL AND c.signed_up_at <= %s"
        )
        params.append(as_of)
    else:
        anchor = (
            "SELECT e.customer_id, c.timezone AS tz, MIN(e.occurred_at) AS t0 FROM segments_event e "
            "JOIN segments_customer c ON c.id = e.customer_id "
            "WHERE e.event_type_id = %s AND e.occurred_at <= %s GROUP BY e.customer_id, c.timezone"
        )
        params += [r.purchase_type_id, as_of]
    layer = "''"
    if r.dimension_id is not None:
        layer = sql.layer_at("x.customer_id", "x.t0")
    elif r.attribute is not None:
        value = sql.json_text("cu.attributes", "%s", v)
        layer = f"COALESCE((SELECT {value} FROM segments_customer cu WHERE cu.id = x.customer_id), '')"
    local = (
        f"SELECT a.customer_id, a.tz, a.t0, {sql.local_date('a.t0', 'a.tz', v)} AS d0, "
        f"{sql.local_date('%s', 'a.tz', v)} AS today FROM anchor a"
    )
    dp = sql.date_param(v)
    cohort = (
        f"SELECT x.customer_id, x.tz, x.t0, x.d0, {sql.bucket_start('x.d0', r.spec.cohort_grain, v)} AS cohort, "
        f"{sql.day_diff('x.today', 'x.d0', v)} AS age, {layer} AS layer "
        f"FROM local x WHERE x.d0 >= {dp} AND x.d0 <= {dp}"
    )
    params.append(as_of)  # local today
    if r.dimension_id is not None:
        params += [r.dimension_id, r.dimension_id]
    elif r.attribute is not None:
        params += [r.attribute] if v == "postgresql" else [r.attribute, r.attribute]
    params += [r.cohort_from.isoformat(), r.cohort_to.isoformat()]
    placeholders = ", ".join(["%s"] * len(r.return_type_ids)) or "NULL"
    dret = (
        f"SELECT y.customer_id, y.d FROM (SELECT ch.customer_id, "
        f"{sql.day_diff(sql.local_date('e.occurred_at', 'ch.tz', v), 'ch.d0', v)} AS d "
        "FROM cohort ch JOIN segments_event e ON e.customer_id = ch.customer_id "
        f"WHERE e.event_type_id IN ({placeholders}) AND e.occurred_at <= %s) y WHERE y.d >= 0"
    )
    params += [*r.return_type_ids, as_of]
    ctes = f"anchor AS ({anchor}), local AS ({local}), cohort AS ({cohort}), dret AS ({dret})"
    return ctes, params


def table_sql(r: _Resolved, v: sql.Vendor) -> tuple[str, list[object]]:
    """One row per (cohort bucket, layer, period n): size, min age, retained on n, on or after n.

    Buckets without customers are listed (size 0) when there is no breakdown.
    """
    ctes, params = _cohort_ctes(r, v)
    n_max = r.spec.periods
    length = PERIOD_DAYS[r.spec.period]
    dp = sql.date_param(v)
    capped = f"CASE WHEN m.maxp > {int(n_max)} THEN {int(n_max)} ELSE m.maxp END"
    buckets = (
        f"SELECT {dp} AS b UNION ALL SELECT {sql.next_bucket('b', r.spec.cohort_grain, v)} FROM buckets "
        f"WHERE {sql.next_bucket('b', r.spec.cohort_grain, v)} <= {dp}"
    )
    first = sql.bucket_of(r.cohort_from, r.spec.cohort_grain)
    bucket_params: list[object] = [first.isoformat(), r.cohort_to.isoformat()]
    if r.dimension_id is None and r.attribute is None:
        sizes = (
            "SELECT bk.b AS cohort, '' AS layer, COUNT(ch.customer_id) AS size, MIN(ch.age) AS min_age "
            "FROM buckets bk LEFT JOIN cohort ch ON ch.cohort = bk.b GROUP BY bk.b"
        )
    else:
        sizes = "SELECT cohort, layer, COUNT(*) AS size, MIN(age) AS min_age FROM cohort GROUP BY cohort, layer"
    statement = (
        f"WITH RECURSIVE p(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM p WHERE n < {int(n_max)}), "
        f"buckets(b) AS ({buckets}), {ctes}, "
        f"ret AS (SELECT DISTINCT customer_id, d / {length} AS period FROM dret), "
        f"sizes AS ({sizes}), "
        "on_counts AS (SELECT ch.cohort, ch.layer, r.period, COUNT(*) AS cnt FROM ret r "
        f"JOIN cohort ch ON ch.customer_id = r.customer_id WHERE r.period <= {int(n_max)} "
        "GROUP BY ch.cohort, ch.layer, r.period), "
        f"hist AS (SELECT ch.cohort, ch.layer, {capped} AS maxp, "
        "COUNT(*) AS cnt FROM (SELECT customer_id, MAX(period) AS maxp FROM ret GROUP BY customer_id) m "
        "JOIN cohort ch ON ch.customer_id = m.customer_id GROUP BY ch.cohort, ch.layer, "
        f"{capped}), "
        # "On or after n" = customers whose last return period is >= n: a join of the small
        # histogram with the periods (a correlated subquery here was re-planned per cell).
        "after_counts AS (SELECT h.cohort, h.layer, p.n, SUM(h.cnt) AS cnt FROM hist h JOIN p ON h.maxp >= p.n "
        "GROUP BY h.cohort, h.layer, p.n) "
        "SELECT s.cohort, s.layer, s.size, s.min_age, p.n, COALESCE(o.cnt, 0), COALESCE(a.cnt, 0) "
        "FROM sizes s CROSS JOIN p LEFT JOIN on_counts o "
        "ON o.cohort = s.cohort AND o.layer = s.layer AND o.period = p.n "
        "LEFT JOIN after_counts a ON a.cohort = s.cohort AND a.layer = s.layer AND a.n = p.n "
        "ORDER BY s.layer, s.cohort, p.n"
    )
    return statement, [*bucket_params, *params]


def headline_sql(r: _Resolved, v: sql.Vendor) -> tuple[str, list[object]]:
    """One row per layer: for each of D1, D7, D30: eligible, retained on, retained on or after."""
    ctes, params = _cohort_ctes(r, v)
    flags = ", ".join(
        f"MAX(CASE WHEN r.d = {n} THEN 1 ELSE 0 END) AS on{n}, MAX(CASE WHEN r.d >= {n} THEN 1 ELSE 0 END) AS after{n}"
        for n in HEADLINE_DAYS
    )
    sums = ", ".join(
        f"SUM(CASE WHEN age > {n} THEN 1 ELSE 0 END), SUM(CASE WHEN age > {n} THEN on{n} ELSE 0 END), "
        f"SUM(CASE WHEN age > {n} THEN after{n} ELSE 0 END)"
        for n in HEADLINE_DAYS
    )
    statement = (
        f"WITH {ctes}, flags AS (SELECT ch.customer_id, ch.layer, ch.age, {flags} FROM cohort ch "
        "LEFT JOIN dret r ON r.customer_id = ch.customer_id GROUP BY ch.customer_id, ch.layer, ch.age) "
        f"SELECT layer, {sums} FROM flags GROUP BY layer ORDER BY layer"
    )
    return statement, params


def _rate(part: int | None, whole: int) -> float | None:
    return None if part is None or whole == 0 else part / whole


def _cohorts(rows: list[tuple], length: int) -> dict[str, list[RetentionCohort]]:
    grouped: dict[tuple[str, dt.date], list[tuple]] = defaultdict(list)
    for row in rows:
        grouped[(row[1], sql.as_date(row[0]))].append(row)
    out: dict[str, list[RetentionCohort]] = defaultdict(list)
    for (layer, cohort), cells in grouped.items():
        size, min_age = int(cells[0][2]), cells[0][3]
        shaped = []
        for _, _, _, _, n, on, after in cells:
            if size == 0:
                shaped.append(RetentionCell(n, None, None, None, None, EMPTY))
            elif (n + 1) * length > min_age:
                shaped.append(RetentionCell(n, None, None, None, None, NOT_OVER))
            else:
                shaped.append(RetentionCell(n, int(on), _rate(int(on), size), int(after), _rate(int(after), size)))
        out[layer].append(RetentionCohort(cohort, size, tuple(shaped)))
    return out


def _unreached(n: int) -> str:
    return f"no customer of the range has had day {n} end yet"


def _headlines(rows: list[tuple]) -> dict[str, tuple[Headline, ...]]:
    out: dict[str, tuple[Headline, ...]] = {}
    for row in rows:
        items = []
        for i, n in enumerate(HEADLINE_DAYS):
            eligible, on, after = (int(x or 0) for x in row[1 + 3 * i : 4 + 3 * i])
            if eligible == 0:
                items.append(Headline(n, 0, None, None, None, None, _unreached(n)))
            else:
                items.append(Headline(n, eligible, on, on / eligible, after, after / eligible))
        out[row[0]] = tuple(items)
    return out


def _run(statement: str, params: list[object]) -> list[tuple]:
    with reading_connection().cursor() as cursor:  # the replica when fresh (config/replica.py)
        cursor.execute(statement, params)
        return list(cursor.fetchall())


def retention_table(*, spec: RetentionSpec) -> RetentionTable:
    """The cohort table, its headlines and, with ``spec.breakdown``, the same per layer."""
    r = _resolve(spec)
    v = sql.vendor()
    length = PERIOD_DAYS[spec.period]
    overall = _Resolved(r.spec, r.as_of, r.cohort_from, r.cohort_to, r.return_type_ids, r.purchase_type_id, None)
    cohorts = _cohorts(_run(*table_sql(overall, v)), length).get("", [])
    headlines = _headlines(_run(*headline_sql(overall, v))).get("", ())
    if not headlines:
        headlines = tuple(Headline(n, 0, None, None, None, None, _unreached(n)) for n in HEADLINE_DAYS)
    by_layer: tuple[LayerRetention, ...] = ()
    if r.dimension_id is not None or r.attribute is not None:
        layered = _cohorts(_run(*table_sql(r, v)), length)
        layer_heads = _headlines(_run(*headline_sql(r, v)))
        by_layer = tuple(
            LayerRetention(layer, tuple(layered[layer]), layer_heads.get(layer, ())) for layer in sorted(layered)
        )
    return RetentionTable(
        anchor=spec.anchor,
        cohort_grain=spec.cohort_grain,
        period=spec.period,
        periods=spec.periods,
        return_events=spec.return_events,
        cohort_from=r.cohort_from,
        cohort_to=r.cohort_to,
        as_of=r.as_of,
        cohorts=tuple(cohorts),
        headlines=headlines,
        breakdown=spec.breakdown,
        by_layer=by_layer,
    )
