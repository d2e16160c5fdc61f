"""A growth user signs in, builds a rule segment (a validation error, then the fix and the
audience preview), creates an experiment with variants and starts it, creates a renewal
campaign that uses it, writes its email, previews the email for a customer and launches it."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from campaigns.models import Campaign, Content
from experiments.models import Experiment
from segments.models import Dimension, Segment
from segments.services.recompute import dimension_recompute
from tests.browser.conftest import admin_login
from tests.factories import CustomerFactory, MembershipFactory, OfferFactory, OrderFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery-staple"
LOYAL_RULE = {"event": "order", "agg": "count", "window": {"last_days": 90}, "op": "gte", "value": 2}


def _customers() -> None:
    """Four loyal buyers (2+ orders in 90 days) of whom three have a membership expiring
    within 3 months and one valid for longer; two customers without orders."""
    now = timezone.now()
    for i, expires_in in enumerate([30, 45, 60, 200]):
        customer = CustomerFactory(external_id=f"loyal-{i}", attributes={"first_name": f"Ada{i}"})
        MembershipFactory(
            customer=customer, started_at=now - dt.timedelta(days=300), expires_at=now + dt.timedelta(days=expires_in)
        )
        OrderFactory(customer=customer, occurred_at=now - dt.timedelta(days=10))
        OrderFactory(customer=customer, occurred_at=now - dt.timedelta(days=40))
    for i in range(2):
        CustomerFactory(external_id=f"quiet-{i}")
    outcome = dimension_recompute(dimension_id=Dimension.objects.get(key="expiry").pk)
    assert outcome.status == "succeeded", outcome


def _fill_json(page, selector: str, value: object) -> None:  # type: ignore[no-untyped-def]
    page.fill(selector, json.dumps(value, indent=2))


def _expect_success(page, text: str) -> None:  # type: ignore[no-untyped-def]
    """Waits for the next page's success message (a click does not wait for the load)."""
    expect(page.locator(".messagelist .success")).to_contain_text(text)


def _choose_filter_horizontal(page, field: str, label: str) -> None:  # type: ignore[no-untyped-def]
    """Move an option of a filter_horizontal widget to the chosen box."""
    page.select_option(f"#id_{field}_from", label=label)
    page.click(f"#id_{field}_add")
    assert page.locator(f"#id_{field}_to option", has_text=label).count() == 1


