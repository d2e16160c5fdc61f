"""Growth analytics on PostgreSQL: a 12-month x 30-day retention table and a five-step funnel by tier.

Each is timed against a hand-written single SQL statement computing the same numbers (the
anchor), in the same run, and their numbers are compared. Floors (issue 19): each within
2x its anchor and under 10 s at 1,000,000 customers / 10,000,000 events on 2 cores.

    .venv/bin/python bench/analytics.py                 # full size: 1,000,000 customers, 10 events each
    .venv/bin/python bench/analytics.py --quick         # 50,000 customers: a check, not a measurement
    scripts/bench.sh analytics                          # full size, services started if needed
    .venv/bin/python bench/analytics.py --sqlite        # SQLite, 100,000 customers (the embedded default)
    .venv/bin/python bench/analytics.py --reuse         # keep bench_analytics; measure again on it if
                                                        # it holds exactly this size (no 6-12 min generation)
    .venv/bin/python bench/analytics.py --monthly-partitions   # events in monthly partitions, as a
                                                        # database that has run a year holds them

The data is generated set-based inside PostgreSQL (``generate_series`` + ``random()`` with
a fixed seed): customers signed up over 12 months in four time zones with an acquisition
channel; ten events each (login, visit with a page, add_to_cart, order) spread over the
90 days after sign-up; one RFM layer-history row per customer from before the data starts
(30% move to another layer half-way). The database is ``bench_analytics`` on the server of
``DATABASE_URL`` (as ``scripts/bench.sh`` exports it) or of ``PG_PORT``.

``--monthly-partitions``: the generator writes every event into ``segments_event``'s DEFAULT
partition (the product creates monthly partitions from the current month ahead, and the data
is dated 2025-2026). A production database that has run a year holds its events in one
partition per month instead, which changes the plans (an ordered read of the events in
customer order becomes a Merge Append over the partitions). With this option the generated
events move into monthly partitions by the product's own code,
``segments.services.partitions.event_partitions_ensure(today=<first month>, ahead=<months>)``
(what the daily beat task does: build each month's table, move the rows the default partition
caught for it, attach), then ``VACUUM ANALYZE``. The database is ``bench_analytics_monthly``
and the result ``bench/results/analytics_partitioned.json``, so both layouts can be kept and
measured side by side (``--reuse``).

``--sqlite`` runs the same two product computations on SQLite (the embedded default) at
100,000 customers; the data has the same distributions, generated in Python with a seeded
``random.Random`` (SQLite's ``random()`` cannot be seeded). The anchors are PostgreSQL
statements (LATERAL, ``percentile_cont``, ``AT TIME ZONE``), so on SQLite the product's
numbers are reported without an anchor and without a floor (issue 19 asks for SQLite to be
reported, the floors are for PostgreSQL). Saved as ``bench/results/analytics_sqlite.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import common  # noqa: E402

FLOOR_RATIO = 2.0
FLOOR_S = 10.0
SEED = 0.1919
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
AS_OF = dt.datetime(2026, 4, 1, tzinfo=dt.UTC)


def _use_database_url() -> None:
    """Honour DATABASE_URL's server (host, port, user, password) when it is set."""
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith(("postgres://", "postgresql://")):
        return
    parts = urlsplit(url)
    common.PG_HOST = parts.hostname or common.PG_HOST
    common.PG_PORT = parts.port or common.PG_PORT
    common.PG_USER = parts.username or common.PG_USER
    common.PG_PASSWORD = parts.password or common.PG_PASSWORD


def _setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings_test"
    os.environ.setdefault("GROWTH_VAR_DIR", str(ROOT / "var" / "bench-analytics"))
    os.environ["CACHE_URL"] = "locmemcache://"
    os.environ["CELERY_BROKER_URL"] = "memory://"
    Path(os.environ["GROWTH_VAR_DIR"]).mkdir(parents=True, exist_ok=True)
    import django

    django.setup()


