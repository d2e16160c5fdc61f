"""The guided builder, as a growth user uses it: from nothing (customers and a computed expiry
dimension) to a renewal campaign with its own experiment, an offer made on the way, content
per layer, a refused launch for each missing piece, the launch, and the email in the mailbox."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from campaigns.models import AudienceBatch, Campaign, ChannelPolicy, MailboxMessage
from campaigns.services import lifecycle
from segments.models import Dimension
from segments.services.recompute import dimension_recompute
from tests.browser.conftest import admin_login
from tests.campaigns.builders import send_pending
from tests.factories import CustomerFactory, MembershipFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery-staple"
expect.set_options(timeout=20_000)  # two shared cores: a page can take seconds


def _members() -> Dimension:
    """Three members expiring within 3 months, one expired recently."""
    now = timezone.now()
    for i, expires_in in enumerate([30, 45, 60, -20]):
        customer = CustomerFactory(external_id=f"member-{i}", attributes={"first_name": f"Ada{i}"})
        MembershipFactory(
            customer=customer, started_at=now - dt.timedelta(days=300), expires_at=now + dt.timedelta(days=expires_in)
        )
    dimension = Dimension.objects.get(key="expiry")
    assert dimension_recompute(dimension_id=dimension.pk).status == "succeeded"
    return dimension


def _start(page, base: str, *, key: str, layers: list[int], dimension: Dimension, control: int = 50) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/admin/campaigns/campaign/")
    page.click("#builder-link")
    page.fill("#id_key", key)
    page.fill("#id_name", key.replace("-", " ").title())
    page.select_option("#id_kind", "renewal")
    page.select_option("#id_include_layers", [str(pk) for pk in layers])
    page.select_option("#id_split_dimension", str(dimension.pk))
    page.check("input[name=channels][value=email]")
    page.fill("#id_control_percent", str(control))
    page.select_option("#id_metric", "order")
    page.click("#builder-create")
    expect(page.locator(".messagelist .success")).to_contain_text("created (draft)")


def _launch_refused(page, text: str) -> None:  # type: ignore[no-untyped-def]
    page.click("#builder-launch")
    expect(page.locator(".messagelist .error")).to_contain_text("Launch refused")
    expect(page.locator(".messagelist .error")).to_contain_text(text)


def test_growth_user__builds_renewal_with_the_builder__refused_until_complete_then_delivered(
    app_server, page, screenshot, settings
) -> None:  # type: ignore[no-untyped-def]
    dimension = _members()
    soon, lapsed = dimension.layers.get(key="expiring_soon"), dimension.layers.get(key="expired_recently")
    UserFactory(username="gus", groups=["growth"])
    admin_login(page, app_server, "gus", PASSWORD)

    # Step 1: who, how, and the campaign's own experiment.
    # (A 10% control: with four customers, someone is almost surely treated.)
    _start(page, app_server, key="renew-spring", layers=[soon.pk, lapsed.pk], dimension=dimension, control=10)
    row = Campaign.objects.get(key="renew-spring")
    assert row.experiment.managed_by == f"campaign:{row.pk}"
    assert page.inner_text("#audience-total") == "4"

    # An offer made on the way, without leaving the builder.
    page.fill("#id_offer-key", "renew-20")
    page.fill("#id_offer-name", "Twenty off")
    page.select_option("#id_offer-benefit_kind", "percent_off")
    page.fill("#id_offer-value", "20")
    page.fill("#id_offer-validity_days", "30")
    page.click("#builder-offer")
    expect(page.locator(".messagelist .success")).to_contain_text("Offer renew-20 created")

    # Refused: the treated variant has no treatment (the grid is empty).
    _launch_refused(page, "Add at least one treatment")

    # The expiring-soon row only: refused, naming the layer the variant misses.
    cell = f"t-offer-{soon.pk}"
    page.select_option(f"#id_{cell}-offer", label="Twenty off (20% off)")
    page.fill(f"#id_{cell}-email_subject", "{{ customer.first_name }}, renew before it lapses")
    page.fill(f"#id_{cell}-email_text", "{{ offer.benefit }} with code {{ coupon.code }}")
    page.click("#builder-save")
    expect(page.locator(".messagelist .success")).to_contain_text("saved")
    assert page.inner_text("#audience-split") == "3"
    expect(page.locator("#checklist-problems")).to_contain_text("Expired within the last 3 months")
    _launch_refused(page, "has no treatment for layer(s) Expired within the last 3 months")

    # The "any layer" fallback with an offer but no content: refused, naming the channel.
    page.select_option("#id_t-offer-any-offer", label="Twenty off (20% off)")
    page.click("#builder-save")
    _launch_refused(page, "has no email content")

    # Its content, a preview for a sample customer, then the launch.
    page.fill("#id_t-offer-any-email_subject", "{{ customer.first_name }}, come back")
    page.fill("#id_t-offer-any-email_text", "{{ offer.benefit }} with code {{ coupon.code }}")
    page.click("#builder-save")
    expect(page.locator("#checklist-ready")).to_be_visible()
    page.fill("#id_customer", "member-0")
    page.click("#builder-preview input[type=submit]")
    expect(page.locator("#builder-preview")).to_contain_text("Ada0, renew before it lapses")
    page.click("#audience-refresh")
    screenshot("builder")
    page.click("#builder-launch")
    expect(page.locator(".messagelist .success")).to_contain_text("launched")
    row.refresh_from_db()
    row.experiment.refresh_from_db()
    assert row.status == Campaign.Status.RUNNING and row.experiment.status == "running"

    # Delivery: the worker's steps, run here; the message is in the admin's mailbox.
    settings.EMAIL_BACKEND = "campaigns.mailbox.DatabaseMailboxBackend"
    ChannelPolicy.objects.update(daily_cap=None, weekly_cap=None, quiet_start=None, quiet_end=None)
    lifecycle.campaign_audience_resolve(campaign_id=row.pk)
    for batch_id in AudienceBatch.objects.filter(campaign=row).values_list("pk", flat=True):
        lifecycle.audience_batch_decide(batch_id=batch_id)
    send_pending(row)
    sent = MailboxMessage.objects.count()
    assert 1 <= sent <= 4
    page.goto(f"{app_server}/admin/campaigns/mailboxmessage/")
    expect(page.locator("#result_list")).to_contain_text(re.compile("renew before it lapses|come back"))
    assert page.locator("#result_list tbody tr").count() == sent


def test_growth_user__builder_on_an_empty_layer__launch_refused_audience_empty(app_server, page) -> None:  # type: ignore[no-untyped-def]
    dimension = _members()
    valid = dimension.layers.get(key="valid")
    UserFactory(username="gus", groups=["growth"])
    admin_login(page, app_server, "gus", PASSWORD)
    _start(page, app_server, key="renew-nobody", layers=[valid.pk], dimension=dimension)
    assert page.inner_text("#audience-total") == "0"
    page.fill("#id_t-offer-any-email_subject", "Hi")
    page.fill("#id_t-offer-any-email_text", "Hello")
    page.click("#builder-save")
    _launch_refused(page, "The audience is empty")
    assert Campaign.objects.get(key="renew-nobody").status == Campaign.Status.DRAFT
