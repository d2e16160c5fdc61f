"""CSV and JSON exports of a report (the API returns the same JSON).

CSV: one line per metric x row (overall, then each layer of each dimension) x treatment
variant, the control's numbers beside the treatment's. Numbers are written in full
precision (``repr``); an undefined number is the words ``undefined: <reason>``, never
``nan`` or ``inf``. Text cells that a spreadsheet would run as a formula (starting with
``=``, ``+``, ``-``, ``@``, a tab or a carriage return; OWASP "CSV injection") are
prefixed with a single quote. Numbers are never text, so a negative lift stays a number.
``open_window_customers_left_out``: the row's exposed customers left out of the metric's
counts because their window is still open (0 when open windows are not excluded).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Mapping
from typing import Any

from experiments.reports.results import Family, LiftResult, MetricReport, Report, RowResult
from experiments.stats import Interval, Reason

__all__ = ["CSV_COLUMNS", "csv_cell", "report_csv", "report_filename", "report_json"]

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")

CSV_COLUMNS = (
    "experiment",
    "phase",
    "metric",
    "metric_role",
    "direction",
    "dimension",
    "layer",
    "control",
    "control_customers",
    "control_conversions",
    "control_rate",
    "variant",
    "variant_customers",
    "variant_conversions",
    "variant_rate",
    "absolute_lift",
    "absolute_lift_ci_low",
    "absolute_lift_ci_high",
    "relative_lift",
    "relative_lift_ci_low",
    "relative_lift_ci_high",
    "z",
    "p_value",
    "adjusted_p_value",
    "adjustment",
    "family",
    "verdict",
    "harm",
    "verdict_message",
    "caveats",
    "notes",
    "srm_p_value",
    "srm_flagged",
    "power_progress",
    "power_days_remaining",
    "heterogeneity_p_value",
    "family_kind",
    "inference_mode",
    "alpha",
    "power_alpha",
    "detectable_lift",
    "open_window_customers_left_out",
    # Value metrics (issue 15); conversion metrics say "not applicable".
    "metric_kind",
    "metric_unit",
    "currency",
    "cap",
    "control_value",
    "variant_value",
    "control_unadjusted_value",
    "variant_unadjusted_value",
    "cuped_theta",
    "cuped_variance_reduction",
    "values_source",
)


def csv_cell(value: Any) -> str | int | float:
    """A safe CSV cell: numbers as numbers, text with formula prefixes neutralised."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        return value  # finite by construction of the report
    text = "" if value is None else str(value)
    if text.startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def _undefined(undefined: Mapping[str, Reason], name: str) -> str:
    reason = undefined.get(name)
    return f"undefined: {reason.message}" if reason else "undefined"


def _number(value: float | None, undefined: Mapping[str, Reason], name: str) -> float | str:
    return value if value is not None else _undefined(undefined, name)


def _interval(ci: Interval | None, undefined: Mapping[str, Reason], name: str) -> tuple[float | str, float | str]:
    if ci is None:
        text = _undefined(undefined, name)
        return text, text
    return ci.low, ci.high


def _reasons(reasons: tuple[Reason, ...]) -> str:
    return " | ".join(r.message for r in reasons)


def _lines(metric: MetricReport) -> Iterator[tuple[RowResult, LiftResult, Family, Any]]:
    for lift in metric.overall.lifts:
        yield metric.overall, lift, metric.overall_family, None
    for dimension in metric.dimensions:
        het = dimension.heterogeneity
        het_p = het.p_value if het.p_value is not None else _undefined(het.undefined, "p_value")
        for row in dimension.layers:
            for lift in row.lifts:
                yield row, lift, dimension.family, het_p


