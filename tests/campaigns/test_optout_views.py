"""The public opt-out endpoints: RFC 8058 one-click unsubscribe from a client with no cookies
and CSRF checks on, the preference page in the customer's language, the SMS STOP webhook
(HMAC-signed) and django-anymail's Mailgun tracking webhook with a realistically signed
payload posted to its URL."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from django.test import Client
from django.utils import timezone

from campaigns.models import Suppression, TopicOptOut
from campaigns.services import consent
from segments.models import Customer, Event
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _customer(**fields):  # type: ignore[no-untyped-def]
    return CustomerFactory(email="ann@example.com", email_consent_at=timezone.now(), **fields)


def _url(customer, channel: str = "email") -> str:  # type: ignore[no-untyped-def]
    return f"/u/{consent.token_make(customer_id=customer.pk, channel=channel)}"


def test_one_click_post__no_cookies_csrf_enforced__unsubscribed_once_with_event() -> None:
    person = _customer()
    client = Client(enforce_csrf_checks=True)
    # As a mailbox provider sends it (RFC 8058 section 3.1): form-encoded, no cookies.
    form = "application/x-www-form-urlencoded"
    first = client.post(_url(person), data="List-Unsubscribe=One-Click", content_type=form)
    second = client.post(_url(person), data="List-Unsubscribe=One-Click", content_type=form)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"unsubscribed": True, "channel": "email"}
    person.refresh_from_db()
    assert not person.can_receive("email")
    events = Event.objects.filter(customer=person, event_type__code="unsubscribe")
    assert events.count() == 1
    assert events.get().properties["source"] == "one_click"
    assert events.get().occurred_at == person.email_opt_out_at


def test_one_click_post__tampered_token__400_names_the_token() -> None:
    person = _customer()
    url = _url(person)
    forged = url.replace(f"/u/{person.pk}.", f"/u/{person.pk + 1}.")
    response = Client(enforce_csrf_checks=True).post(forged, data={"List-Unsubscribe": "One-Click"})
    assert response.status_code == 400 and "token" in response.json()
    assert Client().get(forged).status_code == 400
    person.refresh_from_db()
    assert person.can_receive("email")


@pytest.mark.parametrize(
    ("locale", "heading", "language"),
    [("zh-CN", "您的消息偏好", "zh-hans"), ("en-GB", "Your message preferences", "en"), ("", "Your message", "en")],
)
def test_preference_page__customer_locale__rendered_in_their_language(locale: str, heading: str, language: str) -> None:
    person = _customer(locale=locale)
    response = Client().get(_url(person))
    assert response.status_code == 200
    assert response["Content-Language"] == language
    assert heading in response.content.decode()


def test_preference_page__save_topics_and_channel__recorded_with_event() -> None:
    person = _customer(phone="+33612345678", sms_consent_at=timezone.now())
    client = Client(enforce_csrf_checks=True)
    page = client.get(_url(person))
    token = page.cookies["csrftoken"].value
    # Email stays on without promotions; SMS is switched off entirely.
    data = {"csrfmiddlewaretoken": token, "channel_email": "on"}
    data |= {f"topic_email_{t}": "on" for t in ("renewals", "referrals", "recall", "news")}
    response = client.post(f"{_url(person)}/preferences", data=data)
    assert response.status_code == 302
    person.refresh_from_db()
    assert person.can_receive("email") and not person.can_receive("sms")
    assert set(TopicOptOut.objects.filter(customer=person, opted_out=True).values_list("channel", "topic")) == {
        ("email", "promotions")
    } | {("sms", t) for t in ("promotions", "renewals", "referrals", "recall", "news")}
    assert "您的" not in client.get(response["Location"]).content.decode()
    # Without the CSRF token the form is refused (only the one-click POST is exempt).
    assert Client(enforce_csrf_checks=True).post(f"{_url(person)}/preferences", data={}).status_code == 403


def test_preference_page__resubscribe__later_consent_lifts_the_opt_out() -> None:
    person = _customer()
    consent.channel_unsubscribe(customer_id=person.pk, channel="email", source="test")
    client = Client()
    client.post(f"{_url(person)}/preferences", data={"channel_email": "on"})
    person.refresh_from_db()
    assert person.can_receive("email")


# --- SMS STOP -----------------------------------------------------------------------------


def _signed(body: dict, secret: str = "s3cret") -> dict:  # type: ignore[type-arg]
    raw = json.dumps(body).encode()
    return {
        "data": raw,
        "content_type": "application/json",
        "HTTP_X_SIGNATURE": "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest(),
    }


def test_sms_inbound__signed_stop__number_opted_out(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CAMPAIGNS = {"SMS_INBOUND_SECRET": "s3cret"}
    person = CustomerFactory(phone="+33612345678", sms_consent_at=timezone.now())
    client = Client(enforce_csrf_checks=True)
    response = client.post("/webhooks/sms/inbound", **_signed({"from": "+33612345678", "text": " stop "}))
    assert response.status_code == 200 and response.json() == {"opted_out": 1, "keyword": True}
    person.refresh_from_db()
    assert not person.can_receive("sms")
    again = client.post("/webhooks/sms/inbound", **_signed({"from": "+33612345678", "text": "STOP"}))
    assert again.json()["opted_out"] == 0


def test_sms_inbound__bad_signature_or_fields__refused(settings) -> None:  # type: ignore[no-untyped-def]
    settings.CAMPAIGNS = {"SMS_INBOUND_SECRET": "s3cret"}
    person = CustomerFactory(phone="+33612345678", sms_consent_at=timezone.now())
    client = Client()
    forged = client.post("/webhooks/sms/inbound", **_signed({"from": "+33612345678", "text": "STOP"}, "wrong"))
    assert forged.status_code == 403
    missing = client.post("/webhooks/sms/inbound", **_signed({"text": "STOP"}))
    assert missing.status_code == 400 and "from" in missing.json()
    settings.CAMPAIGNS = {}
    assert client.post("/webhooks/sms/inbound", **_signed({"from": "+1", "text": "STOP"})).status_code == 503
    person.refresh_from_db()
    assert person.can_receive("sms")


# --- Mailgun tracking webhook (django-anymail) ------------------------------------------

SIGNING_KEY = "key-mailgun-signing-test"


def _mailgun(event: dict, key: str = SIGNING_KEY) -> dict:  # type: ignore[type-arg]
    """A Mailgun "webhooks 2.0" payload, signed as Mailgun signs it: HMAC-SHA256 over
    timestamp + token with the webhook signing key."""
    timestamp, token = str(int(time.time())), "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    body = {"signature": {"timestamp": timestamp, "token": token, "signature": signature}, "event-data": event}
    return {"data": json.dumps(body), "content_type": "application/json"}


def _event(kind: str, recipient: str, **extra) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return {
        "event": kind,
        "id": "G9Bn5sl1TC6nu79C8C0bwg",
        "timestamp": time.time(),
        "recipient": recipient,
        "message": {"headers": {"message-id": "d1-abc@growth.local"}},
        **extra,
    }


def test_mailgun_webhook__signed_complaint_and_permanent_failure__addresses_suppressed(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    person = _customer()
    client = Client(enforce_csrf_checks=True)
    complained = client.post("/anymail/mailgun/tracking/", **_mailgun(_event("complained", "Ann@Example.com")))
    failed = client.post(
        "/anymail/mailgun/tracking/",
        **_mailgun(
            _event(
                "failed",
                "bob@example.com",
                severity="permanent",
                reason="bounce",
                **{"delivery-status": {"code": 550, "message": "5.1.1 The email account does not exist"}},
            )
        ),
    )
    temporary = client.post(
        "/anymail/mailgun/tracking/",
        **_mailgun(_event("failed", "carl@example.com", severity="temporary", reason="generic")),
    )
    assert complained.status_code == failed.status_code == temporary.status_code == 200
    rows = {(s.address, s.reason, s.source) for s in Suppression.objects.all()}
    assert rows == {
        ("ann@example.com", "complaint", "webhook:mailgun"),
        ("bob@example.com", "hard_bounce", "webhook:mailgun"),
    }
    assert Event.objects.filter(customer=person, event_type__code="complaint").count() == 1


def test_mailgun_webhook__provider_unsubscribe__consent_withdrawn(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    person = _customer()
    response = Client().post("/anymail/mailgun/tracking/", **_mailgun(_event("unsubscribed", "ann@example.com")))
    assert response.status_code == 200
    assert not Customer.objects.get(pk=person.pk).can_receive("email")


def test_mailgun_webhook__wrong_signature_or_no_key__refused_nothing_suppressed(settings) -> None:  # type: ignore[no-untyped-def]
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": SIGNING_KEY}
    client = Client()
    forged = client.post("/anymail/mailgun/tracking/", **_mailgun(_event("complained", "a@example.com"), "guess"))
    assert forged.status_code == 400
    settings.ANYMAIL = {"MAILGUN_WEBHOOK_SIGNING_KEY": ""}
    unsigned = client.post("/anymail/mailgun/tracking/", **_mailgun(_event("complained", "a@example.com"), ""))
    assert unsigned.status_code == 503
    assert not Suppression.objects.exists()


@pytest.mark.pure
@pytest.mark.parametrize("secret", ["s" * 50, "another-secret-" + "k" * 40])
def test_token_make__any_customer_and_channel__same_token_as_djangos_signer(settings, secret: str) -> None:  # type: ignore[no-untyped-def]
    """token_make computes the HMAC itself (one key derivation per secret); the token must
    stay what django.core.signing.Signer makes, so links already sent keep working."""
    from django.core import signing

    settings.SECRET_KEY = secret
    signer = signing.Signer(key=secret, salt=consent.TOKEN_SALT, algorithm="sha256")
    for pk in (1, 42, 987_654_321):
        for channel in consent.OPT_OUT_CHANNELS:
            token = consent.token_make(customer_id=pk, channel=channel)
            assert token == signer.sign(f"{pk}.{channel}")
            assert consent.token_read(token) == consent.TokenSubject(customer_id=pk, channel=channel)


@pytest.mark.pure
def test_language_for__languages_setting_changed__answer_follows(settings) -> None:  # type: ignore[no-untyped-def]
    settings.LANGUAGES = [("en", "English"), ("zh-hans", "Chinese")]
    assert consent.language_for("zh-CN") == "zh-hans"
    settings.LANGUAGES = [("en", "English")]
    assert consent.language_for("zh-CN") == "en"