def _generate(customers: int, events_per_customer: int) -> dict[str, Any]:
    from django.db import connection

    from segments.models import Dimension, EventType, Layer

    types = dict(EventType.objects.values_list("code", "id"))
    rfm = Dimension.objects.get(key="rfm")
    layer_ids = list(Layer.objects.filter(dimension=rfm).order_by("position").values_list("id", flat=True))
    timings: dict[str, float] = {}
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [SEED])
        t = time.perf_counter()
        cursor.execute(
            "INSERT INTO segments_customer (external_id, signed_up_at, timezone, locale, attributes, email, phone, "
            "push_token, created_at, updated_at) "
            "SELECT 'c' || g, %s::timestamptz + random() * interval '365 days', "
            "(ARRAY['UTC', 'Europe/Paris', 'Asia/Tokyo', 'America/New_York'])[1 + floor(random() * 4)::int], 'en', "
            "jsonb_build_object('channel', "
            "(ARRAY['organic', 'paid', 'social', 'referral'])[1 + floor(random() * 4)::int]), "
            "'', '', '', now(), now() FROM generate_series(1, %s) g",
            [START, customers],
        )
        timings["customers_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cursor.execute(
            "INSERT INTO segments_event (event_id, customer_id, event_type_id, occurred_at, received_at, properties, "
            "amount, currency) "
            "SELECT 'e' || x.id || '-' || x.k, x.id, "
            "CASE WHEN x.r < 0.3 THEN %(login)s WHEN x.r < 0.65 THEN %(visit)s WHEN x.r < 0.85 THEN %(cart)s "
            "ELSE %(order)s END, "
            "x.signed_up_at + power(random(), 2) * interval '90 days', now(), "
            "CASE WHEN x.r >= 0.3 AND x.r < 0.65 THEN jsonb_build_object('page', "
            "(ARRAY['home', 'product', 'search', 'offers'])[1 + floor(random() * 4)::int]) ELSE '{}'::jsonb END, "
            "CASE WHEN x.r >= 0.85 THEN 42.00 END, CASE WHEN x.r >= 0.85 THEN 'EUR' ELSE '' END "
            "FROM (SELECT c.id, c.signed_up_at, k, random() AS r FROM segments_customer c "
            "CROSS JOIN generate_series(1, %(per)s) k) x",
            {
                "login": types["login"],
                "visit": types["visit"],
                "cart": types["add_to_cart"],
                "order": types["order"],
                "per": events_per_customer,
            },
        )
        timings["events_s"] = time.perf_counter() - t
        t = time.perf_counter()
        cursor.execute(
            "INSERT INTO segments_layerhistory (customer_id, dimension_id, layer_id, entered_at, left_at) "
            "SELECT c.id, %s, (%s::int[])[1 + floor(random() * %s)::int], '2024-12-01', "
            "CASE WHEN c.id %% 10 < 3 THEN c.signed_up_at + interval '45 days' END FROM segments_customer c",
            [rfm.pk, layer_ids, len(layer_ids)],
        )
        cursor.execute(
            "INSERT INTO segments_layerhistory (customer_id, dimension_id, layer_id, entered_at, left_at) "
            "SELECT h.customer_id, h.dimension_id, (%s::int[])[1 + floor(random() * %s)::int], h.left_at, NULL "
            "FROM segments_layerhistory h WHERE h.left_at IS NOT NULL",
            [layer_ids, len(layer_ids)],
        )
        timings["layer_history_s"] = time.perf_counter() - t
        t = time.perf_counter()
        for table in ("segments_customer", "segments_event", "segments_layerhistory"):
            cursor.execute(f"VACUUM ANALYZE {table}")
        timings["vacuum_analyze_s"] = time.perf_counter() - t
        cursor.execute("SELECT COUNT(*) FROM segments_event")
        events = cursor.fetchone()[0]
    return {"customers": customers, "events": events, "timings": {k: round(v, 2) for k, v in timings.items()}}


