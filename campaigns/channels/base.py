"""The channel backend interface.

A backend sends messages inside an ``open()``/``close()`` session (one SMTP or HTTP
connection for a whole batch). ``send`` sends one message: it returns a ``SendResult`` on
success and raises ``TransientError`` (retry later, optionally not before ``retry_after``
seconds) or ``PermanentError`` (never retry). ``send_many`` sends a sequence and yields each
message's outcome as soon as the provider has answered for it; before it hands each message
over it calls ``ready()``, which returns once every outcome yielded so far is recorded. So
at most one message per process is ever accepted by a provider and not yet recorded. A
backend may overlap everything else with the provider's work (SMTP PIPELINING, building
the next message), never two acceptances.

Every message carries its delivery key, which a backend must pass to the provider as its
idempotency key, so a message resent after a crash (in doubt) is recognised by the provider
as the same message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from django.utils.module_loading import import_string

from campaigns import conf

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OutgoingMessage:
    key: str
    channel: str
    to: str
    subject: str = ""
    title: str = ""
    text: str = ""
    html: str = ""
    # Extra headers (email): e.g. List-Unsubscribe and List-Unsubscribe-Post (RFC 8058).
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class SendResult:
    provider_ref: str = ""


class TransientError(Exception):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    """``smtp_code`` and ``smtp_command`` say which SMTP reply refused the message, when it
    was one: the reply's code and the command it answered ("MAIL", "RCPT", "DATA", or "END"
    for the end of the content). A 5xx at RCPT, DATA or END (503 excluded) is a hard bounce
    and suppresses the address (``campaigns.services.suppression``). The same two names are
    on ``campaigns.channels.smtp.SmtpError`` (a transient refusal)."""

    def __init__(self, message: str = "", *, smtp_code: int | None = None, smtp_command: str = "") -> None:
        super().__init__(message)
        self.smtp_code = smtp_code
        self.smtp_command = smtp_command


class ChannelBackend:
    channel: str = ""

    def open(self) -> None:
        """Open connections for a batch."""

    def close(self) -> None:
        """Close what ``open`` opened."""

    def send(self, message: OutgoingMessage) -> SendResult:
        raise NotImplementedError

    def send_many(
        self, messages: Sequence[OutgoingMessage], *, ready: Callable[[], object] | None = None
    ) -> Iterator[tuple[int, SendResult | Exception]]:
        """Yield ``(index, SendResult | TransientError | PermanentError)`` per message, in
        order, calling ``ready()`` before each message is handed over. An unexpected
        exception becomes a ``TransientError`` (retried, then failed visibly)."""
        for index, message in enumerate(messages):
            if ready is not None:
                ready()
            try:
                outcome: SendResult | Exception = self.send(message)
            except (TransientError, PermanentError) as exc:
                outcome = exc
            except Exception as exc:  # an unexpected backend failure is retried, then fails visibly
                logger.exception("unexpected error sending %s", message.key)
                outcome = TransientError(f"{type(exc).__name__}: {exc}")
            yield index, outcome


def get_backend(channel: str) -> ChannelBackend:
    settings = conf.get()
    path = {
        "email": "campaigns.channels.email.EmailBackend",
        "sms": settings.sms_backend,
        "push": settings.push_backend,
        "in_app": "campaigns.channels.inapp.InAppBackend",
    }[channel]
    return import_string(path)()
