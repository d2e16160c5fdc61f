"""Email through Django's email framework (SMTP in production, the database mailbox in the
demo, any ``EMAIL_BACKEND``). The delivery key is the Message-ID and the ``X-Delivery-Key``
header, so the receiving side can recognise a message resent after a crash.

Batches (``send_many``) on Django's SMTP backend use SMTP command pipelining (RFC 2920)
when the server advertises ``PIPELINING``, as production MTAs do: one message's content
and the next message's envelope (``MAIL``, ``RCPT``, ``DATA``) travel in one write, so a
message costs one round trip instead of four. The order of acceptances is unchanged: the
next message's content is written only after the previous message's ``250`` was read and
its outcome handed back to the caller (who records it). Without ``PIPELINING``, or with
any other email backend, each message goes through ``connection.send_messages``.
"""

from __future__ import annotations

import random
import re
import smtplib
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from email import generator
from email._policybase import Compat32
from email.utils import formatdate
from functools import lru_cache
from io import BytesIO
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection
from django.core.mail.backends.smtp import EmailBackend as DjangoSmtpBackend
from django.core.mail.message import sanitize_address, utf8_charset_qp

from campaigns import conf
from campaigns.channels.base import ChannelBackend, OutgoingMessage, PermanentError, SendResult, TransientError
from campaigns.channels.smtp import SmtpConfig, SmtpSession, reply_error

_LEADING_DOT = re.compile(rb"(?m)^\.")
# An address Django's ``sanitize_address`` returns unchanged: a dot-atom local part and a
# lower-case ASCII domain, no display name.
_PLAIN_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?"
)
_PLAIN_HEADER = re.compile(r"[\x21-\x7e]+(?: [\x21-\x7e]+)*")


class _Compat32(Compat32):
    """Python's ``compat32`` policy (the one Django's messages use), with a shortcut for the
    common header that needs no folding or encoding: printable ASCII words separated by
    single spaces, short enough for one line. It is written as is, which is exactly what
    ``email.header.Header.encode`` produces for it (a test compares the two), without
    building a ``Header`` per header per message."""

    def _fold(self, name: str, value: Any, sanitize: bool) -> str:
        if (
            isinstance(value, str)
            and len(name) + 2 + len(value) <= (self.max_line_length or 78)
            and _PLAIN_HEADER.fullmatch(value)
        ):
            return f"{name}: {value}{self.linesep}"
        return super()._fold(name, value, sanitize)


SMTP_POLICY = _Compat32(linesep="\r\n")


def message_bytes(email: EmailMessage) -> bytes:
    """The message as Django's SMTP backend sends it (``message().as_bytes(linesep="\r\n")``),
    generated with ``SMTP_POLICY``, except that no physical line exceeds RFC 5322's 998
    bytes (``_encode_long_lines``)."""
    mime = email.message()
    _encode_long_lines(mime)
    buffer = BytesIO()
    generator.BytesGenerator(buffer, mangle_from_=False, policy=SMTP_POLICY).flatten(mime)
    return buffer.getvalue()


_PHYSICAL_LINE = re.compile(rb"[^\r\n]{999}")  # a run of 999 bytes without a line end


def _encode_long_lines(mime: Any) -> None:
    """Quoted-printable for every text part with a physical line over 998 bytes. Django
    switches to quoted-printable for long lines, but it measures lines with
    ``str.splitlines()``, which also breaks at U+2028, U+2029, U+0085 and a few control
    characters: a 1,400-byte line holding a U+2028 went out as one 8bit line. Here lines
    are what SMTP sees: bytes between CR/LF."""
    for part in mime.walk():
        if part.is_multipart() or part.get_content_maintype() != "text":
            continue
        if str(part.get("Content-Transfer-Encoding", "")).lower() not in ("7bit", "8bit"):
            continue
        raw = part.get_payload(decode=True)
        if not isinstance(raw, bytes) or not _PHYSICAL_LINE.search(raw):
            continue
        del part["Content-Transfer-Encoding"]
        part.set_payload(raw.decode("utf-8", "surrogateescape"), charset=utf8_charset_qp)


# --- Building the common message directly ------------------------------------------------
#
# Django's ``EmailMessage.message()`` plus Python's ``BytesGenerator`` cost ~220 µs per
# message on this machine, a quarter of a message's sending time. ``direct_message_bytes``
# writes the same bytes (a test compares them with Django's for thousands of random
# messages) for the shape campaigns send: short printable-ASCII headers, a UTF-8 text body
# and optionally an HTML alternative, no line longer than RFC 5322's 998 bytes. Anything
# else (a non-ASCII or long subject, a display name needing encoding, a long line that
# Django would quoted-printable encode, another charset) returns ``None`` and goes through
# Django.

