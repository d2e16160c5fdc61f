"""Monthly partitions of the events table on PostgreSQL (layout: migration 0006).

Hand-written rather than pg_partman: Debian ships ``postgresql-15-partman``, but the whole
job here is a handful of statements (create next months' partitions, detach old ones),
managed hosts do not all offer the extension, and the test suite's throwaway PostgreSQL
would need it installed as root. These functions are a no-op on SQLite (one table).

- :func:`event_partitions_ensure` (daily beat task) creates the monthly partitions from
  this month to ``ahead`` months on, and those of past months the default partition holds
  rows of (an import of history). A new month is built as a plain table and attached
  (``ATTACH PARTITION`` takes a SHARE UPDATE EXCLUSIVE lock on the parent, so ingestion
  keeps running, where ``CREATE TABLE … PARTITION OF`` would block it); rows the default
  partition caught for that month move into it first.
- :func:`event_partitions_archive` detaches every monthly partition that ends on or
  before a month, writes each one to ``<directory>/<partition>.csv.gz`` with ``COPY`` and
  drops it. The event keys stay (see the migration): a re-sent archived event is still a
  duplicate.
"""

from __future__ import annotations

import datetime as dt
import gzip
import os
import re
from dataclasses import dataclass
from pathlib import Path

from django.db import connection, transaction
from django.utils import timezone

PARENT = "segments_event"
DEFAULT = "segments_event_default"
EVENT_KEYS = "segments_event_key"
PARTITION_NAME = re.compile(r"^segments_event_p(\d{4})(\d{2})$")
AHEAD_MONTHS = 3
# Around a statement that claims its rows' event ids in the key table itself (``WITH
# claimed AS (INSERT INTO segments_event_key … ON CONFLICT DO NOTHING RETURNING event_id)
# INSERT INTO segments_event … JOIN claimed``), so the key trigger does not claim them again
# (migration 0006). Transaction-local: an error rolls the setting back with the rest.
KEYS_CLAIMED_SQL = "SELECT set_config('segments.event_keys', 'claimed', true)"
KEYS_UNCLAIMED_SQL = "SELECT set_config('segments.event_keys', '', true)"
# Any two writers of partitions (two beat ticks, a tick and the archive command) take turns.
_LOCK_KEY = 0x5E6E7001


@dataclass(frozen=True)
class EventPartition:
    name: str
    month: dt.date  # first day of the month (UTC) it holds
    rows_estimate: int


@dataclass(frozen=True)
class ArchivedPartition:
    name: str
    month: dt.date
    rows: int
    path: Path


def month_start(value: dt.date) -> dt.date:
    return value.replace(day=1)


def next_month(value: dt.date) -> dt.date:
    return (value.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def partition_name(month: dt.date) -> str:
    return f"{PARENT}_p{month:%Y%m}"


def _bound(month: dt.date) -> str:
    return f"{month:%Y-%m-%d} 00:00:00+00"


def is_partitioned() -> bool:
    if connection.vendor != "postgresql":
        return False
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [PARENT])
        row = cursor.fetchone()
    return row is not None and row[0] == "p"


def default_partition_rows() -> int:
    """Events no monthly partition holds (exact count: normally a handful of far-future
    events; imported history until the daily task splits it into months)."""
    if not is_partitioned():
        return 0
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {DEFAULT}")
        return int(cursor.fetchone()[0])


def event_partitions() -> list[EventPartition]:
    """The attached monthly partitions, oldest first (the default partition is not listed)."""
    if not is_partitioned():
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.reltuples::bigint FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = %s::regclass",
            [PARENT],
        )
        rows = cursor.fetchall()
    found = []
    for name, tuples in rows:
        match = PARTITION_NAME.match(name)
        if match:
            found.append(EventPartition(name, dt.date(int(match[1]), int(match[2]), 1), max(int(tuples), 0)))
    return sorted(found, key=lambda p: p.month)


