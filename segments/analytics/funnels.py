"""Step funnels over the event stream, computed by one SQL statement (PostgreSQL and SQLite).

Definitions (README "Growth analytics"):

- A funnel is an ordered list of **steps**; a step is an event type, optionally narrowed by
  equality on event properties (``{"page": "product"}``; compared as text, so ``true``,
  ``3`` and ``"3"`` match the JSON values ``true`` and ``3``).
- A customer **enters** with a step-1 event in ``[start, end)``. The **conversion window**
  (``window_seconds``) runs from that entry event.
- ``order="strict"``: steps in the given order. Step k is the first step-k event strictly
  after the event that completed step k−1 and no later than entry + window. Two events at
  the same instant are not "one after the other", so they cannot complete consecutive
  steps (this also keeps one event from counting twice when two steps share a type).
  Taking the *first* matching event at each step reaches as far as any other choice would.
- ``order="any"``: the steps in any order: every step needs an event in
  ``[s, s + window]`` where ``s`` is any event of the funnel's steps in ``[start, end)``.
- A customer who entered several times counts **once**, with the attempt that reached the
  furthest step (the earliest such attempt on a tie).
- **Reached step k**: customers whose counted attempt completed steps 1…k. **Conversion
  from the previous step** = reached k / reached k−1; **overall** = reached k / reached 1.
  Undefined (null, with a reason) when the denominator is 0.
- **Median time from the previous step** (strict order only): over customers who reached
  step k, the median of (time of step k − time of step k−1), in seconds, to the millisecond;
  an even count averages the two middle values (as ``statistics.median``). Any order: null.
- **Breakdown**: ``layer:<dimension>`` the layer held at the counted entry instant (layer
  history, as in retention: not today's layer), e.g. ``layer:rfm`` (tier) or
  ``layer:lifecycle`` (lifecycle stage); ``attribute:<name>`` a customer attribute, e.g.
  ``attribute:channel`` (acquisition channel); ``''`` when missing.
"""

from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Literal

from django.utils import timezone

from segments.analytics import sql
from segments.analytics.errors import AnalyticsInputError
from segments.models import Dimension, EventType

Order = Literal["strict", "any"]
MAX_STEPS = 10
MAX_WINDOW_SECONDS = 366 * 86400
# The sort / hash memory of one funnel or retention statement (sql.run, PostgreSQL only).
WORK_MEM = "256MB"
PROPERTY_KEY = re.compile(r"^[A-Za-z0-9_]{1,64}$")
ATTRIBUTE_KEY = PROPERTY_KEY


@dataclass(frozen=True)
class FunnelStep:
    event: str
    where: dict[str, Any] = field(default_factory=dict)
    label: str = ""


@dataclass(frozen=True)
class FunnelSpec:
    steps: tuple[FunnelStep, ...]
    window_seconds: int = 86400
    order: Order = "strict"
    start: dt.datetime | None = None
    end: dt.datetime | None = None
    breakdown: str | None = None


PRESETS: dict[str, FunnelSpec] = {
    # channel -> scene -> product -> decision -> done (docs/domain.md): arrived (login),
    # was shown a scene (any page visit), looked at a product page, added to cart, ordered.
    "five_step": FunnelSpec(
        steps=(
            FunnelStep("login", label="Channel"),
            FunnelStep("visit", label="Scene"),
            FunnelStep("visit", {"page": "product"}, label="Product"),
            FunnelStep("add_to_cart", label="Decision"),
            FunnelStep("order", label="Done"),
        ),
        window_seconds=3 * 86400,
    ),
    # AARRR: acquisition (sign-up), activation (first add to cart), retention (came back:
    # a login), revenue (an order), referral (the customer brought someone: an invitation
    # sent with their personal code, ``referral_invite_sent``, recorded on the *inviter*;
    # not ``referral_signup``, which is recorded on the invited friend at their own sign-up,
    # so could never follow that friend's first order).
    "aarrr": FunnelSpec(
        steps=(
            FunnelStep("signup", label="Acquisition"),
            FunnelStep("add_to_cart", label="Activation"),
            FunnelStep("login", label="Retention"),
            FunnelStep("order", label="Revenue"),
            FunnelStep("referral_invite_sent", label="Referral"),
        ),
        window_seconds=30 * 86400,
    ),
}


