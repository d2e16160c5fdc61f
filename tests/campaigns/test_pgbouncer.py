"""The delivery path behind PgBouncer in transaction pooling mode (Debian's pgbouncer,
started on loopback by scripts/services.sh): every transaction may run on another server
connection, so nothing may rely on session state."""

from __future__ import annotations

import contextlib
import importlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.db.models import Count

from campaigns.models import AudienceBatch, Campaign, Delivery
from campaigns.services import delivery, lifecycle
from campaigns.services.delivery import claim_token
from campaigns.tasks import campaigns_tick
from tests.campaigns.builders import campaign, customers, run_broadcast, send_pending
from tests.campaigns.peers import database_url
from tests.pgservers import default_connection_on, pgbouncer_port, pgbouncer_release, warm_pool

prepare_mark_migration = importlib.import_module("campaigns.migrations.0009_delivery_prepare_mark_function")

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def bouncer(settings) -> Iterator[int]:  # type: ignore[no-untyped-def]
    db = dict(connection.settings_dict)
    port = pgbouncer_port(db)
    warm_pool(db, port=port)
    settings.DATABASE_TRANSACTION_POOLING = True
    delivery._POOLED_EXECUTE["off_until"] = 0.0
    yield port
    delivery._POOLED_EXECUTE["off_until"] = 0.0
    pgbouncer_release(db, port=port)


def test_deliveries_send__behind_transaction_pooling__every_mark_asynchronous_no_fallback(  # type: ignore[no-untyped-def]
    bouncer, no_caps, smtp_sink, caplog
) -> None:
    # Given 30 pending emails, decided through PgBouncer
    with default_connection_on(bouncer):
        customers(30)
        row = campaign(key="pooled")
        run_broadcast(row)
        # When they are sent through it (server connections handed out in turn)
        with caplog.at_level(logging.WARNING, logger="campaigns.services.delivery"):
            report = send_pending(row)
    # Then every acceptance is recorded once, by the asynchronous mark (no synchronous fallback)
    assert report.sent == 30 and smtp_sink.total == 30 and len(smtp_sink.unique) == 30
    assert Delivery.objects.filter(campaign=row, status="sent").count() == 30
    fallbacks = [r.getMessage() for r in caplog.records if "asynchronously failed" in r.getMessage()]
    assert fallbacks == []


def test_claim_token__behind_transaction_pooling__not_keyed_by_a_server_session(bouncer) -> None:  # type: ignore[no-untyped-def]
    # A server connection outlives (and is shared by) clients: a claim keyed by it would be
    # released by the tick while its worker still sends, or kept after the worker died.
    with default_connection_on(bouncer):
        assert claim_token("host:123") == "host:123"


def test_worker__database_behind_pgbouncer__campaign_sent_once(  # type: ignore[no-untyped-def]
    bouncer, worker_factory, smtp_sink, no_caps
) -> None:
    # Given a real worker whose DATABASE_URL is PgBouncer (transaction pooling)
    pooled_url = database_url({**connection.settings_dict, "PORT": bouncer})
    worker = worker_factory(concurrency=2, DATABASE_URL=pooled_url, DATABASE_TRANSACTION_POOLING="true")
    customers(200)
    row = campaign(key="pooled-worker")
    # When a campaign launches
    lifecycle.campaign_launch(campaign=row)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        done = Campaign.objects.filter(pk=row.pk, audience_resolved_at__isnull=False).exists()
        undecided = AudienceBatch.objects.filter(campaign=row, done_at__isnull=True).exists()
        if done and not undecided and not Delivery.objects.filter(campaign=row).exclude(status="sent").exists():
            break
        campaigns_tick.delay()
        time.sleep(1)
    # Then every message is sent once, with no synchronous fallback in the worker
    statuses = dict(Delivery.objects.filter(campaign=row).values_list("status").annotate(n=Count("pk")))
    assert statuses == {"sent": 200}, statuses
    assert smtp_sink.total == 200 and len(smtp_sink.unique) == 200
    assert "asynchronously failed" not in worker.log()


def _function_calls(name: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = %s", [name])
        return int(cursor.fetchone()[0])


@contextlib.contextmanager
def _functions_counted(port: int) -> Iterator[None]:
    """The server counts PL/pgSQL calls in the test database's new sessions; PgBouncer's
    server connections are opened afresh on entry (they take the setting) and closed on exit
    (their counts are reported when their sessions end)."""
    db = dict(connection.settings_dict)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE \"{db['NAME']}\" SET track_functions = 'pl'")
    try:
        pgbouncer_release(db, port=port)
        yield
        pgbouncer_release(db, port=port)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{db["NAME"]}" RESET track_functions')


def _counted(name: str, at_least: int, before: int) -> int:
    deadline = time.monotonic() + 10
    while (calls := _function_calls(name) - before) < at_least and time.monotonic() < deadline:
        time.sleep(0.2)
    return calls


