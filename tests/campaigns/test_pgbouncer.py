"""The delivery path behind PgBouncer in transaction pooling mode (Debian's pgbouncer,
started on loopback by scripts/services.sh): every transaction may run on another server
connection, so nothing may rely on session state."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import pytest
from django.db import connection
from django.db.models import Count

from campaigns.models import AudienceBatch, Campaign, Delivery
from campaigns.services import lifecycle
from campaigns.services.delivery import claim_token
from campaigns.tasks import campaigns_tick
from tests.campaigns.builders import campaign, customers, run_broadcast, send_pending
from tests.campaigns.peers import database_url
from tests.pgservers import default_connection_on, pgbouncer_port, pgbouncer_release, warm_pool

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]


@pytest.fixture
def bouncer(settings) -> Iterator[int]:  # type: ignore[no-untyped-def]
    db = dict(connection.settings_dict)
    port = pgbouncer_port(db)
    warm_pool(db, port=port)
    settings.DATABASE_TRANSACTION_POOLING = True
    yield port
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


def _mark_function_calls() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions WHERE funcname = 'campaigns_delivery_mark_sent'"
        )
        return int(cursor.fetchone()[0])


def test_deliveries_send__behind_transaction_pooling__marks_through_the_plan_cached_function(  # type: ignore[no-untyped-def]
    bouncer, no_caps, smtp_sink
) -> None:
    # Given the server counting PL/pgSQL calls in new sessions, and PgBouncer's server
    # connections opened afresh (they take the setting)
    db = dict(connection.settings_dict)
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER DATABASE \"{db['NAME']}\" SET track_functions = 'pl'")
    try:
        pgbouncer_release(db, port=bouncer)
        before = _mark_function_calls()
        with default_connection_on(bouncer):
            customers(12)
            row = campaign(key="pooled-function")
            run_broadcast(row)
            # When they are sent through PgBouncer
            report = send_pending(row)
        # Then each acceptance was recorded by the function (counted once its sessions end)
        pgbouncer_release(db, port=bouncer)
        deadline = time.monotonic() + 10
        while _mark_function_calls() - before < 12 and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f'ALTER DATABASE "{db["NAME"]}" RESET track_functions')
    assert report.sent == 12 and len(smtp_sink.unique) == 12
    assert Delivery.objects.filter(campaign=row, status="sent").count() == 12
    assert _mark_function_calls() - before == 12


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
