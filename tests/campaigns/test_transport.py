"""The email transport end to end in this process (claims, the SMTP session, retries) against
aiosmtpd: refusals at a claim chunk's end, retries that fit the channel, Retry-After past the
backoff cap, and messages rendered in the customer's own zone and language."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import time_machine
from django.utils import timezone

from campaigns.models import Content, Coupon, Delivery
from campaigns.services import outbox
from campaigns.services.delivery import deliveries_send, retry_delay
from campaigns.services.render import content_preview
from tests.campaigns.builders import campaign, customers, run_broadcast, send_pending
from tests.campaigns.test_channels import GreylistSink

pytestmark = pytest.mark.django_db


@pytest.fixture
def chunk_of_two(settings):  # type: ignore[no-untyped-def]
    settings.CAMPAIGNS = {**getattr(settings, "CAMPAIGNS", {}), "CLAIM_CHUNK": "2"}


def _use(settings, sink) -> None:  # type: ignore[no-untyped-def]
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False


def _statuses(row) -> dict[str, tuple[str, str]]:  # type: ignore[no-untyped-def]
    return {
        d.customer.email: (d.status, d.reason)
        for d in Delivery.objects.filter(campaign=row).select_related("customer").order_by("pk")
    }


def test_deliveries_send__450_at_a_chunk_end_then_accept__all_sent_greylisted_one_on_retry(
    no_caps, settings, chunk_of_two, fast_retries
) -> None:  # type: ignore[no-untyped-def]
    # Given four customers claimed two by two, the second greylisted (450 at RCPT, then accepted)
    people = customers(4)
    sink = GreylistSink({people[1].email}).start()
    _use(settings, sink)
    try:
        row = campaign()
        run_broadcast(row)
        # When the first send ends its first chunk on the 450
        send_pending(row)
        first = _statuses(row)
        # Then the next chunk's first message is accepted (no "503 nested MAIL"), the greylisted one deferred
        assert first[people[2].email] == ("sent", "") and first[people[3].email] == ("sent", "")
        assert first[people[1].email] == ("pending", "")
        deferred = Delivery.objects.get(campaign=row, customer=people[1])
        assert "450" in deferred.last_error and "503" not in deferred.last_error
        # and its retry is accepted
        with time_machine.travel(deferred.not_before + dt.timedelta(seconds=1)):
            send_pending(row)
    finally:
        sink.stop()
    assert set(_statuses(row).values()) == {("sent", "")}
    assert sink.total == 4 and len(sink.unique) == 4


def test_deliveries_send__550_at_a_chunk_end_then_450__permanent_then_deferred_never_503_permanent(
    no_caps, settings, chunk_of_two, fast_retries
) -> None:  # type: ignore[no-untyped-def]
    people = customers(4)
    sink = GreylistSink({people[2].email}).start()
    sink.refuse[people[1].email] = "550 5.1.1 No such user"
    _use(settings, sink)
    try:
        row = campaign()
        run_broadcast(row)
        send_pending(row)
    finally:
        sink.stop()
    statuses = _statuses(row)
    assert statuses[people[1].email] == ("failed", "permanent_error")
    assert statuses[people[2].email] == ("pending", "")  # deferred, retried later
    assert statuses[people[0].email] == statuses[people[3].email] == ("sent", "")
    assert "450" in Delivery.objects.get(campaign=row, customer=people[2]).last_error


def test_retry__email_deferred__retried_past_max_attempts_within_24h_then_gave_up(
    no_caps, settings, fast_retries
) -> None:  # type: ignore[no-untyped-def]
    # Given a relay that defers everything (an outage longer than 5 tries)
    sink = GreylistSink(set()).start()
    _use(settings, sink)
    people = customers(1)
    sink.refuse[people[0].email] = "451 4.3.0 Relay unavailable"
    row = campaign(max_attempts=2)
    run_broadcast(row)
    start = timezone.now()
    try:
        for hours in (0, 1, 6, 23):  # tries well beyond max_attempts, inside the period
            with time_machine.travel(start + dt.timedelta(hours=hours)):
                assert send_pending(row).retried == 1
        delivery = Delivery.objects.get(campaign=row)
        assert (delivery.status, delivery.attempts) == ("pending", 4)
        assert delivery.first_tried_at == pytest.approx(start, abs=dt.timedelta(seconds=5))
        with time_machine.travel(start + dt.timedelta(hours=24, minutes=1)):
            send_pending(row)
    finally:
        sink.stop()
    delivery.refresh_from_db()
    assert (delivery.status, delivery.reason) == ("failed", "gave_up")
    assert "451" in delivery.last_error and "24 h" in delivery.last_error


@pytest.mark.pure
def test_retry_delay__retry_after_above_the_backoff_cap__honoured_up_to_its_maximum(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CAMPAIGNS = {"RETRY_BASE_SECONDS": "30", "RETRY_MAX_SECONDS": "900", "RETRY_AFTER_MAX_SECONDS": "7200"}
    assert retry_delay(attempts=1, retry_after=3600) >= 3600
    assert retry_delay(attempts=1, retry_after=100_000) == 7200
    assert retry_delay(attempts=10) <= 900


def test_retry__retry_after_one_hour__scheduled_in_the_database_and_published_by_the_sweeper_when_due(
    no_caps, http_provider
) -> None:  # type: ignore[no-untyped-def]
    from tests.campaigns.test_delivery import _sms_delivery

    _, delivery = _sms_delivery()
    http_provider.script[delivery.key] = [(429, {"Retry-After": "3600"})]
    before = timezone.now()
    report = deliveries_send(delivery_ids=[delivery.pk], worker="w:1")
    delivery.refresh_from_db()
    assert delivery.status == "pending" and delivery.not_before >= before + dt.timedelta(seconds=3600)
    assert report.retry_ids == ()  # not a broker countdown past its visibility timeout
    with time_machine.travel(delivery.not_before - dt.timedelta(seconds=5)):
        assert outbox.outbox_sweep().enqueued == 0
    with time_machine.travel(delivery.not_before + dt.timedelta(seconds=1)):
        assert outbox.outbox_sweep().enqueued == 1
        assert deliveries_send(delivery_ids=[delivery.pk], worker="w:1").sent == 1


EXPIRY = dt.datetime(2026, 12, 19, 3, 0, tzinfo=dt.UTC)  # 22:00 on the 18th in New York


@pytest.mark.parametrize(
    ("tz", "locale", "expected"),
    [
        ("America/New_York", "en", "until 2026-12-18 22:00 | Dec. 18, 2026 | 10"),
        ("Asia/Shanghai", "zh-Hans", "until 2026-12-19 11:00 | 2026年12月19日 | 10"),
        ("Europe/Paris", "fr-FR", "until 2026-12-19 04:00 | 19 décembre 2026 | 10"),
    ],
)
def test_email__dates_and_numbers__in_the_customers_zone_and_language_sent_and_previewed(
    no_caps, smtp_sink, tz, locale, expected
) -> None:  # type: ignore[no-untyped-def]
    import email

    customers(1, tz=tz, locale=locale)
    text = "until {{ coupon.expires_at|date:'Y-m-d H:i' }} | {{ coupon.expires_at|date }} | {{ offer.value }}"
    row = campaign(contents={"email": {"subject": "Hi", "text": text}})
    run_broadcast(row)
    Coupon.objects.filter(campaign=row).update(expires_at=EXPIRY)
    assert send_pending(row).sent == 1
    body = email.message_from_bytes(smtp_sink.messages[0]).get_payload(decode=True).decode()
    first, *footer = body.strip().splitlines()
    assert first == expected
    assert "/u/" in footer[-1]  # a marketing email: the default unsubscribe footer follows
    # The admin preview shows the same
    content = Content.objects.get(treatment__campaign=row, channel="email")
    preview = content_preview(content=content, customer=Delivery.objects.get(campaign=row).customer)
    assert preview.message.text == expected
    assert timezone.get_current_timezone_name() == "UTC"  # nothing left active after


# --- PostgreSQL: the sending session lost, claims keyed by session --------------------------


def _terminate(pid: int) -> None:
    """Terminate a backend from a separate connection (as a restart or a failover would)."""
    import psycopg
    from django.conf import settings as django_settings

    db = django_settings.DATABASES["default"]
    with psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"], dbname=db["NAME"], autocommit=True
    ) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_deliveries_send__database_session_killed_mid_send__task_fails_fast_claims_back_acceptance_kept(
    no_caps, smtp_sink
) -> None:  # type: ignore[no-untyped-def]
    from django.db import DatabaseError, connection

    # Given a send whose database session is terminated while the SMTP server accepts message 10
    customers(40)
    row = campaign()
    run_broadcast(row)
    connection.ensure_connection()
    backend_pid = connection.connection.info.backend_pid
    accepted: list[str] = []

    def before_accept(key: str) -> None:
        accepted.append(key)
        if len(accepted) == 10:
            _terminate(backend_pid)

    smtp_sink.before_accept = before_accept
    # When
    started = time.monotonic()
    with pytest.raises(DatabaseError):
        send_pending(row)
    # Then the task ends at once, every acceptance is recorded, nothing stays claimed
    assert time.monotonic() - started < 10
    from django.db import connection as conn

    conn.close()
    statuses = dict(Delivery.objects.filter(campaign=row).values_list("key", "status"))
    assert {k for k, s in statuses.items() if s == "sent"} == smtp_sink.unique
    assert set(statuses.values()) <= {"sent", "pending"}
    # and the next task sends the rest, each message once
    send_pending(row)
    assert set(Delivery.objects.filter(campaign=row).values_list("status", flat=True)) == {"sent"}
    assert smtp_sink.total == 40 and not smtp_sink.duplicates()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_release_lost_sessions__claim_of_an_ended_session_released_live_ones_kept(no_caps) -> None:  # type: ignore[no-untyped-def]
    import psycopg
    from django.conf import settings as django_settings

    from campaigns.services.delivery import claim_token, deliveries_claim

    customers(6)
    row = campaign()
    run_broadcast(row)
    ids = sorted(Delivery.objects.filter(campaign=row).values_list("pk", flat=True))
    # Given three rows claimed by another process's session (another host), three by ours
    db = django_settings.DATABASES["default"]
    other = psycopg.connect(
        host=db["HOST"], port=db["PORT"], user=db["USER"], password=db["PASSWORD"], dbname=db["NAME"], autocommit=True
    )
    pid, started = other.execute(
        "SELECT pid, (extract(epoch FROM backend_start) * 1000000)::bigint FROM pg_stat_activity "
        "WHERE pid = pg_backend_pid()"
    ).fetchone()
    now = timezone.now()
    deliveries_claim(delivery_ids=ids[:3], worker=f"gone-host:4242:pg{pid}.{started}", now=now)
    mine = claim_token("here:1")
    deliveries_claim(delivery_ids=ids[3:], worker=mine, now=now)
    assert outbox.deliveries_release_lost_sessions() == 0  # both sessions alive
    # When the other process dies (its session ends with it)
    other.close()
    time.sleep(0.3)
    # Then the tick releases its claims, not ours
    assert outbox.outbox_sweep().released == 3
    statuses = dict(Delivery.objects.filter(campaign=row).values_list("pk", "status"))
    assert [statuses[i] for i in ids] == ["pending"] * 3 + ["sending"] * 3


def test_offers_api__in_app_message__expiry_in_the_customers_zone(no_caps, api_client_factory) -> None:  # type: ignore[no-untyped-def]
    (person,) = customers(1, tz="America/New_York")
    row = campaign(key="inapp-tz", channels=("in_app",))
    run_broadcast(row)
    Coupon.objects.filter(campaign=row).update(expires_at=EXPIRY)
    response = api_client_factory("offers:read").get(f"/api/v1/customers/{person.external_id}/offers")
    assert response.status_code == 200, response.content
    (entry,) = response.json()["results"]
    assert entry["message"]["body"].endswith("until 2026-12-18")


def test_email__customers_of_two_zones_in_one_task__each_their_own_date_from_the_memo(no_caps, smtp_sink) -> None:  # type: ignore[no-untyped-def]
    import email

    customers(2, prefix="ny", tz="America/New_York")
    customers(2, prefix="sh", tz="Asia/Shanghai", locale="zh-Hans")
    row = campaign(contents={"email": {"subject": "Hi", "text": "{{ coupon.expires_at|date:'Y-m-d' }}"}})
    run_broadcast(row)
    Coupon.objects.filter(campaign=row).update(expires_at=EXPIRY)
    assert send_pending(row).sent == 4  # one task, zones alternating as the rows come
    dates = {}
    for raw in smtp_sink.messages:
        message = email.message_from_bytes(raw)
        first_line = message.get_payload(decode=True).decode().splitlines()[0]  # the unsubscribe footer follows
        dates[message["To"][:2]] = dates.get(message["To"][:2], set()) | {first_line}
    assert dates == {"ny": {"2026-12-18"}, "sh": {"2026-12-19"}}


def test_sweep__email_lease_expired_after_max_attempts__resent_within_the_period_gave_up_after(no_caps) -> None:  # type: ignore[no-untyped-def]
    customers(2)
    row = campaign(max_attempts=2)
    run_broadcast(row)
    fresh, old = Delivery.objects.filter(campaign=row).order_by("pk")
    now = timezone.now()
    expired = {"status": "sending", "attempts": 3, "lease_until": now - dt.timedelta(seconds=1), "claimed_by": "h:1"}
    Delivery.objects.filter(pk=fresh.pk).update(first_tried_at=now - dt.timedelta(hours=2), **expired)
    Delivery.objects.filter(pk=old.pk).update(first_tried_at=now - dt.timedelta(hours=25), **expired)
    outbox.outbox_sweep(now=now)
    fresh.refresh_from_db()
    old.refresh_from_db()
    assert fresh.status == "pending"  # in doubt, resent: the 24 h are not over
    assert (old.status, old.reason) == ("failed", "gave_up")