def _partition_monthly() -> dict[str, Any]:
    """Move the generated events from the default partition into monthly partitions with the
    product's own partition code (module docstring), then VACUUM ANALYZE. Idempotent."""
    from django.db import connection

    from segments.services import partitions

    with connection.cursor() as cursor:
        cursor.execute("SELECT MIN(occurred_at), MAX(occurred_at) FROM segments_event")
        first, last = cursor.fetchone()
    first_month = partitions.month_start(first.astimezone(dt.UTC).date())
    last_month = partitions.month_start(last.astimezone(dt.UTC).date())
    ahead = (last_month.year - first_month.year) * 12 + last_month.month - first_month.month
    t = time.perf_counter()
    created = partitions.event_partitions_ensure(today=first_month, ahead=ahead)
    moved_s = time.perf_counter() - t
    t = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE segments_event")
    vacuum_s = time.perf_counter() - t
    layout = _layout()
    if layout["default_rows"]:
        raise RuntimeError(f"{layout['default_rows']} events left in the default partition")
    return {**layout, "created": len(created), "move_s": round(moved_s, 2), "vacuum_analyze_s": round(vacuum_s, 2)}


def _layout() -> dict[str, Any]:
    """Where the events are: rows in the default partition and the monthly partitions holding rows."""
    from django.db import connection

    from segments.services import partitions

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {partitions.DEFAULT}")
        default_rows = cursor.fetchone()[0]
    monthly = [p for p in partitions.event_partitions() if p.rows_estimate > 0]
    return {
        "layout": "monthly" if monthly and not default_rows else "default",
        "default_rows": default_rows,
        "monthly_partitions_with_rows": len(monthly),
    }


def _generate_sqlite(customers: int, events_per_customer: int) -> dict[str, Any]:
    """The same shape of data as :func:`_generate`, written in bounded batches from Python."""
    import random

    from django.db import connection, transaction

    from segments.models import Dimension, EventType, Layer

    rng = random.Random(SEED)
    ops = connection.ops
    types = dict(EventType.objects.values_list("code", "id"))
    rfm = Dimension.objects.get(key="rfm")
    layer_ids = list(Layer.objects.filter(dimension=rfm).order_by("position").values_list("id", flat=True))
    zones = ["UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York"]
    channels = ["organic", "paid", "social", "referral"]
    pages = ["home", "product", "search", "offers"]
    now = ops.adapt_datetimefield_value(dt.datetime.now(dt.UTC))
    timings: dict[str, float] = {}
    t = time.perf_counter()
    signed: list[dt.datetime] = []
    with transaction.atomic(), connection.cursor() as cursor:
        rows = []
        for g in range(1, customers + 1):
            at = START + dt.timedelta(days=365) * rng.random()
            signed.append(at)
            rows.append(
                (
                    f"c{g}",
                    ops.adapt_datetimefield_value(at),
                    rng.choice(zones),
                    "en",
                    f'{{"channel": "{rng.choice(channels)}"}}',
                    "",
                    "",
                    "",
                    now,
                    now,
                )
            )
        cursor.executemany(
            "INSERT INTO segments_customer (external_id, signed_up_at, timezone, locale, attributes, email, phone, "
            "push_token, created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            rows,
        )
        cursor.execute("SELECT id FROM segments_customer ORDER BY id")
        ids = [row[0] for row in cursor.fetchall()]
    timings["customers_s"] = time.perf_counter() - t
    t = time.perf_counter()
    batch: list[tuple] = []

    def flush() -> None:
        with connection.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO segments_event (event_id, customer_id, event_type_id, occurred_at, received_at, "
                "properties, amount, currency) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                batch,
            )
        batch.clear()

    with transaction.atomic():
        for cid, at in zip(ids, signed, strict=True):
            for k in range(1, events_per_customer + 1):
                r = rng.random()
                kind = "login" if r < 0.3 else "visit" if r < 0.65 else "add_to_cart" if r < 0.85 else "order"
                occurred = at + dt.timedelta(days=90) * rng.random() ** 2
                props = f'{{"page": "{rng.choice(pages)}"}}' if kind == "visit" else "{}"
                batch.append(
                    (
                        f"e{cid}-{k}",
                        cid,
                        types[kind],
                        ops.adapt_datetimefield_value(occurred),
                        now,
                        props,
                        "42.00" if kind == "order" else None,
                        "EUR" if kind == "order" else "",
                    )
                )
            if len(batch) >= 50_000:
                flush()
        flush()
    timings["events_s"] = time.perf_counter() - t
    t = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        history = []
        for cid, at in zip(ids, signed, strict=True):
            left = at + dt.timedelta(days=45) if cid % 10 < 3 else None
            history.append(
                (
                    cid,
                    rfm.pk,
                    rng.choice(layer_ids),
                    "2024-12-01 00:00:00",
                    None if left is None else ops.adapt_datetimefield_value(left),
                )
            )
            if left is not None:
                history.append((cid, rfm.pk, rng.choice(layer_ids), ops.adapt_datetimefield_value(left), None))
        cursor.executemany(
            "INSERT INTO segments_layerhistory (customer_id, dimension_id, layer_id, entered_at, left_at) "
            "VALUES (%s, %s, %s, %s, %s)",
            history,
        )
        cursor.execute("ANALYZE")
        cursor.execute("SELECT COUNT(*) FROM segments_event")
        events = cursor.fetchone()[0]
    timings["layer_history_s"] = time.perf_counter() - t
    return {"customers": customers, "events": events, "timings": {k: round(v, 2) for k, v in timings.items()}}


