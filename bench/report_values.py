"""Benchmark: the lift report with value metrics (revenue, a ratio, CUPED) versus the same
report with conversion metrics only (issue 15; prints JSON).

Builds ``bench_report_values`` on the benchmark server with ``bench/report.py``'s
generator (``--customers`` exposures, 3 variants, 270 snapshots, three conversion metrics),
then adds order events with amounts (set-based, seeded): each converted customer of the
primary metric gets 1-2 orders inside the 7-day window, and ~40% of all customers one order
in the 14 days before their first exposure (CUPED's pre-period). Two value metrics join the
experiment as secondary metrics: ``order:sum`` (revenue per customer, CUPED on) and
``order:sum/order:count`` (average order value, CUPED on).

Before timing, the value metrics' per-customer values are stored as the conversion refresh
stores them (``stored_values_refresh``: rows written and seconds, per metric; with
``--from-events`` also the report-time computation from the events that stored values
replaced, timed once).

Times (best of ``--repeats``): ``conversion_only_report_s`` (the value metrics removed),
``value_report_s`` (all five metrics), their ratio (target <= 1.5) and the < 5 s floor at
10M; and ``value_cells_s`` per value metric called alone (so it also counts the customers
per cell, a pass over the assignments that the report takes from its conversion counts).

Run: ``scripts/services.sh start; .venv/bin/python bench/report_values.py --customers 200000``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import report as base  # noqa: E402

base.DB_NAME = "bench_report_values"
FLOOR_S = 5.0
RATIO_TARGET = 1.5


def _orders() -> dict[str, float]:
    from django.db import connection

    from experiments.models import Experiment, Metric
    from segments.models import EventType

    experiment = Experiment.objects.get(key="bench-report")
    order = EventType.objects.get(code="order")
    primary = Metric.objects.get(experiment=experiment, role="primary")
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute("SELECT setseed(0.17)")
        cursor.execute("SET session_replication_role = replica")
        # In-window orders of the converted customers (amount lower in variant c: it
        # converts more but at a smaller order value), and one pre-period order for ~40%.
        cursor.execute(
            "INSERT INTO segments_event (event_id, customer_id, event_type_id, occurred_at, received_at, properties,"
            " amount, currency)"
            " SELECT 'o-' || c.assignment_id || '-' || k, a.customer_id, %s, c.converted_at + k * interval '1 hour',"
            "        now(), '{}'::jsonb,"
            "        round((20 + random() * 60 * CASE WHEN a.variant_id = (SELECT max(variant_id)"
            "             FROM experiments_assignment) THEN 0.8 ELSE 1 END)::numeric, 2), 'EUR'"
            " FROM experiments_conversion c JOIN experiments_assignment a ON a.id = c.assignment_id"
            " CROSS JOIN generate_series(0, 1) k"
            " WHERE c.metric_id = %s AND (k = 0 OR random() < 0.3)",
            [order.pk, primary.pk],
        )
        cursor.execute(
            "INSERT INTO segments_event (event_id, customer_id, event_type_id, occurred_at, received_at, properties,"
            " amount, currency)"
            " SELECT 'p-' || a.id, a.customer_id, %s, a.first_exposed_at - random() * interval '13 days', now(),"
            "        '{}'::jsonb, round((20 + random() * 60)::numeric, 2), 'EUR'"
            " FROM experiments_assignment a WHERE random() < 0.4",
            [order.pk],
        )
        cursor.execute("SET session_replication_role = DEFAULT")
        cursor.execute("VACUUM ANALYZE segments_event")
    return {"events_s": round(time.perf_counter() - started, 2)}


def _measure(repeats: int, from_events: bool) -> dict[str, Any]:
    from django.db import connection, transaction

    from experiments.models import Assignment, Experiment, Metric
    from experiments.reports import assemble, value_moments
    from experiments.services.metric_values import metric_values_refresh
    from segments.models import EventType

    experiment = Experiment.objects.get(key="bench-report")
    phase = experiment.phases.get(number=1)
    order = EventType.objects.get(code="order")
    Metric.objects.filter(experiment=experiment, kind__in=["sum", "ratio"]).delete()

    def report() -> Any:
        return assemble.report_build(experiment_key="bench-report")

    report()
    conversion_only = base._time(report, repeats)
    revenue = Metric.objects.create(experiment=experiment, event_type=order, role="secondary", kind="sum")
    ratio = Metric.objects.create(
        experiment=experiment,
        event_type=order,
        role="secondary",
        kind="ratio",
        numerator_part="sum",
        denominator_event_type=order,
        denominator_part="count",
    )
    # The conversion refresh's new part: each analysed customer's values, stored (full refresh).
    population = Assignment.objects.filter(phase=phase, first_exposed_at__isnull=False, conflicting_exposure=False)
    stored_s = {}
    for m in (revenue, ratio):
        t = time.perf_counter()
        with transaction.atomic():
            rows = metric_values_refresh(phase=phase, metric=m, assignments=population, considered=None)
        stored_s[m.key] = {"rows": rows, "seconds": round(time.perf_counter() - t, 2)}
        m.refresh_from_db()
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE experiments_metricvalue")
    cells = {
        m.key: base._time(lambda m=m: value_moments.value_cells(phase=phase, metric=m, as_of=None), repeats)
        for m in (revenue, ratio)
    }
    if from_events:  # the report-time path of before (no stored values), once
        for m in (revenue, ratio):
            m.values_signature = ""
            t = time.perf_counter()
            value_moments.value_cells(phase=phase, metric=m, as_of=None)
            stored_s[m.key]["from_events_value_cells_s"] = round(time.perf_counter() - t, 2)
            m.refresh_from_db()
    with_values = base._time(report, repeats)
    result = with_values["_result"]
    rows = {
        m.metric.event_type: {
            "lift": m.overall.lifts[0].absolute_lift if m.overall.lifts else None,
            "cuped_variance_reduction": m.overall.cuped.variance_reduction if m.overall.cuped else None,
            "verdicts": [lift.verdict.label for lift in m.overall.lifts],
        }
        for m in result.metrics
        if m.metric.kind != "conversion"
    }
    ratio_value = with_values["best_s"] / conversion_only["best_s"]
    return {
        "conversion_only_report_s": conversion_only["best_s"],
        "value_report_s": with_values["best_s"],
        "ratio_value_to_conversion_only": round(ratio_value, 2),
        "ratio_target": RATIO_TARGET,
        "ratio_met": ratio_value <= RATIO_TARGET,
        "floor_s": FLOOR_S,
        "floor_met": with_values["best_s"] < FLOOR_S,
        "value_cells_s": {k: base._strip(v) for k, v in cells.items()},
        "stored_values_refresh": stored_s,
        "timings": {"conversion_only": base._strip(conversion_only), "with_values": base._strip(with_values)},
        "value_rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--reuse", action="store_true")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--from-events", action="store_true", help="also time the report-time path once")
    args = parser.parse_args()
    generated: dict[str, Any] = {"reused": True}
    reuse = args.reuse and base._database_exists()
    if not reuse:
        base._recreate_database()
    base._setup_django()
    if not reuse:
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        generated = base._generate(args.customers) | _orders()
    output = {
        "benchmark": "report_values",
        "customers": args.customers,
        "loadavg_at_start": os.getloadavg(),
        "generation": generated,
        **_measure(args.repeats, args.from_events),
        "loadavg_at_end": os.getloadavg(),
    }
    text = json.dumps(output, indent=2, default=str)
    print(text)
    if not args.no_save:
        path = ROOT / "bench" / "results" / "report_values.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")


if __name__ == "__main__":
    main()
