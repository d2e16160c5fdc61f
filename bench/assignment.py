"""Benchmark: deterministic assignment, in process, in bulk into PostgreSQL, and over HTTP
(prints JSON; saved to bench/results/assignment.json).

1. In-process (``bench/assignment_inprocess.py``, the assignment engineer's): single
   ``assign()`` calls per second vs the ``growthbook`` SDK on the same ids (every id must
   agree; floor 3x the SDK), and ``assign_bulk()`` ids/s (floor 500,000/s).
2. Bulk: ``--customers`` customers (default 1,000,000) with a layer in each of 4 built-in
   dimensions (rfm, lifecycle, level, expiry), generated set-based in a fresh database
   ``bench_assignment`` on the shared server; then ``experiments.services.audience_assign``
   of a 3-variant experiment (20/30/50) writes one row and its segment snapshot per
   customer. Floor: < 20 s. A sample of rows is checked against ``assign()``.
3. HTTP: gunicorn (2 sync workers, ``bench.assignment_settings``) on that database with the
   Redis cache; wrk, 16 connections, 2 threads, ``--duration`` seconds per scenario after
   a warm-up: ``GET /api/v1/customers/{id}/assignments`` for already-assigned customers
   (random among the bulk-assigned) and for first-time customers (a new phase re-seeds the
   experiment; every request is a customer not yet assigned in it), against the anchor
   ``GET /bench/anchor/{pk}`` (a bare DRF view returning one customer row by primary key,
   same middleware, auth, scope check and throttle), run before and after (mean used).
   Floors: throughput >= 50% (already assigned) and >= 25% (first time) of the anchor's;
   p99 <= 2x the anchor's.

Run: ``scripts/services.sh start; .venv/bin/python bench/assignment.py`` (``--customers
100000 --duration 5`` for a quick check; ``--skip-http``, ``--skip-inprocess``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    REDIS_PORT,
    bench_database,
    django_env,
    emit,
    ensure_services,
    gunicorn,
    log,
    machine,
    require_tool,
)

NAME = "assignment"
CACHE_URL = f"redis://127.0.0.1:{REDIS_PORT}/7"  # the experiments engineer's cache DB
BROKER_URL = f"redis://127.0.0.1:{REDIS_PORT}/6"
WRK = "wrk"  # its path, found (or installed) by require_tool in main()
BULK_FLOOR_S = 20.0
ASSIGNED_FLOOR = 0.5
FIRST_TIME_FLOOR = 0.25
P99_CEILING = 2.0
WEIGHTS = ("0.2", "0.3", "0.5")
DIMENSIONS = ("rfm", "lifecycle", "level", "expiry")


def external_id(i: int) -> str:
    return f"bench-{i:07d}"


# --- 1. In process --------------------------------------------------------------------------


def inprocess() -> dict[str, Any]:
    from bench.assignment_inprocess import bench_single_call, bench_vectorized, environment

    log("in-process: single calls vs the growthbook SDK")
    single = [
        bench_single_call(id_shape="uuid"),
        bench_single_call(id_shape="short", seed="bench-3way", weights=(0.2, 0.3, 0.5), coverage=1.0),
    ]
    log("in-process: vectorized assign_bulk over 1,000,000 ids")
    vectorized = bench_vectorized(id_shape="short", weights=(0.2, 0.3, 0.5))
    return {
        "environment": environment(),
        "single_call": single,
        "vectorized": vectorized,
        "floors_met": all(r["floor_met"] for r in single) and vectorized["floor_met"],
    }


# --- 2. Bulk into PostgreSQL --------------------------------------------------------------


def _setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    Path(os.environ["GROWTH_VAR_DIR"]).mkdir(parents=True, exist_ok=True)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def generate(customers: int) -> dict[str, float]:
    """``customers`` customers and one layer per built-in dimension each, set-based."""
    from django.db import connection

    from segments.models import Customer, CustomerLayer, Dimension

    timings: dict[str, float] = {}
    started = time.perf_counter()
    columns, values, params = [], [], []
    for field in Customer._meta.concrete_fields:
        if field.primary_key:
            continue
        columns.append(connection.ops.quote_name(field.column))
        kind = field.get_internal_type()
        if field.name == "external_id":
            values.append("'bench-' || lpad(g::text, 7, '0')")
        elif kind == "DateTimeField":
            values.append("NULL" if field.null else "now()")
        elif kind == "JSONField":
            values.append("'{}'::jsonb")
        elif field.has_default():
            values.append("%s")
            params.append(field.get_default())
        else:
            values.append("NULL" if field.null else "''")
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {Customer._meta.db_table} ({', '.join(columns)}) "
            f"SELECT {', '.join(values)} FROM generate_series(1, %s) AS g",
            [*params, customers],
        )
    timings["customers_s"] = time.perf_counter() - started

    started = time.perf_counter()
    with connection.cursor() as cursor:
        for dimension in Dimension.objects.filter(key__in=DIMENSIONS).order_by("key"):
            layer_ids = list(dimension.layers.order_by("position").values_list("pk", flat=True))
            # A stable, scrambled layer per customer (Knuth's multiplicative hash).
            cursor.execute(
                f"INSERT INTO {CustomerLayer._meta.db_table} (customer_id, dimension_id, layer_id, since, computed_at) "
                "SELECT c.id, %s, (%s::bigint[])[1 + ((c.id * 2654435761 + %s) %% 4294967296) %% %s], now(), now() "
                f"FROM {Customer._meta.db_table} c",
                [dimension.pk, layer_ids, dimension.pk * 7919, len(layer_ids)],
            )
        cursor.execute(f"VACUUM ANALYZE {Customer._meta.db_table}")
        cursor.execute(f"VACUUM ANALYZE {CustomerLayer._meta.db_table}")
    timings["layers_s"] = time.perf_counter() - started
    return timings


def bulk(customers: int, batch_size: int) -> dict[str, Any]:
    from django.db import connection

    from experiments import assignment as spec
    from experiments import services
    from experiments.models import Assignment, SegmentSnapshot
    from experiments.selectors import assignments_queryset

    experiment = services.experiment_create(
        key="bench-3way",
        name="Assignment benchmark",
        variants=[
            services.VariantSpec(key=key, name=key, weight=services_decimal(w), is_control=i == 0)
            for i, (key, w) in enumerate(zip(("control", "b", "c"), WEIGHTS, strict=True))
        ],
    )
    services.experiment_start(experiment=experiment)
    log(f"bulk: audience_assign of {customers:,} customers (batch {batch_size:,})")
    backend_cpu_before = _backend_cpu_seconds()
    cpu_started = time.process_time()
    started = time.perf_counter()
    result = services.audience_assign(experiment=experiment, batch_size=batch_size)
    seconds = time.perf_counter() - started
    python_cpu = time.process_time() - cpu_started
    backend_cpu = _backend_cpu_seconds() - backend_cpu_before
    rows = assignments_queryset(experiment=experiment).count()
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {Assignment._meta.db_table}")
    # Check a sample against the pure function, and that every row has its snapshot.
    sample_ids = random.Random(7).sample(range(1, customers + 1), k=min(2000, customers))
    stored = dict(
        assignments_queryset(experiment=experiment)
        .filter(customer__external_id__in=[external_id(i) for i in sample_ids])
        .values_list("customer__external_id", "variant__key")
    )
    keys = ["control", "b", "c"]
    mismatches = 0
    for i in sample_ids:
        index = spec.assign(seed="bench-3way", hash_value=external_id(i), weights=[float(w) for w in WEIGHTS])
        mismatches += stored.get(external_id(i)) != (None if index is None else keys[index])
    empty_snapshot = SegmentSnapshot.objects.filter(key="").values_list("pk", flat=True).first()
    without_layers = assignments_queryset(experiment=experiment).filter(snapshot_id=empty_snapshot).count()
    return {
        "customers": customers,
        "batch_size": batch_size,
        "seconds": round(seconds, 2),
        # CPU actually consumed by this process and by its PostgreSQL backend: on a busy
        # machine the wall time includes waiting for a core; their sum is what a quiet
        # 2-core machine needs at most (the two run one after the other).
        "cpu_seconds_python": round(python_cpu, 2),
        "cpu_seconds_postgres_backend": round(backend_cpu, 2) if backend_cpu >= 0 else None,
        "rows_per_s": round(rows / seconds),
        "rows_written": rows,
        "result": {"assigned": result.assigned, "per_variant": result.per_variant, "excluded": result.excluded},
        "distinct_snapshots": SegmentSnapshot.objects.count(),
        "rows_without_layers": without_layers,
        "sample_checked": len(sample_ids),
        "sample_mismatches": mismatches,
        "floor_s": BULK_FLOOR_S,
        "floor_met": seconds < BULK_FLOOR_S and rows == customers and mismatches == 0 and without_layers == 0,
        "experiment_id": experiment.pk,
    }


def _backend_cpu_seconds() -> float:
    """user + system CPU seconds of this connection's PostgreSQL backend (/proc; -1 if unreadable)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return -1.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def services_decimal(value: str) -> Any:
    from decimal import Decimal

    return Decimal(value)


