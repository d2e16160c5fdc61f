"""Open windows: a customer whose metric window (first exposure + window) has not closed
may still convert, so verdicts count only customers whose window has closed."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections import defaultdict
from decimal import Decimal

import pytest
from django.urls import reverse
from django.utils import timezone

from experiments import services
from experiments.models import Assignment, Metric, Phase
from experiments.reports.aggregation import phase_counts
from experiments.reports.assemble import report_build
from segments.models import Event
from tests.experiments.report_builders import PHASE_START, Group, experiment_create, populate
from tests.factories import event_type

pytestmark = pytest.mark.django_db

DAY = dt.timedelta(days=1)
AS_OF = PHASE_START + 10 * DAY


def _hand_worked_experiment():  # type: ignore[no-untyped-def]
    """Exposures at day 0 or 5 (+1 h), conversions at day 1 or 6 (+2 h); order window 7
    days (cutoff at AS_OF: day 3), unsubscribe window 3 days (cutoff: day 7)."""
    experiment = experiment_create(metrics=(("order", "primary"), ("unsubscribe", "guardrail")))
    Metric.objects.filter(experiment=experiment, role="guardrail").update(window_hours=72)
    populate(
        experiment,
        [
            Group("control", 100, {"order": 20}, day=0, conversion_day=1),  # closed for both
            Group("control", 40, {"order": 10, "unsubscribe": 4}, day=0, conversion_day=6),  # closed, late buyers
            Group("control", 50, {"order": 5, "unsubscribe": 3}, day=5, conversion_day=6),  # order window open
            Group("treatment", 100, {"order": 30}, day=0, conversion_day=1),
            Group("treatment", 50, {"order": 20, "unsubscribe": 1}, day=5, conversion_day=6),
        ],
    )
    return experiment


def test_phase_counts__as_of__only_customers_with_closed_windows_per_metric() -> None:
    experiment = _hand_worked_experiment()
    phase = experiment.phases.get()
    order, unsubscribe = (Metric.objects.get(experiment=experiment, role=r).pk for r in ("primary", "guardrail"))

    counts = phase_counts(phase_id=phase.pk, metric_ids=[order, unsubscribe], as_of=AS_OF)

    by_variant = {v.variant_id: v for v in counts.overall}
    control, treatment = (by_variant[v.pk] for v in experiment.variants.order_by("position"))
    # order (7 days): exposures on day 5 are still open at day 10; the late buyers of day 0
    # (converted on day 6, after the cutoff) are counted through their first exposure.
    assert (control.customers, control.counted_for(0), control.conversions[0]) == (190, 140, 30)
    assert (treatment.customers, treatment.counted_for(0), treatment.conversions[0]) == (150, 100, 30)
    # unsubscribe (3 days): every window has closed by day 10.
    assert (control.counted_for(1), control.conversions[1]) == (190, 7)
    assert (treatment.counted_for(1), treatment.conversions[1]) == (150, 1)
    assert (counts.open_window(0), counts.open_window(1)) == (100, 0)
    assert counts.inconsistencies == ()


def test_phase_counts__without_as_of__everyone_exposed_counted() -> None:
    experiment = _hand_worked_experiment()
    order = Metric.objects.get(experiment=experiment, role="primary").pk

    counts = phase_counts(phase_id=experiment.phases.get().pk, metric_ids=[order])

    assert sorted((v.counted_for(0), v.conversions[0]) for v in counts.overall) == [(150, 50), (190, 35)]
    assert counts.open_window(0) == 0


def test_report_build__open_windows__left_out_by_default_and_said_so() -> None:
    _hand_worked_experiment()

    report = report_build(experiment_key="offer-test", now=AS_OF)
    everyone = report_build(experiment_key="offer-test", now=AS_OF, exclude_open_windows=False)

    assert report.settings.exclude_open_windows and not everyone.settings.exclude_open_windows
    primary = report.primary
    assert [(a.variant, a.customers, a.conversions) for a in primary.overall.arms] == [
        ("control", 140, 30),
        ("treatment", 100, 30),
    ]
    assert primary.metric.open_window_customers == 100 and report.guardrails[0].metric.open_window_customers == 0
    assert primary.overall.customers == 340  # traffic (SRM) still counts everyone exposed
    [caveat] = [c for c in report.caveats if c.code == "open_windows_excluded"]
    assert caveat.message.startswith("100 of 340 customers are left out of order's counts")
    assert [(a.customers, a.conversions) for a in everyone.primary.overall.arms] == [(190, 35), (150, 50)]
    assert everyone.primary.metric.open_window_customers == 0
    assert not [c for c in everyone.caveats if c.code == "open_windows_excluded"]


# --- Through the API, the admin page and the CSV ---------------------------------------------


def test_report_api__exclude_open_windows_param__default_on_false_counts_everyone(api_client_factory) -> None:
    _hand_worked_experiment()
    client = api_client_factory("reports:read")

    default = client.get("/api/v1/experiments/offer-test/report").json()
    off = client.get("/api/v1/experiments/offer-test/report?exclude_open_windows=false").json()
    bad = client.get("/api/v1/experiments/offer-test/report?exclude_open_windows=maybe")

    # Real time is long after the populated phase: every window has closed.
    assert default["settings"]["exclude_open_windows"] is True
    assert default["metrics"][0]["metric"]["open_window_customers"] == 0
    assert off["settings"]["exclude_open_windows"] is False
    assert bad.status_code == 400 and set(bad.json()["errors"]) == {"exclude_open_windows"}


def _recent_experiment():  # type: ignore[no-untyped-def]
    """Exposed one day ago: every 7-day window is still open."""
    experiment = experiment_create(phase_start=timezone.now() - 2 * DAY)
    phase = experiment.phases.get()
    populate(experiment, [Group("control", 120, {"order": 10}), Group("treatment", 120, {"order": 20})], phase=phase)
    return experiment


def test_report_views__exclude_open_windows_false__page_and_csv_count_everyone(client, growth_user) -> None:
    _recent_experiment()
    client.force_login(growth_user)

    page = client.get(reverse("reports:experiment", args=["offer-test"]))
    page_off = client.get(reverse("reports:experiment", args=["offer-test"]) + "?exclude_open_windows=false")
    csv_default = client.get(reverse("reports:experiment-csv", args=["offer-test"]))
    csv_off = client.get(reverse("reports:experiment-csv", args=["offer-test"]) + "?exclude_open_windows=false")

    assert page.status_code == 200
    assert "240 of 240 customers are left out of order" in page.content.decode()
    assert "left out of order" not in page_off.content.decode()
    assert "exclude_open_windows=false" in page_off.context["csv_url"]
    [default_row] = list(csv.DictReader(io.StringIO(csv_default.content.decode())))
    [off_row] = list(csv.DictReader(io.StringIO(csv_off.content.decode())))
    assert (default_row["control_customers"], default_row["open_window_customers_left_out"]) == ("0", "240")
    assert (off_row["control_customers"], off_row["open_window_customers_left_out"]) == ("120", "0")


# --- A pull-forward offer: purchases sooner, not more --------------------------------------


WINDOW_DAYS = 7
AGES_HALF_DAYS = 28  # first exposures spread over the last 14 days, in half-day steps


def test_report_build__pull_forward_offer__no_lift_with_open_windows_excluded_naive_count_shows_one(
    make_experiment, make_customers
) -> None:
    """Every customer buys exactly once with the same chance in both arms; the treatment
    only buys sooner (within half the window instead of the whole window). Events exist
    only up to now. Counting customers whose window is still open as non-converted shows
    a significant lift that is only timing; counting closed windows shows none."""
    now = timezone.now()
    experiment = make_experiment(
        "pull-forward",
        metrics=[services.MetricSpec(event_type_code="order", role="primary", window_hours=WINDOW_DAYS * 24)],
    )
    experiment.minimum_detectable_effect = Decimal("0.10")
    customers = make_customers(2000)
    services.audience_assign(experiment=experiment)
    start = now - 20 * DAY
    Phase.objects.filter(experiment=experiment).update(started_at=start)
    Assignment.objects.filter(experiment=experiment).update(assigned_at=start)
    rows = list(
        Assignment.objects.filter(experiment=experiment).order_by("customer_id").values_list("id", "variant__key")
    )
    assert len(rows) == len(customers)

    # Exposures: customer k of each variant is exposed (k mod 28) half-days ago; in each
    # (variant, age) group every other customer buys, at a delay spread evenly over the
    # arm's buying period (the whole window for control, its first half for treatment).
    groups: dict[tuple[str, int], list[int]] = defaultdict(list)
    seen: dict[str, int] = defaultdict(int)
    for assignment_id, variant in rows:
        groups[(variant, seen[variant] % AGES_HALF_DAYS)].append(assignment_id)
        seen[variant] += 1
    customer_of = dict(Assignment.objects.filter(experiment=experiment).values_list("id", "customer_id"))
    order_type = event_type("order")
    events = []
    window = dt.timedelta(days=WINDOW_DAYS)
    for (variant, age), ids in groups.items():
        exposed_at = now - (age + 1) * dt.timedelta(hours=12)
        services.exposures_record(assignment_ids=ids, at=exposed_at)
        buyers = ids[::2]
        period = window if variant == "control" else window / 2
        for rank, assignment_id in enumerate(buyers):
            bought_at = exposed_at + period * ((rank + 0.5) / len(buyers))
            if bought_at < now:  # the future has not happened yet
                events.append(
                    Event(
                        event_id=f"pf-{assignment_id}",
                        customer_id=customer_of[assignment_id],
                        event_type=order_type,
                        occurred_at=bought_at,
                        amount=Decimal("10.00"),
                        currency="EUR",
                    )
                )
    Event.objects.bulk_create(events, batch_size=1000)
    services.conversions_refresh(experiment=experiment, full=True)

    honest = report_build(experiment_key="pull-forward", now=now)
    naive = report_build(experiment_key="pull-forward", now=now, exclude_open_windows=False)

    [naive_lift] = naive.primary.overall.lifts
    [honest_lift] = honest.primary.overall.lifts
    assert naive_lift.verdict.label == "significant win"
    assert honest_lift.verdict.label == "inconclusive"
    # Hand-worked: windows closed = first exposure at least 7 days (14 half-days) ago, i.e.
    # ages 13..27 of 0..27 (age a is exposed (a + 1) half-days ago): 15 of 28 age groups.
    closed = sum(len(ids) for (_, age), ids in groups.items() if age + 1 >= 2 * WINDOW_DAYS)
    assert honest.primary.metric.open_window_customers == len(rows) - closed
    assert sum(a.customers for a in honest.primary.overall.arms) == closed
    # Among closed windows each arm converts exactly every other customer of each group.
    for arm in honest.primary.overall.arms:
        expected = sum((len(ids) + 1) // 2 for (v, age), ids in groups.items() if v == arm.variant and age >= 13)
        assert arm.conversions == expected


# --- Together with the analysis plan (issue 14, both halves) ----------------------------------

# (variant, tier) -> (customers, orders): exposed on day 0 (windows closed at AS_OF) and on
# day 5 (7-day windows still open at AS_OF, with a lopsided share of early buyers).
PLAN_CLOSED = {
    ("control", "new"): (600, 60),
    ("treatment", "new"): (600, 90),
    ("control", "vip"): (400, 80),
    ("treatment", "vip"): (400, 100),
}
PLAN_OPEN = {
    ("control", "new"): (300, 10),
    ("treatment", "new"): (300, 60),
    ("control", "vip"): (200, 5),
    ("treatment", "vip"): (200, 60),
}


def _planned_groups(phase_day_open: int = 5) -> list[Group]:
    groups = [
        Group(variant, n, {"order": x}, {"tier": tier}, day=0, conversion_day=1)
        for (variant, tier), (n, x) in PLAN_CLOSED.items()
    ]
    groups += [
        Group(variant, n, {"order": x}, {"tier": tier}, day=phase_day_open, conversion_day=phase_day_open + 1)
        for (variant, tier), (n, x) in PLAN_OPEN.items()
    ]
    return groups


def test_report_build__confirmatory_family_with_open_windows__adjusted_on_closed_windows_only() -> None:
    from statsmodels.stats import proportion as smp
    from statsmodels.stats.multitest import multipletests

    from tests.experiments.report_builders import dimension_create

    # Given a fixed-horizon plan (horizon reached) declaring tier confirmatory, and a third
    # of the customers still inside their 7-day order window at the report's time
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create(
        plan={"inference_mode": "fixed", "planned_sample_size": 1, "confirmatory_dimensions": ["tier"]}
    )
    populate(experiment, _planned_groups())

    report = report_build(experiment_key="offer-test", now=AS_OF)

    # Then the one decision family (overall + new + vip) is tested and Holm-adjusted on the
    # closed windows' counts, as statsmodels on those counts
    primary = report.primary
    tier = next(d for d in primary.dimensions if d.key == "tier")
    assert (tier.family.kind, tier.family.size) == ("confirmatory", 3)

    def closed(variant: str, tiers: tuple[str, ...]) -> tuple[int, int]:
        return tuple(sum(PLAN_CLOSED[(variant, t)][i] for t in tiers) for i in (0, 1))  # type: ignore[return-value]

    cells = [(closed("treatment", tiers), closed("control", tiers)) for tiers in (("new", "vip"), ("new",), ("vip",))]
    raw = [smp.proportions_ztest([t[1], c[1]], [t[0], c[0]])[1] for t, c in cells]
    got = [primary.overall.lifts[0].adjusted_p_value] + [row.lifts[0].adjusted_p_value for row in tier.layers]
    assert got == pytest.approx(list(multipletests(raw, method="holm")[1]), abs=1e-12)
    assert [(a.customers, a.conversions) for a in primary.overall.arms] == [(1000, 140), (1000, 190)]
    assert primary.overall.power.customers_per_arm == {"control": 1000, "treatment": 1000}
    # the rows' traffic (SRM) and the plan's horizon still count every analysed customer
    assert primary.overall.customers == 3000
    assert report.plan.horizon_message.startswith("3,000 of 1 planned customers")
    assert primary.metric.open_window_customers == 1000
    assert [c.code for c in report.caveats if c.code == "open_windows_excluded"] == ["open_windows_excluded"]


def test_report_views__plan_and_open_windows__page_json_csv_show_both(client, growth_user) -> None:
    from tests.experiments.report_builders import dimension_create

    # Given a sequential plan declaring tier confirmatory, everyone exposed a day ago
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create(
        phase_start=timezone.now() - 2 * DAY, plan={"planned_sample_size": 9000, "confirmatory_dimensions": ["tier"]}
    )
    populate(
        experiment,
        [Group(v, 120, {"order": x}, {"tier": "new"}) for v, x in (("control", 10), ("treatment", 20))],
        phase=experiment.phases.get(),
    )
    client.force_login(growth_user)

    html = client.get(reverse("reports:experiment", args=["offer-test"])).content.decode()
    data = client.get(reverse("reports:experiment-json", args=["offer-test"])).json()
    rows = list(
        csv.reader(io.StringIO(client.get(reverse("reports:experiment-csv", args=["offer-test"])).content.decode()))
    )

    # Then the page shows the plan and its decision family and the open-window caveat
    assert 'id="analysis-plan"' in html and "Confirmatory (the declared decision family)" in html
    assert "240 of 240 customers are left out of order" in html
    assert (data["plan"]["inference_mode"], data["confirmatory_family"]["kind"]) == ("sequential", "confirmatory")
    assert data["settings"]["exclude_open_windows"] is True
    assert data["metrics"][0]["metric"]["open_window_customers"] == 240
    header, *lines = rows
    assert "open_window_customers_left_out" in header and "family_kind" in header
    overall = next(
        dict(zip(header, line, strict=True)) for line in lines if line[header.index("dimension")] == "(all customers)"
    )
    assert (overall["family_kind"], overall["open_window_customers_left_out"]) == ("confirmatory", "240")
