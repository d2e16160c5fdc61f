"""PostgreSQL fast path of ``import_events``.

Validated rows stream with ``COPY`` into a temporary staging table (text columns: nothing
is parsed twice). Per chunk, in one transaction, one statement joins them to customers,
claims their event ids in the events' key table (an id stored already, or claimed first
by a concurrent writer, is not) and inserts the rows it claimed. Writer threads, each
holding its own connection, load chunks side by side while this process parses the next
ones; chunks claim their ids in file order (see ``_ClaimOrder``), so a file that repeats an
``event_id`` keeps its first line as it does loaded chunk by chunk. Lines that did not land
are explained set-wise afterwards: unknown customer, or an ``event_id`` stored with a
different body.

No chunk reads the events table to find stored ids: the claim probes the key table's
primary key, the only unique index on ``event_id`` (the partitioned events table cannot
hold one). An optimistic ``COPY`` into the events table, refused by a unique index there
when a chunk holds a stored id, is not used: that index is gone, and the key trigger's
transition table makes ``COPY`` insert row by row anyway (no faster than ``INSERT … SELECT``).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
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

COPY_CHUNK = 50_000  # rows per staging round trip (and per transaction), after the first few
COPY_BLOCK = 5_000  # rows per buffer handed to the writer
# Connections loading chunks at once. Of a chunk's time in PostgreSQL about a third is the
# commit (the deferred foreign-key checks, per row) and a little the staging COPY and the
# explanations: with two writers one chunk's commit runs while the next chunk claims and
# inserts, on a second core, where one writer left that core to the parser alone.
WRITERS = 2
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

    def write_chunk(
        self,
        blocks: Iterable[bytes],
        staged: int,
        *,
        claim_turn: Callable[[], None] | None = None,
        claimed: Callable[[], None] | None = None,
    ) -> _ChunkOutcome:
        """``claim_turn`` blocks until this chunk may claim its ids; ``claimed`` tells the
        next chunk that it may (the parallel writers' file order, ``_ClaimOrder``)."""
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
                # Customers are created in the claim's turn too: a chunk creating one that
                # an earlier, waiting chunk also needs would hold up that chunk's turn.
                if claim_turn is not None:
                    claim_turn()
                try:
                    if self.rule == "create":
                        cursor.execute(self.missing_customers_sql)
                        missing = [row[0] for row in cursor.fetchall()]
                        if missing:
                            customers_create_missing(external_ids=missing)
                    inserted = self._insert_new_rows(cursor)
                finally:
                    if claimed is not None:
                        claimed()
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


class _ClaimOrder:
    """Chunks claim their event ids one after the other, in file order, while everything
    else (staging COPY, explanations, the commit and its foreign-key checks) overlaps.

    Chunk k+1's claim starts once chunk k's claim statement has returned: an id both hold
    is then claimed by chunk k, uncommitted or not (chunk k+1 waits on its speculative
    insertion, then finds it stored), so the first line of a repeated id wins as it does
    when chunks load one by one. Chunk k never waits on a later chunk: no deadlock. A
    failed writer stops the chunks after it (``RuntimeError`` at their turn), as the one
    writer stopped before."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0  # the chunk whose turn it is
        self._finished: set[int] = set()
        self._failed = False

    def wait(self, seq: int) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._failed or self._next >= seq)
            if self._failed:
                raise RuntimeError("An earlier chunk failed; this one is not loaded.")

    def done(self, seq: int) -> None:
        with self._cond:
            if seq >= self._next:
                self._finished.add(seq)
            while self._next in self._finished:
                self._finished.discard(self._next)
                self._next += 1
            self._cond.notify_all()

    def fail(self) -> None:
        with self._cond:
            self._failed = True
            self._cond.notify_all()


class _ThreadedWriter:
    """Runs ``WRITERS`` writers on their own threads and connections, so PostgreSQL loads
    chunks while this process parses the next. Bounded: at most one chunk waits in the
    queue besides those being loaded. Outcomes come back in chunk order."""

    def __init__(self, writer: _EventCopyWriter, *, writers: int = WRITERS) -> None:
        self.writer = writer
        self.inbox: queue.Queue[tuple[int, list[bytes], int] | None] = queue.Queue(maxsize=1)
        self.outbox: queue.Queue[tuple[int, _ChunkOutcome]] = queue.Queue()
        self.order = _ClaimOrder()
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.submitted = 0
        self.delivered = 0
        self.arrived: dict[int, _ChunkOutcome] = {}
        self.threads = [
            threading.Thread(target=self._run, name=f"import-events-copy-{n}", daemon=True) for n in range(writers)
        ]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        try:
            while (item := self.inbox.get()) is not None:
                seq, blocks, staged = item
                try:
                    outcome = self.writer.write_chunk(
                        blocks, staged, claim_turn=lambda seq=seq: self.order.wait(seq),
                        claimed=lambda seq=seq: self.order.done(seq),
                    )  # fmt: skip
                except BaseException as exc:
                    with self.lock:  # the first failure is the one to report, not the stops it caused
                        self.error = self.error or exc
                    self.order.fail()
                    raise
                finally:
                    self.order.done(seq)  # also when it failed before its turn
                self.outbox.put((seq, outcome))
        except BaseException:  # noqa: BLE001 - kept in self.error, which the main thread re-raises
            while self.inbox.get() is not None:  # let the producer finish without blocking
                pass
        finally:
            connections[self.writer.alias].close()

    def submit(self, blocks: list[bytes], staged: int) -> Iterator[_ChunkOutcome]:
        self.inbox.put((self.submitted, blocks, staged))
        self.submitted += 1
        if self.error is not None:
            raise self.error
        yield from self.done()

    def done(self) -> Iterator[_ChunkOutcome]:
        while True:
            try:
                seq, outcome = self.outbox.get_nowait()
            except queue.Empty:
                break
            self.arrived[seq] = outcome
        while self.delivered in self.arrived:
            yield self.arrived.pop(self.delivered)
            self.delivered += 1

    def close(self) -> Iterator[_ChunkOutcome]:
        for _ in self.threads:
            self.inbox.put(None)
        for thread in self.threads:
            thread.join()
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
                # The first chunks are small and grow to chunk_size (one block, then
                # doubling): PostgreSQL starts loading after the first block is parsed
                # instead of idling while the parser fills a whole first chunk.
                target = block_rows
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
                        if staged >= target:
                            flush(blocks, staged)
                            blocks, staged = [], 0
                            target = min(target * 2, chunk_size)
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
