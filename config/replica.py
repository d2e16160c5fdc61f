"""Reading work on a streaming read replica: reports, the playbook, analytics and exports.

With ``DATABASE_REPLICA_URL`` set, the settings add a ``replica`` database alias and
``ReplicaRouter`` sends the reads made inside ``replica_reads`` (a decorator and a context
manager, put on those views) to it. Everything else reads and writes the primary: a read
model-wide on the replica would break read-your-writes (an API client creates an
experiment, then reads it back).

Freshness caveat: a streaming replica replays the primary's WAL a little later (usually
milliseconds, seconds under load, more while a long query on the replica holds replay
back). A report may miss the last seconds of events. Beyond
``DATABASE_REPLICA_MAX_LAG_SECONDS`` (5 s by default) the router reads the primary instead,
and it does so too when the replica cannot be reached (tried again after
``DATABASE_REPLICA_RETRY_SECONDS``, 30 s). The lag is measured at most every
``DATABASE_REPLICA_CHECK_SECONDS`` per process:

- the primary's ``pg_current_wal_lsn()`` is read first, then the replica's
  ``pg_last_wal_replay_lsn()``: a replica that replayed at least that far is fresh (lag 0),
  whatever the clock says (an idle primary writes nothing, so the last replayed
  transaction's age means nothing then);
- otherwise the lag is ``now() - pg_last_xact_replay_timestamp()`` on the replica: how
  long ago the newest replayed transaction committed, while newer ones wait. It
  overestimates after a quiet spell, which only means reading the primary for a moment.

PostgreSQL documentation, "Monitoring" (pg_stat_replication) and "Recovery Control
Functions"; the same two measurements as the manual's replication lag examples.

Inside a transaction on the primary every read stays on the primary (it must see the
transaction's own writes). Without the ``replica`` alias (the default, and the test suite
unless a test adds one) the router answers None and Django uses ``default`` as always.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import ContextDecorator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connections, transaction

logger = logging.getLogger(__name__)

REPLICA = "replica"
_reading: contextvars.ContextVar[bool] = contextvars.ContextVar("replica_reads", default=False)
# The alias a multi-statement read (reading_transaction) chose: all its reads stay on it.
_pinned: contextvars.ContextVar[str | None] = contextvars.ContextVar("replica_pinned", default=None)


class replica_reads(ContextDecorator):  # a decorator and a context manager, like transaction.atomic
    """Reads inside this block (or decorated function) may be served by the replica."""

    def _recreate_cm(self) -> replica_reads:
        return type(self)()  # one per call: a decorated view may run in several threads at once

    def __enter__(self) -> replica_reads:
        self._token = _reading.set(True)
        return self

    def __exit__(self, *exc: object) -> None:
        _reading.reset(self._token)


@dataclass(frozen=True)
class ReplicaStatus:
    usable: bool
    lag_seconds: float | None  # None: unknown (unreachable)
    reason: str
    checked_at: float  # time.monotonic()


_lock = threading.Lock()
_status: dict[str, ReplicaStatus] = {}


def replica_configured() -> bool:
    return REPLICA in connections.settings  # settings.DATABASES, as the connection handler holds it


def max_lag_seconds() -> float:
    return float(getattr(settings, "DATABASE_REPLICA_MAX_LAG_SECONDS", 5.0))


def check_every_seconds() -> float:
    return float(getattr(settings, "DATABASE_REPLICA_CHECK_SECONDS", 1.0))


def retry_unreachable_seconds() -> float:
    return float(getattr(settings, "DATABASE_REPLICA_RETRY_SECONDS", 30.0))


def _recheck_after(status: ReplicaStatus) -> float:
    # An unreachable replica is tried again less often: a try against a silent one waits
    # for the connect timeout (twice with libpq's sslmode=prefer: about 6 s at 3 s), which
    # the report that happens to try pays; measured every second, every report would.
    if status.lag_seconds is None and not status.usable:
        return max(check_every_seconds(), retry_unreachable_seconds())
    return check_every_seconds()


def _probe_replica(primary_lsn: str) -> tuple[bool, float | None]:
    """Ask the replica how far it has replayed, over a connection of its own opened for the
    question. Not the pooled ``replica`` connection: on a replica that stopped answering
    (a frozen VM or process, a network partition after connecting) a query on an open
    connection waits forever (the kernel keeps the socket alive; no client-side timeout
    exists), and Django's health check of a reused connection is such a query. A new
    connection gives up after ``connect_timeout``."""
    import psycopg  # PostgreSQL only, like the replica

    # Django's own parameters for the replica (OPTIONS with what is not libpq's removed,
    # service files, the adapters), on a connection Django does not pool.
    params = connections[REPLICA].get_connection_params()
    params.setdefault("connect_timeout", 3)
    try:
        with psycopg.connect(**params, autocommit=True) as probe:
            row = probe.execute(
                "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn, "
                "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float8",
                [primary_lsn],
            ).fetchone()
    except psycopg.Error as exc:
        raise DatabaseError(str(exc)) from exc
    assert row is not None
    return bool(row[0]), row[1]


def replica_lag_seconds() -> float:
    """The replica's lag behind the primary, in seconds (see the module docstring).
    Raises ``DatabaseError`` when either server cannot answer."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT pg_current_wal_lsn()::text")
        primary_lsn = cursor.fetchone()[0]
    caught_up, age = _probe_replica(primary_lsn)
    if caught_up:
        return 0.0
    if age is None:  # nothing replayed since the replica started: no way to know
        return float("inf")
    return max(0.0, float(age))


