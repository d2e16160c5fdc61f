"""A marketer signs in, opens the lift report and the tier playbook, downloads the playbook
CSV, and is refused when trying to edit the experiment; a marketer opens every campaign and segment
page, sees everything and can change nothing (no buttons; forged submissions refused)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from tests.browser.conftest import admin_login
from tests.browser.data import campaigns_with_results
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery-staple"


def test_marketer__reads_report_and_playbook_then_edits_experiment__csv_downloaded_and_edit_refused(
    app_server, page, screenshot
) -> None:  # type: ignore[no-untyped-def]
    results = campaigns_with_results()
    UserFactory(username="mia", groups=["marketer"])
    admin_login(page, app_server, "mia", PASSWORD)

    # --- The lift report of the renewal experiment -----------------------------------------
    page.goto(f"{app_server}/admin/reports/")
    page.click("text=Renewal By Window")
    page.wait_for_url(f"{app_server}/admin/reports/experiments/renewal-by-window/")
    # Each layer is two lines, the control's then the treatment's.
    layer_rows = page.locator("#primary-order-expiry tbody tr")
    texts = [layer_rows.nth(i).inner_text() for i in range(layer_rows.count())]
    soon_index = next(i for i, t in enumerate(texts) if "Expiring within the next 3 months" in t)
    assert "significant win" in texts[soon_index + 1]
    assert "+8.00 pts" in texts[soon_index + 1] and "+80.0%" in texts[soon_index + 1]
    expired_index = next(i for i, t in enumerate(texts) if "Expired within the last 3 months" in t)
    assert "significant loss" in texts[expired_index + 1]
    page.wait_for_selector("#timeseries-chart")
    screenshot("lift-report")

    # --- The tier playbook ------------------------------------------------------------------
    page.goto(f"{app_server}/admin/playbook/")
    assert page.locator("h1").inner_text() == "Tier playbook"
    headers = page.locator("#matrix-expiry thead th.pb-campaign")
    assert [headers.nth(i).get_attribute("data-campaign") for i in range(headers.count())] == [
        "winback-recall",
        "renewal-spring",
    ]

    def cell(matrix: str, layer: str, campaign: str):  # type: ignore[no-untyped-def]
        return page.locator(f"#matrix-{matrix} tr[data-layer='{layer}'] td[data-campaign='{campaign}']")

    win = cell("expiry", "expiring_soon", "renewal-spring")
    assert win.get_attribute("data-outcome") == "win"
    win_text = win.inner_text()
    assert "Winner: Discount20" in win_text and "20% off your renewal" in win_text
    assert "+80.0%" in win_text and "+80.0 per 1,000" in win_text
    loss = cell("expiry", "expired_recently", "renewal-spring")
    assert loss.get_attribute("data-outcome") == "loss"
    assert "Significant loss: Discount20" in loss.inner_text() and "Do not give this offer" in loss.inner_text()
    assert "Winner" not in loss.inner_text()
    assert cell("expiry", "valid", "renewal-spring").inner_text().startswith("No evidence")
    assert cell("expiry", "none", "renewal-spring").inner_text().startswith("Not enough data")
    # The win-back campaign never reached expiry layers; its RFM matrix has its own winner.
    assert cell("expiry", "expiring_soon", "winback-recall").get_attribute("data-outcome") == "no_customers"
    rfm_win = cell("rfm", "important_win_back", "winback-recall")
    assert "Winner: Comeback" in rfm_win.inner_text() and "+60.0 per 1,000" in rfm_win.inner_text()
    assert cell("rfm", "general_win_back", "winback-recall").get_attribute("data-outcome") == "no_evidence"
    assert "No campaign on this page reached: Important value," in page.inner_text("#dimension-rfm")
    assert "(treatment conversion rate − control conversion rate) × 1,000" in page.inner_text("#fn-per-1000")
    screenshot("tier-playbook")

    # --- The CSV ----------------------------------------------------------------------------------
    with page.expect_download() as download_info:
        page.click("#export-csv")
    download = download_info.value
    assert download.suggested_filename.startswith("tier-playbook-") and download.suggested_filename.endswith(".csv")
    lines = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8"))))
    by_key = {(line["dimension"], line["layer"], line["campaign"]): line for line in lines}
    soon_line = by_key[("expiry", "expiring_soon", "renewal-spring")]
    assert soon_line["outcome"] == "win" and soon_line["variant"] == "discount20"
    assert float(soon_line["incremental_conversions_per_1000"]) == pytest.approx(80.0)
    assert by_key[("expiry", "expired_recently", "renewal-spring")]["outcome"] == "loss"
    assert by_key[("rfm", "important_win_back", "winback-recall")]["outcome"] == "win"

    # --- From the playbook to the report -------------------------------------------------------
    page.locator("#matrix-expiry th[data-campaign='renewal-spring'] a.pb-report-link").click()
    page.wait_for_url(f"{app_server}/admin/reports/experiments/renewal-by-window/")

    # --- Editing the experiment is refused -----------------------------------------------------
    change_url = f"{app_server}/admin/experiments/experiment/{results.renewal_experiment.pk}/change/"
    page.goto(change_url)
    assert page.locator("h1").inner_text() == "View experiment"
    assert page.locator("input[name=_save]").count() == 0
    assert page.locator("#experiment-transitions").count() == 0
    assert page.locator("#id_name").count() == 0  # read-only fields, no inputs
    screenshot("experiment-read-only")
    # A forged submission (with a valid CSRF token) is refused by the server.
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    forged = page.request.post(
        change_url,
        form={"csrfmiddlewaretoken": token, "name": "Hijacked", "key": "renewal-by-window"},
        headers={"Referer": change_url},
    )
    assert forged.status == 403
    assert "CSRF" not in forged.text()
    transition = page.request.post(
        f"{app_server}/admin/experiments/experiment/{results.renewal_experiment.pk}/transition/stop/",
        form={"csrfmiddlewaretoken": token},
        headers={"Referer": change_url},
    )
    assert transition.status == 403
    response = page.goto(f"{app_server}/admin/experiments/experiment/add/")
    assert response is not None and response.status == 403
    results.renewal_experiment.refresh_from_db()
    assert (results.renewal_experiment.name, results.renewal_experiment.status) == ("Renewal By Window", "running")


def test_marketer__opens_every_campaign_and_segment_page__sees_everything_changes_nothing(
    app_server, page, screenshot
) -> None:  # type: ignore[no-untyped-def]
    from campaigns.models import Campaign, Offer
    from campaigns.services import lifecycle
    from segments.models import Dimension, Segment
    from segments.services.segments import segment_create
    from tests.campaigns.builders import campaign, customers
    from tests.campaigns.test_decide import _experiment

    customers(3, prefix="mk")
    running = lifecycle.campaign_launch(campaign=campaign(key="spring-live", experiment=_experiment("spring-live-x")))
    draft = campaign(key="autumn-draft")
    segment = segment_create(
        key="buyers", name="Buyers", rule={"event": "order", "agg": "count", "op": "gte", "value": 1}
    )
    dimension = Dimension.objects.get(key="rfm")
    UserFactory(username="mia", groups=["marketer"])
    admin_login(page, app_server, "mia", PASSWORD)
    token = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")

    def forged(path: str, form: dict[str, str] | None = None) -> int:
        url = f"{app_server}{path}"
        return page.request.post(
            url, form={"csrfmiddlewaretoken": token, **(form or {})}, headers={"Referer": url}
        ).status

    # --- Sees: every list and page opens, with the data ------------------------------------------
    for path, text in [
        ("/admin/campaigns/campaign/", "spring-live"),
        ("/admin/campaigns/delivery/", "deliveries"),
        ("/admin/campaigns/recipient/", "recipient"),
        ("/admin/segments/segment/", "buyers"),
        ("/admin/segments/customer/", "mk000000"),
        ("/admin/experiments/experiment/", "spring-live-x"),
        ("/admin/playbook/", "Tier playbook"),
    ]:
        response = page.goto(f"{app_server}{path}")
        assert response is not None and response.status == 200, path
        assert text.lower() in page.inner_text("#content").lower(), path
        assert page.locator("a.addlink").count() == 0, path  # nothing to add

    # --- Changes nothing: every campaign page is a view, without buttons -------------------------
    for row in (running, draft):
        page.goto(f"{app_server}/admin/campaigns/campaign/{row.pk}/change/")
        assert page.locator("h1").inner_text() == "View campaign"
        for selector in (
            "input[name=_save]",
            "#campaign-transitions",
            "#new-version-link",
            "#duplicate-button",
            "a.deletelink",
            "#id_name",
        ):
            assert page.locator(selector).count() == 0, (row.key, selector)
    page.goto(f"{app_server}/admin/campaigns/campaign/{running.pk}/change/")
    screenshot("campaign-view-only")
    treatment = running.treatments.get()
    page.goto(f"{app_server}/admin/campaigns/treatment/{treatment.pk}/change/")
    assert page.locator("h1").inner_text() == "View treatment" and page.locator("textarea").count() == 0
    page.goto(f"{app_server}/admin/campaigns/offer/{treatment.offer_id}/change/")
    assert page.locator("h1").inner_text() == "View offer"
    page.goto(f"{app_server}/admin/segments/segment/{segment.pk}/change/")
    assert page.locator("h1").inner_text() == "View segment" and page.locator("#id_rule").count() == 0
    page.goto(f"{app_server}/admin/segments/dimension/{dimension.pk}/change/")
    assert page.locator("h1").inner_text() == "View dimension"
    screenshot("dimension-view-only")

    # --- Forged submissions (valid CSRF token) are refused by the server -------------------------
    for action in ("pause", "finish"):
        assert forged(f"/admin/campaigns/campaign/{running.pk}/transition/{action}/") == 403, action
    assert forged(f"/admin/campaigns/campaign/{draft.pk}/transition/launch/") == 403
    assert forged(f"/admin/campaigns/campaign/{running.pk}/change/?new_version=1", {"name": "Hijacked"}) == 403
    assert forged(f"/admin/campaigns/campaign/{running.pk}/duplicate/") == 403
    assert forged(f"/admin/campaigns/campaign/{running.pk}/compute-audience/") == 403
    assert forged(f"/admin/campaigns/campaign/{draft.pk}/delete/", {"post": "yes"}) == 403
    assert forged(f"/admin/campaigns/offer/{treatment.offer_id}/change/", {"name": "Free"}) == 403
    assert forged(f"/admin/segments/segment/{segment.pk}/change/", {"name": "Hijacked"}) == 403
    assert forged("/admin/segments/segment/add/", {"key": "x", "name": "X", "rule": "{}"}) == 403
    running.refresh_from_db()
    draft.refresh_from_db()
    segment.refresh_from_db()
    assert (running.status, running.version, running.name) == (Campaign.Status.RUNNING, 1, "Spring-Live")
    assert draft.status == Campaign.Status.DRAFT and Campaign.objects.count() == 2
    assert Offer.objects.get(pk=treatment.offer_id).name == "Ten percent"
    assert segment.name == "Buyers" and Segment.objects.count() == 1
