"""The lift report at a 1366 px wide screen: the verdict, traffic-split and power columns are
visible without scrolling sideways."""

from __future__ import annotations

import pytest

from tests.browser.conftest import admin_login
from tests.browser.data import campaigns_with_results
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery-staple"


def test_lift_report__1366px_wide__verdict_split_and_power_columns_visible_no_sideways_scroll(
    app_server, page, screenshot
) -> None:  # type: ignore[no-untyped-def]
    campaigns_with_results()
    UserFactory(username="mia", groups=["marketer"])
    page.set_viewport_size({"width": 1366, "height": 768})
    admin_login(page, app_server, "mia", PASSWORD)
    page.goto(f"{app_server}/admin/reports/experiments/renewal-by-window/")
    page.wait_for_selector("#primary-order-expiry")
    screenshot("lift-report-1366")
    overflow = page.evaluate(
        """() => ({
            page: document.documentElement.scrollWidth - document.documentElement.clientWidth,
            tables: [...document.querySelectorAll('.table-scroll')].map(e => e.scrollWidth - e.clientWidth),
            right: Math.max(...[...document.querySelectorAll('.report-table th')]
                .filter(th => /Verdict|Traffic split|Power/.test(th.textContent))
                .map(th => th.getBoundingClientRect().right)),
        })"""
    )
    assert overflow["page"] <= 0, overflow
    assert max(overflow["tables"]) <= 0, overflow
    assert overflow["right"] <= 1366, overflow
