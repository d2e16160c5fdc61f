"""The channel backend interface.

A backend sends one message at a time inside an ``open()``/``close()`` session (one SMTP
or HTTP connection for a whole batch). It returns a ``SendResult`` on success and raises
``TransientError`` (retry later, optionally not before ``retry_after`` seconds) or
``PermanentError`` (never retry). Every message carries its delivery key, which a backend
must pass to the provider as its idempotency key, so a message resent after a crash (in
doubt) is recognised by the provider as the same message.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.utils.module_loading import import_string

from campaigns import conf


@dataclass(frozen=True)
class OutgoingMessage:
    key: str
    channel: str
    to: str
    subject: str = ""
    title: str = ""
    text: str = ""
    html: str = ""


@dataclass(frozen=True)
class SendResult:
    provider_ref: str = ""


class TransientError(Exception):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(Exception):
    pass


class ChannelBackend:
    channel: str = ""

    def open(self) -> None:
        """Open connections for a batch."""

    def close(self) -> None:
        """Close what ``open`` opened."""

    def send(self, message: OutgoingMessage) -> SendResult:
        raise NotImplementedError


def get_backend(channel: str) -> ChannelBackend:
    settings = conf.get()
    path = {
        "email": "campaigns.channels.email.EmailBackend",
        "sms": settings.sms_backend,
        "push": settings.push_backend,
        "in_app": "campaigns.channels.inapp.InAppBackend",
    }[channel]
    return import_string(path)()