def report_csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    phase = report.phase.number if report.phase else "not started"
    for metric in report.metrics:
        info = metric.metric
        for row, lift, family, het_p in _lines(metric):
            arms = {arm.variant: arm for arm in row.arms}
            control = next(arm for arm in row.arms if arm.is_control)
            treatment = arms[lift.variant]
            abs_low, abs_high = _interval(lift.absolute_lift_ci, lift.undefined, "absolute_lift_ci")
            rel_low, rel_high = _interval(lift.relative_lift_ci, lift.undefined, "relative_lift_ci")
            values = (
                report.experiment.key,
                phase,
                info.event_type,
                info.role,
                info.direction,
                row.dimension or "(all customers)",
                row.label if row.dimension is not None else "All customers",
                control.variant,
                control.customers,
                control.conversions,
                _number(control.rate, control.undefined, "rate"),
                treatment.variant,
                treatment.customers,
                treatment.conversions,
                _number(treatment.rate, treatment.undefined, "rate"),
                _number(lift.absolute_lift, lift.undefined, "absolute_lift"),
                abs_low,
                abs_high,
                _number(lift.relative_lift, lift.undefined, "relative_lift"),
                rel_low,
                rel_high,
                _number(lift.z, lift.undefined, "z"),
                _number(lift.p_value, lift.undefined, "p_value"),
                _number(lift.adjusted_p_value, lift.undefined, "adjusted_p_value"),
                family.method,
                family.scope,
                lift.verdict.label,
                lift.verdict.harm,
                lift.verdict.message,
                _reasons(lift.verdict.caveats),
                _reasons(lift.notes),
                _number(row.srm.p_value, row.srm.undefined, "p_value"),
                row.srm.flagged,
                _number(row.power.progress, row.power.undefined, "progress"),
                _number(row.power.days_remaining, row.power.undefined, "days_remaining"),
                "not applicable: tested per dimension" if het_p is None else het_p,
                lift.family_kind,
                report.plan.inference_mode,
                report.plan.alpha,
                row.power.alpha,
                _number(row.power.detectable_lift, row.power.undefined, "detectable_lift")
                if report.plan.fixed_audience
                else "not applicable: the audience is not fixed",
                # The row's exposed customers not in the arms' counts: their window is still open.
                row.customers - sum(arm.customers for arm in row.arms),
                *_value_columns(info, row, control, treatment),
            )
            writer.writerow([csv_cell(v) for v in values])
    return out.getvalue()


def _value_columns(info: Any, row: RowResult, control: Any, treatment: Any) -> tuple[Any, ...]:
    cuped = row.cuped
    if cuped is None or not cuped.applied:
        why = "not applicable: CUPED off" if cuped is None else _undefined(cuped.undefined, "theta")
        theta = reduction = why
    else:
        theta = _number(cuped.theta, cuped.undefined, "theta")
        reduction = _number(cuped.variance_reduction, cuped.undefined, "variance_reduction")
    if info.kind == "conversion":  # a rate, no value; CUPED may apply (issue 15)
        na = "not applicable: conversion metric"
        return (info.kind, info.unit, na, na, na, na, na, na, theta, reduction, info.values_source_message or na)
    return (
        info.kind,
        info.unit,
        info.currency or "not applicable: no money",
        info.cap if info.cap is not None else "no capping",
        _number(control.value, control.undefined, "value"),
        _number(treatment.value, treatment.undefined, "value"),
        _number(control.unadjusted_value, control.undefined, "unadjusted_value"),
        _number(treatment.unadjusted_value, treatment.undefined, "unadjusted_value"),
        theta,
        reduction,
        info.values_source_message or _undefined(info.undefined, "moments"),
    )


def report_json(report: Report, *, indent: int | None = None) -> str:
    """The report as JSON; refuses NaN and infinity (there are none by construction)."""
    return json.dumps(report.to_dict(), allow_nan=False, indent=indent)


def report_filename(report: Report, extension: str) -> str:
    phase = f"phase{report.phase.number}" if report.phase else "not-started"
    return f"{report.experiment.key}-report-{phase}-{report.settings.adjustment}.{extension}"
