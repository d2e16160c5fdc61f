"""Recomputes behind PgBouncer in transaction pooling mode: the guard cannot be a session
advisory lock (taken on one server connection, released on another, or never)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection

from segments.models import RecomputeRun
from segments.services.recompute import segment_recompute
from segments.services.segments import segment_create
from tests.pgservers import conninfo, default_connection_on, pgbouncer_port, pgbouncer_release, warm_pool

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]
RULE = {"event": "order", "agg": "count", "window": {"last_days": 30}, "op": "gte", "value": 1}


@pytest.fixture
def bouncer(settings) -> Iterator[int]:  # type: ignore[no-untyped-def]
    db = dict(connection.settings_dict)
    port = pgbouncer_port(db)
    warm_pool(db, port=port)
    settings.DATABASE_TRANSACTION_POOLING = True
    yield port
    pgbouncer_release(db, port=port)


def _advisory_locks() -> int:
    direct = dict(connection.settings_dict)
    with psycopg.connect(**conninfo(direct, port=direct["PORT"]), autocommit=True) as observer:
        row = observer.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND a.datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else -1


def test_segment_recompute__behind_transaction_pooling__succeeds_twice_and_leaves_no_lock(bouncer) -> None:  # type: ignore[no-untyped-def]
    with default_connection_on(bouncer):
        segment = segment_create(key="pooled", name="Pooled", rule=RULE)
        first = segment_recompute(segment_id=segment.pk)
        second = segment_recompute(segment_id=segment.pk)
    assert (first.status, second.status) == ("succeeded", "succeeded"), (first, second)
    assert list(RecomputeRun.objects.filter(target="segment:pooled").values_list("status", flat=True)) == [
        "succeeded",
        "succeeded",
    ]
    # No advisory lock is left on any of PgBouncer's server connections
    assert _advisory_locks() == 0