# The anchors: what a person would write by hand for exactly these two tables.
RETENTION_ANCHOR = """
WITH c AS (
  SELECT id, timezone AS tz, (signed_up_at AT TIME ZONE timezone)::date AS d0
  FROM segments_customer WHERE signed_up_at <= %(as_of)s
), cc AS (
  SELECT id, tz, d0, date_trunc('month', d0)::date AS cohort FROM c WHERE d0 BETWEEN %(from)s AND %(to)s
), r AS (
  SELECT DISTINCT e.customer_id, (e.occurred_at AT TIME ZONE cc.tz)::date - cc.d0 AS n
  FROM segments_event e JOIN cc ON cc.id = e.customer_id
  WHERE e.event_type_id <> %(signup)s AND e.occurred_at <= %(as_of)s
    AND (e.occurred_at AT TIME ZONE cc.tz)::date >= cc.d0
), on_c AS (
  SELECT cc.cohort, r.n, COUNT(*) AS cnt FROM r JOIN cc ON cc.id = r.customer_id WHERE r.n <= 30 GROUP BY 1, 2
), after_c AS (
  SELECT cc.cohort, g.n, COUNT(*) AS cnt
  FROM (SELECT customer_id, LEAST(MAX(n), 30) AS mx FROM r GROUP BY customer_id) m
  JOIN cc ON cc.id = m.customer_id JOIN generate_series(0, 30) g(n) ON m.mx >= g.n GROUP BY 1, 2
)
SELECT COALESCE(o.cohort, a.cohort), COALESCE(o.n, a.n), COALESCE(o.cnt, 0), COALESCE(a.cnt, 0)
FROM on_c o FULL JOIN after_c a ON a.cohort = o.cohort AND a.n = o.n
"""

FUNNEL_ANCHOR = """
WITH s1 AS (
  SELECT DISTINCT e.customer_id, e.occurred_at AS t1 FROM segments_event e
  WHERE e.event_type_id = %(login)s AND e.occurred_at >= %(start)s AND e.occurred_at < %(end)s
), a AS (
  SELECT s1.customer_id, s1.t1, x2.t2, x3.t3, x4.t4, x5.t5 FROM s1
  LEFT JOIN LATERAL (SELECT MIN(e.occurred_at) AS t2 FROM segments_event e WHERE e.customer_id = s1.customer_id
    AND e.event_type_id = %(visit)s AND e.occurred_at > s1.t1 AND e.occurred_at <= s1.t1 + %(w)s) x2 ON true
  LEFT JOIN LATERAL (SELECT MIN(e.occurred_at) AS t3 FROM segments_event e WHERE e.customer_id = s1.customer_id
    AND e.event_type_id = %(visit)s AND e.properties ->> 'page' = 'product'
    AND e.occurred_at > x2.t2 AND e.occurred_at <= s1.t1 + %(w)s) x3 ON true
  LEFT JOIN LATERAL (SELECT MIN(e.occurred_at) AS t4 FROM segments_event e WHERE e.customer_id = s1.customer_id
    AND e.event_type_id = %(cart)s AND e.occurred_at > x3.t3 AND e.occurred_at <= s1.t1 + %(w)s) x4 ON true
  LEFT JOIN LATERAL (SELECT MIN(e.occurred_at) AS t5 FROM segments_event e WHERE e.customer_id = s1.customer_id
    AND e.event_type_id = %(order)s AND e.occurred_at > x4.t4 AND e.occurred_at <= s1.t1 + %(w)s) x5 ON true
), best AS (
  SELECT DISTINCT ON (customer_id) customer_id, t1, t2, t3, t4, t5,
    1 + (t2 IS NOT NULL)::int + (t3 IS NOT NULL)::int + (t4 IS NOT NULL)::int + (t5 IS NOT NULL)::int AS reached
  FROM a ORDER BY customer_id, reached DESC, t1
), tiered AS (
  SELECT b.*, COALESCE(lh.key, '') AS tier FROM best b
  LEFT JOIN LATERAL (SELECT l.key FROM segments_layerhistory h JOIN segments_layer l ON l.id = h.layer_id
    WHERE h.customer_id = b.customer_id AND h.dimension_id = %(rfm)s AND h.entered_at <= b.t1
    AND (h.left_at IS NULL OR h.left_at > b.t1) ORDER BY h.entered_at DESC LIMIT 1) lh ON true
)
SELECT tier, GROUPING(tier),
  COUNT(*), COUNT(t2), COUNT(t3), COUNT(t4), COUNT(t5),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM t2 - t1)),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM t3 - t2)),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM t4 - t3)),
  percentile_cont(0.5) WITHIN GROUP (ORDER BY EXTRACT(EPOCH FROM t5 - t4))
FROM tiered GROUP BY GROUPING SETS ((tier), ())
"""


