"""CUPED for conversion metrics in the report (issue 15): the pre-period conversion (the
same event in the lookback before first exposure) adjusts the row; the fixed-horizon test
is the regression ``converted ~ treatment + centred pre`` with one pooled residual variance
(statsmodels OLS called directly); no pre-period data: the pooled z as before, with the reason."""

from __future__ import annotations

import csv
import datetime as dt
import io

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from statsmodels.stats.proportion import proportions_ztest

from experiments.models import Assignment, Metric
from experiments.reports.assemble import report_build
from experiments.reports.exports import report_csv
from experiments.reports.views import _row_view
from experiments.services.conversions import conversions_refresh
from segments.models import Event, EventType
from tests.experiments.report_builders import PHASE_START, Group, experiment_create, populate

pytestmark = pytest.mark.django_db

EXPOSED = PHASE_START + dt.timedelta(hours=1)
NOW = PHASE_START + dt.timedelta(days=30)


def _experiment(
    lookback: int, with_pre: bool = True, seed: int = 4, plan: dict | None = None
) -> tuple[object, pd.DataFrame]:
    experiment = experiment_create(metrics=(), plan=plan)
    order = EventType.objects.get(code="order")
    Metric.objects.create(experiment=experiment, event_type=order, cuped_lookback_days=lookback)
    populate(experiment, [Group("control", 300), Group("treatment", 300)])
    rng = np.random.default_rng(seed)
    events, rows = [], []
    phase = experiment.phases.get(number=1)
    for a in Assignment.objects.filter(phase=phase).select_related("variant").order_by("customer_id"):
        treated = a.variant.key == "treatment"
        pre = with_pre and rng.random() < 0.3
        post = rng.random() < (0.5 if pre else 0.1) + (0.05 if treated else 0.0)
        if pre:
            events.append(_event(order, a.customer_id, EXPOSED - dt.timedelta(days=3)))
            events.append(_event(order, a.customer_id, EXPOSED - dt.timedelta(days=20)))  # outside 14 days
        if post:
            events.append(_event(order, a.customer_id, EXPOSED + dt.timedelta(days=1)))
        rows.append({"treatment": int(treated), "post": int(post), "pre": int(pre)})
    Event.objects.bulk_create(events)
    conversions_refresh(experiment=experiment, full=True)
    return experiment, pd.DataFrame(rows)


def _event(event_type: EventType, customer: int, at: dt.datetime) -> Event:
    return Event(event_id=f"c-{customer}-{at.isoformat()}", customer_id=customer, event_type=event_type, occurred_at=at)


def test_report_conversion_metric__cuped_lookback__ols_with_centred_pre_conversion_pooled_variance() -> None:
    # Given a conversion metric with a 14-day lookback and pre-period conversions that
    # predict conversion in the window (a fixed-horizon plan whose horizon is reached)
    experiment, df = _experiment(lookback=14)

    report = report_build(experiment_key=experiment.key, now=NOW)

    # Then the row is the regression post ~ treatment + centred pre, classical standard error
    row = report.primary.overall
    (lift,) = row.lifts
    fit = smf.ols("post ~ treatment + I(pre - pre.mean())", data=df).fit()
    assert row.cuped is not None and row.cuped.applied and row.cuped.lookback_days == 14
    assert row.cuped.theta == pytest.approx(fit.params["I(pre - pre.mean())"], rel=1e-9)
    assert lift.absolute_lift == pytest.approx(fit.params["treatment"], rel=1e-9)
    assert lift.p_value == pytest.approx(fit.pvalues["treatment"], rel=1e-9)
    assert lift.z == pytest.approx(fit.tvalues["treatment"], rel=1e-9)
    low, high = fit.conf_int().loc["treatment"]
    assert (lift.absolute_lift_ci.low, lift.absolute_lift_ci.high) == pytest.approx((low, high), rel=1e-9)
    within = df.post - df.groupby("treatment").post.transform("mean")
    assert row.cuped.variance_reduction == pytest.approx(1 - (fit.resid**2).sum() / (within**2).sum(), rel=1e-9)
    assert row.cuped.variance_reduction > 0.1
    # and the arms still show the unadjusted rates and counts
    control = row.arms[0]
    assert control.conversions == df.post[df.treatment == 0].sum()
    assert control.rate == pytest.approx(df.post[df.treatment == 0].mean())
    # and the CSV carries theta and the reduction on the conversion row
    (line,) = [r for r in csv.DictReader(io.StringIO(report_csv(report))) if r["dimension"] == "(all customers)"]
    assert float(line["cuped_theta"]) == pytest.approx(row.cuped.theta, rel=1e-9)
    assert float(line["cuped_variance_reduction"]) == pytest.approx(row.cuped.variance_reduction, rel=1e-9)
    # and the page shows points and what CUPED did
    view = _row_view(row)
    assert "pts" in str(view.lines[1].absolute) and "pts" in str(view.lines[1].absolute_ci)
    assert any("CUPED (14-day lookback) removed" in note for note in view.lines[1].notes)