_NEWLINE = re.compile(rb"\r\n|\r|\n")
_MAX_LINE = 998  # RFC 5322 section 2.1.1; Django's RFC5322_EMAIL_LINE_LENGTH_LIMIT
_BOUNDARY_DIGITS = len(repr(sys.maxsize - 1))  # as email.generator._make_boundary


def _plain_header(name: str, value: str) -> bytes | None:
    """``name: value`` CRLF when the value is written unchanged (see ``_Compat32``)."""
    if len(name) + 2 + len(value) <= 78 and _PLAIN_HEADER.fullmatch(value):
        return f"{name}: {value}\r\n".encode("ascii")
    return None


def _text_part(text: str, subtype: str) -> tuple[bytes, bytes] | None:
    """(headers, body) of a ``SafeMIMEText`` in UTF-8 as the generator writes it: 7bit
    or 8bit by content, line ends CRLF; ``None`` when Django would encode it."""
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return None
    if len(raw) > _MAX_LINE and any(len(line) > _MAX_LINE for line in raw.splitlines()):
        return None
    encoding = b"7bit" if raw.isascii() else b"8bit"
    headers = (
        b"Content-Type: text/" + subtype.encode("ascii") + b'; charset="utf-8"\r\nMIME-Version: 1.0\r\n'
        b"Content-Transfer-Encoding: " + encoding + b"\r\n"
    )
    return headers, _NEWLINE.sub(b"\r\n", raw)


# Runs of characters ``Header.encode`` never splits inside (its split characters are
# ";, \t" and whitespace).
_WORD = re.compile(r"[^;, \t]+")


@lru_cache(maxsize=256)
def _folded_shape(name: str, shape: str) -> tuple[str, ...]:
    """compat32's folding of ``name: shape`` after the name, cut around its words:
    (separator, x-run, separator, x-run, …, separator)."""
    folded = SMTP_POLICY.fold(name, shape)[len(name) :]
    return tuple(re.split(r"(x+)", folded))


