"""Sending through real local peers (aiosmtpd, an HTTP provider in a thread), in this
process: idempotent claims, retries with backoff, permanent failures, Retry-After, leases,
quiet-hours release, pause/resume/finish."""

from __future__ import annotations

import datetime as dt
import email
import itertools
import os
import subprocess
import time

import pytest
import time_machine
from django.utils import timezone

from campaigns.models import Delivery
from campaigns.services import lifecycle, outbox
from campaigns.services.decide import Target, recipients_decide
from campaigns.services.delivery import deliveries_claim, deliveries_send, retry_delay
from tests.campaigns.builders import campaign, customers, run_broadcast, send_pending
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _sms_customer(**fields):  # type: ignore[no-untyped-def]
    return CustomerFactory(email="", phone="+33612345678", sms_consent_at=timezone.now(), **fields)


def _sms_delivery(provider_script=None, **campaign_fields):  # type: ignore[no-untyped-def]
    person = _sms_customer()
    row = campaign(key="sms", channels=("sms",), **campaign_fields)
    lifecycle.campaign_launch(campaign=row)
    recipients_decide(campaign=row, targets=[Target(person.pk, "broadcast")])
    return row, Delivery.objects.get(campaign=row)


def test_email__sent_over_smtp__delivery_key_in_message_id_and_header(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    customers(3)
    row = campaign(
        contents={"email": {"subject": "Hi", "text": "Code {{ coupon.code }}", "html": "<b>{{ coupon.code }}</b>"}}
    )
    run_broadcast(row)
    report = send_pending(row)
    assert report.sent == 3
    keys = set(Delivery.objects.filter(campaign=row, status="sent").values_list("key", flat=True))
    assert smtp_sink.unique == keys and smtp_sink.total == 3
    message = email.message_from_bytes(smtp_sink.messages[0])
    assert message["Message-ID"] == f"<{message['X-Delivery-Key']}@growth.local>"
    assert message.is_multipart()


def test_deliveries_send__same_ids_twice__sent_once(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    customers(4)
    row = campaign()
    run_broadcast(row)
    ids = list(Delivery.objects.filter(campaign=row).values_list("pk", flat=True))
    first = deliveries_send(delivery_ids=ids, worker="w:1")
    second = deliveries_send(delivery_ids=ids, worker="w:2")
    assert (first.sent, second.claimed) == (4, 0)
    assert smtp_sink.total == 4 and not smtp_sink.duplicates()


def test_deliveries_claim__concurrent_claimers__each_row_once(no_caps: None) -> None:
    customers(10)
    row = campaign()
    run_broadcast(row)
    ids = list(Delivery.objects.filter(campaign=row).values_list("pk", flat=True))
    now = timezone.now()
    first = deliveries_claim(delivery_ids=ids[:7], worker="a:1", now=now)
    second = deliveries_claim(delivery_ids=ids, worker="b:1", now=now)
    assert set(first).isdisjoint(second) and set(first) | set(second) == set(ids)


def test_smtp_permanent_refusal__failed_with_reason_no_retry(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    person = CustomerFactory(email="gone@example.com")
    smtp_sink.refuse["gone@example.com"] = "550 5.1.1 No such user"
    row = campaign()
    lifecycle.campaign_launch(campaign=row)
    recipients_decide(campaign=row, targets=[Target(person.pk, "broadcast")])
    send_pending(row)
    delivery = Delivery.objects.get(campaign=row)
    assert (delivery.status, delivery.reason, delivery.attempts) == ("failed", "permanent_error", 1)
    assert "550" in delivery.last_error


def test_smtp_server_down__transient_retry_scheduled(no_caps: None, settings, fast_retries) -> None:  # type: ignore[no-untyped-def]
    from tests.campaigns.peers import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    customers(1)
    row = campaign()
    run_broadcast(row)
    report = send_pending(row)
    delivery = Delivery.objects.get(campaign=row)
    assert report.retried == 1
    assert (delivery.status, delivery.attempts) == (
        "pending",
        1,
    ) and delivery.not_before > timezone.now() - dt.timedelta(seconds=1)


def test_provider_503_three_times_then_200__one_delivery_after_retries(
    no_caps: None, http_provider, fast_retries
) -> None:  # type: ignore[no-untyped-def]
    _, delivery = _sms_delivery()
    http_provider.script[delivery.key] = [(503, {})] * 3
    for _ in range(10):
        deliveries_send(delivery_ids=[delivery.pk], worker="w:1")
        delivery.refresh_from_db()
        if delivery.status != "pending":
            break
        time.sleep(max(0.0, (delivery.not_before - timezone.now()).total_seconds()) + 0.01)
    assert (delivery.status, delivery.attempts) == ("sent", 4)
    attempts = http_provider.attempts(delivery.key)
    assert [a["headers"]["Idempotency-Key"] for a in attempts] == [delivery.key] * 4
    assert attempts[0]["headers"]["Authorization"] == "Bearer test-token"
    assert http_provider.delivered[delivery.key] == 1
    gaps = [b["at"] - a["at"] for a, b in itertools.pairwise(attempts)]
    assert all(gap > 0.02 for gap in gaps)  # backed off between tries


def test_provider_400__failed_without_retry(no_caps: None, http_provider) -> None:  # type: ignore[no-untyped-def]
    _, delivery = _sms_delivery()
    http_provider.script[delivery.key] = [(400, {})]
    report = deliveries_send(delivery_ids=[delivery.pk], worker="w:1")
    delivery.refresh_from_db()
    assert (report.failed, delivery.status, delivery.reason, delivery.attempts) == (1, "failed", "permanent_error", 1)
    assert "400" in delivery.last_error
    assert deliveries_send(delivery_ids=[delivery.pk], worker="w:1").claimed == 0
    assert len(http_provider.attempts(delivery.key)) == 1


def test_provider_429_retry_after__next_try_waits(no_caps: None, http_provider, fast_retries) -> None:  # type: ignore[no-untyped-def]
    _, delivery = _sms_delivery()
    http_provider.script[delivery.key] = [(429, {"Retry-After": "1"})]
    before = timezone.now()
    deliveries_send(delivery_ids=[delivery.pk], worker="w:1")
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.not_before >= before + dt.timedelta(seconds=1)
    assert deliveries_send(delivery_ids=[delivery.pk], worker="w:1").claimed == 0  # not due yet
    time.sleep(max(0.0, (delivery.not_before - timezone.now()).total_seconds()) + 0.05)
    assert deliveries_send(delivery_ids=[delivery.pk], worker="w:1").sent == 1
    attempts = http_provider.attempts(delivery.key)
    assert attempts[1]["at"] - attempts[0]["at"] >= 1.0


def test_transient_errors__out_of_tries__failed_gave_up(no_caps: None, http_provider, fast_retries) -> None:  # type: ignore[no-untyped-def]
    _, delivery = _sms_delivery(max_attempts=2)
    http_provider.script[delivery.key] = [(500, {})] * 5
    deliveries_send(delivery_ids=[delivery.pk], worker="w:1")
    Delivery.objects.filter(pk=delivery.pk).update(not_before=None)
    deliveries_send(delivery_ids=[delivery.pk], worker="w:1")
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason, delivery.attempts) == ("failed", "gave_up", 2)
    assert "Try 2/2" in delivery.last_error


@pytest.mark.pure
def test_retry_delay__exponential_with_jitter_and_retry_after(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CAMPAIGNS = {"RETRY_BASE_SECONDS": "10", "RETRY_MAX_SECONDS": "100"}
    for attempts, ceiling in ((1, 10), (2, 20), (3, 40), (6, 100)):
        delays = [retry_delay(attempts=attempts) for _ in range(50)]
        assert all(ceiling / 2 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 1
    assert retry_delay(attempts=1, retry_after=60) >= 60


def test_sweep__expired_lease__in_doubt_row_resent_with_same_key(no_caps: None, smtp_sink, settings) -> None:  # type: ignore[no-untyped-def]
    customers(2)
    row = campaign()
    run_broadcast(row)
    ids = list(Delivery.objects.filter(campaign=row).values_list("pk", flat=True))
    # A worker claims the rows and dies before finishing.
    deliveries_claim(delivery_ids=ids, worker="dead:1", now=timezone.now() - dt.timedelta(hours=1))
    assert outbox.outbox_sweep(now=timezone.now() + dt.timedelta(hours=1)).released == 2
    assert deliveries_send(delivery_ids=ids, worker="w:1").sent == 2
    assert smtp_sink.unique == set(Delivery.objects.filter(pk__in=ids).values_list("key", flat=True))
    assert set(Delivery.objects.filter(pk__in=ids).values_list("attempts", flat=True)) == {2}


def test_release_dead_claims__dead_pid__released_live_pid_kept(no_caps: None) -> None:
    import os

    customers(2)
    row = campaign()
    run_broadcast(row)
    a, b = Delivery.objects.filter(campaign=row).order_by("pk")
    deliveries_claim(delivery_ids=[a.pk], worker="node@h:999999", now=timezone.now())
    deliveries_claim(delivery_ids=[b.pk], worker=f"node@h:{os.getpid()}", now=timezone.now())
    assert outbox.deliveries_release_dead_claims(hostname="node@h") == 1
    assert Delivery.objects.get(pk=a.pk).status == "pending"
    assert Delivery.objects.get(pk=b.pk).status == "sending"


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="needs procfs")
def test_release_dead_claims__claimer_is_a_zombie__released(no_caps: None) -> None:
    # Given a claim by a process that has exited but was not reaped yet (a zombie: what a
    # worker's pool process killed with its worker is until PID 1 reaps it)
    customers(1)
    row = campaign()
    run_broadcast(row)
    delivery = Delivery.objects.get(campaign=row)
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while not _zombie(child.pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert _zombie(child.pid)
        deliveries_claim(delivery_ids=[delivery.pk], worker=f"node@h:{child.pid}", now=timezone.now())
        # When the node restarts, Then the zombie's claim is put back at once
        assert outbox.deliveries_release_dead_claims(hostname="node@h") == 1
        assert Delivery.objects.get(pk=delivery.pk).status == "pending"
    finally:
        child.wait()


def _zombie(pid: int) -> bool:
    with open(f"/proc/{pid}/stat", "rb") as handle:
        return handle.read().rsplit(b")", 1)[1].split()[0] == b"Z"


def test_sweep__quiet_hours_over__held_row_released_then_sent(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    from campaigns.models import ChannelPolicy

    ChannelPolicy.objects.filter(channel="email").update(quiet_start=dt.time(0), quiet_end=dt.time(23, 59))
    customers(1)
    row = campaign()
    run_broadcast(row)
    delivery = Delivery.objects.get(campaign=row)
    assert delivery.status == "held"
    assert outbox.outbox_sweep().unheld == 0
    with time_machine.travel(delivery.not_before + dt.timedelta(seconds=1)):
        result = outbox.outbox_sweep()
        assert result.unheld == 1 and result.enqueued == 1
        assert deliveries_send(delivery_ids=[delivery.pk], worker="w:1").sent == 1


def test_sweep__pending_never_published__enqueued_once_then_left_alone(no_caps: None) -> None:
    customers(3)
    row = campaign()
    run_broadcast(row)
    Delivery.objects.filter(campaign=row).update(enqueued_at=None)
    assert outbox.outbox_sweep().enqueued == 3
    assert outbox.outbox_sweep().enqueued == 0  # enqueued just now: not stale yet
    later = timezone.now() + dt.timedelta(hours=1)
    assert outbox.outbox_sweep(now=later).enqueued == 3


def test_decide__pending_rows__stamped_in_the_insert_and_not_written_again_when_published(  # type: ignore[no-untyped-def]
    no_caps: None, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from campaigns.tasks import deliveries_send as task

    published: list[list[int]] = []
    monkeypatch.setattr(task, "apply_async", lambda args, **_: published.append(args[0]))
    people = customers(3)
    row = campaign()
    lifecycle.campaign_launch(campaign=row)
    with django_capture_on_commit_callbacks() as callbacks:
        recipients_decide(campaign=row, targets=[Target(p.pk, "broadcast") for p in people])
    stamped = dict(Delivery.objects.filter(campaign=row).values_list("pk", "enqueued_at"))
    assert len(stamped) == 3 and None not in stamped.values()
    with CaptureQueriesContext(connection) as queries:
        for callback in callbacks:
            callback()
    assert sorted(pk for batch in published for pk in batch) == sorted(stamped)
    assert not [q for q in queries.captured_queries if "campaigns_delivery" in q["sql"]]
    assert dict(Delivery.objects.filter(campaign=row).values_list("pk", "enqueued_at")) == stamped
    assert outbox.outbox_sweep().enqueued == 0  # published: the sweeper leaves them alone


def test_decide__broker_refuses_the_publish__stamp_cleared_and_next_sweep_publishes(  # type: ignore[no-untyped-def]
    no_caps: None, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    from campaigns.tasks import deliveries_send as task

    def refuse(*_, **__):  # type: ignore[no-untyped-def]
        raise ConnectionError("broker down")

    monkeypatch.setattr(task, "apply_async", refuse)
    people = customers(3)
    row = campaign()
    lifecycle.campaign_launch(campaign=row)
    with django_capture_on_commit_callbacks(execute=True):
        recipients_decide(campaign=row, targets=[Target(p.pk, "broadcast") for p in people])
    rows = Delivery.objects.filter(campaign=row)
    assert rows.count() == 3 and not rows.filter(enqueued_at__isnull=False).exists()
    monkeypatch.undo()
    monkeypatch.setattr(task, "apply_async", lambda args, **_: None)
    assert outbox.outbox_sweep().enqueued == 3
    assert not rows.filter(enqueued_at__isnull=True).exists()


def test_pause_resume_finish__rows_held_back_then_sent_or_suppressed(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    customers(3)
    row = campaign()
    run_broadcast(row)
    lifecycle.campaign_pause(campaign=row)
    report = send_pending(row)
    assert (report.sent, report.released) == (0, 3)
    assert set(Delivery.objects.filter(campaign=row).values_list("status", "attempts")) == {("pending", 0)}
    assert outbox.outbox_sweep(now=timezone.now() + dt.timedelta(hours=1)).enqueued == 0  # paused: not published
    lifecycle.campaign_resume(campaign=row)
    ids = list(Delivery.objects.filter(campaign=row).values_list("pk", flat=True))
    assert deliveries_send(delivery_ids=ids[:2], worker="w:1").sent == 2
    lifecycle.campaign_finish(campaign=row)
    assert Delivery.objects.get(pk=ids[2]).reason == "campaign_ended"
    assert smtp_sink.total == 2


def test_demo_mailbox__email_sms_push__captured_once_per_key(no_caps: None, settings) -> None:  # type: ignore[no-untyped-def]
    from campaigns.models import MailboxMessage

    settings.EMAIL_BACKEND = "campaigns.mailbox.DatabaseMailboxBackend"
    settings.CAMPAIGNS = {
        "SMS_BACKEND": "campaigns.channels.mailbox.SmsMailboxBackend",
        "PUSH_BACKEND": "campaigns.channels.mailbox.PushMailboxBackend",
    }
    now = timezone.now()
    CustomerFactory(phone="+33612345678", sms_consent_at=now, push_token="tok-1", push_consent_at=now)
    row = campaign(key="demo", channels=("email", "sms", "push"), channel_strategy="all")
    run_broadcast(row)
    ids = list(Delivery.objects.filter(campaign=row).values_list("pk", flat=True))
    assert deliveries_send(delivery_ids=ids, worker="w:1").sent == 3
    Delivery.objects.filter(pk__in=ids).update(status="pending")  # as if resent after a crash
    deliveries_send(delivery_ids=ids, worker="w:1")
    assert sorted(MailboxMessage.objects.values_list("channel", flat=True)) == ["email", "push", "sms"]
    sms = MailboxMessage.objects.get(channel="sms")
    assert sms.to == "+33612345678" and "10% off" in sms.body_text


def test_deliveries_send__chunk_of_messages__statements_per_chunk_plus_one_mark_each(no_caps: None, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    customers(60)
    row = campaign()
    run_broadcast(row)
    ids = list(Delivery.objects.filter(campaign=row).values_list("pk", flat=True))
    with CaptureQueriesContext(connection) as queries:
        report = deliveries_send(delivery_ids=ids, worker="w:1")
    marks = [q for q in queries.captured_queries if q["sql"].startswith("UPDATE") and "sent_at" in q["sql"]]
    if connection.vendor != "postgresql":  # (PostgreSQL marks through a psycopg cursor Django does not log)
        assert len(marks) == 60  # each acceptance recorded on its own, at once
    assert report.sent == 60 and Delivery.objects.filter(pk__in=ids, status="sent").count() == 60
    assert len(queries) - len(marks) <= 8  # the rest is per chunk: claim, rows, campaign, offer, content, policy
    assert smtp_sink.unique == set(Delivery.objects.filter(pk__in=ids).values_list("key", flat=True))
