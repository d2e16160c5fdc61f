"""Admin pages of the lift report (growth and marketer users: ``experiments.view_report``).

- ``reports:index``            experiments with links to their reports (paginated);
- ``reports:experiment``       the report: tables, forest plots, conversion over time, SRM banner;
- ``reports:experiment-csv`` / ``reports:experiment-json``   the exports;
- ``reports:planner``          the power planner.

Pages extend the admin's ``base_site.html`` with ``admin.site.each_context`` so they look
and navigate like the admin; every view is wrapped in ``admin.site.admin_view`` (staff
login, else the admin login page) and refuses users without the permission (403).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import wraps
from typing import Any

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.safestring import SafeString

from config.replica import replica_reads
from experiments.models import Experiment
from experiments.reports import baseline as value_baselines
from experiments.reports import charts, planner, present
from experiments.reports.api import BOOLEANS
from experiments.reports.assemble import ADJUSTMENTS, ALPHA, NOT_A_VALUE, POWER, ExperimentNotFound, report_build
from experiments.reports.exports import report_csv, report_filename, report_json
from experiments.reports.results import DimensionResult, MetricReport, Report, RowResult
from segments import selectors as segment_selectors

PERMISSION = "experiments.view_report"
# Notes that repeat on many rows are shortened in the tables (the full text is in
# "How to read this report", the CSV and the JSON).
SHORT_NOTES = {
    "underpowered": "Fewer customers than the plan needs: 'inconclusive' is expected for now.",
}
PAGE_SIZE = 50


def report_view(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Staff login (admin login page otherwise) and ``experiments.view_report`` (403)."""

    @wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.has_perm(PERMISSION):
            raise PermissionDenied("You need the 'Can view lift reports' permission.")
        with replica_reads():  # reading work: the replica when fresh (config/replica.py)
            return view(request, *args, **kwargs)

    return admin.site.admin_view(guarded)


def _context(request: HttpRequest, title: str, **extra: Any) -> dict[str, Any]:
    return {**admin.site.each_context(request), "title": title, **extra}


def _adjustment(request: HttpRequest) -> str | None:
    """The exploratory families' correction; None: the plan's (the confirmatory family
    always uses the plan's)."""
    value = request.GET.get("adjustment")
    return value if value in ADJUSTMENTS else None


def _exclude_open_windows(request: HttpRequest) -> bool | None:
    """``?exclude_open_windows=false`` counts customers whose window is still open (default: the setting)."""
    value = request.GET.get("exclude_open_windows")
    return BOOLEANS.get(value.lower()) if value is not None else None


def _report_or_404(
    key: str, adjustment: str | None, timeseries: bool = False, exclude_open_windows: bool | None = None
) -> Report:
    try:
        return report_build(
            experiment_key=key,
            adjustment=adjustment,
            timeseries=timeseries,
            exclude_open_windows=exclude_open_windows,
        )
    except ExperimentNotFound:
        raise Http404(f"No experiment with key '{key}'.") from None


# --------------------------------------------------------------------------------------
# View models: the report's numbers as words
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    """One variant in one row of a table."""

    variant: str
    is_control: bool
    customers: str
    conversions: str
    rate: present.Shown
    absolute: present.Shown | None = None
    absolute_ci: present.Shown | None = None
    relative: present.Shown | None = None
    relative_ci: present.Shown | None = None
    p_value: present.Shown | None = None
    adjusted_p: present.Shown | None = None
    verdict: str = ""
    verdict_message: str = ""
    verdict_css: str = ""
    harm: bool = False
    caveats: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class RowView:
    label: str
    customers: str
    lines: tuple[Line, ...]
    srm_flagged: bool
    srm_message: str
    srm_p: present.Shown
    power_message: str
    power_progress: present.Shown
    power_reached: bool