def _extra_header(name: str, value: str) -> bytes | None:
    """An extra ASCII header (List-Unsubscribe's URLs are often longer than one line)
    folded exactly as the generator folds it, or ``None`` for Django to encode.

    Folding through ``email.header.Header`` costs ~45 µs, a sizeable share of a message.
    Where it puts line breaks depends only on where the split characters are and how long
    the words between them are, never on the words' letters, and it never breaks inside a
    word: so the value's shape (each word replaced by as many ``x``) is folded once per
    shape and the words are put back in order. A test compares the result with Django's for
    random URLs and lengths."""
    plain = _plain_header(name, value)
    if plain is not None or not _PLAIN_HEADER.fullmatch(value):
        return plain
    words = _WORD.findall(value)
    parts = _folded_shape(name, _WORD.sub(lambda m: "x" * len(m.group()), value))
    if len(parts) != 2 * len(words) + 1:  # a word was split after all: fold for real
        return SMTP_POLICY.fold_binary(name, value)
    out = [name]
    for index, part in enumerate(parts):
        out.append(words[index // 2] if index % 2 else part)
    return "".join(out).encode("ascii")


def direct_message_bytes(
    *,
    subject: str,
    from_email: str,
    to: str,
    message_id: str,
    key: str,
    text: str,
    html: str = "",
    headers: Sequence[tuple[str, str]] = (),
) -> bytes | None:
    """What ``message_bytes`` makes of ``EmailBackend.email()``'s message, or ``None``."""
    if settings.DEFAULT_CHARSET.lower() != "utf-8" or not text:
        return None
    date = formatdate(localtime=settings.EMAIL_USE_LOCALTIME)
    lines = [
        _plain_header("Subject", subject),
        _plain_header("From", from_email),
        _plain_header("To", to),
        _plain_header("Date", date),
        _plain_header("Message-ID", message_id),
        _plain_header("X-Delivery-Key", key),
        *(_extra_header(name, value) for name, value in headers),
    ]
    if any(line is None for line in lines):
        return None
    common = b"".join(lines)  # type: ignore[arg-type]
    body = _text_part(text, "plain")
    if body is None:
        return None
    if not html:
        return body[0] + common + b"\r\n" + body[1]
    alternative = _text_part(html, "html")
    if alternative is None:
        return None
    boundary = ("=" * 15 + f"%0{_BOUNDARY_DIGITS}d" % random.randrange(sys.maxsize) + "==").encode("ascii")
    delimiter = b"--" + boundary
    if delimiter in body[1] or delimiter in alternative[1]:
        return None
    return b"".join(
        [
            b'Content-Type: multipart/alternative;\r\n boundary="' + boundary + b'"\r\nMIME-Version: 1.0\r\n',
            common,
            b"\r\n",
            delimiter + b"\r\n",
            body[0] + b"\r\n" + body[1],
            b"\r\n" + delimiter + b"\r\n",
            alternative[0] + b"\r\n" + alternative[1],
            b"\r\n" + delimiter + b"--\r\n",
        ]
    )


def envelope_address(address: str, encoding: str) -> str:
    """Django's ``sanitize_address``, skipping the parse for a plain address it would
    return unchanged."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return address
    return sanitize_address(address, encoding)


def _smtp_code(exc: BaseException) -> int | None:
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [value[0] for value in exc.recipients.values()]
        code = min(codes) if codes else None
    return code if isinstance(code, int) else None


@dataclass(frozen=True)
class _Prepared:
    mail: bytes  # MAIL FROM:<…> CRLF
    rcpt: bytes  # RCPT TO:<…> CRLF
    data: bytes  # the message, dot-stuffed and terminated by CRLF "." CRLF

    @property
    def envelope(self) -> bytes:
        """MAIL, RCPT and DATA in one write (pipelining)."""
        return self.mail + self.rcpt + b"DATA\r\n"


class _SessionFailed(Exception):
    """A reply that ends the session (421, a refused RSET): abort, the message is retried."""

    def __init__(self, error: TransientError) -> None:
        super().__init__(str(error))
        self.error = error


# A batch reconnects after a broken session; after this many broken sessions in one batch
# its remaining messages are retried later instead (a server that accepts connections and
# then stalls must not cost one timeout per message).
MAX_SESSIONS_PER_BATCH = 3


class EmailBackend(ChannelBackend):
    channel = "email"

    def __init__(self) -> None:
        self.settings = conf.get()
        self.connection: Any = None  # the Django email backend (used as is unless it is Django's SMTP one)
        self.session: SmtpSession | None = None  # Django's SMTP backend's settings, our session
        self._senders: dict[tuple[str, str], str] = {}

    def _django_backend(self) -> Any:
        if self.connection is None:
            self.connection = get_connection(backend=self.settings.email_backend, fail_silently=False)
        return self.connection

    def smtp_config(self) -> SmtpConfig | None:
        """Where and how to talk SMTP, from Django's SMTP backend's resolved settings
        (``EMAIL_HOST`` … as ``EMAIL_URL`` sets them) and the timeouts of ``campaigns.conf``;
        ``None`` for any other email backend (the demo's mailbox, a test's locmem)."""
        backend = self._django_backend()
        if not isinstance(backend, DjangoSmtpBackend):
            return None
        timeouts = self.settings
        return SmtpConfig(
            host=backend.host,
            port=int(backend.port),
            username=backend.username or "",
            password=backend.password or "",
            use_tls=bool(backend.use_tls),
            use_ssl=bool(backend.use_ssl),
            ssl_context=backend.ssl_context if (backend.use_tls or backend.use_ssl) else None,
            connect_timeout=timeouts.smtp_connect_timeout,
            command_timeout=timeouts.smtp_command_timeout,
            data_timeout=timeouts.smtp_data_timeout,
        )

    def open(self) -> None:
        config = self.smtp_config()
        if config is None:
            try:
                self.connection.open()
            except (smtplib.SMTPException, OSError) as exc:
                self.connection = None
                raise TransientError(f"Email connection failed: {exc}") from exc
            return
        if self.session is None:
            self.session = SmtpSession(config)
        if not self.session.is_open:
            self.session.open()

    def close(self) -> None:
        if self.session is not None:
            self.session.close()  # QUIT between transactions, else abort
            self.session = None
        elif self.connection is not None:
            try:
                self.connection.close()
            except (smtplib.SMTPException, OSError):
                pass
        self.connection = None

    def abort(self) -> None:
        """Drop the connection without a word (the caller failed mid-batch)."""
        if self.session is not None:
            self.session.abort()
            self.session = None
        self.close()

    def message_id(self, message: OutgoingMessage) -> str:
        return f"<{message.key}@{self.settings.message_id_domain}>"

    def email(self, message: OutgoingMessage) -> EmailMessage:
        headers = {"Message-ID": self.message_id(message), "X-Delivery-Key": message.key, **dict(message.headers)}
        cls = EmailMultiAlternatives if message.html else EmailMessage
        email = cls(
            subject=message.subject,
            body=message.text,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[message.to],
            headers=headers,
            connection=self.connection,
        )
        if message.html:
            email.attach_alternative(message.html, "text/html")
        return email

    def send(self, message: OutgoingMessage) -> SendResult:
        if self.smtp_config() is not None:  # one message through the same session as batches
            ((_, outcome),) = list(self.send_many([message]))
            if isinstance(outcome, Exception):
                raise outcome
            return outcome
        if self.connection is None:
            self.open()
        email = self.email(message)
        try:
            sent = self.connection.send_messages([email])
        except (smtplib.SMTPException, OSError) as exc:
            code = _smtp_code(exc)
            self.close()  # a broken session must not be reused for the next message
            if code is not None and 500 <= code < 600:
                command = {
                    smtplib.SMTPRecipientsRefused: "RCPT",
                    smtplib.SMTPDataError: "DATA",
                    smtplib.SMTPSenderRefused: "MAIL",
                }.get(type(exc), "")
                raise PermanentError(f"Email {code}: {exc}", smtp_code=code, smtp_command=command) from exc
            raise TransientError(f"Email error{f' {code}' if code else ''}: {exc}") from exc
        if not sent:
            raise TransientError("The email backend accepted no message.")
        return SendResult(provider_ref=self.message_id(message))

    # --- batches ------------------------------------------------------------------------

    def message_bytes(self, message: OutgoingMessage) -> bytes:
        """The message as Django would send it (built directly when it can be), every
        physical line within RFC 5322's 998 bytes."""
        direct = direct_message_bytes(
            subject=message.subject,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=message.to,
            message_id=self.message_id(message),
            key=message.key,
            text=message.text,
            html=message.html,
            headers=message.headers,
        )
        return direct if direct is not None else message_bytes(self.email(message))

    def _prepare(self, message: OutgoingMessage) -> _Prepared:
        from_email, encoding = settings.DEFAULT_FROM_EMAIL, settings.DEFAULT_CHARSET  # as self.email()'s
        try:
            mail_from = self._senders.get((from_email, encoding))
            if mail_from is None:
                sender = smtplib.quoteaddr(envelope_address(from_email, encoding))
                mail_from = self._senders[(from_email, encoding)] = f"MAIL FROM:{sender}\r\n"
            if _PLAIN_ADDRESS.fullmatch(message.to):
                recipient = f"<{message.to}>"  # what sanitize_address and quoteaddr make of it
            else:
                recipient = smtplib.quoteaddr(sanitize_address(message.to, encoding))
            mail = mail_from.encode("ascii")
            rcpt = f"RCPT TO:{recipient}\r\n".encode("ascii")
        except (ValueError, UnicodeError) as exc:
            raise PermanentError(f"Invalid address: {exc}") from exc
        data = _LEADING_DOT.sub(b"..", self.message_bytes(message))
        if not data.endswith(b"\r\n"):
            data += b"\r\n"
        return _Prepared(mail=mail, rcpt=rcpt, data=data + b".\r\n")

    def send_many(
        self, messages: Sequence[OutgoingMessage], *, ready: Callable[[], object] | None = None
    ) -> Iterator[tuple[int, SendResult | Exception]]:
        if self.smtp_config() is None:
            yield from super().send_many(messages, ready=ready)
            return
        start = sessions = 0
        while start < len(messages):
            if sessions >= MAX_SESSIONS_PER_BATCH:
                error = TransientError(f"Not tried: the SMTP session broke {sessions} times in this batch.")
                for index in range(start, len(messages)):
                    yield index, error
                return
            sessions += 1
            try:
                self.open()
            except TransientError as exc:  # the server is unreachable: every message waits
                for index in range(start, len(messages)):
                    yield index, exc
                return
            done = start
            for index, outcome in self._transactions(messages, start, ready):
                done = index + 1
                yield index, outcome
            start = done

    def _transactions(
        self, messages: Sequence[OutgoingMessage], start: int, ready: Callable[[], object] | None
    ) -> Iterator[tuple[int, SendResult | Exception]]:
        """Send ``messages[start:]`` on the open session, one transaction each. With
        PIPELINING a message's content and the next envelope travel in one write (after
        ``ready()``), and while the server works the message after next is built; without
        it each command waits for its reply. A session-level failure aborts the session and
        ends the generator after yielding the message it hit (a ``TransientError``: if its
        content was written, it is in doubt and resent later with the same key). Any
        other exception (the caller's ``ready()`` failing, the generator closed early)
        aborts the session if a transaction is open, and propagates."""
        session = self.session
        assert session is not None
        built: dict[int, _Prepared | PermanentError] = {}

        def build(index: int) -> None:
            if index < len(messages) and index not in built:
                try:
                    built[index] = self._prepare(messages[index])
                except PermanentError as exc:
                    built[index] = exc

        wire: tuple[int, _Prepared, bool] | None = None  # an envelope written, replies unread; RSET before it
        index = start
        try:
            while index < len(messages):
                refused_next: PermanentError | None = None
                try:
                    if wire is None:
                        build(index)
                        item = built.pop(index)
                        if isinstance(item, PermanentError):
                            yield index, item
                            index += 1
                            continue
                        after_reset = session.needs_rset
                        if session.pipelining:
                            session.send((b"RSET\r\n" if after_reset else b"") + item.envelope)
                        wire = (index, item, after_reset)
                    _, item, after_reset = wire
                    wire = None
                    refusal = self._envelope(session, item, after_reset)
                    if refusal is not None:
                        session.needs_rset = True  # the server may hold the transaction open
                        session.idle()
                        outcome: SendResult | Exception = refusal
                    else:
                        following: _Prepared | None = None
                        if session.pipelining:
                            build(index + 1)
                            candidate = built.pop(index + 1, None)
                            if isinstance(candidate, PermanentError):
                                refused_next = candidate
                            else:
                                following = candidate
                        if ready is not None:
                            ready()  # every outcome yielded so far is recorded: hand this one over
                        # This message's content and, pipelining, the next envelope in one write.
                        session.send(item.data + (following.envelope if following is not None else b""))
                        if following is not None:
                            wire = (index + 1, following, False)
                        if session.pipelining:
                            build(index + 2)  # while the server works on this one
                        code, text = session.reply(data=True)
                        if wire is None:
                            session.idle()
                        if code == 421:
                            raise _SessionFailed(TransientError(f"SMTP {code} (after the message): {_text(text)}"))
                        outcome = (
                            SendResult(provider_ref=self.message_id(messages[index]))
                            if 200 <= code < 300
                            else reply_error("END", code, text)
                        )
                except (smtplib.SMTPException, OSError) as exc:
                    session.abort()
                    yield index, TransientError(f"SMTP error: {exc!r}")
                    return
                except _SessionFailed as exc:
                    session.abort()
                    yield index, exc.error
                    return
                yield index, outcome
                index += 1
                if refused_next is not None:
                    yield index, refused_next
                    index += 1
        except BaseException:
            if session.busy:
                session.abort()  # never QUIT into an open transaction
            raise

    @staticmethod
    def _envelope(session: SmtpSession, item: _Prepared, after_reset: bool) -> Exception | None:
        """Read (pipelining) or run one command at a time (otherwise) RSET if due, MAIL,
        RCPT and DATA; ``None`` once the server waits for the content (354), else the
        refusal classified by the first command refused (the later replies of a pipelined
        group are its consequences: ``503 need RCPT``, ``554 no valid recipients``)."""
        pipelined = session.pipelining
        if after_reset:
            if not pipelined:
                session.send(b"RSET\r\n")
            code, text = session.reply()
            if not 200 <= code < 300:
                raise _SessionFailed(reply_error("RSET", code, text))  # type: ignore[arg-type]
            session.needs_rset = False
        refusal: Exception | None = None
        for command, line, expected in (("MAIL", item.mail, 250), ("RCPT", item.rcpt, 250), ("DATA", b"DATA\r\n", 354)):
            if not pipelined:
                if refusal is not None:
                    break
                session.send(line)
            code, text = session.reply()
            if code == 421:
                raise _SessionFailed(TransientError(f"SMTP {code} (after {command}): {_text(text)}"))
            ok = code == expected if command == "DATA" else 200 <= code < 300
            if not ok and refusal is None:
                refusal = reply_error(command, code, text)
            elif command == "DATA" and code == 354 and refusal is not None:  # a server that waits for content anyway
                raise _SessionFailed(TransientError(f"SMTP 354 after a refused {refusal}"))
        return refusal


def _text(text: bytes) -> str:
    return text.decode("utf-8", "replace")
