"""Public, customer-facing endpoints: one-click unsubscribe and the preference page (reached
by the signed link in every marketing message), and the providers' webhooks.

No session and no login: the signed token is the credential (see
``campaigns.services.consent``). The one-click POST is CSRF-exempt by design (RFC 8058: the
mailbox provider POSTs ``List-Unsubscribe=One-Click`` with no cookies); the preference form
keeps Django's CSRF protection. Thin views: each calls one service.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from anymail.webhooks.mailgun import MailgunTrackingWebhookView
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import translation
from django.utils.decorators import method_decorator
from django.utils.translation import gettext
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods, require_POST

from campaigns import conf
from campaigns.models import Topic
from campaigns.services import consent

# Reply keywords that opt a number out (CTIA's standard set, and "TD"/"退订" used in China).
STOP_KEYWORDS = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "TD", "退订"})


def _bad_token(request: HttpRequest, *, json_answer: bool) -> HttpResponse:
    if json_answer:
        return JsonResponse({"token": ["This unsubscribe link is not valid."]}, status=400)
    response = render(request, "campaigns/optout/invalid.html", status=400)
    return response


@csrf_exempt
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """GET: the preference page. POST (RFC 8058 one-click, or the page's button): opt the
    customer out of the link's channel; the same answer however often it is repeated."""
    try:
        subject = consent.token_read(token)
    except consent.BadToken:
        return _bad_token(request, json_answer=request.method == "POST")
    if request.method == "POST":
        consent.channel_unsubscribe(customer_id=subject.customer_id, channel=subject.channel, source="one_click")
        if "text/html" in request.headers.get("Accept", "") and "List-Unsubscribe" not in request.POST:
            return redirect(f"{request.path}?saved=1")
        return JsonResponse({"unsubscribed": True, "channel": subject.channel})
    return _preferences_page(request, token=token, customer_id=subject.customer_id)


def _preferences_page(request: HttpRequest, *, token: str, customer_id: int, status: int = 200) -> HttpResponse:
    prefs = consent.preferences_get(customer_id=customer_id)
    if prefs is None:  # the customer was deleted: nothing will be sent to them
        return render(request, "campaigns/optout/invalid.html", status=404)
    language = consent.language_for(prefs.locale)
    shown = [c for c in consent.OPT_OUT_CHANNELS if prefs.contact.get(c)]
    with translation.override(language):
        channels = [
            {
                "key": channel,
                "label": _channel_label(channel),
                "contact": prefs.contact[channel],
                "subscribed": prefs.channels[channel],
                "topics": [
                    {"key": topic, "label": _topic_label(topic), "subscribed": prefs.topics[channel][topic]}
                    for topic in Topic.values
                ],
            }
            for channel in shown
        ]
        response = render(
            request,
            "campaigns/optout/preferences.html",
            {"token": token, "channels": channels, "saved": request.GET.get("saved") == "1", "language": language},
            status=status,
        )
    response["Content-Language"] = language
    return response


def _channel_label(channel: str) -> str:
    return {"email": gettext("Email"), "sms": gettext("Text messages (SMS)"), "push": gettext("App notifications")}[
        channel
    ]


def _topic_label(topic: str) -> str:
    return {
        "promotions": gettext("Promotions and offers"),
        "renewals": gettext("Membership renewals"),
        "referrals": gettext("Referral rewards"),
        "recall": gettext("We miss you"),
        "news": gettext("News and updates"),
    }.get(topic, topic)


@require_POST
def preferences(request: HttpRequest, token: str) -> HttpResponse:
    """The preference form (CSRF-protected): channels and topics for the channels shown.
    An unchecked box is an opt-out."""
    try:
        subject = consent.token_read(token)
    except consent.BadToken:
        return _bad_token(request, json_answer=False)
    prefs = consent.preferences_get(customer_id=subject.customer_id)
    if prefs is None:
        return render(request, "campaigns/optout/invalid.html", status=404)
    shown = [c for c in consent.OPT_OUT_CHANNELS if prefs.contact.get(c)]
    consent.preferences_save(
        customer_id=subject.customer_id,
        channels={c: request.POST.get(f"channel_{c}") == "on" for c in shown},
        topics={c: {t: request.POST.get(f"topic_{c}_{t}") == "on" for t in Topic.values} for c in shown},
    )
    return redirect(reverse("optout:unsubscribe", args=[token]) + "?saved=1")


# --- Provider webhooks --------------------------------------------------------------------


class MailgunTrackingWebhook(MailgunTrackingWebhookView):
    """django-anymail's Mailgun tracking webhook (HMAC-SHA256 signature check, normalized
    events sent to ``anymail.signals.tracking``), refusing every request while no signing
    key is configured: an empty key would accept signatures anyone can compute."""

    @method_decorator(csrf_exempt)  # as anymail's own dispatch: the signature is the check
    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not self.webhook_signing_key:
            return JsonResponse({"detail": "MAILGUN_WEBHOOK_SIGNING_KEY is not configured."}, status=503)
        return super().dispatch(request, *args, **kwargs)


@csrf_exempt
@require_POST
def sms_inbound(request: HttpRequest) -> HttpResponse:
    """An SMS provider's inbound-message webhook: ``{"from": "+33…", "text": "STOP"}``,
    signed with ``X-Signature: sha256=<hex HMAC-SHA256 of the raw body>`` under
    ``CAMPAIGNS_SMS_INBOUND_SECRET``. A stop keyword opts the number out of SMS.

    Hand-written because each SMS provider signs differently and none has a maintained
    Django integration here; the check is a constant-time HMAC comparison."""
    secret = conf.get().sms_inbound_secret
    if not secret:
        return JsonResponse({"detail": "CAMPAIGNS_SMS_INBOUND_SECRET is not configured."}, status=503)
    expected = "sha256=" + hmac.new(secret.encode(), request.body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, request.headers.get("X-Signature", "")):
        return JsonResponse({"X-Signature": ["Missing or wrong signature."]}, status=403)
    try:
        body = json.loads(request.body)
    except (ValueError, UnicodeDecodeError):
        return JsonResponse({"body": ["Not JSON."]}, status=400)
    if not isinstance(body, dict):
        return JsonResponse({"body": ["Expected a JSON object."]}, status=400)
    errors = {name: ["Required string."] for name in ("from", "text") if not isinstance(body.get(name), str)}
    if errors:
        return JsonResponse(errors, status=400)
    keyword = body["text"].strip().split(maxsplit=1)[0].upper() if body["text"].strip() else ""
    if keyword not in STOP_KEYWORDS:
        return JsonResponse({"opted_out": 0, "keyword": False})
    changed = consent.phone_unsubscribe(phone=body["from"].strip(), source="sms_stop")
    return JsonResponse({"opted_out": changed, "keyword": True})