@dataclass(frozen=True)
class DimensionView:
    key: str
    name: str
    family: str
    family_size: int
    heterogeneity: str
    heterogeneity_p: present.Shown
    differs: bool | None
    rows: tuple[RowView, ...]
    forest: SafeString
    family_method: str = ""  # the family's own correction, in words (the plan's for the confirmatory one)
    family_kind: str = "exploratory"


@dataclass(frozen=True)
class MetricView:
    event_type: str
    name: str
    role: str
    direction: str
    window_hours: int
    overall: RowView
    overall_family: str
    dimensions: tuple[DimensionView, ...]
    harms: tuple[str, ...] = field(default_factory=tuple)
    overall_family_method: str = ""
    overall_family_kind: str = "exploratory"
    values_source: str | None = None
    values_source_message: str = ""

    @property
    def overall_rows(self) -> tuple[RowView, ...]:
        return (self.overall,)


def _row_view(row: RowResult) -> RowView:
    lifts = {lift.variant: lift for lift in row.lifts}
    # Value metrics (issue 15): the "rate" column shows the value per customer (or the
    # ratio) and lifts are in the metric's units, not percentage points.
    # Conversion rows may carry CUPED too (issue 15) but stay rates in points.
    conversion = any(arm.undefined.get("value") == NOT_A_VALUE for arm in row.arms)
    is_value = not conversion and (row.cuped is not None or any(arm.value is not None for arm in row.arms))
    cuped_note = ()
    if row.cuped is not None and row.cuped.applied and row.cuped.variance_reduction is not None:
        cuped_note = (
            f"CUPED ({row.cuped.lookback_days}-day lookback) removed {row.cuped.variance_reduction:.0%} of the "
            f"variance (theta {row.cuped.theta:.3g}).",
        )
    elif row.cuped is not None and "theta" in row.cuped.undefined:
        cuped_note = (row.cuped.undefined["theta"].message,)

    def first_column(arm):  # type: ignore[no-untyped-def]
        return present.amount(arm.value, arm.undefined, "value") if is_value else present.rate(arm.rate, arm.undefined)

    lines = []
    for arm in row.arms:
        lift = lifts.get(arm.variant)
        if lift is None:
            lines.append(
                Line(
                    arm.variant,
                    arm.is_control,
                    f"{arm.customers:,}",
                    f"{arm.conversions:,}",
                    first_column(arm),
                )
            )
            continue
        u = lift.undefined
        lines.append(
            Line(
                variant=arm.variant,
                is_control=arm.is_control,
                customers=f"{arm.customers:,}",
                conversions=f"{arm.conversions:,}",
                rate=first_column(arm),
                absolute=present.amount(lift.absolute_lift, u, "absolute_lift", signed=True)
                if is_value
                else present.points(lift.absolute_lift, u, "absolute_lift"),
                absolute_ci=present.interval_amount(lift.absolute_lift_ci, u, "absolute_lift_ci")
                if is_value
                else present.interval_points(lift.absolute_lift_ci, u, "absolute_lift_ci"),
                relative=present.pct(lift.relative_lift, u, "relative_lift"),
                relative_ci=present.interval_pct(lift.relative_lift_ci, u, "relative_lift_ci"),
                p_value=present.p_value(lift.p_value, u, "p_value"),
                adjusted_p=present.p_value(lift.adjusted_p_value, u, "adjusted_p_value"),
                verdict=lift.verdict.label,
                verdict_message=lift.verdict.message,
                verdict_css=present.verdict_css(lift.verdict.label),
                harm=lift.verdict.harm,
                caveats=tuple(c.message for c in lift.verdict.caveats),
                notes=tuple(SHORT_NOTES.get(n.code, n.message) for n in lift.notes) + cuped_note,
            )
        )
    return RowView(
        label=row.label,
        customers=f"{row.customers:,}",
        lines=tuple(lines),
        srm_flagged=row.srm.flagged,
        srm_message=row.srm.message,
        srm_p=present.p_value(row.srm.p_value, row.srm.undefined, "p_value"),
        power_message=row.power.message,
        power_progress=present.shown(row.power.progress, row.power.undefined, "progress", "{:.0%}"),
        power_reached=row.power.reached,
    )


