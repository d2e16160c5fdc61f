"""A growth user watches a campaign after its delivery: opens its monitoring page from the
campaign, reads the numbers and the progress chart, follows the links to the experiment,
the lift report and the campaign's mailbox, and opens a customer's timeline."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from campaigns.models import Delivery, Recipient
from segments.models import Customer
from tests.browser.conftest import admin_login
from tests.campaigns.builders import campaign, customers, run_broadcast, send_pending
from tests.campaigns.test_decide import _experiment
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery-staple"


def test_growth_user__monitors_a_delivered_campaign__follows_links_and_opens_a_timeline(
    app_server: str, page, screenshot, settings
) -> None:  # type: ignore[no-untyped-def]
    # Given a broadcast split control / offer, delivered to the database mailbox
    settings.EMAIL_BACKEND = "campaigns.mailbox.DatabaseMailboxBackend"
    customers(60, prefix="w")
    row = campaign(key="winback", experiment=_experiment("winback-x"))
    run_broadcast(row)
    send_pending(row)
    sent = Delivery.objects.filter(campaign=row, status="sent").count()
    control = Recipient.objects.filter(campaign=row, outcome="control").count()
    assert sent > 0 and control > 0
    UserFactory(username="gwen", groups=["growth"])
    base = app_server

    # When she opens the campaign and its monitoring page
    admin_login(page, base, "gwen", PASSWORD)
    page.goto(f"{base}/admin/campaigns/campaign/{row.pk}/change/")
    page.click("#monitor-link")
    expect(page.locator("#kpi-decided strong")).to_have_text("60")
    expect(page.locator("#deliveries tr.role-treated td").nth(1)).to_have_text(str(sent))
    expect(page.locator("#deliveries tr.role-control")).to_contain_text("control (would have sent)")
    expect(page.locator("#deliveries tr.role-control")).to_contain_text(f"suppressed: control {control}")
    # the progress chart is drawn by the vendored Chart.js
    assert page.evaluate("() => !!Chart.getChart(document.getElementById('progress-chart'))")
    screenshot("monitoring")

    # Then the links lead to the lift report (and back), the experiment, and the mailbox
    page.click("#link-report")
    expect(page).to_have_url(re.compile(r"/admin/reports/experiments/winback-x/$"))
    page.click("#owner-link")
    expect(page).to_have_url(re.compile(rf"/admin/monitor/campaigns/{row.pk}/$"))
    page.click("#link-experiment")
    expect(page.locator("#owner-link")).to_have_attribute("href", f"/admin/monitor/campaigns/{row.pk}/")
    page.go_back()
    page.click("#link-mailbox")
    expect(page.locator("#result_list tbody tr")).to_have_count(sent)
    expect(page.locator("#changelist-filter")).to_contain_text("Winback")

    # And a customer's timeline from the customer page, newest first, linking back
    treated = Recipient.objects.filter(campaign=row, outcome="treated").values_list("customer_id", flat=True)[0]
    customer = Customer.objects.get(pk=treated)
    page.goto(f"{base}/admin/segments/customer/{customer.pk}/change/")
    page.click("#timeline-link")
    expect(page.locator("#timeline tbody tr.tl-message")).to_contain_text("Sent")
    expect(page.locator("#timeline tbody tr.tl-decision")).to_contain_text("Campaign winback: Treated")
    expect(page.locator("#timeline tbody tr.tl-assignment")).to_contain_text("winback-x")
    screenshot("timeline")
    page.locator("#timeline tbody tr.tl-decision a").click()
    expect(page).to_have_url(re.compile(rf"/admin/monitor/campaigns/{row.pk}/$"))
