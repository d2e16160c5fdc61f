"""Consent changes a customer makes from a message: one-click unsubscribe (RFC 8058), the
preference page (per channel and per topic), and an SMS "STOP".

- Links carry a signed, expiring-free token (``django.core.signing.Signer``, salted for this
  purpose) naming the customer and the channel the message went out on. A link must keep
  working for as long as the message sits in an inbox, so it does not expire; it only lets
  its holder change that customer's message preferences.
- A channel opt-out sets ``Customer.<channel>_opt_out_at`` through ``segments``' ingestion
  service (the one door for customer writes); re-subscribing sets ``<channel>_consent_at``.
  Each opt-out (channel or topic) records an ``unsubscribe`` event with its time, through
  ``campaigns.services.events``; a consent given again is kept as the consent timestamp.
- Unsubscribing twice is one change: the second answer is the same and writes nothing.
- Topic opt-outs are ``TopicOptOut`` rows per (customer, channel, topic).

Transactional campaigns (receipts, password resets) carry no unsubscribe link and ignore
topic opt-outs and quiet hours; the channel consent applies to them as it does when
deciding (``Customer.can_receive``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from django.conf import settings
from django.core import signing
from django.core.signals import setting_changed
from django.db import transaction
from django.utils import timezone

from campaigns import conf
from campaigns.models import Topic, TopicOptOut
from campaigns.services.events import event_write
from segments.contacts import CONTACT_FIELDS, Channel
from segments.selectors import customers_queryset
from segments.services.ingestion import CustomerInput, customers_upsert

if TYPE_CHECKING:
    from segments.models import Customer

TOKEN_SALT = "campaigns.unsubscribe"
# Channels a customer can opt out of from a message (in-app messages are read in the app).
OPT_OUT_CHANNELS: tuple[str, ...] = (Channel.EMAIL, Channel.SMS, Channel.PUSH)


class BadToken(Exception):
    """The token was tampered with, or names no customer or channel."""


@lru_cache(maxsize=4)
def _signer(secret: str) -> signing.Signer:
    return signing.Signer(key=secret, salt=TOKEN_SALT, algorithm="sha256")


@lru_cache(maxsize=4)
def _mac(secret: str) -> hmac.HMAC:
    """``Signer(key=secret, salt=TOKEN_SALT, algorithm="sha256")``'s HMAC before any message:
    Django's ``salted_hmac`` derives the key (``sha256(salt + "signer" + secret)``) and sets
    up the HMAC again for every token; a copy of this one costs a third of that per message
    (every marketing message carries a token). ``token_read`` verifies with Django's own
    ``Signer``, and a test checks that both make the same token."""
    key = hashlib.sha256(f"{TOKEN_SALT}signer{secret}".encode()).digest()
    return hmac.new(key, digestmod=hashlib.sha256)


def token_make(*, customer_id: int, channel: str) -> str:
    """``<customer pk>.<channel>:<signature>``: URL-safe, no expiry (see the module doc);
    the same string as ``Signer.sign`` (``_mac``)."""
    value = f"{customer_id}.{channel}"
    mac = _mac(settings.SECRET_KEY).copy()
    mac.update(value.encode())
    return f"{value}:{base64.urlsafe_b64encode(mac.digest()).rstrip(b'=').decode()}"


@dataclass(frozen=True)
class TokenSubject:
    customer_id: int
    channel: str


def token_read(token: str) -> TokenSubject:
    try:
        value = _signer(settings.SECRET_KEY).unsign(token)
    except signing.BadSignature as exc:
        raise BadToken("The link is not valid.") from exc
    pk, _, channel = value.partition(".")
    if not pk.isdigit() or channel not in OPT_OUT_CHANNELS:
        raise BadToken("The link is not valid.")
    return TokenSubject(customer_id=int(pk), channel=channel)


def unsubscribe_url(*, customer_id: int, channel: str, site_url: str | None = None) -> str:
    base = site_url if site_url is not None else conf.get().site_url
    return f"{base}/u/{token_make(customer_id=customer_id, channel=channel)}"


@dataclass(frozen=True)
class Preferences:
    customer_id: int
    external_id: str
    locale: str
    channels: dict[str, bool]  # channel -> subscribed (has a contact point and consents)
    topics: dict[str, dict[str, bool]]  # channel -> topic -> subscribed
    contact: dict[str, str]  # channel -> the contact point, for the page


def preferences_get(*, customer_id: int) -> Preferences | None:
    customer = customers_queryset().filter(pk=customer_id).first()
    if customer is None:
        return None
    out = {
        (channel, topic): opted_out
        for channel, topic, opted_out in TopicOptOut.objects.filter(customer_id=customer_id).values_list(
            "channel", "topic", "opted_out"
        )
    }
    channels = {}
    contact = {}
    for channel in OPT_OUT_CHANNELS:
        contact[channel] = getattr(customer, CONTACT_FIELDS[channel][0])
        channels[channel] = customer.can_receive(channel)
    topics = {
        channel: {topic: not out.get((channel, topic), False) for topic in Topic.values} for channel in OPT_OUT_CHANNELS
    }
    return Preferences(
        customer_id=customer.pk,
        external_id=customer.external_id,
        locale=customer.locale,
        channels=channels,
        topics=topics,
        contact=contact,
    )


def _event(*, customer: Customer, type: str, channel: str, at: dt.datetime, source: str, topic: str = "") -> None:
    stamp = at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    event_write(
        event_id=f"{type}:{customer.external_id}:{channel}:{topic or '*'}:{stamp}"[:128],
        customer_external_id=customer.external_id,
        type=type,
        occurred_at=at,
        properties={"channel": channel, "topic": topic, "source": source},
    )


@transaction.atomic
def channel_unsubscribe(*, customer_id: int, channel: str, source: str, at: dt.datetime | None = None) -> bool:
    """Opt the customer out of ``channel``; return whether this changed anything (an
    opt-out already in force is kept with its original time, and no event is written)."""
    at = at or timezone.now()
    _, consent_field, opt_out_field = CONTACT_FIELDS[channel]
    customer = customers_queryset().select_for_update().filter(pk=customer_id).first()
    if customer is None:
        return False
    consent_at, opt_out_at = getattr(customer, consent_field), getattr(customer, opt_out_field)
    if opt_out_at is not None and (consent_at is None or opt_out_at >= consent_at):
        return False
    customers_upsert(customers=[CustomerInput(external_id=customer.external_id, values={opt_out_field: at})])
    _event(customer=customer, type="unsubscribe", channel=channel, at=at, source=source)
    return True


@transaction.atomic
def channel_subscribe(*, customer_id: int, channel: str, source: str, at: dt.datetime | None = None) -> bool:
    """Consent again to ``channel`` from the preference page (a later consent lifts an
    earlier opt-out). Return whether this changed anything."""
    at = at or timezone.now()
    consent_field = CONTACT_FIELDS[channel][1]
    customer = customers_queryset().select_for_update().filter(pk=customer_id).first()
    if customer is None or customer.can_receive(channel):
        return False
    customers_upsert(customers=[CustomerInput(external_id=customer.external_id, values={consent_field: at})])
    return True


@transaction.atomic
def topic_set(
    *, customer_id: int, channel: str, topic: str, subscribed: bool, source: str, at: dt.datetime | None = None
) -> bool:
    """Opt the customer out of (or back into) one topic on one channel; return whether
    this changed anything. An opt-out writes an ``unsubscribe`` event naming the topic."""
    if topic not in Topic.values or channel not in OPT_OUT_CHANNELS:
        raise ValueError(f"Unknown channel or topic: {channel}/{topic}")
    at = at or timezone.now()
    row = TopicOptOut.objects.select_for_update().filter(customer_id=customer_id, channel=channel, topic=topic).first()
    currently_out = row is not None and row.opted_out
    if currently_out == (not subscribed):
        return False
    TopicOptOut.objects.update_or_create(
        customer_id=customer_id,
        channel=channel,
        topic=topic,
        defaults={"opted_out": not subscribed, "changed_at": at, "source": source},
    )
    if not subscribed:
        customer = customers_queryset().get(pk=customer_id)
        _event(customer=customer, type="unsubscribe", channel=channel, at=at, source=source, topic=topic)
    return True


@transaction.atomic
def preferences_save(
    *, customer_id: int, channels: dict[str, bool], topics: dict[str, dict[str, bool]], source: str = "preferences"
) -> int:
    """Apply the preference page's choices; return how many changes were made."""
    at = timezone.now()
    changes = 0
    for channel, subscribed in channels.items():
        if subscribed:
            changes += channel_subscribe(customer_id=customer_id, channel=channel, source=source, at=at)
        else:
            changes += channel_unsubscribe(customer_id=customer_id, channel=channel, source=source, at=at)
    for channel, by_topic in topics.items():
        for topic, subscribed in by_topic.items():
            changes += topic_set(
                customer_id=customer_id, channel=channel, topic=topic, subscribed=subscribed, source=source, at=at
            )
    return changes