def test_growth_user__builds_segment_experiment_and_renewal_campaign__previews_and_launches(
    app_server, page, screenshot
) -> None:  # type: ignore[no-untyped-def]
    _customers()
    OfferFactory(key="renew-20", name="Renewal twenty", value=20, validity_days=30)
    UserFactory(username="gus", groups=["growth"])
    admin_login(page, app_server, "gus", PASSWORD)

    # --- A rule segment: a validation error, then the fix and the audience preview ---------
    page.goto(f"{app_server}/admin/segments/segment/add/")
    page.fill("#id_key", "loyal-buyers")
    page.fill("#id_name", "Loyal buyers")
    _fill_json(page, "#id_rule", {**LOYAL_RULE, "value": "two"})
    page.click("input[name=_preview]")
    error = page.locator(".field-rule ul.errorlist").inner_text()
    assert "rule.value: must be a number" in error, error
    assert page.locator("#segment-preview").count() == 0
    screenshot("segment-rule-error")

    _fill_json(page, "#id_rule", LOYAL_RULE)
    page.click("input[name=_preview]")
    assert page.locator(".errorlist").count() == 0
    assert page.inner_text("#segment-preview-count") == "4"
    sample = page.locator("#segment-preview-sample li").all_inner_texts()
    assert sorted(sample) == ["loyal-0", "loyal-1", "loyal-2", "loyal-3"]
    screenshot("segment-preview")
    page.click("input[name=_save]")
    _expect_success(page, "was added successfully")
    assert Segment.objects.get(key="loyal-buyers").rule == LOYAL_RULE

    # --- An experiment with variants, targeting the segment, started ---------------------------
    page.goto(f"{app_server}/admin/experiments/experiment/add/")
    page.fill("#id_key", "renewal-offer")
    page.fill("#id_name", "Renewal offer")
    page.fill("#id_hypothesis", "Twenty percent off lifts renewals of members expiring soon.")
    _choose_filter_horizontal(page, "include_segments", "Loyal buyers")
    for i, (key, name, weight, control) in enumerate(
        [("control", "Control", "0.5", True), ("discount", "Twenty off", "0.5", False)]
    ):
        page.fill(f"#id_variants-{i}-position", str(i))
        page.fill(f"#id_variants-{i}-key", key)
        page.fill(f"#id_variants-{i}-name", name)
        page.fill(f"#id_variants-{i}-weight", weight)
        page.fill(f"#id_variants-{i}-payload", "{}")
        if control:
            page.check(f"#id_variants-{i}-is_control")
    page.click("#metrics-group .add-row a")
    page.select_option("#id_metrics-0-role", "primary")
    page.select_option("#id_metrics-0-event_type", label="order")
    page.click("input[name=_continue]")
    _expect_success(page, "was added successfully")
    page.click("#experiment-transitions input[value=Start]")
    _expect_success(page, "Experiment renewal-offer: start done.")
    assert "Running" in page.inner_text("#experiment-transitions")
    screenshot("experiment-started")
    experiment = Experiment.objects.get(key="renewal-offer")
    assert experiment.status == "running"
    assert sorted(experiment.variants.values_list("key", flat=True)) == ["control", "discount"]

    # --- A renewal campaign that uses it ---------------------------------------------------------
    page.goto(f"{app_server}/admin/campaigns/campaign/add/")
    page.fill("#id_key", "renewal-q3")
    page.fill("#id_name", "Renewal Q3")
    page.select_option("#id_kind", "renewal")
    _choose_filter_horizontal(page, "include_segments", "Loyal buyers")
    page.select_option("#id_split_dimension", label="Membership expiry windows")
    page.fill("#id_experiment", str(experiment.pk))
    page.fill("#id_channels", "email")
    page.click("#treatments-group .add-row a")
    page.fill("#id_treatments-0-variant_key", "discount")
    page.click("#treatments-0 .select2-selection")
    page.fill(".select2-search__field", "Renewal")
    page.click(".select2-results__option:has-text('Renewal twenty')")
    page.click("input[name=_continue]")
    _expect_success(page, "was added successfully")
    campaign = Campaign.objects.get(key="renewal-q3")
    assert (campaign.kind, campaign.experiment_id, campaign.split_dimension.key) == ("renewal", experiment.pk, "expiry")

    # Its email, with a variable that does not exist (refused at save), then fixed.
    page.click("#treatments-0 a.inlinechangelink")
    page.click("#contents-group .add-row a")
    page.select_option("#id_contents-0-channel", "email")
    page.fill("#id_contents-0-subject", "{{ customer.nickname }}, renew with {{ offer.benefit }}")
    page.fill("#id_contents-0-text", "Use {{ coupon.code }}.")
    page.click("input[name=_continue]")
    assert "customer.nickname" in page.locator("#contents-0 .errorlist").first.inner_text()
    page.fill("#id_contents-0-subject", "{{ customer.first_name }}, renew with {{ offer.benefit }}")
    page.fill(
        "#id_contents-0-text",
        "Your membership is in '{{ layer.name }}'. Use {{ coupon.code }} for {{ offer.benefit }} on your renewal.",
    )
    page.click("input[name=_continue]")
    _expect_success(page, "was changed successfully")
    assert Content.objects.filter(treatment__campaign=campaign, channel="email").count() == 1

    # --- Preview the email for a customer -----------------------------------------------------------
    page.goto(f"{app_server}/admin/campaigns/campaign/{campaign.pk}/change/")
    page.click("text=Preview content")
    page.fill("#id_customer", "loyal-1")
    page.select_option("#id_content", index=1)
    page.click("#preview-form input[type=submit]")
    assert page.inner_text("#preview-subject") == "Ada1, renew with 20% off"
    text = page.inner_text("#preview-text")
    assert "Expiring within the next 3 months" in text and "PREVIEW-CODE" in text
    screenshot("email-preview")
    page.fill("#id_customer", "nobody")
    page.click("#preview-form input[type=submit]")
    assert "No customer with this external id." in page.inner_text(".errorlist")

    # --- Launch -----------------------------------------------------------------------------------------
    page.goto(f"{app_server}/admin/campaigns/campaign/{campaign.pk}/change/")
    page.click("#campaign-transitions input[value=Launch]")
    # The segment was saved but never computed: launch is refused, computing it is one click away.
    assert "Segment 'loyal-buyers' has never been computed" in page.inner_text(".messagelist .error")
    screenshot("launch-refused-segment-not-computed")
    page.click("#compute-audience")
    _expect_success(page, "Computed segment:loyal-buyers: succeeded.")
    page.click("#campaign-transitions input[value=Launch]")
    _expect_success(page, f"Campaign {campaign.key}: launch done.")
    assert "Running" in page.inner_text("#campaign-transitions")
    screenshot("campaign-launched")
    campaign.refresh_from_db()
    assert campaign.status == "running" and campaign.started_at is not None

    # --- Running: locked, and changed only as a new version -----------------------------------------
    buttons = page.locator("#campaign-transitions input[type=submit]")
    assert sorted(buttons.nth(i).get_attribute("value") for i in range(buttons.count())) == ["Finish", "Pause"]
    assert page.locator("#locked-banner").count() == 1
    assert page.locator("#id_channels").count() == 0 and page.locator("#id_experiment").count() == 0
    page.click("#new-version-link")
    page.wait_for_selector("#new-version-banner")
    # A channel without content is refused, and nothing is kept.
    page.fill("#id_channels", "email, sms")
    page.click("input[name=_continue]")
    expect(page.locator(".messagelist .error")).to_contain_text("New version not saved")
    assert "No treatment has sms content." in page.inner_text(".messagelist .error")
    campaign.refresh_from_db()
    assert campaign.channels == ["email"] and campaign.version == 1
    # A valid change becomes version 2: the history is kept and the experiment starts phase 2.
    page.select_option("#id_channel_strategy", "all")
    page.fill("#id_channels", "email")
    page.click("input[name=_continue]")
    _expect_success(page, "version 2 in force")
    screenshot("campaign-new-version")
    campaign.refresh_from_db()
    assert (campaign.version, campaign.channel_strategy) == (2, "all")
    assert campaign.versions.get().config["channel_strategy"] == "first_reachable"
    assert experiment.phases.count() == 2