@dataclass(frozen=True)
class StepResult:
    step: int
    label: str
    event: str
    reached: int
    conversion_from_previous: float | None
    conversion_overall: float | None
    median_seconds_from_previous: float | None
    reason: str | None = None


@dataclass(frozen=True)
class FunnelGroup:
    group: str
    steps: tuple[StepResult, ...]


@dataclass(frozen=True)
class FunnelResult:
    order: str
    window_seconds: int
    start: dt.datetime
    end: dt.datetime
    steps: tuple[StepResult, ...]
    breakdown: str | None = None
    groups: tuple[FunnelGroup, ...] = ()


@dataclass(frozen=True)
class _Resolved:
    spec: FunnelSpec
    start: dt.datetime
    end: dt.datetime
    type_ids: tuple[int, ...]
    breakdown_kind: str | None  # "layer" | "attribute"
    breakdown_arg: Any


def _resolve(spec: FunnelSpec) -> _Resolved:
    if not 1 <= len(spec.steps) <= MAX_STEPS:
        raise AnalyticsInputError("steps", f"Between 1 and {MAX_STEPS} steps.")
    if spec.order not in ("strict", "any"):
        raise AnalyticsInputError("order", "Use 'strict' or 'any'.")
    if not 1 <= spec.window_seconds <= MAX_WINDOW_SECONDS:
        raise AnalyticsInputError("window_seconds", f"Between 1 and {MAX_WINDOW_SECONDS} seconds.")
    codes = dict(EventType.objects.values_list("code", "id"))
    for i, step in enumerate(spec.steps):
        if step.event not in codes:
            raise AnalyticsInputError(f"steps.{i}.event", f"Unknown event type '{step.event}'.")
        for key, value in step.where.items():
            if not PROPERTY_KEY.match(key):
                raise AnalyticsInputError(f"steps.{i}.where", f"Property names are letters, digits and '_': '{key}'.")
            if not isinstance(value, str | int | float | bool) or value is None:
                raise AnalyticsInputError(f"steps.{i}.where.{key}", "Compare with a string, number or boolean.")
    end = spec.end or timezone.now()
    start = spec.start or end - dt.timedelta(days=30)
    for name, value in (("start", start), ("end", end)):
        if timezone.is_naive(value):
            raise AnalyticsInputError(name, "Give a time zone offset.")
    if start >= end:
        raise AnalyticsInputError("start", "Must be before end.")
    kind, arg = breakdown_resolve(spec.breakdown) if spec.breakdown else (None, None)
    return _Resolved(spec, start, end, tuple(codes[s.event] for s in spec.steps), kind, arg)


def breakdown_resolve(breakdown: str, *, bare_is_layer: bool = False) -> tuple[str, int | str]:
    """``layer:<dimension key>`` -> ("layer", the dimension's id); ``attribute:<name>`` ->
    ("attribute", name); with ``bare_is_layer`` a bare dimension key is a layer breakdown
    (retention's form before the prefixes). Anything else: a 400 naming ``breakdown``."""
    kind, colon, name = breakdown.partition(":")
    if bare_is_layer and not colon:
        kind, name = "layer", breakdown
    if kind == "layer":
        dimension_id = Dimension.objects.filter(key=name).values_list("id", flat=True).first()
        if dimension_id is None:
            raise AnalyticsInputError("breakdown", f"Unknown dimension '{name}'.")
        return kind, dimension_id
    if kind == "attribute" and ATTRIBUTE_KEY.match(name):
        return kind, name
    forms = "'layer:<dimension key>' or 'attribute:<name>'"
    raise AnalyticsInputError("breakdown", f"Use a dimension key, {forms}." if bare_is_layer else f"Use {forms}.")


def _ms(value: dt.datetime) -> int:
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(milliseconds=1)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _condition(r: _Resolved, k: int, params: list[object], v: sql.Vendor) -> str:
    """Event ``e`` completes step k (its type and property filters); appends its params."""
    step = r.spec.steps[k - 1]
    parts = ["e.event_type_id = %s"]
    params.append(r.type_ids[k - 1])
    for key, value in sorted(step.where.items()):
        parts.append(f"{sql.json_text('e.properties', '%s', v)} = %s")
        params.extend([key, _text(value)] if v == "postgresql" else [key, key, _text(value)])
    return " AND ".join(parts)


