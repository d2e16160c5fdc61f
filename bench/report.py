"""Benchmark: the lift report over 10,000,000 exposures in PostgreSQL (prints JSON).

Builds its own database (``bench_report`` on the shared server, dropped and recreated),
migrates it, and generates with ``generate_series`` (set-based SQL, seeded):

* ``--customers`` customers (default 10,000,000), each assigned and exposed in one phase
  of a 3-variant experiment (weights 1/3 each), first exposures spread over 28 days,
  0.1% flagged for a conflicting exposure (excluded from analysis);
* the built-in dimensions rfm (9 layers), lifecycle (6) and level (5): 20 layers, 270
  distinct assignment-time snapshots, uniform;
* conversions for three metrics: primary ``order`` (control 10%, b 10% - an A/A arm -,
  c 10.5% and +20% more in the rfm layer ``important_value``), secondary
  ``coupon_redeemed`` (5%) and guardrail ``unsubscribe`` (1%): about 1.6M conversion rows.

Then it times (best and median of ``--repeats`` warm runs; the machine is shared, so the
best run is the least disturbed one):

* ``anchor_aggregation_s``: ``aggregation.phase_counts`` alone - the database work behind
  every number of the report: customers per (variant, snapshot) over the phase's
  assignments, conversions per (metric, variant, snapshot) over the conversion table, and
  the snapshot roll-up; ``main_group_by_sql``: its first statement alone;
* ``report_s``: ``assemble.report_build`` - aggregation plus every statistic (Wald tests
  and intervals, Holm families, SRM overall and per layer, power per row, heterogeneity
  GLMs per dimension and metric); the < 5 s floor applies to it;
* ``statistics_s``: the report built on counts already in memory (the statistics alone);
* ``aggregation_last_week_open_s``: the aggregation as of the last exposure day, when a
  quarter of the customers are still inside their window and are left out (the report's
  default ``exclude_open_windows``);
* ``ratio_report_to_aggregation`` = report_s / anchor_aggregation_s (best runs; and the
  same for the medians): how much the statistics add to the database work;
* the conversion-over-time series, which the report builds only on request (the admin
  page fetches it after the tables): ``report_with_timeseries`` and the daily pass alone;
* for the record (``--no-alternatives`` skips them): the plan the aggregation rejects
  (conversions joined to the assignment pass), and the daily pass with the schema change
  proposed to the engine (a stored generated ``first_exposed_on`` date column, added here
  with ``ALTER TABLE``: ordinary statistics let PostgreSQL aggregate it in parallel);
* the plan of the main statement (EXPLAIN ANALYZE, buffers).

Run: ``scripts/services.sh start; .venv/bin/python bench/report.py`` (``--reuse`` keeps
an already generated database; ``--customers 200000`` for a quick check). The JSON is
also written to ``bench/results/report.json`` unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DB_NAME = "bench_report"
FLOOR_S = 5.0
SEED = 0.4242

DIMENSIONS = ("rfm", "lifecycle", "level")  # built-in dimensions, seeded by migrations: 9 + 6 + 5 layers
PLANTED_LAYER = "important_value"  # rfm layer where variant c lifts the primary metric by 20%
PLANTED_LIFT = 1.2
# Conversion rates per variant (control, b, c): b is an A/A arm on the primary metric.
RATES = {"primary": (0.10, 0.10, 0.105), "secondary": (0.05, 0.05, 0.05), "guardrail": (0.01, 0.01, 0.01)}
VARIANTS = ("control", "b", "c")


def _server_url(database: str) -> str:
    """The benchmark server: DATABASE_URL's server when set (scripts/bench.sh exports it),
    else BENCH_PG_* / PG_PORT (scripts/services.sh's port), so any port works."""
    from urllib.parse import urlsplit

    base = (
        urlsplit(os.environ.get("DATABASE_URL", ""))
        if os.environ.get("DATABASE_URL", "").startswith("postgres")
        else None
    )
    host = os.environ.get("BENCH_PG_HOST") or (base.hostname if base else None) or "127.0.0.1"
    port = (
        os.environ.get("BENCH_PG_PORT")
        or (str(base.port) if base and base.port else None)
        or os.environ.get("PG_PORT", "54329")
    )
    user = os.environ.get("BENCH_PG_USER") or (base.username if base else None) or "growth"
    password = os.environ.get("BENCH_PG_PASSWORD") or (base.password if base else None) or "growth"
    return f"postgres://{user}:{password}@{host}:{port}/{database}"


def _recreate_database() -> None:
    import psycopg

    url = _server_url("postgres").replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {DB_NAME} WITH (FORCE)")
        # BENCH_TEMPLATE_DB (bench/scaling.py): a copy of an already migrated database.
        template = os.environ.get("BENCH_TEMPLATE_DB", "")
        conn.execute(f"CREATE DATABASE {DB_NAME}" + (f' TEMPLATE "{template}"' if template else ""))


def _database_exists() -> bool:
    import psycopg

    url = _server_url("postgres").replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DB_NAME]).fetchone() is not None


