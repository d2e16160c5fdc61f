"""Issue 14: the analysis plan recorded at start, always-valid (sequential) verdicts by
default, fixed-horizon verdicts withheld until the horizon, one declared confirmatory
family, guardrail harm tests beyond a margin, heterogeneity corrected across dimensions,
power under the correction in use. Numbers are checked against statsmodels called
directly and against experiments.stats' tested primitives on the same counts."""

from __future__ import annotations

import datetime as dt
import json
import math
from decimal import Decimal

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from statsmodels.stats import proportion as smp
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower

from experiments import services, stats
from experiments.models import AnalysisPlan, Experiment
from experiments.reports.assemble import report_build
from experiments.reports.exports import report_json
from tests.experiments.conftest import variant_specs
from tests.experiments.report_builders import PHASE_START, Group, dimension_create, experiment_create, populate

pytestmark = pytest.mark.django_db

NOW = PHASE_START + dt.timedelta(days=10)
TIER = {
    ("new", "control"): (1200, 120),
    ("new", "treatment"): (1180, 153),
    ("vip", "control"): (800, 160),
    ("vip", "treatment"): (820, 172),
}
FIXED_REACHED = {"inference_mode": "fixed", "planned_sample_size": 1}


def _tier_groups(extra: dict[str, int] | None = None) -> list[Group]:
    return [
        Group(variant, n, {"order": x, **(extra or {})}, {"tier": layer, "channel": "web"})
        for (layer, variant), (n, x) in TIER.items()
    ]


# --- The plan is recorded at start and frozen ------------------------------------------------


def _draft(**plan: object) -> Experiment:
    return services.experiment_create(
        key="planned",
        name="Planned",
        variants=variant_specs(("0.5", "0.5")),
        metrics=[
            services.MetricSpec("order"),
            services.MetricSpec("unsubscribe", role="guardrail", noninferiority_margin=Decimal("0.002")),
        ],
        plan=plan,
    )


def test_experiment_start__plan_fields__frozen_into_the_phase_plan() -> None:
    dimension_create("tier", ["new", "vip"])
    experiment = _draft(confirmatory_dimensions=["tier"], planned_sample_size=20_000, correction="bh")

    services.experiment_start(experiment=experiment)

    plan = AnalysisPlan.objects.get(phase__experiment=experiment, phase__number=1)
    assert (plan.primary_metric, plan.secondary_metrics) == ("order", [])
    assert plan.guardrail_metrics == [{"metric": "unsubscribe", "margin": "0.0020"}]
    assert (plan.confirmatory_dimensions, plan.inference_mode, plan.correction) == (["tier"], "sequential", "bh")
    assert (plan.planned_sample_size, plan.alpha) == (20_000, Decimal("0.050"))


def test_experiment_start__fixed_horizon_without_horizon__refused_naming_the_field() -> None:
    experiment = _draft(inference_mode="fixed")

    with pytest.raises(ValidationError) as raised:
        services.experiment_start(experiment=experiment)

    assert "planned_sample_size" in raised.value.message_dict
    assert Experiment.objects.get(pk=experiment.pk).status == "draft"


def test_experiment_start__unknown_confirmatory_dimension__refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as raised:
        services.experiment_start(experiment=_draft(confirmatory_dimensions=["nope"]))
    assert "confirmatory_dimensions" in raised.value.message_dict


def test_experiment_plan_update__while_running__refused_unless_a_new_phase_starts() -> None:
    experiment = services.experiment_start(experiment=_draft(planned_sample_size=20_000))

    with pytest.raises(ValidationError) as raised:
        services.experiment_plan_update(experiment=experiment, changes={"alpha": Decimal("0.1")})
    assert "alpha" in raised.value.message_dict

    services.experiment_plan_update(
        experiment=experiment, changes={"alpha": Decimal("0.1")}, start_new_phase=True, reason="looser alpha"
    )
    plans = dict(AnalysisPlan.objects.filter(phase__experiment=experiment).values_list("phase__number", "alpha"))
    assert plans == {1: Decimal("0.050"), 2: Decimal("0.100")}


# --- Modes --------------------------------------------------------------------------------


