"""The lift report: database aggregates (``aggregation``) turned into frozen dataclasses by
the statistics of ``experiments.stats``.

One entry point, :func:`report_build`. The report covers the experiment's current phase
(a new phase re-randomizes everyone, so earlier phases are never mixed in) and, per
metric (primary first, then secondary metrics, then guardrails):

* an **overall** row and one row per **layer of each dimension** of the assignment-time
  snapshot: per variant customers, conversions and rate; per treatment variant absolute
  and relative lift with 95% intervals, z, p-value, adjusted p-value and a plain-words
  verdict; the SRM check of that row's traffic split; the power status;
* the **family** every adjusted p-value belongs to, named in the report: the overall
  row's family is the treatment variants; a dimension's family is its layers x the
  treatment variants (Holm by default, Benjamini-Hochberg selectable), per metric;
* the **heterogeneity** test once per dimension.

Direction: the primary and secondary metrics are "higher is better"; guardrails (e.g.
``unsubscribe``) are "higher is worse", so a significant *increase* of a guardrail is a
"significant loss" flagged as harm. ``experiments.stats.verdict`` assumes higher is
better; the flip happens here (:func:`_directed_verdict`).

Caveats: a flagged SRM of the experiment caveats every verdict of the report; a flagged
SRM of one layer caveats that layer's verdicts. Intervals are not adjusted for
multiplicity while verdicts are: a row whose interval leaves out 0 but whose verdict is
"inconclusive" says so in its notes.

Undefined numbers are ``None`` with a ``Reason`` under ``undefined[field]``, never NaN or
infinity; :meth:`Report.to_dict` is JSON-ready (``allow_nan=False`` safe).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from django.conf import settings
from django.utils import timezone

from experiments import selectors, stats
from experiments.metric_kinds import kind_of
from experiments.models import AnalysisPlan, Experiment, Metric, Phase, Variant
from experiments.reports import aggregation, planner, value_moments
from experiments.reports.results import (
    ArmResult,
    CupedView,
    DailyPoint,
    DimensionResult,
    Direction,
    ExperimentInfo,
    Family,
    GuardrailPlan,
    HeterogeneityView,
    LiftResult,
    MetricInfo,
    MetricReport,
    PhaseInfo,
    PlanInfo,
    PowerResult,
    Report,
    RowResult,
    Settings,
    SrmStatus,
    VariantInfo,
    VerdictResult,
)
from experiments.stats import Reason

__all__ = [
    "ADJUSTMENTS",
    "ALPHA",
    "COMPARISON_METHOD",
    "MIN_CUSTOMERS_PER_ARM",
    "NO_LAYER_LABEL",
    "POWER",
    "ExperimentNotFound",
    "report_build",
]

ALPHA = 0.05
COMPARISON_METHOD = stats.DECISION_METHOD  # pooled z + the score interval that inverts it
MIN_CUSTOMERS_PER_ARM = 100
POWER = 0.8
ADJUSTMENTS: dict[str, str] = {
    "holm": "Holm (keeps the chance of any false 'significant' in the family at or below 5%)",
    "bh": "Benjamini-Hochberg (keeps the expected share of false 'significant' results at or below 5%)",
}
NO_LAYER_LABEL = "Not in any layer when assigned"
HEADLINE_HETEROGENEITY_ALPHA = 0.05
NOT_YET_EVALUABLE = "not yet evaluable"
MODES: dict[str, str] = {
    "sequential": "always valid (sequential): the verdicts may be read at every look",
    "fixed": "fixed horizon: verdicts only once the planned horizon is reached",
}


class ExperimentNotFound(LookupError):
    """No experiment has this key."""


# --------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------


def _srm_status(variants: Sequence[str], observed: Sequence[int], weights: Sequence[float]) -> SrmStatus:
    result = stats.srm(list(observed), list(weights))
    # srm() names arms by position; name them by variant key for the reader.
    flags = tuple(
        Reason(f.code, _name_arms(f.message, variants)) if f.code == "traffic_in_zero_weight_arm" else f
        for f in result.flags
    )
    message = result.message
    if flags != result.flags:
        message = (
            "Sample ratio mismatch: "
            + " ".join(f.message for f in flags)
            + (" Check assignment and tracking before trusting results.")
        )
    return SrmStatus(
        variants=tuple(variants),
        observed=result.observed,
        expected=result.expected,
        weights=result.weights,
        statistic=result.statistic,
        df=result.df,
        p_value=result.p_value,
        threshold=result.threshold,
        flagged=result.flagged,
        message=message,
        flags=flags,
        notes=result.notes,
        undefined=dict(result.undefined),
    )


def _name_arms(message: str, variants: Sequence[str]) -> str:
    prefix, sep, rest = message.partition(" arm(s) ")
    if not sep:
        return message
    indices, _, tail = rest.partition(" configured")
    try:
        names = ", ".join(variants[int(i)] for i in indices.split(", "))
    except (ValueError, IndexError):
        return message
    return f"{prefix} variant(s) {names} configured{tail}"


def _directed_verdict(
    verdict: stats.Verdict,
    absolute_lift: float | None,
    adjusted_p: float | None,
    direction: Direction,
    metric: str,
    alpha: float = ALPHA,
) -> VerdictResult:
    """The stats verdict assumes higher is better; for a "higher is worse" metric a
    significant increase is a loss (harm) and a significant decrease a win."""
    if verdict.label not in (stats.SIGNIFICANT_WIN, stats.SIGNIFICANT_LOSS):
        return VerdictResult(verdict.label, verdict.reason, verdict.message, harm=False)
    went_up = absolute_lift is not None and absolute_lift > 0
    good = went_up == (direction == "higher_is_better")
    label = stats.SIGNIFICANT_WIN if good else stats.SIGNIFICANT_LOSS
    if direction == "higher_is_better":
        message = verdict.message
    else:
        change = "raises" if went_up else "lowers"
        message = (
            f"{'Significant improvement' if good else 'Significant harm'}: the treatment {change} the "
            f"'{metric}' rate (where lower is better), and the difference is larger than chance explains "
            f"(adjusted p = {adjusted_p:.3g} < {alpha:g})."
        )
    return VerdictResult(label, verdict.reason, message, harm=not good)


@dataclass(frozen=True, slots=True)
class _Cell:
    """Counts of one variant in one row for one metric; value metrics (issue 15) also carry
    the arm's estimate (CUPED-adjusted when applied) and the unadjusted one."""

    customers: int
    conversions: int
    estimate: stats.Estimate | None = None
    unadjusted: stats.Estimate | None = None


@dataclass(frozen=True, slots=True)
class _ValueRow:
    """How a value metric's row is compared: the kind's distribution and CUPED's outcome."""

    distribution: str
    cuped: CupedView | None
    margin: float = 0.0


NOT_A_VALUE = Reason("not_applicable", "Conversion metrics have a rate, not a value per customer.")


def _value_cells(
    ctx: _Context,
    moments: Mapping[str, stats.Moments],
    conversions: Mapping[str, _Cell],
    *,
    metric: Metric,
    k: int,
    cuped_on: bool,
    unavailable: Reason | None,
) -> tuple[dict[str, _Cell], CupedView | None]:
    """Per variant: the value estimate of one row from its moments (``stats.estimate``),
    CUPED-adjusted across the row's arms (``stats.cuped``, theta pooled over them) when the
    metric has a lookback. ``customers`` is the moments' n (closed windows), conversions
    (customers with at least one event) come from the conversion counts."""
    kind = kind_of(metric)
    empty = stats.Moments.empty(2 * k if cuped_on else k)
    arms = [moments.get(key, empty) for key in ctx.keys]
    if unavailable is not None:
        missing = stats.Estimate(0, None, None, {"value": unavailable, "variance": unavailable})
        cells = {
            key: _Cell(conversions[key].customers, conversions[key].conversions, missing, missing) for key in ctx.keys
        }
        return cells, None
    post = kind.statistic
    plain = [stats.estimate(m, post) for m in arms]
    view: CupedView | None = None
    adjusted = plain
    if cuped_on:
        shifted = (
            stats.MeanOf(post.index + k)
            if isinstance(post, stats.MeanOf)
            else stats.RatioOf(post.numerator + k, post.denominator + k)
        )
        result = stats.cuped(arms, post, shifted)
        adjusted = list(result.estimates)
        view = CupedView(
            result.applied, int(metric.cuped_lookback_days), result.theta, result.variance_reduction, result.undefined
        )
    cells = {
        key: _Cell(m.n, min(conversions[key].conversions, m.n), adjusted[i], plain[i])
        for i, (key, m) in enumerate(zip(ctx.keys, arms, strict=True))
    }
    return cells, view


