"""The email channel's batch path against a real aiosmtpd server: SMTP pipelining when the
server offers it (and only then), outcomes in order, one acceptance at a time, refusals
mid-batch, a session closed by the server; the fast header folding and envelope
addresses are byte-for-byte what Django and the standard library produce."""

from __future__ import annotations

import random
import re
import string
import time
from email._policybase import compat32

import pytest
from django.core.mail import EmailMultiAlternatives
from django.core.mail.message import sanitize_address

from campaigns.channels import OutgoingMessage, PermanentError, SendResult, TransientError
from campaigns.channels.email import (
    _PLAIN_ADDRESS,
    SMTP_POLICY,
    EmailBackend,
    direct_message_bytes,
    envelope_address,
    message_bytes,
)
from tests.campaigns.peers import SmtpSink


def _messages(n: int, *, prefix: str = "m") -> list[OutgoingMessage]:
    return [
        OutgoingMessage(
            key=f"{prefix}-{i}", channel="email", to=f"{prefix}{i}@example.com", subject=f"Hi {i}", text=f"Body {i}"
        )
        for i in range(n)
    ]


@pytest.fixture
def plain_sink(settings):  # type: ignore[no-untyped-def]
    """An SMTP server that does not advertise PIPELINING."""
    sink = SmtpSink(pipelining=False).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.EMAIL_HOST_USER = settings.EMAIL_HOST_PASSWORD = ""
    yield sink
    sink.stop()


@pytest.mark.pure
def test_send_many__server_offers_pipelining__pipelined_all_delivered_in_order(smtp_sink) -> None:  # type: ignore[no-untyped-def]
    backend = EmailBackend()
    try:
        backend.open()
        assert backend.session is not None and backend.session.pipelining
        outcomes = list(backend.send_many(_messages(25)))
    finally:
        backend.close()
    assert "PIPELINING" in smtp_sink.ehlo_extensions
    assert [i for i, _ in outcomes] == list(range(25))
    assert all(isinstance(o, SendResult) for _, o in outcomes)
    assert outcomes[3][1].provider_ref == "<m-3@growth.local>"
    assert smtp_sink.unique == {f"m-{i}" for i in range(25)} and smtp_sink.total == 25


@pytest.mark.pure
def test_send_many__next_content_waits_for_the_caller__one_acceptance_at_a_time(smtp_sink) -> None:  # type: ignore[no-untyped-def]
    backend = EmailBackend()
    outcomes = backend.send_many(_messages(3))
    try:
        assert next(outcomes)[0] == 0
        time.sleep(0.3)  # the next envelope is on the wire; its content must not be
        assert smtp_sink.total == 1
        assert next(outcomes)[0] == 1
        time.sleep(0.1)
        assert smtp_sink.total == 2
        assert next(outcomes)[0] == 2
    finally:
        outcomes.close()
        backend.close()
    assert smtp_sink.total == 3


@pytest.mark.pure
def test_send_many__recipient_refused_mid_batch__that_one_permanent_rest_delivered(smtp_sink) -> None:  # type: ignore[no-untyped-def]
    messages = _messages(5)
    smtp_sink.refuse["m2@example.com"] = "550 5.1.1 No such user"
    backend = EmailBackend()
    try:
        outcomes = dict(backend.send_many(messages))
    finally:
        backend.close()
    assert isinstance(outcomes[2], PermanentError) and "550" in str(outcomes[2])
    assert all(isinstance(outcomes[i], SendResult) for i in (0, 1, 3, 4))
    assert smtp_sink.unique == {"m-0", "m-1", "m-3", "m-4"} and smtp_sink.total == 4


@pytest.mark.pure
def test_send_many__server_closes_session__transient_then_reconnects_for_the_rest(smtp_sink) -> None:  # type: ignore[no-untyped-def]
    smtp_sink.refuse["m1@example.com"] = "421 4.3.2 Service shutting down"
    backend = EmailBackend()
    try:
        outcomes = dict(backend.send_many(_messages(4)))
    finally:
        backend.close()
    assert isinstance(outcomes[1], TransientError) and "421" in str(outcomes[1])
    assert all(isinstance(outcomes[i], SendResult) for i in (0, 2, 3))
    assert smtp_sink.unique == {"m-0", "m-2", "m-3"}


