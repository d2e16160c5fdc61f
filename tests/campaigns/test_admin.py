"""The admin as the growth team uses it: build each kind of campaign, write content (checked
when saved), preview it for a customer, launch, and watch deliveries. Marketers read only."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from campaigns.models import Campaign, Content, Delivery, MailboxMessage, Offer, Treatment
from segments.models import Dimension, EventType, Layer
from tests.campaigns.builders import campaign, customers, run_broadcast
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _client(user: Any) -> Client:
    client = Client()
    client.force_login(user)
    return client


def _campaign_form(**fields: Any) -> dict[str, Any]:
    data = {
        "key": "c",
        "name": "C",
        "kind": "custom",
        "description": "",
        "trigger": "broadcast",
        "channels": "email",
        "channel_strategy": "first_reachable",
        "max_attempts": "5",
        "referral_reward_to": "both",
        "treatments-TOTAL_FORMS": "0",
        "treatments-INITIAL_FORMS": "0",
        "treatments-MIN_NUM_FORMS": "0",
        "treatments-MAX_NUM_FORMS": "1000",
    }
    data.update(fields)
    return data


def _with_treatments(data: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    data["treatments-TOTAL_FORMS"] = str(len(rows))
    for i, row in enumerate(rows):
        for name in ("variant_key", "layer", "referral_role", "offer"):
            data[f"treatments-{i}-{name}"] = row.get(name, "")
    return data


@pytest.fixture
def offer() -> Offer:
    return Offer.objects.create(key="ten", name="Ten", benefit_kind="percent_off", value=10, validity_days=7)


def test_growth_user__builds_each_campaign_kind(growth_user, offer: Offer) -> None:  # type: ignore[no-untyped-def]
    client = _client(growth_user)
    url = reverse("admin:campaigns_campaign_add")
    expiry = Dimension.objects.get(key="expiry")
    lifecycle_layers = Layer.objects.filter(dimension__key="lifecycle", key__in=["churn_warning", "churned"])
    forms = {
        "new_user": _campaign_form(key="welcome", name="Welcome", kind="new_user"),
        "referral": _campaign_form(
            key="refer",
            name="Refer",
            kind="referral",
            referral_qualifying_event_type=EventType.objects.get(code="order").pk,
            referral_cap_per_inviter="5",
        ),
        "renewal": _with_treatments(
            _campaign_form(key="renew", name="Renew", kind="renewal", split_dimension=expiry.pk),
            [
                {"layer": layer.pk, "offer": offer.pk}
                for layer in expiry.layers.filter(key__in=["expiring_soon", "expired_recently"])
            ],
        ),
        "winback": _campaign_form(
            key="recall",
            name="Recall",
            kind="winback",
            channels="push, sms, email",
            include_layers=[layer.pk for layer in lifecycle_layers],
        ),
    }
    for kind, data in forms.items():
        response = client.post(url, data)
        assert response.status_code == 302, (
            kind,
            response.context["adminform"].form.errors if response.context else response,
        )
    created = {c.kind: c for c in Campaign.objects.all()}
    assert set(created) == {"new_user", "referral", "renewal", "winback"}
    welcome = created["new_user"]
    assert (welcome.trigger, welcome.trigger_event_type.code, welcome.trigger_within_hours) == ("event", "signup", 48)
    assert created["referral"].trigger_event_type.code == "referral_signup"
    assert created["renewal"].treatments.count() == 2
    assert created["winback"].channels == ["push", "sms", "email"]
    assert created["winback"].include_layers.count() == 2


def test_content_inline__unknown_variable__refused_at_save(growth_user, offer: Offer) -> None:  # type: ignore[no-untyped-def]
    row = Campaign.objects.create(key="c1", name="C1", channels=["email"])
    treatment = Treatment.objects.create(campaign=row, offer=offer)
    url = reverse("admin:campaigns_treatment_change", args=[treatment.pk])
    data = {
        "campaign": row.pk,
        "variant_key": "",
        "layer": "",
        "referral_role": "",
        "offer": offer.pk,
        "contents-TOTAL_FORMS": "1",
        "contents-INITIAL_FORMS": "0",
        "contents-MIN_NUM_FORMS": "0",
        "contents-MAX_NUM_FORMS": "1000",
        "contents-0-channel": "email",
        "contents-0-subject": "Hi {{ customer.nickname }}",
        "contents-0-text": "Code {{ coupon.code }}",
        "contents-0-title": "",
        "contents-0-html": "",
    }
    response = _client(growth_user).post(url, data)
    assert response.status_code == 200
    assert "customer.nickname" in response.content.decode()
    assert not Content.objects.exists()
    data["contents-0-subject"] = "Hi {{ customer.first_name }}"
    assert _client(growth_user).post(url, data).status_code == 302
    assert Content.objects.get().subject == "Hi {{ customer.first_name }}"


def test_preview__chosen_customer__rendered(growth_user) -> None:  # type: ignore[no-untyped-def]
    person = CustomerFactory(external_id="ann-1", attributes={"first_name": "Ann"})
    row = campaign(contents={"email": {"subject": "Hi {{ customer.first_name }}", "text": "Code {{ coupon.code }}"}})
    content = Content.objects.get(treatment__campaign=row)
    url = reverse("admin:campaigns_campaign_preview", args=[row.pk])
    response = _client(growth_user).get(url, {"customer": person.external_id, "content": content.pk})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Hi Ann" in html and "PREVIEW-CODE" in html
    missing = _client(growth_user).get(url, {"customer": "nobody", "content": content.pk})
    assert "No customer with this external id" in missing.content.decode()


def test_launch__growth_user_transitions_marketer_refused(growth_user, marketer_user, no_caps) -> None:  # type: ignore[no-untyped-def]
    customers(2)
    row = campaign()
    url = reverse("admin:campaigns_campaign_transition", args=[row.pk, "launch"])
    assert _client(marketer_user).post(url).status_code == 403
    response = _client(growth_user).post(url)
    assert response.status_code == 302
    row.refresh_from_db()
    assert row.status == "running"
    pause = _client(growth_user).post(
        reverse("admin:campaigns_campaign_transition", args=[row.pk, "resume"]), follow=True
    )
    assert "Cannot resume a running campaign" in pause.content.decode()
    change = _client(marketer_user).get(reverse("admin:campaigns_campaign_change", args=[row.pk]))
    assert change.status_code == 200 and 'id="campaign-transitions"' not in change.content.decode()
    changelist = _client(marketer_user).get(reverse("admin:campaigns_campaign_changelist"))
    assert "Launch selected" not in changelist.content.decode()
    assert (
        "Launch selected" in _client(growth_user).get(reverse("admin:campaigns_campaign_changelist")).content.decode()
    )


def test_launch_action__invalid_campaign__error_message_no_change(growth_user) -> None:  # type: ignore[no-untyped-def]
    row = Campaign.objects.create(key="empty", name="Empty", channels=["email"])
    response = _client(growth_user).post(
        reverse("admin:campaigns_campaign_changelist"),
        {"action": "launch", "_selected_action": [row.pk]},
        follow=True,
    )
    assert "Add at least one treatment" in response.content.decode()
    row.refresh_from_db()
    assert row.status == "draft"


def test_watch_deliveries__summary_failures_and_mailbox(growth_user, settings, no_caps) -> None:  # type: ignore[no-untyped-def]
    from tests.campaigns.builders import send_pending

    settings.EMAIL_BACKEND = "campaigns.mailbox.DatabaseMailboxBackend"
    customers(3)
    row = campaign(contents={"email": {"subject": "Hi", "text": "t", "html": "<p>{{ coupon.code }}</p>"}})
    run_broadcast(row)
    send_pending(row)
    Delivery.objects.filter(pk=Delivery.objects.filter(campaign=row).first().pk).update(
        status="failed", reason="permanent_error", last_error="SMTP 550 no such user"
    )
    client = _client(growth_user)
    change = client.get(reverse("admin:campaigns_campaign_change", args=[row.pk])).content.decode()
    assert "failed:permanent_error" in change and "treated:-" in change
    failures = client.get(reverse("admin:campaigns_delivery_changelist"), {"status__exact": "failed"}).content.decode()
    assert "SMTP 550 no such user" in failures and "1/5" in failures
    assert MailboxMessage.objects.count() == 3
    message = MailboxMessage.objects.first()
    page = client.get(reverse("admin:campaigns_mailboxmessage_change", args=[message.pk])).content.decode()
    assert 'sandbox=""' in page and message.delivery_key in page


def test_every_campaigns_admin_page__growth_and_marketer__render(growth_user, marketer_user, no_caps) -> None:  # type: ignore[no-untyped-def]
    from django.contrib import admin

    customers(2)
    row = campaign()
    run_broadcast(row)
    models = [m for m in admin.site._registry if m._meta.app_label == "campaigns"]
    assert len(models) >= 10
    for user in (growth_user, marketer_user):
        client = _client(user)
        for model in models:
            opts = model._meta
            assert client.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")).status_code == 200, opts
            first = model.objects.first()
            if first is not None:
                url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[first.pk])
                assert client.get(url).status_code == 200, opts
    assert _client(marketer_user).get(reverse("admin:campaigns_campaign_add")).status_code == 403
    assert (
        _client(growth_user)
        .get(reverse("admin:campaigns_offer_upload_codes", args=[row.treatments.first().offer_id]))
        .status_code
        == 200
    )