def test_report__default_plan__always_valid_confidence_sequence_tuned_at_the_planned_size() -> None:
    # Given the default (sequential) plan with 8,000 planned customers, 50/50
    experiment = experiment_create(plan={"planned_sample_size": 8000})
    populate(experiment, [Group("control", 2000, {"order": 200}), Group("treatment", 2000, {"order": 260})])

    report = report_build(experiment_key="offer-test", now=NOW)

    # Then the overall lift is the always-valid comparison at N* = 8,000 x 1 x (0.5 + 0.5)
    want = stats.compare_sequential(stats.Arm(2000, 200), stats.Arm(2000, 260), expected_n=8000)
    [lift] = report.primary.overall.lifts  # type: ignore[union-attr]
    assert (lift.absolute_lift_ci.low, lift.absolute_lift_ci.high) == pytest.approx(
        (want.absolute_lift_ci.low, want.absolute_lift_ci.high), abs=1e-12
    )
    assert lift.p_value == pytest.approx(want.p_value, abs=1e-12)
    # 3 points on a 10% base at 4,000 customers: the fixed-horizon z-test would call it
    # (p = 0.0029); the always-valid p, which pays for reading at every look, is larger.
    assert smp.proportions_ztest([260, 200], [2000, 2000])[1] == pytest.approx(0.0029421, abs=1e-6)
    assert lift.p_value > 0.0029421
    assert (report.settings.inference_mode, report.plan.inference_mode, report.plan.recorded) == (
        "sequential",
        "sequential",
        True,
    )
    data = json.loads(report_json(report))
    assert data["plan"]["inference_mode"] == "sequential"
    assert data["confirmatory_family"]["kind"] == "confirmatory"


def test_report__fixed_horizon_before_the_horizon__verdicts_withheld_with_n_of_planned() -> None:
    experiment = experiment_create(plan={"inference_mode": "fixed", "planned_sample_size": 10_000})
    populate(experiment, [Group("control", 2000, {"order": 200}), Group("treatment", 2000, {"order": 300})])

    report = report_build(experiment_key="offer-test", now=NOW)

    [lift] = report.primary.overall.lifts  # type: ignore[union-attr]
    assert (lift.verdict.label, lift.verdict.reason) == ("not yet evaluable", "before_planned_horizon")
    assert "4,000 of 10,000 planned customers" in lift.verdict.message
    assert any(c.code == "before_planned_horizon" for c in report.caveats)
    # The numbers are still shown: the pooled decision test.
    assert lift.p_value == pytest.approx(smp.proportions_ztest([300, 200], [2000, 2000])[1], abs=1e-12)


def test_report__fixed_horizon_at_the_horizon__verdict_given() -> None:
    experiment = experiment_create(plan={"inference_mode": "fixed", "planned_sample_size": 4000})
    populate(experiment, [Group("control", 2000, {"order": 200}), Group("treatment", 2000, {"order": 300})])

    [lift] = report_build(experiment_key="offer-test", now=NOW).primary.overall.lifts  # type: ignore[union-attr]

    assert lift.verdict.label == "significant win"


# --- Families -------------------------------------------------------------------------------


def test_report__confirmatory_dimension__overall_and_its_layers_adjusted_as_one_family() -> None:
    # Given tier declared confirmatory, channel not; a secondary metric
    dimension_create("tier", ["new", "vip"])
    dimension_create("channel", ["web"])
    experiment = experiment_create(
        metrics=(("order", "primary"), ("coupon_redeemed", "secondary")),
        plan={**FIXED_REACHED, "confirmatory_dimensions": ["tier"]},
    )
    populate(experiment, _tier_groups({"coupon_redeemed": 30}))

    report = report_build(experiment_key="offer-test", now=NOW)

    # Then overall + new + vip (x 1 treatment) are one Holm family of 3, as multipletests
    primary = report.primary
    assert primary is not None
    tier = next(d for d in primary.dimensions if d.key == "tier")
    channel = next(d for d in primary.dimensions if d.key == "channel")
    totals = [sum(TIER[(layer, v)][i] for layer in ("new", "vip")) for v in ("treatment", "control") for i in (1, 0)]
    raw = [smp.proportions_ztest([totals[0], totals[2]], [totals[1], totals[3]])[1]]
    raw += [
        smp.proportions_ztest(
            [TIER[(layer, "treatment")][1], TIER[(layer, "control")][1]],
            [TIER[(layer, "treatment")][0], TIER[(layer, "control")][0]],
        )[1]
        for layer in ("new", "vip")
    ]
    holm = multipletests(raw, method="holm")[1]
    got = [primary.overall.lifts[0].adjusted_p_value] + [row.lifts[0].adjusted_p_value for row in tier.layers]
    assert got == pytest.approx(list(holm), abs=1e-12)
    assert (tier.confirmatory, tier.family.kind, tier.family.size) == (True, "confirmatory", 3)
    assert primary.overall_family is report.confirmatory_family or primary.overall_family == report.confirmatory_family
    assert "Tier" in report.confirmatory_family.scope and "Holm" in report.confirmatory_family.scope
    # Everything else is exploratory, with its own family.
    assert (channel.confirmatory, channel.family.kind, channel.family.size) == (False, "exploratory", 1)
    [secondary] = report.secondary
    assert secondary.overall_family.kind == "exploratory"
    assert all(lift.family_kind == "exploratory" for row in [secondary.overall] for lift in row.lifts)


