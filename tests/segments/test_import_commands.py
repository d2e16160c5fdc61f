"""import_customers / import_events / import_memberships: streaming, per-line reports,
idempotent re-runs, and (on PostgreSQL) the COPY path."""

from __future__ import annotations

import csv
import io
import json
import threading
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command, execute_from_command_line
from django.db import connections, transaction
from django.utils.dateparse import parse_datetime

from segments.importing import read_jsonl
from segments.models import Customer, Event, Membership
from segments.services.ingestion import EventInput, events_record, unknown_customer_message
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db

WHEN = "2025-03-01T10:00:00Z"


def jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def run(command: str, path: Path, *args: str) -> tuple[str, str, int]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command(command, str(path), "--no-progress", *args, stdout=out, stderr=err)
        code = 0
    except CommandError as exc:
        err.write(str(exc))
        code = exc.returncode
    return out.getvalue(), err.getvalue(), code


def event(event_id: str, customer_id: str = "c-1", **extra: object) -> dict[str, object]:
    return {"event_id": event_id, "customer_id": customer_id, "type": "visit", "occurred_at": WHEN, **extra}


def test_import_events__bad_lines__each_reported_valid_lines_loaded(tmp_path: Path) -> None:
    CustomerFactory(external_id="c-1")
    path = jsonl(
        tmp_path / "events.jsonl",
        [
            event("e-1"),
            '{"event_id": "e-2", ',  # line 2: malformed JSON
            event("e-3", occurred_at="2025-03-01T10:00:00"),  # line 3: naive
            event("e-4", type="teleport"),  # line 4
            event("e-5", customer_id="ghost"),  # line 5
            "",  # blank lines are skipped
            event("e-6", type="order", amount="12.50", currency="EUR", properties={"sku": "TP"}),  # line 7
            event("e-7", type="order"),  # line 8: no amount/currency
        ],
    )
    with path.open("ab") as f:
        f.write(b'{"event_id": "e-\xff", "customer_id": "c-1"}\n')  # line 9: not UTF-8
    report = tmp_path / "bad.csv"
    out, err, code = run("import_events", path, "--report", str(report))
    assert code == 2
    assert set(Event.objects.values_list("event_id", flat=True)) == {"e-1", "e-6"}
    rows = list(csv.DictReader(report.open()))
    assert {(row["line"], row["field"]) for row in rows} == {
        ("2", ""),
        ("3", "occurred_at"),
        ("4", "type"),
        ("5", "customer_id"),
        ("8", "amount"),
        ("8", "currency"),
        ("9", ""),
    }
    assert "UTF-8" in next(row["reason"] for row in rows if row["line"] == "9")
    assert "line 3: occurred_at:" in err
    assert "2 created" in out and "6 rejected" in out
    assert Event.objects.get(event_id="e-6").amount == Decimal("12.50")


def test_import_events__rerun__idempotent_nothing_duplicated(tmp_path: Path) -> None:
    CustomerFactory(external_id="c-1")
    path = jsonl(tmp_path / "events.jsonl", [event(f"e-{i}") for i in range(30)])
    first = run("import_events", path)
    second = run("import_events", path)
    assert first[2] == second[2] == 0
    assert "30 created" in first[0]
    assert "0 created" in second[0] and "30 already stored" in second[0]
    assert Event.objects.count() == 30


def test_import_events__same_id_different_body__conflict_reported_stored_kept(tmp_path: Path) -> None:
    CustomerFactory(external_id="c-1")
    run("import_events", jsonl(tmp_path / "a.jsonl", [event("e-1")]))
    changed = jsonl(tmp_path / "b.jsonl", [event("e-1", properties={"page": "home"}), event("e-2")])
    _, err, code = run("import_events", changed)
    assert code == 2
    assert "line 1: event_id:" in err and "properties" in err
    assert Event.objects.get(event_id="e-1").properties == {}
    assert Event.objects.filter(event_id="e-2").exists()


def test_import_events__unknown_customers_create__customers_created(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "events.jsonl", [event("e-1", customer_id="new-1"), event("e-2", customer_id="new-2")])
    _, _, code = run("import_events", path, "--unknown-customers", "create")
    assert code == 0
    assert set(Customer.objects.values_list("external_id", flat=True)) == {"new-1", "new-2"}
    assert Event.objects.count() == 2