def test_report_conversion_metric__no_pre_period_data__unadjusted_with_reason() -> None:
    experiment, df = _experiment(lookback=14, with_pre=False)

    report = report_build(experiment_key=experiment.key, now=NOW)

    row = report.primary.overall
    (lift,) = row.lifts
    counts = df.groupby("treatment").post.agg(["sum", "count"])
    _, p = proportions_ztest(counts["sum"][[1, 0]].to_numpy(), counts["count"][[1, 0]].to_numpy())
    assert report.primary.metric.cuped_lookback_days == 14
    assert row.cuped is not None and not row.cuped.applied
    assert row.cuped.undefined["theta"].code == "no_pre_period_data"
    assert lift.p_value == pytest.approx(p, rel=1e-9)


def test_report_conversion_metric__cuped_always_valid__confidence_sequence_of_adjusted_rates() -> None:
    from experiments import stats

    # Given the always-valid mode (no planned horizon: tuned at the default expected size)
    experiment, df = _experiment(lookback=14, plan={"inference_mode": "sequential"})

    report = report_build(experiment_key=experiment.key, now=NOW)

    # Then the lift and always-valid p are the CUPED-adjusted rates' (theta pooled), through
    # the normal-mixture sequence, computed here from the per-customer rows
    row = report.primary.overall
    (lift,) = row.lifts
    arms = [stats.Moments.of_values(df[df.treatment == t][["post", "pre"]].to_numpy().tolist()) for t in (0, 1)]
    adjusted = stats.cuped(arms, stats.MeanOf(0), stats.MeanOf(1))
    expected = stats.compare_values(*adjusted.estimates, sequential=True, expected_n=stats.DEFAULT_EXPECTED_N)
    assert row.cuped is not None and row.cuped.applied
    assert lift.absolute_lift == pytest.approx(expected.absolute_lift, rel=1e-9)
    assert lift.p_value == pytest.approx(expected.p_value, rel=1e-9)
    assert lift.absolute_lift_ci.low == pytest.approx(expected.absolute_lift_ci.low, rel=1e-9)


def test_report_conversion_metric__values_not_stored_for_definition__no_event_scan_unadjusted_with_reason() -> None:
    # Given conversions refreshed with a 14-day lookback, then the lookback changed to 7 days
    # (the stored pre-period values are for another definition until the next refresh)
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    experiment, df = _experiment(lookback=14)
    Metric.objects.filter(experiment=experiment).update(cuped_lookback_days=7)

    with CaptureQueriesContext(connection) as queries:
        report = report_build(experiment_key=experiment.key, now=NOW)

    # Then the report does not read the events table for CUPED (a pass over every exposed
    # customer's events at report time) and the row is the plain pooled z, saying why
    event_table = f'"{Event._meta.db_table}"'  # quoted: not segments_eventtype
    assert not [q["sql"] for q in queries.captured_queries if event_table in q["sql"]]
    row = report.primary.overall
    (lift,) = row.lifts
    counts = df.groupby("treatment").post.agg(["sum", "count"])
    _, p = proportions_ztest(counts["sum"][[1, 0]].to_numpy(), counts["count"][[1, 0]].to_numpy())
    assert row.cuped is not None and not row.cuped.applied
    assert row.cuped.undefined["theta"].code == "cuped_not_stored"
    assert lift.p_value == pytest.approx(p, rel=1e-9)
