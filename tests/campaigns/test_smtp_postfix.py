"""The hand-written SMTP path against a real MTA: a private Debian Postfix on loopback
(``tests/campaigns/postfix.py``) greylisting (450) and refusing (550) recipients at RCPT
through a ``check_recipient_access`` map, relaying what it accepts to an aiosmtpd sink.
Runs in the PostgreSQL pass (where ``make test`` has installed Postfix)."""

from __future__ import annotations

import email
import re
import time
from email import policy

import pytest

from campaigns.channels import OutgoingMessage, TransientError
from campaigns.channels.email import EmailBackend
from campaigns.models import Delivery
from tests.campaigns import postfix
from tests.campaigns.builders import campaign, customers, run_broadcast, send_pending
from tests.campaigns.peers import wait_until
from tests.campaigns.test_channels import _within

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(bool(postfix.available()), reason=postfix.available() or "available"),
]

GONE, GREY, GREY2 = "c000001@example.com", "c000002@example.com", "c000005@example.com"


@pytest.fixture
def mta(settings):  # type: ignore[no-untyped-def]
    server = postfix.Postfix(
        {GONE: "550 5.1.1 No such user", GREY: "450 4.7.1 Greylisted", GREY2: "450 4.7.1 Greylisted"}
    ).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield server
    server.stop()


LONG = "\u2028".join(["é" * 230] * 3)  # one 1,386-byte physical line unless encoded


@pytest.mark.django_db
def test_postfix__refusals_at_chunk_ends__550_permanent_450_deferred_next_ones_sent_and_parse_cleanly(
    mta, settings, no_caps
) -> None:  # type: ignore[no-untyped-def]
    # Given 8 customers claimed two by two: chunk 1 ends with a 550, chunk 2 starts with a
    # 450 (550-then-450), chunk 3 ends with a 450 and chunk 4 follows (450-then-accept)
    settings.CAMPAIGNS = {"CLAIM_CHUNK": "2"}
    people = customers(8)
    assert [people[i].email for i in (1, 2, 5)] == [GONE, GREY, GREY2]
    text = "Hello {{ customer.external_id }}\n" + LONG + "\nCode {{ coupon.code }}"
    row = campaign(contents={"email": {"subject": "Hi {{ customer.external_id }}", "text": text}})
    run_broadcast(row)
    # When they are sent through Postfix
    send_pending(row)
    # Then
    final = {d.customer.email: d for d in Delivery.objects.filter(campaign=row).select_related("customer")}
    assert (final[GONE].status, final[GONE].reason) == ("failed", "permanent_error")
    assert "550" in final[GONE].last_error
    for grey in (GREY, GREY2):
        assert final[grey].status == "pending", final[grey].last_error  # deferred, retried later
        assert "450" in final[grey].last_error and "503" not in final[grey].last_error
    sent = {e for e, d in final.items() if d.status == "sent"}
    assert sent == {p.email for i, p in enumerate(people) if i not in (1, 2, 5)}
    # and what Postfix delivered onwards parses cleanly, every physical line within 998 bytes
    wait_until(lambda: mta.sink.total >= 5, timeout=60, message=f"Postfix relays 5 messages ({mta.log_path})")
    assert mta.sink.unique == {final[e].key for e in sent} and mta.sink.total == 5
    for raw in mta.sink.messages:
        assert max(len(line) for line in re.split(rb"\r\n|\r|\n", raw)) <= 998
        parsed = email.message_from_bytes(raw, policy=policy.default)
        assert not any(part.defects for part in parsed.walk())
        assert LONG in parsed.get_body(("plain",)).get_content()
        assert parsed["Message-ID"] == f"<{parsed['X-Delivery-Key']}@growth.local>"
    assert "nested MAIL" not in mta.log()


def test_postfix__caller_fails_while_postfix_waits_for_data__session_aborted_at_once(mta) -> None:  # type: ignore[no-untyped-def]
    from django.db import OperationalError

    def ready() -> None:  # the database went away as the message was about to be handed over
        raise OperationalError("terminating connection due to administrator command")

    message = OutgoingMessage(key="k-1", channel="email", to="ok@example.com", subject="Hi", text="Body")

    def work() -> None:
        backend = EmailBackend()
        try:
            with pytest.raises(OperationalError):
                list(backend.send_many([message], ready=ready))
        finally:
            backend.close()

    started = time.monotonic()
    _within(20, work)  # Postfix's smtpd_timeout is 300 s: a QUIT into DATA would wait that long
    assert time.monotonic() - started < 2
    wait_until(lambda: "lost connection after DATA" in mta.log(), timeout=10, message="postfix sees the abort")
    assert mta.sink.total == 0


def test_postfix__stalled_server__transient_within_the_connect_timeout(mta, settings) -> None:  # type: ignore[no-untyped-def]
    """Postfix accepts the connection but ``smtpd`` is stopped (SIGSTOP): the greeting never
    comes; the connect timeout bounds the wait."""
    import os
    import signal

    settings.CAMPAIGNS = {"SMTP_CONNECT_TIMEOUT": "1", "SMTP_COMMAND_TIMEOUT": "1"}
    master_pid = int((mta.root / "queue" / "pid" / "master.pid").read_text().split()[0])
    os.kill(master_pid, signal.SIGSTOP)  # new connections queue in the kernel; nobody greets
    outcomes: list[tuple[int, object]] = []

    def work() -> None:
        backend = EmailBackend()
        try:
            outcomes.extend(
                backend.send_many([OutgoingMessage(key="k-2", channel="email", to="a@example.com", text="x")])
            )
        finally:
            backend.close()

    started = time.monotonic()
    try:
        _within(10, work)
    finally:
        os.kill(master_pid, signal.SIGCONT)
    assert time.monotonic() - started < 3 and isinstance(outcomes[0][1], TransientError)
