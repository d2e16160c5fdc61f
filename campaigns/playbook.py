"""The tier playbook: which campaign's offer worked for which layer, read off the lift reports.

For each dimension, a matrix of its layers (rows) x the campaigns that are running, paused or
finished and split their audience with an experiment (columns). A cell is the campaign's
experiment's primary metric in that layer, from ``experiments.reports.assemble.report_build``
(aggregation in the database, statistics in ``experiments.stats``); nothing here reads the
experiments tables. One report per distinct experiment per call (two campaigns sharing an
experiment share its report).

What a cell says (``Cell.outcome``), from the report's verdicts, which use the adjusted
p-value. Only the report's *confirmatory* family decides (issue 14): the experiment's
primary metric x treatment variants x (overall + the layers of the dimensions its analysis
plan declared confirmatory), adjusted together with the plan's correction. A dimension
the plan did not declare is exploratory: its cells never show a winner.

* ``win``: at least one treatment variant is a confirmatory "significant win"; the one with the largest
  absolute lift is shown, with its relative lift and 95% interval and the incremental
  conversions per 1,000 customers (below);
* ``loss``: no win, and some variant is a "significant loss": a warning, never a winner;
  a loss beside a win is listed in the win's ``losses``;
* ``exploratory``: a "significant" result in an exploratory family (a dimension the plan
  did not declare confirmatory): a lead to test in a new experiment, never a winner;
* ``not_yet_evaluable``: a fixed-horizon experiment before its planned horizon;
* ``not_enough_data``: every comparison's verdict is "not enough data" (an arm under the
  report's minimum customers, or a test that cannot be computed);
* ``no_evidence``: otherwise (inconclusive: the difference could be chance);
* ``no_customers``: the experiment had no customers of this layer when they were assigned;
* ``no_report``: the experiment has no primary metric (or disappeared);
* ``no_reach``: the campaign itself decided nobody into its experiment's current phase
  (no treated or control recipient among the phase's assignments): whatever the
  experiment's report says, it is not this campaign's result (measured: a finished
  campaign that reached 0 customers showed "Winner +195.8 per 1,000", read off an
  experiment other clients had filled). A campaign whose new version opened a new phase
  that nobody has entered yet shows so too (its earlier phases' customers are not the
  current configuration's), and so does a campaign whose experiment another campaign owns.

Each column is the campaign's own analysis: the report of its experiment's current phase
(the phase its current version runs in), whose customers are exactly the ones the
campaign decided (an experiment a campaign owns is assigned by nobody else, see
``experiments.services.ownership``); ``Column.reached`` counts them.

Incremental revenue per 1,000 customers (issue 15) = the absolute lift of the experiment's
revenue metric (a ``sum`` metric: the primary if it is one, else the first secondary) in the
same row x 1,000; the offer's cost per 1,000 = the coupon's face value (amount-off offers)
x the variant's ``coupon_redeemed`` rate in that row x 1,000; net = revenue - cost: whether
the offer pays for itself in the tier. A percent-off or points offer has no face value in
money: its cost is undefined (with the reason), never guessed.

Incremental conversions per 1,000 customers = absolute lift x 1,000
= (treatment rate - control rate) x 1,000: how many more of 1,000 customers of the layer
convert with the variant than with the control. Its interval is the report's 95% interval
of the absolute lift x 1,000 (the score interval of the pooled test in a fixed-horizon
plan, the confidence sequence in an always-valid one); like every interval in the report
it is not adjusted for multiplicity (the verdict is).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

from django.db.models import Case, Count, IntegerField, QuerySet, Value, When
from django.utils import timezone

from campaigns.models import Campaign, Recipient, Treatment
from campaigns.services.assignments import manager_tag
from experiments.reports.aggregation import layer_labels
from experiments.reports.assemble import ALPHA, NO_LAYER_LABEL, NOT_YET_EVALUABLE, ExperimentNotFound, report_build
from experiments.reports.exports import csv_cell
from experiments.reports.results import LiftResult, MetricReport, Report, RowResult
from experiments.stats import NOT_ENOUGH_DATA, SIGNIFICANT_LOSS, SIGNIFICANT_WIN, Interval

__all__ = [
    "ADJUSTMENT",
    "CSV_COLUMNS",
    "OVERALL_DIMENSION",
    "PLAYBOOK_STATUSES",
    "Cell",
    "Column",
    "Matrix",
    "MatrixRow",
    "Playbook",
    "VariantLift",
    "playbook_build",
    "playbook_campaigns_queryset",
    "playbook_csv",
    "playbook_unmeasured_queryset",
]

# The playbook always reads Holm-adjusted verdicts (the report's default).
ADJUSTMENT = "holm"
PLAYBOOK_STATUSES = (Campaign.Status.RUNNING, Campaign.Status.PAUSED, Campaign.Status.FINISHED)
OVERALL_DIMENSION = "(all customers)"
PER = 1000
NO_REACH = (
    "This campaign reached nobody: no customer was decided into its experiment (treated or control). "
    "Check its audience (segments computed? layers right?) and its launch."
)
NO_REACH_IN_PHASE = (
    "This campaign reached nobody in its experiment's current phase {phase} yet (its version {version}); "
    "its {earlier} treated or control decision(s) of earlier phases belong to earlier versions "
    "and are not counted here."
)
FOREIGN_EXPERIMENT = (
    "Experiment '{key}' is run by {owner}, not by this campaign: its report is not this campaign's result."
)

Outcome = Literal[
    "win",
    "loss",
    "exploratory",
    "not_yet_evaluable",
    "not_enough_data",
    "no_evidence",
    "no_customers",
    "no_report",
    "no_reach",
]


def playbook_campaigns_queryset() -> QuerySet[Campaign]:
    """Campaigns the playbook shows: running, paused or finished, split by an experiment;
    running first, then paused, then finished, newest start first."""
    return (
        Campaign.objects.filter(status__in=PLAYBOOK_STATUSES, experiment__isnull=False)
        .select_related("experiment", "split_dimension")
        .annotate(
            _status_order=Case(
                *(When(status=s, then=Value(i)) for i, s in enumerate(PLAYBOOK_STATUSES)),
                output_field=IntegerField(),
            )
        )
        .order_by("_status_order", "-started_at", "key")
    )


def playbook_unmeasured_queryset() -> QuerySet[Campaign]:
    """Running, paused or finished campaigns without an experiment: everyone was treated,
    so there is no control to measure them against."""
    return Campaign.objects.filter(status__in=PLAYBOOK_STATUSES, experiment__isnull=True).order_by("key")


# --------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VariantLift:
    """One treatment variant against the control in one layer (primary metric)."""

    variant: str
    variant_name: str
    offer: str  # the offer(s) this variant gave in this layer, in words ("" if none)
    verdict: str
    message: str
    customers: int  # this variant's customers in the layer
    control_customers: int
    relative_lift: float | None
    relative_lift_ci: Interval | None
    absolute_lift: float | None
    absolute_lift_ci: Interval | None
    adjusted_p_value: float | None
    # Incremental value (issue 15), from the experiment's revenue metric (a ``sum`` metric,
    # the primary if it is one, else the first secondary) in the same row: revenue per
    # 1,000 customers = its absolute lift x 1,000; the offer's cost per 1,000 = the coupon's
    # face value x redemptions per customer in this variant (its ``coupon_redeemed`` rate)
    # x 1,000; net = revenue - cost. ``None`` with the reason in ``value_undefined``.
    revenue_metric: str = ""
    currency: str = ""
    revenue_per_1000: float | None = None
    revenue_per_1000_ci: Interval | None = None
    offer_cost_per_1000: float | None = None
    net_revenue_per_1000: float | None = None
    value_undefined: tuple[tuple[str, str], ...] = ()

    @property
    def per_1000(self) -> float | None:
        """Incremental revenue per 1,000 customers (issue 15) = the absolute lift of the experiment's
        revenue metric (a ``sum`` metric: the primary if it is one, else the first secondary) in the
        same row x 1,000; the offer's cost per 1,000 = the coupon's face value (amount-off offers)
        x the variant's ``coupon_redeemed`` rate in that row x 1,000; net = revenue - cost: whether
        the offer pays for itself in the tier. A percent-off or points offer has no face value in
        money: its cost is undefined (with the reason), never guessed.

        Incremental conversions per 1,000 customers = absolute lift x 1,000."""
        return None if self.absolute_lift is None else self.absolute_lift * PER

    @property
    def per_1000_ci(self) -> Interval | None:
        ci = self.absolute_lift_ci
        return None if ci is None else Interval(ci.low * PER, ci.high * PER)


@dataclass(frozen=True, slots=True)
class Cell:
    outcome: Outcome
    customers: int
    best: VariantLift | None = None  # the winner (win) or the worst loss (loss)
    losses: tuple[VariantLift, ...] = ()  # every significant loss (a warning, also beside a win)
    lifts: tuple[VariantLift, ...] = ()  # every treatment variant, for the record
    explanation: str = ""
    caveats: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Column:
    """One campaign (and its experiment's report)."""

    campaign_key: str
    campaign_name: str
    campaign_pk: int
    kind: str
    kind_label: str
    status: str
    status_label: str
    experiment_key: str
    experiment_name: str
    experiment_status: str
    metric: str  # primary metric event type code ("" when there is none)
    metric_name: str
    metric_window_hours: int | None
    phase_number: int | None
    days_elapsed: float | None
    customers: int
    srm_flagged: bool
    warnings: tuple[str, ...]  # SRM, guardrail harm, no primary metric, ...
    reached: int | None = None  # customers the campaign decided into its experiment (treated or control)
    # The analysis plan in words: mode and the declared decision family (issue 14).
    decision_rule: str = ""


@dataclass(frozen=True, slots=True)
class MatrixRow:
    layer: str | None  # None: customers in no layer of the dimension when assigned
    label: str
    cells: tuple[Cell, ...]  # one per column, in the columns' order

    @property
    def wins(self) -> int:
        return sum(c.outcome == "win" for c in self.cells)


@dataclass(frozen=True, slots=True)
class Matrix:
    dimension: str
    name: str
    rows: tuple[MatrixRow, ...]


@dataclass(frozen=True, slots=True)
class Playbook:
    columns: tuple[Column, ...]
    overall: Matrix  # one row: all customers (family: the treatment variants)
    dimensions: tuple[Matrix, ...]
    adjustment: str
    alpha: float
    generated_at: dt.datetime
    reports_built: int  # distinct experiments whose report was built for this playbook


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------


class _Offers:
    """Which offer a (variant, layer) of a campaign gave: the campaign's treatments resolved
    like ``campaigns.services.decide.TreatmentIndex`` (variant before "any variant", layer
    before "any layer")."""

    def __init__(self, campaigns: Sequence[Campaign]) -> None:
        self.by_campaign: dict[int, dict[tuple[str, str | None, str], str]] = {c.pk: {} for c in campaigns}
        self.split_layers: dict[int, set[str | None]] = {c.pk: {None} for c in campaigns}
        # Offer name -> face value when redeemed (amount off), None when it has no money value.
        self.face_value: dict[str, tuple[float, str] | None] = {}
        rows = Treatment.objects.filter(campaign__in=[c.pk for c in campaigns]).select_related("offer", "layer")
        for t in rows:
            layer_key = t.layer.key if t.layer_id else None
            offer = t.offer.name if t.offer_id else ""
            if t.offer_id:
                amount_off = t.offer.benefit_kind == t.offer.BenefitKind.AMOUNT_OFF
                self.face_value[offer] = (float(t.offer.value), t.offer.currency) if amount_off else None
            self.by_campaign[t.campaign_id][(t.variant_key, layer_key, t.referral_role)] = offer
            self.split_layers[t.campaign_id].add(layer_key)

    def _resolve(self, campaign_pk: int, variant: str, layer: str | None) -> set[str]:
        table = self.by_campaign[campaign_pk]
        found: set[str] = set()
        for role in ("inviter", "invitee"):  # each falls back to "both roles"
            hit = next(
                (
                    table[(v, lk, r)]
                    for r in (role, "")
                    for v in (variant, "")
                    for lk in (layer, None)
                    if (v, lk, r) in table
                ),
                None,
            )
            if hit:
                found.add(hit)
        return found

    def describe(self, campaign: Campaign, variant: str, dimension: str | None, layer: str | None) -> str:
        split = campaign.split_dimension.key if campaign.split_dimension_id else None
        if split is not None and dimension == split:
            names = self._resolve(campaign.pk, variant, layer)
        else:  # the offer may differ by the campaign's split layer: name them all
            names = set()
            for split_layer in self.split_layers[campaign.pk]:
                names |= self._resolve(campaign.pk, variant, split_layer)
        return " / ".join(sorted(names))


def _same_row(metric: MetricReport, row: RowResult) -> RowResult | None:
    if row.dimension is None:
        return metric.overall
    dimension = next((d for d in metric.dimensions if d.key == row.dimension), None)
    return next((r for r in dimension.layers if r.layer == row.layer), None) if dimension else None


def _incremental_value(
    report: Report, row: RowResult, variant: str, offer: str, face_value: dict[str, tuple[float, str] | None]
) -> dict:
    """Incremental revenue, offer cost and net per 1,000 customers (``VariantLift``)."""
    undefined: dict[str, str] = {}
    revenue_metrics = [m for m in report.metrics if m.metric.kind == "sum" and m.metric.role != "guardrail"]
    revenue = next((m for m in revenue_metrics if m.metric.role == "primary"), None) or next(
        iter(revenue_metrics), None
    )
    out: dict = {}
    if revenue is None:
        undefined["revenue_per_1000"] = "The experiment has no revenue metric (a sum of amount per customer)."
    else:
        same = _same_row(revenue, row)
        lift = next((x for x in same.lifts if x.variant == variant), None) if same else None
        out |= {"revenue_metric": revenue.metric.event_type, "currency": revenue.metric.currency or ""}
        if lift is None or lift.absolute_lift is None:
            why = lift.undefined.get("absolute_lift") if lift else None
            undefined["revenue_per_1000"] = why.message if why else "No revenue lift in this row."
        else:
            out["revenue_per_1000"] = lift.absolute_lift * PER
            ci = lift.absolute_lift_ci
            out["revenue_per_1000_ci"] = Interval(ci.low * PER, ci.high * PER) if ci else None
    cost: float | None = None
    if not offer:
        cost = 0.0
    elif " / " in offer or face_value.get(offer) is None:
        undefined["offer_cost_per_1000"] = (
            "The offer has no face value in money (only amount-off coupons have one), or the variant gave several."
        )
    else:
        redemptions = next((m for m in report.metrics if m.metric.event_type == "coupon_redeemed"), None)
        same = _same_row(redemptions, row) if redemptions else None
        arm = next((a for a in same.arms if a.variant == variant), None) if same else None
        if arm is None or arm.rate is None:
            undefined["offer_cost_per_1000"] = "The experiment does not measure coupon redemptions (coupon_redeemed)."
        else:
            value, currency = face_value[offer]  # type: ignore[misc]
            if out.get("currency") and currency and currency != out["currency"]:
                undefined["offer_cost_per_1000"] = f"The coupon is in {currency}, the revenue in {out['currency']}."
            else:
                cost = arm.rate * value * PER
    if cost is not None:
        out["offer_cost_per_1000"] = cost
    if cost is not None and "revenue_per_1000" in out:
        out["net_revenue_per_1000"] = out["revenue_per_1000"] - cost
    elif revenue is not None:
        undefined["net_revenue_per_1000"] = undefined.get("offer_cost_per_1000") or undefined.get(
            "revenue_per_1000", ""
        )
    out["value_undefined"] = tuple(sorted(undefined.items()))
    return out


def _variant_lift(
    report: Report,
    row: RowResult,
    lift: LiftResult,
    offer: Callable[[str], str],
    face_value: dict[str, tuple[float, str] | None] | None = None,
) -> VariantLift:
    names = {v.key: v.name for v in report.variants}
    arms = {a.variant: a for a in row.arms}
    control = next((a for a in row.arms if a.is_control), None)
    offer_name = offer(lift.variant)
    return VariantLift(
        variant=lift.variant,
        variant_name=names.get(lift.variant, lift.variant),
        offer=offer_name,
        verdict=lift.verdict.label,
        message=lift.verdict.message,
        customers=arms[lift.variant].customers if lift.variant in arms else 0,
        control_customers=control.customers if control else 0,
        relative_lift=lift.relative_lift,
        relative_lift_ci=lift.relative_lift_ci,
        absolute_lift=lift.absolute_lift,
        absolute_lift_ci=lift.absolute_lift_ci,
        adjusted_p_value=lift.adjusted_p_value,
        **_incremental_value(report, row, lift.variant, offer_name, face_value or {}),
    )


def _cell(
    report: Report,
    row: RowResult,
    offer: Callable[[str], str],
    face_value: dict[str, tuple[float, str] | None] | None = None,
) -> Cell:
    lifts = tuple(_variant_lift(report, row, lift, offer, face_value) for lift in row.lifts)
    caveats = tuple(dict.fromkeys(c.message for lift in row.lifts for c in lift.verdict.caveats))
    if any(lift.family_kind != "confirmatory" for lift in row.lifts):
        significant = [v for v in lifts if v.verdict in (SIGNIFICANT_WIN, SIGNIFICANT_LOSS)]
        if significant:
            return Cell(
                "exploratory",
                row.customers,
                None,
                (),
                lifts,
                "Exploratory: this dimension is not in the experiment's declared decision family, so a "
                "'significant' result here is a lead to test, not a decision. " + significant[0].message,
                caveats,
            )
    wins = [v for v in lifts if v.verdict == SIGNIFICANT_WIN]
    losses = tuple(v for v in lifts if v.verdict == SIGNIFICANT_LOSS)
    if any(v.verdict == NOT_YET_EVALUABLE for v in lifts):
        return Cell("not_yet_evaluable", row.customers, None, (), lifts, lifts[0].message, caveats)
    if wins:
        best = max(wins, key=lambda v: v.absolute_lift or 0.0)
        return Cell("win", row.customers, best, losses, lifts, best.message, caveats)
    if losses:
        worst = min(losses, key=lambda v: v.absolute_lift or 0.0)
        return Cell("loss", row.customers, worst, losses, lifts, worst.message, caveats)
    if lifts and all(v.verdict == NOT_ENOUGH_DATA for v in lifts):
        return Cell("not_enough_data", row.customers, None, (), lifts, lifts[0].message, caveats)
    explanation = (
        " ".join(dict.fromkeys(v.message for v in lifts))
        if lifts
        else "Nothing to compare: the experiment has no control variant or no treatment variant."
    )
    return Cell("no_evidence", row.customers, None, (), lifts, explanation, caveats)


def _no_customers(dimension_name: str, in_report: bool) -> Cell:
    why = (
        "The experiment had no customers of this layer when they were assigned."
        if in_report
        else f"The experiment's customers have no {dimension_name} layer in their assignment-time snapshot."
    )
    return Cell("no_customers", 0, explanation=why)


def _column(campaign: Campaign, report: Report | None, missing: str) -> Column:
    experiment = campaign.experiment
    assert experiment is not None
    primary = report.primary if report is not None else None
    warnings: list[str] = []
    if report is None:
        warnings.append(missing)
    else:
        if report.srm.flagged:
            warnings.append(report.srm.message)
        if primary is None:
            warnings.append("The experiment has no primary metric, so there is nothing to read here.")
        for metric in report.guardrails:
            if metric.harms:
                warnings.append(
                    f"Guardrail {metric.metric.event_type} got significantly worse: {'; '.join(metric.harms)}."
                )
    return Column(
        campaign_key=campaign.key,
        campaign_name=campaign.name,
        campaign_pk=campaign.pk,
        kind=campaign.kind,
        kind_label=campaign.get_kind_display(),
        status=campaign.status,
        status_label=campaign.get_status_display(),
        experiment_key=experiment.key,
        experiment_name=report.experiment.name if report else experiment.name,
        experiment_status=report.experiment.status if report else experiment.status,
        metric=primary.metric.event_type if primary else "",
        metric_name=primary.metric.name if primary else "",
        metric_window_hours=primary.metric.window_hours if primary else None,
        phase_number=report.phase.number if report and report.phase else None,
        days_elapsed=report.phase.days_elapsed if report and report.phase else None,
        customers=primary.overall.customers if primary else 0,
        srm_flagged=bool(report and report.srm.flagged),
        warnings=tuple(warnings),
        decision_rule=(
            f"{report.plan.inference_mode_name.capitalize()}. {report.confirmatory_family.scope}"
            + ("" if report.plan.recorded else " (no plan recorded at start)")
            if report
            else ""
        ),
    )


def _foreign_owner(campaign: Campaign) -> str:
    """Who else runs the campaign's experiment ("" when it is this campaign's, or nobody's:
    campaigns launched before experiments had owners)."""
    managed_by = campaign.experiment.managed_by if campaign.experiment is not None else ""
    if not managed_by or managed_by == manager_tag(campaign.pk):
        return ""
    prefix, _, ident = managed_by.partition(":")
    if prefix == "campaign" and ident.isdigit():
        other = Campaign.objects.filter(pk=int(ident)).values_list("key", flat=True).first()
        return f"campaign '{other}'" if other else managed_by
    return managed_by


def _reached_in_phase(campaign: Campaign) -> int:
    """Customers the campaign decided (treated or control) among its experiment's current
    phase's assignments: the customers of the report it is shown with."""
    from experiments import selectors as experiment_selectors

    in_phase = experiment_selectors.assignments_queryset(experiment=campaign.experiment).values("customer_id")
    return (
        Recipient.objects.filter(
            campaign=campaign,
            outcome__in=[Recipient.Outcome.TREATED, Recipient.Outcome.CONTROL],
            customer_id__in=in_phase,
        )
        .values("customer_id")
        .distinct()
        .count()
    )


def playbook_build(*, campaigns: Sequence[Campaign], now: dt.datetime | None = None) -> Playbook:
    """The playbook of ``campaigns`` (a page of :func:`playbook_campaigns_queryset`).

    Builds each distinct experiment's report once (Holm), then lays the primary metric's
    rows out by dimension and layer."""
    now = now or timezone.now()
    campaigns = [c for c in campaigns if c.experiment_id is not None]
    reports: dict[str, Report | None] = {}
    missing: dict[str, str] = {}
    for campaign in campaigns:
        key = campaign.experiment.key  # type: ignore[union-attr]
        if key in reports:
            continue
        try:
            reports[key] = report_build(experiment_key=key, adjustment=ADJUSTMENT, now=now)
        except ExperimentNotFound:
            reports[key] = None
            missing[key] = f"Experiment '{key}' no longer exists."
    offers = _Offers(campaigns)
    decided = Recipient.objects.filter(
        campaign__in=[c.pk for c in campaigns], outcome__in=[Recipient.Outcome.TREATED, Recipient.Outcome.CONTROL]
    )
    reached = dict(decided.values("campaign").annotate(n=Count("pk")).values_list("campaign", "n"))
    primaries: list[MetricReport | None] = []
    columns = []
    for campaign in campaigns:
        key = campaign.experiment.key  # type: ignore[union-attr]
        report = reports[key]
        column = _column(campaign, report, missing.get(key, ""))
        owner = _foreign_owner(campaign)
        n = _reached_in_phase(campaign) if reached.get(campaign.pk) and not owner else 0
        if owner or n == 0:
            if owner:
                why = FOREIGN_EXPERIMENT.format(key=key, owner=owner)
            elif reached.get(campaign.pk):
                why = NO_REACH_IN_PHASE.format(
                    phase=column.phase_number, version=campaign.version, earlier=reached[campaign.pk]
                )
            else:
                why = NO_REACH
            column = replace(column, reached=0, customers=0, warnings=(why, *column.warnings), srm_flagged=False)
            report = None  # nothing of the experiment's report is this campaign's
        else:
            column = replace(column, reached=n)
        columns.append(column)
        primaries.append(report.primary if report is not None else None)
    unreached = [c.reached == 0 for c in columns]

    def offer_of(campaign: Campaign, dimension: str | None, layer: str | None) -> Callable[[str], str]:
        return lambda variant: offers.describe(campaign, variant, dimension, layer)

    no_report = Cell("no_report", 0, explanation="No lift report: the experiment has no primary metric.")
    no_reach = Cell("no_reach", 0, explanation=NO_REACH)

    overall_cells = tuple(
        no_reach
        if gone
        else _cell(reports[c.experiment.key], p.overall, offer_of(c, None, None), offers.face_value)  # type: ignore[arg-type, union-attr]
        if p is not None
        else no_report
        for c, p, gone in zip(campaigns, primaries, unreached, strict=True)
    )
    overall = Matrix(OVERALL_DIMENSION, "All customers", (MatrixRow(None, "All customers", overall_cells),))

    # Dimensions in order of first appearance across the reports; every configured layer
    # in its configured order (a layer no campaign reached shows as such), then layers
    # deleted since the snapshots were taken, then "no layer".
    dimension_names: dict[str, str] = {}
    reported: dict[str, dict[str | None, str]] = {}
    for primary in primaries:
        for d in primary.dimensions if primary else ():
            dimension_names.setdefault(d.key, d.name)
            reported.setdefault(d.key, {}).update({r.layer: r.label for r in d.layers})
    configured = layer_labels(dimension_keys=list(dimension_names))

    matrices = []
    for dimension, name in dimension_names.items():
        layers: list[tuple[str | None, str]] = list(configured[dimension].layers)
        known = {key for key, _ in layers}
        layers += [(k, label) for k, label in reported[dimension].items() if k is not None and k not in known]
        if None in reported[dimension]:
            layers.append((None, NO_LAYER_LABEL))
        rows = []
        for layer, label in layers:
            cells = []
            for campaign, primary, gone in zip(campaigns, primaries, unreached, strict=True):
                if gone:
                    cells.append(no_reach)
                    continue
                if primary is None:
                    cells.append(no_report)
                    continue
                found = next((d for d in primary.dimensions if d.key == dimension), None)
                row = next((r for r in found.layers if r.layer == layer), None) if found else None
                if row is None:
                    cells.append(_no_customers(name, found is not None))
                else:
                    report = reports[campaign.experiment.key]  # type: ignore[union-attr]
                    cells.append(_cell(report, row, offer_of(campaign, dimension, layer), offers.face_value))  # type: ignore[arg-type]
            rows.append(MatrixRow(layer, label, tuple(cells)))
        matrices.append(Matrix(dimension, name, tuple(rows)))

    return Playbook(
        columns=tuple(columns),
        overall=overall,
        dimensions=tuple(matrices),
        adjustment=ADJUSTMENT,
        alpha=ALPHA,
        generated_at=now,
        reports_built=sum(r is not None for r in reports.values()),
    )


# --------------------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "dimension",
    "dimension_name",
    "layer",
    "layer_name",
    "campaign",
    "campaign_name",
    "campaign_kind",
    "campaign_status",
    "experiment",
    "metric",
    "outcome",
    "variant",
    "variant_name",
    "offer",
    "layer_customers",
    "relative_lift",
    "relative_lift_ci_low",
    "relative_lift_ci_high",
    "absolute_lift",
    "absolute_lift_ci_low",
    "absolute_lift_ci_high",
    "incremental_conversions_per_1000",
    "incremental_conversions_per_1000_ci_low",
    "incremental_conversions_per_1000_ci_high",
    "revenue_metric",
    "currency",
    "incremental_revenue_per_1000",
    "incremental_revenue_per_1000_ci_low",
    "incremental_revenue_per_1000_ci_high",
    "offer_cost_per_1000",
    "net_incremental_revenue_per_1000",
    "adjusted_p_value",
    "adjustment",
    "significant_losses",
    "caveats",
    "explanation",
    "report_url",
)