NO_PRE_PERIOD = Reason("no_pre_period_data", "No customer has pre-experiment data for this metric.")
CUPED_NOT_STORED = Reason(
    "cuped_not_stored",
    "CUPED uses the pre-period conversions stored by the conversion refresh, and none are stored for this "
    "metric's current definition yet (the next refresh stores them); the unadjusted result is shown.",
)
COUNTS_DIFFER = Reason(
    "cuped_counts_differ",
    "The pre-period values were computed for other customers than the conversion counts (a refresh is pending), "
    "so CUPED is not applied; the unadjusted result is shown.",
)


def _conversion_cuped(
    ctx: _Context,
    cells: Mapping[str, _Cell],
    comparisons: list,
    moments: Mapping[str, stats.Moments] | None,
    lookback: int,
    missing: Reason | None,
    customers: int,
) -> tuple[list, CupedView]:
    """CUPED for a conversion row (issue 15): each treatment's comparison with the lift,
    interval, statistic and p-value of the regression ``converted ~ arm + centred pre-period
    conversion`` (``stats.cuped_ols``: one theta and ONE pooled residual variance, the
    analogue of the pooled z, which keeps the A/A rate at or below 5% at 10/90 splits and 2%
    rates where per-arm variances do not: ``bench/values_decisions.py``, ``conversion_cuped``).
    Always valid mode: the CUPED-adjusted estimates through the normal-mixture sequence
    (``stats.compare_values(sequential=True)``, unpooled as ``compare_sequential``). The
    relative lift and its interval: the adjusted estimates by the delta method. Falls back to
    the unadjusted comparisons, with a reason, when there is no pre-period data or the
    stored values do not match the counts."""
    assert ctx.control is not None

    def fallback(reason: Reason) -> tuple[list, CupedView]:
        return comparisons, CupedView(False, lookback, None, None, {"theta": reason, "variance_reduction": reason})

    if missing is not None:
        return fallback(missing)
    if moments is None:
        return fallback(Reason("not_started", "No pre-period data yet."))
    order = [ctx.control.key, *(t.key for t in ctx.treatments)]
    arms = [moments.get(key, stats.Moments.empty(2)) for key in order]
    counted = [(cells[key].customers, cells[key].conversions) for key in order]
    if any((m.n, m.sums[0]) != pair for m, pair in zip(arms, counted, strict=True)):
        return fallback(COUNTS_DIFFER)
    fits = stats.cuped_ols(arms, alpha=ctx.alpha)
    adjusted = stats.cuped(arms, stats.MeanOf(0), stats.MeanOf(1))
    if not adjusted.applied or fits[0].theta is None:
        return fallback(adjusted.undefined.get("theta") or fits[0].undefined.get("p_value") or NO_PRE_PERIOD)
    out = []
    for i, (treatment, comparison, fit) in enumerate(zip(ctx.treatments, comparisons, fits, strict=True)):
        sequential = ctx.mode == "sequential"
        delta = stats.compare_values(
            adjusted.estimates[0],
            adjusted.estimates[i + 1],
            alpha=ctx.alpha,
            distribution="normal",
            sequential=sequential,
            expected_n=ctx.expected_n(customers, treatment.key),
        )
        undefined = {k: v for k, v in comparison.undefined.items() if k in ("relative_lift", "relative_lift_ci")}
        if sequential:
            lift, ci, z, p = delta.absolute_lift, delta.absolute_lift_ci, delta.statistic, delta.p_value
            undefined |= {k: v for k, v in delta.undefined.items() if k in ("absolute_lift_ci", "p_value")}
        else:
            lift, z, p = fit.estimate, fit.t, fit.p_value
            ci = stats.Interval(*fit.interval) if fit.interval is not None else None
            undefined |= {k: fit.undefined[k] for k in ("interval", "p_value") if k in fit.undefined}
            if "interval" in undefined:
                undefined["absolute_lift_ci"] = undefined.pop("interval")
        for name in ("z", "absolute_lift_ci", "p_value"):
            if {"z": z, "absolute_lift_ci": ci, "p_value": p}[name] is None and name not in undefined:
                undefined[name] = fit.undefined.get("p_value") or NO_PRE_PERIOD
        out.append(
            replace(
                comparison,
                absolute_lift=lift,
                absolute_lift_ci=ci,
                relative_lift=delta.relative_lift,
                relative_lift_ci=delta.relative_lift_ci,
                z=z,
                p_value=p,
                undefined=undefined | {k: v for k, v in delta.undefined.items() if k.startswith("relative")},
            )
        )
    return out, CupedView(True, lookback, adjusted.theta, adjusted.variance_reduction, dict(adjusted.undefined))


class _Context:
    """What every row needs: variants in order, weights, settings, time."""

    def __init__(
        self,
        *,
        variants: Sequence[VariantInfo],
        adjustment: str,
        mde: float,
        days_elapsed: float,
        running: bool,
        alpha: float = ALPHA,
        mode: str = "sequential",
        planned_total: float | None = None,
        overall_customers: int = 0,
        horizon_reached: bool = True,
        horizon_message: str = "",
        fixed_audience: bool = False,
    ) -> None:
        self.alpha = alpha
        self.mode = mode
        self.planned_total = planned_total
        self.overall_customers = overall_customers
        self.horizon_reached = horizon_reached
        self.horizon_message = horizon_message
        self.fixed_audience = fixed_audience
        self.variants = tuple(variants)
        self.keys = tuple(v.key for v in variants)
        self.control = next((v for v in variants if v.is_control), None)
        self.treatments = tuple(v for v in variants if not v.is_control)
        self.display = ((self.control,) if self.control else ()) + self.treatments
        self.adjustment = adjustment
        self.mde = mde
        self.days_elapsed = days_elapsed
        self.running = running
        self.arms = tuple(planner.Arm(v.key, v.weight, v.is_control) for v in variants)
        self.weights = {v.key: v.weight for v in variants}

    def expected_n(self, row_customers: int, treatment: str) -> float:
        """The sequential test's tuning parameter for one comparison in one row: the
        customers the control and this treatment are expected to have at the planned
        horizon = planned total x (row's share of the customers so far) x (w_c + w_t) /
        sum w. Without a planned horizon: ``stats.DEFAULT_EXPECTED_N`` (as gbstats)."""
        if not self.planned_total or self.control is None:
            return float(stats.DEFAULT_EXPECTED_N)
        share = row_customers / self.overall_customers if self.overall_customers else 1.0
        total_weight = sum(self.weights.values()) or 1.0
        pair = (self.weights[self.control.key] + self.weights[treatment]) / total_weight
        return max(self.planned_total * share * pair, 2.0)