@transaction.atomic
def email_unsubscribe(*, address: str, source: str, at: dt.datetime | None = None) -> int:
    """The provider reports an unsubscribe for ``address``: opt every customer with that
    address out of email. Return how many customers changed."""
    at = at or timezone.now()
    ids = list(customers_queryset().filter(email__iexact=address.strip()).order_by("pk").values_list("pk", flat=True))
    return sum(channel_unsubscribe(customer_id=pk, channel=Channel.EMAIL, source=source, at=at) for pk in ids)


@transaction.atomic
def phone_unsubscribe(*, phone: str, source: str, at: dt.datetime | None = None) -> int:
    """An inbound "STOP" from ``phone``: opt every customer with that number out of SMS.
    Return how many customers changed."""
    at = at or timezone.now()
    ids = list(customers_queryset().filter(phone=phone).order_by("pk").values_list("pk", flat=True))
    return sum(channel_unsubscribe(customer_id=pk, channel=Channel.SMS, source=source, at=at) for pk in ids)


# --- What a marketing message carries ----------------------------------------------------


@lru_cache(maxsize=256)
def language_for(locale: str) -> str:
    """The site language for a customer's locale ("zh-CN", "zh_Hans" -> "zh-hans"), or the
    default language when the site has no translation for it. Remembered per locale (it is
    asked for every marketing email); forgotten when a setting changes."""
    tag = (locale or "").replace("_", "-").lower()
    available = {code.lower() for code, _ in settings.LANGUAGES}
    if tag.startswith("zh"):
        tag = "zh-hant" if tag in ("zh-hant", "zh-tw", "zh-hk", "zh-mo") and "zh-hant" in available else "zh-hans"
    for candidate in (tag, tag.split("-")[0]):
        if candidate in available:
            return candidate
    return settings.LANGUAGE_CODE.split("-")[0] if settings.LANGUAGE_CODE.split("-")[0] in available else "en"