def _send_twelve(port: int, key: str, caplog: pytest.LogCaptureFixture) -> tuple[Campaign, Any]:
    """12 emails decided and sent through PgBouncer on fresh server connections that count
    PL/pgSQL calls, the delivery module's warnings captured."""
    with _functions_counted(port), default_connection_on(port):
        customers(12)
        row = campaign(key=key)
        run_broadcast(row)
        with caplog.at_level(logging.WARNING, logger="campaigns.services.delivery"):
            return row, send_pending(row)


def test_deliveries_send__behind_transaction_pooling__marks_by_the_statement_pgbouncer_prepared(  # type: ignore[no-untyped-def]
    bouncer, no_caps, smtp_sink, caplog
) -> None:
    # Given PgBouncer's connect_query (scripts/services.sh) preparing the mark on each server
    # connection it opens
    before_mark, before_prepare = (
        _function_calls("campaigns_delivery_mark_sent"),
        _function_calls("campaigns_delivery_prepare_mark"),
    )
    # When 12 emails are sent through it
    row, report = _send_twelve(bouncer, "pooled-execute", caplog)
    # Then each acceptance is recorded by EXECUTE of that statement: the server connections
    # prepared it, no mark went through the fallback function, none was recorded synchronously
    assert report.sent == 12 and len(smtp_sink.unique) == 12
    assert Delivery.objects.filter(campaign=row, status="sent").count() == 12
    assert _counted("campaigns_delivery_prepare_mark", 1, before_prepare) >= 1
    assert _function_calls("campaigns_delivery_mark_sent") - before_mark == 0
    assert not [r for r in caplog.records if "asynchronously failed" in r.getMessage()]


def test_deliveries_send__pgbouncer_without_the_connect_query__first_mark_synchronous_then_the_function(  # type: ignore[no-untyped-def]
    bouncer, no_caps, smtp_sink, caplog
) -> None:
    # Given server connections that lack the prepared mark (PgBouncer configured without the
    # connect_query: here the function it calls is gone, so its call fails and is ignored)
    with connection.cursor() as cursor:
        cursor.execute("DROP FUNCTION campaigns_delivery_prepare_mark()")
    before = _function_calls("campaigns_delivery_mark_sent")
    try:
        # When 12 emails are sent through it
        row, report = _send_twelve(bouncer, "pooled-no-statement", caplog)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(prepare_mark_migration.FUNCTION)
    # Then every message is sent and recorded once: the first mark's EXECUTE failed and was
    # recorded synchronously, and this process sent the other 11 as the function call
    assert report.sent == 12 and smtp_sink.total == 12 and len(smtp_sink.unique) == 12
    assert Delivery.objects.filter(campaign=row, status="sent").count() == 12
    fallbacks = [r.getMessage() for r in caplog.records if "asynchronously failed" in r.getMessage()]
    assert len(fallbacks) == 1, fallbacks
    assert _counted("campaigns_delivery_mark_sent", 11, before) == 11


def test_mark_sent_function__claims_of_this_worker_or_pending__marked_others_untouched(  # type: ignore[no-untyped-def]
    no_caps,
) -> None:
    # Given four deliveries: claimed by this worker, by another, pending, already failed
    customers(4)
    row = campaign(key="mark-function")
    run_broadcast(row)
    ids = list(Delivery.objects.filter(campaign=row).order_by("pk").values_list("pk", flat=True))
    Delivery.objects.filter(pk=ids[0]).update(status="sending", claimed_by="w:1")
    Delivery.objects.filter(pk=ids[1]).update(status="sending", claimed_by="w:2")
    Delivery.objects.filter(pk=ids[3]).update(status="failed", reason="permanent_error", claimed_by="w:1")
    # When the mark function records each as sent by w:1
    updated = []
    with connection.cursor() as cursor:
        for pk in ids:
            cursor.execute(
                "SELECT campaigns_delivery_mark_sent('sent', now(), 'ref', %s, 'sending', 'w:1', 'pending')", [pk]
            )
            updated.append(cursor.fetchone()[0])
    # Then only w:1's claim and the pending row are marked, and it says so
    assert updated == [1, 0, 1, 0]
    statuses = dict(Delivery.objects.filter(pk__in=ids).values_list("pk", "status"))
    assert [statuses[pk] for pk in ids] == ["sent", "sending", "sent", "failed"]
    assert Delivery.objects.get(pk=ids[0]).provider_ref == "ref"


def test_pgbouncer__started_by_services_script__reaches_postgresql_over_its_unix_socket(bouncer) -> None:  # type: ignore[no-untyped-def]
    # PgBouncer runs on the database host in production: its half of the hop is the socket.
    with default_connection_on(bouncer), connection.cursor() as cursor:
        cursor.execute("SELECT inet_server_addr() IS NULL")
        assert cursor.fetchone()[0] is True
