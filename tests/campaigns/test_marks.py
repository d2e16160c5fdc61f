"""Recording provider acceptances as ``sent`` on PostgreSQL, where the statement is sent
asynchronously (libpq) and read back before the next message is handed over: the in-doubt
window stays one message, Django's connection is never used while a mark is pending, and a
mark whose asynchronous statement fails is recorded synchronously instead."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from campaigns.models import Delivery
from campaigns.services.delivery import _SentMarks, deliveries_claim, deliveries_send
from tests.campaigns.builders import campaign, customers, run_broadcast

pytestmark = pytest.mark.postgres


def _one_claimed(worker: str) -> Delivery:
    customers(1)
    row = campaign()
    run_broadcast(row)
    delivery = Delivery.objects.get(campaign=row)
    assert deliveries_claim(delivery_ids=[delivery.pk], worker=worker, now=timezone.now()) == [delivery.pk]
    return delivery


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_deliveries_send__each_acceptance__every_earlier_one_already_committed_as_sent(no_caps, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    customers(15)
    row = campaign()
    run_broadcast(row)
    pks = dict(Delivery.objects.filter(campaign=row, status="pending").values_list("key", "pk"))
    ids = list(pks.values())
    assert len(ids) == 15
    params = {k: v for k, v in connection.get_connection_params().items() if k != "cursor_factory"}
    observer = psycopg.connect(**params, autocommit=True)
    seen: list[tuple[int, int]] = []  # (messages accepted before this one, rows committed as sent)

    def hold(pk: int, locked: threading.Event) -> None:
        # Delays the sender's "sent" statement for this row by 0.1 s: a sender that handed the
        # next message over without waiting for it would be caught by the next check.
        with psycopg.connect(**params) as locker:
            locker.execute("SELECT 1 FROM campaigns_delivery WHERE id = %s FOR UPDATE", [pk])
            locked.set()
            time.sleep(0.1)

    holders: list[threading.Thread] = []

    def before_accept(key: str) -> None:  # in the SMTP server's thread, before its "250"
        recorded = observer.execute(
            "SELECT count(*) FROM campaigns_delivery WHERE id = ANY(%s) AND status = 'sent'", [ids]
        ).fetchone()
        seen.append((smtp_sink.total, recorded[0] if recorded else -1))
        locked = threading.Event()
        holders.append(threading.Thread(target=hold, args=(pks[key], locked)))
        holders[-1].start()
        locked.wait(5)

    smtp_sink.before_accept = before_accept
    try:
        report = deliveries_send(delivery_ids=ids, worker="w:1")
    finally:
        for holder in holders:
            holder.join(5)
        observer.close()
    assert report.sent == 15 and Delivery.objects.filter(pk__in=ids, status="sent").count() == 15
    # When the server is about to accept message n, the n earlier acceptances are all
    # committed: the only acceptance ever unrecorded is the one in flight.
    assert seen == [(n, n) for n in range(15)]


@pytest.mark.django_db
def test_sent_marks__query_while_a_mark_is_pending__the_mark_is_read_first(no_caps) -> None:  # type: ignore[no-untyped-def]
    delivery = _one_claimed("w:1")
    marks = _SentMarks("w:1")
    with connection.execute_wrapper(marks.guard):
        marks.record(delivery.pk, delivery.key, "<ref@test>")
        assert marks.pending is not None  # really asynchronous here
        row = Delivery.objects.get(pk=delivery.pk)  # would fail on a busy connection without the guard
    assert marks.pending is None
    assert (row.status, row.provider_ref, row.lease_until) == ("sent", "<ref@test>", None)


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_sent_marks__connection_closed_while_pending__recorded_on_a_new_connection(no_caps, caplog) -> None:  # type: ignore[no-untyped-def]
    delivery = _one_claimed("w:1")
    marks = _SentMarks("w:1")
    marks.record(delivery.pk, delivery.key, "<ref@test>")
    assert marks.pending is not None
    connection.close()  # e.g. dropped by the server: the answer is lost
    marks.wait()
    assert Delivery.objects.get(pk=delivery.pk).status == "sent"
    assert "recording it synchronously" in caplog.text
    assert "claim was taken over" not in caplog.text  # the first statement landed, or the second did


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_sent_marks__statement_gone_from_the_session__recorded_synchronously(no_caps, caplog) -> None:  # type: ignore[no-untyped-def]
    customers(2)
    row = campaign()
    run_broadcast(row)
    deliveries = list(Delivery.objects.filter(campaign=row).order_by("customer_id"))
    deliveries_claim(delivery_ids=[d.pk for d in deliveries], worker="w:1", now=timezone.now())
    marks = _SentMarks("w:1")
    marks.record(deliveries[0].pk, deliveries[0].key, "<a@test>")  # prepares the statement on this session
    marks.wait()
    with connection.cursor() as cursor:
        cursor.execute("DEALLOCATE ALL")  # what a pooler resetting the session does
    marks.record(deliveries[1].pk, deliveries[1].key, "<b@test>")  # fails on the server...
    marks.wait()  # ...and is recorded synchronously
    assert dict(Delivery.objects.filter(campaign=row).values_list("provider_ref", "status")) == {
        "<a@test>": "sent",
        "<b@test>": "sent",
    }
    assert "does not exist" in caplog.text and "recording it synchronously" in caplog.text
