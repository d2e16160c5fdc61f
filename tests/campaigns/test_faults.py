"""Faults survived with real parts: PostgreSQL, a private redis-server, real ``celery worker``
processes, an aiosmtpd server and an HTTP provider on loopback.

The periodic tick (beat's job, every 10 s in production) is sent through the broker by the
test every few seconds, exactly as beat would.
"""

from __future__ import annotations

import collections
import datetime as dt
import time

import pytest
from django.db.models import Count
from django.utils import timezone

from campaigns.models import AudienceBatch, Campaign, ChannelPolicy, Delivery
from campaigns.models.delivery import delivery_key
from campaigns.services import lifecycle
from campaigns.services.policy import zone
from campaigns.tasks import campaigns_tick
from tests.campaigns.builders import campaign, customers
from tests.campaigns.peers import wait_until

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

OPEN = ("pending", "held", "sending")


def _open(row: Campaign) -> int:
    return Delivery.objects.filter(campaign=row, status__in=OPEN).count()


def _drain(rows: list[Campaign], *, timeout: float, tick_every: float = 3.0) -> None:
    """Wait until every delivery of ``rows`` is final, sending the tick like beat would."""
    deadline = time.monotonic() + timeout
    last_tick = 0.0
    while time.monotonic() < deadline:
        unresolved = Campaign.objects.filter(pk__in=[r.pk for r in rows], audience_resolved_at__isnull=True).exists()
        undecided = AudienceBatch.objects.filter(campaign__in=rows, done_at__isnull=True).exists()
        if not unresolved and not undecided and all(_open(r) == 0 for r in rows):
            return
        if time.monotonic() - last_tick >= tick_every:
            campaigns_tick.delay()
            last_tick = time.monotonic()
        time.sleep(0.2)
    counts = {
        r.key: dict(Delivery.objects.filter(campaign=r).values_list("status").annotate(n=Count("pk"))) for r in rows
    }
    raise AssertionError(f"not drained after {timeout}s: {counts}")


@pytest.fixture
def email_only(no_caps: None) -> None:
    ChannelPolicy.objects.filter(channel="email").update(daily_cap=None)


def test_kill9_worker_during_10k_send__nothing_lost_nothing_duplicated(worker_factory, smtp_sink, email_only) -> None:  # type: ignore[no-untyped-def]
    smtp_sink.keep_messages = False
    customers(10_000)
    row = campaign(key="big")
    worker = worker_factory(concurrency=2)
    started = time.monotonic()
    lifecycle.campaign_launch(campaign=row)
    # Generous bounds: on a quiet machine the whole test takes well under a minute.
    wait_until(lambda: smtp_sink.total >= 1_500, timeout=240, message="1,500 messages before the kill")
    worker.kill9()
    dead_claims = set(Delivery.objects.filter(campaign=row, status="sending").values_list("claimed_by", flat=True))
    in_flight = Delivery.objects.filter(campaign=row, status="sending").count()
    sent_before = Delivery.objects.filter(campaign=row, status="sent").count()
    assert 0 < sent_before < 10_000, "the kill must land mid-send"
    worker.start()  # the same node restarts: it releases its dead processes' claims at once
    still_claimed = Delivery.objects.filter(campaign=row, status="sending", claimed_by__in=dead_claims).count()
    assert still_claimed == 0, "claims of the killed processes were released when the node restarted"
    _drain([row], timeout=240)

    statuses = dict(Delivery.objects.filter(campaign=row).values_list("status").annotate(n=Count("pk")))
    assert statuses == {"sent": 10_000}, statuses
    keys = set(Delivery.objects.filter(campaign=row).values_list("key", flat=True))
    assert smtp_sink.unique == keys  # 0 lost
    # The only messages a peer can see twice are those accepted in the instant between the
    # SMTP server's "250" and the row's "sent" commit when the process died: at most one per
    # pool process. They carry the same delivery key (Message-ID), so the peer recognises them.
    duplicates = smtp_sink.duplicates()
    assert len(duplicates) <= 2 and all(n == 2 for n in duplicates.values()), duplicates
    print(
        f"kill -9: {in_flight} rows in flight, {sent_before} sent before, {len(duplicates)} resent duplicates, "
        f"{time.monotonic() - started:.0f}s"
    )


