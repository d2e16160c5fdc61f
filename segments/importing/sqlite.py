"""SQLite fast path of ``import_events`` (the embedded default).

The generic path (``events_record`` per batch of 1,000) builds a model instance per row,
reads the stored bodies of every batch before writing and re-reads them after: about
4,000 events per second on SQLite. Here each chunk of parsed lines is written with one
``executemany`` of ``INSERT OR IGNORE`` (sqlite3 loops in C, no per-row ORM work), in one
transaction, with values adapted exactly as the ORM adapts them. SQLite has a single
writer, so the race the generic path re-reads for (a concurrent writer storing the same
id between read and write) cannot happen inside the transaction.

The rules stay those of ``segments.services.ingestion``: the first line with an
``event_id`` wins; a later line with the same id and the same body is a duplicate, with a
different body a conflict naming the fields; unknown customers are rejected or created
(``unknown_customers``). Misses are explained only for chunks where something was
ignored: when ``INSERT OR IGNORE`` stored fewer rows than it was given, the chunk's stored
bodies are read once and compared line by line (a re-run of a whole file costs one read
per chunk).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from segments.importing.loaders import ErrorSink, ImportStats, _parsed_chunks
from segments.importing.records import EVENT_COLUMNS, parse_event
from segments.models import Customer, Event, EventType
from segments.services.ingestion import (
    EventInput,
    _differences,
    _event_body,
    _stored_event_bodies,
    conflict_message,
    customers_create_missing,
    unknown_customer_message,
)

SQLITE_CHUNK = 10_000  # lines per transaction
_LOOKUP = 900  # ids per IN (...) (SQLite's default bound-parameter limit is 999 on old builds)
_CUSTOMER_CACHE_MAX = 1_000_000


class _Customers:
    """``external_id -> pk``, looked up per chunk for the ids not seen yet (bounded memory)."""

    def __init__(self, rule: str) -> None:
        self.rule = rule
        self.known: dict[str, int] = {}

    def resolve(self, external_ids: set[str]) -> dict[str, int]:
        if len(self.known) > _CUSTOMER_CACHE_MAX:
            self.known = {}
        missing = sorted(external_ids - self.known.keys())
        for start in range(0, len(missing), _LOOKUP):
            chunk = missing[start : start + _LOOKUP]
            self.known.update(Customer.objects.filter(external_id__in=chunk).values_list("external_id", "id"))
        if self.rule == "create":
            unknown = [ext for ext in missing if ext not in self.known]
            if unknown:
                customers_create_missing(external_ids=unknown)
                for start in range(0, len(unknown), _LOOKUP):
                    chunk = unknown[start : start + _LOOKUP]
                    self.known.update(Customer.objects.filter(external_id__in=chunk).values_list("external_id", "id"))
        return self.known


class _Writer:
    def __init__(self, *, rule: str, type_ids: Mapping[str, int]) -> None:
        self.customers = _Customers(rule)
        self.type_ids = dict(type_ids)
        table = connection.ops.quote_name(Event._meta.db_table)
        columns = ("event_id", "customer_id", "event_type_id", "occurred_at", "received_at", "properties",
                   "amount", "currency")  # fmt: skip
        names = ", ".join(connection.ops.quote_name(c) for c in columns)
        marks = ", ".join(["%s"] * len(columns))
        self.sql = f"INSERT OR IGNORE INTO {table} ({names}) VALUES ({marks})"
        self.adapt_datetime = connection.ops.adapt_datetimefield_value

    @staticmethod
    def _properties(value: Mapping[str, Any]) -> str:
        # What JSONField.get_db_prep_value stores (json.dumps with the default separators).
        return json.dumps(value) if value else "{}"

    def write(self, chunk: list[tuple[int, EventInput]], stats: ImportStats, on_error: ErrorSink) -> None:
        customer_ids = self.customers.resolve({event.customer_id for _, event in chunk})
        received = self.adapt_datetime(timezone.now())
        rows: list[tuple[Any, ...]] = []
        kept: list[tuple[int, EventInput, int]] = []
        for number, event in chunk:
            customer_pk = customer_ids.get(event.customer_id)
            if customer_pk is None:
                stats.rejected += 1
                on_error(number, "customer_id", unknown_customer_message(event.customer_id))
                continue
            kept.append((number, event, customer_pk))
            rows.append(
                (
                    event.event_id,
                    customer_pk,
                    self.type_ids[event.type],
                    self.adapt_datetime(event.occurred_at),
                    received,
                    self._properties(event.properties),
                    None if event.amount is None else str(event.amount),
                    event.currency,
                )
            )
        if not rows:
            return
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(self.sql, rows)
            inserted = max(cursor.rowcount, 0)
            conflicts = self._explain(kept, on_error) if inserted < len(rows) else 0
        stats.created += inserted
        stats.rejected += conflicts
        stats.duplicates += len(rows) - inserted - conflicts

    def _explain(self, kept: list[tuple[int, EventInput, int]], on_error: ErrorSink) -> int:
        """Lines whose stored event differs from them (the first line of an id wins)."""
        stored = _stored_event_bodies(event.event_id for _, event, _ in kept)
        conflicts = 0
        for number, event, customer_pk in kept:
            body = _event_body(
                customer_id=customer_pk,
                event_type_id=self.type_ids[event.type],
                occurred_at=event.occurred_at,
                properties=event.properties,
                amount=event.amount,
                currency=event.currency,
            )
            previous = stored.get(event.event_id)
            if previous is None:  # ignored for a reason other than its id (a constraint)
                conflicts += 1
                on_error(number, "event_id", "This event could not be stored (a database constraint refused it).")
                continue
            diff = _differences(previous, body)
            if diff:
                conflicts += 1
                on_error(number, "event_id", conflict_message(diff))
        return conflicts


def insert_events(
    path: Path,
    fmt: str,
    *,
    event_types: Mapping[str, bool],
    rule: str,
    on_error: ErrorSink,
    progress: bool | None,
    chunk_size: int = SQLITE_CHUNK,
) -> ImportStats:
    stats = ImportStats()
    writer = _Writer(rule=rule, type_ids=dict(EventType.objects.values_list("code", "id")))
    chunks = _parsed_chunks(
        path, fmt, label="events", columns=EVENT_COLUMNS, required=("event_id", "customer_id", "type", "occurred_at"),
        parse=lambda record, text: parse_event(record, event_types=event_types, text=text),
        stats=stats, on_error=on_error, progress=progress, size=chunk_size,
    )  # fmt: skip
    for chunk in chunks:
        writer.write(chunk, stats, on_error)
    return stats