def test_import_events__csv__loads_with_json_properties(tmp_path: Path) -> None:
    CustomerFactory(external_id="c-1")
    path = tmp_path / "events.csv"
    path.write_text(
        "event_id,customer_id,type,occurred_at,amount,currency,properties\n"
        'e-1,c-1,order,2025-03-01T10:00:00+02:00,9.99,EUR,"{""sku"": ""TP"", ""note"": ""tab\\tand, comma""}"\n'
        "e-2,c-1,visit,2025-03-01T11:00:00Z,,,\n"
    )
    _, err, code = run("import_events", path)
    assert code == 0, err
    order = Event.objects.get(event_id="e-1")
    assert order.properties == {"sku": "TP", "note": "tab\tand, comma"} and order.amount == Decimal("9.99")
    assert Event.objects.get(event_id="e-2").properties == {}


def test_import_events__csv_missing_column__fatal_naming_it_nothing_loaded(tmp_path: Path) -> None:
    CustomerFactory(external_id="c-1")
    path = tmp_path / "events.csv"
    path.write_text("event_id,customer_id,occurred_at\ne-1,c-1,2025-03-01T10:00:00Z\n")
    _, err, code = run("import_events", path)
    assert code == 1
    assert "Line 1" in err and "missing column(s): type" in err
    assert not Event.objects.exists()