def _power(
    ctx: _Context,
    cells: Mapping[str, _Cell],
    daily_traffic: float,
    family_size: int,
    family_words: str,
    value: _ValueRow | None = None,
) -> PowerResult:
    """Customers needed per arm for the MDE at the control's observed rate, under the
    rules in use (issue 14): at the per-comparison level alpha / m of the row's family
    (``stats.family_alpha``: Bonferroni, Holm's strictest step, so a lower bound on
    power under Holm and BH) and for the inference mode (``stats.sequential_sample_size``
    for the always-valid test, ``stats.sample_size`` for the fixed horizon; per
    treatment with the arms in the ratio of their weights, ``planner.requirement``);
    progress = min over arms of customers / required; days remaining at the row's daily
    traffic split by weight (``planner.days_to_reach``). A fixed audience (a broadcast)
    gets no days: the smallest lift detectable at its final size instead."""
    customers = {key: cells[key].customers for key in ctx.keys}
    undefined: dict[str, Reason] = {}
    level = stats.family_alpha(ctx.alpha, family_size)
    rule = (
        f"at α = {ctx.alpha:g}/{max(family_size, 1)} = {level:.4g} per comparison ({family_words}; Bonferroni, "
        f"the strictest step of the correction, so real power is at least this), "
        f"{'always-valid sequential test' if ctx.mode == 'sequential' else 'fixed-horizon test'}"
    )
    sequential = ctx.mode == "sequential"

    def undefined_all(reason: Reason, baseline: float | None) -> PowerResult:
        for name in ("required_per_arm", "progress", "days_remaining"):
            undefined[name] = reason
        if baseline is None:
            undefined["baseline_rate"] = reason
        return PowerResult(
            baseline,
            ctx.mde,
            None,
            customers,
            None,
            False,
            daily_traffic,
            None,
            "Cannot tell how much data is needed: " + reason.message,
            undefined,
            level,
            rule,
            ctx.mode,
        )

    if ctx.control is None:
        return undefined_all(Reason("no_control", "The experiment has no control variant."), None)
    control = cells[ctx.control.key]
    if control.customers == 0:
        return undefined_all(Reason("no_traffic", "The control arm has no customers yet."), None)
    variance: float | None = None
    reduction = 0.0
    if value is not None:
        # Value metrics: the control's mean (or ratio) and per-customer variance, reduced by
        # CUPED's achieved share (``planner.requirement`` with ``variance``).
        estimate = control.unadjusted
        if estimate is None or estimate.value is None or estimate.variance is None:
            why = (estimate.undefined.get("variance") or estimate.undefined.get("value")) if estimate else None
            return undefined_all(why or Reason("no_traffic", "The control arm has no customers yet."), None)
        baseline, variance = estimate.value, estimate.variance
        if value.cuped is not None and value.cuped.applied and value.cuped.variance_reduction:
            reduction = min(max(value.cuped.variance_reduction, 0.0), 0.99)
        rule += "; value metric: normal approximation on the per-customer variance" + (
            f" reduced {reduction:.0%} by CUPED" if reduction else ""
        )
    else:
        baseline = control.conversions / control.customers
    need = planner.requirement(
        baseline_rate=baseline,
        relative_mde=ctx.mde,
        arms=ctx.arms,
        alpha=level,
        power=POWER,
        sequential=sequential,
        variance=variance,
        variance_reduction=reduction,
    )
    if need.required_per_arm is None:
        return undefined_all(need.undefined["required_per_arm"], baseline)
    required = need.required_per_arm
    progress = min(customers[key] / n for key, n in required.items())
    reached = progress >= 1.0
    days: int | None = None
    detectable: float | None = None
    if ctx.fixed_audience and ctx.treatments and value is None:
        # The audience is final: say what it can detect, not how long to wait.
        smallest = min(ctx.treatments, key=lambda t: customers[t.key])
        lift = stats.detectable_lift(
            baseline,
            customers[ctx.control.key],
            customers[smallest.key],
            alpha=level,
            power=POWER,
            sequential=sequential,
            expected_n=customers[ctx.control.key] + customers[smallest.key],
        )
        detectable = lift.relative_lift
        undefined["days_remaining"] = Reason(
            "fixed_audience", "The audience is fixed (a broadcast): no more customers are coming."
        )
        if detectable is None:
            undefined["detectable_lift"] = lift.undefined["relative_lift"]
    elif reached:
        days = 0
    elif not ctx.running:
        undefined["days_remaining"] = Reason(
            "not_running", "The experiment is not running, so no more customers are coming in."
        )
    else:
        days, why = planner.days_to_reach(
            required_per_arm=required, arms=ctx.arms, daily_traffic=daily_traffic, customers_so_far=customers
        )
        if why is not None:
            undefined["days_remaining"] = why
    mde = f"{ctx.mde:+.1%} relative lift"
    if ctx.fixed_audience:
        final = sum(customers.values())
        message = f"Final audience {final:,}: the smallest detectable lift is " + (
            f"{detectable:+.1%} (relative, {POWER:.0%} power, {rule})." if detectable is not None else "not defined."
        )
    elif reached:
        message = (
            f"Enough customers to detect a {mde} with {POWER:.0%} power (needed {max(required.values()):,} per arm, "
            f"{rule})."
        )
    else:
        behind = min(required, key=lambda key: customers[key] / required[key])
        message = (
            f"{progress:.0%} of the way: variant {behind} has {customers[behind]:,} of the "
            f"{required[behind]:,} customers it needs to detect a {mde} with {POWER:.0%} power ({rule})"
        )
        message += f"; about {days:,} more days at current traffic." if days is not None else "."
    return PowerResult(
        baseline,
        ctx.mde,
        dict(required),
        customers,
        progress,
        reached,
        daily_traffic,
        days,
        message,
        undefined,
        level,
        rule,
        ctx.mode,
        detectable,
    )


def _row(
    ctx: _Context,
    *,
    dimension: str | None,
    layer: str | None,
    label: str,
    cells: Mapping[str, _Cell],
    traffic: Mapping[str, int],
    family_size: int = 1,
    family_words: str = "",
    value: _ValueRow | None = None,
    conversion_cuped: tuple[Mapping[str, stats.Moments] | None, int, Reason | None] | None = None,
) -> tuple[RowResult, list[stats.Comparison]]:
    """A row without adjusted p-values (filled in once the family is known).

    Comparisons by the plan's mode: always valid (``stats.compare_sequential``, tuned
    at the row's expected size, ``_Context.expected_n``) or fixed horizon (the pooled
    decision test, ``stats.compare(method=DECISION_METHOD)``)."""
    customers = sum(traffic.values())
    arms = tuple(
        ArmResult(
            variant=v.key,
            is_control=v.is_control,
            customers=cells[v.key].customers,
            conversions=cells[v.key].conversions,
            rate=(cells[v.key].conversions / cells[v.key].customers) if cells[v.key].customers else None,
            undefined=(
                {}
                if cells[v.key].customers
                else {"rate": Reason("no_traffic", f"Variant {v.key} has no customers in this row yet.")}
            )
            | _value_undefined(cells[v.key], value is not None),
            value=cells[v.key].estimate.value if cells[v.key].estimate else None,
            unadjusted_value=cells[v.key].unadjusted.value if cells[v.key].unadjusted else None,
        )
        for v in ctx.display
    )
    comparisons: list = []
    if ctx.control is not None and value is not None:
        control_estimate = cells[ctx.control.key].estimate
        assert control_estimate is not None
        for t in ctx.treatments:
            treatment_estimate = cells[t.key].estimate
            assert treatment_estimate is not None
            comparisons.append(
                stats.compare_values(
                    control_estimate,
                    treatment_estimate,
                    alpha=ctx.alpha,
                    distribution=value.distribution,
                    sequential=ctx.mode == "sequential",
                    expected_n=ctx.expected_n(customers, t.key),
                )
            )
    elif ctx.control is not None:
        control = stats.Arm(cells[ctx.control.key].customers, cells[ctx.control.key].conversions)
        for t in ctx.treatments:
            treatment = stats.Arm(cells[t.key].customers, cells[t.key].conversions)
            if ctx.mode == "sequential":
                comparisons.append(
                    stats.compare_sequential(
                        control, treatment, alpha=ctx.alpha, expected_n=ctx.expected_n(customers, t.key)
                    )
                )
            else:
                comparisons.append(stats.compare(control, treatment, alpha=ctx.alpha, method=COMPARISON_METHOD))
    cuped_view = value.cuped if value is not None else None
    if ctx.control is not None and value is None and conversion_cuped is not None:
        comparisons, cuped_view = _conversion_cuped(ctx, cells, comparisons, *conversion_cuped, customers)
    daily_traffic = customers / ctx.days_elapsed if ctx.days_elapsed > 0 else 0.0
    row = RowResult(
        dimension=dimension,
        layer=layer,
        label=label,
        customers=customers,
        arms=arms,
        lifts=(),
        srm=_srm_status(ctx.keys, [traffic[k] for k in ctx.keys], [v.weight for v in ctx.variants]),
        power=_power(ctx, cells, daily_traffic, family_size, family_words, value),
        cuped=cuped_view,
    )
    return row, comparisons


def _value_undefined(cell: _Cell, is_value: bool) -> dict[str, Reason]:
    if not is_value:
        return {"value": NOT_A_VALUE, "unadjusted_value": NOT_A_VALUE}
    out = {}
    if cell.estimate is None or cell.estimate.value is None:
        out["value"] = (cell.estimate.undefined.get("value") if cell.estimate else None) or Reason(
            "no_traffic", "No customers in this arm yet."
        )
    if cell.unadjusted is None or cell.unadjusted.value is None:
        out["unadjusted_value"] = out.get("value") or Reason("no_traffic", "No customers in this arm yet.")
    return out


_Raw = tuple[RowResult, list[stats.Comparison]]