def _breakdown(r: _Resolved, v: sql.Vendor) -> tuple[str, list[object], str]:
    """The group expression over ``b`` (a chosen attempt), its params and the join it needs."""
    if r.breakdown_kind == "layer":
        return sql.layer_at("b.customer_id", "b.ts1"), [r.breakdown_arg, r.breakdown_arg], ""
    if r.breakdown_kind == "attribute":
        group = f"COALESCE({sql.json_text('cu.attributes', '%s', v)}, '')"
        group_params: list[object] = [r.breakdown_arg] if v == "postgresql" else [r.breakdown_arg] * 2
        return group, group_params, "JOIN segments_customer cu ON cu.id = b.customer_id"
    return "NULL", [], ""


def _strict_postgresql(r: _Resolved) -> tuple[str, list[object]]:
    """The strict-order funnel on PostgreSQL: the same numbers as the portable statement, in
    the shape that runs fastest at 1,000,000 customers / 10,000,000 events (README "Growth
    analytics"; serial CPU measured with ``log_statement_stats`` at 150,000 customers):

    - **Most attempts stop at step 1, so they get no per-attempt work.** A correlated
      ``LATERAL`` probe per entry (3M of them at 1M customers) is the plan PostgreSQL 15
      cannot run in parallel workers (a lateral subquery with an aggregate is parallel
      restricted), which left the whole funnel on one core. Instead: ``first`` = each
      customer's earliest entry (a parallel partial aggregate over the step-1 events), and
      ``two`` = the attempts that reach step 2 (each entry joined with its customer's
      step-2 events inside the window, ``MIN`` per entry: a join + partial aggregate the
      planner runs in parallel workers). A customer with no attempt in ``two`` reached
      step 1 with their earliest entry, which is the attempt the definition counts.
    - Steps 3…K are ``LEFT JOIN LATERAL`` MIN probes over the (customer, type, time) index
      for the attempts of ``two`` only, each gated on the previous step (``previous IS NOT
      NULL`` is a one-time filter: an attempt that stopped costs no probe).
    - Entries are not de-duplicated up front: identical entries (same customer, same
      instant) are one group of ``two`` and one ``MIN`` of ``first``.
    - Overall and per-group figures come out of one pass (``GROUPING SETS``), counts as
      ``COUNT(*) FILTER`` and medians as ``percentile_cont(0.5)`` (the mean of the two middle
      values for an even count, as ``statistics.median``).
    """
    v: sql.Vendor = "postgresql"
    k_steps = len(r.spec.steps)
    seconds = int(r.spec.window_seconds)
    window = f"interval '{seconds} seconds'"
    params: list[object] = []

    def entries() -> str:
        text = (
            f"SELECT e.customer_id, e.occurred_at AS ts1 FROM segments_event e WHERE {_condition(r, 1, params, v)} "
            "AND e.occurred_at >= %s AND e.occurred_at < %s"
        )
        params.extend([sql.timestamp(r.start), sql.timestamp(r.end)])
        return text

    ctes = [f"first AS (SELECT s.customer_id, MIN(s.ts1) AS ts1 FROM ({entries()}) s GROUP BY s.customer_id)"]
    epochs = [f"{sql.epoch_ms('COALESCE(b.ts1, f.ts1)' if k_steps > 1 else 'f.ts1', v)} AS t1"]
    if k_steps > 1:
        ctes.append(
            f"two AS (SELECT s.customer_id, s.ts1, MIN(e.occurred_at) AS ts2 FROM ({entries()}) s "
            f"JOIN segments_event e ON e.customer_id = s.customer_id AND {_condition(r, 2, params, v)} "
            f"AND e.occurred_at > s.ts1 AND e.occurred_at <= s.ts1 + {window} GROUP BY s.customer_id, s.ts1)"
        )
        laterals = []
        for k in range(3, k_steps + 1):
            previous = "t.ts2" if k == 3 else f"x{k - 1}.ts{k - 1}"
            laterals.append(
                f"LEFT JOIN LATERAL (SELECT MIN(e.occurred_at) AS ts{k} FROM segments_event e "
                f"WHERE {previous} IS NOT NULL AND e.customer_id = t.customer_id AND {_condition(r, k, params, v)} "
                f"AND e.occurred_at > {previous} AND e.occurred_at <= t.ts1 + {window}) x{k} ON true"
            )
        later = "".join(f", x{k}.ts{k}" for k in range(3, k_steps + 1))
        reached = " + ".join(["2", *(f"(x{k}.ts{k} IS NOT NULL)::int" for k in range(3, k_steps + 1))])
        ctes.append(
            f"far AS (SELECT t.customer_id, t.ts1, t.ts2{later}, {reached} AS reached FROM two t {' '.join(laterals)})"
        )
        ctes.append("best AS (SELECT DISTINCT ON (customer_id) * FROM far ORDER BY customer_id, reached DESC, ts1)")
        epochs += [f"{sql.epoch_ms(f'b.ts{k}', v)} AS t{k}" for k in range(2, k_steps + 1)]
        ctes.append(
            "tried AS (SELECT f.customer_id, COALESCE(b.ts1, f.ts1) AS ts1, COALESCE(b.reached, 1) AS reached, "
            f"{', '.join(epochs)} FROM first f LEFT JOIN best b ON b.customer_id = f.customer_id)"
        )
    else:
        ctes.append(f"tried AS (SELECT f.customer_id, f.ts1, 1 AS reached, {epochs[0]} FROM first f)")
    if r.breakdown_kind == "layer":
        # The layer held at the entry instant for every chosen customer at once (a hash
        # join with the dimension's history, latest entered first), instead of one
        # correlated probe per customer (~1M at full size); the first layer entered later
        # only for the few not layered then. Same rule as sql.layer_at.
        ctes.append(
            "held AS (SELECT DISTINCT ON (b.customer_id) b.customer_id, l.key FROM tried b "
            "JOIN segments_layerhistory h ON h.customer_id = b.customer_id AND h.dimension_id = %s "
            "AND h.entered_at <= b.ts1 AND (h.left_at IS NULL OR h.left_at > b.ts1) "
            "JOIN segments_layer l ON l.id = h.layer_id ORDER BY b.customer_id, h.entered_at DESC, h.id DESC)"
        )
        params.append(r.breakdown_arg)
        later_layer = (
            "SELECT l.key FROM segments_layerhistory h JOIN segments_layer l ON l.id = h.layer_id "
            "WHERE h.customer_id = b.customer_id AND h.dimension_id = %s AND h.entered_at > b.ts1 "
            "ORDER BY h.entered_at, h.id LIMIT 1"
        )
        group, group_params = f"COALESCE(hl.key, ({later_layer}), '')", [r.breakdown_arg]
        join = "LEFT JOIN held hl ON hl.customer_id = b.customer_id"
    else:
        group, group_params, join = _breakdown(r, v)
    params += group_params
    times = ", ".join(f"b.t{k}" for k in range(1, k_steps + 1))
    grouping = "GROUP BY GROUPING SETS ((g), ())" if r.breakdown_kind else ""
    counts = ", ".join(f"COUNT(*) FILTER (WHERE reached >= {k}) AS n{k}" for k in range(1, k_steps + 1))
    medians = "".join(
        f", percentile_cont(0.5) WITHIN GROUP (ORDER BY t{k} - t{k - 1}) FILTER (WHERE reached >= {k}) AS m{k}"
        for k in range(2, k_steps + 1)
    )
    values = ", ".join(
        [f"('n', {k}, agg.n{k}::float8)" for k in range(1, k_steps + 1)]
        + [f"('m', {k}, agg.m{k})" for k in range(2, k_steps + 1)]
    )
    ctes.append(f"chosen AS (SELECT {group} AS g, b.reached, {times} FROM tried b {join})")
    ctes.append(f"agg AS (SELECT {'g' if grouping else 'NULL::text AS g'}, {counts}{medians} FROM chosen {grouping})")
    statement = (
        f"WITH {', '.join(ctes)} "
        f"SELECT u.kind, agg.g, u.step, u.value FROM agg CROSS JOIN LATERAL (VALUES {values}) u(kind, step, value) "
        "WHERE u.value IS NOT NULL"
    )
    return statement, params