def test_report__exploratory_significant__labelled_exploratory_not_a_decision() -> None:
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create(plan=FIXED_REACHED)  # no confirmatory dimension
    populate(
        experiment,
        [
            Group("control", 3000, {"order": 300}, {"tier": "new"}),
            Group("treatment", 3000, {"order": 420}, {"tier": "new"}),
        ],
    )

    report = report_build(experiment_key="offer-test", now=NOW)

    [row] = report.primary.dimensions[0].layers  # type: ignore[union-attr]
    assert row.lifts[0].verdict.label == "significant win"
    assert row.lifts[0].family_kind == "exploratory"
    assert row.lifts[0].verdict.message.startswith("Exploratory")


def test_report__guardrail_margin__one_sided_harm_test_adjusted_across_guardrails() -> None:
    # Given two guardrails: unsubscribe up 1.0 -> 2.0% (margin 0), complaint-like
    # coupon_redeemed up 1.0 -> 1.3% with a 0.5-point margin
    experiment = experiment_create(
        metrics=(("order", "primary"), ("unsubscribe", "guardrail"), ("coupon_redeemed", "guardrail")),
        plan=FIXED_REACHED,
        margins={"coupon_redeemed": "0.005"},
    )
    populate(
        experiment,
        [
            Group("control", 4000, {"order": 400, "unsubscribe": 40, "coupon_redeemed": 40}),
            Group("treatment", 4000, {"order": 400, "unsubscribe": 80, "coupon_redeemed": 52}),
        ],
    )

    report = report_build(experiment_key="offer-test", now=NOW)

    guardrails = {m.metric.event_type: m for m in report.guardrails}
    unsub = guardrails["unsubscribe"].overall.lifts[0]
    coupon = guardrails["coupon_redeemed"].overall.lifts[0]
    # margin 0: the one-sided pooled z-test, statsmodels directly
    p_unsub = smp.proportions_ztest([80, 40], [4000, 4000], alternative="larger")[1]
    assert unsub.p_value == pytest.approx(p_unsub, abs=1e-12)
    p_coupon = stats.harm_test(stats.Arm(4000, 40), stats.Arm(4000, 52), margin=0.005).p_value
    assert coupon.p_value == pytest.approx(p_coupon, abs=1e-12)
    holm = multipletests([p_unsub, p_coupon], method="holm")[1]
    assert [unsub.adjusted_p_value, coupon.adjusted_p_value] == pytest.approx(list(holm), abs=1e-12)
    assert (unsub.verdict.harm, coupon.verdict.harm) == (True, False)
    assert guardrails["unsubscribe"].overall_family.kind == "guardrail"
    assert any(c.code == "guardrail_harm" and "unsubscribe" in c.message for c in report.caveats)


def test_report__heterogeneity__holm_adjusted_across_the_dimensions_tested() -> None:
    dimension_create("tier", ["new", "vip"])
    dimension_create("channel", ["web", "app"])
    experiment = experiment_create(plan=FIXED_REACHED)
    populate(
        experiment,
        [
            Group("control", 1000, {"order": 100}, {"tier": "new", "channel": "web"}),
            Group("treatment", 1000, {"order": 160}, {"tier": "new", "channel": "app"}),
            Group("control", 1000, {"order": 200}, {"tier": "vip", "channel": "app"}),
            Group("treatment", 1000, {"order": 190}, {"tier": "vip", "channel": "web"}),
        ],
    )

    report = report_build(experiment_key="offer-test", now=NOW)

    views = [d.heterogeneity for d in report.primary.dimensions]  # type: ignore[union-attr]
    raw = [v.p_value for v in views]
    assert all(p is not None for p in raw)
    assert [v.adjusted_p_value for v in views] == pytest.approx(list(multipletests(raw, method="holm")[1]))
    assert [v.differs for v in views] == [v.adjusted_p_value < 0.05 for v in views]


# --- Power under the rules in use -----------------------------------------------------------


