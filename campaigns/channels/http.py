"""SMS and push through an HTTP provider: ``POST`` JSON with ``Idempotency-Key`` set to the
delivery key and an optional bearer token.

Answers: 2xx sent (the provider's ``id`` is kept); 429 and 503 with ``Retry-After``, other
5xx, 408 and network errors are transient (retried with backoff, never sooner than
``Retry-After``); any other 4xx is permanent (failed, no retry).

Request body: SMS ``{"to": "+33…", "text": "…"}``; push ``{"to": "<token>", "title": "…",
"body": "…"}``. Configure with CAMPAIGNS_SMS_URL / CAMPAIGNS_SMS_TOKEN and
CAMPAIGNS_PUSH_URL / CAMPAIGNS_PUSH_TOKEN.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import time
import urllib.parse
from typing import Any

from campaigns import conf
from campaigns.channels.base import ChannelBackend, OutgoingMessage, PermanentError, SendResult, TransientError


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpProviderBackend(ChannelBackend):
    url_setting = ""
    token_setting = ""

    def __init__(self) -> None:
        settings = conf.get()
        self.url = getattr(settings, self.url_setting)
        self.token = getattr(settings, self.token_setting)
        self.timeout = settings.http_timeout
        self.connection: http.client.HTTPConnection | None = None

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        raise NotImplementedError

    def open(self) -> None:
        if not self.url:
            raise PermanentError(f"No {self.channel} provider configured (set CAMPAIGNS_{self.channel.upper()}_URL).")
        parts = urllib.parse.urlsplit(self.url)
        cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        self.connection = cls(parts.netloc, timeout=self.timeout)
        self._path = parts.path or "/"
        if parts.query:
            self._path += f"?{parts.query}"

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None

    def send(self, message: OutgoingMessage) -> SendResult:
        if self.connection is None:
            self.open()
        assert self.connection is not None
        body = json.dumps(self.payload(message)).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": message.key}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        try:
            self.connection.request("POST", self._path, body=body, headers=headers)
            response = self.connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise TransientError(f"{self.channel} provider unreachable: {exc!r}") from exc
        status = response.status
        if response.getheader("Connection", "").lower() == "close":
            self.close()
        if 200 <= status < 300:
            try:
                ref = str(json.loads(data or b"{}").get("id", ""))
            except (ValueError, AttributeError):
                ref = ""
            return SendResult(provider_ref=ref[:200])
        detail = data[:200].decode("utf-8", "replace")
        if status in (408, 429) or status >= 500:
            raise TransientError(
                f"{self.channel} provider answered {status}: {detail}",
                retry_after=parse_retry_after(response.getheader("Retry-After")),
            )
        raise PermanentError(f"{self.channel} provider answered {status}: {detail}")


class SmsBackend(HttpProviderBackend):
    channel = "sms"
    url_setting = "sms_url"
    token_setting = "sms_token"

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        return {"to": message.to, "text": message.text}


class PushBackend(HttpProviderBackend):
    channel = "push"
    url_setting = "push_url"
    token_setting = "push_token"

    def payload(self, message: OutgoingMessage) -> dict[str, Any]:
        return {"to": message.to, "title": message.title, "body": message.text}