def _harm_tests(ctx: _Context, rows: Sequence[_Raw], margin: float) -> list[list[stats.HarmTest]]:
    """One-sided harm tests beyond the guardrail's margin (``stats.harm_test``; value
    metrics: ``stats.value_harm_test``, margin in the metric's units)."""
    if rows and rows[0][1] and isinstance(rows[0][1][0], stats.ValueComparison):
        return [
            [
                stats.value_harm_test(
                    c, margin=margin, alpha=ctx.alpha, expected_n=ctx.expected_n(row.customers, t.key)
                )
                for t, c in zip(ctx.treatments, comparisons, strict=True)
            ]
            for row, comparisons in rows
        ]
    return [
        [
            stats.harm_test(
                c.control,
                c.treatment,
                margin=margin,
                alpha=ctx.alpha,
                sequential=ctx.mode == "sequential",
                expected_n=ctx.expected_n(row.customers, t.key),
            )
            for t, c in zip(ctx.treatments, comparisons, strict=True)
        ]
        for row, comparisons in rows
    ]


def _adjust_families(
    families: Sequence[tuple[Sequence[_Raw], str, list[list[stats.HarmTest]] | None]],
) -> list[list[float | None]]:
    """Adjust each family's p-values together: ``families`` = (rows, method, harm tests
    or None); returns the adjusted p-values per family in row x treatment order."""
    out = []
    for rows, method, harm in families:
        if harm is None:
            p_values = [c.p_value for _, comparisons in rows for c in comparisons]
        else:
            p_values = [h.p_value for tests in harm for h in tests]
        out.append(stats.adjust(p_values, method=method))
    return out


def _finish_rows(
    ctx: _Context,
    rows: Sequence[_Raw],
    *,
    metric: MetricInfo,
    experiment_srm: SrmStatus,
    adjusted_p_values: Sequence[float | None],
    family: Family,
    harm: list[list[stats.HarmTest]] | None = None,
) -> tuple[RowResult, ...]:
    """Attach lifts with verdicts and notes, given the family's adjusted p-values.

    Verdicts: ``stats.verdict`` at the plan's alpha; before the planned horizon of a
    fixed-horizon test every verdict is withheld ("not yet evaluable: n of N planned");
    exploratory families are labelled so and never raise harm; in the guardrail family
    the p-value is the one-sided harm test beyond the margin and only it flags harm."""
    adjusted = iter(adjusted_p_values)
    harm_iter = iter(harm or [])
    family_size = family.size
    finished = []
    for row, comparisons in rows:
        lifts = []
        harm_row = next(harm_iter) if harm is not None else [None] * len(comparisons)
        for treatment, comparison, harm_test in zip(ctx.treatments, comparisons, harm_row, strict=True):
            adjusted_p = next(adjusted)
            undefined = dict(comparison.undefined)
            p_value = comparison.p_value
            if harm_test is not None:
                p_value = harm_test.p_value
                if p_value is None:
                    undefined["p_value"] = harm_test.undefined["p_value"]
                else:
                    undefined.pop("p_value", None)
            base = stats.verdict(comparison, adjusted_p, alpha=ctx.alpha, min_n_per_arm=MIN_CUSTOMERS_PER_ARM)
            if harm_test is not None and base.label != stats.NOT_ENOUGH_DATA:
                assert adjusted_p is not None
                if adjusted_p < ctx.alpha:
                    verdict = VerdictResult(
                        stats.SIGNIFICANT_LOSS,
                        "harm_beyond_margin",
                        f"Significant harm: the treatment raises the '{metric.name}' rate by more than the "
                        f"tolerated {harm_test.margin * 100:.2g} points (one-sided adjusted p = {adjusted_p:.3g} "
                        f"< {ctx.alpha:g}).",
                        harm=True,
                    )
                else:
                    verdict = VerdictResult(
                        stats.INCONCLUSIVE,
                        "no_harm_shown",
                        f"No harm beyond the tolerated {harm_test.margin * 100:.2g} points shown "
                        f"(one-sided adjusted p = {adjusted_p:.3g}, harm needs < {ctx.alpha:g}).",
                        harm=False,
                    )
            else:
                verdict = _directed_verdict(
                    base, comparison.absolute_lift, adjusted_p, metric.direction, metric.name, ctx.alpha
                )
                verdict = VerdictResult(verdict.label, verdict.reason, verdict.message, harm=False)
            if ctx.mode == "fixed" and not ctx.horizon_reached and verdict.label != stats.NOT_ENOUGH_DATA:
                verdict = VerdictResult(
                    NOT_YET_EVALUABLE,
                    "before_planned_horizon",
                    f"Not yet evaluable: {ctx.horizon_message}. A fixed-horizon test is read once, at the horizon.",
                    harm=False,
                )
            elif family.kind == "exploratory" and verdict.label in (stats.SIGNIFICANT_WIN, stats.SIGNIFICANT_LOSS):
                verdict = VerdictResult(
                    verdict.label,
                    verdict.reason,
                    "Exploratory (outside the declared decision family; a lead to test, not a decision): "
                    + verdict.message,
                    harm=False,
                )
            caveats = []
            if experiment_srm.flagged:
                caveats.append(
                    Reason(
                        "srm_experiment",
                        "The experiment's traffic split does not match its weights (sample ratio mismatch); "
                        "do not trust this verdict until that is explained.",
                    )
                )
            elif row.srm.flagged and row.dimension is not None:
                caveats.append(
                    Reason(
                        "srm_layer",
                        "This layer's traffic split does not match the weights (sample ratio mismatch); "
                        "do not trust this verdict until that is explained.",
                    )
                )
            verdict = VerdictResult(verdict.label, verdict.reason, verdict.message, verdict.harm, tuple(caveats))
            if adjusted_p is None:
                undefined["adjusted_p_value"] = undefined.get("p_value") or Reason(
                    "test_undefined", "The p-value is not available."
                )
            lifts.append(
                LiftResult(
                    variant=treatment.key,
                    absolute_lift=comparison.absolute_lift,
                    absolute_lift_ci=comparison.absolute_lift_ci,
                    relative_lift=comparison.relative_lift,
                    relative_lift_ci=comparison.relative_lift_ci,
                    z=comparison.z,
                    p_value=p_value,
                    adjusted_p_value=adjusted_p,
                    verdict=verdict,
                    notes=tuple(_notes(comparison, adjusted_p, verdict, row.power, family_size, harm_test)),
                    undefined=undefined,
                    family_kind=family.kind,
                )
            )
        finished.append(replace(row, lifts=tuple(lifts)))
    return tuple(finished)


def _notes(
    comparison: stats.Comparison,
    adjusted_p: float | None,
    verdict: VerdictResult,
    power: PowerResult,
    family_size: int,
    harm_test: stats.HarmTest | None = None,
) -> list[Reason]:
    notes = []
    ci = comparison.absolute_lift_ci
    if harm_test is not None:
        notes.append(
            Reason(
                "one_sided_harm_test",
                f"Guardrail: the p-value is one-sided (does the treatment raise this rate by more than "
                f"{harm_test.margin * 100:.2g} points?); the interval shown is two-sided.",
            )
        )
    elif verdict.label == stats.INCONCLUSIVE and ci is not None and (ci.low > 0 or ci.high < 0):
        notes.append(
            Reason(
                "interval_not_adjusted",
                "The 95% interval leaves out 0, but intervals are for this comparison on its own; "
                f"corrected for the {family_size} comparisons in its family (adjusted p = {adjusted_p:.3g}) "
                "the difference could still be chance.",
            )
        )
    if verdict.label == stats.INCONCLUSIVE and not power.reached:
        notes.append(
            Reason(
                "underpowered",
                "Fewer customers than needed to detect the minimum detectable effect: 'inconclusive' is "
                "expected for now and does not mean 'no effect'.",
            )
        )
    return notes


def _heterogeneity(
    ctx: _Context, cells: Mapping[str | None, Mapping[str, _Cell]], no_layer_key: str
) -> HeterogeneityView:
    if ctx.control is None:
        reason = Reason("no_control", "The experiment has no control variant.")
        return HeterogeneityView(None, None, None, None, "Cannot test: " + reason.message, (), _undef3(reason))
    stats_cells = [
        stats.Cell(no_layer_key if layer is None else layer, key, cell.customers, cell.conversions)
        for layer, by_variant in cells.items()
        for key, cell in by_variant.items()
    ]
    return _heterogeneity_view(stats.heterogeneity(stats_cells, ctx.control.key))