# --- 3. HTTP ------------------------------------------------------------------------------

_WRK_SCRIPT = """
local counter = 0
local threads = 0
function setup(thread)
  thread:set("offset", threads * {stride})
  threads = threads + 1
end
function init(args)
  math.randomseed({seed} + (offset or 0))
end
request = function()
  counter = counter + 1
  local i
  if {sequential} then
    i = {start} + offset + counter
  else
    i = math.random(1, {n})
  end
  return wrk.format("GET", string.format("{path}", i), {{["Authorization"] = "Api-Key {key}"}})
end
"""


def _wrk(
    base: str, *, path: str, key: str, n: int, duration: float, sequential: bool, start: int, seed: int
) -> dict[str, Any]:
    """One wrk run. Sequential ids: thread k requests ``start + k * n/4 + 1, +2, …`` (each
    id once); otherwise uniformly random ids in ``[1, n]``."""
    script = _WRK_SCRIPT.format(
        stride=n // 4,
        seed=seed,
        sequential="true" if sequential else "false",
        start=start,
        n=n,
        path=path,
        key=key,
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        out = subprocess.run(
            [WRK, "-t2", "-c16", f"-d{duration:g}s", "--timeout", "10s", "--latency", "-s", handle.name, base],
            capture_output=True,
            text=True,
            timeout=duration + 60,
        )
    finally:
        os.unlink(handle.name)
    result = _parse_wrk(out.stdout + out.stderr)
    if not result["requests"] or result["non_2xx"]:
        result["wrk_output"] = (out.stdout + out.stderr)[-1500:]
        try:
            import urllib.request

            sample = base + path.replace("%07d", f"{start + 1:07d}").replace("%d", str(start + 1))
            request = urllib.request.Request(sample, headers={"Authorization": f"Api-Key {key}"})
            with urllib.request.urlopen(request, timeout=10) as response:
                result["sample_response"] = f"{response.status} {response.read()[:300]!r}"
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            result["sample_response"] = repr(exc)[:500]
    return result


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def _parse_wrk(text: str) -> dict[str, Any]:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    total = re.search(r"(\d+) requests in", text)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    errors = re.search(r"Socket errors:.*", text)
    percentiles = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", text, re.MULTILINE))
    if rps is None or "50" not in percentiles:
        raise RuntimeError(f"could not parse wrk output:\n{text}")
    return {
        "requests_per_s": round(float(rps.group(1)), 1),
        "requests": int(total.group(1)) if total else None,
        "p50_ms": round(_ms(percentiles["50"]), 2),
        "p90_ms": round(_ms(percentiles["90"]), 2),
        "p99_ms": round(_ms(percentiles["99"]), 2),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(0) if errors else None,
    }


def http(env: dict[str, str], customers: int, duration: float, experiment_id: int) -> dict[str, Any]:
    from access.services import api_key_create
    from experiments import services
    from experiments.models import Assignment, Experiment

    _, key = api_key_create(name="bench", scopes=["offers:read"])
    server_env = {**env, "DJANGO_SETTINGS_MODULE": "bench.assignment_settings", "DATABASE_CONN_MAX_AGE": "600"}
    warmup = min(3.0, duration)
    results: dict[str, Any] = {}
    assignment_path = "/api/v1/customers/bench-%07d/assignments"
    with gunicorn(server_env, workers=2) as base:
        log(f"http: gunicorn at {base}; {duration:g} s per scenario, 16 connections")

        def run(name: str, **kwargs: Any) -> dict[str, Any]:
            _wrk(base, key=key, n=customers, duration=warmup, seed=1, **kwargs)  # warm-up, not measured
            result = _wrk(base, key=key, n=customers, duration=duration, seed=2, **kwargs)
            log(f"http: {name}: {result['requests_per_s']} req/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")
            return result

        anchor = {"path": "/bench/anchor/%d", "sequential": False, "start": 0}
        results["anchor_before"] = run("anchor", **anchor)
        rows_before = Assignment.objects.filter(experiment_id=experiment_id).count()
        results["already_assigned"] = run("already assigned", path=assignment_path, sequential=False, start=0)
        results["already_assigned"]["rows_added"] = (
            Assignment.objects.filter(experiment_id=experiment_id).count() - rows_before
        )
        # A new phase re-seeds the experiment: every customer is unassigned in it. The warm-up
        # takes ids from the first half, the measured run from the second: each request is
        # a customer never seen in the phase.
        services.experiment_new_phase(experiment=Experiment.objects.get(pk=experiment_id), reason="bench first-time")
        phase_rows = Assignment.objects.filter(experiment_id=experiment_id).count()
        _wrk(base, path=assignment_path, key=key, n=customers, duration=warmup, sequential=True, start=0, seed=1)
        warm_rows = Assignment.objects.filter(experiment_id=experiment_id).count() - phase_rows
        before = Assignment.objects.filter(experiment_id=experiment_id).count()
        first = _wrk(
            base,
            path=assignment_path,
            key=key,
            n=customers,
            duration=duration,
            sequential=True,
            start=customers // 2,
            seed=2,
        )
        first["rows_added"] = Assignment.objects.filter(experiment_id=experiment_id).count() - before
        first["warmup_rows_added"] = warm_rows
        log(f"http: first time: {first['requests_per_s']} req/s, p50 {first['p50_ms']} ms, p99 {first['p99_ms']} ms")
        results["first_time"] = first
        results["anchor_after"] = run("anchor (again)", **anchor)

    anchor_rps = (results["anchor_before"]["requests_per_s"] + results["anchor_after"]["requests_per_s"]) / 2
    anchor_p99 = (results["anchor_before"]["p99_ms"] + results["anchor_after"]["p99_ms"]) / 2
    assigned, first = results["already_assigned"], results["first_time"]
    ratios = {
        "already_assigned_throughput_vs_anchor": round(assigned["requests_per_s"] / anchor_rps, 3),
        "first_time_throughput_vs_anchor": round(first["requests_per_s"] / anchor_rps, 3),
        "already_assigned_p99_vs_anchor": round(assigned["p99_ms"] / anchor_p99, 3),
        "first_time_p99_vs_anchor": round(first["p99_ms"] / anchor_p99, 3),
    }
    floors = {
        "already_assigned_throughput": ratios["already_assigned_throughput_vs_anchor"] >= ASSIGNED_FLOOR,
        "first_time_throughput": ratios["first_time_throughput_vs_anchor"] >= FIRST_TIME_FLOOR,
        "already_assigned_p99": ratios["already_assigned_p99_vs_anchor"] <= P99_CEILING,
        "first_time_p99": ratios["first_time_p99_vs_anchor"] <= P99_CEILING,
        "no_errors": all(r["non_2xx"] == 0 for r in results.values()),
    }
    return {
        "server": "gunicorn, 2 sync workers, bench.assignment_settings (production settings + anchor URL)",
        "database": "PostgreSQL (shared server), cache: Redis",
        "load": f"wrk -t2 -c16 --latency, duration {duration:g}s per scenario after a {warmup:g}s warm-up",
        "anchor_requests_per_s_mean": round(anchor_rps, 1),
        "anchor_p99_ms_mean": round(anchor_p99, 2),
        **results,
        "ratios": ratios,
        "floors": {
            "already_assigned_throughput_min": ASSIGNED_FLOOR,
            "first_time_throughput_min": FIRST_TIME_FLOOR,
            "p99_max_x_anchor": P99_CEILING,
            "met": floors,
        },
        "floors_met": all(floors.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per HTTP scenario")
    parser.add_argument("--skip-inprocess", action="store_true")
    parser.add_argument("--skip-http", action="store_true")
    parser.add_argument("--keep-db", action="store_true", help="keep bench_assignment afterwards")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()

    if not args.skip_http:  # checked (and installed) before any work, not after the in-process part
        global WRK
        WRK = require_tool("wrk", package="wrk")
    output: dict[str, Any] = {"benchmark": NAME, "machine_before": machine()}
    if not args.skip_inprocess:
        output["inprocess"] = inprocess()
    ensure_services()
    with bench_database(NAME, keep=args.keep_db) as url:
        env = django_env(
            url,
            CACHE_URL=CACHE_URL,
            CELERY_BROKER_URL=BROKER_URL,
            API_THROTTLE_RATE="10000000/min",
            GROWTH_VAR_DIR=str(ROOT / "var" / "bench-assignment"),
        )
        _setup_django(env)
        log(f"generating {args.customers:,} customers with layers in {', '.join(DIMENSIONS)}")
        output["generate"] = {k: round(v, 1) for k, v in generate(args.customers).items()}
        output["bulk"] = bulk(args.customers, args.batch_size)
        if not args.skip_http:
            output["http"] = http(env, args.customers, args.duration, output["bulk"]["experiment_id"])
        from django.db import connections

        connections.close_all()
    output["machine_after"] = machine()
    output["floors_met"] = {
        part: output[part]["floors_met"] if "floors_met" in output[part] else output[part]["floor_met"]
        for part in ("inprocess", "bulk", "http")
        if part in output
    }
    emit(NAME, output, save=not args.no_save)
    json.dumps(output)  # fail loudly on anything not serializable before the process ends


if __name__ == "__main__":
    main()