def funnel_sql(r: _Resolved, v: sql.Vendor) -> tuple[str, list[object]]:
    """Rows ``(kind, group, step, value)``: kind 'n' = customers who reached the step, 'm' = the
    median milliseconds from the previous step. ``group`` is NULL for everyone, else the
    breakdown value."""
    if v == "postgresql" and r.spec.order == "strict":
        return _strict_postgresql(r)
    k_steps = len(r.spec.steps)
    seconds = int(r.spec.window_seconds)
    params: list[object] = []

    def condition(k: int) -> str:
        return _condition(r, k, params, v)

    times = [f"t{k}" for k in range(1, k_steps + 1)]
    ctes: list[str] = []
    # Each next step is a correlated MIN / EXISTS over the (customer, type, time) index: one
    # index probe per attempt and step, whatever the planner thinks of the row counts (a
    # join of materialized CTEs here was planned as a nested loop and went quadratic).
    # Each step's CTE is MATERIALIZED (PostgreSQL 12+, SQLite 3.35+): inlined, the planner
    # copies a step's subquery into every later reference and re-runs it there.
    if r.spec.order == "strict":
        ctes.append(
            f"c1 AS (SELECT DISTINCT e.customer_id, e.occurred_at AS ts1 FROM segments_event e WHERE {condition(1)} "
            "AND e.occurred_at >= %s AND e.occurred_at < %s)"
        )
        params += [sql.timestamp(r.start), sql.timestamp(r.end)]
        for k in range(2, k_steps + 1):
            ctes.append(
                f"c{k} AS MATERIALIZED (SELECT c.*, CASE WHEN c.ts{k - 1} IS NULL THEN NULL "
                "ELSE (SELECT MIN(e.occurred_at) "
                f"FROM segments_event e WHERE e.customer_id = c.customer_id AND {condition(k)} "
                f"AND e.occurred_at > c.ts{k - 1} AND e.occurred_at <= {sql.plus_seconds('c.ts1', seconds, v)}) END "
                f"AS ts{k} FROM c{k - 1} c)"
            )
        reached = " + ".join(f"CASE WHEN ts{k} IS NULL THEN 0 ELSE 1 END" for k in range(1, k_steps + 1))
        epochs = ", ".join(f"{sql.epoch_ms(f'ts{k}', v)} AS t{k}" for k in range(1, k_steps + 1))
        ctes.append(f"attempts AS (SELECT customer_id, ts1, {epochs}, {reached} AS reached FROM c{k_steps})")
    else:
        any_step = " OR ".join(f"({condition(k)})" for k in range(1, k_steps + 1))
        ctes.append(
            f"starts AS (SELECT DISTINCT e.customer_id, e.occurred_at AS ts1 FROM segments_event e WHERE ({any_step}) "
            "AND e.occurred_at >= %s AND e.occurred_at < %s)"
        )
        params += [sql.timestamp(r.start), sql.timestamp(r.end)]
        flags = ", ".join(
            f"CASE WHEN EXISTS (SELECT 1 FROM segments_event e WHERE e.customer_id = s.customer_id AND {condition(k)} "
            f"AND e.occurred_at >= s.ts1 AND e.occurred_at <= {sql.plus_seconds('s.ts1', seconds, v)}) "
            f"THEN 1 ELSE 0 END AS k{k}"
            for k in range(1, k_steps + 1)
        )
        ctes.append(f"sat AS (SELECT s.customer_id, s.ts1, {flags} FROM starts s)")
        leading = (
            "CASE " + " ".join(f"WHEN k{k} = 0 THEN {k - 1}" for k in range(1, k_steps + 1)) + f" ELSE {k_steps} END"
        )
        nulls = ", ".join(f"NULL AS t{k}" for k in range(2, k_steps + 1))
        ctes.append(
            f"attempts AS (SELECT customer_id, ts1, {sql.epoch_ms('ts1', v)} AS t1"
            f"{', ' + nulls if nulls else ''}, {leading} AS reached FROM sat)"
        )
    ctes.append(
        "best AS (SELECT a.*, ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY reached DESC, t1) AS rn "
        "FROM attempts a)"
    )
    group, group_params, join = _breakdown(r, v)
    ctes.append(
        f"chosen AS (SELECT NULL AS g, b.reached, {', '.join(f'b.{t}' for t in times)} FROM best b "
        "WHERE b.rn = 1 AND b.reached >= 1"
        + (
            f" UNION ALL SELECT {group} AS g, b.reached, {', '.join(f'b.{t}' for t in times)} FROM best b {join} "
            "WHERE b.rn = 1 AND b.reached >= 1"
            if r.breakdown_kind
            else ""
        )
        + ")"
    )
    params += group_params
    ctes.insert(0, f"p(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM p WHERE n < {k_steps})")
    ctes.append(
        "counts AS (SELECT ch.g, p.n AS step, SUM(CASE WHEN ch.reached >= p.n THEN 1 ELSE 0 END) AS cnt "
        "FROM chosen ch CROSS JOIN p GROUP BY ch.g, p.n)"
    )
    if r.spec.order == "strict" and k_steps > 1:
        durs = " UNION ALL ".join(
            f"SELECT g, {k} AS step, t{k} - t{k - 1} AS d FROM chosen WHERE reached >= {k}"
            for k in range(2, k_steps + 1)
        )
        ctes.append(f"durs AS ({durs})")
        ctes.append(
            "ranked AS (SELECT g, step, d, ROW_NUMBER() OVER (PARTITION BY g, step ORDER BY d) AS rn, "
            "COUNT(*) OVER (PARTITION BY g, step) AS cnt FROM durs)"
        )
        ctes.append(
            "med AS (SELECT g, step, AVG(d) AS m FROM ranked WHERE rn = (cnt + 1) / 2 OR rn = (cnt + 2) / 2 "
            "GROUP BY g, step)"
        )
        tail = " UNION ALL SELECT 'm', g, step, m FROM med"
    else:
        tail = ""
    statement = f"WITH RECURSIVE {', '.join(ctes)} SELECT 'n', g, step, cnt FROM counts{tail}"
    return statement, params


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else part / whole


