"""Email through Django's email framework (SMTP in production, the database mailbox in the
demo, any ``EMAIL_BACKEND``). The delivery key is the Message-ID and the ``X-Delivery-Key``
header, so the receiving side can recognise a message resent after a crash."""

from __future__ import annotations

import smtplib
from typing import Any

from django.conf import settings
from django.core.mail import EmailMessage, EmailMultiAlternatives, get_connection

from campaigns import conf
from campaigns.channels.base import ChannelBackend, OutgoingMessage, PermanentError, SendResult, TransientError


def _smtp_code(exc: BaseException) -> int | None:
    code = getattr(exc, "smtp_code", None)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        codes = [value[0] for value in exc.recipients.values()]
        code = min(codes) if codes else None
    return code if isinstance(code, int) else None


class EmailBackend(ChannelBackend):
    channel = "email"

    def __init__(self) -> None:
        self.settings = conf.get()
        self.connection: Any = None

    def open(self) -> None:
        if self.connection is None:
            self.connection = get_connection(backend=self.settings.email_backend, fail_silently=False)
        try:
            self.connection.open()
        except (smtplib.SMTPException, OSError) as exc:
            self.connection = None
            raise TransientError(f"SMTP connection failed: {exc}") from exc

    def close(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except (smtplib.SMTPException, OSError):
                pass
            self.connection = None

    def send(self, message: OutgoingMessage) -> SendResult:
        if self.connection is None:
            self.open()
        message_id = f"<{message.key}@{self.settings.message_id_domain}>"
        headers = {"Message-ID": message_id, "X-Delivery-Key": message.key}
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
        try:
            sent = self.connection.send_messages([email])
        except (smtplib.SMTPException, OSError) as exc:
            code = _smtp_code(exc)
            # A broken session must not be reused for the next message.
            self.close()
            if code is not None and 500 <= code < 600:
                raise PermanentError(f"SMTP {code}: {exc}") from exc
            raise TransientError(f"SMTP error{f' {code}' if code else ''}: {exc}") from exc
        if not sent:
            raise TransientError("The email backend accepted no message.")
        return SendResult(provider_ref=message_id)