def _value_heterogeneity(ctx: _Context, rows: Sequence[_Raw], no_layer_key: str) -> HeterogeneityView:
    """Value metrics: Wald / Cochran test that each treatment's difference is the same in
    every layer (``stats.value_heterogeneity``), on the estimates the layer rows compared:
    CUPED-adjusted where CUPED applied in that layer, so the test gains its precision too."""
    if ctx.control is None:
        reason = Reason("no_control", "The experiment has no control variant.")
        return HeterogeneityView(None, None, None, None, "Cannot test: " + reason.message, (), _undef3(reason))
    cells: dict[tuple[str, str], stats.Estimate] = {}
    for row, comparisons in rows:
        layer = no_layer_key if row.layer is None else row.layer
        for treatment, comparison in zip(ctx.treatments, comparisons, strict=True):
            cells[(layer, ctx.control.key)] = comparison.control
            cells[(layer, treatment.key)] = comparison.treatment
    result = stats.value_heterogeneity(cells, ctx.control.key, alpha=HEADLINE_HETEROGENEITY_ALPHA)
    return _heterogeneity_view(result, scale="difference")


def _heterogeneity_view(result: stats.HeterogeneityResult, *, scale: str = "log_odds") -> HeterogeneityView:
    """The page's view of a heterogeneity test (log-odds for conversions, differences for
    value metrics): "differs" at the headline level, or why the test is undefined."""
    undefined = dict(result.undefined)
    differs = None
    if result.p_value is None:
        undefined["differs"] = undefined.get("p_value") or Reason("test_undefined", "The test is not available.")
    else:
        differs = result.p_value < HEADLINE_HETEROGENEITY_ALPHA
    return HeterogeneityView(
        result.statistic, result.df, result.p_value, differs, result.message, result.notes, undefined, scale=scale
    )


def _heterogeneity_adjusted(view: HeterogeneityView, adjusted_p: float | None, tested: int) -> HeterogeneityView:
    """Attach the Holm-adjusted p (across the ``tested`` dimensions of the metric); the
    headline "differs" follows the adjusted p only."""
    undefined = dict(view.undefined)
    if adjusted_p is None:
        undefined.setdefault("adjusted_p_value", undefined.get("p_value") or Reason("test_undefined", "No test."))
        return replace(view, adjusted_p_value=None, undefined=undefined)
    differs = adjusted_p < HEADLINE_HETEROGENEITY_ALPHA
    if tested > 1 and differs:
        message = (
            f"The lift differs between layers (Holm-adjusted across the {tested} dimensions tested: "
            f"p = {adjusted_p:.2g}; unadjusted {view.p_value:.2g}): read the layers separately."
        )
    elif tested > 1:
        message = (
            f"No evidence that the lift differs between layers (Holm-adjusted across the {tested} dimensions "
            f"tested: p = {adjusted_p:.2g}; unadjusted {view.p_value:.2g}): differences between layers are "
            "consistent with noise."
        )
    else:
        message = view.message
    return replace(view, differs=differs, adjusted_p_value=adjusted_p, message=message, undefined=undefined)


def _undef3(reason: Reason) -> dict[str, Reason]:
    return {"statistic": reason, "df": reason, "p_value": reason, "differs": reason}


def _timeseries(ctx: _Context, counts: aggregation.PhaseCounts, key_of: Mapping[int, str]) -> tuple[DailyPoint, ...]:
    if not counts.daily:
        return ()
    by_day: dict[tuple[dt.date, str], tuple[int, int]] = {}
    for point in counts.daily:
        key = key_of.get(point.variant_id)
        if key is not None:
            exposed, converted = by_day.get((point.day, key), (0, 0))
            by_day[(point.day, key)] = (exposed + point.exposed, converted + point.conversions)
    first, last = min(p.day for p in counts.daily), max(p.day for p in counts.daily)
    points = []
    for variant in ctx.display:
        cumulative_exposed = cumulative_conversions = 0
        day = first
        while day <= last:
            exposed, converted = by_day.get((day, variant.key), (0, 0))
            cumulative_exposed += exposed
            cumulative_conversions += converted
            rate = cumulative_conversions / cumulative_exposed if cumulative_exposed else None
            points.append(
                DailyPoint(
                    day,
                    variant.key,
                    exposed,
                    converted,
                    cumulative_exposed,
                    cumulative_conversions,
                    rate,
                    {} if rate is not None else {"cumulative_rate": Reason("no_traffic", "No customers exposed yet.")},
                )
            )
            day += dt.timedelta(days=1)
    return tuple(points)


def _inconsistency_caveats(
    problems: Sequence[aggregation.Inconsistency], metrics: Sequence[Metric], variants: Mapping[str, Variant]
) -> list[Reason]:
    """Conversions the engine should not have written (see ``aggregation``), in words."""
    metric_code = {m.pk: m.event_type.code for m in metrics}
    variant_key = {v.pk: key for key, v in variants.items()}
    outside: dict[tuple[str, str], int] = {}
    over: dict[tuple[str, str], int] = {}
    for p in problems:
        key = (metric_code.get(p.metric_id, str(p.metric_id)), variant_key.get(p.variant_id, str(p.variant_id)))
        target = outside if p.kind == "outside_population" else over
        target[key] = target.get(key, 0) + (
            p.conversions if p.kind == "outside_population" else p.conversions - p.customers
        )
    reasons = [
        Reason(
            "conversions_outside_population",
            f"{n:,} {metric} conversions of variant {variant} belong to customers who are not analysed (never "
            "exposed, or exposed to two variants); they were left out. The conversion data needs checking.",
        )
        for (metric, variant), n in sorted(outside.items())
    ]
    reasons += [
        Reason(
            "more_conversions_than_customers",
            f"{metric} of variant {variant}: {n:,} more conversions than customers in some layers; they were capped. "
            "The conversion data needs checking.",
        )
        for (metric, variant), n in sorted(over.items())
    ]
    return reasons


def _open_window_caveat(info: MetricInfo, analysed: int) -> Reason:
    days = info.window_hours / 24
    window = f"{days:g}-day" if info.window_hours % 24 == 0 else f"{info.window_hours}-hour"
    return Reason(
        "open_windows_excluded",
        f"{info.open_window_customers:,} of {analysed:,} customers are left out of {info.event_type}'s counts and "
        f"verdicts: their {window} window after first exposure is still open, so they may yet convert. They "
        "join as their windows close (turn off with exclude_open_windows=false to count everyone so far).",
    )


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------


def _plan_info(experiment: Experiment, phase: Phase | None, *, overall_customers: int, now: dt.datetime) -> PlanInfo:
    """The phase's recorded plan (or, for a phase that predates plans, the experiment's
    current settings, ``recorded`` False), with whether the planned horizon is reached."""
    plan = AnalysisPlan.objects.filter(phase=phase).first() if phase is not None else None
    if plan is not None:
        source: Experiment | AnalysisPlan = plan
        primary = plan.primary_metric
        secondary = tuple(plan.secondary_metrics)
        guardrails = tuple(GuardrailPlan(g["metric"], float(g["margin"])) for g in plan.guardrail_metrics)
    else:
        source = experiment
        metrics = list(Metric.objects.filter(experiment=experiment).select_related("event_type").order_by("pk"))
        primary = next((m.event_type.code for m in metrics if m.role == Metric.Role.PRIMARY), "")
        secondary = tuple(m.event_type.code for m in metrics if m.role == Metric.Role.SECONDARY)
        guardrails = tuple(
            GuardrailPlan(m.event_type.code, float(m.noninferiority_margin))
            for m in metrics
            if m.role == Metric.Role.GUARDRAIL
        )
    planned_n, planned_end = source.planned_sample_size, source.planned_end_at
    reached_by_n = bool(planned_n) and overall_customers >= (planned_n or 0)
    reached_by_date = planned_end is not None and now >= planned_end
    parts = []
    if planned_n:
        parts.append(f"{overall_customers:,} of {planned_n:,} planned customers")
    if planned_end is not None:
        parts.append(f"planned end {planned_end.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC")
    if not parts:
        parts.append("no planned horizon")
    horizon = "; ".join(parts)
    return PlanInfo(
        recorded=plan is not None,
        recorded_at=plan.recorded_at if plan is not None else None,
        primary_metric=primary,
        secondary_metrics=secondary,
        guardrails=guardrails,
        confirmatory_dimensions=tuple(source.confirmatory_dimensions),
        inference_mode=source.inference_mode,
        inference_mode_name=MODES.get(source.inference_mode, source.inference_mode),
        planned_sample_size=planned_n,
        planned_end_at=planned_end,
        fixed_audience=source.fixed_audience,
        minimum_detectable_effect=float(source.minimum_detectable_effect),
        alpha=float(source.alpha),
        correction=source.correction,
        correction_name=ADJUSTMENTS.get(source.correction, source.correction),
        horizon_reached=reached_by_n or reached_by_date,
        horizon_message=horizon,
    )


