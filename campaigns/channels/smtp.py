"""The SMTP session under the email channel's batch path: timeouts on every read and
write, a session aborted (socket closed) rather than QUIT into a half-finished
transaction, RSET remembered across batches, and every reply classified by the command
it answers.

Connecting, TLS and AUTH are the standard library's (``smtplib``); what is hand-written is
the transaction loop in ``campaigns.channels.email`` (command pipelining, RFC 2920, one
message's content and the next envelope in one write), which ``smtplib.sendmail`` cannot
do. This module gives it the state it needs:

- **Timeouts.** ``connect`` bounds the TCP connect and the greeting, ``command`` every other
  reply (EHLO, MAIL, RCPT, DATA, RSET, QUIT) and every write, ``data`` the reply to the end
  of a message's content (the server may scan it). Without them a server that stops
  answering holds a worker process for as long as the server's own timeout (Postfix's
  ``smtpd_timeout`` is 300 s).
- **Abort, not QUIT.** After any error in the middle of a transaction (a timeout, a
  database error in the caller while the server waits for content, an unexpected reply)
  the session's state is unknown: a QUIT written while the server waits for message data
  is read as data, and the client then waits for a reply that never comes. ``abort``
  closes the socket; ``close`` sends QUIT only when no transaction is open and no reply
  is outstanding.
- **RSET across batches.** A transaction refused before its content (a recipient refused
  at RCPT, then DATA refused) leaves the server in the middle of a transaction: the next
  MAIL must follow a RSET or the server answers ``503 nested MAIL command``. The flag lives
  on the session, not on one batch's loop, so the next batch on the same connection sends
  it too.
- **Classification by command** (``reply_error``): see its docstring.
"""

from __future__ import annotations

import smtplib
import ssl
from dataclasses import dataclass
from typing import Any

from campaigns.channels.base import PermanentError, TransientError


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    username: str = ""
    password: str = ""
    use_tls: bool = False
    use_ssl: bool = False
    ssl_context: ssl.SSLContext | None = None
    connect_timeout: float = 10.0
    command_timeout: float = 30.0
    data_timeout: float = 60.0


class SmtpError(TransientError):
    """A reply that refuses a message, with the command it answered and its code, so a
    caller can tell a recipient refused at RCPT (a hard bounce if 5xx) from a session
    problem. ``PermanentError`` subclasses carry the same attributes (``SmtpRefused``)."""

    def __init__(self, message: str, *, code: int | None = None, command: str = "") -> None:
        super().__init__(message)
        self.smtp_code = code
        self.smtp_command = command


class SmtpRefused(PermanentError):
    def __init__(self, message: str, *, code: int, command: str) -> None:
        super().__init__(message, smtp_code=code, smtp_command=command)


# Commands whose refusal with a 5xx is about the message or its recipient (never retried);
# a 5xx to anything else (the greeting, EHLO, MAIL, RSET) is about the session or the
# sender, the same for every message, and is retried for the channel's retry period.
_PERMANENT_5XX = {"RCPT", "DATA", "END"}


def reply_error(command: str, code: int, text: bytes | str) -> TransientError | PermanentError:
    """The outcome of a refusal, by the command it answers (RFC 5321 section 4.2, 4.3.2):

    - 4xx: transient everywhere (greylisting answers 450 at RCPT);
    - 503 and the other 5.5.x sequence/syntax replies that only our own sequencing can
      cause (``503 nested MAIL command``, ``503 need RCPT``): transient; the session is
      reset before its next transaction. Never a failure of the recipient;
    - 5xx to RCPT (the recipient), to DATA after an accepted recipient, or to the end of
      the content (``END``: the message itself): permanent;
    - 5xx to MAIL, RSET, EHLO or the greeting: the server refuses our sender or session,
      the same for every message: transient (retried, then ``gave_up``), so a relay's
      misconfiguration never fails a campaign's recipients for good;
    - 421 (the server is closing the session): transient.
    """
    detail = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    message = f"SMTP {code} (after {command}): {detail}"
    if command == "RCPT" and code == 552:  # "too many recipients": to be treated as 452 (RFC 5321 4.5.3.1.10)
        return SmtpError(message, code=code, command=command)
    if 500 <= code < 600 and code != 503 and command in _PERMANENT_5XX:
        return SmtpRefused(message, code=code, command=command)
    return SmtpError(message, code=code, command=command)