def test_broker_stopped_during_launch__outbox_delivers_everything_once(
    worker_factory, private_redis, smtp_sink, email_only
) -> None:  # type: ignore[no-untyped-def]
    customers(300)
    row = campaign(key="outage")
    worker_factory(concurrency=2)
    private_redis.stop()
    began = time.monotonic()
    lifecycle.campaign_launch(campaign=row)  # the publish after commit fails; the launch does not
    assert time.monotonic() - began < 15
    row.refresh_from_db()
    assert row.status == "running" and row.audience_resolved_at is None
    private_redis.start()
    _drain([row], timeout=180)
    assert Delivery.objects.filter(campaign=row, status="sent").count() == 300
    assert smtp_sink.total == 300 and len(smtp_sink.unique) == 300


def test_provider_faults__503x3_then_200_retried__400_failed__429_waits(worker_factory, http_provider, no_caps) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    people = customers(3, prefix="sms", phone="+33612345678", sms_consent_at=now, email_consent_at=None)
    row = campaign(key="sms", channels=("sms",))
    keys = [delivery_key(row.pk, p.pk, "broadcast", "sms") for p in people]
    http_provider.script[keys[0]] = [(503, {})] * 3
    http_provider.script[keys[1]] = [(400, {})]
    http_provider.script[keys[2]] = [(429, {"Retry-After": "2"})]
    worker_factory(concurrency=2)
    lifecycle.campaign_launch(campaign=row)
    _drain([row], timeout=180)
    final = {d.key: d for d in Delivery.objects.filter(campaign=row)}
    retried, refused, limited = (final[k] for k in keys)
    assert (retried.status, retried.attempts, http_provider.delivered[keys[0]]) == ("sent", 4, 1)
    assert (refused.status, refused.reason, refused.attempts) == ("failed", "permanent_error", 1)
    assert len(http_provider.attempts(keys[1])) == 1
    assert (limited.status, limited.attempts) == ("sent", 2)
    first, second = http_provider.attempts(keys[2])
    assert second["at"] - first["at"] >= 2.0


def test_eight_workers_three_overlapping_campaigns_cap_one_per_day__one_message_each(
    worker_factory, smtp_sink, no_caps
) -> None:  # type: ignore[no-untyped-def]
    ChannelPolicy.objects.filter(channel="email").update(daily_cap=1)
    tzs = ["UTC", "Asia/Tokyo", "America/Los_Angeles", "Europe/Paris"]
    people = []
    for i, tz in enumerate(tzs):
        people += customers(150, prefix=f"tz{i}-", tz=tz)
    rows = [campaign(key=f"overlap-{i}") for i in range(3)]
    worker_factory(concurrency=8, CAMPAIGNS_TASK_BATCH="40")
    for row in rows:
        lifecycle.campaign_launch(campaign=row)
    _drain(rows, timeout=180)

    deliveries = list(Delivery.objects.filter(campaign__in=rows).select_related("customer"))
    per_customer: dict[int, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    sent_days: collections.Counter[tuple[int, dt.date]] = collections.Counter()
    for d in deliveries:
        per_customer[d.customer_id][f"{d.status}:{d.reason}"] += 1
        if d.status == "sent":
            sent_days[(d.customer_id, d.sent_at.astimezone(zone(d.customer.timezone)).date())] += 1
    assert len(per_customer) == len(people) == 600
    assert max(sent_days.values()) == 1  # never two in a customer's local day
    for counts in per_customer.values():
        total = sum(counts.values())
        assert total == 3 and counts["sent:"] >= 1 and counts["sent:"] + counts["suppressed:capped"] == 3, counts
    # The peer saw exactly the messages recorded as sent, each once.
    assert smtp_sink.total == sum(c["sent:"] for c in per_customer.values())
    assert len(smtp_sink.unique) == smtp_sink.total


def _restart_postgres() -> float:
    """Restart the test's PostgreSQL server (``pg_ctl restart -m fast``: every session is
    terminated, as on a failover or an upgrade); returns how long it took."""
    import os
    import shutil
    import subprocess
    from pathlib import Path

    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW data_directory")
        data = cursor.fetchone()[0]
    connection.close()
    pg_ctl = shutil.which("pg_ctl") or str(sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))[-1])
    command = [pg_ctl, "-D", data, "-l", f"{data}/server.log", "-m", "fast", "-w", "-t", "60", "restart"]
    if os.geteuid() == 0:
        command = ["runuser", "-u", "postgres", "--", *command]
    started = time.monotonic()
    # The server inherits stdout: not a pipe this process would wait on.
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=90)
    return time.monotonic() - started