def _planned_total(plan: PlanInfo, overall_customers: int, phase: Phase | None, now: dt.datetime) -> float | None:
    """Customers expected at the planned horizon: the planned sample size, else the
    current rate projected to the planned end date, else unknown."""
    if plan.planned_sample_size:
        return float(plan.planned_sample_size)
    if plan.planned_end_at is not None and phase is not None and overall_customers:
        elapsed = max((now - phase.started_at).total_seconds(), 3600.0)
        planned = max((plan.planned_end_at - phase.started_at).total_seconds(), elapsed)
        return overall_customers * planned / elapsed
    return None


def _metric_name(metric: Metric) -> str:
    """Plain words: "Ordered" (conversion), "Ordered: revenue per customer", "Ordered: count
    per customer", "Ordered: revenue / Ordered: count"."""
    name = metric.event_type.name
    part_words = {"conversion": "conversions", "count": "count", "sum": "revenue"}
    if metric.kind == Metric.Kind.CONVERSION:
        return name
    net = " net of refunds" if metric.refund_event_type_id else ""
    if metric.kind == Metric.Kind.COUNT:
        return f"{name}: count per customer"
    if metric.kind == Metric.Kind.SUM:
        return f"{name}: revenue{net} per customer"
    assert metric.denominator_event_type is not None
    numerator = part_words[metric.numerator_part] + (net if metric.numerator_part == "sum" else "")
    return f"{name}: {numerator} / {metric.denominator_event_type.name}: {part_words[metric.denominator_part]}"


def _values_source(metric: Metric, values: value_moments.ValueCells | None) -> dict:
    """Which numbers a value metric's rows use, in words (``MetricInfo.values_source``): the
    values stored by the refresh (same transaction as the conversions, so as of the metric's
    ``conversions_watermark``), or the events, when the stored ones were computed with another
    definition (or never) and would be wrong."""
    if values is None or values.undefined:
        return {}
    if values.stored:
        at = metric.conversions_watermark
        when = f" at {at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC" if at is not None else ""
        return {
            "values_source": "stored",
            "values_stored_at": at,
            "values_source_message": f"Stored by the refresh{when}: events received since are not counted yet.",
        }
    why = (
        "the metric's definition (window, lookback, event types or currency rule) changed since the last refresh"
        if metric.values_signature
        else "no refresh has stored this metric's values yet"
    )
    return {
        "values_source": "events",
        "values_source_message": f"Computed from the events ({why}); refresh the conversions to store them, and "
        "reports read the stored values again.",
    }


def exclude_open_windows_default() -> bool:
    """``GROWTH["REPORT_EXCLUDE_OPEN_WINDOWS"]`` (on unless configured off)."""
    return bool(settings.GROWTH.get("REPORT_EXCLUDE_OPEN_WINDOWS", True))