class SmtpSession:
    """One SMTP connection (see the module docstring). ``busy`` is true from the first
    command of a transaction until its last reply is read; while it is, the only way out is
    ``abort``."""

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.smtp: smtplib.SMTP | None = None
        self.pipelining = False
        self.busy = False
        self.needs_rset = False
        self._timeout: float | None = None  # the socket's, set only when it changes (two syscalls)

    @property
    def is_open(self) -> bool:
        return self.smtp is not None and self.smtp.sock is not None

    def open(self) -> None:
        """Connect, greet, STARTTLS and AUTH as configured. Raises ``TransientError``."""
        config = self.config
        smtp: smtplib.SMTP | None = None
        try:
            if config.use_ssl:
                smtp = smtplib.SMTP_SSL(
                    config.host, config.port, timeout=config.connect_timeout, context=config.ssl_context
                )
            else:
                smtp = smtplib.SMTP(config.host, config.port, timeout=config.connect_timeout)
            assert smtp.sock is not None
            smtp.sock.settimeout(config.command_timeout)
            smtp.ehlo()
            if config.use_tls:
                smtp.starttls(context=config.ssl_context)
                assert smtp.sock is not None
                smtp.sock.settimeout(config.command_timeout)
                smtp.ehlo()
            if config.username and config.password:
                smtp.login(config.username, config.password)
        except (smtplib.SMTPException, OSError, ValueError) as exc:
            if smtp is not None:
                _close_socket(smtp)
            raise TransientError(f"SMTP connection to {config.host}:{config.port} failed: {exc}") from exc
        self.smtp = smtp
        self._timeout = config.command_timeout
        self.pipelining = bool(smtp.does_esmtp and smtp.has_extn("pipelining"))
        self.busy = self.needs_rset = False

    def send(self, data: bytes) -> None:
        """Write ``data`` (a command, a pipelined group, a message's content). The session
        is busy until every reply it asks for is read."""
        assert self.smtp is not None and self.smtp.sock is not None
        self.busy = True
        self._set_timeout(self.config.command_timeout)
        self.smtp.sock.sendall(data)

    def reply(self, *, data: bool = False) -> tuple[int, bytes]:
        """The next reply, within the command timeout (the data timeout for the reply to the
        end of a message's content). A timeout or a closed connection raises ``OSError`` /
        ``smtplib.SMTPServerDisconnected``; the caller aborts."""
        assert self.smtp is not None and self.smtp.sock is not None
        self._set_timeout(self.config.data_timeout if data else self.config.command_timeout)
        return self.smtp.getreply()

    def _set_timeout(self, seconds: float) -> None:
        if seconds != self._timeout:
            assert self.smtp is not None and self.smtp.sock is not None
            self.smtp.sock.settimeout(seconds)
            self._timeout = seconds

    def idle(self) -> None:
        """Every reply of the last transaction was read."""
        self.busy = False

    def abort(self) -> None:
        """Close the socket without a word (see the module docstring)."""
        if self.smtp is not None:
            _close_socket(self.smtp)
        self.smtp = None
        self.busy = self.needs_rset = False

    def close(self) -> None:
        """QUIT if the session is between transactions (bounded by the command timeout),
        else abort."""
        if self.smtp is None:
            return
        if not self.busy and self.smtp.sock is not None:
            try:
                self.send(b"QUIT\r\n")
                self.reply()
            except (smtplib.SMTPException, OSError):
                pass
        self.abort()


def _close_socket(smtp: Any) -> None:
    try:
        smtp.close()  # smtplib's close: the file and the socket, nothing written
    except OSError:
        pass
