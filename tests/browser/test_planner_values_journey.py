"""A growth user plans a revenue test in the power planner: picks a mean metric, forgets
the standard deviation (the field says so), completes it with CUPED's expected reduction and
the always-valid test, then lets the planner estimate the numbers from the last 14 days of
orders."""

from __future__ import annotations

import datetime as dt
import math
from decimal import Decimal

import pytest
from django.utils import timezone
from playwright.sync_api import expect

from experiments.stats import value_sample_size
from tests.browser.conftest import admin_login
from tests.factories import CustomerFactory, OrderFactory, UserFactory

pytestmark = pytest.mark.django_db(transaction=True, serialized_rollback=True)

PASSWORD = "correct-horse-battery-staple"


def test_growth_user__plans_revenue_test_in_power_planner__typed_then_estimated(app_server, page, screenshot) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    for i in range(12):
        customer = CustomerFactory(external_id=f"buyer-{i}")
        OrderFactory(customer=customer, occurred_at=now - dt.timedelta(days=2), amount=Decimal(20 + 3 * i))
        OrderFactory(customer=customer, occurred_at=now - dt.timedelta(days=20), amount=Decimal(18 + 3 * i))
    for i in range(4):
        CustomerFactory(external_id=f"quiet-{i}")
    UserFactory(username="gina", groups=["growth"])
    admin_login(page, app_server, "gina", PASSWORD)

    # --- Typed moments: the forgotten SD is named ---------------------------------------
    page.goto(f"{app_server}/admin/reports/planner/")
    page.select_option("#id_metric_kind", "mean")
    page.fill("#id_mean_baseline", "40")
    page.fill("#id_mde", "5")
    page.click("input[type=submit]")
    expect(page.locator("tr:has(#id_mean_sd) .errorlist")).to_contain_text("Required for a mean metric")
    assert page.locator("#planner-result").count() == 0
    screenshot("missing-sd")

    page.fill("#id_mean_sd", "30")
    page.fill("#id_cuped_reduction", "40")
    page.select_option("#id_mode", "sequential")
    page.click("input[type=submit]")
    result = page.locator("#planner-result")
    expect(result).to_be_visible()
    needed = value_sample_size(40.0, 900.0, 0.05, variance_reduction=0.4, sequential=True).required_control
    expect(result).to_contain_text(f"control: {needed:,}")
    expect(page.locator("#planner-mode")).to_have_text("Always valid (sequential)")
    expect(page.locator("#planner-reduction")).to_have_text("40.0%")
    screenshot("typed-sequential")

    # --- Estimated from the last 14 days of orders ----------------------------------------
    page.fill("#id_mean_baseline", "")
    page.fill("#id_mean_sd", "")
    page.fill("#id_cuped_reduction", "")
    page.select_option("#id_mode", "fixed")
    page.fill("#id_estimate_event_type", "order")
    page.select_option("#id_estimate_measure", "sum")
    page.fill("#id_estimate_days", "14")
    page.click("input[type=submit]")
    expect(page.locator("#planner-source")).to_contain_text("Estimated from the last 14 days of order events")
    post = [20 + 3 * i for i in range(12)] + [0] * 4
    mean = sum(post) / 16
    expect(page.locator("#planner-baseline")).to_have_text(f"{mean:,.4g}")
    expect(page.locator("#planner-source")).to_contain_text("capped at 95%")  # pre = post - 2: R^2 = 1
    assert math.isfinite(mean)
    screenshot("estimated")