def _forest(metric: MetricReport, dimension: DimensionResult, several_treatments: bool) -> SafeString:
    rows = []
    for row in [metric.overall, *dimension.layers]:
        for lift in row.lifts:
            why = lift.undefined.get("relative_lift") or lift.undefined.get("relative_lift_ci")
            rows.append(
                charts.ForestRow(
                    label=row.label + (f" · {lift.variant}" if several_treatments else ""),
                    estimate=lift.relative_lift,
                    low=lift.relative_lift_ci.low if lift.relative_lift_ci else None,
                    high=lift.relative_lift_ci.high if lift.relative_lift_ci else None,
                    verdict=lift.verdict.label,
                    why_undefined=why.message if why else "",
                )
            )
    return charts.forest_svg(rows, title=f"Relative lift by {dimension.name}, {metric.metric.event_type}")


def _metric_view(report: Report, metric: MetricReport) -> MetricView:
    several = sum(not v.is_control for v in report.variants) > 1
    dimensions = tuple(
        DimensionView(
            key=d.key,
            name=d.name,
            family=d.family.scope,
            family_size=d.family.size,
            heterogeneity=d.heterogeneity.message,
            heterogeneity_p=present.p_value(d.heterogeneity.p_value, d.heterogeneity.undefined, "p_value"),
            differs=d.heterogeneity.differs,
            rows=tuple(_row_view(row) for row in d.layers),
            forest=_forest(metric, d, several),
            family_method=ADJUSTMENTS[d.family.method],
            family_kind=d.family.kind,
        )
        for d in metric.dimensions
    )
    info = metric.metric
    return MetricView(
        event_type=info.event_type,
        name=info.name,
        role=info.role,
        direction="higher is better" if info.direction == "higher_is_better" else "higher is worse (guardrail)",
        window_hours=info.window_hours,
        overall=_row_view(metric.overall),
        overall_family=metric.overall_family.scope,
        dimensions=dimensions,
        harms=metric.harms,
        overall_family_method=ADJUSTMENTS[metric.overall_family.method],
        overall_family_kind=metric.overall_family.kind,
        values_source=info.values_source,
        values_source_message=info.values_source_message,
    )


def _timeseries_chart(report: Report) -> dict[str, Any]:
    days = sorted({p.day for p in report.timeseries})
    datasets = []
    for variant in report.variants:
        points = {p.day: p for p in report.timeseries if p.variant == variant.key}
        datasets.append(
            {
                "label": variant.name + (" (control)" if variant.is_control else ""),
                "data": [
                    round(points[d].cumulative_rate * 100, 4)
                    if d in points and points[d].cumulative_rate is not None
                    else None
                    for d in days
                ],
                "exposed": [points[d].cumulative_exposed if d in points else 0 for d in days],
            }
        )
    return {"labels": [d.isoformat() for d in days], "datasets": datasets}


# --------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------


@report_view
def index(request: HttpRequest) -> HttpResponse:
    experiments = Experiment.objects.order_by("-created_at", "key").only("key", "name", "status", "started_at")
    page = Paginator(experiments, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "experiments/reports/index.html", _context(request, "Lift reports", page=page))