def report_build(
    *,
    experiment_key: str,
    adjustment: str | None = None,
    timeseries: bool = False,
    now: dt.datetime | None = None,
    exclude_open_windows: bool | None = None,
) -> Report:
    """The lift report of the experiment's current phase. Raises ``ExperimentNotFound``;
    ``ValueError`` naming ``adjustment`` for an unknown adjustment method.

    Families (issue 14): the **confirmatory** family is the plan's primary metric x the
    treatment variants x (the overall row + every layer of the plan's confirmatory
    dimensions), adjusted together with the plan's correction at the plan's alpha; it
    alone makes decisions. Guardrails form one **guardrail** family (overall rows, one-
    sided harm tests beyond each metric's margin); it alone raises harm. Everything else
    (secondary metrics, other dimensions, guardrail layers) is **exploratory**, adjusted
    per metric and dimension with ``adjustment`` (default: the plan's correction).
    Heterogeneity p-values are Holm-adjusted across the dimensions tested, per metric.

    ``timeseries=True`` adds the conversion-over-time series: one more pass over the
    phase's assignments (grouped by day), which at 10M assignments costs as much as the
    whole report (see ``aggregation``), so it is asked for separately (the admin page
    loads its chart after the tables).

    ``exclude_open_windows`` (default ``exclude_open_windows_default()``, on): each metric
    counts only customers whose window has closed at ``now`` (see ``aggregation``); the
    number left out is ``MetricInfo.open_window_customers`` and a caveat. Every family,
    verdict and power figure is computed on those counts; SRM, traffic and the planned
    horizon use every analysed customer."""
    if exclude_open_windows is None:
        exclude_open_windows = exclude_open_windows_default()
    if adjustment is not None and adjustment not in ADJUSTMENTS:
        raise ValueError(f"adjustment: choose one of {', '.join(ADJUSTMENTS)}, got {adjustment!r}")
    experiment = selectors.experiment_get(key=experiment_key)
    if experiment is None:
        raise ExperimentNotFound(experiment_key)
    now = now or timezone.now()
    phase: Phase | None = selectors.experiment_current_phase(experiment=experiment)
    variants_by_key = {v.key: v for v in Variant.objects.filter(experiment=experiment)}
    metrics = sorted(
        Metric.objects.filter(experiment=experiment).select_related("event_type", "denominator_event_type"),
        key=lambda m: (["primary", "secondary", "guardrail"].index(m.role), m.key, m.pk),
    )

    # Variants in the phase's allocation order with the weights in force.
    allocation = selectors.phase_allocation(phase=phase) if phase is not None else []
    weights = {key: float(weight) for key, weight in allocation}
    ordered_keys = [key for key, _ in allocation if key in variants_by_key]
    ordered_keys += sorted(set(variants_by_key) - set(ordered_keys), key=lambda k: variants_by_key[k].position)
    variants = tuple(
        VariantInfo(
            key=key,
            name=variants_by_key[key].name,
            is_control=variants_by_key[key].is_control,
            weight=weights.get(key, float(variants_by_key[key].weight) if phase is None else 0.0),
        )
        for key in ordered_keys
    )
    key_of = {v.pk: v.key for v in variants_by_key.values()}

    caveats: list[Reason] = []
    if phase is None:
        caveats.append(Reason("not_started", "The experiment has not started: there is no data yet."))
        days_elapsed = 0.0
        counts = aggregation.PhaseCounts(0, tuple(m.pk for m in metrics), None, (), (), ())
    else:
        end = phase.ended_at or now
        # At least one day, so a few hours of traffic are not extrapolated into a day.
        days_elapsed = max((end - phase.started_at).total_seconds() / 86400.0, 1.0)
        primary_id = next((m.pk for m in metrics if m.role == Metric.Role.PRIMARY), None)
        counts = aggregation.phase_counts(
            phase_id=phase.pk,
            metric_ids=[m.pk for m in metrics],
            daily_metric_id=primary_id,
            daily=timeseries,
            as_of=now if exclude_open_windows else None,
        )
        caveats.extend(_inconsistency_caveats(counts.inconsistencies, metrics, variants_by_key))

    overall_customers = sum(v.customers for v in counts.overall if v.variant_id in key_of)
    plan = _plan_info(experiment, phase, overall_customers=overall_customers, now=now)
    if phase is not None and not plan.recorded:
        caveats.append(
            Reason(
                "no_plan_recorded",
                "This phase started before analysis plans were recorded; the experiment's current settings are "
                "used as its plan.",
            )
        )
    if plan.recorded:
        now_metrics = (
            next((m.key for m in metrics if m.role == Metric.Role.PRIMARY), ""),
            sorted(m.key for m in metrics if m.role == Metric.Role.SECONDARY),
            sorted(m.key for m in metrics if m.role == Metric.Role.GUARDRAIL),
        )
        planned = (plan.primary_metric, sorted(plan.secondary_metrics), sorted(g.metric for g in plan.guardrails))
        if now_metrics != planned:
            caveats.append(
                Reason(
                    "metrics_differ_from_plan",
                    f"The experiment's metrics changed after its analysis plan was recorded (plan: primary "
                    f"{planned[0] or 'none'}, secondary {', '.join(planned[1]) or 'none'}, guardrails "
                    f"{', '.join(planned[2]) or 'none'}): verdicts on metrics outside the plan were not "
                    "pre-registered. Start a new phase to analyse the new metrics.",
                )
            )
    exploratory_adjustment = adjustment or plan.correction
    if plan.inference_mode == "fixed" and not plan.horizon_reached and phase is not None:
        caveats.append(
            Reason(
                "before_planned_horizon",
                f"Fixed-horizon test: verdicts are withheld until the planned horizon ({plan.horizon_message}).",
            )
        )
    ctx = _Context(
        variants=variants,
        adjustment=exploratory_adjustment,
        mde=plan.minimum_detectable_effect,
        days_elapsed=days_elapsed,
        running=experiment.status == Experiment.Status.RUNNING,
        alpha=plan.alpha,
        mode=plan.inference_mode,
        planned_total=_planned_total(plan, overall_customers, phase, now),
        overall_customers=overall_customers,
        horizon_reached=plan.horizon_reached,
        horizon_message=plan.horizon_message,
        fixed_audience=plan.fixed_audience,
    )
    if ctx.control is None:
        caveats.append(Reason("no_control", "The experiment has no control variant, so nothing can be compared."))
    if not any(m.role == Metric.Role.PRIMARY for m in metrics):
        caveats.append(Reason("no_primary_metric", "The experiment has no primary metric."))

    labels = aggregation.layer_labels(dimension_keys=sorted({layer.dimension for layer in counts.layers}))

    def cells_of(variant_counts: Sequence[aggregation.VariantCounts], metric_index: int) -> dict[str, _Cell]:
        found = {key_of.get(v.variant_id): v for v in variant_counts}
        return {
            key: _Cell(found[key].counted_for(metric_index), found[key].conversions[metric_index])
            if key in found
            else _Cell(0, 0)
            for key in ctx.keys
        }

    def traffic_of(variant_counts: Sequence[aggregation.VariantCounts]) -> dict[str, int]:
        found = {key_of.get(v.variant_id): v.customers for v in variant_counts}
        return {key: found.get(key, 0) for key in ctx.keys}

    experiment_srm = _srm_status(ctx.keys, list(traffic_of(counts.overall).values()), [v.weight for v in variants])
    if experiment_srm.flagged:
        caveats.append(Reason("srm", experiment_srm.message + " Every verdict below carries this caveat."))

    # Layers per dimension, in the configured layer order (unknown keys after, "no layer" last).
    by_dimension: dict[str, list[aggregation.LayerCounts]] = {}
    for layer_counts in counts.layers:
        by_dimension.setdefault(layer_counts.dimension, []).append(layer_counts)
    for dimension, layer_list in by_dimension.items():
        order = {key: i for i, (key, _) in enumerate(labels[dimension].layers)}
        layer_list.sort(key=lambda lc: (lc.layer is None, order.get(lc.layer or "", len(order)), lc.layer or ""))

    n_treatments = len(ctx.treatments)
    confirmatory_dimensions = [d for d in plan.confirmatory_dimensions if d in by_dimension]
    confirmatory_rows = 1 + sum(len(by_dimension[d]) for d in confirmatory_dimensions)
    confirmatory_size = max(n_treatments * confirmatory_rows, 1)
    dimension_words = (
        " + the layers of " + ", ".join(labels[d].name for d in confirmatory_dimensions)
        if confirmatory_dimensions
        else ""
    )
    confirmatory_scope = (
        f"Confirmatory (the declared decision family): primary metric {plan.primary_metric or '(none)'} x "
        f"{n_treatments} treatment variant(s) x (all customers{dimension_words}); "
        f"{ADJUSTMENTS[plan.correction].split(' (')[0]} at α = {plan.alpha:g}."
    )
    guardrail_metrics = [m for m in metrics if m.role == Metric.Role.GUARDRAIL]
    guardrail_size = max(n_treatments * len(guardrail_metrics), 1)
    margins = {g.metric: g.margin for g in plan.guardrails}

    # Pass 1: raw rows (comparisons, no adjusted p-values yet) per metric.
    raw: list[dict] = []
    for index, metric in enumerate(metrics):
        kind = kind_of(metric)
        values: value_moments.ValueCells | None = None
        # Conversion metrics with a lookback get CUPED too (the pre-period conversion).
        conversion_cuped = not kind.is_value and int(metric.cuped_lookback_days) > 0
        # A conversion row's CUPED reads only the pre-period values the refresh stored: computing
        # them from the events at report time would cost a pass over every exposed customer's
        # events (11x the report at 200,000 customers, bench/report.py) for a variance reduction;
        # without them the row is the plain pooled test, with the reason.
        cuped_missing = (
            CUPED_NOT_STORED
            if conversion_cuped
            and not value_moments.values_stored(
                metric=metric,
                reporting_currency=experiment.reporting_currency,
                currency_rates=experiment.currency_rates,
            )
            else None
        )
        if (kind.is_value or (conversion_cuped and cuped_missing is None)) and phase is not None:
            values = value_moments.value_cells(
                phase=phase,
                metric=metric,
                as_of=now if exclude_open_windows else None,
                reporting_currency=experiment.reporting_currency,
                currency_rates=experiment.currency_rates,
                customers=counts.cell_counts(index),
            )
        info = MetricInfo(
            event_type=metric.key,
            name=_metric_name(metric),
            role=metric.role,
            window_hours=metric.window_hours,
            direction="higher_is_worse" if metric.role == Metric.Role.GUARDRAIL else "higher_is_better",
            open_window_customers=counts.open_window(index),
            kind=metric.kind,
            unit=kind.unit(metric),
            currency=values.currency if values else None,
            cap=float(values.cap) if values and values.cap is not None else None,
            cuped_lookback_days=int(metric.cuped_lookback_days) if kind.is_value or conversion_cuped else 0,
            undefined=dict(values.undefined) if values else {},
            **_values_source(metric, values),
        )
        if values is not None and values.undefined:
            caveats.append(
                Reason(values.undefined["moments"].code, f"{info.event_type}: {values.undefined['moments'].message}")
            )

        def row_moments(
            layer_key: tuple[str, str | None] | None, values: value_moments.ValueCells | None = values
        ) -> dict[str, stats.Moments] | None:
            if values is None or values.undefined:
                return None
            by_id = values.overall if layer_key is None else values.layers.get(layer_key, {})
            return {key_of[v]: m for v, m in by_id.items() if v in key_of}

        def conversion_of(
            layer_key: tuple[str, str | None] | None,
            metric: Metric = metric,
            on: bool = conversion_cuped,
            missing: Reason | None = cuped_missing,
        ) -> tuple[dict[str, stats.Moments] | None, int, Reason | None] | None:
            if not on or phase is None:
                return None
            return (row_moments(layer_key), int(metric.cuped_lookback_days), missing)

        def row_cells(
            variant_counts: Sequence[aggregation.VariantCounts],
            layer_key: tuple[str, str | None] | None,
            index: int = index,
            metric: Metric = metric,
            values: value_moments.ValueCells | None = values,
        ) -> tuple[dict[str, _Cell], _ValueRow | None]:
            base = cells_of(variant_counts, index)
            if not kind_of(metric).is_value:
                return base, None
            moments = row_moments(layer_key) or {}
            unavailable = None if values is not None else Reason("not_started", "No data yet.")
            if values is not None and values.undefined:
                unavailable = values.undefined["moments"]
            cells, cuped_view = _value_cells(
                ctx,
                moments,
                base,
                metric=metric,
                k=len(kind_of(metric).variables(metric)),
                cuped_on=bool(values and values.cuped),
                unavailable=unavailable,
            )
            return cells, _ValueRow(kind_of(metric).distribution, cuped_view)

        if info.open_window_customers:
            caveats.append(_open_window_caveat(info, counts.customers))
        is_primary = metric.role == Metric.Role.PRIMARY
        overall_words = (
            "the confirmatory family"
            if is_primary
            else ("the guardrail family" if metric.role == Metric.Role.GUARDRAIL else "its exploratory family")
        )
        overall_size = (
            confirmatory_size
            if is_primary
            else (guardrail_size if metric.role == Metric.Role.GUARDRAIL else max(n_treatments, 1))
        )
        overall_cells, overall_value = row_cells(counts.overall, None)
        overall_raw = _row(
            ctx,
            dimension=None,
            layer=None,
            label="All customers",
            cells=overall_cells,
            traffic=traffic_of(counts.overall),
            family_size=overall_size,
            family_words=f"{overall_words} of {overall_size}",
            value=overall_value,
            conversion_cuped=conversion_of(None),
        )
        dims = []
        for dimension, layer_list in by_dimension.items():
            names = dict(labels[dimension].layers)
            confirmatory = is_primary and dimension in confirmatory_dimensions
            size = confirmatory_size if confirmatory else max(len(layer_list) * n_treatments, 1)
            words = "the confirmatory family" if confirmatory else "its exploratory family"
            rows = []
            for lc in layer_list:
                layer_cells, layer_value = row_cells(lc.variants, (dimension, lc.layer))
                rows.append(
                    _row(
                        ctx,
                        dimension=dimension,
                        layer=lc.layer,
                        label=NO_LAYER_LABEL if lc.layer is None else names.get(lc.layer, lc.layer),
                        cells=layer_cells,
                        traffic=traffic_of(lc.variants),
                        family_size=size,
                        family_words=f"{words} of {size}",
                        value=layer_value,
                        conversion_cuped=conversion_of((dimension, lc.layer)),
                    )
                )
            dims.append((dimension, layer_list, confirmatory, rows))
        raw.append({"metric": metric, "info": info, "index": index, "overall": overall_raw, "dims": dims})

    # Pass 2: families. The confirmatory family and the guardrail family span rows of
    # several dimensions / metrics and are adjusted together.
    primary = next((r for r in raw if r["metric"].role == Metric.Role.PRIMARY), None)
    confirmatory_rows_raw: list[_Raw] = []
    if primary is not None:
        confirmatory_rows_raw.append(primary["overall"])
        for _, _, confirmatory, rows in primary["dims"]:
            if confirmatory:
                confirmatory_rows_raw.extend(rows)
    [confirmatory_adjusted] = _adjust_families([(confirmatory_rows_raw, plan.correction, None)])
    confirmatory_family = Family(
        scope=confirmatory_scope,
        method=plan.correction,
        size=sum(p is not None for p in confirmatory_adjusted),
        kind="confirmatory",
        alpha=plan.alpha,
    )
    adjusted_by_row: dict[int, list[float | None]] = {}
    position = iter(confirmatory_adjusted)
    for row_raw in confirmatory_rows_raw:
        adjusted_by_row[id(row_raw)] = [next(position) for _ in ctx.treatments]

    guardrail_raw = [r for r in raw if r["metric"].role == Metric.Role.GUARDRAIL]
    harm_by_metric = {
        id(r): _harm_tests(ctx, [r["overall"]], margins.get(r["info"].event_type, 0.0)) for r in guardrail_raw
    }
    harm_p = [h.p_value for r in guardrail_raw for tests in harm_by_metric[id(r)] for h in tests]
    guardrail_adjusted = iter(stats.adjust(harm_p, method=plan.correction))
    for r in guardrail_raw:
        adjusted_by_row[id(r["overall"])] = [next(guardrail_adjusted) for _ in ctx.treatments]
    guardrail_family = Family(
        scope=(
            f"Guardrail harm tests: {len(guardrail_raw)} guardrail metric(s) x {n_treatments} treatment variant(s), "
            f"all customers; one-sided, beyond each metric's non-inferiority margin; "
            f"{ADJUSTMENTS[plan.correction].split(' (')[0]} at α = {plan.alpha:g}."
        ),
        method=plan.correction,
        size=sum(p is not None for p in harm_p),
        kind="guardrail",
        alpha=plan.alpha,
    )

    metric_reports = []
    for r in raw:
        metric, info, index = r["metric"], r["info"], r["index"]
        role_words = f"{info.event_type} ({info.role} metric)"
        is_primary = metric.role == Metric.Role.PRIMARY
        is_guardrail = metric.role == Metric.Role.GUARDRAIL
        if is_primary:
            overall_family = confirmatory_family
        elif is_guardrail:
            overall_family = guardrail_family
        else:
            [adjusted] = _adjust_families([([r["overall"]], exploratory_adjustment, None)])
            adjusted_by_row[id(r["overall"])] = adjusted
            overall_family = Family(
                scope=f"Exploratory: the {n_treatments} treatment variant(s) against the control, all customers, "
                f"{role_words}.",
                method=exploratory_adjustment,
                size=sum(p is not None for p in adjusted),
                kind="exploratory",
                alpha=plan.alpha,
            )
        (overall,) = _finish_rows(
            ctx,
            [r["overall"]],
            metric=info,
            experiment_srm=experiment_srm,
            adjusted_p_values=adjusted_by_row[id(r["overall"])],
            family=overall_family,
            harm=harm_by_metric.get(id(r)),
        )
        dimensions = []
        heterogeneity_views = []
        for dimension, layer_list, confirmatory, rows_raw in r["dims"]:
            dimension_labels = labels[dimension]
            if confirmatory:
                family = confirmatory_family
                adjusted_flat = [p for row_raw in rows_raw for p in adjusted_by_row[id(row_raw)]]
            else:
                [adjusted_flat] = _adjust_families([(rows_raw, exploratory_adjustment, None)])
                family = Family(
                    scope=(
                        f"Exploratory: the {len(rows_raw)} layers of {dimension_labels.name} x {n_treatments} "
                        f"treatment variant(s), {role_words}."
                    ),
                    method=exploratory_adjustment,
                    size=sum(p is not None for p in adjusted_flat),
                    kind="exploratory",
                    alpha=plan.alpha,
                )
            rows = _finish_rows(
                ctx,
                rows_raw,
                metric=info,
                experiment_srm=experiment_srm,
                adjusted_p_values=adjusted_flat,
                family=family,
            )
            if kind_of(metric).is_value:
                heterogeneity_views.append(_value_heterogeneity(ctx, rows_raw, no_layer_key="(none)"))
            else:
                heterogeneity_views.append(
                    _heterogeneity(
                        ctx, {lc.layer: cells_of(lc.variants, index) for lc in layer_list}, no_layer_key="(none)"
                    )
                )
            dimensions.append([dimension, dimension_labels.name, family, None, tuple(rows), confirmatory])
        # Heterogeneity: one test per dimension, Holm across the dimensions tested.
        het_adjusted = stats.adjust([h.p_value for h in heterogeneity_views], method="holm")
        for entry, view, adjusted_p in zip(dimensions, heterogeneity_views, het_adjusted, strict=True):
            entry[3] = _heterogeneity_adjusted(view, adjusted_p, len(heterogeneity_views))
        dimension_results = tuple(DimensionResult(*entry) for entry in dimensions)
        harms = tuple(
            f"{info.event_type}: variant {lift.variant}, "
            + (row.label if row.dimension is None else f"{labels[row.dimension].name} = {row.label}")
            for row in [overall] + [row for d in dimension_results for row in d.layers]
            for lift in row.lifts
            if lift.verdict.harm
        )
        if harms and is_guardrail:
            caveats.append(
                Reason(
                    "guardrail_harm",
                    f"Guardrail {info.event_type} got significantly worse beyond its margin ({'; '.join(harms)}).",
                )
            )
        metric_reports.append(MetricReport(info, overall, overall_family, dimension_results, harms))

    return Report(
        experiment=ExperimentInfo(
            key=experiment.key,
            name=experiment.name,
            status=experiment.status,
            hypothesis=experiment.hypothesis,
            minimum_detectable_effect=plan.minimum_detectable_effect,
            started_at=experiment.started_at,
            stopped_at=experiment.stopped_at,
            managed_by=experiment.managed_by,
        ),
        phase=(
            PhaseInfo(phase.number, phase.started_at, phase.ended_at, round(days_elapsed, 4))
            if phase is not None
            else None
        ),
        plan=plan,
        confirmatory_family=confirmatory_family,
        settings=Settings(
            alpha=plan.alpha,
            comparison_method="sequential" if plan.inference_mode == "sequential" else COMPARISON_METHOD,
            adjustment=exploratory_adjustment,
            adjustment_name=ADJUSTMENTS[exploratory_adjustment],
            min_customers_per_arm=MIN_CUSTOMERS_PER_ARM,
            power=POWER,
            inference_mode=plan.inference_mode,
            exclude_open_windows=exclude_open_windows,
        ),
        variants=variants,
        srm=experiment_srm,
        caveats=tuple(caveats),
        metrics=tuple(metric_reports),
        timeseries=_timeseries(ctx, counts, key_of),
        generated_at=now,
        undefined=(
            {}
            if timeseries
            else {
                "timeseries": Reason(
                    "not_requested", "The conversion-over-time series is left out unless asked for (timeseries=true)."
                )
            }
        ),
    )