def test_postgres_restart_mid_send__costs_seconds_not_the_smtp_timeout_or_the_lease(
    worker_factory, smtp_sink, email_only
) -> None:  # type: ignore[no-untyped-def]
    # Given a 3,000-message send by two pool processes whose leases are the production 10 min
    smtp_sink.keep_messages = False
    customers(3_000)
    row = campaign(key="pg-restart")
    worker_factory(concurrency=2, CAMPAIGNS_LEASE_SECONDS="600")
    lifecycle.campaign_launch(campaign=row)
    wait_until(lambda: smtp_sink.total >= 600, timeout=240, message="600 messages before the restart")
    # When PostgreSQL restarts mid-send
    restart = _restart_postgres()
    restarted_at = time.monotonic()
    assert Delivery.objects.filter(campaign=row).exclude(status="sent").exists(), "the restart must land mid-send"
    # Then the send completes within seconds (not the SMTP server's 300 s timeout, not the lease)
    _drain([row], timeout=90)
    after = time.monotonic() - restarted_at
    statuses = dict(Delivery.objects.filter(campaign=row).values_list("status").annotate(n=Count("pk")))
    assert statuses == {"sent": 3_000}, statuses
    assert smtp_sink.unique == set(Delivery.objects.filter(campaign=row).values_list("key", flat=True))
    duplicates = smtp_sink.duplicates()
    assert len(duplicates) <= 2 and all(n == 2 for n in duplicates.values()), duplicates
    print(f"PostgreSQL restart took {restart:.1f}s; send finished {after:.1f}s later; {len(duplicates)} duplicates")
    assert after < 60


def _pool_children(worker) -> list[int]:  # type: ignore[no-untyped-def]
    import subprocess

    out = subprocess.run(["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def test_kill9_pool_child__its_claims_released_by_the_main_process_not_after_the_lease(
    worker_factory, smtp_sink, email_only
) -> None:  # type: ignore[no-untyped-def]
    import os
    import signal

    smtp_sink.keep_messages = False
    customers(3_000)
    row = campaign(key="child")
    worker = worker_factory(concurrency=2, CAMPAIGNS_LEASE_SECONDS="600")
    lifecycle.campaign_launch(campaign=row)
    wait_until(lambda: smtp_sink.total >= 500, timeout=240, message="500 messages before the kill")
    # When one pool process is killed (the worker's main process survives)
    claims = Delivery.objects.filter(campaign=row, status="sending").values_list("claimed_by", flat=True).distinct()
    victim = next(
        pid for pid in _pool_children(worker) if any(f":{pid}:" in c or c.endswith(f":{pid}") for c in claims)
    )
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    # Then its claims are put back at once and the send completes in seconds, not the 10-minute lease
    wait_until(
        lambda: not Delivery.objects.filter(campaign=row, status="sending", claimed_by__contains=f":{victim}").exists(),
        timeout=15,
        message="the dead child's claims released",
    )
    _drain([row], timeout=90)
    assert time.monotonic() - killed_at < 60
    assert dict(Delivery.objects.filter(campaign=row).values_list("status").annotate(n=Count("pk"))) == {"sent": 3_000}
    assert len(smtp_sink.unique) == 3_000 and len(smtp_sink.duplicates()) <= 1


def test_kill9_worker_recreated_under_another_hostname__claims_released_by_the_tick(
    worker_factory, smtp_sink, email_only
) -> None:  # type: ignore[no-untyped-def]
    smtp_sink.keep_messages = False
    customers(3_000)
    row = campaign(key="rename")
    old = worker_factory(concurrency=2, CAMPAIGNS_LEASE_SECONDS="600")
    lifecycle.campaign_launch(campaign=row)
    wait_until(lambda: smtp_sink.total >= 500, timeout=240, message="500 messages before the kill")
    old.kill9()
    assert Delivery.objects.filter(campaign=row, status="sending").exists(), "the kill must land mid-send"
    killed_at = time.monotonic()
    worker_factory(concurrency=2, CAMPAIGNS_LEASE_SECONDS="600")  # another node name: it releases nothing itself
    _drain([row], timeout=90)
    assert time.monotonic() - killed_at < 60
    assert dict(Delivery.objects.filter(campaign=row).values_list("status").annotate(n=Count("pk"))) == {"sent": 3_000}
    assert len(smtp_sink.unique) == 3_000 and len(smtp_sink.duplicates()) <= 2