@report_view
def experiment_report(request: HttpRequest, key: str) -> HttpResponse:
    report = _report_or_404(key, _adjustment(request), exclude_open_windows=_exclude_open_windows(request))
    adjustment = report.settings.adjustment
    windows = f"&exclude_open_windows={'true' if report.settings.exclude_open_windows else 'false'}"
    primary = report.primary
    context = _context(
        request,
        f"Lift report: {report.experiment.name}",
        report=report,
        adjustment=adjustment,
        adjustments=ADJUSTMENTS,
        primary=_metric_view(report, primary) if primary else None,
        others=[_metric_view(report, m) for m in (*report.secondary, *report.guardrails)],
        timeseries_url=reverse("reports:experiment-timeseries", args=[key]),
        srm_banner=report.srm.flagged,
        srm_pairs=list(zip(report.srm.variants, report.srm.observed, report.srm.expected, strict=True)),
        mde_percent=f"{report.experiment.minimum_detectable_effect:+.1%}",
        other_caveats=[c for c in report.caveats if c.code != "srm"],
        csv_url=reverse("reports:experiment-csv", args=[key]) + f"?adjustment={adjustment}{windows}",
        json_url=reverse("reports:experiment-json", args=[key]) + f"?adjustment={adjustment}{windows}",
        planner_url=reverse("reports:planner") + f"?experiment={key}",
        owner_url=owner_url(report.experiment.managed_by),
    )
    return render(request, "experiments/reports/report.html", context)


def owner_url(managed_by: str) -> str:
    """The page of the application that owns an experiment's audience ("" if none or unknown).
    Only the owner's label is known here (``campaign:<id>``); the page is named, not imported,
    so the engine does not depend on campaigns."""
    prefix, _, ident = managed_by.partition(":")
    if prefix != "campaign" or not ident.isdigit():
        return ""
    try:
        return reverse("monitor:campaign", args=[int(ident)])
    except NoReverseMatch:
        return ""


@report_view
def experiment_timeseries(request: HttpRequest, key: str) -> HttpResponse:
    """The chart data of the report page (fetched after the tables have rendered)."""
    try:
        report = report_build(experiment_key=key, timeseries=True)
    except ExperimentNotFound:
        raise Http404(f"No experiment with key '{key}'.") from None
    return HttpResponse(json.dumps(_timeseries_chart(report), allow_nan=False), content_type="application/json")