@pytest.mark.pure
def test_send_many__no_pipelining_offered__one_command_at_a_time_all_delivered(plain_sink) -> None:  # type: ignore[no-untyped-def]
    plain_sink.refuse["m1@example.com"] = "550 5.1.1 No such user"
    backend = EmailBackend()
    try:
        backend.open()
        assert backend.session is not None and not backend.session.pipelining
        outcomes = dict(backend.send_many(_messages(4)))
    finally:
        backend.close()
    assert "PIPELINING" not in plain_sink.ehlo_extensions
    assert isinstance(outcomes[1], PermanentError) and "550" in str(outcomes[1])
    assert plain_sink.unique == {"m-0", "m-2", "m-3"}


@pytest.mark.pure
def test_send_many__server_down__every_message_transient(settings) -> None:  # type: ignore[no-untyped-def]
    from tests.campaigns.peers import free_port

    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT, settings.EMAIL_TIMEOUT = "127.0.0.1", free_port(), 2
    outcomes = list(EmailBackend().send_many(_messages(3)))
    assert [i for i, _ in outcomes] == [0, 1, 2]
    assert all(isinstance(o, TransientError) for _, o in outcomes)


@pytest.mark.pure
def test_send_many__html_and_non_ascii__received_as_django_builds_them(smtp_sink) -> None:  # type: ignore[no-untyped-def]
    import email

    message = OutgoingMessage(
        key="u-1", channel="email", to="zoé@example.com", subject="Bonjour Zoé", text="Ça va ?\n.\nfin", html="<b>é</b>"
    )
    backend = EmailBackend()
    try:
        ((_, outcome),) = list(backend.send_many([message]))
    finally:
        backend.close()
    assert isinstance(outcome, SendResult)
    received = email.message_from_bytes(smtp_sink.messages[0])
    assert received["X-Delivery-Key"] == "u-1" and received.is_multipart()
    assert "Zo" in str(email.header.make_header(email.header.decode_header(received["Subject"])))
    text = received.get_payload(0).get_payload(decode=True).decode()
    assert text.replace("\r\n", "\n") == "Ça va ?\n.\nfin"  # the lone "." line was dot-stuffed, then undone


@pytest.mark.pure
def test_smtp_policy_fold__random_headers__identical_to_compat32() -> None:
    reference = compat32.clone(linesep="\r\n")
    rng = random.Random(6)
    alphabet = string.ascii_letters + string.digits + " \t=?:;\"<>.,-_@%!'()[]é"
    for _ in range(20_000):
        name = rng.choice(["Subject", "To", "From", "Message-ID", "X-Delivery-Key", "Content-Type"])
        length = rng.choice([1, 10, 60, 68, 69, 70, 71, 72, 73, 76, 77, 78, 79, 120])
        chars = alphabet if rng.random() < 0.3 else string.ascii_letters + " "
        value = "".join(rng.choice(chars) for _ in range(length))
        assert SMTP_POLICY.fold_binary(name, value) == reference.fold_binary(name, value), (name, value)


@pytest.mark.pure
def test_message_bytes__text_html_non_ascii__identical_to_django() -> None:
    cases = [
        {"subject": "Hello N1, 15% off for you", "body": "Use CODE for 15% off.\n"},
        {"subject": "Bonjour Zoé, une offre", "body": "Ça marche.\n" + "x" * 1200},
        {"subject": "A very long subject " * 6, "body": "text", "html": "<p>html é</p>"},
    ]
    for case in cases:
        email = EmailMultiAlternatives(
            subject=case["subject"],
            body=case["body"],
            from_email="Growth <growth@localhost>",
            to=["b1@example.com"],
            headers={
                "Message-ID": "<k@growth.local>",
                "X-Delivery-Key": "k",
                "Date": "Mon, 23 Nov 2026 06:00:00 -0000",
            },
        )
        if "html" in case:
            email.attach_alternative(case["html"], "text/html")
        mime = email.message()
        from email import generator
        from io import BytesIO

        ours = BytesIO()
        generator.BytesGenerator(ours, mangle_from_=False, policy=SMTP_POLICY).flatten(mime)
        assert ours.getvalue() == mime.as_bytes(linesep="\r\n")
        assert message_bytes(email).startswith(b"Content-Type: ")


