"""A growth user opens a running campaign: only the valid status buttons show, the audience,
experiment, channels, treatments and content are read-only; an edit is made as a new version
(from the campaign's page, then a content change from the treatment's page), each keeping the
previous configuration and starting a new phase of the experiment."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from campaigns.models import Campaign, CampaignVersion, Content
from campaigns.services import lifecycle
from experiments.models import Phase
from tests.browser.conftest import admin_login
from tests.campaigns.builders import campaign, customers
from tests.campaigns.test_decide import _experiment
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery-staple"


def test_growth_user__running_campaign_locked_edit_then_new_versions__history_and_phases_kept(
    app_server, page, screenshot
) -> None:  # type: ignore[no-untyped-def]
    customers(5, prefix="live")
    row = lifecycle.campaign_launch(campaign=campaign(key="spring-live", experiment=_experiment("spring-live-x")))
    treatment = row.treatments.get()
    UserFactory(username="gus", groups=["growth"])
    admin_login(page, app_server, "gus", PASSWORD)
    change_url = f"{app_server}/admin/campaigns/campaign/{row.pk}/change/"
    treatment_url = f"{app_server}/admin/campaigns/treatment/{treatment.pk}/change/"

    # --- Locked: what decides who gets what is read-only; only valid transitions show -------
    page.goto(change_url)
    expect(page.locator("#locked-banner")).to_contain_text("This campaign is running (version 1)")
    buttons = page.locator("#campaign-transitions input[type=submit]")
    assert [buttons.nth(i).get_attribute("value") for i in range(buttons.count())] == ["Pause", "Finish"]
    for field in ("experiment", "include_segments", "split_dimension", "channels", "channel_strategy", "topic"):
        assert page.locator(f"#id_{field}").count() == 0, field
    assert page.locator("[name='treatments-0-offer']").count() == 0  # the treatments inline is read-only
    assert page.locator("#id_name").count() == 1  # free text stays editable
    assert page.locator("a.deletelink").count() == 0  # its recipients and deliveries are the record
    screenshot("running-campaign-locked")

    page.goto(f"{app_server}/admin/campaigns/offer/{treatment.offer_id}/change/")
    assert page.locator("h1").inner_text() == "View offer"  # what a live campaign gives is kept

    page.goto(treatment_url)
    expect(page.locator("#locked-banner")).to_contain_text("this treatment and its content are read-only")
    assert page.locator("textarea[name$='-text']").count() == 0 and page.locator("input[name=_save]").count() == 0
    screenshot("treatment-locked")

    # --- A new version from the campaign's page -------------------------------------------------
    page.goto(change_url)
    page.click("#new-version-link")
    expect(page.locator("#new-version-banner")).to_contain_text("Editing version 2.")
    assert page.locator("#id_experiment").count() == 0  # the experiment never changes, not even now
    page.select_option("#id_channel_strategy", "all")
    page.click("input[name=_continue]")
    expect(page.locator(".messagelist .success")).to_contain_text("version 2 in force")
    expect(page.locator("#locked-banner")).to_contain_text("(version 2)")
    expect(page.locator(".field-version_history")).to_contain_text("1")
    screenshot("version-2")
    row.refresh_from_db()
    assert (row.version, row.channel_strategy) == (2, Campaign.ChannelStrategy.ALL)
    first = CampaignVersion.objects.get(campaign=row)
    assert (first.number, first.config["channel_strategy"]) == (1, "first_reachable")

    # --- A content change is a new version too (from the treatment's page) ----------------------
    page.goto(treatment_url)
    page.click("#new-version-link")
    expect(page.locator("#new-version-banner")).to_contain_text("Editing as version 3")
    subject = page.locator("#id_contents-0-subject")
    subject.fill("Spring is here, {{ customer.external_id }}")
    page.click("input[name=_save]")
    expect(page.locator(".messagelist .success").first).to_contain_text("version 3 in force")
    row.refresh_from_db()
    assert row.version == 3
    assert Content.objects.get(treatment=treatment, channel="email").subject.startswith("Spring is here")
    versions = CampaignVersion.objects.filter(campaign=row).order_by("number")
    assert [v.number for v in versions] == [1, 2]
    assert versions[1].config["treatments"][0]["contents"]["email"]["subject"] == "Hi {{ customer.external_id }}"
    phases = Phase.objects.filter(experiment=row.experiment).order_by("number")
    assert list(phases.values_list("number", flat=True)) == [1, 2, 3]

    # --- Still locked afterwards ---------------------------------------------------------------------
    page.goto(treatment_url)
    expect(page.locator("#locked-banner")).to_be_visible()
    assert page.locator("#id_contents-0-subject").count() == 0