def replica_status(*, refresh: bool = False) -> ReplicaStatus:
    """Whether reading work may go to the replica now; measured at most every
    ``DATABASE_REPLICA_CHECK_SECONDS`` in this process."""
    now = time.monotonic()
    cached = _status.get(REPLICA)
    if cached is not None and not refresh and now - cached.checked_at < _recheck_after(cached):
        return cached
    with _lock:
        try:
            lag = replica_lag_seconds()
        except DatabaseError as exc:
            logger.warning("read replica unavailable, reading the primary: %r", exc)
            connections[REPLICA].close()
            status = ReplicaStatus(False, None, f"unreachable: {exc.__class__.__name__}", now)
        else:
            bound = max_lag_seconds()
            if lag > bound:
                logger.warning("read replica %.1f s behind (bound %.1f s), reading the primary", lag, bound)
                status = ReplicaStatus(False, lag, f"lag {lag:.1f} s > {bound:g} s", now)
            else:
                status = ReplicaStatus(True, lag, "fresh", now)
        _status[REPLICA] = status
    return status


def _read_alias() -> str | None:
    pinned = _pinned.get()
    if pinned is not None:
        return pinned
    if not _reading.get() or not replica_configured():
        return None
    if connections["default"].in_atomic_block:
        return None  # the transaction's own writes are on the primary only
    return REPLICA if replica_status().usable else None


def reading_alias() -> str:
    """Where a read made now goes: the replica inside ``replica_reads`` while it is fresh,
    else ``default``. For raw SQL (``reading_connection``), which routers never see."""
    return _read_alias() or "default"


def reading_connection() -> Any:
    """The connection for a raw-SQL read (aggregations, analytics statements)."""
    return connections[reading_alias()]


@contextlib.contextmanager
def reading_transaction() -> Iterator[str]:
    """One transaction, on the reading alias chosen once, for reads that must see one
    snapshot (several statements of one report); every read inside goes to that alias,
    raw SQL through ``reading_connection`` and the ORM through the router. A standby
    serves read-only transactions."""
    alias = reading_alias()
    token = _pinned.set(alias)
    try:
        with transaction.atomic(using=alias):
            yield alias
    finally:
        _pinned.reset(token)


class ReplicaRouter:
    """``DATABASE_ROUTERS``: reads inside ``replica_reads`` go to a fresh replica; writes
    and migrations always to ``default``."""

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return _read_alias()

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return "default"

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        return True  # one database, two copies of it

    def allow_migrate(self, db: str, app_label: str, model_name: str | None = None, **hints: Any) -> bool | None:
        return db != REPLICA


def replica_status_forget() -> None:
    """Forget the measured status: the next read measures again."""
    _status.clear()