def test_report__confirmatory_layer_power__at_alpha_over_the_family_size() -> None:
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create(plan={**FIXED_REACHED, "confirmatory_dimensions": ["tier"]})
    populate(experiment, _tier_groups())

    report = report_build(experiment_key="offer-test", now=NOW)
    tier = next(d for d in report.primary.dimensions if d.key == "tier")  # type: ignore[union-attr]
    row = tier.layers[1]

    # vip: baseline 20%, MDE +10%, family of 3 (overall + 2 layers) -> alpha 0.05 / 3
    h = 2 * math.asin(math.sqrt(0.22)) - 2 * math.asin(math.sqrt(0.20))
    n = NormalIndPower().solve_power(effect_size=h, alpha=0.05 / 3, power=0.8, ratio=1.0)
    assert row.power.required_per_arm == {"control": math.ceil(n), "treatment": math.ceil(n)}
    assert row.power.alpha == pytest.approx(0.05 / 3)
    assert "confirmatory family of 3" in row.power.alpha_rule


def test_report__fixed_audience__final_audience_and_smallest_detectable_lift_instead_of_days() -> None:
    experiment = experiment_create(plan={**FIXED_REACHED, "fixed_audience": True})
    populate(experiment, [Group("control", 2000, {"order": 200}), Group("treatment", 2000, {"order": 210})])

    power = report_build(experiment_key="offer-test", now=NOW).primary.overall.power  # type: ignore[union-attr]

    want = stats.detectable_lift(0.1, 2000, 2000, alpha=0.05, power=0.8)
    assert power.detectable_lift == pytest.approx(want.relative_lift)
    assert power.message.startswith("Final audience 4,000: the smallest detectable lift is +")
    assert "more days" not in power.message
    assert power.days_remaining is None and power.undefined["days_remaining"].code == "fixed_audience"


# --- The plan, the family and the mode on every surface -------------------------------------


def test_report_csv__confirmatory_layer__family_kind_mode_and_alpha_columns() -> None:
    from experiments.reports.exports import report_csv

    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create(plan={**FIXED_REACHED, "confirmatory_dimensions": ["tier"], "correction": "bh"})
    populate(experiment, _tier_groups())

    import csv
    import io

    rows = list(csv.DictReader(io.StringIO(report_csv(report_build(experiment_key="offer-test", now=NOW)))))

    tier = [r for r in rows if r["dimension"] == "tier"]
    assert {r["family_kind"] for r in tier} == {"confirmatory"}
    assert {r["adjustment"] for r in tier} == {"bh"}  # the plan's correction, not the page's
    assert {(r["inference_mode"], r["alpha"]) for r in rows} == {("fixed", "0.05")}
    assert {r["power_alpha"] for r in tier} == {str(0.05 / 3)}


def test_report_page__plan_section__shows_mode_family_and_plan(client, django_user_model) -> None:  # type: ignore[no-untyped-def]
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create(plan={"planned_sample_size": 9000, "confirmatory_dimensions": ["tier"]})
    populate(experiment, _tier_groups())
    client.force_login(django_user_model.objects.create_superuser("admin", "a@example.com", "pw"))

    html = client.get(reverse("reports:experiment", args=[experiment.key])).content.decode()

    assert 'id="analysis-plan"' in html
    assert "always valid (sequential)" in html
    assert "Confirmatory (the declared decision family): primary metric order x 1 treatment variant(s)" in html
    assert "tuned for 9000 planned customers" in html
    # The tables name each family's own kind and correction.
    assert 'class="family family-confirmatory">Adjusted together (Holm' in html


def test_report__sequential_degenerate_counts__nulls_with_reasons_never_nan() -> None:
    experiment = experiment_create(
        metrics=(("order", "primary"), ("unsubscribe", "guardrail")),
        plan={"planned_sample_size": 1000, "fixed_audience": True},
    )
    populate(experiment, [Group("control", 300, {"order": 0}), Group("treatment", 300, {"order": 0})])

    report = report_build(experiment_key="offer-test", now=NOW)

    [lift] = report.primary.overall.lifts  # type: ignore[union-attr]
    assert lift.p_value is None and lift.undefined["p_value"].code == "zero_variance"
    assert lift.relative_lift is None and lift.undefined["relative_lift"].code == "control_rate_zero"
    power = report.primary.overall.power  # type: ignore[union-attr]
    assert power.detectable_lift is None and "required_per_arm" in power.undefined
    [guardrail] = report.guardrails
    assert guardrail.overall.lifts[0].undefined["p_value"].code == "zero_variance"
    json.loads(report_json(report))  # allow_nan=False inside: no NaN, no infinity