def _random_message(rng: random.Random, i: int) -> OutgoingMessage:
    """Campaign-like messages and the shapes around the direct builder's edges."""
    words = ["Hello", "N1,", "15%", "off", "for", "you", "été", "Zoé", "--", "=?", ".", "\t", "", "x" * 70]

    def text(lines: int) -> str:
        newline = rng.choice(["\n", "\r\n", "\r", "\n\n"])
        out = []
        for _ in range(lines):
            line = " ".join(rng.choice(words) for _ in range(rng.randint(0, 8)))
            if rng.random() < 0.1:
                line = "." + line  # dot-stuffing is the transport's business, not the message's
            if rng.random() < 0.03:
                line = "y" * rng.choice([997, 998, 999, 1200])  # around RFC 5322's 998
            out.append(line)
        body = newline.join(out)
        return body + (newline if rng.random() < 0.5 else "")

    subject = " ".join(rng.choice(words[:6]) for _ in range(rng.randint(1, 6)))
    if rng.random() < 0.15:
        subject = rng.choice(["Bonjour Zoé", "A long subject " * 6, "two  spaces", "tab\there", ""])
    to = f"c{i}@example.com" if rng.random() < 0.9 else rng.choice(["zoé@example.com", "Name <n@example.com>"])
    html = "" if rng.random() < 0.5 else "<p>" + text(rng.randint(1, 4)) + "</p>"
    return OutgoingMessage(
        key=f"key-{i}", channel="email", to=to, subject=subject, text=text(rng.randint(0, 6)), html=html
    )


_DATE = re.compile(rb"^Date: .*\r$", re.MULTILINE)
_BOUNDARY = re.compile(rb"={15}\d+==")


@pytest.mark.pure
@pytest.mark.parametrize(
    "from_email", ["growth@localhost", "Growth team <growth@example.com>", "Équipe <g@example.com>"]
)
def test_direct_message_bytes__random_campaign_messages__identical_to_django(settings, from_email) -> None:  # type: ignore[no-untyped-def]
    settings.DEFAULT_FROM_EMAIL = from_email
    backend = EmailBackend()
    rng = random.Random(11)
    direct = 0
    for i in range(3000):
        message = _random_message(rng, i)
        reference = message_bytes(backend.email(message))
        ours = backend.message_bytes(message)
        normalize = lambda b: _BOUNDARY.sub(b"BOUNDARY", _DATE.sub(b"Date: D\r", b))  # noqa: E731
        assert normalize(ours) == normalize(reference), message
        direct += (
            direct_message_bytes(
                subject=message.subject,
                from_email=from_email,
                to=message.to,
                message_id=backend.message_id(message),
                key=message.key,
                text=message.text,
                html=message.html,
            )
            is not None
        )
    if from_email.isascii():
        assert direct > 1500  # the common shape is built directly...
    else:
        assert direct == 0  # ...and a From that needs encoding never is


@pytest.mark.pure
@pytest.mark.parametrize(
    "address",
    ["a@example.com", "first.last+tag@sub.example.org", "Name <a@example.com>", "zoé@example.com", "a@Example.COM"],
)
def test_envelope_address__any_address__same_as_django_sanitize(address: str) -> None:
    import smtplib

    assert envelope_address(address, "utf-8") == sanitize_address(address, "utf-8")
    if _PLAIN_ADDRESS.fullmatch(address):  # the plain case _prepare writes itself
        assert smtplib.quoteaddr(sanitize_address(address, "utf-8")) == f"<{address}>"


@pytest.mark.pure
@pytest.mark.parametrize("pipelining", [True, False])
def test_send_many__ready_called_before_each_handover__after_every_earlier_acceptance(settings, pipelining) -> None:  # type: ignore[no-untyped-def]
    sink = SmtpSink(pipelining=pipelining).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    yielded: list[int] = []
    seen_at_ready: list[tuple[int, int]] = []  # (outcomes yielded, messages accepted) at each ready()
    backend = EmailBackend()
    try:
        for index, _ in backend.send_many(_messages(6), ready=lambda: seen_at_ready.append((len(yielded), sink.total))):
            yielded.append(index)
    finally:
        backend.close()
        sink.stop()
    # Before message i is handed over, the i earlier outcomes were yielded (and recorded by
    # the caller) and no later message was accepted: one acceptance at a time.
    assert seen_at_ready == [(i, i) for i in range(6)]


# --- The session: RSET across batches, classification, timeouts, abort -------------------


