"""The loaders behind the ``import_*`` commands: read, parse, write in batches, report.

Customers and memberships go through ``segments.services.ingestion`` in batches of 1,000
(one ``INSERT … ON CONFLICT`` each). Events go through the PostgreSQL ``COPY`` path
(``segments.importing.postgres``) on PostgreSQL, the ``INSERT OR IGNORE`` path
(``segments.importing.sqlite``) on SQLite, and through ``events_record`` in batches
elsewhere. Every bad line is handed to ``on_error(line, field, message)`` while
the valid lines load; re-running an import stores nothing twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.db import connection

from segments.importing.readers import _open_lines, _progress_bar, detect_format
from segments.importing.records import (
    CUSTOMER_COLUMNS,
    EVENT_COLUMNS,
    MEMBERSHIP_COLUMNS,
    RecordError,
    event_type_map,
    parse_customer,
    parse_event,
    parse_membership,
)
from segments.services.ingestion import (
    IngestResult,
    Outcome,
    customers_upsert,
    events_record,
    memberships_upsert,
    unknown_customer_rule,
)

ErrorSink = Callable[[int, str, str], None]  # (line number, field, message)


@dataclass
class ImportStats:
    lines: int = 0  # records read (blank lines excluded)
    created: int = 0
    updated: int = 0
    duplicates: int = 0
    rejected: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def _apply(result: IngestResult, line_numbers: list[int], stats: ImportStats, on_error: ErrorSink) -> None:
    for item in result.items:
        if item.outcome == Outcome.CREATED:
            stats.created += 1
        elif item.outcome == Outcome.UPDATED:
            stats.updated += 1
        elif item.outcome == Outcome.DUPLICATE:
            stats.duplicates += 1
        else:
            stats.rejected += 1
            on_error(line_numbers[item.index], item.field, item.message)


def _report_record_error(number: int, exc: RecordError, stats: ImportStats, on_error: ErrorSink) -> None:
    stats.rejected += 1
    for name, message in exc.errors.items():
        on_error(number, name, message)


def _parsed_chunks(
    path: Path,
    fmt: str,
    *,
    label: str,
    columns: tuple[str, ...],
    required: tuple[str, ...],
    parse: Callable[[Any, bool], Any],
    stats: ImportStats,
    on_error: ErrorSink,
    progress: bool | None,
    size: int,
) -> Iterator[list[tuple[int, Any]]]:
    """Stream a file's valid records as chunks of ``(line number, parsed record)``, with a
    progress bar; every unreadable or invalid line is counted in ``stats`` and reported to
    ``on_error``. The file stays open while the caller writes each chunk."""
    text = fmt == "csv"
    with _progress_bar(path, label, progress) as bar:
        lines, stream, tracker = _open_lines(path, fmt, columns=columns, required=required, bar=bar)
        with stream:
            chunk: list[tuple[int, Any]] = []
            for number, record, error in lines:
                stats.lines += 1
                if error is not None:
                    stats.rejected += 1
                    on_error(number, *error)
                    continue
                try:
                    chunk.append((number, parse(record, text)))
                except RecordError as exc:
                    _report_record_error(number, exc, stats, on_error)
                    continue
                if len(chunk) >= size:
                    yield chunk
                    chunk = []
            if chunk:
                yield chunk
            tracker.flush()


def _batched_import(
    path: Path,
    fmt: str,
    *,
    label: str,
    columns: tuple[str, ...],
    required: tuple[str, ...],
    parse: Callable[[Any, bool], Any],
    write: Callable[[list[Any]], IngestResult],
    on_error: ErrorSink,
    progress: bool | None,
    batch_size: int,
) -> ImportStats:
    stats = ImportStats()
    chunks = _parsed_chunks(
        path, fmt, label=label, columns=columns, required=required, parse=parse, stats=stats,
        on_error=on_error, progress=progress, size=batch_size,
    )  # fmt: skip
    for chunk in chunks:
        _apply(write([record for _, record in chunk]), [number for number, _ in chunk], stats, on_error)
    return stats


def import_customers(
    path: Path, *, fmt: str | None = None, on_error: ErrorSink, progress: bool | None = None, batch_size: int = 1000
) -> ImportStats:
    fmt = detect_format(path, fmt)
    return _batched_import(
        path,
        fmt,
        label="customers",
        columns=CUSTOMER_COLUMNS,
        required=("external_id",),
        parse=lambda record, text: parse_customer(record, text=text),
        write=lambda batch: customers_upsert(customers=batch),
        on_error=on_error,
        progress=progress,
        batch_size=batch_size,
    )


def import_memberships(
    path: Path, *, fmt: str | None = None, on_error: ErrorSink, progress: bool | None = None, batch_size: int = 1000
) -> ImportStats:
    fmt = detect_format(path, fmt)
    return _batched_import(
        path,
        fmt,
        label="memberships",
        columns=MEMBERSHIP_COLUMNS,
        required=("customer_id", "plan", "started_at", "expires_at"),
        parse=lambda record, text: parse_membership(record, text=text),
        write=lambda batch: memberships_upsert(memberships=batch),
        on_error=on_error,
        progress=progress,
        batch_size=batch_size,
    )


def import_events(
    path: Path,
    *,
    fmt: str | None = None,
    on_error: ErrorSink,
    progress: bool | None = None,
    unknown_customers: str | None = None,
    batch_size: int | None = None,
) -> ImportStats:
    fmt = detect_format(path, fmt)
    rule = unknown_customer_rule(unknown_customers)
    event_types = event_type_map()
    if connection.vendor == "postgresql":
        from segments.importing.postgres import COPY_CHUNK, copy_events

        return copy_events(
            path, fmt, event_types=event_types, rule=rule, on_error=on_error, progress=progress,
            chunk_size=batch_size or COPY_CHUNK,
        )  # fmt: skip
    if connection.vendor == "sqlite":
        from segments.importing.sqlite import SQLITE_CHUNK, insert_events

        return insert_events(
            path, fmt, event_types=event_types, rule=rule, on_error=on_error, progress=progress,
            chunk_size=batch_size or SQLITE_CHUNK,
        )  # fmt: skip
    return _batched_import(
        path,
        fmt,
        label="events",
        columns=EVENT_COLUMNS,
        required=("event_id", "customer_id", "type", "occurred_at"),
        parse=lambda record, text: parse_event(record, event_types=event_types, text=text),
        write=lambda batch: events_record(events=batch, unknown_customers=rule),
        on_error=on_error,
        progress=progress,
        batch_size=batch_size or 1000,
    )
