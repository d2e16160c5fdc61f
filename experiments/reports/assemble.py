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
from experiments.models import Experiment, Metric, Phase, Variant
from experiments.reports import aggregation, planner
from experiments.reports.results import (
    ArmResult,
    DailyPoint,
    DimensionResult,
    Direction,
    ExperimentInfo,
    Family,
    HeterogeneityView,
    LiftResult,
    MetricInfo,
    MetricReport,
    PhaseInfo,
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
COMPARISON_METHOD = "wald"
MIN_CUSTOMERS_PER_ARM = 100
POWER = 0.8
ADJUSTMENTS: dict[str, str] = {
    "holm": "Holm (keeps the chance of any false 'significant' in the family at or below 5%)",
    "bh": "Benjamini-Hochberg (keeps the expected share of false 'significant' results at or below 5%)",
}
NO_LAYER_LABEL = "Not in any layer when assigned"
HEADLINE_HETEROGENEITY_ALPHA = 0.05


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
    verdict: stats.Verdict, absolute_lift: float | None, adjusted_p: float | None, direction: Direction, metric: str
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
            f"(adjusted p = {adjusted_p:.3g} < {ALPHA:g})."
        )
    return VerdictResult(label, verdict.reason, message, harm=not good)


@dataclass(frozen=True, slots=True)
class _Cell:
    """Counts of one variant in one row for one metric."""

    customers: int
    conversions: int


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
    ) -> None:
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


def _power(ctx: _Context, cells: Mapping[str, _Cell], daily_traffic: float) -> PowerResult:
    """Customers needed per arm for the MDE at the control's observed rate
    (``planner.requirement``: per treatment, ``stats.sample_size`` with the arms in the
    ratio of their weights); progress = min over arms of customers / required; days
    remaining at the row's daily traffic split by weight (``planner.days_to_reach``)."""
    customers = {key: cells[key].customers for key in ctx.keys}
    undefined: dict[str, Reason] = {}

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
        )

    if ctx.control is None:
        return undefined_all(Reason("no_control", "The experiment has no control variant."), None)
    control = cells[ctx.control.key]
    if control.customers == 0:
        return undefined_all(Reason("no_traffic", "The control arm has no customers yet."), None)
    baseline = control.conversions / control.customers
    need = planner.requirement(baseline_rate=baseline, relative_mde=ctx.mde, arms=ctx.arms, alpha=ALPHA, power=POWER)
    if need.required_per_arm is None:
        return undefined_all(need.undefined["required_per_arm"], baseline)
    required = need.required_per_arm
    progress = min(customers[key] / n for key, n in required.items())
    reached = progress >= 1.0
    days: int | None = None
    if reached:
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
    if reached:
        message = (
            f"Enough customers to detect a {mde} with {POWER:.0%} power (needed {max(required.values()):,} per arm)."
        )
    else:
        behind = min(required, key=lambda key: customers[key] / required[key])
        message = (
            f"{progress:.0%} of the way: variant {behind} has {customers[behind]:,} of the "
            f"{required[behind]:,} customers it needs to detect a {mde} with {POWER:.0%} power"
        )
        message += f"; about {days:,} more days at current traffic." if days is not None else "."
    return PowerResult(
        baseline, ctx.mde, dict(required), customers, progress, reached, daily_traffic, days, message, undefined
    )


def _row(
    ctx: _Context,
    *,
    dimension: str | None,
    layer: str | None,
    label: str,
    cells: Mapping[str, _Cell],
    traffic: Mapping[str, int],
) -> tuple[RowResult, list[stats.Comparison]]:
    """A row without adjusted p-values (filled in once the family is known)."""
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
            ),
        )
        for v in ctx.display
    )
    comparisons = []
    if ctx.control is not None:
        control = stats.Arm(cells[ctx.control.key].customers, cells[ctx.control.key].conversions)
        for t in ctx.treatments:
            treatment = stats.Arm(cells[t.key].customers, cells[t.key].conversions)
            comparisons.append(stats.compare(control, treatment, alpha=ALPHA, method=COMPARISON_METHOD))
    customers = sum(traffic.values())
    daily_traffic = customers / ctx.days_elapsed if ctx.days_elapsed > 0 else 0.0
    row = RowResult(
        dimension=dimension,
        layer=layer,
        label=label,
        customers=customers,
        arms=arms,
        lifts=(),
        srm=_srm_status(ctx.keys, [traffic[k] for k in ctx.keys], [v.weight for v in ctx.variants]),
        power=_power(ctx, cells, daily_traffic),
    )
    return row, comparisons


