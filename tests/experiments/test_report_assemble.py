"""experiments.reports.assemble: report numbers checked by hand and against statsmodels /
scipy called directly on the same counts; families, verdicts, caveats, undefined values."""

from __future__ import annotations

import datetime as dt
import json
import math
import warnings

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from scipy import stats as sps
from statsmodels.genmod import families
from statsmodels.stats import proportion as smp
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.power import NormalIndPower

from experiments import stats
from experiments.models import Experiment
from experiments.reports.assemble import NO_LAYER_LABEL, ExperimentNotFound, report_build
from experiments.reports.results import Report
from tests.experiments.report_builders import PHASE_START, Group, dimension_create, experiment_create, populate

pytestmark = pytest.mark.django_db

TOL = 1e-9
NOW = PHASE_START + dt.timedelta(days=10)

# (layer, variant) -> (customers, orders)
COUNTS = {
    ("new", "control"): (1200, 120),
    ("new", "treatment"): (1180, 153),
    ("vip", "control"): (800, 160),
    ("vip", "treatment"): (820, 172),
    ("lapsed", "control"): (400, 20),
    ("lapsed", "treatment"): (410, 19),
}


@pytest.fixture
def experiment() -> Experiment:
    dimension_create("tier", ["new", "vip", "lapsed"])
    experiment = experiment_create(metrics=(("order", "primary"), ("unsubscribe", "guardrail")))
    populate(
        experiment,
        [
            Group(variant, n, {"order": x, "unsubscribe": n // 100}, {"tier": layer})
            for (layer, variant), (n, x) in COUNTS.items()
        ],
    )
    return experiment


def _pooled(t: tuple[int, int], c: tuple[int, int]) -> dict[str, float]:
    """The report's decision test, statsmodels called directly: pooled z
    (proportions_ztest), treatment first (sample 1), as experiments.stats documents.

    The absolute-lift interval is the score interval that inverts that test; statsmodels'
    own score interval is off (issue #10269, see experiments.stats), so it is taken from
    stats.compare here, which tests/experiments/test_stats.py checks against an
    independent maximisation of the restricted likelihood."""
    (nt, xt), (nc, xc) = t, c
    z, p = smp.proportions_ztest([xt, xc], [nt, nc])
    test = type("Test", (), {"statistic": z, "pvalue": p})
    interval = stats.compare(stats.Arm(nc, xc), stats.Arm(nt, xt), method="pooled").absolute_lift_ci
    low, high = interval.low, interval.high
    rlow, rhigh = smp.confint_proportions_2indep(xt, nt, xc, nc, compare="ratio", method="log")
    return {
        "z": test.statistic,
        "p": test.pvalue,
        "low": low,
        "high": high,
        "rlow": rlow - 1,
        "rhigh": rhigh - 1,
        "abs": xt / nt - xc / nc,
        "rel": (xt / nt) / (xc / nc) - 1,
    }


def _layer(report: Report, layer: str):  # type: ignore[no-untyped-def]
    assert report.primary is not None
    [dimension] = report.primary.dimensions
    return next(row for row in dimension.layers if row.layer == layer)


def test_report__tier_layers__lifts_and_holm_family_match_statsmodels(experiment: Experiment) -> None:
    report = report_build(experiment_key="offer-test", now=NOW)

    assert report.primary is not None
    [dimension] = report.primary.dimensions
    assert [row.layer for row in dimension.layers] == ["new", "vip", "lapsed"]
    expected = {
        layer: _pooled(COUNTS[(layer, "treatment")], COUNTS[(layer, "control")]) for layer in ("new", "vip", "lapsed")
    }
    raw = [expected[layer]["p"] for layer in ("new", "vip", "lapsed")]
    holm = multipletests(raw, method="holm")[1]
    for i, layer in enumerate(("new", "vip", "lapsed")):
        row = _layer(report, layer)
        [lift] = row.lifts
        want = expected[layer]
        assert lift.absolute_lift == pytest.approx(want["abs"], abs=TOL)
        assert lift.absolute_lift_ci.low == pytest.approx(want["low"], abs=TOL)
        assert lift.absolute_lift_ci.high == pytest.approx(want["high"], abs=TOL)
        assert lift.relative_lift == pytest.approx(want["rel"], abs=TOL)
        assert lift.relative_lift_ci.low == pytest.approx(want["rlow"], abs=TOL)
        assert lift.relative_lift_ci.high == pytest.approx(want["rhigh"], abs=TOL)
        assert lift.z == pytest.approx(want["z"], abs=TOL)
        assert lift.p_value == pytest.approx(want["p"], abs=TOL)
        assert lift.adjusted_p_value == pytest.approx(holm[i], abs=TOL)
        control, treatment = row.arms
        assert (control.variant, control.customers, control.conversions) == ("control", *COUNTS[(layer, "control")])
        assert treatment.rate == pytest.approx(COUNTS[(layer, "treatment")][1] / COUNTS[(layer, "treatment")][0])
    assert dimension.family.method == "holm"
    assert dimension.family.size == 3
    assert "3 layers of Tier x 1 treatment" in dimension.family.scope


def test_report__hand_worked_new_layer__ten_vs_thirteen_percent() -> None:
    # 120/1200 = 10.0% vs 153/1180 = 12.966%: absolute lift = 0.029661 (2.97 points),
    # pooled rate = 273 / 2380 = 0.114706, SE = sqrt(.114706 x .885294 x (1/1200 + 1/1180))
    # = sqrt(.101548 x .0016808) = 0.013065, z = 0.029661 / 0.013065 = 2.2703,
    # p = 2 (1 - Phi(2.2703)) = 0.02319; relative lift = 12.966 / 10 - 1 = +29.66%.
    dimension_create("tier", ["new"])
    experiment_create()
    populate(
        Experiment.objects.get(key="offer-test"),
        [
            Group("control", 1200, {"order": 120}, {"tier": "new"}),
            Group("treatment", 1180, {"order": 153}, {"tier": "new"}),
        ],
    )

    [lift] = _layer(report_build(experiment_key="offer-test", now=NOW), "new").lifts

    pooled = 273 / 2380
    se = math.sqrt(pooled * (1 - pooled) * (1 / 1200 + 1 / 1180))
    assert lift.absolute_lift == pytest.approx(153 / 1180 - 0.1, abs=TOL)
    assert se == pytest.approx(0.013065, abs=1e-6)
    assert lift.z == pytest.approx((153 / 1180 - 0.1) / se, abs=TOL)
    assert lift.z == pytest.approx(2.2703, abs=1e-4)
    assert lift.p_value == pytest.approx(0.02319, abs=1e-5)
    assert lift.relative_lift == pytest.approx(0.29661, abs=1e-5)
    # One layer, one treatment: the family has one member and Holm changes nothing.
    assert lift.adjusted_p_value == pytest.approx(lift.p_value, abs=TOL)
    assert lift.verdict.label == "significant win"


def test_report__overall_row__family_is_the_treatment_variants(experiment: Experiment) -> None:
    report = report_build(experiment_key="offer-test", now=NOW)

    assert report.primary is not None
    overall = report.primary.overall
    totals = {
        variant: tuple(sum(COUNTS[(layer, variant)][i] for layer in ("new", "vip", "lapsed")) for i in (0, 1))
        for variant in ("control", "treatment")
    }
    want = _pooled(totals["treatment"], totals["control"])
    [lift] = overall.lifts
    assert (overall.dimension, overall.layer, overall.customers) == (None, None, 4810)
    assert lift.p_value == pytest.approx(want["p"], abs=TOL)
    assert lift.adjusted_p_value == pytest.approx(want["p"], abs=TOL)  # family of one treatment
    assert report.primary.overall_family.size == 1
    assert "1 treatment variant(s)" in report.primary.overall_family.scope


def test_report__three_variants_bh__adjusts_layers_x_treatments_together_like_multipletests() -> None:
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create(variants=(("control", 0.4), ("b", 0.3), ("c", 0.3)))
    cells = {
        ("new", "control"): (800, 80),
        ("new", "b"): (600, 75),
        ("new", "c"): (610, 58),
        ("vip", "control"): (400, 100),
        ("vip", "b"): (300, 95),
        ("vip", "c"): (290, 70),
    }
    populate(experiment, [Group(v, n, {"order": x}, {"tier": layer}) for (layer, v), (n, x) in cells.items()])

    report = report_build(experiment_key="offer-test", adjustment="bh", now=NOW)

    assert report.primary is not None
    [dimension] = report.primary.dimensions
    raw, got = [], []
    for row in dimension.layers:
        for lift in row.lifts:
            raw.append(_pooled(cells[(row.layer, lift.variant)], cells[(row.layer, "control")])["p"])
            got.append(lift.adjusted_p_value)
    assert len(raw) == 4 and dimension.family.size == 4
    assert got == pytest.approx(list(multipletests(raw, method="fdr_bh")[1]), abs=TOL)
    assert report.settings.adjustment == "bh"
    assert dimension.family.method == "bh"
    # SRM against 40/30/30, overall: scipy directly.
    observed = [sum(cells[(layer, v)][0] for layer in ("new", "vip")) for v in ("control", "b", "c")]
    total = sum(observed)
    chi = sps.chisquare(observed, [total * w for w in (0.4, 0.3, 0.3)])
    assert report.srm.p_value == pytest.approx(chi.pvalue, abs=TOL)
    assert report.srm.statistic == pytest.approx(chi.statistic, abs=TOL)


def test_report__heterogeneity__matches_a_statsmodels_glm_likelihood_ratio_test(experiment: Experiment) -> None:
    report = report_build(experiment_key="offer-test", now=NOW)

    frame = pd.DataFrame(
        [
            {"layer": layer, "treated": int(variant == "treatment"), "x": x, "f": n - x}
            for (layer, variant), (n, x) in COUNTS.items()
        ]
    )
    endog = "x + f ~ "
    with warnings.catch_warnings():
        # The interaction model is saturated: statsmodels warns about its (exact) fit.
        warnings.simplefilter("ignore")
        full = smf.glm(endog + "C(layer) * treated", frame, family=families.Binomial()).fit()
        reduced = smf.glm(endog + "C(layer) + treated", frame, family=families.Binomial()).fit()
    lr = 2 * (full.llf - reduced.llf)
    p = sps.chi2.sf(lr, df=2)
    assert report.primary is not None
    het = report.primary.dimensions[0].heterogeneity
    assert het.df == 2
    assert het.statistic == pytest.approx(lr, abs=1e-6)
    assert het.p_value == pytest.approx(p, abs=1e-6)
    assert het.differs == (p < 0.05)


def test_report__power__required_customers_match_normal_ind_power_at_the_control_rate(experiment: Experiment) -> None:
    report = report_build(experiment_key="offer-test", now=NOW)

    row = _layer(report, "vip")
    baseline = 160 / 800
    h = 2 * math.asin(math.sqrt(baseline * 1.10)) - 2 * math.asin(math.sqrt(baseline))
    # The layer's verdict is adjusted over its family of 3 layers x 1 treatment, so the
    # requirement is computed at alpha / 3 (issue 14: power under the correction in use).
    n = NormalIndPower().solve_power(effect_size=h, alpha=0.05 / 3, power=0.8, ratio=1.0, alternative="two-sided")
    assert row.power.alpha == pytest.approx(0.05 / 3)
    assert "0.05/3" in row.power.alpha_rule
    assert row.power.baseline_rate == pytest.approx(baseline)
    assert row.power.required_per_arm == {"control": math.ceil(n), "treatment": math.ceil(n)}
    assert row.power.progress == pytest.approx(min(800, 820) / math.ceil(n))
    assert row.power.reached is False
    # 1,620 customers in 10 days = 162 a day, half to each arm.
    assert row.power.daily_traffic == pytest.approx(162.0)
    assert row.power.days_remaining == math.ceil((math.ceil(n) - 800) / 81)


def test_report__uneven_split__power_uses_the_weights_for_sizes_and_days() -> None:
    # 10% control / 90% treatment: the control is the bottleneck; days at 10% of traffic.
    experiment = experiment_create(variants=(("control", 0.1), ("treatment", 0.9)))
    populate(experiment, [Group("control", 200, {"order": 20}), Group("treatment", 1800, {"order": 190})])

    report = report_build(experiment_key="offer-test", now=NOW)

    power = report.primary.overall.power  # type: ignore[union-attr]
    h = 2 * math.asin(math.sqrt(0.11)) - 2 * math.asin(math.sqrt(0.1))
    n1 = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=9.0, alternative="two-sided")
    assert power.required_per_arm["control"] == math.ceil(n1)
    assert power.required_per_arm["treatment"] == pytest.approx(math.ceil(n1 * 9), abs=1)
    daily = 2000 / 10
    expected_days = max(
        (power.required_per_arm["control"] - 200) / (daily * 0.1),
        (power.required_per_arm["treatment"] - 1800) / (daily * 0.9),
    )
    assert power.days_remaining == math.ceil(expected_days)


def test_report__guardrail_increase__significant_loss_flagged_as_harm() -> None:
    experiment = experiment_create(metrics=(("order", "primary"), ("unsubscribe", "guardrail")))
    populate(
        experiment,
        [
            Group("control", 2000, {"order": 200, "unsubscribe": 20}),
            Group("treatment", 2000, {"order": 200, "unsubscribe": 70}),
        ],
    )

    report = report_build(experiment_key="offer-test", now=NOW)

    [guardrail] = report.guardrails
    [lift] = guardrail.overall.lifts
    assert guardrail.metric.direction == "higher_is_worse"
    assert lift.absolute_lift > 0
    assert lift.verdict.label == "significant loss"
    assert lift.verdict.harm is True
    assert "Significant harm" in lift.verdict.message
    assert any(c.code == "guardrail_harm" for c in report.caveats)
    # The same increase on a "higher is better" metric would be a win: the primary is flat.
    [primary_lift] = report.primary.overall.lifts  # type: ignore[union-attr]
    assert primary_lift.verdict.label == "inconclusive"


def test_report__guardrail_decrease__no_harm_from_the_one_sided_test() -> None:
    experiment = experiment_create(metrics=(("order", "primary"), ("unsubscribe", "guardrail")))
    populate(
        experiment,
        [Group("control", 2000, {"unsubscribe": 80}), Group("treatment", 2000, {"unsubscribe": 20})],
    )

    [guardrail] = report_build(experiment_key="offer-test", now=NOW).guardrails

    [lift] = guardrail.overall.lifts
    # The guardrail's test is one-sided (harm beyond the margin): a decrease is no harm.
    assert (lift.verdict.label, lift.verdict.reason, lift.verdict.harm) == ("inconclusive", "no_harm_shown", False)
    assert lift.p_value > 0.99
    assert guardrail.overall_family.kind == "guardrail"


def test_report__srm_flagged__every_verdict_carries_the_caveat() -> None:
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create(metrics=(("order", "primary"), ("coupon_redeemed", "secondary")))
    populate(
        experiment,
        [
            Group("control", 2300, {"order": 230}, {"tier": "new"}),
            Group("treatment", 2700, {"order": 300}, {"tier": "new"}),
            Group("control", 2300, {"order": 230}, {"tier": "vip"}),
            Group("treatment", 2700, {"order": 280}, {"tier": "vip"}),
        ],
    )

    report = report_build(experiment_key="offer-test", now=NOW)

    assert report.srm.flagged is True
    assert report.srm.observed == (4600, 5400)
    assert any(c.code == "srm" for c in report.caveats)
    lifts = [
        lift
        for metric in report.metrics
        for row in [metric.overall, *(r for d in metric.dimensions for r in d.layers)]
        for lift in row.lifts
    ]
    assert len(lifts) == 6
    assert all([c.code for c in lift.verdict.caveats] == ["srm_experiment"] for lift in lifts)


def test_report__srm_in_one_layer_only__caveats_that_layer() -> None:
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create()
    populate(
        experiment,
        [
            Group("control", 3000, {"order": 300}, {"tier": "new"}),
            Group("treatment", 2600, {"order": 260}, {"tier": "new"}),
            Group("control", 2600, {"order": 260}, {"tier": "vip"}),
            Group("treatment", 3000, {"order": 300}, {"tier": "vip"}),
        ],
    )

    report = report_build(experiment_key="offer-test", now=NOW)

    assert report.srm.flagged is False  # 5,600 vs 5,600 overall
    new, vip = (_layer(report, layer) for layer in ("new", "vip"))
    assert new.srm.flagged and vip.srm.flagged
    assert [c.code for c in new.lifts[0].verdict.caveats] == ["srm_layer"]
    assert report.primary.overall.lifts[0].verdict.caveats == ()  # type: ignore[union-attr]


def test_report__interval_excludes_zero_but_adjusted_p_does_not__says_why() -> None:
    # Two layers with the same modest lift: each p ~ 0.03, Holm doubles the smaller.
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create()
    populate(
        experiment,
        [
            Group("control", 2000, {"order": 200}, {"tier": "new"}),
            Group("treatment", 2000, {"order": 243}, {"tier": "new"}),
            Group("control", 2000, {"order": 200}, {"tier": "vip"}),
            Group("treatment", 2000, {"order": 244}, {"tier": "vip"}),
        ],
    )

    report = report_build(experiment_key="offer-test", now=NOW)

    [lift] = _layer(report, "new").lifts
    assert lift.absolute_lift_ci.low > 0  # the unadjusted interval leaves out 0
    assert lift.p_value < 0.05 <= lift.adjusted_p_value
    assert lift.verdict.label == "inconclusive"
    assert "interval_not_adjusted" in [n.code for n in lift.notes]


def test_report__control_without_conversions__relative_lift_undefined_with_reason() -> None:
    experiment = experiment_create()
    populate(experiment, [Group("control", 500, {}), Group("treatment", 500, {"order": 12})])

    report = report_build(experiment_key="offer-test", now=NOW)

    [lift] = report.primary.overall.lifts  # type: ignore[union-attr]
    assert lift.relative_lift is None
    assert lift.undefined["relative_lift"].code == "control_rate_zero"
    assert lift.absolute_lift == pytest.approx(12 / 500)
    assert report.primary.overall.power.required_per_arm is None  # type: ignore[union-attr]
    assert report.primary.overall.power.undefined["required_per_arm"].code == "baseline_rate_out_of_range"  # type: ignore[union-attr]
    json.dumps(report.to_dict(), allow_nan=False)


def test_report__running_without_traffic__not_enough_data_everywhere_and_valid_json() -> None:
    dimension_create("tier", ["new"])
    experiment_create(metrics=(("order", "primary"), ("unsubscribe", "guardrail")))

    report = report_build(experiment_key="offer-test", now=NOW)

    for metric in report.metrics:
        [lift] = metric.overall.lifts
        assert lift.verdict.label == "not enough data"
        assert lift.p_value is None and lift.undefined["p_value"].code == "no_traffic"
        assert metric.dimensions == ()
    assert report.srm.p_value is None and report.srm.undefined["p_value"].code == "no_traffic"
    assert report_build(experiment_key="offer-test", timeseries=True, now=NOW).timeseries == ()
    text = json.dumps(report.to_dict(), allow_nan=False)
    assert "NaN" not in text and "Infinity" not in text


def test_report__small_layer__not_enough_data_below_100_per_arm() -> None:
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create()
    populate(
        experiment,
        [
            Group("control", 1000, {"order": 100}, {"tier": "new"}),
            Group("treatment", 1000, {"order": 150}, {"tier": "new"}),
            Group("control", 60, {"order": 6}, {"tier": "vip"}),
            Group("treatment", 60, {"order": 30}, {"tier": "vip"}),
        ],
    )

    report = report_build(experiment_key="offer-test", now=NOW)

    [vip] = _layer(report, "vip").lifts
    assert (vip.verdict.label, vip.verdict.reason) == ("not enough data", "arm_below_min_n")
    assert vip.p_value is not None  # computed, and in the family, but not called


def test_report__customers_in_no_layer__own_row_in_every_dimension() -> None:
    dimension_create("tier", ["new"])
    experiment = experiment_create()
    populate(
        experiment,
        [
            Group("control", 300, {"order": 30}, {"tier": "new"}),
            Group("treatment", 300, {"order": 33}, {"tier": "new"}),
            Group("control", 150, {"order": 15}),
            Group("treatment", 150, {"order": 15}),
        ],
    )

    report = report_build(experiment_key="offer-test", now=NOW)

    rows = report.primary.dimensions[0].layers  # type: ignore[union-attr]
    assert [(row.layer, row.label, row.customers) for row in rows] == [("new", "New", 600), (None, NO_LAYER_LABEL, 300)]


def test_report__draft_experiment__not_started_caveat_and_no_numbers() -> None:
    experiment = experiment_create(status=Experiment.Status.DRAFT)
    experiment.phases.all().delete()

    report = report_build(experiment_key="offer-test", now=NOW)

    assert report.phase is None
    assert [c.code for c in report.caveats] == ["not_started"]
    assert report.primary.overall.lifts[0].verdict.label == "not enough data"  # type: ignore[union-attr]
    json.dumps(report.to_dict(), allow_nan=False)


def test_report__timeseries__cumulative_rate_per_variant_per_day() -> None:
    experiment = experiment_create()
    populate(
        experiment,
        [
            Group("control", 100, {"order": 10}, day=0, conversion_day=1),
            Group("control", 100, {"order": 30}, day=2, conversion_day=2),
            Group("treatment", 200, {"order": 20}, day=1, conversion_day=1),
        ],
    )

    report = report_build(experiment_key="offer-test", timeseries=True, now=NOW)

    series = {(p.variant, (p.day - PHASE_START.date()).days): p for p in report.timeseries}
    assert sorted({d for _, d in series}) == [0, 1, 2]
    assert series[("control", 0)].cumulative_rate == 0.0
    assert series[("control", 1)].cumulative_rate == pytest.approx(10 / 100)
    assert series[("control", 2)].cumulative_rate == pytest.approx(40 / 200)
    assert series[("treatment", 0)].cumulative_rate is None
    assert series[("treatment", 0)].undefined["cumulative_rate"].code == "no_traffic"
    assert series[("treatment", 2)].cumulative_rate == pytest.approx(20 / 200)
    without = report_build(experiment_key="offer-test", now=NOW)
    assert without.timeseries == ()
    assert without.undefined["timeseries"].code == "not_requested"


def test_report_build__unknown_key_or_adjustment__raises() -> None:
    with pytest.raises(ExperimentNotFound):
        report_build(experiment_key="nope")
    experiment_create()
    with pytest.raises(ValueError, match="adjustment"):
        report_build(experiment_key="offer-test", adjustment="bonferroni")


def test_report__to_dict__json_safe_and_round_trips_numbers(experiment: Experiment) -> None:
    report = report_build(experiment_key="offer-test", now=NOW)

    data = json.loads(json.dumps(report.to_dict(), allow_nan=False))

    row = data["metrics"][0]["dimensions"][0]["layers"][0]
    assert row["layer"] == "new"
    assert row["lifts"][0]["p_value"] == _layer(report, "new").lifts[0].p_value
    assert data["settings"]["adjustment"] == "holm"
    assert data["generated_at"].endswith("Z")
    assert np.isfinite([row["lifts"][0]["z"]]).all()


def test_report__both_arms_convert_everyone__test_undefined_not_enough_data_in_words() -> None:
    experiment = experiment_create()
    populate(experiment, [Group("control", 300, {"order": 300}), Group("treatment", 300, {"order": 300})])

    report = report_build(experiment_key="offer-test", now=NOW)

    [lift] = report.primary.overall.lifts  # type: ignore[union-attr]
    assert (lift.p_value, lift.z, lift.adjusted_p_value) == (None, None, None)
    assert lift.undefined["p_value"].code == "zero_variance"
    assert lift.undefined["adjusted_p_value"].code == "zero_variance"
    assert (lift.verdict.label, lift.verdict.reason) == ("not enough data", "test_undefined")
    assert lift.relative_lift == 0.0
    json.dumps(report.to_dict(), allow_nan=False)