@report_view
def experiment_report_csv(request: HttpRequest, key: str) -> HttpResponse:
    report = _report_or_404(key, _adjustment(request), exclude_open_windows=_exclude_open_windows(request))
    response = HttpResponse(report_csv(report), content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{report_filename(report, "csv")}"'
    return response


@report_view
def experiment_report_json(request: HttpRequest, key: str) -> HttpResponse:
    timeseries = BOOLEANS.get(request.GET.get("timeseries", "false").lower(), False)
    report = _report_or_404(key, _adjustment(request), timeseries, _exclude_open_windows(request))
    response = HttpResponse(report_json(report, indent=2), content_type="application/json")
    response["Content-Disposition"] = f'attachment; filename="{report_filename(report, "json")}"'
    return response


# --- Power planner ----------------------------------------------------------------------------


OVERALL = "overall"
MAX_CUPED_REDUCTION = 0.95  # the form's own maximum for a typed reduction
METRIC_KINDS: dict[str, str] = {
    "conversion": "Conversion rate",
    "mean": "Mean per customer (revenue, orders)",
    "ratio": "Ratio (e.g. average order value)",
}


class PlannerForm(forms.Form):
    experiment = forms.SlugField(
        required=False, help_text="Optional: an experiment key, to use its layers, observed rates, traffic and weights."
    )
    segment = forms.ChoiceField(required=False, choices=[(OVERALL, "All customers")])
    baseline = forms.DecimalField(
        required=False,
        min_value=Decimal("0.001"),
        max_value=Decimal("99.999"),
        decimal_places=3,
        label="Baseline conversion rate (%)",
        help_text="The control's conversion rate. Empty: the selected segment's observed control rate.",
    )
    mde = forms.DecimalField(
        required=False,
        min_value=Decimal("-99.9"),
        max_value=Decimal("1000"),
        decimal_places=2,
        label="Minimum detectable lift (%)",
        help_text="The smallest relative lift worth detecting, e.g. 10 for +10%. Empty: the experiment's setting.",
    )
    daily_traffic = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        decimal_places=1,
        label="Customers per day",
        help_text="Customers entering the experiment per day, all variants together. Empty: the observed traffic.",
    )
    power = forms.TypedChoiceField(
        choices=[("0.8", "80%"), ("0.9", "90%")],
        initial="0.8",
        coerce=float,
        required=False,
        empty_value=POWER,
        label="Power",
        help_text="The chance of detecting the lift if it is real.",
    )

    mode = forms.ChoiceField(
        choices=[("fixed", "Fixed horizon"), ("sequential", "Always valid (sequential)")],
        required=False,
        initial="fixed",
        label="Inference mode",
        help_text="Sequential verdicts may be read at every look and need more customers (as in the analysis plan).",
    )
    metric_kind = forms.ChoiceField(
        choices=[(key, words) for key, words in METRIC_KINDS.items()],
        required=False,
        initial="conversion",
        label="Metric kind",
        help_text="A conversion rate, a mean per customer (revenue, orders) or a ratio (e.g. average order value).",
    )
    mean_baseline = forms.DecimalField(
        required=False,
        max_digits=16,
        decimal_places=4,
        label="Baseline mean per customer",
        help_text="Mean metrics: the control's mean, e.g. 42.50 (revenue per customer).",
    )
    mean_sd = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_digits=16,
        decimal_places=4,
        label="Standard deviation per customer",
        help_text="Mean metrics: how much the value varies between customers.",
    )
    ratio_numerator_mean = forms.DecimalField(
        required=False,
        max_digits=16,
        decimal_places=4,
        label="Ratio: numerator mean per customer",
        help_text="Ratio metrics: e.g. revenue per customer (for average order value).",
    )
    ratio_numerator_sd = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_digits=16,
        decimal_places=4,
        label="Ratio: numerator SD",
    )
    ratio_denominator_mean = forms.DecimalField(
        required=False,
        min_value=Decimal("0.0001"),
        max_digits=16,
        decimal_places=4,
        label="Ratio: denominator mean per customer",
        help_text="e.g. orders per customer.",
    )
    ratio_denominator_sd = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_digits=16,
        decimal_places=4,
        label="Ratio: denominator SD",
    )
    ratio_correlation = forms.DecimalField(
        required=False,
        min_value=Decimal(-1),
        max_value=Decimal(1),
        decimal_places=4,
        label="Ratio: correlation of numerator and denominator",
        help_text="Between -1 and 1; empty: 0.",
    )
    cuped_reduction = forms.DecimalField(
        required=False,
        min_value=Decimal(0),
        max_value=Decimal(95),
        decimal_places=1,
        label="Expected CUPED variance reduction (%)",
        help_text="Value metrics: the share of variance CUPED removes. Empty: estimated from the data when you "
        "ask for an estimate, else 0.",
    )
    estimate_event_type = forms.SlugField(
        required=False,
        label="Estimate from events: event type",
        help_text="Value metrics: an event type code (e.g. order) to estimate the baseline, SD and CUPED's "
        "reduction from the last N days instead of typing them.",
    )
    estimate_measure = forms.ChoiceField(
        choices=[("", "---------"), *value_baselines.MEASURES.items()], required=False, label="Estimate: measure"
    )
    estimate_days = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=365,
        label="Estimate: last N days",
        help_text="The metric over the last N days; CUPED's covariate: the N days before.",
    )

    def clean_mde(self) -> Decimal | None:
        value = self.cleaned_data.get("mde")
        if value is not None and value == 0:
            raise forms.ValidationError("A lift of 0% can never be detected; enter a non-zero lift.")
        return value

    def clean(self) -> dict[str, Any]:
        """Value metrics need their moments: typed, or estimated from the events (the
        measure must fit the kind: a mean is a sum or a count, a ratio is a ratio)."""
        data = super().clean()
        kind = data.get("metric_kind") or "conversion"
        data["metric_kind"] = kind
        if kind == "conversion":
            return data
        estimating = data.get("estimate_days") is not None or bool(data.get("estimate_event_type"))
        if estimating:
            for name in ("estimate_event_type", "estimate_measure", "estimate_days"):
                if not data.get(name) and name not in self.errors:
                    self.add_error(name, "Required to estimate from the events.")
            measure = data.get("estimate_measure")
            if measure and (measure == "ratio") != (kind == "ratio"):
                self.add_error(
                    "estimate_measure",
                    "A ratio metric is estimated as 'amount per event'; a mean metric as amount or events "
                    "per customer.",
                )
            code = data.get("estimate_event_type")
            if code and segment_selectors.event_type_get(code=code) is None:
                self.add_error("estimate_event_type", f"No event type with code '{code}'.")
            return data
        required = (
            ("mean_baseline", "mean_sd")
            if kind == "mean"
            else ("ratio_numerator_mean", "ratio_numerator_sd", "ratio_denominator_mean", "ratio_denominator_sd")
        )
        for name in required:
            if data.get(name) is None and name not in self.errors:
                self.add_error(name, f"Required for a {kind} metric (or estimate it from the last N days).")
        if kind == "mean" and data.get("mean_baseline") == 0:
            self.add_error("mean_baseline", "A baseline of 0 has no relative lift; enter a non-zero mean.")
        if kind == "ratio" and data.get("ratio_numerator_mean") == 0:
            self.add_error("ratio_numerator_mean", "A ratio of 0 has no relative lift; enter a non-zero mean.")
        return data


