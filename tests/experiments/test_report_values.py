"""The lift report with value metrics (issue 15): revenue, ratio and CUPED rows checked
against scipy / statsmodels on the per-customer values, the plan's family and modes."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats as sps

from experiments.models import Assignment, Metric
from experiments.reports.assemble import report_build
from experiments.reports.views import _row_view
from experiments.services.conversions import conversions_refresh
from segments.models import Event, EventType
from tests.experiments.report_builders import PHASE_START, Group, experiment_create, populate

pytestmark = pytest.mark.django_db

EXPOSED = PHASE_START + dt.timedelta(hours=1)
NOW = PHASE_START + dt.timedelta(days=30)


def _events(assignments: dict[int, str], seed: int) -> tuple[list[Event], pd.DataFrame]:
    """Per customer: pre-period revenue and in-window orders; the treatment converts more
    often but with a smaller order value (net revenue per customer falls)."""
    rng = np.random.default_rng(seed)
    order = EventType.objects.get(code="order")
    events, rows = [], []
    for customer, variant in sorted(assignments.items()):
        treated = variant == "treatment"
        pre = round(float(rng.lognormal(3.5, 0.6)), 2) if rng.random() < 0.6 else 0.0
        buys = rng.random() < (0.45 if treated else 0.35)
        k = int(rng.integers(1, 3)) if buys else 0
        amounts = [round(0.5 * pre + float(rng.lognormal(3.2 if treated else 3.6, 0.4)), 2) for _ in range(k)]
        for j, amount in enumerate(amounts):
            events.append(_event(order, customer, EXPOSED + dt.timedelta(days=1 + j), amount))
        if pre:
            events.append(_event(order, customer, EXPOSED - dt.timedelta(days=2), pre))
        rows.append(
            {
                "treatment": int(treated),
                "revenue": round(sum(amounts), 2),
                "orders": k,
                "pre": pre,
                "pre_orders": int(bool(pre)),
            }
        )
    return events, pd.DataFrame(rows)


def _event(event_type: EventType, customer: int, at: dt.datetime, amount: float) -> Event:
    return Event(
        event_id=f"v-{customer}-{at.isoformat()}",
        customer_id=customer,
        event_type=event_type,
        occurred_at=at,
        amount=Decimal(f"{amount:.2f}"),
        currency="EUR",
    )


def _experiment(mode: str = "fixed", **metric_fields):  # type: ignore[no-untyped-def]
    plan = {"inference_mode": mode, "planned_sample_size": 1} if mode == "fixed" else {"inference_mode": mode}
    experiment = experiment_create(metrics=(), plan=plan)
    Metric.objects.create(experiment=experiment, event_type=EventType.objects.get(code="order"), **metric_fields)
    populate(
        experiment, [Group("control", 160, layers={"tier": "vip"}), Group("treatment", 160, layers={"tier": "vip"})]
    )
    phase = experiment.phases.get(number=1)
    assignments = {
        a.customer_id: a.variant.key for a in Assignment.objects.filter(phase=phase).select_related("variant")
    }
    events, frame = _events(assignments, seed=42)
    Event.objects.bulk_create(events)
    conversions_refresh(experiment=experiment, full=True)  # buyers: the conversion counts
    return experiment, frame


def test_report_revenue_metric__no_cuped__welch_numbers_of_scipy() -> None:
    # Given revenue per customer as the primary metric, CUPED off
    experiment, df = _experiment(kind=Metric.Kind.SUM, cuped_lookback_days=0)

    report = report_build(experiment_key=experiment.key, now=NOW)

    metric = report.primary
    assert metric is not None and metric.metric.event_type == "order:sum" and metric.metric.currency == "EUR"
    (lift,) = metric.overall.lifts
    ref = sps.ttest_ind(df.revenue[df.treatment == 1], df.revenue[df.treatment == 0], equal_var=False)
    assert lift.z == pytest.approx(ref.statistic, rel=1e-9)
    assert lift.p_value == pytest.approx(ref.pvalue, rel=1e-7)
    control, treatment = metric.overall.arms
    assert control.value == pytest.approx(df.revenue[df.treatment == 0].mean(), rel=1e-12)
    assert treatment.value == pytest.approx(df.revenue[df.treatment == 1].mean(), rel=1e-12)
    # the conversion count is the buyers: more of them in the treatment, yet less revenue
    assert treatment.conversions > control.conversions and lift.absolute_lift < 0
    # The primary metric is the confirmatory family, and the report is JSON-clean
    assert lift.family_kind == "confirmatory"
    json.dumps(report.to_dict(), allow_nan=False)


def test_report_revenue_metric__cuped__equals_ols_with_centred_pre_and_shows_reduction() -> None:
    experiment, df = _experiment(kind=Metric.Kind.SUM, cuped_lookback_days=14)

    report = report_build(experiment_key=experiment.key, now=NOW)

    row = report.primary.overall
    fit = smf.ols("revenue ~ treatment + I(pre - pre.mean())", data=df).fit()
    assert row.cuped is not None and row.cuped.applied
    assert row.cuped.theta == pytest.approx(fit.params["I(pre - pre.mean())"], rel=1e-9)
    assert row.lifts[0].absolute_lift == pytest.approx(fit.params["treatment"], rel=1e-9)
    within = df.revenue - df.groupby("treatment").revenue.transform("mean")
    assert row.cuped.variance_reduction == pytest.approx(1 - (fit.resid**2).sum() / (within**2).sum(), rel=1e-9)
    assert row.cuped.variance_reduction > 0
    # The page shows values and lifts in the metric's units (not points) and what CUPED did
    view = _row_view(row)
    assert str(view.lines[0].rate) == f"{row.arms[0].value:,.2f}"
    assert "pts" not in str(view.lines[1].absolute) and "pts" not in str(view.lines[1].absolute_ci)
    assert any(note.startswith("CUPED (14-day lookback) removed") for note in view.lines[1].notes)
    # and the layer rows are adjusted within the layer
    (dimension,) = report.primary.dimensions
    assert dimension.layers[0].cuped.applied


def test_report_ratio_metric__sequential__delta_method_with_confidence_sequence() -> None:
    order = EventType.objects.get(code="order")
    experiment, df = _experiment(
        mode="sequential",
        kind=Metric.Kind.RATIO,
        numerator_part="sum",
        denominator_event_type=order,
        denominator_part="count",
        cuped_lookback_days=0,
    )

    report = report_build(experiment_key=experiment.key, now=NOW)

    metric = report.primary
    assert metric.metric.event_type == "order:sum/order:count" and metric.metric.kind == "ratio"
    control, treatment = metric.overall.arms
    c, t = df[df.treatment == 0], df[df.treatment == 1]
    assert control.value == pytest.approx(c.revenue.sum() / c.orders.sum(), rel=1e-12)
    assert treatment.value == pytest.approx(t.revenue.sum() / t.orders.sum(), rel=1e-12)
    (lift,) = metric.overall.lifts
    # Always valid: the CS is wider than the fixed-horizon normal interval
    se = (
        sum(
            np.var((g.revenue - g.revenue.sum() / g.orders.sum() * g.orders) / g.orders.mean(), ddof=1) / len(g)
            for g in (c, t)
        )
        ** 0.5
    )
    assert lift.absolute_lift_ci.high - lift.absolute_lift_ci.low > 2 * 1.96 * se
    assert lift.absolute_lift < 0
    json.dumps(report.to_dict(), allow_nan=False)


def _layered_experiment(cuped_lookback_days: int):  # type: ignore[no-untyped-def]
    """Revenue per customer in two tiers: the offer adds revenue for regulars and takes
    order value away from VIPs (a value effect that differs between layers)."""
    experiment = experiment_create(metrics=(), plan={"inference_mode": "fixed", "planned_sample_size": 1})
    order = EventType.objects.get(code="order")
    Metric.objects.create(
        experiment=experiment, event_type=order, kind=Metric.Kind.SUM, cuped_lookback_days=cuped_lookback_days
    )
    populate(
        experiment,
        [
            Group(variant, 150, layers={"tier": tier})
            for tier in ("vip", "regular")
            for variant in ("control", "treatment")
        ],
    )
    rng = np.random.default_rng(11)
    events, rows = [], []
    for a in Assignment.objects.filter(experiment=experiment).select_related("variant", "snapshot").order_by("pk"):
        tier, treated = a.snapshot.layers["tier"], a.variant.key == "treatment"
        pre = round(float(rng.lognormal(3.5, 0.5)), 2)
        shift = {("vip", True): -12.0, ("regular", True): 6.0}.get((tier, treated), 0.0)
        amount = round(max(0.6 * pre + float(rng.normal(30.0, 8.0)) + shift, 1.0), 2)
        events += [
            _event(order, a.customer_id, EXPOSED + dt.timedelta(days=1), amount),
            _event(order, a.customer_id, EXPOSED - dt.timedelta(days=3), pre),
        ]
        rows.append({"tier": tier, "treatment": int(treated), "revenue": amount, "pre": pre})
    Event.objects.bulk_create(events)
    conversions_refresh(experiment=experiment, full=True)
    return experiment, pd.DataFrame(rows)


def test_report_value_heterogeneity__no_cuped__cochran_q_of_statsmodels_on_the_layers() -> None:
    from statsmodels.stats.meta_analysis import combine_effects

    from experiments.reports.exports import report_csv

    # Given revenue per customer whose treatment effect has opposite signs in two tiers
    experiment, df = _layered_experiment(cuped_lookback_days=0)

    report = report_build(experiment_key=experiment.key, now=NOW)

    (dimension,) = report.primary.dimensions
    het = dimension.heterogeneity
    effects, variances = [], []
    for tier in [row.layer for row in dimension.layers]:
        g = df[df.tier == tier]
        t, c = g.revenue[g.treatment == 1], g.revenue[g.treatment == 0]
        effects.append(t.mean() - c.mean())
        variances.append(t.var(ddof=1) / len(t) + c.var(ddof=1) / len(c))
    reference = combine_effects(np.array(effects), np.array(variances))
    # Then the test is Cochran's Q over the tiers' differences, not "not applicable"
    assert het.scale == "difference" and het.df == 1
    assert het.statistic == pytest.approx(reference.q, rel=1e-9)
    assert het.p_value == pytest.approx(sps.chi2.sf(reference.q, 1), rel=1e-9)
    assert het.differs is True and het.adjusted_p_value == het.p_value  # one dimension: Holm changes nothing
    assert "differs between layers" in het.message
    # and shown in the JSON and the CSV as for conversions
    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert data["metrics"][0]["dimensions"][0]["heterogeneity"]["p_value"] == pytest.approx(het.p_value)
    layer_rows = [r for r in csv.DictReader(io.StringIO(report_csv(report))) if r["dimension"] == "tier"]
    assert len(layer_rows) == 2
    assert all(float(r["heterogeneity_p_value"]) == pytest.approx(het.p_value) for r in layer_rows)


def test_report_value_heterogeneity__cuped__tests_the_adjusted_effects_of_the_layer_rows() -> None:
    # Given the same experiment with a 14-day CUPED lookback
    experiment, df = _layered_experiment(cuped_lookback_days=14)

    report = report_build(experiment_key=experiment.key, now=NOW)

    (dimension,) = report.primary.dimensions
    het = dimension.heterogeneity
    # Then the test compares the CUPED-adjusted differences, with the rows' standard errors
    (vip_lift,), (regular_lift,) = (row.lifts for row in dimension.layers)
    assert all(row.cuped.applied for row in dimension.layers)
    for row, lift in zip(dimension.layers, (vip_lift, regular_lift), strict=True):
        g = df[df.tier == row.layer]
        fit = smf.ols("revenue ~ treatment + I(pre - pre.mean())", data=g).fit()
        assert lift.absolute_lift == pytest.approx(fit.params["treatment"], rel=1e-9)
    se2 = [(lift.absolute_lift / lift.z) ** 2 for lift in (vip_lift, regular_lift)]
    expected = (vip_lift.absolute_lift - regular_lift.absolute_lift) ** 2 / sum(se2)
    assert het.statistic == pytest.approx(expected, rel=1e-9)
    assert het.p_value is not None and het.p_value < 1e-6


def test_report_value_power__sequential_mode__always_valid_requirement_not_the_fixed_one() -> None:
    from experiments.stats import value_sample_size

    # Given revenue per customer read with the always-valid test, CUPED off
    experiment, df = _experiment(mode="sequential", kind=Metric.Kind.SUM, cuped_lookback_days=0)

    power = report_build(experiment_key=experiment.key, now=NOW).primary.overall.power

    # Then the requirement is the sequential one at the control's mean and variance
    control = df.revenue[df.treatment == 0]
    args = (control.mean(), control.var(ddof=1), power.relative_mde)
    sequential = value_sample_size(*args, alpha=power.alpha, sequential=True).required_control
    fixed = value_sample_size(*args, alpha=power.alpha).required_control
    assert power.required_per_arm["control"] == sequential and sequential > fixed
    assert "understates" not in power.alpha_rule


def test_report_values_source__after_refresh__stored_at_the_refresh_time(client, marketer_user) -> None:  # type: ignore[no-untyped-def]
    from django.urls import reverse

    from experiments.reports.exports import report_csv

    # Given revenue per customer refreshed (values stored) at a known moment
    experiment, _ = _experiment(kind=Metric.Kind.SUM, cuped_lookback_days=0)
    refreshed = dt.datetime(2024, 5, 20, 8, 5, tzinfo=dt.UTC)
    conversions_refresh(experiment=experiment, full=True, now=refreshed)

    report = report_build(experiment_key=experiment.key, now=NOW)

    # Then the report says the stored values were used, and as of when
    info = report.primary.metric
    assert info.values_source == "stored" and info.values_stored_at == refreshed
    assert "Stored by the refresh at 2024-05-20 08:05 UTC" in info.values_source_message
    assert (
        json.loads(json.dumps(report.to_dict(), allow_nan=False))["metrics"][0]["metric"]["values_source"] == "stored"
    )
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert {r["values_source"] for r in rows} == {info.values_source_message}
    client.force_login(marketer_user)
    html = client.get(reverse("reports:experiment", args=[experiment.key])).content.decode()
    assert "Stored by the refresh at 2024-05-20 08:05 UTC" in html


def test_report_values_source__definition_changed_after_refresh__computed_from_events_and_says_so(
    client, marketer_user
) -> None:  # type: ignore[no-untyped-def]
    from django.urls import reverse

    from experiments.reports.exports import report_csv

    # Given stored values, then the metric's window changed (the stored values mean another metric)
    experiment, _ = _experiment(kind=Metric.Kind.SUM, cuped_lookback_days=0)
    Metric.objects.filter(experiment=experiment).update(window_hours=24 * 3)

    report = report_build(experiment_key=experiment.key, now=NOW)

    # Then the numbers come from the events, and the page, JSON and CSV say why
    info = report.primary.metric
    assert info.values_source == "events" and info.values_stored_at is None
    assert "definition (window, lookback, event types or currency rule) changed since the last refresh" in (
        info.values_source_message
    )
    assert "refresh the conversions to store them" in info.values_source_message
    rows = list(csv.DictReader(io.StringIO(report_csv(report))))
    assert {r["values_source"] for r in rows} == {info.values_source_message}
    client.force_login(marketer_user)
    html = client.get(reverse("reports:experiment", args=[experiment.key])).content.decode()
    assert 'class="values-source values-source-events"' in html and "changed since the last refresh" in html


def test_report_values_source__never_refreshed__computed_from_events_not_stored_yet() -> None:
    experiment, _ = _experiment(kind=Metric.Kind.SUM, cuped_lookback_days=0)
    Metric.objects.filter(experiment=experiment).update(values_signature="")

    info = report_build(experiment_key=experiment.key, now=NOW).primary.metric

    assert info.values_source == "events"
    assert "no refresh has stored this metric's values yet" in info.values_source_message