def _time(fn: Any, repeats: int) -> dict[str, Any]:
    runs, result = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t)
    return {"best_s": round(min(runs), 3), "median_s": round(statistics.median(runs), 3), "_result": result}


def _strip(timing: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in timing.items() if not k.startswith("_")}


def _retention_spec() -> Any:
    """The measured retention table: monthly sign-up cohorts of 2025 x days 0..30."""
    from segments.analytics.retention import RetentionSpec

    return RetentionSpec(
        anchor="signup",
        cohort_grain="month",
        period="day",
        periods=30,
        cohort_from=dt.date(2025, 1, 1),
        cohort_to=dt.date(2025, 12, 31),
        as_of=AS_OF,
    )


def _five_step_spec() -> Any:
    from segments.analytics.funnels import PRESETS, FunnelSpec

    five = PRESETS["five_step"]
    return FunnelSpec(
        steps=five.steps,
        window_seconds=five.window_seconds,
        order="strict",
        start=START,
        end=AS_OF,
        breakdown="layer:rfm",
    )


def _product_only(product: Any, full: Any, cells: int, d1_d7_d30: list, repeats: int) -> dict[str, Any]:
    """SQLite: the product's timings and numbers, no anchor (the anchors are PostgreSQL SQL)."""
    from segments.analytics.funnels import funnel

    product_f = _time(lambda: funnel(spec=_five_step_spec()), repeats)
    result = product_f["_result"]
    return {
        "retention": {
            "product": _strip(product),
            "product_with_headlines": _strip(full),
            "cells": cells,
            "d1_d7_d30": d1_d7_d30,
        },
        "funnel": {
            "product": _strip(product_f),
            "overall_reached": [s.reached for s in result.steps],
            "groups": len(result.groups),
        },
    }