@dataclass(frozen=True)
class PlanLine:
    label: str
    baseline: present.Shown
    daily_traffic: present.Shown
    required: tuple[tuple[str, str], ...] | None
    total: present.Shown
    days_from_zero: present.Shown
    days_remaining: present.Shown
    value: ValueInputs | None = None


@dataclass(frozen=True)
class ValueInputs:
    """A mean or ratio metric's plan inputs: baseline, per-customer SD, CUPED's reduction,
    and where they came from (typed, or estimated from the last N days of events)."""

    baseline: float | None
    variance: float | None
    reduction: float
    source: str
    why: str = ""

    @property
    def sd(self) -> present.Shown:
        if self.variance is None:
            return present.Shown("not defined", self.why)
        return present.Shown(f"{self.variance**0.5:,.4g}")

    @property
    def reduction_shown(self) -> present.Shown:
        return present.Shown(f"{self.reduction:.1%}")


def _value_inputs(data: dict[str, Any], now: Any) -> ValueInputs:
    """Mean: sd^2. Ratio R = m_x / m_y, delta method: (s_x^2 - 2 R r s_x s_y + R^2 s_y^2) / m_y^2
    (Deng, Knoblich & Lu 2018; ``experiments.stats.moments``). Or estimated in SQL
    (``reports.baseline``). A typed CUPED reduction wins over the estimated one."""
    typed = float(data["cuped_reduction"]) / 100 if data.get("cuped_reduction") is not None else None
    if data.get("estimate_days"):
        found = value_baselines.value_baseline(
            event_type=data["estimate_event_type"],
            measure=data["estimate_measure"],
            days=data["estimate_days"],
            now=now,
        )
        why = next(iter(found.undefined.values())).message if found.undefined else ""
        reduction = typed if typed is not None else (found.variance_reduction or 0.0)
        reduction_words = (
            "typed" if typed is not None else ("estimated" if found.variance_reduction is not None else "none: " + why)
        )
        if reduction > MAX_CUPED_REDUCTION:
            # A near-perfect pre/post correlation over a short history is not a promise.
            reduction_words += f" at {reduction:.1%}, capped at {MAX_CUPED_REDUCTION:.0%}"
        source = (
            f"Estimated from the last {found.days} days of {found.event_type} events over {found.customers:,} "
            f"customers ({value_baselines.MEASURES[found.measure]}"
            + (f", {found.currency}" if found.currency else "")
            + f"); CUPED reduction {reduction_words}, covariate: the {found.days} days before."
        )
        if found.baseline is None:
            source = f"Could not estimate from the last {found.days} days of {found.event_type} events: {why}"
        return ValueInputs(found.baseline, found.variance, min(reduction, MAX_CUPED_REDUCTION), source, why)
    reduction = typed or 0.0
    if data["metric_kind"] == "mean":
        mean, sd = float(data["mean_baseline"]), float(data["mean_sd"])
        return ValueInputs(mean, sd * sd, reduction, "Typed: mean and standard deviation per customer.")
    mx, sx = float(data["ratio_numerator_mean"]), float(data["ratio_numerator_sd"])
    my, sy = float(data["ratio_denominator_mean"]), float(data["ratio_denominator_sd"])
    r = float(data["ratio_correlation"]) if data.get("ratio_correlation") is not None else 0.0
    ratio = mx / my
    variance = max((sx * sx - 2 * ratio * r * sx * sy + ratio * ratio * sy * sy) / (my * my), 0.0)
    return ValueInputs(ratio, variance, reduction, "Typed: ratio moments (delta method).")