def test_import_events__csv_unknown_column__fatal(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text("event_id,customer_id,type,occured_at\n")
    _, err, code = run("import_events", path)
    assert code == 1 and "unknown column(s): occured_at" in err


def test_import_events__csv_ragged_and_bad_encoding_lines__reported_with_numbers(tmp_path: Path) -> None:
    CustomerFactory(external_id="c-1")
    path = tmp_path / "events.csv"
    path.write_bytes(
        b"event_id,customer_id,type,occurred_at\n"
        b"e-1,c-1,visit,2025-03-01T10:00:00Z\n"
        b"e-2,c-1,visit\n"  # line 3: ragged
        b"e-3,c-1,visit,2025-03-01T10:00:00Z,extra\n"  # line 4: ragged
        b"e-\xe9,c-1,visit,2025-03-01T10:00:00Z\n"  # line 5: Latin-1, not UTF-8
        b'e-5,c-1,visit,"2025-03-01T10:00:00Z"\n'
    )
    _, err, code = run("import_events", path)
    assert code == 2
    assert "line 3: (line): Expected 4 fields" in err and "got 3" in err
    assert "line 4: (line): Expected 4 fields" in err
    assert "line 5: (line): Not valid UTF-8" in err
    assert set(Event.objects.values_list("event_id", flat=True)) == {"e-1", "e-5"}


def test_import_events__report_as_jsonl(tmp_path: Path) -> None:
    path = jsonl(tmp_path / "events.jsonl", [event("e-1", customer_id="ghost")])
    report = tmp_path / "bad.jsonl"
    run("import_events", path, "--report", str(report))
    assert [json.loads(line) for line in report.read_text().splitlines()] == [
        {"line": 1, "field": "customer_id", "reason": unknown_customer_message("ghost")}
    ]


def test_import__missing_file_or_unknown_format__clear_error(tmp_path: Path) -> None:
    assert run("import_events", tmp_path / "nope.jsonl")[2] == 1
    odd = tmp_path / "events.txt"
    odd.write_text("x")
    _, err, code = run("import_events", odd)
    assert code == 1 and "--format" in err


def test_read_jsonl__streams_lazily__first_record_before_the_rest_is_read() -> None:
    consumed = []

    class Lines(io.RawIOBase):
        def __iter__(self) -> Iterator[bytes]:
            for i in range(10**9):  # effectively endless: reading it all would never finish
                consumed.append(i)
                yield json.dumps({"n": i}).encode() + b"\n"

    reader = read_jsonl(Lines())  # type: ignore[arg-type]
    assert next(reader) == (1, {"n": 0}, None)
    assert len(consumed) == 1


def test_import_customers__csv_then_rerun__upserted_empty_cells_keep_values(tmp_path: Path) -> None:
    path = tmp_path / "customers.csv"
    path.write_text(
        "external_id,signed_up_at,timezone,locale,email,phone,attributes\n"
        'c-1,2024-01-01T00:00:00Z,Europe/Paris,fr-FR,a@example.com,+33612345678,"{""tier"": ""A""}"\n'
        "c-2,2024-01-02T00:00:00Z,Mars/Base,en,b@example.com,,\n"
        "c-3,2024-01-03T00:00:00+09:00,Asia/Tokyo,ja-JP,,0612,\n"
    )
    out, err, code = run("import_customers", path)
    assert code == 2
    assert "line 3: timezone:" in err and "line 4: phone:" in err
    assert "1 created" in out
    update = tmp_path / "update.csv"
    update.write_text("external_id,email,timezone\nc-1,new@example.com,\n")
    out, _, code = run("import_customers", update)
    assert code == 0 and "1 updated" in out
    customer = Customer.objects.get()
    assert (customer.email, customer.timezone, customer.attributes) == (
        "new@example.com",
        "Europe/Paris",
        {"tier": "A"},
    )


def test_import_memberships__jsonl__upserted_and_unknown_customer_reported(tmp_path: Path) -> None:
    CustomerFactory(external_id="c-1")
    term = {"customer_id": "c-1", "plan": "plus", "started_at": WHEN, "expires_at": "2026-03-01T10:00:00Z"}
    path = jsonl(
        tmp_path / "m.jsonl",
        [term, {**term, "customer_id": "ghost"}, {**term, "plan": "pro", "expires_at": "2020-01-01T00:00:00Z"}],
    )
    _, err, code = run("import_memberships", path)
    assert code == 2
    assert "line 2: customer_id:" in err and "line 3: expires_at:" in err
    again = jsonl(tmp_path / "m2.jsonl", [{**term, "level": "gold"}])
    out, _, code = run("import_memberships", again)
    assert code == 0 and "1 updated" in out
    assert Membership.objects.get().level == "gold"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_import_events__postgres_threaded_copy__loads_in_chunks_and_explains_misses(tmp_path: Path) -> None:
    # Outside a transaction the COPY writer runs on its own thread and connection;
    # a small chunk size makes it go through several chunks.
    for i in range(5):
        CustomerFactory(external_id=f"c-{i}")
    rows: list[object] = [event(f"e-{i}", customer_id=f"c-{i % 5}") for i in range(2500)]
    rows[100] = event("e-100", customer_id="ghost")
    rows[2400] = event("e-0", properties={"changed": True})  # conflicts with line 1
    path = jsonl(tmp_path / "events.jsonl", rows)
    out, err, code = run("import_events", path, "--batch-size", "1000")
    assert code == 2
    assert "line 101: customer_id: Unknown customer 'ghost'" in err
    assert "line 2401: event_id:" in err and "properties" in err
    assert Event.objects.count() == 2498
    out, _, code = run("import_events", path, "--batch-size", "700")
    assert "0 created" in out and "2498 already stored" in out
    assert Event.objects.count() == 2498


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_copy_writer__id_claimed_by_a_concurrent_uncommitted_writer__waits_then_already_stored(
    tmp_path: Path,
) -> None:
    # A real concurrent writer: an API-style events_record holds "e-1" uncommitted on its
    # own connection while the import runs. The import's claim of "e-1" waits for it, then
    # counts it as already stored; "e-2" lands; nothing is stored twice.
    CustomerFactory(external_id="c-1")
    claimed, release = threading.Event(), threading.Event()

    def writer() -> None:
        try:
            with transaction.atomic():
                events_record(events=[EventInput("e-1", "c-1", "visit", parse_datetime(WHEN))])
                claimed.set()
                release.wait(timeout=20)
        finally:
            connections.close_all()

    thread = threading.Thread(target=writer)
    thread.start()
    assert claimed.wait(timeout=20)
    threading.Timer(1.0, release.set).start()  # the import is waiting on "e-1" by then
    out, _, code = run("import_events", jsonl(tmp_path / "b.jsonl", [event("e-1"), event("e-2")]))
    thread.join(timeout=20)
    assert code == 0 and "1 created" in out and "1 already stored" in out
    assert sorted(Event.objects.values_list("event_id", flat=True)) == ["e-1", "e-2"]


@pytest.mark.postgres
def test_import_events__new_file_on_postgres__does_not_read_the_events_table(tmp_path: Path) -> None:
    # An anti-join that looked for stored ids hashed the whole events table once per
    # chunk (a cost growing with the table); the claim in the key table stands in for it.
    # Inside the test's transaction the writer shares this connection, so the
    # transaction's own scan counters see every read of the partitioned events table:
    # its partitions (monthly and default) and their indexes.
    from django.db import connection

    CustomerFactory(external_id="c-1")
    run("import_events", jsonl(tmp_path / "old.jsonl", [event(f"old-{i}") for i in range(50)]))

    def scans() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                """WITH tree AS (SELECT relid FROM pg_partition_tree('segments_event'::regclass))
                   SELECT coalesce(sum(pg_stat_get_xact_numscans(oid)), 0) FROM pg_class
                    WHERE oid IN (SELECT relid FROM tree)
                       OR oid IN (SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT relid FROM tree))"""
            )
            return int(cursor.fetchone()[0])

    before = scans()
    out, _, code = run("import_events", jsonl(tmp_path / "new.jsonl", [event(f"new-{i}") for i in range(30)]),
                       "--batch-size", "10")  # fmt: skip
    assert code == 0 and "30 created" in out
    assert scans() == before
    # A chunk with a stored id is explained (compared with the stored body): that read
    # does show in the counters, so they do see the partitions.
    out, _, code = run("import_events", jsonl(tmp_path / "again.jsonl", [event("new-1"), event("new-99")]))
    assert code == 0 and "1 created" in out and "1 already stored" in out
    assert scans() > before
    assert Event.objects.count() == 81


