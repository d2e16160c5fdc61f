"""The value-metric A/A simulation (``bench/values_decisions.py``) computes what the report
computes: one simulated experiment written as real events, refreshed and reported through
the database, gives the same cap, CUPED theta, p-values and Holm-adjusted family as the
simulation's own path (numpy moments -> the pure functions), so the simulation's
false-positive rates are the report's."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import numpy as np
import pytest

from bench import values_decisions as sim
from experiments.models import Assignment, Metric
from experiments.reports.assemble import report_build
from experiments.services.conversions import conversions_refresh
from experiments.stats import adjust
from segments.models import Event, EventType
from tests.experiments.report_builders import PHASE_START, Group, dimension_create, experiment_create, populate

pytestmark = pytest.mark.django_db

EXPOSED = PHASE_START + dt.timedelta(hours=1)  # populate's first exposure (day 0)
NOW = PHASE_START + dt.timedelta(days=30)
N = 150  # customers per arm


def _split(cents: int, parts: int) -> list[Decimal]:
    """``parts`` amounts (in currency units) summing exactly to ``cents``."""
    each = cents // parts
    amounts = [each] * parts
    amounts[-1] += cents - each * parts
    return [Decimal(a) / 100 for a in amounts]


def _simulated_report(seed: int) -> tuple[object, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x, layer, day = sim.customers(rng, (1, 2, N))  # one experiment, control and treatment
    layers = [f"t{g}" for g in range(sim.LAYERS)]
    dimension_create("tier", layers)
    experiment = experiment_create(
        metrics=(),
        plan={"inference_mode": "fixed", "planned_sample_size": 1, "confirmatory_dimensions": ["tier"]},
    )
    order = EventType.objects.get(code="order")
    Metric.objects.create(
        experiment=experiment, event_type=order, kind=Metric.Kind.SUM, cap_percentile=Decimal("0.99"),
        cuped_lookback_days=14,
    )  # fmt: skip
    Metric.objects.create(
        experiment=experiment, event_type=order, role=Metric.Role.SECONDARY, kind=Metric.Kind.RATIO,
        numerator_part="sum", denominator_event_type=order, denominator_part="count", cap_percentile=Decimal("0.99"),
        cuped_lookback_days=14,
    )  # fmt: skip
    groups = [
        Group(variant, int((layer[0, a] == g).sum()), layers={"tier": layers[g]})
        for a, variant in enumerate(("control", "treatment"))
        for g in range(sim.LAYERS)
    ]
    populate(experiment, [g for g in groups if g.n])
    # populate writes each group's customers in id order: map them to the group's rows.
    phase = experiment.phases.get(number=1)
    by_group: dict[tuple[str, str], list[int]] = {}
    for a in Assignment.objects.filter(phase=phase).select_related("variant", "snapshot").order_by("customer_id"):
        by_group.setdefault((a.variant.key, a.snapshot.layers["tier"]), []).append(a.customer_id)
    events = []
    for a, variant in enumerate(("control", "treatment")):
        for g in range(sim.LAYERS):
            rows = x[0, a][layer[0, a] == g]
            for customer, (revenue, orders, pre_revenue, pre_orders) in zip(
                by_group.get((variant, layers[g]), []), rows.tolist(), strict=True
            ):
                for j, amount in enumerate(_split(revenue, orders) if orders else []):
                    at = EXPOSED + dt.timedelta(days=1, hours=j)
                    events.append(_event(order, customer, at, amount))
                for j, amount in enumerate(_split(pre_revenue, pre_orders) if pre_orders else []):
                    at = EXPOSED - dt.timedelta(days=1, hours=j)
                    events.append(_event(order, customer, at, amount))
    Event.objects.bulk_create(events)
    conversions_refresh(experiment=experiment, full=True)
    return report_build(experiment_key=experiment.key, now=NOW), x, layer, day


def _event(event_type: EventType, customer: int, at: dt.datetime, amount: Decimal) -> Event:
    return Event(
        event_id=f"s-{customer}-{at.isoformat()}",
        customer_id=customer,
        event_type=event_type,
        occurred_at=at,
        amount=amount,
        currency="EUR",
    )


def test_values_simulation__one_experiment_through_the_report__same_cap_theta_p_values_and_family() -> None:
    # Given one simulated A/A experiment (revenue per customer capped at p99 with CUPED, the
    # primary metric; average order value, capped and CUPED, a secondary) written as events
    report, x, layer, day = _simulated_report(seed=11)

    # When the simulation computes the same experiment from its numpy moments
    capped = sim.capped(x, 0.99)
    rows = sim.report_rows(sim.cells_of(capped, layer, day)[0])
    expected = [2.0 * N] * len(rows)

    # Then the report's numbers are the simulation's: the cap (cents -> EUR), each row's
    # CUPED theta and p-value, and the decision family's Holm-adjusted p-values
    revenue = report.primary
    assert revenue is not None
    pooled = np.sort(x[0, :, :, 0].reshape(-1))
    assert Decimal(str(revenue.metric.cap)) == Decimal(int(pooled[int(np.ceil(0.99 * 2 * N)) - 1])) / 100
    tier = next(d for d in revenue.dimensions if d.key == "tier")
    report_rows = [revenue.overall, *sorted(tier.layers, key=lambda r: r.layer)]
    assert [r.layer for r in report_rows[1:]] == [f"t{g}" for g in range(sim.LAYERS) if (layer[0] == g).any()]
    ours = sim.row_comparisons(rows, "revenue_per_customer", False, expected)
    for row, comparison in zip(report_rows, ours, strict=True):
        (lift,) = row.lifts
        assert row.cuped is not None and row.cuped.applied
        assert lift.p_value == pytest.approx(comparison.p_value, rel=1e-9)
        assert lift.absolute_lift * 100 == pytest.approx(comparison.absolute_lift, rel=1e-9)
    holm = adjust([c.p_value for c in ours], method="holm")
    assert [r.lifts[0].adjusted_p_value for r in report_rows] == pytest.approx(holm, rel=1e-9)
    assert tier.family.kind == "confirmatory"

    # and the ratio metric (delta method, normal) on the same customers
    (aov,) = report.secondary
    (aov_lift,) = aov.overall.lifts
    (aov_ours,) = sim.row_comparisons(rows[:1], "average_order_value", False, expected[:1])
    assert aov_lift.p_value == pytest.approx(aov_ours.p_value, rel=1e-9)
    assert aov.overall.cuped.theta == pytest.approx(
        sim.cuped(rows[0], *sim.TESTS["average_order_value"][:2]).theta, rel=1e-9
    )