def _ci(ci: Interval | None) -> tuple[float | str, float | str]:
    return ("", "") if ci is None else (ci.low, ci.high)


def playbook_csv(playbook: Playbook, *, report_url: Callable[[str], str]) -> str:
    """One line per dimension x layer x campaign (the overall row first, dimension
    "(all customers)"). The variant columns describe the cell's winner (outcome ``win``)
    or its worst significant loss (``loss``) and are empty otherwise. Numbers in full
    precision; text cells escaped against spreadsheet formulas (``csv_cell``)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for matrix in (playbook.overall, *playbook.dimensions):
        for row in matrix.rows:
            for column, cell in zip(playbook.columns, row.cells, strict=True):
                v = cell.best
                rel_low, rel_high = _ci(v.relative_lift_ci if v else None)
                abs_low, abs_high = _ci(v.absolute_lift_ci if v else None)
                per_low, per_high = _ci(v.per_1000_ci if v else None)

                def num(value: float | None) -> float | str:
                    return "" if value is None else value

                values = (
                    matrix.dimension,
                    matrix.name,
                    "" if matrix.dimension == OVERALL_DIMENSION else (row.layer or "(none)"),
                    row.label,
                    column.campaign_key,
                    column.campaign_name,
                    column.kind,
                    column.status,
                    column.experiment_key,
                    column.metric,
                    cell.outcome,
                    v.variant if v else "",
                    v.variant_name if v else "",
                    v.offer if v else "",
                    cell.customers,
                    num(v.relative_lift if v else None),
                    rel_low,
                    rel_high,
                    num(v.absolute_lift if v else None),
                    abs_low,
                    abs_high,
                    num(v.per_1000 if v else None),
                    per_low,
                    per_high,
                    v.revenue_metric if v else "",
                    v.currency if v else "",
                    num(v.revenue_per_1000 if v else None),
                    *_ci(v.revenue_per_1000_ci if v else None),
                    num(v.offer_cost_per_1000 if v else None),
                    num(v.net_revenue_per_1000 if v else None),
                    num(v.adjusted_p_value if v else None),
                    playbook.adjustment,
                    " | ".join(
                        f"{loss.variant} ({loss.offer})" if loss.offer else loss.variant for loss in cell.losses
                    ),
                    " | ".join(cell.caveats),
                    cell.explanation,
                    report_url(column.experiment_key),
                )
                writer.writerow([csv_cell(value) for value in values])
    return out.getvalue()