def _plan_line(
    *,
    label: str,
    baseline: float | None,
    mde: float,
    arms: Sequence[planner.Arm],
    daily_traffic: float | None,
    power: float,
    customers_so_far: dict[str, int] | None,
    baseline_why: str = "",
    sequential: bool = False,
    value: ValueInputs | None = None,
) -> PlanLine:
    """Conversions (``value`` None) or a value metric (its variance and CUPED reduction)."""
    shown = (lambda b: present.Shown(f"{b:,.4g}")) if value is not None else (lambda b: present.Shown(f"{b:.2%}"))
    if value is not None and value.variance is None:
        baseline, baseline_why = None, value.why
    if baseline is None:
        missing = present.Shown("not defined", baseline_why or "The baseline rate is unknown.")
        return PlanLine(label, missing, _traffic(daily_traffic), None, missing, missing, missing, value)
    need = planner.requirement(
        baseline_rate=baseline,
        relative_mde=mde,
        arms=arms,
        alpha=ALPHA,
        power=power,
        sequential=sequential,
        variance=value.variance if value is not None else None,
        variance_reduction=value.reduction if value is not None else 0.0,
    )
    if need.required_per_arm is None:
        why = need.undefined["required_per_arm"].message
        missing = present.Shown("not defined", why)
        return PlanLine(label, shown(baseline), _traffic(daily_traffic), None, missing, missing, missing, value)

    def days(so_far: dict[str, int] | None) -> present.Shown:
        if daily_traffic is None:
            return present.Shown("not defined", "Enter the customers per day (or choose an experiment).")
        value, why = planner.days_to_reach(
            required_per_arm=need.required_per_arm or {},
            arms=arms,
            daily_traffic=daily_traffic,
            customers_so_far=so_far,
        )
        return (
            present.Shown(f"{value:,}")
            if value is not None
            else present.Shown("not defined", why.message if why else "")
        )

    return PlanLine(
        value=value,
        label=label,
        baseline=shown(baseline),
        daily_traffic=_traffic(daily_traffic),
        required=tuple((key, f"{n:,}") for key, n in need.required_per_arm.items()),
        total=present.Shown(f"{need.total:,}"),
        days_from_zero=days(None),
        days_remaining=days(customers_so_far) if customers_so_far is not None else present.Shown("—"),
    )


def _traffic(value: float | None) -> present.Shown:
    if value is None:
        return present.Shown("not defined", "Enter the customers per day (or choose an experiment).")
    return present.Shown(f"{value:,.1f}")