def _finish_rows(
    ctx: _Context,
    rows: Sequence[tuple[RowResult, list[stats.Comparison]]],
    *,
    metric: MetricInfo,
    experiment_srm: SrmStatus,
) -> tuple[RowResult, ...]:
    """Adjust the family's p-values together and attach lifts with verdicts and notes."""
    p_values = [c.p_value for _, comparisons in rows for c in comparisons]
    adjusted = iter(stats.adjust(p_values, method=ctx.adjustment))
    family_size = sum(p is not None for p in p_values)
    finished = []
    for row, comparisons in rows:
        lifts = []
        for treatment, comparison in zip(ctx.treatments, comparisons, strict=True):
            adjusted_p = next(adjusted)
            base = stats.verdict(comparison, adjusted_p, alpha=ALPHA, min_n_per_arm=MIN_CUSTOMERS_PER_ARM)
            verdict = _directed_verdict(base, comparison.absolute_lift, adjusted_p, metric.direction, metric.name)
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
            undefined = dict(comparison.undefined)
            if adjusted_p is None:
                undefined["adjusted_p_value"] = comparison.undefined.get("p_value") or Reason(
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
                    p_value=comparison.p_value,
                    adjusted_p_value=adjusted_p,
                    verdict=verdict,
                    notes=tuple(_notes(comparison, adjusted_p, verdict, row.power, family_size)),
                    undefined=undefined,
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
) -> list[Reason]:
    notes = []
    ci = comparison.absolute_lift_ci
    if verdict.label == stats.INCONCLUSIVE and ci is not None and (ci.low > 0 or ci.high < 0):
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
    result = stats.heterogeneity(stats_cells, ctx.control.key)
    undefined = dict(result.undefined)
    differs = None
    if result.p_value is None:
        undefined["differs"] = undefined.get("p_value") or Reason("test_undefined", "The test is not available.")
    else:
        differs = result.p_value < HEADLINE_HETEROGENEITY_ALPHA
    return HeterogeneityView(
        result.statistic, result.df, result.p_value, differs, result.message, result.notes, undefined
    )


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


def exclude_open_windows_default() -> bool:
    """``GROWTH["REPORT_EXCLUDE_OPEN_WINDOWS"]`` (on unless configured off)."""
    return bool(settings.GROWTH.get("REPORT_EXCLUDE_OPEN_WINDOWS", True))


