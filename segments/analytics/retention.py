"""Retention cohort tables, computed by SQL in the database (PostgreSQL and SQLite).

Definitions (docs/domain.md, README "Growth analytics"):

- **Anchor**: a customer's sign-up time (``signed_up_at``) or their first purchase (the
  earliest event of the purchase type, ``order`` by default, up to ``as_of``).
- **Day 0** is the anchor's calendar day *in the customer's own time zone*
  (``Customer.timezone``); **day N** is the local day N days later; **week N** is days
  7N … 7N+6 (counted from the anchor's day, not calendar weeks).
- **Cohort**: customers whose anchor day falls in the same day / ISO week (Monday) / month;
  the table covers the buckets from ``cohort_from``'s to ``cohort_to``'s (local anchor days),
  each whole: the range is widened to the first bucket's first day and the last one's last.
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
import itertools
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

from django.utils import timezone

from config.replica import reading_connection
from segments.analytics import sql
from segments.analytics.errors import AnalyticsInputError
from segments.analytics.funnels import breakdown_resolve
from segments.models import EventType

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
    # Whole buckets: a cohort is every customer whose anchor day falls in its week or month,
    # so the range is widened to the first bucket's first day and the last bucket's last
    # day. Cut at a day inside a bucket, that cohort would hold only the customers of some of
    # its days under the whole bucket's label (the default range, today minus a span, began
    # on a Wednesday: a "week" of two days, a quarter the size of its neighbours).
    cohort_from = sql.bucket_of(cohort_from, spec.cohort_grain)
    cohort_to = sql.bucket_last_day(cohort_to, spec.cohort_grain)
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
        kind, arg = breakdown_resolve(spec.breakdown, bare_is_layer=True)
        if kind == "layer":
            dimension_id = int(arg)
        else:
            attribute = str(arg)
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
        f"FROM local x WHERE x.d0 >= {dp} AND x.d0 <= {dp}{sql.no_flatten(v)}"
    )
    params.append(as_of)  # local today
    if r.dimension_id is not None:
        params += [r.dimension_id, r.dimension_id]
    elif r.attribute is not None:
        params += [r.attribute] if v == "postgresql" else [r.attribute, r.attribute]
    params += [r.cohort_from.isoformat(), r.cohort_to.isoformat()]
    placeholders = ", ".join(["%s"] * len(r.return_type_ids)) or "NULL"
    # One row per (cohort customer, return event): d = the event's local day - d0, NULL for a
    # customer without return events (kept: they count in the size). The fence (OFFSET 0 on
    # PostgreSQL) keeps d computed once per event: flattened, the planner would repeat the
    # time-zone conversion in every aggregate that reads d.
    ev = (
        f"SELECT ch.customer_id, ch.cohort, ch.layer, ch.age, "
        f"{sql.day_diff(sql.local_date('e.occurred_at', 'ch.tz', v), 'ch.d0', v)} AS d "
        "FROM cohort ch LEFT JOIN segments_event e ON e.customer_id = ch.customer_id "
        f"AND e.event_type_id IN ({placeholders}) AND e.occurred_at <= %s{sql.no_flatten(v)}"
    )
    params += [*r.return_type_ids, as_of]
    ctes = f"anchor AS ({anchor}), local AS ({local}), cohort AS ({cohort}), ev AS ({ev})"
    return ctes, params


MASK_BITS = 62  # periods per bigint word: 1 << 62 is the highest power of two both vendors keep positive


def _buckets(r: _Resolved, v: sql.Vendor) -> tuple[str, dt.date]:
    """The recursive ``buckets(b)`` CTE's body listing every cohort bucket from the first
    one's start (its parameter, returned second) to ``cohort_to`` (the second parameter), so
    buckets without customers are listed with size 0."""
    dp = sql.date_param(v)
    step = sql.next_bucket("b", r.spec.cohort_grain, v)
    body = f"SELECT {dp} AS b UNION ALL SELECT {step} FROM buckets WHERE {step} <= {dp}"
    return body, sql.bucket_of(r.cohort_from, r.spec.cohort_grain)


def table_sql(r: _Resolved, v: sql.Vendor) -> tuple[str, list[object]]:
    """One wide row per (cohort bucket, layer): size, min age, then for n = 0..periods the
    customers retained on n (``o<n>``) and on or after n (``a<n>``), then for each headline
    day N the eligible, retained on and on or after N (``he<N>``, ``ho<N>``, ``ha<N>``).

    Buckets without customers are listed (size 0) when there is no breakdown.

    Shape (why it is fast on 10M events): one pass over the cohort's events, grouped by
    customer into a bit set of the periods they returned on (``w<j>``: periods 62j..62j+61,
    bit p mod 62) and their last return period; then one aggregate per cohort reads bit n of
    every customer's set. No DISTINCT over (customer, day) pairs, no second scan for "on or
    after", no separate headline statement, and every step is a hash join / hash aggregate
    that PostgreSQL runs in parallel workers (``bit_or`` has a combine function; SQLite sums
    the distinct powers of two, which is the same number).
    """
    if v == "postgresql":
        return _table_postgresql(r)
    ctes, params = _cohort_ctes(r, v)
    n_max = int(r.spec.periods)
    length = PERIOD_DAYS[r.spec.period]
    words = n_max // MASK_BITS + 1
    period = f"(x.d / {length})"
    bit = f"{sql.one_bigint(v)} << ({period} %% {MASK_BITS})"
    masks = ", ".join(
        sql.bit_or_agg(
            f"CASE WHEN x.d >= 0 AND {period} <= {n_max} AND {period} / {MASK_BITS} = {j} THEN {bit} ELSE 0 END", v
        )
        + f" AS w{j}"
        for j in range(words)
    )
    flags = ", ".join(
        f"MAX(CASE WHEN x.d = {n} THEN 1 ELSE 0 END) AS on{n}, MAX(CASE WHEN x.d >= {n} THEN 1 ELSE 0 END) AS af{n}"
        for n in HEADLINE_DAYS
    )
    per = (
        f"SELECT x.customer_id, x.cohort, x.layer, x.age, {masks}, MAX(CASE WHEN x.d >= 0 THEN {period} END) AS maxp, "
        f"{flags} FROM ev x GROUP BY x.customer_id, x.cohort, x.layer, x.age"
    )
    columns = ["COUNT(pc.customer_id) AS size", "MIN(pc.age) AS min_age"]
    columns += [f"SUM((pc.w{n // MASK_BITS} >> {n % MASK_BITS}) & 1) AS o{n}" for n in range(n_max + 1)]
    columns += [f"SUM(CASE WHEN pc.maxp >= {n} THEN 1 ELSE 0 END) AS a{n}" for n in range(n_max + 1)]
    for n in HEADLINE_DAYS:
        columns += [
            f"SUM(CASE WHEN pc.age > {n} THEN 1 ELSE 0 END) AS he{n}",
            f"SUM(CASE WHEN pc.age > {n} THEN pc.on{n} ELSE 0 END) AS ho{n}",
            f"SUM(CASE WHEN pc.age > {n} THEN pc.af{n} ELSE 0 END) AS ha{n}",
        ]
    if r.dimension_id is None and r.attribute is None:
        buckets, first = _buckets(r, v)
        statement = (
            f"WITH RECURSIVE buckets(b) AS ({buckets}), {ctes}, per AS ({per}) "
            f"SELECT bk.b AS cohort, '' AS layer, {', '.join(columns)} "
            "FROM buckets bk LEFT JOIN per pc ON pc.cohort = bk.b GROUP BY bk.b ORDER BY bk.b"
        )
        return statement, [first.isoformat(), r.cohort_to.isoformat(), *params]
    statement = (
        f"WITH {ctes}, per AS ({per}) SELECT pc.cohort, pc.layer, {', '.join(columns)} "
        "FROM per pc GROUP BY pc.cohort, pc.layer ORDER BY pc.layer, pc.cohort"
    )
    return statement, params


def _bit_meanings(n_max: int, length: int) -> tuple[list[tuple[str, int]], int]:
    """The per-customer bits of :func:`_table_postgresql` and the day index they are read at.

    Bits, in order: ``("on", n)`` (an event on a day of period n), ``("after", n)`` (an
    event on a day of period n or later), then for each headline day N ``("hon", N)`` (an
    event on day N) and ``("haf", N)`` (on day N or later), unless a period bit already
    says the same (daily periods up to N). ``cap``: every day from ``cap`` on answers
    every bit the same way (after: yes, on: no), so a day index is ``LEAST(d, cap)``.
    """
    bits = [("on", n) for n in range(n_max + 1)] + [("after", n) for n in range(n_max + 1)]
    for n in HEADLINE_DAYS:
        if not (length == 1 and n <= n_max):
            bits += [("hon", n), ("haf", n)]
    return bits, max((n_max + 1) * length, max(HEADLINE_DAYS) + 1)


def _bit_holds(meaning: tuple[str, int], d: int, length: int) -> bool:
    kind, n = meaning
    if kind == "on":
        return d // length == n
    if kind == "after":
        return d >= n * length
    return d == n if kind == "hon" else d >= n


def _bit_of(bits: list[tuple[str, int]], meaning: tuple[str, int]) -> tuple[int, int]:
    """(word, value) of a meaning; a headline bit folded into a period bit reads that one."""
    kind, n = meaning
    if meaning not in bits:
        meaning = ("on" if kind == "hon" else "after", n)
    i = bits.index(meaning)
    return i // MASK_BITS, 1 << (i % MASK_BITS)


def _table_postgresql(r: _Resolved) -> tuple[str, list[object]]:
    """:func:`table_sql` on PostgreSQL, the same columns, in the shape that runs in parallel
    workers at 10M events (README "Growth analytics"; profiled at 150,000 customers):

    - **One expression per event.** An event's day offset ``d`` (its local day − d0) is
      read once, as an index into a constant array per 62-bit word that holds, for each
      day 0..cap, every bit that day sets (on period n, on or after period n, the D1 / D7 /
      D30 flags); ``bit_or`` of those words per customer is all the table needs. Days
      before d0 index the array at 0 or below, which reads NULL, which ``bit_or`` skips.
      (The portable statement computes ``d`` in a fenced subquery and reads it in ~9
      expressions; a fence is what kept PostgreSQL from planning the join in parallel.)
    - **No fence, no wide GROUP BY.** The events are grouped by customer id only; the
      cohort, age and layer are computed once per customer in a second, light pass over
      the anchors (customers without events count in the size from there).
    - **Estimates the planner can use.** The anchors are narrowed by a range on the stored
      instant that contains every cohort day in any time zone (a day earlier and two later,
      UTC offsets being within −12 h … +14 h), which the planner estimates from the
      column's statistics; the exact local-day range is a CASE in the cohort key of the
      light pass (a WHERE on a computed day is estimated at 0.5% of the rows). Events
      before that range's start cannot be on or after any d0 (partition pruning).
    - Run through :func:`_run` (no hash joins for this statement): 6.3 s at 1,000,000
      customers / 10,000,000 events on 2 cores (README "Benchmarks").
    - **Events in several partitions** (monthly, as a database that has run a year holds
      them): the per-cohort counts are computed per customer-id range, one ``UNION ALL``
      branch each, and added up (:func:`_cells`, :func:`_id_ranges`), so that the ordered
      read, a Merge Append there, runs in parallel workers again.
    """
    v: sql.Vendor = "postgresql"
    n_max = int(r.spec.periods)
    length = PERIOD_DAYS[r.spec.period]
    bits, cap = _bit_meanings(n_max, length)
    words = (len(bits) + MASK_BITS - 1) // MASK_BITS
    as_of = sql.timestamp(r.as_of)
    lo = dt.datetime.combine(r.cohort_from - dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    hi = dt.datetime.combine(r.cohort_to + dt.timedelta(days=2), dt.time(), tzinfo=dt.UTC)
    anchor_params: list[object] = [lo, hi, as_of] if r.spec.anchor == "signup" else [r.purchase_type_id, as_of, lo, hi]

    # The anchors of one range of customer ids: IDS(c.id) / IDS(e.customer_id) are
    # replaced by that range's condition on the column (_ranged).
    if r.spec.anchor == "signup":
        anchors = (
            "SELECT c.id AS customer_id, c.timezone AS tz, c.signed_up_at AS t0 FROM segments_customer c "
            "WHERE c.signed_up_at >= %s AND c.signed_up_at < %s AND c.signed_up_at <= %s IDS(c.id)"
        )
    else:
        anchors = (
            "SELECT c.id AS customer_id, c.timezone AS tz, f.t0 FROM (SELECT e.customer_id, MIN(e.occurred_at) AS t0 "
            "FROM segments_event e WHERE e.event_type_id = %s AND e.occurred_at <= %s IDS(e.customer_id) "
            "GROUP BY e.customer_id) f JOIN segments_customer c ON c.id = f.customer_id WHERE f.t0 >= %s AND f.t0 < %s"
        )

    d = sql.day_diff(sql.local_date("e.occurred_at", "a.tz", v), sql.local_date("a.t0", "a.tz", v), v)
    arrays = []
    for j in range(words):
        table = []
        for day in range(cap + 1):
            value = 0
            for i, meaning in enumerate(bits[j * MASK_BITS : (j + 1) * MASK_BITS]):
                if _bit_holds(meaning, day, length):
                    value |= 1 << i
            table.append(str(value))
        arrays.append(f"bit_or(('{{{','.join(table)}}}'::bigint[])[LEAST({d}, {cap}) + 1]) AS w{j}")
    placeholders = ", ".join(["%s"] * len(r.return_type_ids)) or "NULL"
    per = (
        f"SELECT a.customer_id, {', '.join(arrays)} FROM ({anchors}) a "
        "JOIN segments_event e ON e.customer_id = a.customer_id "
        f"WHERE e.event_type_id IN ({placeholders}) AND e.occurred_at <= %s AND e.occurred_at >= %s IDS(e.customer_id) "
        "GROUP BY a.customer_id"
    )
    params: list[object] = [*anchor_params, *r.return_type_ids, as_of, lo]
    layer = "''"
    layer_params: list[object] = []
    if r.dimension_id is not None:
        layer = sql.layer_at("a.customer_id", "a.t0")
        layer_params = [r.dimension_id, r.dimension_id]
    elif r.attribute is not None:
        value = sql.json_text("cu.attributes", "%s", v)
        layer = f"COALESCE((SELECT {value} FROM segments_customer cu WHERE cu.id = a.customer_id), '')"
        layer_params = [r.attribute]
    d0 = sql.local_date("a.t0", "a.tz", v)
    dp = sql.date_param(v)
    # Split into id ranges only without a breakdown: the layer / attribute of a customer is
    # a correlated subquery, which keeps the branches out of parallel workers, and then the
    # planner ran each branch's per-customer aggregate in every process under a parallel
    # scan of the customers (the plan that made the split 3x slower on one partition).
    ranges = _id_ranges() if r.dimension_id is None and r.attribute is None else [(None, None)]
    # The fence is parallel unsafe (PostgreSQL 15 plans no worker under a subquery with an
    # OFFSET): kept for the one-range statement, whose light pass runs in the leader.
    fence = sql.no_flatten(v) if len(ranges) == 1 else ""
    # The exact local-day range is a CASE in the cohort key (NULL outside, dropped after
    # grouping), not a WHERE: the planner estimates a range on a computed day at 0.5% of
    # the rows, and with 5,000 rows expected instead of 1M it sorted them to group them.
    # d0 and the local "today" once per customer in a fenced subquery (this side of the
    # statement runs in the leader: five conversions per customer were 1M x 5 there).
    ch = (
        f"SELECT x.customer_id, CASE WHEN x.d0 >= {dp} AND x.d0 <= {dp} "
        f"THEN {sql.bucket_start('x.d0', r.spec.cohort_grain, v)} END AS cohort, "
        f"{sql.day_diff('x.today', 'x.d0', v)} AS age, x.layer FROM (SELECT a.customer_id, {d0} AS d0, "
        f"{sql.local_date('%s', 'a.tz', v)} AS today, {layer} AS layer FROM ({anchors}) a{fence}) x"
    )
    ch_params = [r.cohort_from.isoformat(), r.cohort_to.isoformat(), as_of, *layer_params, *anchor_params]

    def has(meaning: tuple[str, int]) -> str:
        word, value = _bit_of(bits, meaning)
        return f"pc.w{word} & {value} <> 0"

    # Counting customers per bit: one SUM per *pair* of bits (s, s + 32) of a word, each
    # bit moved to its own 32-bit lane, ``(w >> s) & (1 + 2^32)``; a lane cannot carry into
    # the next below 2^32 customers. Half the expressions per customer row of a COUNT
    # FILTER per bit, in the one step of the statement that runs in the leader alone
    # (after the per-customer words are gathered); the outer query splits the lanes.
    lanes: dict[tuple[int, int], str] = {}
    counted = []
    for kind in ("on", "after"):
        for n in range(n_max + 1):
            word, value = _bit_of(bits, (kind, n))
            shift = value.bit_length() - 1
            lanes[(word, shift % 32)] = f"l{word}_{shift % 32}"
            lane = f"(cl.l{word}_{shift % 32})::bigint"
            counted.append(f"({lane} >> 32)" if shift >= 32 else f"({lane} & 4294967295)")
    columns = ["COUNT(ch.customer_id) AS size", "MIN(ch.age) AS min_age"]
    columns += [f"SUM((pc.w{w} >> {s}) & 4294967297) AS {name}" for (w, s), name in lanes.items()]
    heads = []
    for n in HEADLINE_DAYS:
        columns += [
            f"COUNT(*) FILTER (WHERE ch.age > {n}) AS he{n}",
            f"COUNT(*) FILTER (WHERE ch.age > {n} AND {has(('hon', n))}) AS ho{n}",
            f"COUNT(*) FILTER (WHERE ch.age > {n} AND {has(('haf', n))}) AS ha{n}",
        ]
        heads += [f"cl.he{n}", f"cl.ho{n}", f"cl.ha{n}"]
    joined = f"({ch}) ch LEFT JOIN ({per}) pc ON pc.customer_id = ch.customer_id"
    outer = ", ".join(
        [
            "COALESCE(cl.size, 0)",
            "cl.min_age",
            *(f"COALESCE({c}, 0)" for c in counted),
            *(f"COALESCE({c}, 0)" for c in heads),
        ]
    )
    if r.dimension_id is None and r.attribute is None:
        buckets, first = _buckets(r, v)
        cells, cells_params = _cells(columns, joined, ["ch.cohort"], [*ch_params, *params], ranges)
        statement = (
            f"WITH RECURSIVE buckets(b) AS ({buckets}), cells AS ({cells}) "
            f"SELECT bk.b AS cohort, '' AS layer, {outer} "
            "FROM buckets bk LEFT JOIN cells cl ON cl.cohort = bk.b ORDER BY bk.b"
        )
        return statement, [first.isoformat(), r.cohort_to.isoformat(), *cells_params]
    cells, cells_params = _cells(columns, joined, ["ch.cohort", "ch.layer"], [*ch_params, *params], ranges)
    statement = (
        f"WITH cells AS ({cells}) SELECT cl.cohort, cl.layer, {outer} FROM cells cl "
        "WHERE cl.cohort IS NOT NULL ORDER BY cl.layer, cl.cohort"
    )
    return statement, cells_params


# Customer-id ranges of the PostgreSQL table statement (_cells): each range's customers
# are counted into cohorts by their own branch of a UNION ALL, which PostgreSQL runs as a
# Parallel Append (a branch per process at a time). Below ID_RANGE_MIN ids: one branch.
ID_RANGES = 6
ID_RANGE_MIN = 50_000
_IDS = re.compile(r"IDS\(([a-z_.]+)\)")


def _id_ranges() -> list[tuple[int | None, int | None]]:
    """``ID_RANGES`` ranges [lo, hi) of equal width over the customer ids, the first and
    last open-ended: whatever the ids are by the time the statement runs (a replica a little
    behind, customers added since), every customer is in exactly one range.

    Only when the events are spread over more than one partition (the planner's row
    estimates, ``pg_class.reltuples``): with every event in one partition, the one-range
    statement reads them in customer order in parallel workers already (6.1-7.9 s at
    1,000,000 customers), and split by range the planner ran every branch's per-customer
    aggregate in each of three processes under a parallel scan of the customers (19 s)."""
    with reading_connection().cursor() as cursor:
        cursor.execute(
            "SELECT MIN(id), MAX(id), (SELECT COUNT(*) FROM pg_inherits i JOIN pg_class p ON p.oid = i.inhrelid "
            "WHERE i.inhparent = 'segments_event'::regclass AND p.reltuples > 0) FROM segments_customer"
        )
        low, high, partitions = cursor.fetchone()
    if low is None or high - low < ID_RANGE_MIN or partitions < 2:
        return [(None, None)]
    bounds = [None, *(low + (high - low + 1) * i // ID_RANGES for i in range(1, ID_RANGES)), None]
    return list(itertools.pairwise(bounds))


def _ranged(text: str, low: int | None, high: int | None) -> str:
    """``text`` with every ``IDS(column)`` replaced by the range's condition on that column
    (integer literals from :func:`_id_ranges`)."""

    def condition(match: re.Match[str]) -> str:
        column = match.group(1)
        parts = ([] if low is None else [f"AND {column} >= {int(low)}"]) + (
            [] if high is None else [f"AND {column} < {int(high)}"]
        )
        return " ".join(parts)

    return _IDS.sub(condition, text)


def _cells(
    columns: list[str], joined: str, keys: list[str], params: list[object], ranges: list[tuple[int | None, int | None]]
) -> tuple[str, list[object]]:
    """The per-cohort (and layer) counts: ``columns`` over ``joined`` grouped by ``keys``,
    computed per customer-id range and added up (sizes, lanes and headline counts summed,
    the minimum age the minimum); one range: the statement as it is.

    Why (README "Growth analytics"): with the events in monthly partitions, the ordered read
    per customer is a Merge Append, which PostgreSQL 15 runs in one process; split by
    customer id, each branch reads its id range of every partition's (customer, type,
    time) index (the id is the index's leading column) and the branches run in parallel
    workers. Every customer is in one range, so each branch's counts are its customers'."""
    group = ", ".join(keys)
    one = f"SELECT {group}, {', '.join(columns)} FROM {joined} GROUP BY {group}"
    if len(ranges) == 1:
        return _ranged(one, None, None), params
    names = [keys_name.split(".")[-1] for keys_name in keys]
    merged = []
    for column in columns:
        name = column.rsplit(" AS ", 1)[1]
        merged.append(f"MIN(u.{name}) AS {name}" if name == "min_age" else f"SUM(u.{name})::bigint AS {name}")
    branches = " UNION ALL ".join(f"({_ranged(one, low, high)})" for low, high in ranges)
    keys_u = ", ".join(f"u.{n}" for n in names)
    statement = f"SELECT {keys_u}, {', '.join(merged)} FROM ({branches}) u GROUP BY {keys_u}"
    return statement, params * len(ranges)


def _rate(part: int | None, whole: int) -> float | None:
    return None if part is None or whole == 0 else part / whole


def _cohorts(rows: list[tuple], n_max: int, length: int) -> dict[str, list[RetentionCohort]]:
    """Shape :func:`table_sql`'s wide rows into cohorts of cells, per layer (in row order)."""
    out: dict[str, list[RetentionCohort]] = defaultdict(list)
    for row in rows:
        cohort, layer, size, min_age = sql.as_date(row[0]), row[1], int(row[2] or 0), row[3]
        on, after = row[4 : 5 + n_max], row[5 + n_max : 6 + 2 * n_max]
        shaped = []
        for n in range(n_max + 1):
            if size == 0:
                shaped.append(RetentionCell(n, None, None, None, None, EMPTY))
            elif (n + 1) * length > min_age:
                shaped.append(RetentionCell(n, None, None, None, None, NOT_OVER))
            else:
                o, a = int(on[n] or 0), int(after[n] or 0)
                shaped.append(RetentionCell(n, o, _rate(o, size), a, _rate(a, size)))
        out[layer].append(RetentionCohort(cohort, size, tuple(shaped)))
    return out


def _unreached(n: int) -> str:
    return f"no customer of the range has had day {n} end yet"


def _headlines(rows: list[tuple], n_max: int) -> dict[str, tuple[Headline, ...]]:
    """D1 / D7 / D30 per layer: the sums over its cohorts of the rows' headline columns."""
    sums: dict[str, list[int]] = defaultdict(lambda: [0] * (3 * len(HEADLINE_DAYS)))
    for row in rows:
        total = sums[row[1]]
        for i, value in enumerate(row[6 + 2 * n_max : 6 + 2 * n_max + 3 * len(HEADLINE_DAYS)]):
            total[i] += int(value or 0)
    out: dict[str, tuple[Headline, ...]] = {}
    for layer, total in sums.items():
        items = []
        for i, n in enumerate(HEADLINE_DAYS):
            eligible, on, after = total[3 * i : 3 * i + 3]
            if eligible == 0:
                items.append(Headline(n, 0, None, None, None, None, _unreached(n)))
            else:
                items.append(Headline(n, eligible, on, on / eligible, after, after / eligible))
        out[layer] = tuple(items)
    return out


def _run(statement: str, params: list[object]) -> list[tuple]:
    """Run a table statement, on PostgreSQL without hash joins (:func:`sql.run`): the
    per-customer words are cheapest when the events' (customer, type, time) index is read
    in customer order by parallel workers and joined with the customers in that order (a
    merge join at 150,000 customers, index-only probes per customer at 1M), grouped as they
    stream (serial CPU at 150,000: 0.84 s against 1.94 s for the parallel hash join + hash
    aggregate the planner prefers, which hashes 10M events and gathers a partial group per
    customer per worker).

    Events in monthly partitions (a database that has run a year; ``bench/analytics.py
    --monthly-partitions``): the ordered read becomes a Merge Append over the partitions,
    which PostgreSQL 15 runs in one process, about 2x the time of the one-partition layout
    at 200,000 customers / 2,000,000 events, 9.1-9.8 s at 1,000,000 / 10,000,000 (one
    partition: 6.0-6.7 s). With hash joins the parallel hash join + partial hash aggregate
    took 1.4x as long at 200k and 16 s at 1M, one ``UNION ALL`` branch per month (each
    grouped, then re-grouped with ``bit_or``) 3x at 200k. What brings the parallel workers
    back is a branch per *customer-id range* (:func:`_cells`): each reads its range of
    every partition's index in customer order, and the branches run under a Parallel
    Append: 6.3 s at 1M in 15 monthly partitions (README "Growth analytics")."""
    return sql.run(statement, params, hash_joins=False)


def retention_table(*, spec: RetentionSpec) -> RetentionTable:
    """The cohort table, its headlines and, with ``spec.breakdown``, the same per layer."""
    r = _resolve(spec)
    v = sql.vendor()
    length = PERIOD_DAYS[spec.period]
    overall = _Resolved(r.spec, r.as_of, r.cohort_from, r.cohort_to, r.return_type_ids, r.purchase_type_id, None)
    n_max = spec.periods
    rows = _run(*table_sql(overall, v))
    cohorts = _cohorts(rows, n_max, length).get("", [])
    headlines = _headlines(rows, n_max).get("", ())
    if not headlines:
        headlines = tuple(Headline(n, 0, None, None, None, None, _unreached(n)) for n in HEADLINE_DAYS)
    by_layer: tuple[LayerRetention, ...] = ()
    if r.dimension_id is not None or r.attribute is not None:
        rows = _run(*table_sql(r, v))
        layered = _cohorts(rows, n_max, length)
        layer_heads = _headlines(rows, n_max)
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
