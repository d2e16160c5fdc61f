"""Pure parts of the report: power planning with weights, chart geometry, number words."""

from __future__ import annotations

import math
import re

import pytest
from statsmodels.stats.power import NormalIndPower
from statsmodels.stats.proportion import proportion_effectsize

from experiments.reports import charts, present
from experiments.reports.planner import Arm, days_to_reach, requirement
from experiments.stats import Interval, Reason

pytestmark = pytest.mark.pure


def test_requirement__equal_split__matches_normal_ind_power() -> None:
    arms = [Arm("control", 0.5, True), Arm("treatment", 0.5, False)]

    need = requirement(baseline_rate=0.05, relative_mde=0.2, arms=arms, alpha=0.05, power=0.8)

    h = proportion_effectsize(0.06, 0.05)
    n = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.8, ratio=1.0, alternative="two-sided")
    assert need.required_per_arm == {"control": math.ceil(n), "treatment": math.ceil(n)}
    assert need.total == 2 * math.ceil(n)


def test_requirement__three_arms_uneven__control_needs_the_largest_of_its_requirements() -> None:
    arms = [Arm("control", 0.2, True), Arm("b", 0.4, False), Arm("c", 0.4, False)]

    need = requirement(baseline_rate=0.1, relative_mde=0.1, arms=arms, alpha=0.05, power=0.9)

    h = proportion_effectsize(0.11, 0.1)
    n1 = NormalIndPower().solve_power(effect_size=h, alpha=0.05, power=0.9, ratio=2.0, alternative="two-sided")
    assert need.required_per_arm is not None
    assert need.required_per_arm["control"] == math.ceil(n1)
    assert need.required_per_arm["b"] == need.required_per_arm["c"]
    assert need.required_per_arm["b"] == pytest.approx(2 * n1, abs=1)


@pytest.mark.parametrize(
    ("baseline", "mde", "code"),
    [(0.0, 0.1, "baseline_rate_out_of_range"), (0.6, 1.0, "target_rate_out_of_range"), (0.1, 0.0, "mde_zero")],
)
def test_requirement__impossible_plan__undefined_with_reason(baseline: float, mde: float, code: str) -> None:
    need = requirement(
        baseline_rate=baseline,
        relative_mde=mde,
        arms=[Arm("c", 0.5, True), Arm("t", 0.5, False)],
        alpha=0.05,
        power=0.8,
    )
    assert need.required_per_arm is None
    assert need.undefined["required_per_arm"].code == code


def test_days_to_reach__ten_ninety_split__slowest_arm_at_its_share_of_traffic() -> None:
    arms = [Arm("control", 0.1, True), Arm("treatment", 0.9, False)]

    days, why = days_to_reach(
        required_per_arm={"control": 1000, "treatment": 9000},
        arms=arms,
        daily_traffic=500,
        customers_so_far={"control": 200},
    )

    # control: 800 more at 50 a day = 16 days; treatment: 9000 at 450 a day = 20 days.
    assert (days, why) == (20, None)


def test_days_to_reach__reached_or_no_traffic() -> None:
    arms = [Arm("control", 0.5, True), Arm("treatment", 0.5, False)]
    assert days_to_reach(
        required_per_arm={"control": 10, "treatment": 10},
        arms=arms,
        daily_traffic=0,
        customers_so_far={"control": 10, "treatment": 12},
    ) == (0, None)
    days, why = days_to_reach(required_per_arm={"control": 10, "treatment": 10}, arms=arms, daily_traffic=0)
    assert days is None and why is not None and why.code == "no_traffic"


def test_nice_ticks__ranges__round_values_covering_the_range() -> None:
    assert charts.nice_ticks(-0.1, 0.5) == pytest.approx([-0.1, 0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    assert charts.nice_ticks(-1.0, 3.0) == pytest.approx([-1.0, 0.0, 1.0, 2.0, 3.0])
    assert charts.nice_ticks(0.013, 0.087) == pytest.approx([0.02, 0.04, 0.06, 0.08])


def test_forest_svg__rows__one_marker_per_defined_row_escaped_labels_and_clipped_arrows() -> None:
    svg = charts.forest_svg(
        [
            charts.ForestRow("All customers", 0.1, 0.02, 0.18, "significant win"),
            charts.ForestRow("<script>x</script>", -0.05, -0.2, 0.1, "inconclusive"),
            charts.ForestRow("Tiny layer", 2.0, 0.1, 9.0, "not enough data"),
            charts.ForestRow("Empty", None, None, None, "not enough data", "The treatment arm has no customers yet."),
        ],
        title="Relative lift by tier",
    )

    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count("<circle") == 3
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert 'class="zero"' in svg
    assert "not defined: The treatment arm has no customers yet." in svg
    assert svg.count("<path") == 1  # the interval running past +300% ends in an arrow
    # The estimate of a clipped row is still drawn inside the plot.
    xs = [float(x) for x in re.findall(r'<circle cx="([0-9.]+)"', svg)]
    assert all(charts.LABEL_WIDTH <= x <= charts.WIDTH - charts.RIGHT for x in xs)


def test_present__numbers_and_undefined__words() -> None:
    reasons = {"relative_lift": Reason("control_rate_zero", "The control arm has no conversions.")}
    assert str(present.rate(0.12345, {})) == "12.35%"
    assert str(present.points(0.012, {}, "absolute_lift")) == "+1.20 pts"
    assert str(present.points(-0.012, {}, "absolute_lift")) == "\u22121.20 pts"
    assert str(present.pct(0.1234, {}, "relative_lift")) == "+12.3%"
    assert str(present.interval_pct(Interval(-0.05, 0.2), {}, "relative_lift_ci")) == "\u22125.0% to +20.0%"
    assert str(present.p_value(0.00001, {}, "p_value")) == "< 0.0001"
    assert str(present.p_value(0.0123, {}, "p_value")) == "0.0123"
    assert str(present.p_value(0.56, {}, "p_value")) == "0.56"
    shown = present.pct(None, reasons, "relative_lift")
    assert (shown.text, shown.undefined) == ("not defined", "The control arm has no conversions.")
