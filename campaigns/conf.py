"""Delivery and provider settings, read from ``settings.CAMPAIGNS`` (a dict, if the project
sets one) or else from the environment. Read on each call so tests and workers started with
different environments see their own values.

| Variable | Default | Meaning |
| --- | --- | --- |
| CAMPAIGNS_TASK_BATCH | 1000 | recipients per delivery task |
| CAMPAIGNS_CLAIM_CHUNK | 100 | rows claimed per conditional UPDATE inside a task |
| CAMPAIGNS_LEASE_SECONDS | 600 | a claimed row not finished by then is in doubt and resent (same key) |
| CAMPAIGNS_REQUEUE_AFTER_SECONDS | 120 | the sweeper re-enqueues pending rows due and not enqueued for this long |
| CAMPAIGNS_RETRY_BASE_SECONDS | 30 | first retry delay; doubles per try, with jitter |
| CAMPAIGNS_RETRY_MAX_SECONDS | 900 | longest backoff delay (a provider's Retry-After may ask for more) |
| CAMPAIGNS_RETRY_PERIOD_EMAIL | 86400 | seconds a deferred email is retried after its first try (0: count tries) |
| CAMPAIGNS_RETRY_PERIOD_SMS / _PUSH | 0 | the same for SMS and push; 0: the campaign's ``max_attempts`` tries |
| CAMPAIGNS_RETRY_AFTER_MAX_SECONDS | 86400 | the longest ``Retry-After`` honoured (a longer one is cut to this) |
| CAMPAIGNS_SMTP_CONNECT_TIMEOUT | EMAIL_TIMEOUT or 10 | seconds for the TCP connect and the server's greeting |
| CAMPAIGNS_SMTP_COMMAND_TIMEOUT | EMAIL_TIMEOUT or 30 | seconds for any other SMTP reply, and any write |
| CAMPAIGNS_SMTP_DATA_TIMEOUT | EMAIL_TIMEOUT or 60 | seconds for the reply to a message's content |
| CAMPAIGNS_SMS_URL / CAMPAIGNS_SMS_TOKEN | — | SMS provider endpoint (POST JSON) and bearer token |
| CAMPAIGNS_PUSH_URL / CAMPAIGNS_PUSH_TOKEN | — | push provider endpoint and bearer token |
| CAMPAIGNS_HTTP_TIMEOUT | 10 | seconds per provider request |
| CAMPAIGNS_EMAIL_BACKEND | EMAIL_BACKEND | the Django email backend used for campaign email |
| CAMPAIGNS_SMS_BACKEND | campaigns.channels.http.SmsBackend | dotted path of the SMS channel backend |
| CAMPAIGNS_PUSH_BACKEND | campaigns.channels.http.PushBackend | dotted path of the push channel backend |
| CAMPAIGNS_MESSAGE_ID_DOMAIN | growth.local | the domain part of email Message-IDs |
| CAMPAIGNS_SITE_URL | http://localhost:8000 | the public base URL of this site, for unsubscribe and preference links |
| CAMPAIGNS_UNSUBSCRIBE_MAILTO | — | optional address for the ``mailto:`` form of ``List-Unsubscribe`` |
| CAMPAIGNS_SMS_OPT_OUT_TEXT | Reply STOP to opt out. | appended to every marketing SMS |
| CAMPAIGNS_SMS_INBOUND_SECRET | — | HMAC-SHA256 key of the inbound SMS (STOP) webhook; unset: refused |
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from django.conf import settings


def _get(name: str, default: str) -> str:
    overrides = getattr(settings, "CAMPAIGNS", None) or {}
    if name in overrides:
        return str(overrides[name])
    return os.environ.get(f"CAMPAIGNS_{name}", default)


@dataclass(frozen=True)
class CampaignSettings:
    task_batch: int
    claim_chunk: int
    lease_seconds: float
    requeue_after_seconds: float
    retry_base_seconds: float
    retry_max_seconds: float
    sms_url: str
    sms_token: str
    push_url: str
    push_token: str
    http_timeout: float
    email_backend: str
    sms_backend: str
    push_backend: str
    message_id_domain: str
    site_url: str
    unsubscribe_mailto: str
    sms_opt_out_text: str
    sms_inbound_secret: str
    retry_periods: dict[str, float]
    retry_after_max_seconds: float
    smtp_connect_timeout: float
    smtp_command_timeout: float
    smtp_data_timeout: float

    def retry_period(self, channel: str) -> float:
        """Seconds a deferred message of ``channel`` is retried after its first try; 0 when
        the channel counts tries (``max_attempts``) instead."""
        return self.retry_periods.get(channel, 0.0)


def get() -> CampaignSettings:
    email_timeout = getattr(settings, "EMAIL_TIMEOUT", None)
    return CampaignSettings(
        task_batch=int(_get("TASK_BATCH", "1000")),
        claim_chunk=int(_get("CLAIM_CHUNK", "100")),
        lease_seconds=float(_get("LEASE_SECONDS", "600")),
        requeue_after_seconds=float(_get("REQUEUE_AFTER_SECONDS", "120")),
        retry_base_seconds=float(_get("RETRY_BASE_SECONDS", "30")),
        retry_max_seconds=float(_get("RETRY_MAX_SECONDS", "900")),
        sms_url=_get("SMS_URL", ""),
        sms_token=_get("SMS_TOKEN", ""),
        push_url=_get("PUSH_URL", ""),
        push_token=_get("PUSH_TOKEN", ""),
        http_timeout=float(_get("HTTP_TIMEOUT", "10")),
        email_backend=_get("EMAIL_BACKEND", settings.EMAIL_BACKEND),
        sms_backend=_get("SMS_BACKEND", "campaigns.channels.http.SmsBackend"),
        push_backend=_get("PUSH_BACKEND", "campaigns.channels.http.PushBackend"),
        message_id_domain=_get("MESSAGE_ID_DOMAIN", "growth.local"),
        site_url=_get("SITE_URL", "http://localhost:8000").rstrip("/"),
        unsubscribe_mailto=_get("UNSUBSCRIBE_MAILTO", ""),
        sms_opt_out_text=_get("SMS_OPT_OUT_TEXT", "Reply STOP to opt out."),
        sms_inbound_secret=_get("SMS_INBOUND_SECRET", ""),
        retry_periods={
            "email": float(_get("RETRY_PERIOD_EMAIL", "86400")),
            "sms": float(_get("RETRY_PERIOD_SMS", "0")),
            "push": float(_get("RETRY_PERIOD_PUSH", "0")),
        },
        retry_after_max_seconds=float(_get("RETRY_AFTER_MAX_SECONDS", "86400")),
        # ``EMAIL_URL=smtp://…?timeout=N`` sets EMAIL_TIMEOUT (config/settings.py): the default of all three.
        smtp_connect_timeout=float(_get("SMTP_CONNECT_TIMEOUT", str(email_timeout or 10))),
        smtp_command_timeout=float(_get("SMTP_COMMAND_TIMEOUT", str(email_timeout or 30))),
        smtp_data_timeout=float(_get("SMTP_DATA_TIMEOUT", str(email_timeout or 60))),
    )
