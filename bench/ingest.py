"""Ingestion benchmark: ``import_events`` against a bare ``COPY``, and the batch API.

1. A fresh database ``bench_ingest`` on the shared PostgreSQL server, migrated, with
   ``--customers`` customers.
2. ``--events`` events written as JSON Lines (visits, logins, orders with amounts,
   properties), and the same rows, resolved to ids, as COPY text for the anchor.
3. Anchor: a bare ``COPY`` into a table of the same shape as ``segments_event``
   (``LIKE … INCLUDING ALL`` plus the same foreign keys, DEFERRABLE as Django makes
   them), timed from the first byte to the commit; run before and after each import of
   step 4 (the shared machine's load drifts).
4. ``manage.py import_events`` on the JSON Lines file, in a subprocess: wall time
   (Django start-up included) and the subprocess's peak RSS (``wait4``). ``--repeat``
   rounds (3 by default) alternate with the anchor (anchor, import, anchor, import, …,
   anchor; the events table emptied between rounds); each round's ratio uses the two
   anchor runs around it, and the result is the median round, with the spread.
5. The batch API: gunicorn with 2 workers on loopback, ``--api-batches`` POSTs of 1,000
   new events to ``/api/v1/events/batch`` from 2 client threads (bounded in count and
   by ``--api-seconds``).

Floors (issue 20): import rate >= 60% of bare COPY's, import peak RSS < 500 MB.

Run: ``python bench/ingest.py`` (full scale, a few minutes) or
``python bench/ingest.py --events 100000 --customers 10000 --no-save`` (a quick check).
Prints JSON on stdout and saves bench/results/ingest.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import random
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench.common import (  # noqa: E402
    PYTHON,
    bench_database,
    django_env,
    emit,
    ensure_services,
    gunicorn,
    log,
    machine,
    manage,
    run_measured,
    timed,
)

RATIO_FLOOR = 0.6  # issue 20 (issue 2 set 0.5)
RSS_FLOOR_MB = 500
START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
KINDS = (("visit", 55), ("login", 25), ("add_to_cart", 8), ("order", 10), ("refund", 2))
CURRENCIES = ("EUR", "USD", "GBP")


def _connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url.replace("postgres://", "postgresql://"))


def create_customers(url: str, count: int) -> dict[str, int]:
    with _connect(url) as conn:
        conn.execute(
            """INSERT INTO segments_customer (external_id, signed_up_at, timezone, locale, attributes, email,
                   phone, push_token, created_at, updated_at)
               SELECT 'bc-' || lpad(g::text, 7, '0'), now() - (g %% 500) * interval '1 day', 'UTC', 'en', '{}',
                      'bc-' || g || '@example.com', '', '', now(), now()
                 FROM generate_series(0, %s - 1) g""",
            [count],
        )
        rows = conn.execute("SELECT external_id, id FROM segments_customer").fetchall()
    return dict(rows)


def write_files(url: str, customers: dict[str, int], events: int, jsonl: Path, anchor: Path, seed: int) -> None:
    """The same rows twice: JSON Lines for the command, COPY text (ids resolved) for the anchor."""
    with _connect(url) as conn:
        type_ids = dict(conn.execute("SELECT code, id FROM segments_eventtype").fetchall())
    rng = random.Random(seed)
    externals = sorted(customers)
    kinds = [k for k, _ in KINDS]
    weights = [w for _, w in KINDS]
    received = dt.datetime.now(dt.UTC).isoformat()
    span = 500 * 86400
    with jsonl.open("w") as out, anchor.open("w") as copy:
        for n in range(events):
            ext = externals[rng.randrange(len(externals))]
            kind = rng.choices(kinds, weights)[0]
            occurred = (START + dt.timedelta(seconds=rng.randrange(span))).isoformat().replace("+00:00", "Z")
            record: dict[str, Any] = {
                "event_id": f"b-{n:09d}",
                "customer_id": ext,
                "type": kind,
                "occurred_at": occurred,
            }
            properties: dict[str, Any] = {}
            amount = currency = None
            if kind in ("order", "refund"):
                amount = f"{rng.lognormvariate(3.6, 0.7):.2f}"
                currency = CURRENCIES[n % 3]
                properties = {"sku": f"SKU{rng.randrange(100):03d}", "items": rng.randint(1, 4)}
            elif kind == "visit":
                properties = {"page": rng.choice(("home", "product", "search", "offers"))}
            if properties:
                record["properties"] = properties
            if amount is not None:
                record["amount"], record["currency"] = amount, currency
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
            props = json.dumps(properties, separators=(",", ":")) if properties else "{}"
            copy.write(
                f"{record['event_id']}\t{customers[ext]}\t{type_ids[kind]}\t{occurred}\t{received}\t{props}\t"
                f"{amount if amount is not None else chr(92) + 'N'}\t{currency or ''}\n"
            )


def bare_copy(url: str, anchor: Path) -> dict[str, Any]:
    """COPY into a table shaped like segments_event: same columns, defaults, indexes,
    checks and unique constraints (LIKE … INCLUDING ALL) and the same foreign keys."""
    with _connect(url) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_event_anchor")
        conn.execute("CREATE TABLE bench_event_anchor (LIKE segments_event INCLUDING ALL)")
        fks = conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
            "WHERE conrelid = 'segments_event'::regclass AND contype = 'f'"
        ).fetchall()
        for name, definition in fks:
            conn.execute(f'ALTER TABLE bench_event_anchor ADD CONSTRAINT "{f"anchor_{name}"[:63]}" {definition}')
        conn.commit()
        indexes = conn.execute("SELECT count(*) FROM pg_indexes WHERE tablename = 'bench_event_anchor'").fetchone()[0]
        with timed() as t:
            with conn.cursor() as cursor:
                with (
                    cursor.copy(
                        "COPY bench_event_anchor (event_id, customer_id, event_type_id, occurred_at, received_at, "
                        "properties, amount, currency) FROM STDIN"
                    ) as copy,
                    anchor.open("rb") as source,
                ):
                    while block := source.read(1 << 20):
                        copy.write(block)
            conn.commit()
        rows = conn.execute("SELECT count(*) FROM bench_event_anchor").fetchone()[0]
        conn.execute("DROP TABLE bench_event_anchor")
        conn.commit()
    return {"seconds": round(t["seconds"], 2), "rows": rows, "rows_per_s": round(rows / t["seconds"]),
            "foreign_keys": len(fks), "indexes": indexes}  # fmt: skip


def import_command(env: dict[str, str], jsonl: Path) -> dict[str, Any]:
    result = run_measured([PYTHON, "manage.py", "import_events", str(jsonl), "--no-progress"], env=env)
    if result.returncode != 0:
        raise RuntimeError(f"import_events failed ({result.returncode}):\n{result.stdout}\n{result.stderr[-3000:]}")
    return {"seconds": round(result.seconds, 2), "cpu_seconds": round(result.cpu_seconds, 1),
            "peak_rss_mb": round(result.peak_rss_mb, 1), "summary": result.stdout.strip()}  # fmt: skip


def api_batches(env: dict[str, str], customers: list[str], batches: int, max_seconds: float) -> dict[str, Any]:
    raw_key = manage("create_api_key", "--name", "bench", "--scope", "events:write", env=env).stdout.strip()
    rng = random.Random(7)

    def body(number: int) -> bytes:
        items = []
        for i in range(1000):
            n = number * 1000 + i
            items.append({"event_id": f"api-{n:09d}", "customer_id": customers[rng.randrange(len(customers))],
                          "type": "order", "occurred_at": "2025-01-01T12:00:00Z", "amount": "42.50",
                          "currency": "EUR", "properties": {"sku": "TP", "n": n}})  # fmt: skip
        return json.dumps({"items": items}).encode()

    payloads = [body(n) for n in range(batches)]
    statuses: dict[int, int] = {}
    accepted = [0]
    lock = threading.Lock()
    next_batch = [0]

    with gunicorn({**env, "API_THROTTLE_RATE": "100000/min"}, workers=2) as base:
        host, port = base.removeprefix("http://").split(":")
        deadline = time.monotonic() + max_seconds

        def client() -> None:
            conn = http.client.HTTPConnection(host, int(port), timeout=120)
            while time.monotonic() < deadline:
                with lock:
                    if next_batch[0] >= len(payloads):
                        return
                    payload = payloads[next_batch[0]]
                    next_batch[0] += 1
                conn.request("POST", "/api/v1/events/batch", payload,
                             {"Content-Type": "application/json", "Authorization": f"Api-Key {raw_key}"})  # fmt: skip
                response = conn.getresponse()
                data = json.loads(response.read())
                with lock:
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                    accepted[0] += data.get("created", 0)

        # Warm-up: one request per worker, not timed.
        warm = http.client.HTTPConnection(host, int(port), timeout=60)
        for _ in range(2):
            warm.request("POST", "/api/v1/events/batch", b'{"items": []}',
                         {"Content-Type": "application/json", "Authorization": f"Api-Key {raw_key}"})  # fmt: skip
            warm.getresponse().read()
        with timed() as t:
            threads = [threading.Thread(target=client) for _ in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    sent = sum(statuses.values())
    return {"workers": 2, "client_threads": 2, "batch_size": 1000, "batches": sent, "seconds": round(t["seconds"], 2),
            "events_created": accepted[0], "events_per_s": round(accepted[0] / t["seconds"]),
            "status_codes": {str(k): v for k, v in sorted(statuses.items())}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--api-batches", type=int, default=40)
    parser.add_argument("--api-seconds", type=float, default=120)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--repeat", type=int, default=3, help="Import rounds, alternating with anchor runs (ratio: their median)."
    )
    parser.add_argument("--keep", action="store_true", help="Keep the bench database and files.")
    parser.add_argument("--no-save", action="store_true", help="Do not write bench/results/ingest.json.")
    args = parser.parse_args()

    ensure_services()
    work = ROOT / "var" / "bench" / "ingest"
    work.mkdir(parents=True, exist_ok=True)
    jsonl, anchor = work / "events.jsonl", work / "events.copy"
    started = machine()
    with bench_database("ingest", keep=args.keep) as url:
        env = django_env(url)
        log("migrating bench_ingest")
        manage("migrate", "--no-input", env=env)
        log(f"creating {args.customers} customers")
        customers = create_customers(url, args.customers)
        log(f"writing {args.events} events")
        with timed() as generation:
            write_files(url, customers, args.events, jsonl, anchor, args.seed)
        file_mb = round(jsonl.stat().st_size / 2**20, 1)
        # The machine is shared and its load drifts: anchor and import alternate (anchor,
        # import, anchor, import, …, anchor), and each import is compared with the mean of
        # the two anchor runs around it. The reported ratio is the median of those ratios.
        log("bare COPY (anchor 1)")
        anchors = [bare_copy(url, anchor)]
        rounds: list[dict[str, Any]] = []
        for number in range(1, args.repeat + 1):
            if number > 1:
                with _connect(url) as conn:  # the key table empties with it (its TRUNCATE trigger)
                    conn.execute("TRUNCATE segments_event")
            log(f"import_events ({number} of {args.repeat})")
            imported = import_command(env, jsonl)
            log(f"bare COPY (anchor {number + 1})")
            anchors.append(bare_copy(url, anchor))
            with _connect(url) as conn:
                stored = conn.execute("SELECT count(*) FROM segments_event").fetchone()[0]
            imported["rows"] = stored
            imported["rows_per_s"] = round(stored / imported["seconds"])
            around = (anchors[-2]["seconds"] + anchors[-1]["seconds"]) / 2
            imported["anchor_seconds_around"] = round(around, 2)
            imported["ratio_import_to_copy"] = round(around / imported["seconds"] * stored / anchors[-1]["rows"], 3)
            imported["load_average"] = machine()["load_average"]
            rounds.append(imported)
        middle = sorted(rounds, key=lambda r: r["ratio_import_to_copy"])[(len(rounds) - 1) // 2]
        imported = {**middle}
        anchor_seconds = middle["anchor_seconds_around"]
        anchor_result = {
            **anchors[0],
            "seconds": round(anchor_seconds, 2),
            "rows_per_s": round(anchors[0]["rows"] / anchor_seconds),
            "runs_seconds": [a["seconds"] for a in anchors],
        }
        stored = imported["rows"]
        log("batch API")
        api = api_batches(env, sorted(customers), args.api_batches, args.api_seconds)
    if not args.keep:
        jsonl.unlink(missing_ok=True)
        anchor.unlink(missing_ok=True)

    ratio = imported["ratio_import_to_copy"]  # the median round's
    ratios = [r["ratio_import_to_copy"] for r in rounds]
    result = {
        "benchmark": "ingest",
        "events": args.events,
        "customers": args.customers,
        "file_mb": file_mb,
        "generation_seconds": round(generation["seconds"], 1),
        "import_events": imported,
        "bare_copy": anchor_result,
        "ratio_import_to_copy": round(ratio, 3),
        "rounds": [
            {
                k: r[k]
                for k in (
                    "seconds",
                    "cpu_seconds",
                    "peak_rss_mb",
                    "rows",
                    "anchor_seconds_around",
                    "ratio_import_to_copy",
                    "load_average",
                )
            }
            for r in rounds
        ],
        "ratio_median_and_spread": {
            "median": round(ratio, 3),
            "min": min(ratios),
            "max": max(ratios),
            "rounds": len(ratios),
        },
        "batch_api": api,
        "floors": {
            "ratio_at_least": RATIO_FLOOR,
            "ratio_met": ratio >= RATIO_FLOOR and all(r["rows"] == args.events for r in rounds),
            "ratio_basis": "median over the rounds of (mean of the anchor runs around the import) / import",
            "peak_rss_mb_below": RSS_FLOOR_MB,
            "peak_rss_met": max(r["peak_rss_mb"] for r in rounds) < RSS_FLOOR_MB,
        },
        "machine_at_start": started,
        "machine_at_end": machine(),
    }
    emit("ingest", result, save=not args.no_save)


if __name__ == "__main__":
    main()
