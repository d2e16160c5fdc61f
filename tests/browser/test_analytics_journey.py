"""Growth and marketer users open each growth-analytics page from the admin index: the
chart is drawn by the vendored Chart.js in a real Chromium, the numbers are on the page,
and the CSV link downloads the same numbers."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pytest

from segments.models import Dimension, Layer, LayerHistory
from tests.browser.conftest import admin_login
from tests.factories import CustomerFactory, EventFactory, UserFactory, event_type

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery-staple"
UTC = dt.UTC
RETENTION = "/admin/analytics/retention/?cohort=day&periods=2&cohort_from=2026-01-01&cohort_to=2026-01-01"
FUNNEL = "/admin/analytics/funnel/?steps=login,visit&start=2026-01-01T00:00:00%2B00:00&end=2026-02-01T00:00:00%2B00:00"
FLOWS = "/admin/analytics/flows/?dimension=rfm&grain=week&start=2026-01-01&end=2026-01-31"


def _business() -> None:
    # Two sign-ups on Jan 1; one comes back on day 1 (login, then a visit an hour later).
    a = CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 10, tzinfo=UTC), attributes={"channel": "social"})
    EventFactory(customer=a, event_type=event_type("login"), occurred_at=dt.datetime(2026, 1, 2, 10, tzinfo=UTC))
    EventFactory(customer=a, event_type=event_type("visit"), occurred_at=dt.datetime(2026, 1, 2, 11, tzinfo=UTC))
    CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 11, tzinfo=UTC), attributes={"channel": "organic"})
    # One RFM move: important value (Jan 5) -> important retention (Jan 12).
    rfm = Dimension.objects.get(key="rfm")
    value = Layer.objects.get(dimension=rfm, key="important_value")
    retention = Layer.objects.get(dimension=rfm, key="important_retention")
    jan5 = dt.datetime(2026, 1, 5, 2, 30, tzinfo=UTC)
    LayerHistory.objects.create(
        customer=a, dimension=rfm, layer=value, entered_at=jan5, left_at=jan5 + 7 * dt.timedelta(days=1)
    )
    LayerHistory.objects.create(customer=a, dimension=rfm, layer=retention, entered_at=jan5 + 7 * dt.timedelta(days=1))


def _download(page, selector: str) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    with page.expect_download() as info:
        page.click(selector)
    path = Path(info.value.path())
    return list(csv.DictReader(io.StringIO(path.read_text())))


@pytest.mark.parametrize("group", ["growth", "marketer"])
def test_analytics_pages__growth_and_marketer__charts_drawn_numbers_shown_csv_downloads(
    app_server, page, screenshot, group: str
) -> None:  # type: ignore[no-untyped-def]
    # The analytics statements and a cold gunicorn worker share 2 cores with other runs.
    page.set_default_timeout(60_000)
    _business()
    UserFactory(username=f"{group}-user", groups=[group])
    admin_login(page, app_server, f"{group}-user", PASSWORD)

    # --- Retention: from the admin index, then the Jan 1 cohort ------------------------------
    page.click("text=Retention cohorts")
    page.wait_for_url(f"{app_server}/admin/analytics/retention/")
    page.goto(app_server + RETENTION)
    page.wait_for_selector("#retention-chart[data-rendered='true']")
    assert "50.0%" in page.locator("#retention-table").inner_text()
    rows = [r for r in _download(page, "#csv-link") if r["layer"] == ""]
    assert [(r["period"], r["retained"], r["rate"]) for r in rows] == [
        ("0", "0", "0.0"),
        ("1", "1", "0.5"),
        ("2", "0", "0.0"),
    ]
    screenshot(f"retention-{group}")
    # ... split by acquisition channel, chosen in the form: the social sign-up came back on
    # day 1, the organic one did not
    page.select_option("#breakdown", "attribute:channel")
    page.click("#retention-form input[type=submit]")
    page.wait_for_selector("#layer-table")
    assert page.locator("#layer-heading").inner_text() == "By channel (customer attribute)"
    per_channel = page.locator("#layer-table tbody").inner_text()
    assert "social\t1\t100.0%" in per_channel and "organic\t1\t0.0%" in per_channel, per_channel

    # --- Funnel: login -> visit, one customer, one hour apart ---------------------------------
    page.click(".breadcrumbs >> text=Funnels")
    page.goto(app_server + FUNNEL)
    page.wait_for_selector("#funnel-chart[data-rendered='true']")
    assert "60.0 min" in page.content()
    steps = _download(page, "#csv-link")
    assert [(r["step"], r["reached"]) for r in steps if not r.get("group")] == [("1", "1"), ("2", "1")]
    screenshot(f"funnel-{group}")

    # --- Flows: the RFM move and the lifecycle chart ------------------------------------------
    page.click(".breadcrumbs >> text=Flows")
    page.goto(app_server + FLOWS)
    page.wait_for_selector("#lifecycle-chart[data-rendered='true']")
    assert "important_value\timportant_retention\t1" in page.locator("#flow-table").inner_text()
    moves = _download(page, "#flow-matrix >> xpath=preceding::a[text()='Download CSV'][1]")
    assert [(r["from_layer"], r["to_layer"], r["customers"]) for r in moves] == [
        ("", "important_value", "1"),
        ("important_value", "important_retention", "1"),
    ]
    screenshot(f"flows-{group}")