def _measure(repeats: int, *, anchors: bool = True) -> dict[str, Any]:
    """Product and (on PostgreSQL) anchor timings; without anchors only the product's."""
    from django.db import connection

    from segments.analytics.funnels import funnel
    from segments.analytics.retention import retention_table
    from segments.models import Dimension, EventType

    types = dict(EventType.objects.values_list("code", "id"))

    def fetch(statement: str, params: Any) -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(statement, params)
            return list(cursor.fetchall())

    # --- retention: monthly cohorts over 12 months x days 0..30 ---------------------------
    spec = _retention_spec()
    from segments.analytics import retention as retention_module

    resolved = retention_module._resolve(spec)
    from segments.analytics import sql as sql_module

    statement, statement_params = retention_module.table_sql(resolved, sql_module.vendor())
    # through the module's runner: it scopes the statement's planner setting (retention._run)
    product = _time(lambda: retention_module._run(statement, statement_params), repeats)
    full = _time(lambda: retention_table(spec=spec), repeats)
    table = full["_result"]
    d1_d7_d30 = [None if h.rate is None else round(h.rate, 4) for h in table.headlines]
    cells = sum(len(c.cells) for c in table.cohorts)
    if not anchors:
        return _product_only(product, full, cells, d1_d7_d30, repeats)
    anchor = _time(
        lambda: fetch(
            RETENTION_ANCHOR,
            {"as_of": AS_OF, "from": dt.date(2025, 1, 1), "to": dt.date(2025, 12, 31), "signup": types["signup"]},
        ),
        repeats,
    )
    ours = {
        (c.cohort, cell.period): (cell.retained, cell.retained_on_or_after)
        for c in table.cohorts
        for cell in c.cells
        if cell.retained or cell.retained_on_or_after
    }
    theirs = {(cohort, n): (on, after) for cohort, n, on, after in anchor["_result"]}
    retention = {
        "product": _strip(product),
        "product_with_headlines": _strip(full),
        "anchor": _strip(anchor),
        "ratio": round(product["best_s"] / anchor["best_s"], 2),
        "cells": cells,
        "agrees_with_anchor": ours == theirs,
        "d1_d7_d30": d1_d7_d30,
    }

    # --- five-step funnel by tier ---------------------------------------------------------
    fspec = _five_step_spec()
    product_f = _time(lambda: funnel(spec=fspec), repeats)
    params = {
        "login": types["login"],
        "visit": types["visit"],
        "cart": types["add_to_cart"],
        "order": types["order"],
        "start": START,
        "end": AS_OF,
        "w": dt.timedelta(seconds=fspec.window_seconds),
        "rfm": Dimension.objects.get(key="rfm").pk,
    }
    anchor_f = _time(lambda: fetch(FUNNEL_ANCHOR, params), repeats)
    result = product_f["_result"]
    ours_f = {(g.group, s.step): s.reached for g in result.groups for s in g.steps}
    theirs_f = {}
    medians_agree = True
    for tier, overall, *rest in anchor_f["_result"]:
        counts, medians = rest[:5], rest[5:]
        steps = result.steps if overall else next(g.steps for g in result.groups if g.group == tier)
        for k, count in enumerate(counts, start=1):
            if not overall:
                theirs_f[(tier, k)] = int(count)
        for step, median in zip(steps[1:], medians, strict=True):
            ours_m = step.median_seconds_from_previous
            if (ours_m is None) != (median is None) or (median is not None and abs(ours_m - float(median)) > 0.002):
                medians_agree = False
    funnel_out = {
        "product": _strip(product_f),
        "anchor": _strip(anchor_f),
        "ratio": round(product_f["best_s"] / anchor_f["best_s"], 2),
        "agrees_with_anchor": ours_f == theirs_f and medians_agree,
        "overall_reached": [s.reached for s in result.steps],
        "groups": len(result.groups),
    }
    floors = {
        "retention_within_2x": retention["ratio"] <= FLOOR_RATIO,
        "retention_under_10s": product["best_s"] < FLOOR_S,
        "funnel_within_2x": funnel_out["ratio"] <= FLOOR_RATIO,
        "funnel_under_10s": product_f["best_s"] < FLOOR_S,
    }
    return {"retention": retention, "funnel": funnel_out, "floors_met": floors}


def _run_sqlite(args: argparse.Namespace) -> dict[str, Any]:
    var = ROOT / "var" / "bench-analytics"
    var.mkdir(parents=True, exist_ok=True)
    path = var / "analytics.sqlite3"
    path.unlink(missing_ok=True)
    try:
        _setup_django(f"sqlite:///{path}")
        from django.core.management import call_command

        common.log("migrating (SQLite)")
        call_command("migrate", verbosity=0)
        common.log(f"generating {args.customers:,} customers x {args.events_per_customer} events")
        generated = _generate_sqlite(args.customers, args.events_per_customer)
        common.log("measuring")
        measured = _measure(args.repeats, anchors=False)
        from django.db import connections

        connections.close_all()
    finally:
        if not args.keep:
            path.unlink(missing_ok=True)
    return {"generation": generated, **measured}


