"""Campaign delivery end to end: launch → assignment → outbox → Celery on Redis → SMTP.

100,000 customers (default) in an experiment whose two variants both get an email (the
control a baseline offer, the treatment a new one), so every customer is assigned and
messaged. One real ``celery worker`` with concurrency 2 consumes a private redis-server; an
aiosmtpd server on loopback counts every message by its delivery key. The periodic tick is
sent every 10 s, as beat would.

Reported: messages per second from launch to the last message recorded sent, the phases
(audience resolved, all batches decided, first/last message), duplicates and losses seen
by the SMTP peer, and in the same run the anchor: a no-op Celery task's throughput through
the same broker and worker.

Floor (issue 6): the full send completes in under 2 minutes with 0 duplicates and 0 lost.

Run: ``python bench/delivery.py [--customers 100000] [--noop 5000] [--concurrency 2]``.
Uses its own database (``bench_delivery``) on the shared PostgreSQL server and a private
redis-server; prints JSON and saves bench/results/delivery.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PG_PORT,
    bench_database,
    django_env,
    emit,
    ensure_services,
    log,
    machine,
    manage,
    require_tool,
)
from tests.campaigns.peers import PrivateRedis, SmtpSink, Worker, wait_until  # noqa: E402

FLOOR_SECONDS = 120.0


def _redis(port: int, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(port), *args], capture_output=True, text=True).stdout.strip()


def seed(customers: int, *, with_experiment: bool = True) -> Any:
    """Customers with email consent, an experiment (control = baseline offer) and a campaign."""
    from django.utils import timezone

    from campaigns.models import Campaign, Content, Offer, Treatment
    from experiments import services as experiments
    from segments.models import Customer

    consent = timezone.now() - dt.timedelta(days=30)
    zones = ["UTC", "Europe/Paris", "America/New_York", "Asia/Shanghai"]
    for start in range(0, customers, 10_000):
        Customer.objects.bulk_create(
            [
                Customer(
                    external_id=f"b{i:07d}",
                    email=f"b{i:07d}@example.com",
                    email_consent_at=consent,
                    timezone=zones[i % len(zones)],
                    attributes={"first_name": f"N{i}"},
                )
                for i in range(start, min(customers, start + 10_000))
            ],
            batch_size=10_000,
        )
    experiment = None
    if with_experiment:
        experiment = experiments.experiment_create(
            key="bench-offer",
            name="Bench offer",
            variants=[
                experiments.VariantSpec(key="control", name="Baseline", weight=Decimal("0.5"), is_control=True),
                experiments.VariantSpec(key="bigger", name="Bigger offer", weight=Decimal("0.5")),
            ],
        )
        experiments.experiment_start(experiment=experiment)
    baseline = Offer.objects.create(key="five", name="Five off", benefit_kind="percent_off", value=5, validity_days=14)
    bigger = Offer.objects.create(
        key="fifteen", name="Fifteen off", benefit_kind="percent_off", value=15, validity_days=14
    )
    campaign = Campaign.objects.create(key="bench", name="Bench", channels=["email"], experiment=experiment)
    for variant, offer in (("control", baseline), ("", bigger)) if with_experiment else (("", bigger),):
        treatment = Treatment.objects.create(campaign=campaign, variant_key=variant, offer=offer)
        Content.objects.create(
            treatment=treatment,
            channel="email",
            subject="{{ customer.first_name }}, {{ offer.benefit }} for you",
            text="Hello {{ customer.first_name }},\n\nUse {{ coupon.code }} for {{ offer.benefit }} "
            "until {{ coupon.expires_at|date:'Y-m-d' }}.\n",
        )
    return campaign


def noop_anchor(redis: PrivateRedis, count: int) -> dict[str, Any]:
    """No-op tasks through the same broker and worker: tasks per second, publish included."""
    from campaigns.tasks import noop

    started = time.perf_counter()
    for _ in range(count):
        noop.delay()
    published = time.perf_counter() - started

    def drained() -> bool:
        return _redis(redis.port, "llen", "celery") == "0" and _redis(redis.port, "hlen", "unacked") == "0"

    wait_until(drained, timeout=600, interval=0.05, message="no-op tasks drained")
    seconds = time.perf_counter() - started
    return {"tasks": count, "seconds": round(seconds, 2), "publish_seconds": round(published, 2),
            "tasks_per_second": round(count / seconds, 1)}  # fmt: skip


def run_send(campaign: Any, expected: int, *, timeout: float) -> dict[str, Any]:
    from django.db.models import Count, Max, Min, Sum

    from campaigns.models import AudienceBatch, Delivery
    from campaigns.services import lifecycle
    from campaigns.tasks import campaigns_tick

    started_wall = dt.datetime.now(dt.UTC)
    started = time.perf_counter()
    lifecycle.campaign_launch(campaign=campaign)
    last_tick = time.perf_counter()
    progress_at = 0.0
    open_rows = Delivery.objects.filter(campaign=campaign, status__in=("pending", "held", "sending"))
    batches = AudienceBatch.objects.filter(campaign=campaign)
    while True:
        now = time.perf_counter()
        if now - started > timeout:
            break
        # Cheap checks once a second (the partial index of open rows, the batch rows): the
        # poll must not cost the machine what it measures.
        campaign.refresh_from_db(fields=["audience_resolved_at"])
        if campaign.audience_resolved_at and not batches.filter(done_at__isnull=True).exists():
            decided = batches.aggregate(n=Sum("decided"))["n"] or 0
            if decided >= expected and not open_rows.exists():
                break
        if now - last_tick >= 10:
            campaigns_tick.delay()
            last_tick = now
        if now - progress_at >= 10:
            counts = dict(Delivery.objects.filter(campaign=campaign).values_list("status").annotate(n=Count("pk")))
            log(f"  {now - started:5.1f}s {counts}")
            progress_at = now
        time.sleep(1.0)
    seconds = time.perf_counter() - started
    campaign.refresh_from_db()
    span = Delivery.objects.filter(campaign=campaign, status="sent").aggregate(
        first=Min("sent_at"), last=Max("sent_at")
    )
    decided = AudienceBatch.objects.filter(campaign=campaign).aggregate(last=Max("done_at"), n=Count("pk"))

    def since(moment: dt.datetime | None) -> float | None:
        return round((moment - started_wall).total_seconds(), 2) if moment else None

    counts = dict(Delivery.objects.filter(campaign=campaign).values_list("status").annotate(n=Count("pk")))
    return {
        "seconds": round(seconds, 2),
        "counts": counts,
        "phases_seconds_after_launch": {
            "audience_assigned_and_batched": since(campaign.audience_resolved_at),
            "all_batches_decided": since(decided["last"]),
            "first_message_sent": since(span["first"]),
            "last_message_sent": since(span["last"]),
        },
        "audience_batches": decided["n"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", "--messages", type=int, default=100_000, help="one email per customer")
    parser.add_argument("--noop", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--keep-db", action="store_true")
    parser.add_argument(
        "--no-experiment",
        action="store_true",
        help="Skip the experiment (no assignment, no exposures): isolates the outbox and send path.",
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="The worker reaches PostgreSQL through PgBouncer in transaction pooling mode (scripts/services.sh "
        "start-pgbouncer); saved as delivery_pgbouncer.json. Compare with a direct run of the same size.",
    )
    parser.add_argument(
        "--compare-pgbouncer",
        type=int,
        metavar="PAIRS",
        help="Run PAIRS pairs of this benchmark, direct and through PgBouncer, alternating in ABBA order "
        "(direct, PgBouncer, PgBouncer, direct, ...) so a drift in the shared machine's load does not favour "
        "either; saves delivery_pgbouncer.json with every run and the median ratio (and delivery.json with "
        "the last direct run that met the floor).",
    )
    parser.add_argument(
        "--round-trips",
        action="store_true",
        help="Only time the 'sent' mark's round trip: named prepared direct, unnamed direct, unnamed through "
        "PgBouncer (prints JSON; what a message pays per statement behind PgBouncer).",
    )
    parser.add_argument(
        "--statements",
        action="store_true",
        help="Count the database round trips of the send (launch to last message): pg_stat_statements' calls "
        "per statement when the server preloads it, and PgBouncer's own query and transaction counts with "
        "--pgbouncer; added to the JSON as 'round_trips'.",
    )
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args()

    if args.round_trips:
        ensure_services()
        emit("delivery_marks", mark_round_trips(), save=False)
        return
    if args.compare_pgbouncer:
        compare_pgbouncer(args)
        return
    ensure_services()
    bouncer_port = _pgbouncer_start() if args.pgbouncer else None
    redis = PrivateRedis().start()
    smtp = SmtpSink()
    smtp.keep_messages = False
    smtp.start()
    var_dir = tempfile.mkdtemp(prefix="bench-delivery-")
    worker: Worker | None = None
    try:
        with bench_database("delivery", keep=args.keep_db) as database:
            env = django_env(
                database,
                CELERY_BROKER_URL=redis.url,
                CACHE_URL=f"redis://127.0.0.1:{redis.port}/1",
                EMAIL_URL=f"smtp://127.0.0.1:{smtp.port}",
                GROWTH_VAR_DIR=var_dir,
                LOG_LEVEL="WARNING",
            )
            log("migrating bench_delivery")
            manage("migrate", "--no-input", env=env)
            os.environ.update(env)
            import django

            django.setup()
            from django.db import connection

            from campaigns.models import Delivery

            log(f"seeding {args.customers:,} customers")
            campaign = seed(args.customers, with_experiment=not args.no_experiment)
            from campaigns.services.assignments import exposures_mode

            connection.close()
            worker_env = {**env, "LOG_LEVEL": "INFO"}
            if bouncer_port is not None:
                worker_env.update(
                    DATABASE_URL=database.replace(f":{PG_PORT}/", f":{bouncer_port}/"),
                    DATABASE_TRANSACTION_POOLING="true",
                )
            worker = Worker(worker_env, concurrency=args.concurrency, name="bench-delivery")
            worker.start()
            log(f"anchor: {args.noop:,} no-op tasks")
            anchor = noop_anchor(redis, args.noop)
            log(f"anchor: {anchor['tasks_per_second']} tasks/s; launching the campaign")
            counter = RoundTrips(database, bouncer_port) if args.statements else None
            if counter is not None:
                counter.reset()
            cpu_before = _cpu_by_part(worker, redis)
            send = run_send(campaign, args.customers, timeout=args.timeout)
            cpu_after = _cpu_by_part(worker, redis)
            send["cpu_seconds"] = {part: round(cpu_after[part] - cpu_before.get(part, 0.0), 2) for part in cpu_after}
            if bouncer_port is not None:  # the key earlier results carry
                send["pgbouncer_cpu_seconds"] = send["cpu_seconds"]["pgbouncer"]
            round_trips = counter.collect(args.customers) if counter is not None else None
            keys = set(Delivery.objects.filter(campaign=campaign, status="sent").values_list("key", flat=True))
            received = smtp.unique
            sent = send["counts"].get("sent", 0)
            duplicates = smtp.duplicates()
            result = {
                "benchmark": "delivery",
                "machine": machine(),
                "setup": {
                    "customers": args.customers,
                    "worker_concurrency": args.concurrency,
                    "broker": "redis (private redis-server, appendonly)",
                    "database": "PostgreSQL (shared server, own database)" + _via(bouncer_port),
                    "smtp": "aiosmtpd on loopback, in the benchmark process",
                    "experiment": "none (--no-experiment)"
                    if args.no_experiment
                    else "2 variants, control = baseline offer (everyone messaged)",
                    "exposures": "none" if args.no_experiment else exposures_mode(),
                    "task_batch": int(os.environ.get("CAMPAIGNS_TASK_BATCH", "1000")),
                },
                "anchor_noop_tasks": anchor,
                "send": send,
                **({"round_trips": round_trips} if round_trips is not None else {}),
                "messages_per_second": round(sent / send["seconds"], 1) if send["seconds"] else None,
                "smtp_peer": {
                    "messages_received": smtp.total,
                    "unique_delivery_keys": len(received),
                    "duplicates": sum(n - 1 for n in duplicates.values()),
                    "lost": len(keys - received),
                    "unknown_keys": len(received - keys),
                },
                "floor": {
                    "full_send_under_seconds": FLOOR_SECONDS,
                    "met": bool(
                        sent == args.customers
                        and send["seconds"] < FLOOR_SECONDS
                        and not duplicates
                        and not (keys - received)
                    ),
                },
            }
            connection.close()
            worker.stop()
            worker = None
    finally:
        if worker is not None:
            worker.stop()
        smtp.stop()
        redis.cleanup()
    emit("delivery_pgbouncer" if args.pgbouncer else "delivery", result, save=not args.no_save)


def compare_pgbouncer(args: argparse.Namespace) -> None:
    """Alternating runs, each a fresh subprocess (own database, worker, broker, SMTP sink)."""
    import json
    import statistics

    orders = [
        via for n in range(args.compare_pgbouncer) for via in (("direct", "pgbouncer"), ("pgbouncer", "direct"))[n % 2]
    ]
    runs: list[dict[str, Any]] = []
    last_direct: dict[str, Any] | None = None
    for number, via in enumerate(orders, start=1):
        command = [sys.executable, str(Path(__file__)), "--customers", str(args.customers), "--noop", str(args.noop),
                   "--concurrency", str(args.concurrency), "--timeout", str(args.timeout), "--no-save"]  # fmt: skip
        if args.no_experiment:
            command.append("--no-experiment")
        if via == "pgbouncer":
            command.append("--pgbouncer")
        log(f"run {number}/{len(orders)}: {via}")
        done = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
        result = json.loads(done.stdout)
        if via == "direct" and result["floor"]["met"]:
            last_direct = result
        runs.append({
            "order": number, "via": via, "send_seconds": result["send"]["seconds"],
            "messages_per_second": result["messages_per_second"],
            "anchor_noop_tasks_per_second": result["anchor_noop_tasks"]["tasks_per_second"],
            "sent": result["send"]["counts"].get("sent", 0), "duplicates": result["smtp_peer"]["duplicates"],
            "lost": result["smtp_peer"]["lost"], "floor_met": result["floor"]["met"],
            "load_average": result["machine"]["load_average"], "when": result["machine"]["when"],
            "phases_seconds_after_launch": result["send"]["phases_seconds_after_launch"],
            **({"pgbouncer_cpu_seconds": result["send"]["pgbouncer_cpu_seconds"]}
               if "pgbouncer_cpu_seconds" in result["send"] else {}),
            "cpu_seconds": result["send"].get("cpu_seconds"),
        })  # fmt: skip
        log(f"run {number}: {via} {result['send']['seconds']} s")
    ratios = []
    for first, second in zip(runs[::2], runs[1::2], strict=True):
        direct, bouncer = (first, second) if first["via"] == "direct" else (second, first)
        ratios.append(round(bouncer["send_seconds"] / direct["send_seconds"], 3))
    median = statistics.median(ratios)
    seconds = {via: [r["send_seconds"] for r in runs if r["via"] == via] for via in ("direct", "pgbouncer")}
    result = {
        "benchmark": "delivery_pgbouncer",
        "setup": f"bench/delivery.py --customers {args.customers} [--pgbouncer], {len(orders)} runs in ABBA order, "
        f"one worker of concurrency {args.concurrency}; with --pgbouncer the worker reaches PostgreSQL through "
        "PgBouncer (transaction pooling, scripts/services.sh start-pgbouncer)",
        "runs": runs,
        "pairs_pgbouncer_over_direct": ratios,
        "median_ratio": median,
        "ratio_spread": [min(ratios), max(ratios)],
        "median_seconds": {via: statistics.median(values) for via, values in seconds.items()},
        "floor": {
            "pgbouncer_at_most_times_direct": 1.1,
            "direct_under_seconds": FLOOR_SECONDS,
            "met": bool(median <= 1.1 and all(r["floor_met"] for r in runs)),
            "basis": "median of the per-pair ratios; every run sent every message once (no duplicate, none lost) "
            f"in under {FLOOR_SECONDS:.0f} s",
        },
    }
    emit("delivery_pgbouncer", result, save=not args.no_save)
    if last_direct is not None and not args.no_save:
        emit("delivery", last_direct)


def mark_round_trips(statements: int = 2000, rounds: int = 3) -> dict[str, Any]:
    """Where PgBouncer's cost per message comes from: the round trip of one statement shaped
    like the worker's "sent" mark (an UPDATE by primary key, 6 parameters, autocommit), sent
    as the worker sends it directly (a named prepared statement) and behind PgBouncer (the
    call of a PL/pgSQL function whose UPDATE plan each server backend caches, as the worker
    sends it; before, the extended protocol's unnamed UPDATE, parsed and planned every time:
    PgBouncer 1.18 cannot carry named statements), and the unnamed statement and the function
    directly (the parse/plan cost alone, the function's own cost).
    A scratch table in its own database; latency per statement from the client's side."""
    import statistics

    import psycopg
    from psycopg import pq

    bouncer_port = _pgbouncer_start()
    sql = b"UPDATE bench_mark SET status = $1, sent_at = $2, ref = $3 WHERE id = $4 AND status = $5 AND claimed_by = $6"
    results: dict[str, list[dict[str, float]]] = {}
    with bench_database("delivery_marks") as database:
        direct = database.replace("postgres://", "postgresql://")
        bouncer = direct.replace(f":{PG_PORT}/", f":{bouncer_port}/")
        with psycopg.connect(direct, autocommit=True) as conn:
            conn.execute("CREATE TABLE bench_mark (id bigint PRIMARY KEY, status text, sent_at timestamptz, ref text, "
                         "claimed_by text)")  # fmt: skip
            conn.execute(
                "INSERT INTO bench_mark SELECT g, 'sending', NULL, '', 'w' FROM generate_series(1, %s) g",
                [statements * rounds * 5],
            )
            # The planner considers every index of the table (and proves partial indexes'
            # predicates): the indexes and the check constraint of campaigns_delivery.
            conn.execute("ALTER TABLE bench_mark ADD COLUMN key text, ADD COLUMN campaign_id bigint, "
                         "ADD COLUMN customer_id bigint, ADD COLUMN channel text, ADD COLUMN reason text DEFAULT '', "
                         "ADD COLUMN not_before timestamptz, ADD CONSTRAINT bench_mark_reason CHECK "
                         "(NOT (status IN ('failed', 'suppressed', 'held')) OR reason <> '')")  # fmt: skip
            conn.execute("UPDATE bench_mark SET key = 'k' || id, campaign_id = 1, customer_id = id, channel = 'email'")
            for index in (
                "UNIQUE INDEX ON bench_mark (key)",
                "UNIQUE INDEX ON bench_mark (campaign_id, customer_id, channel)",
                "INDEX ON bench_mark (campaign_id, status)",
                "INDEX ON bench_mark (customer_id, channel)",
                "INDEX ON bench_mark (status, not_before) WHERE status IN ('pending', 'held', 'sending')",
            ):
                conn.execute(f"CREATE {index}")
            conn.execute("VACUUM ANALYZE bench_mark")
            # As migration campaigns 0008's campaigns_delivery_mark_sent: the plan of the
            # UPDATE is cached by PL/pgSQL in each server backend.
            conn.execute(
                "CREATE FUNCTION bench_mark_sent(p1 text, p2 timestamptz, p3 text, p4 bigint, p5 text, p6 text) "
                "RETURNS integer LANGUAGE plpgsql AS $$ DECLARE n integer; BEGIN "
                "UPDATE bench_mark SET status = p1, sent_at = p2, ref = p3 WHERE id = p4 AND status = p5 "
                "AND claimed_by = p6; GET DIAGNOSTICS n = ROW_COUNT; RETURN n; END $$"
            )
        call = b"SELECT bench_mark_sent($1, $2, $3, $4, $5, $6)"
        ids = iter(range(1, statements * rounds * 5 + 1))
        for _ in range(rounds):
            for name, url, named in (
                ("direct_named", direct, True),
                ("direct_unnamed", direct, False),
                ("pgbouncer_unnamed", bouncer, False),
                ("pgbouncer_function", bouncer, "function"),
                ("direct_function", direct, "function"),
            ):
                with psycopg.connect(url, autocommit=True, prepare_threshold=None) as conn:
                    pgconn = conn.pgconn
                    if named is True:
                        pgconn.prepare(b"mark", sql)
                    latencies = []
                    for _ in range(statements):
                        values = [b"sent", b"2026-01-01T00:00:00+00:00", b"ref", str(next(ids)).encode(), b"sending",
                                  b"w"]  # fmt: skip
                        started = time.perf_counter()
                        if named == "function":
                            result = pgconn.exec_params(call, values)
                        elif named:
                            result = pgconn.exec_prepared(b"mark", values)
                        else:
                            result = pgconn.exec_params(sql, values)
                        latencies.append(time.perf_counter() - started)
                        if result.status not in (pq.ExecStatus.COMMAND_OK, pq.ExecStatus.TUPLES_OK):
                            raise RuntimeError(result.error_message.decode(errors="replace"))
                latencies.sort()
                results.setdefault(name, []).append(
                    {
                        "median_ms": round(statistics.median(latencies) * 1000, 3),
                        "p90_ms": round(latencies[int(len(latencies) * 0.9)] * 1000, 3),
                        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
                    }
                )
    return {
        "statements_per_round": statements,
        "rounds": results,
        "median_of_medians_ms": {k: statistics.median(r["median_ms"] for r in v) for k, v in results.items()},
        "median_of_means_ms": {k: statistics.median(r["mean_ms"] for r in v) for k, v in results.items()},
        "machine": machine(),
    }


class RoundTrips:
    """The statements the send costs: pg_stat_statements' calls (every statement of the
    bench database, the benchmark's own once-a-second polls included: they are listed, and
    few) and, through PgBouncer, its SHOW STATS counters for the database (queries and
    transactions it carried: each one crossed PgBouncer twice)."""

    def __init__(self, database: str, bouncer_port: int | None) -> None:
        self.database = database.replace("postgres://", "postgresql://")
        self.dbname = self.database.rsplit("/", 1)[1]
        self.bouncer_port = bouncer_port
        self.bouncer_before: dict[str, int] = {}

    def _bouncer_stats(self) -> dict[str, int]:
        import psycopg

        if self.bouncer_port is None:
            return {}
        admin = self.database.replace(f":{PG_PORT}/", f":{self.bouncer_port}/").rsplit("/", 1)[0] + "/pgbouncer"
        with psycopg.connect(admin, autocommit=True, prepare_threshold=None) as conn:
            cursor = conn.cursor()
            cursor.execute("SHOW STATS")
            names = [c.name for c in cursor.description]
            for row in cursor.fetchall():
                stats = dict(zip(names, row, strict=True))
                if stats["database"] == self.dbname:
                    return {k: int(v) for k, v in stats.items() if k in ("total_xact_count", "total_query_count")}
        return {}

    def reset(self) -> None:
        import psycopg

        with psycopg.connect(self.database, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            conn.execute("SELECT pg_stat_statements_reset()")
        self.bouncer_before = self._bouncer_stats()

    def collect(self, messages: int) -> dict[str, Any]:
        import psycopg

        with psycopg.connect(self.database, autocommit=True) as conn:
            rows = conn.execute(
                "SELECT calls, round(total_exec_time::numeric, 1), left(regexp_replace(query, '\\s+', ' ', 'g'), 160) "
                "FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s "
                "ORDER BY calls DESC",
                [self.dbname],
            ).fetchall()
        calls = sum(r[0] for r in rows)
        result: dict[str, Any] = {
            "messages": messages,
            "statements": calls,
            "statements_per_message": round(calls / messages, 3),
            "per_message_or_more": [
                {"calls": c, "exec_ms": float(t), "query": q} for c, t, q in rows if c >= messages * 0.5
            ],
            "per_batch_or_less": [
                {"calls": c, "exec_ms": float(t), "query": q} for c, t, q in rows[:40] if c < messages * 0.5
            ],
        }
        after = self._bouncer_stats()
        if after:
            result["pgbouncer"] = {k: after[k] - self.bouncer_before.get(k, 0) for k in after}
            result["pgbouncer"]["queries_per_message"] = round(result["pgbouncer"]["total_query_count"] / messages, 3)
        return result


def _via(bouncer_port: int | None) -> str:
    return f", the worker through PgBouncer on :{bouncer_port} (transaction pooling)" if bouncer_port else ""


def _proc_cpu(pid: int | str, *, children: bool = False) -> float:
    """User + system CPU seconds of one process (/proc), plus its reaped children's with ``children``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12]) + ((int(fields[13]) + int(fields[14])) if children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def _tree_cpu(pid: int | str) -> float:
    """A process's CPU with its live children's and the children it has reaped (PostgreSQL's
    backends, a prefork worker's processes)."""
    total = _proc_cpu(pid, children=True)
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids = (task / "children").read_text().split()
        except OSError:
            continue
        total += sum(_tree_cpu(kid) for kid in kids)
    return total


def _cpu_by_part(worker: Any, redis: Any) -> dict[str, float]:
    """CPU seconds so far of each part of the send, so a run says where the machine's two cores
    went (the worker's processes, PostgreSQL's backends, this process with the SMTP peer, Redis,
    PgBouncer) and a comparison shows which part a change moves. ``machine_busy`` is the whole
    machine's non-idle time (/proc/stat), other processes included."""
    env = {**os.environ, "PG_PORT": str(PG_PORT)}
    script = str(ROOT / "scripts" / "services.sh")
    datadir = subprocess.run([script, "pg-datadir"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    postmaster = (Path(datadir.stdout.strip()) / "postmaster.pid").read_text().split()[0]
    parts = {
        "worker": _tree_cpu(worker.process.pid),
        "postgresql": _tree_cpu(postmaster),
        "bench_and_smtp_peer": sum(os.times()[:2]),
        "redis": _proc_cpu(redis.process.pid) if getattr(redis, "process", None) else 0.0,
    }
    bouncer = Path(datadir.stdout.strip()).parent / "pgbouncer" / "pgbouncer.pid"
    if bouncer.exists():
        parts["pgbouncer"] = _proc_cpu(bouncer.read_text().strip())
    stat = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    parts["machine_busy"] = (sum(stat) - stat[3] - stat[4]) / os.sysconf("SC_CLK_TCK")
    return parts


def _pgbouncer_start() -> int:
    """PgBouncer in front of the benchmark server (scripts/services.sh, Debian's pgbouncer,
    installed by scripts/system-deps.sh when missing); its port."""
    require_tool("pgbouncer", package="pgbouncer")
    env = {**os.environ, "PG_PORT": str(PG_PORT)}
    script = str(ROOT / "scripts" / "services.sh")
    subprocess.run([script, "start-pgbouncer"], cwd=ROOT, env=env, check=True, capture_output=True)
    url = subprocess.run([script, "pgbouncer-url"], cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    return int(url.stdout.strip().rsplit(":", 1)[1].split("/")[0])


if __name__ == "__main__":
    main()
