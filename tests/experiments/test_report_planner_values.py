"""The power planner for mean and ratio metrics (issue 15): typed moments, CUPED's expected
reduction, estimates from the last N days of events (in SQL), sequential vs fixed, checked
against statsmodels' NormalIndPower / TTestIndPower called directly."""

from __future__ import annotations

import datetime as dt
import math
import re
from decimal import Decimal

import numpy as np
import pytest
import statsmodels.api as sm
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from scipy import special
from statsmodels.stats.power import NormalIndPower, TTestIndPower

from experiments.stats import Moments, RatioOf, cs_halfwidth, estimate, mixture_rho, value_sample_size
from segments.models import Customer, Event
from tests.factories import CustomerFactory

pytestmark = pytest.mark.django_db


def _control_needs(html: str) -> int:
    return int(re.search(r"control: <strong>([\d,]+)</strong>", html).group(1).replace(",", ""))  # type: ignore[union-attr]


def _plan(client: Client, user, **params: str):  # type: ignore[no-untyped-def]
    client.force_login(user)
    return client.get(reverse("reports:planner"), params)


def test_planner_mean_metric__typed_mean_and_sd__customers_of_normal_ind_power(client: Client, growth_user) -> None:  # type: ignore[no-untyped-def]
    # Given revenue per customer 40 with SD 30 and a +5% lift to detect
    response = _plan(client, growth_user, metric_kind="mean", mean_baseline="40", mean_sd="30", mde="5")

    assert response.context["form"].errors == {}
    html = response.content.decode()
    d = 40 * 0.05 / 30
    # Then the control needs NormalIndPower's n (and the t test's within a customer or two)
    normal = NormalIndPower().solve_power(effect_size=d, alpha=0.05, power=0.8, ratio=1.0)
    t = TTestIndPower().solve_power(effect_size=d, alpha=0.05, power=0.8, ratio=1.0)
    assert _control_needs(html) == math.ceil(normal)
    assert abs(_control_needs(html) - t) < 2
    assert 'id="planner-sd"' in html and "30" in re.search(r'id="planner-sd">(.*?)</td>', html, re.S).group(1)  # type: ignore[union-attr]
    assert "Fixed horizon" in html


def test_planner_mean_metric__cuped_reduction__variance_shrinks_by_it(client: Client, growth_user) -> None:  # type: ignore[no-untyped-def]
    response = _plan(
        client, growth_user, metric_kind="mean", mean_baseline="40", mean_sd="30", mde="5", cuped_reduction="40"
    )

    d = 40 * 0.05 / (30 * math.sqrt(0.6))
    normal = NormalIndPower().solve_power(effect_size=d, alpha=0.05, power=0.8, ratio=1.0)
    assert _control_needs(response.content.decode()) == math.ceil(normal)
    assert "40.0%" in response.content.decode()


def test_planner_ratio_metric__typed_moments__delta_method_variance(client: Client, growth_user) -> None:  # type: ignore[no-untyped-def]
    # Given average order value: revenue and orders per customer from simulated customers
    rng = np.random.default_rng(5)
    orders = rng.poisson(1.5, 20_000)
    revenue = orders * rng.normal(38.0, 9.0, 20_000)
    mx, my, sx, sy = revenue.mean(), orders.mean(), revenue.std(ddof=1), orders.std(ddof=1)
    r = np.corrcoef(revenue, orders)[0, 1]

    response = _plan(
        client,
        growth_user,
        metric_kind="ratio",
        ratio_numerator_mean=f"{mx:.4f}",
        ratio_numerator_sd=f"{sx:.4f}",
        ratio_denominator_mean=f"{my:.4f}",
        ratio_denominator_sd=f"{sy:.4f}",
        ratio_correlation=f"{r:.4f}",
        mde="2",
    )

    assert response.context["form"].errors == {}
    # Then the variance is the delta method's on the same customers (experiments.stats.moments)
    ratio = estimate(
        Moments.of_values([[float(a), float(b)] for a, b in zip(revenue, orders, strict=True)]), RatioOf(0, 1)
    )
    d = ratio.value * 0.02 / math.sqrt(ratio.variance)
    normal = NormalIndPower().solve_power(effect_size=d, alpha=0.05, power=0.8, ratio=1.0)
    # (the form rounds the moments to 4 decimals: within 0.1%)
    assert _control_needs(response.content.decode()) == pytest.approx(normal, rel=1e-3)


def test_planner_mean_metric__sequential__more_customers_and_power_at_the_confidence_sequence(
    client: Client, growth_user
) -> None:  # type: ignore[no-untyped-def]
    response = _plan(
        client, growth_user, metric_kind="mean", mean_baseline="40", mean_sd="30", mde="5", mode="sequential"
    )

    html = response.content.decode()
    n = _control_needs(html)
    fixed = value_sample_size(40.0, 900.0, 0.05).required_control
    assert "Always valid (sequential)" in html
    assert n > 1.5 * fixed
    # Power at n per arm, from the sequential module's confidence-sequence half-width:
    # the CS leaves out 0 when the estimate exceeds it.
    se = math.sqrt(900.0 * 2 / n)
    halfwidth = cs_halfwidth(se, 2 * n, 0.05, mixture_rho(0.05, 2 * n))
    power = special.ndtr(2.0 / se - halfwidth / se)
    assert power == pytest.approx(0.8, abs=2e-3)