def report_build(
    *,
    experiment_key: str,
    adjustment: str = "holm",
    timeseries: bool = False,
    now: dt.datetime | None = None,
    exclude_open_windows: bool | None = None,
) -> Report:
    """The lift report of the experiment's current phase. Raises ``ExperimentNotFound``;
    ``ValueError`` naming ``adjustment`` for an unknown adjustment method.

    ``timeseries=True`` adds the conversion-over-time series: one more pass over the
    phase's assignments (grouped by day), which at 10M assignments costs as much as the
    whole report (see ``aggregation``), so it is asked for separately (the admin page
    loads its chart after the tables).

    ``exclude_open_windows`` (default ``exclude_open_windows_default()``, on): each metric
    counts only customers whose window has closed at ``now`` (see ``aggregation``); the
    number left out is ``MetricInfo.open_window_customers`` and a caveat."""
    if exclude_open_windows is None:
        exclude_open_windows = exclude_open_windows_default()
    if adjustment not in ADJUSTMENTS:
        raise ValueError(f"adjustment: choose one of {', '.join(ADJUSTMENTS)}, got {adjustment!r}")
    experiment = selectors.experiment_get(key=experiment_key)
    if experiment is None:
        raise ExperimentNotFound(experiment_key)
    now = now or timezone.now()
    phase: Phase | None = selectors.experiment_current_phase(experiment=experiment)
    variants_by_key = {v.key: v for v in Variant.objects.filter(experiment=experiment)}
    metrics = sorted(
        Metric.objects.filter(experiment=experiment).select_related("event_type"),
        key=lambda m: (["primary", "secondary", "guardrail"].index(m.role), m.event_type.code, m.pk),
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
    ctx = _Context(
        variants=variants,
        adjustment=adjustment,
        mde=float(experiment.minimum_detectable_effect),
        days_elapsed=days_elapsed,
        running=experiment.status == Experiment.Status.RUNNING,
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

    metric_reports = []
    n_treatments = len(ctx.treatments)
    for index, metric in enumerate(metrics):
        info = MetricInfo(
            event_type=metric.event_type.code,
            name=metric.event_type.name,
            role=metric.role,
            window_hours=metric.window_hours,
            direction="higher_is_worse" if metric.role == Metric.Role.GUARDRAIL else "higher_is_better",
            open_window_customers=counts.open_window(index),
        )
        if info.open_window_customers:
            caveats.append(_open_window_caveat(info, counts.customers))
        role_words = f"{info.event_type} ({info.role} metric)"
        overall_raw = _row(
            ctx,
            dimension=None,
            layer=None,
            label="All customers",
            cells=cells_of(counts.overall, index),
            traffic=traffic_of(counts.overall),
        )
        (overall,) = _finish_rows(ctx, [overall_raw], metric=info, experiment_srm=experiment_srm)
        overall_family = Family(
            scope=f"The {n_treatments} treatment variant(s) against the control, all customers, {role_words}.",
            method=adjustment,
            size=sum(lift.p_value is not None for lift in overall.lifts),
        )
        dimensions = []
        for dimension, layer_list in by_dimension.items():
            dimension_labels = labels[dimension]
            names = dict(dimension_labels.layers)
            raw = [
                _row(
                    ctx,
                    dimension=dimension,
                    layer=lc.layer,
                    label=NO_LAYER_LABEL if lc.layer is None else names.get(lc.layer, lc.layer),
                    cells=cells_of(lc.variants, index),
                    traffic=traffic_of(lc.variants),
                )
                for lc in layer_list
            ]
            rows = _finish_rows(ctx, raw, metric=info, experiment_srm=experiment_srm)
            family = Family(
                scope=(
                    f"The {len(rows)} layers of {dimension_labels.name} x {n_treatments} treatment variant(s), "
                    f"{role_words}."
                ),
                method=adjustment,
                size=sum(lift.p_value is not None for row in rows for lift in row.lifts),
            )
            heterogeneity = _heterogeneity(
                ctx,
                {lc.layer: cells_of(lc.variants, index) for lc in layer_list},
                no_layer_key="(none)",
            )
            dimensions.append(DimensionResult(dimension, dimension_labels.name, family, heterogeneity, tuple(rows)))
        harms = tuple(
            f"{info.event_type}: variant {lift.variant}, "
            + (row.label if row.dimension is None else f"{labels[row.dimension].name} = {row.label}")
            for row in [overall] + [r for d in dimensions for r in d.layers]
            for lift in row.lifts
            if lift.verdict.harm
        )
        if harms and metric.role == Metric.Role.GUARDRAIL:
            caveats.append(
                Reason(
                    "guardrail_harm",
                    f"Guardrail {info.event_type} got significantly worse ({'; '.join(harms)}).",
                )
            )
        metric_reports.append(MetricReport(info, overall, overall_family, tuple(dimensions), harms))

    return Report(
        experiment=ExperimentInfo(
            key=experiment.key,
            name=experiment.name,
            status=experiment.status,
            hypothesis=experiment.hypothesis,
            minimum_detectable_effect=float(experiment.minimum_detectable_effect),
            started_at=experiment.started_at,
            stopped_at=experiment.stopped_at,
        ),
        phase=(
            PhaseInfo(phase.number, phase.started_at, phase.ended_at, round(days_elapsed, 4))
            if phase is not None
            else None
        ),
        settings=Settings(
            alpha=ALPHA,
            comparison_method=COMPARISON_METHOD,
            adjustment=adjustment,
            adjustment_name=ADJUSTMENTS[adjustment],
            min_customers_per_arm=MIN_CUSTOMERS_PER_ARM,
            power=POWER,
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