def _steps(spec: FunnelSpec, counts: dict[int, int], medians: dict[int, float]) -> tuple[StepResult, ...]:
    out = []
    first = counts.get(1, 0)
    for k, step in enumerate(spec.steps, start=1):
        reached = counts.get(k, 0)
        previous = counts.get(k - 1, 0) if k > 1 else reached
        reason = None
        if first == 0:
            reason = "nobody entered the funnel"
        elif k > 1 and previous == 0:
            reason = "nobody reached the previous step"
        median = None
        if k > 1 and reached and spec.order == "strict":
            median = medians[k] / 1000
        out.append(
            StepResult(
                step=k,
                label=step.label or step.event,
                event=step.event,
                reached=reached,
                conversion_from_previous=_ratio(reached, previous) if k > 1 else _ratio(reached, first),
                conversion_overall=_ratio(reached, first),
                median_seconds_from_previous=median,
                reason=reason,
            )
        )
    return tuple(out)


def funnel(*, spec: FunnelSpec) -> FunnelResult:
    """Reached, conversion and median time per step, overall and per breakdown group."""
    r = _resolve(spec)
    v = sql.vendor()
    statement, params = funnel_sql(r, v)
    # The strict statement without hash joins (sql.run): its entries and step-2 join read the
    # (customer, type, time) index in customer order and group as they stream; serial CPU
    # at 150,000 customers 0.97 s against 1.66 s with the hash joins the planner picks.
    # Without hash aggregates either: ``first`` (each customer's earliest entry) is then a
    # group aggregate over that same ordered index-only read, which is already in the order
    # of the merge join that follows. With events in monthly partitions the planner
    # otherwise hashes 3M entries read from the heap by bitmap scans and sorts the 1M
    # groups again (1,000,000 customers / 10,000,000 events in 15 monthly partitions:
    # 12.8 s against 8.3 s; README "Growth analytics"). A larger work_mem keeps its
    # sorts of ~1M chosen attempts in memory (they spilled 25-50 MB each at 64 MB).
    strict = v == "postgresql" and spec.order == "strict"
    rows = sql.run(statement, params, hash_joins=not strict, hash_aggregates=not strict, work_mem=WORK_MEM)
    counts: dict[str | None, dict[int, int]] = defaultdict(dict)
    medians: dict[str | None, dict[int, float]] = defaultdict(dict)
    for kind, group, step, value in rows:
        if kind == "n":
            counts[group][int(step)] = int(value)
        else:
            medians[group][int(step)] = float(value)
    groups = tuple(
        FunnelGroup(str(g), _steps(spec, counts[g], medians[g])) for g in sorted(k for k in counts if k is not None)
    )
    return FunnelResult(
        order=spec.order,
        window_seconds=spec.window_seconds,
        start=r.start,
        end=r.end,
        steps=_steps(spec, counts.get(None, {}), medians.get(None, {})),
        breakdown=spec.breakdown,
        groups=groups,
    )