def _reusable(args: argparse.Namespace) -> dict[str, Any] | None:
    """The kept database's counts when it holds the requested size (else None: regenerate)."""
    import psycopg

    try:
        with psycopg.connect(common.database_url(f"bench_{args.database}"), connect_timeout=10) as conn:
            customers = conn.execute("SELECT COUNT(*) FROM segments_customer").fetchone()[0]
            events = conn.execute("SELECT COUNT(*) FROM segments_event").fetchone()[0]
    except psycopg.Error:
        return None
    if customers != args.customers or events != args.customers * args.events_per_customer:
        return None
    return {"customers": customers, "events": events, "reused": True}


def _reused_layout(args: argparse.Namespace) -> dict[str, Any]:
    """On a reused database: move its events into monthly partitions if asked and not done
    yet; refuse to measure the default layout on a database whose events were moved."""
    layout = _layout()
    if args.monthly_partitions and layout["layout"] != "monthly":
        common.log("moving the events into monthly partitions")
        return _partition_monthly()
    if not args.monthly_partitions and layout["layout"] != "default":
        raise SystemExit(
            f"bench_{args.database} holds its events in monthly partitions: drop it or add --monthly-partitions"
        )
    return layout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=None, help="default 1,000,000 (SQLite: 100,000)")
    parser.add_argument("--events-per-customer", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="50,000 customers, 2 repeats: a check")
    parser.add_argument("--sqlite", action="store_true", help="SQLite (the embedded default), product only")
    parser.add_argument("--keep", action="store_true", help="keep the bench database afterwards")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the generated database and, when it already holds exactly --customers customers and "
        "--events-per-customer events each, measure on it without regenerating (the 1M / 10M generation "
        "takes 6-12 min; the measurement under the lock takes about two)",
    )
    parser.add_argument(
        "--monthly-partitions",
        action="store_true",
        help="after generation, move the events from the default partition into one partition per month "
        "(the product's event_partitions_ensure), as a database that has run a year holds them; database "
        "bench_analytics_monthly, result analytics_partitioned.json",
    )
    parser.add_argument("--database", default=None, help="bench database name suffix: bench_<this>")
    args = parser.parse_args()
    if args.database is None:
        args.database = "analytics_monthly" if args.monthly_partitions else "analytics"
    if args.monthly_partitions and args.sqlite:
        parser.error("--monthly-partitions is for PostgreSQL (SQLite's events table has no partitions)")
    if args.customers is None:
        args.customers = 100_000 if args.sqlite else 1_000_000
    if args.quick:
        args.customers, args.repeats = 50_000, 2
    started = common.machine()
    if args.sqlite:
        measured = _run_sqlite(args)
    else:
        _use_database_url()
        reused = _reusable(args) if args.reuse else None
        if reused is not None:
            sizes = f"{reused['customers']:,} customers, {reused['events']:,} events"
            common.log(f"reusing bench_{args.database} ({sizes})")
            _setup_django(common.database_url(f"bench_{args.database}"))
            reused["partitions"] = _reused_layout(args)
            measured = {"generation": reused, **_measure(args.repeats)}
            from django.db import connections

            connections.close_all()
        else:
            with common.bench_database(args.database, keep=args.keep or args.reuse) as url:
                _setup_django(url)
                from django.core.management import call_command

                common.log("migrating")
                call_command("migrate", verbosity=0)
                common.log(f"generating {args.customers:,} customers x {args.events_per_customer} events")
                generated = _generate(args.customers, args.events_per_customer)
                if args.monthly_partitions:
                    common.log("moving the events into monthly partitions")
                    generated["partitions"] = _partition_monthly()
                else:
                    generated["partitions"] = _layout()
                common.log("measuring")
                measured = {"generation": generated, **_measure(args.repeats)}
                from django.db import connections

                connections.close_all()
    result = {
        "benchmark": "analytics",
        "database": "sqlite" if args.sqlite else "postgresql",
        "quick": args.quick,
        "machine": started,
        **measured,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }
    name = "analytics_sqlite" if args.sqlite else "analytics_partitioned" if args.monthly_partitions else "analytics"
    common.emit(name, result, save=not args.no_save)


if __name__ == "__main__":
    main()