def test_planner_value_metric__estimate_from_last_days__moments_and_cuped_from_the_events(
    client: Client, growth_user
) -> None:  # type: ignore[no-untyped-def]
    # Given 60 customers, 45 of whom ordered in the last 14 days and the 14 days before
    now = timezone.now()
    rng = np.random.default_rng(9)
    customers = CustomerFactory.create_batch(60)
    post, pre = np.zeros(60), np.zeros(60)
    events = []
    for i, customer in enumerate(customers[:45]):
        habit = float(rng.lognormal(3.0, 0.5))
        for period, array, days_ago in ((0, post, 3), (1, pre, 20)):
            amount = round(habit + float(rng.normal(0, 5)), 2) if rng.random() < 0.8 else 0.0
            if amount > 0:
                array[i] = amount
                events.append(
                    Event(
                        event_id=f"plan-{i}-{period}",
                        customer=customer,
                        event_type_id=_order_type_id(),
                        occurred_at=now - dt.timedelta(days=days_ago),
                        amount=Decimal(f"{amount:.2f}"),
                        currency="EUR",
                    )
                )
    Event.objects.bulk_create(events)
    assert Customer.objects.count() == 60

    response = _plan(
        client,
        growth_user,
        metric_kind="mean",
        estimate_event_type="order",
        estimate_measure="sum",
        estimate_days="14",
        mde="10",
    )

    assert response.context["form"].errors == {}
    value = response.context["result"].value
    # Then mean and variance over all customers (zeros included), reduction = R^2 of OLS post ~ pre
    assert value.baseline == pytest.approx(post.mean(), rel=1e-9)
    assert value.variance == pytest.approx(post.var(ddof=1), rel=1e-9)
    r2 = sm.OLS(post, sm.add_constant(pre)).fit().rsquared
    assert value.reduction == pytest.approx(r2, rel=1e-9) and r2 > 0.3
    assert "Estimated from the last 14 days of order events over 60 customers" in value.source
    d = post.mean() * 0.1 / math.sqrt(post.var(ddof=1) * (1 - r2))
    assert _control_needs(response.content.decode()) == math.ceil(
        NormalIndPower().solve_power(d, power=0.8, alpha=0.05)
    )


def _order_type_id() -> int:
    from segments.models import EventType

    return EventType.objects.get(code="order").pk


def test_planner_value_metric__mixed_currencies__refused_with_reason(client: Client, growth_user) -> None:  # type: ignore[no-untyped-def]
    now = timezone.now()
    a, b = CustomerFactory.create_batch(2)
    for i, (customer, currency) in enumerate(((a, "EUR"), (b, "USD"))):
        Event.objects.create(
            event_id=f"mixed-{i}",
            customer=customer,
            event_type_id=_order_type_id(),
            occurred_at=now - dt.timedelta(days=1),
            amount=Decimal("10.00"),
            currency=currency,
        )

    response = _plan(
        client, growth_user, metric_kind="mean", estimate_event_type="order", estimate_measure="sum", estimate_days="7"
    )

    html = response.content.decode()
    assert "EUR, USD" in html and "not summed" in html
    assert response.context["result"].total.text == "not defined"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"metric_kind": "mean", "mean_baseline": "40"}, "mean_sd"),
        ({"metric_kind": "mean", "mean_baseline": "0", "mean_sd": "3"}, "mean_baseline"),
        ({"metric_kind": "ratio", "ratio_numerator_mean": "40"}, "ratio_denominator_mean"),
        ({"metric_kind": "mean", "estimate_days": "14", "estimate_measure": "sum"}, "estimate_event_type"),
        (
            {"metric_kind": "mean", "estimate_days": "14", "estimate_measure": "sum", "estimate_event_type": "nope"},
            "estimate_event_type",
        ),
        (
            {"metric_kind": "ratio", "estimate_days": "14", "estimate_measure": "sum", "estimate_event_type": "order"},
            "estimate_measure",
        ),
        ({"metric_kind": "mean", "mean_baseline": "40", "mean_sd": "3", "cuped_reduction": "99"}, "cuped_reduction"),
        ({"metric_kind": "median"}, "metric_kind"),
        ({"mode": "bayesian"}, "mode"),
    ],
)
def test_planner_value_metric__bad_input__error_names_the_field(
    client: Client, growth_user, params: dict[str, str], field: str
) -> None:  # type: ignore[no-untyped-def]
    response = _plan(client, growth_user, mde="5", **params)

    assert response.status_code == 200
    assert field in response.context["form"].errors
    assert response.context["result"] is None


def test_planner_conversion_plan__experiment_with_revenue_primary__mean_not_read_as_a_rate(
    client: Client, growth_user
) -> None:  # type: ignore[no-untyped-def]
    from experiments.models import Metric
    from segments.models import EventType
    from tests.experiments.report_builders import Group, experiment_create, populate

    # Given an experiment whose primary metric is revenue per customer (a mean of ~40, not a rate)
    experiment = experiment_create(metrics=())
    Metric.objects.create(experiment=experiment, event_type=EventType.objects.get(code="order"), kind="sum")
    populate(experiment, [Group("control", 150), Group("treatment", 150)])

    response = _plan(client, growth_user, experiment=experiment.key, mde="10")

    # Then the conversion plan does not use the mean as a baseline rate, and says what to do
    result = response.context["result"]
    assert result.baseline.text == "not defined" and "primary metric is a value metric" in result.baseline.undefined
    assert response.context["table"] == []