class GreylistSink(SmtpSink):
    """aiosmtpd answering ``450`` at RCPT the first time it sees an address of
    ``greylist`` (greylisting, as Postgrey does), and accepting it afterwards."""

    def __init__(self, greylist: set[str], **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(**kwargs)
        self.greylist = set(greylist)
        self.seen: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # type: ignore[no-untyped-def]
        if address in self.greylist and address not in self.seen:
            self.seen.add(address)
            return "450 4.7.1 Greylisted, try again later"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


@pytest.fixture
def greylist_sink(settings):  # type: ignore[no-untyped-def]
    sink = GreylistSink({"m1@example.com", "n0@example.com"}).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    yield sink
    sink.stop()


@pytest.mark.pure
@pytest.mark.parametrize("pipelining", [True, False])
@pytest.mark.parametrize("refusal", ["550 5.1.1 No such user", "450 4.7.1 Greylisted"])
def test_send_many__batch_ends_with_a_refused_recipient__next_batch_on_the_session_is_accepted(
    settings, pipelining, refusal
) -> None:  # type: ignore[no-untyped-def]
    # Given a batch whose last recipient is refused at RCPT (the server's transaction stays open)
    sink = SmtpSink(pipelining=pipelining).start()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", sink.port
    sink.refuse["m1@example.com"] = refusal
    backend = EmailBackend()
    try:
        first = dict(backend.send_many(_messages(2)))
        # When the next batch goes out on the same session
        second = dict(backend.send_many(_messages(2, prefix="n")))
    finally:
        backend.close()
        sink.stop()
    # Then it follows a RSET: no "503 nested MAIL command", both accepted
    expected = PermanentError if refusal.startswith("5") else TransientError
    assert isinstance(first[0], SendResult) and isinstance(first[1], expected) and "RCPT" in str(first[1])
    assert all(isinstance(o, SendResult) for o in second.values()), second
    assert sink.unique == {"m-0", "n-0", "n-1"}


@pytest.mark.pure
def test_send_many__greylisted_then_next_batch_greylisted__both_transient_never_503_permanent(greylist_sink) -> None:  # type: ignore[no-untyped-def]
    backend = EmailBackend()
    try:
        first = dict(backend.send_many(_messages(2)))  # m1 greylisted: the batch ends on a refusal
        second = dict(backend.send_many(_messages(2, prefix="n")))  # n0 greylisted too
        again = dict(backend.send_many([_messages(2)[1], _messages(1, prefix="n")[0]]))  # retried later
    finally:
        backend.close()
    assert isinstance(first[1], TransientError) and "450" in str(first[1])
    assert isinstance(second[0], TransientError) and "450" in str(second[0]) and "503" not in str(second[0])
    assert isinstance(second[1], SendResult)
    assert all(isinstance(o, SendResult) for o in again.values())
    assert greylist_sink.unique == {"m-0", "m-1", "n-0", "n-1"} and greylist_sink.total == 4


@pytest.mark.pure
@pytest.mark.parametrize(
    ("command", "code", "permanent"),
    [
        ("RCPT", 550, True),  # the recipient: a hard bounce
        ("RCPT", 450, False),  # greylisting
        ("RCPT", 503, False),  # our own sequencing, never the recipient's fault
        ("MAIL", 503, False),  # "nested MAIL command"
        ("MAIL", 550, False),  # the relay refuses our sender: the same for every message
        ("RCPT", 552, False),  # "too many recipients": 452 (RFC 5321 4.5.3.1.10)
        ("DATA", 554, True),
        ("END", 554, True),  # the content refused
        ("END", 451, False),
        ("RSET", 500, False),
    ],
)
def test_reply_error__by_command__permanent_only_for_the_message_or_recipient(command, code, permanent) -> None:  # type: ignore[no-untyped-def]
    from campaigns.channels.smtp import reply_error

    error = reply_error(command, code, b"5.0.0 whatever")
    assert isinstance(error, PermanentError if permanent else TransientError)
    assert (error.smtp_command, error.smtp_code) == (command, code)


class StallingServer:
    """A raw SMTP server on loopback that answers the greeting, EHLO (with PIPELINING),
    MAIL, RCPT and DATA, then never answers again (a stalled or wedged MTA), recording
    every byte it reads."""

    def __init__(self) -> None:
        import socket
        import threading

        from tests.campaigns.peers import free_port

        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.received = b""
        self.closed_by_client = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        conn.sendall(b"220 stall ESMTP\r\n")
        answered = 0
        while True:
            chunk = conn.recv(65536)
            if not chunk:
                self.closed_by_client.set()
                return
            self.received += chunk
            lines = self.received.split(b"\r\n")
            commands = [line for line in lines[:-1] if line[:4].upper() in (b"EHLO", b"MAIL", b"RCPT", b"DATA")]
            for line in commands[answered:]:
                verb = line[:4].upper()
                if verb == b"EHLO":
                    conn.sendall(b"250-stall\r\n250 PIPELINING\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    answered = len(commands)
                    break
                else:
                    conn.sendall(b"250 ok\r\n")
            answered = max(answered, len(commands))

    def stop(self) -> None:
        self.listener.close()


@pytest.fixture
def stalling(settings):  # type: ignore[no-untyped-def]
    server = StallingServer()
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "127.0.0.1", server.port
    settings.EMAIL_USE_TLS = settings.EMAIL_USE_SSL = False
    settings.CAMPAIGNS = {"SMTP_COMMAND_TIMEOUT": "1", "SMTP_DATA_TIMEOUT": "1.5", "SMTP_CONNECT_TIMEOUT": "1"}
    yield server
    server.stop()


def _within(seconds: float, work) -> None:  # type: ignore[no-untyped-def]
    """Run ``work`` in a thread; fail (instead of hanging the suite) if it takes longer."""
    import threading

    errors: list[BaseException] = []

    def run() -> None:
        try:
            work()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still blocked after {seconds}s"
    if errors:
        raise errors[0]


@pytest.mark.pure
def test_send_many__server_stops_answering_after_the_content__transient_within_the_data_timeout(stalling) -> None:  # type: ignore[no-untyped-def]
    outcomes: list[tuple[int, object]] = []

    def work() -> None:
        backend = EmailBackend()
        try:
            outcomes.extend(backend.send_many(_messages(1)))
        finally:
            backend.close()

    started = time.monotonic()
    _within(10, work)
    assert 1.4 <= time.monotonic() - started < 5
    ((index, outcome),) = outcomes
    assert index == 0 and isinstance(outcome, TransientError)
    assert b"QUIT" not in stalling.received  # the session was aborted, not QUIT into a wedged server


@pytest.mark.pure
def test_backend_close__caller_fails_while_the_server_waits_for_data__socket_closed_without_quit(stalling) -> None:  # type: ignore[no-untyped-def]
    from django.db import OperationalError

    # Given the server waits for the message's content (354) and recording fails
    def ready() -> None:
        raise OperationalError("server closed the connection unexpectedly")

    def work() -> None:
        backend = EmailBackend()
        try:
            with pytest.raises(OperationalError):
                list(backend.send_many(_messages(1), ready=ready))
        finally:
            backend.close()  # what the sender does after a database error

    # When the batch ends: at once, the socket closed, nothing written into the DATA phase
    started = time.monotonic()
    _within(10, work)
    assert time.monotonic() - started < 1
    assert stalling.closed_by_client.wait(2)
    assert stalling.received.endswith(b"DATA\r\n") and b"QUIT" not in stalling.received


@pytest.mark.pure
def test_email_url_timeout__option_in_the_url__used_by_the_smtp_session() -> None:
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "EMAIL_URL": "smtp://127.0.0.1:2525?timeout=7",
    }
    code = (
        "import django; django.setup(); from campaigns import conf; c = conf.get(); "
        "print(c.smtp_connect_timeout, c.smtp_command_timeout, c.smtp_data_timeout)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["7.0", "7.0", "7.0"]


@pytest.mark.pure
@pytest.mark.parametrize(
    ("text", "html"),
    [
        # A paragraph joined by U+2028 (str.splitlines breaks there, SMTP does not): 1,386 bytes
        ("Hello\n" + "\u2028".join(["é" * 230] * 3) + "\nend", ""),
        ("Hello\nend", "<p>" + "\u2029".join(["é" * 230] * 3) + "</p>"),
        ("Hello\n" + "x" * 1200 + "\nend", "<p>" + "é" * 700 + "</p>"),
    ],
)
def test_send_many__line_over_998_bytes_or_u2028__every_physical_line_short_and_parses_cleanly(
    smtp_sink, text, html
) -> None:  # type: ignore[no-untyped-def]
    import email as email_lib
    from email import policy

    message = OutgoingMessage(key="long-1", channel="email", to="a@example.com", subject="Hi", text=text, html=html)
    backend = EmailBackend()
    try:
        ((_, outcome),) = list(backend.send_many([message]))
    finally:
        backend.close()
    assert isinstance(outcome, SendResult)
    raw = smtp_sink.messages[0]
    assert max(len(line) for line in re.split(rb"\r\n|\r|\n", raw)) <= 998
    parsed = email_lib.message_from_bytes(raw, policy=policy.default)
    assert all(not part.defects for part in parsed.walk())
    body = parsed.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert body.rstrip("\n") == text  # the transport's final line end aside
    if html:
        assert parsed.get_body(("html",)).get_content().replace("\r\n", "\n").rstrip("\n") == html