@transaction.atomic
def event_partitions_ensure(*, ahead: int = AHEAD_MONTHS, today: dt.date | None = None) -> list[str]:
    """Create the monthly partitions from this month to ``ahead`` months on that do not
    exist yet, and one for every earlier month the default partition holds events of
    (moved in); return the names created. Idempotent; a no-op on SQLite."""
    if not is_partitioned():
        return []
    today = today or timezone.now().astimezone(dt.UTC).date()
    existing = {p.month for p in event_partitions()}
    months, month = [], month_start(today)
    for _ in range(ahead + 1):
        months.append(month)
        month = next_month(month)
    created = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
        # Past months the default partition caught get their partitions too: the migration
        # made partitions only from the oldest event then (none on a fresh install), so an
        # import of history (the demo's 18 months) landed wholly in the default partition,
        # where the month bounds prune nothing and archive_events could not reach it.
        cursor.execute(
            f"SELECT DISTINCT date_trunc('month', occurred_at AT TIME ZONE 'UTC')::date FROM {DEFAULT} "
            "WHERE occurred_at < %s",
            [_bound(months[0])],
        )
        months = sorted({row[0] for row in cursor.fetchall()}) + months
        for month in months:
            if month in existing:
                continue
            name, low, high = partition_name(month), _bound(month), _bound(next_month(month))
            like = f"LIKE {PARENT} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
            cursor.execute(f"CREATE TABLE IF NOT EXISTS {name} ({like})")
            # Rows the default partition took for this month move in. Statement triggers of
            # the parent do not fire for a partition's own rows: their keys stay claimed.
            cursor.execute(
                f"WITH moved AS (DELETE FROM {DEFAULT} WHERE occurred_at >= %s AND occurred_at < %s RETURNING *) "
                f"INSERT INTO {name} SELECT * FROM moved",
                [low, high],
            )
            cursor.execute(f"ALTER TABLE {PARENT} ATTACH PARTITION {name} FOR VALUES FROM (%s) TO (%s)", [low, high])
            created.append(name)
    return created


def event_partitions_archive(*, before: dt.date, directory: Path, drop: bool = True) -> list[ArchivedPartition]:
    """Detach every monthly partition whose month ends on or before ``before`` (a month's
    first day, not later than this month), write it to ``<directory>/<name>.csv.gz``
    (CSV with a header, ``COPY``'s own format) and drop it unless ``drop`` is False (then
    the detached table stays, outside the events table). One partition per transaction:
    a failure leaves the partitions not yet handled attached."""
    if not is_partitioned():
        return []
    before = month_start(before)
    this_month = month_start(timezone.now().astimezone(dt.UTC).date())
    if before > this_month:
        raise ValueError(f"Refusing to archive this month or later: {before:%Y-%m} is after {this_month:%Y-%m}.")
    directory.mkdir(parents=True, exist_ok=True)
    # Old months still in the default partition (imported history the daily task has not
    # split out yet) get their own partitions first, or they would silently stay behind.
    event_partitions_ensure()
    archived = []
    for partition in event_partitions():
        if partition.month >= before:
            break
        path = directory / f"{partition.name}.csv.gz"
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK_KEY])
            # Deferred foreign-key checks of rows written earlier in this transaction (if the
            # caller holds one) would block the DROP: run them now.
            cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cursor.execute(f"ALTER TABLE {PARENT} DETACH PARTITION {partition.name}")
            cursor.execute(f"SELECT count(*) FROM {partition.name}")
            rows = int(cursor.fetchone()[0])
            partial = path.with_suffix(".partial")
            with open(partial, "wb") as raw:
                with gzip.GzipFile(fileobj=raw, mode="wb") as out:
                    with cursor.copy(f"COPY {partition.name} TO STDOUT (FORMAT csv, HEADER)") as copy:
                        for block in copy:
                            out.write(block)
                raw.flush()
                os.fsync(raw.fileno())
            # The file is complete and on disk before the table goes.
            os.replace(partial, path)
            if drop:
                cursor.execute(f"DROP TABLE {partition.name}")
        archived.append(ArchivedPartition(partition.name, partition.month, rows, path))
    return archived
