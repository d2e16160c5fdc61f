"""PostgreSQL fast path of ``import_events``.

Validated rows stream with ``COPY`` into a temporary staging table (text columns: nothing
is parsed twice). Per chunk, in one transaction, one statement joins them to customers,
claims their event ids in the events' key table (an id stored already, or claimed first
by a concurrent writer, is not) and inserts the rows it claimed. A writer thread holds
the connection, so PostgreSQL loads one chunk while this process parses the next. Lines
that did not land are explained set-wise afterwards: unknown customer, or an
``event_id`` stored with a different body.

No chunk reads the events table to find stored ids: the claim probes the key table's
primary key, the only unique index on ``event_id`` (the partitioned events table cannot
hold one). An optimistic ``COPY`` into the events table, refused by a unique index there
when a chunk holds a stored id, is not used: that index is gone, and the key trigger's
transition table makes ``COPY`` insert row by row anyway (no faster than ``INSERT … SELECT``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection, connections, transaction

from segments.importing.loaders import ErrorSink, ImportStats, _report_record_error
from segments.importing.readers import _open_lines, _progress_bar
from segments.importing.records import EVENT_COLUMNS, RecordError, compact_json, parse_event
from segments.models import Customer, Event, EventType
from segments.services.ingestion import EventInput, customers_create_missing, unknown_customer_message
from segments.services.partitions import EVENT_KEYS, KEYS_CLAIMED_SQL, KEYS_UNCLAIMED_SQL

COPY_CHUNK = 50_000  # rows per staging round trip (and per transaction)
COPY_BLOCK = 5_000  # rows per buffer handed to the writer
STAGE = "ingest_event_stage_v2"  # bump when its columns change (it lives per connection)
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: str) -> str:
    # COPY's text format: backslash, tab, newline and carriage return are escaped.
    if "\\" in value or "\t" in value or "\n" in value or "\r" in value:
        return value.translate(_COPY_ESCAPES)
    return value


def _copy_line(number: int, event: EventInput, type_id: int) -> str:
    properties = event.properties
    props = _copy_text(compact_json(properties)) if properties else "{}"
    amount = "\\N" if event.amount is None else str(event.amount)
    return (
        f"{number}\t{_copy_text(event.event_id)}\t{_copy_text(event.customer_id)}\t{type_id}\t"
        f"{event.occurred_at.isoformat()}\t{props}\t{amount}\t{event.currency}\n"
    )


@dataclass
class _ChunkOutcome:
    staged: int
    inserted: int
    unknown: list[tuple[int, str]]
    conflicts: list[tuple[int, list[str]]]


class _EventCopyWriter:
    """Holds one connection; per chunk, in one transaction: COPY into the staging table,
    move the new rows into the events table, explain the rows that did not land, commit."""

    DIFF_COLUMNS = ("customer_id", "type", "occurred_at", "properties", "amount", "currency")

    def __init__(self, *, rule: str, alias: str = "default") -> None:
        self.rule, self.alias = rule, alias
        event, customer = Event._meta.db_table, Customer._meta.db_table
        columns = "event_id, customer_id, event_type_id, occurred_at, received_at, properties, amount, currency"
        # The rows of this chunk that are new: customers resolved, event ids claimed in
        # the key table of the partitioned events table (migration 0006; it stands in for
        # a unique index on event_id) by this statement. An id already stored, claimed by
        # a concurrent writer meanwhile (which this statement waits for) or repeated in the
        # chunk lands once: the first line wins. Keys are claimed in event_id order, so two
        # importers of overlapping files wait on each other instead of deadlocking.
        # INSERT … SELECT rather than the COPY round trip this used before: the events
        # table's statement trigger (transition table) makes COPY insert row by row too.
        self.insert_sql = f"""
            WITH claimed AS (
                INSERT INTO {EVENT_KEYS} (event_id)
                SELECT s.event_id FROM {STAGE} s JOIN {customer} c ON c.external_id = s.customer_ext
                 ORDER BY s.event_id
                ON CONFLICT DO NOTHING RETURNING event_id)
            INSERT INTO {event} ({columns})
            SELECT DISTINCT ON (s.event_id) s.event_id, c.id, s.event_type_id, s.occurred_at::timestamptz, now(),
                   s.properties::jsonb, s.amount::numeric, s.currency
              FROM {STAGE} s JOIN {customer} c ON c.external_id = s.customer_ext
              JOIN claimed k ON k.event_id = s.event_id
             ORDER BY s.event_id, s.line_no"""
        self.unknown_sql = f"""
            SELECT s.line_no, s.customer_ext FROM {STAGE} s
             WHERE NOT EXISTS (SELECT 1 FROM {customer} c WHERE c.external_id = s.customer_ext)
             ORDER BY s.line_no"""
        self.missing_customers_sql = f"""
            SELECT DISTINCT s.customer_ext FROM {STAGE} s
             WHERE NOT EXISTS (SELECT 1 FROM {customer} c WHERE c.external_id = s.customer_ext)"""
        self.conflicts_sql = f"""
            SELECT line_no, d.customer_id, d.type, d.occurred_at, d.properties, d.amount, d.currency
              FROM (SELECT s.line_no,
                           e.customer_id <> c.id AS customer_id,
                           e.event_type_id <> s.event_type_id AS type,
                           e.occurred_at <> s.occurred_at::timestamptz AS occurred_at,
                           e.properties <> s.properties::jsonb AS properties,
                           e.amount IS DISTINCT FROM s.amount::numeric AS amount,
                           e.currency <> s.currency AS currency
                      FROM {STAGE} s
                      JOIN {customer} c ON c.external_id = s.customer_ext
                      JOIN {event} e ON e.event_id = s.event_id) d
             WHERE d.customer_id OR d.type OR d.occurred_at OR d.properties OR d.amount OR d.currency
             ORDER BY line_no"""

    def _ensure_stage(self, cursor: Any) -> None:
        # ON COMMIT DELETE ROWS empties it at every chunk's commit, for free.
        cursor.execute(
            f"""CREATE TEMP TABLE IF NOT EXISTS {STAGE} (
                  line_no bigint NOT NULL, event_id text NOT NULL, customer_ext text NOT NULL,
                  event_type_id smallint NOT NULL, occurred_at text NOT NULL,
                  properties text NOT NULL, amount text, currency text NOT NULL
                ) ON COMMIT DELETE ROWS"""
        )

    def _insert_new_rows(self, cursor: Any) -> int:
        """Claim the new rows' event ids and insert those rows, in one statement; the key
        trigger is told they are claimed. Returns the rows that landed."""
        cursor.execute(KEYS_CLAIMED_SQL)
        cursor.execute(self.insert_sql)
        inserted = int(cursor.rowcount)
        cursor.execute(KEYS_UNCLAIMED_SQL)
        return inserted

    def write_chunk(self, blocks: Iterable[bytes], staged: int) -> _ChunkOutcome:
        conn = connections[self.alias]
        # Inside a caller's transaction (a savepoint here) nothing commits between chunks,
        # so ON COMMIT DELETE ROWS does not empty the staging table: empty it, or every
        # chunk would COPY (and explain) the previous chunks' rows again.
        nested = conn.in_atomic_block
        with transaction.atomic(using=self.alias):
            conn.ensure_connection()
            raw = conn.connection
            with raw.cursor() as cursor:
                self._ensure_stage(cursor)
                if nested:
                    cursor.execute(f"DELETE FROM {STAGE}")
                with cursor.copy(
                    f"COPY {STAGE} (line_no, event_id, customer_ext, event_type_id, occurred_at, properties, "
                    "amount, currency) FROM STDIN"
                ) as copy:
                    for block in blocks:
                        copy.write(block)
                if self.rule == "create":
                    cursor.execute(self.missing_customers_sql)
                    missing = [row[0] for row in cursor.fetchall()]
                    if missing:
                        customers_create_missing(external_ids=missing)
                inserted = self._insert_new_rows(cursor)
                unknown: list[tuple[int, str]] = []
                conflicts: list[tuple[int, list[str]]] = []
                if inserted < staged:
                    cursor.execute(self.unknown_sql)
                    unknown = [(int(n), ext) for n, ext in cursor.fetchall()]
                    cursor.execute(self.conflicts_sql)
                    for number, *flags in cursor.fetchall():
                        fields = [name for name, differs in zip(self.DIFF_COLUMNS, flags, strict=True) if differs]
                        conflicts.append((int(number), fields))
        return _ChunkOutcome(staged, inserted, unknown, conflicts)


class _ThreadedWriter:
    """Runs the writer on its own thread and connection, so PostgreSQL loads one chunk
    while this process parses the next. Bounded queue: at most two chunks in memory."""

    def __init__(self, writer: _EventCopyWriter) -> None:
        self.writer = writer
        self.inbox: queue.Queue[tuple[list[bytes], int] | None] = queue.Queue(maxsize=1)
        self.outbox: queue.Queue[_ChunkOutcome] = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="import-events-copy", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while (item := self.inbox.get()) is not None:
                self.outbox.put(self.writer.write_chunk(*item))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self.error = exc
            while self.inbox.get() is not None:  # let the producer finish without blocking
                pass
        finally:
            connections[self.writer.alias].close()

    def submit(self, blocks: list[bytes], staged: int) -> Iterator[_ChunkOutcome]:
        self.inbox.put((blocks, staged))
        if self.error is not None:
            raise self.error
        yield from self.done()

    def done(self) -> Iterator[_ChunkOutcome]:
        while True:
            try:
                yield self.outbox.get_nowait()
            except queue.Empty:
                return

    def close(self) -> Iterator[_ChunkOutcome]:
        self.inbox.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error
        yield from self.done()


def copy_events(
    path: Path,
    fmt: str,
    *,
    event_types: Mapping[str, bool],
    rule: str,
    on_error: ErrorSink,
    progress: bool | None,
    chunk_size: int,
) -> ImportStats:
    type_ids = dict(EventType.objects.values_list("code", "id"))
    stats = ImportStats()
    writer = _EventCopyWriter(rule=rule)
    # Inside a transaction (a caller's atomic block, a test) the work must share the
    # caller's connection; otherwise a second thread overlaps loading with parsing.
    threaded = not connection.in_atomic_block
    runner = _ThreadedWriter(writer) if threaded else None
    text = fmt == "csv"

    def account(outcome: _ChunkOutcome) -> None:
        stats.created += outcome.inserted
        for number, ext in outcome.unknown:
            on_error(number, "customer_id", unknown_customer_message(ext))
        for number, fields in outcome.conflicts:
            on_error(number, "event_id", "This event_id was already recorded with a different body (differs in: "
                     f"{', '.join(fields)}).")  # fmt: skip
        failed = len(outcome.unknown) + len(outcome.conflicts)
        stats.rejected += failed
        stats.duplicates += outcome.staged - outcome.inserted - failed

    def flush(blocks: list[bytes], staged: int) -> None:
        if runner is not None:
            for outcome in runner.submit(blocks, staged):
                account(outcome)
        else:
            account(writer.write_chunk(blocks, staged))

    try:
        with _progress_bar(path, "events", progress) as bar:
            lines, stream, tracker = _open_lines(
                path, fmt, columns=EVENT_COLUMNS, required=("event_id", "customer_id", "type", "occurred_at"), bar=bar
            )
            with stream:
                blocks: list[bytes] = []
                block: list[str] = []
                block_rows = min(COPY_BLOCK, chunk_size)
                staged = 0
                for number, record, error in lines:
                    stats.lines += 1
                    if error is not None:
                        stats.rejected += 1
                        on_error(number, *error)
                        continue
                    try:
                        event = parse_event(record, event_types=event_types, text=text)
                    except RecordError as exc:
                        _report_record_error(number, exc, stats, on_error)
                        continue
                    block.append(_copy_line(number, event, type_ids[event.type]))
                    staged += 1
                    if len(block) >= block_rows:
                        blocks.append("".join(block).encode())
                        block = []
                        if staged >= chunk_size:
                            flush(blocks, staged)
                            blocks, staged = [], 0
                if block:
                    blocks.append("".join(block).encode())
                if staged:
                    flush(blocks, staged)
                tracker.flush()
    finally:
        if runner is not None:
            for outcome in runner.close():
                account(outcome)
    return stats