@lru_cache(maxsize=32)
def _footer_strings(language: str) -> tuple[str, str, str]:
    from django.utils import translation
    from django.utils.translation import gettext

    with translation.override(language):
        return (
            gettext("To unsubscribe or choose which messages you receive, visit: %(url)s"),
            gettext("Unsubscribe or choose which messages you receive"),
            gettext("You receive this because you agreed to hear from us."),
        )


def _caches_clear(**kwargs: object) -> None:
    language_for.cache_clear()
    _footer_strings.cache_clear()


setting_changed.connect(_caches_clear, weak=False, dispatch_uid="campaigns.services.consent.language_for")


def footer_text(*, url: str, locale: str) -> str:
    line, _, why = _footer_strings(language_for(locale))
    return f"\n\n--\n{why}\n{line % {'url': url}}"


def footer_html(*, url: str, locale: str) -> str:
    from django.utils.html import escape

    _, link, why = _footer_strings(language_for(locale))
    return f'\n<p style="font-size:12px;color:#666">{escape(why)} <a href="{escape(url)}">{escape(link)}</a></p>'


def email_headers(*, url: str, mailto: str = "") -> tuple[tuple[str, str], ...]:
    """``List-Unsubscribe`` (RFC 2369; the HTTPS URL first, then the optional mailto) and
    ``List-Unsubscribe-Post`` (RFC 8058 one-click: the mailbox provider POSTs
    ``List-Unsubscribe=One-Click`` to the URL, with no cookies)."""
    value = f"<{url}>"
    if mailto:
        value += f", <mailto:{mailto}?subject=unsubscribe>"
    return (("List-Unsubscribe", value), ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))