def _setup_django() -> None:
    os.environ["DATABASE_URL"] = _server_url(DB_NAME)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings_test")
    os.environ.setdefault("GROWTH_VAR_DIR", str(ROOT / "var" / "bench-report"))
    os.environ.setdefault("CACHE_URL", "locmemcache://")
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    Path(os.environ["GROWTH_VAR_DIR"]).mkdir(parents=True, exist_ok=True)
    import django

    django.setup()


def _generate(customers: int) -> dict[str, Any]:
    """Fill the migrated database; returns the ids the report needs and load timings."""
    from django.db import connection

    from experiments.models import Experiment, Metric, Phase, SegmentSnapshot, Variant
    from segments.models import Dimension, EventType, Layer

    timings: dict[str, float] = {}
    started = time.perf_counter()
    experiment = Experiment.objects.create(
        key="bench-report", name="Report benchmark", status=Experiment.Status.RUNNING, coverage=1
    )
    phase_start = "2024-05-01 00:00:00+00"
    phase = Phase.objects.create(
        experiment=experiment,
        number=1,
        seed="bench-report",
        coverage=1,
        weights=[{"variant": key, "weight": "0.3333"} for key in VARIANTS],
        started_at=phase_start,
    )
    variant_ids = [
        Variant.objects.create(
            experiment=experiment, key=key, name=key.title(), weight="0.3333", is_control=(i == 0), position=i
        ).pk
        for i, key in enumerate(VARIANTS)
    ]
    metric_ids = {
        role: Metric.objects.create(experiment=experiment, event_type=EventType.objects.get(code=code), role=role).pk
        for role, code in (("primary", "order"), ("secondary", "coupon_redeemed"), ("guardrail", "unsubscribe"))
    }
    customer_table = "segments_customer"
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(%s)", [SEED])
        # Every combination of the built-in dimensions' layers (rfm 9 x lifecycle 6 x
        # level 5 = 20 layers, 270 snapshots), keys in canonical form (``dimension=layer``
        # sorted by dimension, joined by ``|``).
        ordered = sorted(range(len(DIMENSIONS)), key=lambda i: DIMENSIONS[i])
        key_sql = " || '|' || ".join(f"'{DIMENSIONS[i]}=' || l{i}.key" for i in ordered)
        json_sql = ", ".join(f"'{key}', l{i}.key" for i, key in enumerate(DIMENSIONS))
        layers_sql = ", ".join(
            f"(SELECT l.key FROM {Layer._meta.db_table} l JOIN {Dimension._meta.db_table} d ON d.id = l.dimension_id"
            f" WHERE d.key = '{key}') l{i}"
            for i, key in enumerate(DIMENSIONS)
        )
        cursor.execute(
            f"INSERT INTO {SegmentSnapshot._meta.db_table} (key, layers, created_at)"
            f" SELECT {key_sql}, jsonb_build_object({json_sql}), now() FROM {layers_sql} ORDER BY 1"
        )
        cursor.execute(f"SELECT min(id), count(*) FROM {SegmentSnapshot._meta.db_table}")
        first_snapshot, snapshots = cursor.fetchone()

        t = time.perf_counter()
        cursor.execute("SET session_replication_role = replica")  # no FK triggers during the bulk load
        cursor.execute(
            f"INSERT INTO {customer_table} (external_id, signed_up_at, timezone, locale, attributes, email,"
            " email_consent_at, phone, push_token, created_at, updated_at)"
            " SELECT 'bench-' || i, timestamptz '2024-01-01', 'UTC', 'en', '{}'::jsonb, '', NULL, '', '', now(), now()"
            " FROM generate_series(1, %s) i",
            [customers],
        )
        timings["customers_s"] = time.perf_counter() - t
        cursor.execute(f"SELECT min(id) FROM {customer_table}")
        (first_customer,) = cursor.fetchone()

        t = time.perf_counter()
        # Snapshot: uniform over the snapshots; variant: uniform over 3; first
        # exposure: uniform over 28 days; 0.1% conflicting.
        cursor.execute(
            "INSERT INTO experiments_assignment (experiment_id, phase_id, customer_id, variant_id, assigned_at,"
            " snapshot_id, first_exposed_at, last_exposed_at, exposure_count, conflicting_exposure)"
            " SELECT %s, %s, c, v.id, t, %s + floor(random() * %s)::int, t, t, 1, random() < 0.001"
            " FROM (SELECT c, floor(random() * 3)::int AS k,"
            "       timestamptz '2024-05-01' + random() * interval '28 days' AS t"
            "       FROM generate_series(%s::bigint, %s::bigint) c) g"
            " JOIN (SELECT unnest(%s::bigint[]) AS id, generate_series(0, 2) AS k) v USING (k)",
            [
                experiment.pk,
                phase.pk,
                first_snapshot,
                snapshots,
                first_customer,
                first_customer + customers - 1,
                variant_ids,
            ],
        )
        timings["assignments_s"] = time.perf_counter() - t

        t = time.perf_counter()
        # Conversions (first goal event within the window after first exposure); the
        # engine deletes those of conflicting assignments, so none are generated.
        # Primary: 10% / 10.5% / 11%, plus +20% for variant c in the first layer of "rfm".
        for role, rates in RATES.items():
            planted = PLANTED_LIFT if role == "primary" else 1.0
            cursor.execute(
                "INSERT INTO experiments_conversion (assignment_id, metric_id, phase_id, variant_id, snapshot_id,"
                " converted_at, first_exposed_at)"
                " SELECT a.id, %s, a.phase_id, a.variant_id, a.snapshot_id,"
                "        a.first_exposed_at + random() * interval '7 days', a.first_exposed_at"
                " FROM experiments_assignment a JOIN experiments_segmentsnapshot s ON s.id = a.snapshot_id"
                " WHERE a.phase_id = %s AND NOT a.conflicting_exposure"
                " AND random() < (%s::float8[])[array_position(%s::bigint[], a.variant_id)]"
                "   * CASE WHEN a.variant_id = %s AND s.layers->>%s = %s THEN %s ELSE 1 END",
                [
                    metric_ids[role],
                    phase.pk,
                    list(rates),
                    variant_ids,
                    variant_ids[2],
                    DIMENSIONS[0],
                    PLANTED_LAYER,
                    planted,
                ],
            )
        timings["conversions_s"] = time.perf_counter() - t
        cursor.execute("SET session_replication_role = DEFAULT")
    t = time.perf_counter()
    with connection.cursor() as cursor:
        for table in ("segments_customer", "experiments_assignment", "experiments_conversion"):
            cursor.execute(f"VACUUM ANALYZE {table}")
    timings["vacuum_analyze_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - started
    return {"timings": {k: round(v, 2) for k, v in timings.items()}}


def _time(fn: Any, repeats: int) -> dict[str, Any]:
    runs = []
    result = None
    for _ in range(repeats):
        t = time.perf_counter()
        result = fn()
        runs.append(time.perf_counter() - t)
    return {
        "best_s": round(min(runs), 3),
        "median_s": round(statistics.median(runs), 3),
        "runs_s": [round(r, 3) for r in runs],
        "_result": result,
    }


def _strip(timing: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in timing.items() if not k.startswith("_")}


JOIN_SQL = (
    "SELECT a.variant_id, a.snapshot_id, COUNT(*), COUNT(c0.id), COUNT(c1.id), COUNT(c2.id)"
    " FROM experiments_assignment a"
    " LEFT JOIN experiments_conversion c0 ON c0.assignment_id = a.id AND c0.metric_id = %s"
    " LEFT JOIN experiments_conversion c1 ON c1.assignment_id = a.id AND c1.metric_id = %s"
    " LEFT JOIN experiments_conversion c2 ON c2.assignment_id = a.id AND c2.metric_id = %s"
    " WHERE a.phase_id = %s AND a.first_exposed_at IS NOT NULL AND a.conflicting_exposure = false"
    " GROUP BY a.variant_id, a.snapshot_id"
)
MAIN_SQL = (
    "SELECT a.variant_id, a.snapshot_id, COUNT(*) FROM experiments_assignment a"
    " WHERE a.phase_id = %s AND a.first_exposed_at IS NOT NULL AND a.conflicting_exposure = false"
    " GROUP BY a.variant_id, a.snapshot_id"
)


def _measure(repeats: int, alternatives: bool) -> dict[str, Any]:
    from django.db import connection

    from experiments import selectors
    from experiments.models import Experiment, Metric
    from experiments.reports import aggregation, assemble

    experiment = Experiment.objects.get(key="bench-report")
    phase = selectors.experiment_current_phase(experiment=experiment)
    metrics = list(Metric.objects.filter(experiment=experiment).order_by("id"))
    metric_ids = [m.pk for m in metrics]
    primary = next(m.pk for m in metrics if m.role == "primary")

    def aggregate() -> aggregation.PhaseCounts:
        return aggregation.phase_counts(phase_id=phase.pk, metric_ids=metric_ids, daily_metric_id=primary)

    def daily_exposures() -> Any:
        return aggregation._daily_exposures(phase.pk)

    def run_sql(sql: str, params: list[Any]) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            cursor.fetchall()

    aggregate()  # warm the cache once (the first scan reads from disk)
    results: dict[str, Any] = {}
    results["aggregation"] = _time(aggregate, repeats)
    results["report"] = _time(lambda: assemble.report_build(experiment_key="bench-report"), repeats)
    results["main_group_by_sql"] = _time(lambda: run_sql(MAIN_SQL, [phase.pk]), repeats)
    # The report's default leaves out customers whose window is still open; here (as of
    # now) every window has closed, so also time it as of the last exposure day, when the
    # last week's customers (a quarter) are still inside their 7-day window.
    last_day = phase.started_at + dt.timedelta(days=28)
    results["aggregation_last_week_open"] = _time(
        lambda: aggregation.phase_counts(phase_id=phase.pk, metric_ids=metric_ids, as_of=last_day), repeats
    )
    # The statistics alone: the report built on counts already in memory.
    counts_in_memory = results["aggregation"]["_result"]
    real_phase_counts = aggregation.phase_counts
    aggregation.phase_counts = lambda **_: counts_in_memory  # type: ignore[assignment]
    try:
        results["statistics_only"] = _time(lambda: assemble.report_build(experiment_key="bench-report"), repeats)
    finally:
        aggregation.phase_counts = real_phase_counts
    results["report_with_timeseries"] = _time(
        lambda: assemble.report_build(experiment_key="bench-report", timeseries=True), repeats
    )
    results["timeseries_daily_exposures_pass"] = _time(daily_exposures, repeats)
    if alternatives:
        # Conversions joined to the assignment pass (exact by construction): the plan
        # the module doc rejects, for the record (one run: it is slow).
        results["rejected_join_conversions_sql"] = _time(lambda: run_sql(JOIN_SQL, [*metric_ids, phase.pk]), 1)
        # The proposed schema change: a stored generated day column with statistics.
        with connection.cursor() as cursor:
            started = time.perf_counter()
            cursor.execute(
                "ALTER TABLE experiments_assignment ADD COLUMN IF NOT EXISTS first_exposed_on date"
                " GENERATED ALWAYS AS ((first_exposed_at AT TIME ZONE 'UTC')::date) STORED"
            )
            cursor.execute("VACUUM ANALYZE experiments_assignment")
            added_s = time.perf_counter() - started
        aggregation.EXPOSURE_DAY_COLUMN = "first_exposed_on"
        try:
            daily_exposures()
            results["proposed_generated_column_daily_pass"] = _time(daily_exposures, repeats)
            results["proposed_generated_column_daily_pass"]["alter_table_s"] = round(added_s, 1)
            results["proposed_main_group_by_sql"] = _time(lambda: run_sql(MAIN_SQL, [phase.pk]), repeats)
        finally:
            aggregation.EXPOSURE_DAY_COLUMN = None
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE experiments_assignment DROP COLUMN IF EXISTS first_exposed_on")
    counts = results["aggregation"]["_result"]

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM experiments_assignment WHERE phase_id = %s", [phase.pk])
        (assignments,) = cursor.fetchone()
        cursor.execute("SELECT count(*) FROM experiments_conversion WHERE phase_id = %s", [phase.pk])
        (conversions,) = cursor.fetchone()
        cursor.execute(
            "SELECT pg_size_pretty(pg_table_size('experiments_assignment')),"
            " pg_size_pretty(pg_indexes_size('experiments_assignment'))"
        )
        table_size, index_size = cursor.fetchone()
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + MAIN_SQL, [phase.pk])
        plan = [row[0] for row in cursor.fetchall()]

    report_result = results["report"]["_result"]
    aggregation_best = results["aggregation"]["best_s"]
    report_best = results["report"]["best_s"]
    primary_report = report_result.primary
    return {
        "data": {
            "assignments": assignments,
            "analysed_customers": counts.customers,
            "conversions": conversions,
            "variants": len(counts.overall),
            "layers": len(counts.layers),
            "dimensions": len({layer.dimension for layer in counts.layers}),
            "assignment_table_size": table_size,
            "assignment_indexes_size": index_size,
        },
        "anchor_aggregation_s": aggregation_best,
        "report_s": report_best,
        "statistics_s": results["statistics_only"]["best_s"],
        "ratio_report_to_aggregation": round(report_best / aggregation_best, 2),
        "ratio_medians": round(results["report"]["median_s"] / results["aggregation"]["median_s"], 2),
        "aggregation_last_week_open_s": results["aggregation_last_week_open"]["best_s"],
        "floor_s": FLOOR_S,
        "floor_met": report_best < FLOOR_S,
        "timings": {k: _strip(v) for k, v in results.items()},
        "report_checks": {
            "srm_flagged": report_result.srm.flagged,
            "caveats": [c.code for c in report_result.caveats],
            "rfm_significant_rows": [
                f"{row.layer} {lift.variant}: {lift.verdict.label} (adjusted p {lift.adjusted_p_value:.2g})"
                for dimension in primary_report.dimensions
                if dimension.key == DIMENSIONS[0]
                for row in dimension.layers
                for lift in row.lifts
                if lift.verdict.label.startswith("significant")
            ],
            "heterogeneity_p": {d.key: d.heterogeneity.p_value for d in primary_report.dimensions},
        },
        "plan_main_group_by": plan,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reuse", action="store_true", help="keep an existing bench database")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--generate-only", action="store_true", help="build the database and stop")
    parser.add_argument("--no-alternatives", action="store_true", help="skip timing the rejected plans")
    args = parser.parse_args()

    generated: dict[str, Any] = {"reused": True}
    reuse = args.reuse and _database_exists()
    if not reuse:
        _recreate_database()
    _setup_django()
    if not reuse:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        generated = _generate(args.customers)
    if args.generate_only:
        print(json.dumps({"generation": generated}, indent=2))
        return
    load = os.getloadavg()
    output = {
        "benchmark": "report",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "loadavg_at_start": load},
        "generation": generated,
        **_measure(args.repeats, not args.no_alternatives),
        "loadavg_at_end": os.getloadavg(),
    }
    text = json.dumps(output, indent=2, default=str)
    print(text)
    if not args.no_save:
        path = ROOT / "bench" / "results" / "report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


if __name__ == "__main__":
    main()