def test_import_command__run_from_the_shell__skips_system_checks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # manage.py runs the system checks before a command unless it opts out; an import
    # needs none of them and they cost seconds before the first line is read.
    from django.core.management.base import BaseCommand

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("system checks ran")

    monkeypatch.setattr(BaseCommand, "check", fail)
    CustomerFactory(external_id="c-1")
    path = jsonl(tmp_path / "e.jsonl", [event("e-1")])
    execute_from_command_line(["manage.py", "import_events", str(path), "--no-progress"])
    assert "1 created" in capsys.readouterr().out


@pytest.mark.postgres
def test_import_events__postgres_inside_a_transaction__each_chunk_staged_once(tmp_path: Path) -> None:
    # Inside the caller's transaction nothing commits between chunks: a chunk must not
    # see (load, or explain) the rows staged by the chunks before it.
    CustomerFactory(external_id="c-1")
    rows: list[object] = [event(f"e-{i}") for i in range(20)]
    rows[4] = event("e-4", customer_id="ghost-a")
    rows[14] = event("e-14", customer_id="ghost-b")
    out, err, code = run("import_events", jsonl(tmp_path / "events.jsonl", rows), "--batch-size", "10")
    assert code == 2
    assert "18 created" in out and "0 already stored" in out and "2 rejected" in out
    assert err.count("line 5: customer_id") == 1 and err.count("line 15: customer_id") == 1
    assert Event.objects.count() == 18


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_import_events__postgres_chunk_held_at_commit__next_chunk_loads_meanwhile(tmp_path: Path) -> None:
    # Two writers load chunks side by side: while chunk 1 waits at its commit (its deferred
    # foreign-key check needs a customer row another transaction holds FOR UPDATE), chunk 2
    # claims, inserts and commits on the other connection. One writer at a time would hold
    # chunk 2 back until chunk 1 commits.
    from django.db import connection

    CustomerFactory(external_id="c-1")
    CustomerFactory(external_id="c-2")
    rows: list[object] = [event(f"a-{i}", customer_id="c-1") for i in range(10)]
    rows += [event(f"b-{i}", customer_id="c-2") for i in range(10)]
    path = jsonl(tmp_path / "events.jsonl", rows)
    locked, seen = threading.Event(), []

    def holder() -> None:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SELECT id FROM segments_customer WHERE external_id = 'c-1' FOR UPDATE")
                locked.set()
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    cursor.execute(
                        "SELECT count(*) FILTER (WHERE event_id LIKE 'a-%%'), count(*) FILTER (WHERE event_id LIKE "
                        "'b-%%') FROM segments_event"
                    )
                    counts = cursor.fetchone()
                    if counts[1] == 10:
                        seen.append(counts)
                        break
                    time.sleep(0.05)
        finally:
            connections.close_all()

    thread = threading.Thread(target=holder)
    thread.start()
    assert locked.wait(timeout=20)
    out, _, code = run("import_events", path, "--batch-size", "10")
    thread.join(timeout=20)
    assert seen == [(0, 10)]  # chunk 2 committed while chunk 1 was held
    assert code == 0 and "20 created" in out
    assert Event.objects.count() == 20


@pytest.mark.postgres
def test_import_events__postgres_big_file__first_chunks_small_then_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL starts loading once the first block is parsed, not a whole chunk: the
    # chunks start at one block and double up to the chunk size.
    from segments.importing import postgres

    monkeypatch.setattr(postgres, "COPY_BLOCK", 100)
    monkeypatch.setattr(postgres, "COPY_CHUNK", 1000)
    staged: list[int] = []
    write_chunk = postgres._EventCopyWriter.write_chunk

    def recording(self: object, blocks: list[bytes], size: int, **kwargs: object) -> object:
        staged.append(size)
        return write_chunk(self, blocks, size, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(postgres._EventCopyWriter, "write_chunk", recording)
    CustomerFactory(external_id="c-1")
    out, _, code = run("import_events", jsonl(tmp_path / "events.jsonl", [event(f"e-{i}") for i in range(2000)]))
    assert code == 0 and "2000 created" in out
    assert staged == [100, 200, 400, 800, 500]