@report_view
def power_planner(request: HttpRequest) -> HttpResponse:
    form = PlannerForm(request.GET or None)
    report: Report | None = None
    rows: dict[str, RowResult] = {}
    labels: dict[str, str] = {OVERALL: "All customers"}
    experiment_key = request.GET.get("experiment", "").strip()
    if experiment_key:
        try:
            report = report_build(experiment_key=experiment_key)
        except ExperimentNotFound:
            report = None
    if report is not None and report.primary is not None:
        rows[OVERALL] = report.primary.overall
        for dimension in report.primary.dimensions:
            for row in dimension.layers:
                rows[f"{dimension.key}:{row.layer or ''}"] = row
                labels[f"{dimension.key}:{row.layer or ''}"] = f"{dimension.name}: {row.label}"
        form.fields["segment"].choices = [
            (OVERALL, "All customers"),
            *[
                (f"{d.key}:{row.layer or ''}", f"{d.name}: {row.label}")
                for d in report.primary.dimensions
                for row in d.layers
            ],
        ]
    result: PlanLine | None = None
    table: list[PlanLine] = []
    if form.is_bound and form.is_valid():
        data = form.cleaned_data
        if experiment_key and report is None:
            form.add_error("experiment", f"No experiment with key '{experiment_key}'.")
        else:
            if report is not None:
                arms = [planner.Arm(v.key, v.weight, v.is_control) for v in report.variants]
                default_mde = report.experiment.minimum_detectable_effect
            else:
                arms = [planner.Arm("control", 0.5, True), planner.Arm("treatment", 0.5, False)]
                default_mde = 0.10
            mde = float(data["mde"]) / 100 if data["mde"] is not None else default_mde
            power = data["power"]
            sequential = data.get("mode") == "sequential"
            row = rows.get(data.get("segment") or OVERALL)
            value = _value_inputs(data, timezone.now()) if data["metric_kind"] != "conversion" else None
            # A value primary metric's observed "baseline" is its mean, not a rate: a conversion
            # plan cannot use it (and its variance is not on the report's power row).
            primary_is_rate = report is None or report.primary is None or report.primary.metric.kind == "conversion"
            observed_baseline = row.power.baseline_rate if row and primary_is_rate else None
            baseline = float(data["baseline"]) / 100 if data["baseline"] is not None else observed_baseline
            if value is not None:
                baseline = value.baseline
            traffic = (
                float(data["daily_traffic"])
                if data["daily_traffic"] is not None
                else (row.power.daily_traffic if row else None)
            )
            why = (
                row.power.undefined.get("baseline_rate").message
                if row and row.power.undefined.get("baseline_rate")
                else ""
            )
            if not primary_is_rate:
                why = (
                    "The experiment's primary metric is a value metric, not a conversion rate: choose its kind "
                    "and enter (or estimate) its mean and standard deviation."
                )
            result = _plan_line(
                label=labels.get(data.get("segment") or OVERALL, row.label) if row else "Your numbers",
                baseline=baseline,
                mde=mde,
                arms=arms,
                daily_traffic=traffic,
                power=power,
                customers_so_far=row.power.customers_per_arm if row else None,
                baseline_why=why or "Enter the baseline conversion rate (or choose an experiment with data).",
                sequential=sequential,
                value=value,
            )
            # The layers' observed baselines are conversion rates (or the primary metric's
            # values without their variance): the table is for conversion plans.
            if report is not None and report.primary is not None and value is None and primary_is_rate:
                for key, each in rows.items():
                    reason = each.power.undefined.get("baseline_rate")
                    table.append(
                        _plan_line(
                            label=labels[key],
                            baseline=each.power.baseline_rate,
                            mde=mde,
                            arms=arms,
                            daily_traffic=each.power.daily_traffic,
                            power=power,
                            customers_so_far=each.power.customers_per_arm,
                            baseline_why=reason.message if reason else "",
                            sequential=sequential,
                        )
                    )
    context = _context(
        request,
        "Power planner",
        form=form,
        report=report,
        result=result,
        table=table,
        alpha=ALPHA,
        default_power=POWER,
        mode_words=(
            "Always valid (sequential)"
            if form.is_bound and form.is_valid() and form.cleaned_data.get("mode") == "sequential"
            else "Fixed horizon"
        ),
        report_url=reverse("reports:experiment", args=[experiment_key]) if report is not None else None,
    )
    return render(request, "experiments/reports/planner.html", context)
