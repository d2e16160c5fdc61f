"""What the demo created, and what the lift reports found against what was planted.

For each campaign experiment the report is read where the effects were planted: the
layers of the plan's ``evaluate_dimension``, which the experiment's analysis plan declares
confirmatory (one Holm family: primary metric x treatment variants x (all customers + those
layers)), or the overall row (family: the treatment variants) for an audience that sits in
one layer. A planted effect is *recovered* when its cell's verdict
is "significant win"; any other significant cell of that family is a *false positive*
(no effect was planted there).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import Count
from django.utils import timezone

from campaigns.models import Campaign, Coupon, Delivery, MailboxMessage, Recipient, Referral, ReferralAudit
from demo.plan import CampaignPlan, SegmentPlan
from experiments.models import Assignment, Conversion, Experiment
from experiments.reports.results import Report, RowResult
from experiments.stats import SIGNIFICANT_LOSS, SIGNIFICANT_WIN
from segments.models import Customer, Event, Membership, Segment, SegmentMembership

SIGNIFICANT = (SIGNIFICANT_WIN, SIGNIFICANT_LOSS)


@dataclass(frozen=True)
class Cell:
    layer: str | None  # None: the overall row
    label: str
    variant: str
    control_rate: float | None
    treatment_rate: float | None
    customers: int
    absolute_lift: float | None
    ci: tuple[float, float] | None
    adjusted_p: float | None
    verdict: str

    @property
    def significant(self) -> bool:
        return self.verdict in SIGNIFICANT


@dataclass(frozen=True)
class PlantedResult:
    layer: str | None
    variant: str
    lift: float
    cell: Cell | None

    @property
    def recovered(self) -> bool:
        return self.cell is not None and self.cell.verdict == SIGNIFICANT_WIN


@dataclass(frozen=True)
class Findings:
    campaign: str
    experiment: str
    metric: str
    dimension: str | None
    family_size: int
    cells: tuple[Cell, ...]  # every cell of the family, in the report's order
    planted: tuple[PlantedResult, ...]
    significant: tuple[Cell, ...]
    false_positives: tuple[Cell, ...]
    caveats: tuple[str, ...]
    # The analysis plan recorded at start, in words: mode and the declared decision family.
    plan: str = ""
    # Value effects (issue 15): per planted lower-order-value cell, the revenue metric's
    # finding in words, and whether the report caught revenue falling (significant loss).
    value_lines: tuple[str, ...] = ()
    value_caught: tuple[bool, ...] = ()
    value_lifts: tuple[float | None, ...] = ()  # revenue per customer, treatment - control

    @property
    def significant_cells(self) -> set[tuple[str | None, str]]:
        return {(c.layer, c.variant) for c in self.significant}

    @property
    def all_recovered(self) -> bool:
        return all(p.recovered for p in self.planted)


def _cells(row: RowResult) -> list[Cell]:
    control = next((a for a in row.arms if a.is_control), None)
    arms = {a.variant: a for a in row.arms}
    cells = []
    for lift in row.lifts:
        ci = lift.absolute_lift_ci
        cells.append(
            Cell(
                layer=row.layer if row.dimension is not None else None,
                label=row.label,
                variant=lift.variant,
                control_rate=control.rate if control else None,
                treatment_rate=arms[lift.variant].rate if lift.variant in arms else None,
                customers=row.customers,
                absolute_lift=lift.absolute_lift,
                ci=(ci.low, ci.high) if ci is not None else None,
                adjusted_p=lift.adjusted_p_value,
                verdict=lift.verdict.label,
            )
        )
    return cells


def findings_from_report(*, plan: CampaignPlan, report: Report) -> Findings:
    metric = report.primary
    if metric is None:
        raise RuntimeError(f"demo: experiment {plan.experiment.key} has no primary metric")
    if plan.evaluate_dimension is None:
        rows, family_size = [metric.overall], metric.overall_family.size
    else:
        dimension = next((d for d in metric.dimensions if d.key == plan.evaluate_dimension), None)
        rows = list(dimension.layers) if dimension else []
        family_size = dimension.family.size if dimension else 0
    cells = [cell for row in rows for cell in _cells(row)]
    by_key = {(c.layer, c.variant): c for c in cells}
    planted = tuple(
        PlantedResult(e.layer, e.variant, e.lift, by_key.get((e.layer, e.variant))) for e in plan.effects if e.lift > 0
    )
    significant = tuple(c for c in cells if c.significant)
    false_positives = tuple(c for c in significant if (c.layer, c.variant) not in plan.planted())
    value_lines, value_caught, value_lifts = _value_findings(plan, report)
    return Findings(
        campaign=plan.key,
        experiment=plan.experiment.key,
        metric=metric.metric.event_type,
        dimension=plan.evaluate_dimension,
        family_size=family_size,
        cells=tuple(cells),
        planted=planted,
        significant=significant,
        false_positives=false_positives,
        caveats=tuple(c.message for c in report.caveats),
        plan=f"{report.plan.inference_mode_name}; {report.confirmatory_family.scope}",
        value_lines=value_lines,
        value_caught=value_caught,
        value_lifts=value_lifts,
    )


def _value_findings(
    plan: CampaignPlan, report: Report
) -> tuple[tuple[str, ...], tuple[bool, ...], tuple[float | None, ...]]:
    """Where an offer was planted to lower order value: did the revenue metric fall?"""
    revenue = next((m for m in report.metrics if m.metric.kind == "sum"), None)
    lines, caught, lifts = [], [], []
    for effect in plan.value_planted():
        where = _where(effect.layer, plan.evaluate_dimension)
        if revenue is None:
            lines.append(f"    {where} x {effect.variant}: no revenue metric in the report: NOT CAUGHT")
            caught.append(False)
            lifts.append(None)
            continue
        if effect.layer is None or plan.evaluate_dimension is None:
            row = revenue.overall
        else:
            dimension = next((d for d in revenue.dimensions if d.key == plan.evaluate_dimension), None)
            row = next((r for r in dimension.layers if r.layer == effect.layer), None) if dimension else None
        lift = next((x for x in row.lifts if x.variant == effect.variant), None) if row else None
        arms = {a.variant: a for a in row.arms} if row else {}
        control = next((a for a in arms.values() if a.is_control), None)
        hit = bool(
            lift
            and lift.absolute_lift is not None
            and lift.absolute_lift < 0
            and lift.verdict.label == SIGNIFICANT_LOSS
        )
        caught.append(hit)
        lifts.append(lift.absolute_lift if lift else None)
        if lift is None or control is None:
            lines.append(f"    {where} x {effect.variant}: no revenue row in the report: NOT CAUGHT")
            continue
        ci = lift.absolute_lift_ci
        interval = f" [{ci.low:+.2f}, {ci.high:+.2f}]" if ci else ""
        money = revenue.metric.currency or ""
        treated = arms[effect.variant].value if effect.variant in arms else None
        lines.append(
            f"    {where} x {effect.variant}: planted order value x{effect.order_value:g} with conversion "
            f"+{100 * effect.lift:.0f} pts | revenue per customer ({revenue.metric.event_type}, {money}) "
            f"{_money(control.value)} -> {_money(treated)}, {_money(lift.absolute_lift, signed=True)}{interval}, "
            f"Holm p {_p(lift.adjusted_p_value)}: "
            + (
                "CAUGHT (revenue falls while conversion rises)"
                if hit
                else "NOT CAUGHT (revenue per customer is lower, but not significantly at this size)"
                if lift.absolute_lift is not None and lift.absolute_lift < 0
                else "NOT CAUGHT"
            )
        )
    return tuple(lines), tuple(caught), tuple(lifts)


def _money(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "n/a"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


# --- Counts ---------------------------------------------------------------------------------


def demo_counts(*, campaigns: Sequence[CampaignPlan], segments: Sequence[SegmentPlan]) -> dict[str, int]:
    """The numbers a re-run must leave unchanged (and the summary prints)."""
    campaign_keys = [c.key for c in campaigns]
    experiment_keys = [c.experiment.key for c in campaigns]
    experiment_ids = list(Experiment.objects.filter(key__in=experiment_keys).values_list("pk", flat=True))
    deliveries = Delivery.objects.filter(campaign__key__in=campaign_keys)
    assignments = Assignment.objects.filter(experiment_id__in=experiment_ids)
    counts = {
        "customers": Customer.objects.count(),
        "events": Event.objects.count(),
        "memberships": Membership.objects.count(),
        "segments": Segment.objects.filter(key__in=[s.key for s in segments]).count(),
        "experiments": len(experiment_ids),
        "campaigns": Campaign.objects.filter(key__in=campaign_keys).count(),
        "assignments": assignments.count(),
        "exposed": assignments.filter(first_exposed_at__isnull=False).count(),
        "conversions": Conversion.objects.filter(assignment__experiment_id__in=experiment_ids).count(),
        "recipients": Recipient.objects.filter(campaign__key__in=campaign_keys).count(),
        "deliveries": deliveries.count(),
        "mailbox": MailboxMessage.objects.count(),
        "coupons": Coupon.objects.filter(campaign__key__in=campaign_keys).count(),
        "coupons_redeemed": Coupon.objects.filter(campaign__key__in=campaign_keys, redeemed_at__isnull=False).count(),
        "referrals": Referral.objects.filter(campaign__key__in=campaign_keys).count(),
    }
    for row in deliveries.values("status").annotate(n=Count("pk")):
        counts[f"deliveries:{row['status']}"] = row["n"]
    for row in MailboxMessage.objects.values("channel").annotate(n=Count("pk")):
        counts[f"mailbox:{row['channel']}"] = row["n"]
    return counts


def segment_sizes(*, segments: Sequence[SegmentPlan]) -> dict[str, int]:
    rows = (
        SegmentMembership.objects.filter(segment__key__in=[s.key for s in segments])
        .values("segment__key")
        .annotate(n=Count("pk"))
    )
    sizes = {s.key: 0 for s in segments}
    sizes.update({row["segment__key"]: row["n"] for row in rows})
    return sizes


def referral_audit_counts(*, campaign_key: str) -> dict[str, int]:
    rows = ReferralAudit.objects.filter(campaign__key=campaign_key).values("action").annotate(n=Count("pk"))
    return {row["action"]: row["n"] for row in rows}


# --- Text ---------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:4.1f}%"


def _pts(x: float | None) -> str:
    return "n/a" if x is None else f"{100 * x:+.1f} pts"


def _p(x: float | None) -> str:
    return "n/a" if x is None else (f"{x:.3g}" if x >= 1e-4 else "<1e-4")


def _where(layer: str | None, dimension: str | None) -> str:
    return "all customers" if layer is None else f"{dimension}:{layer}"


def _outcome(planted: bool, cell: Cell | None) -> str:
    if planted:
        return "RECOVERED" if cell is not None and cell.verdict == SIGNIFICANT_WIN else "MISSED"
    return "FALSE POSITIVE" if cell is not None and cell.significant else "ok (nothing planted, nothing found)"


def findings_text(findings: Findings, *, reach: dict[tuple[str | None, str], float] | None = None) -> list[str]:
    """One line per cell of the family: what was planted (the lift on reached customers,
    and what the report should see after the share reached: intent to treat) against what
    the report found, then the outcome."""
    scope = "overall row" if findings.dimension is None else f"layers of '{findings.dimension}'"
    lines = [
        f"  {findings.experiment} (campaign {findings.campaign}; {findings.metric}; {scope}; "
        f"Holm family of {findings.family_size})"
    ]
    if findings.plan:
        lines.append(f"    plan: {findings.plan}")
    lifts = {(p.layer, p.variant): p.lift for p in findings.planted}
    cells = {(c.layer, c.variant): c for c in findings.cells}
    keys = list(cells) + [key for key in lifts if key not in cells]
    width = max((len(f"{_where(layer, findings.dimension)} x {variant}") for layer, variant in keys), default=0)
    for layer, variant in keys:
        where = f"{_where(layer, findings.dimension)} x {variant}".ljust(width)
        lift = lifts.get((layer, variant))
        share = reach.get((layer, variant)) if reach else None
        if lift is None:
            planted = "planted none".ljust(38)
        elif share is None:
            planted = f"planted +{100 * lift:.0f} pts on reached".ljust(38)
        else:
            planted = f"planted +{100 * lift:.0f} pts x {share:.0%} reached = {100 * lift * share:+.1f}".ljust(38)
        c = cells.get((layer, variant))
        if c is None:
            found = "no row in the report"
        else:
            ci = f" [{100 * c.ci[0]:+.1f}, {100 * c.ci[1]:+.1f}]" if c.ci else ""
            found = (
                f"found {_pct(c.control_rate)} -> {_pct(c.treatment_rate)}, {_pts(c.absolute_lift)}{ci}, "
                f"Holm p {_p(c.adjusted_p)}"
            )
        lines.append(f"    {where}  {planted} | {found}: {_outcome(lift is not None, c)}")
    if findings.value_lines:
        lines.append(
            "    value (issue 15): does the offer pay? revenue per customer where order value was planted lower"
        )
        lines += list(findings.value_lines)
    for caveat in findings.caveats:
        lines.append(f"    caveat: {caveat}")
    return lines


def verdict_text(findings: Sequence[Findings]) -> str:
    planted = sum(len(f.planted) for f in findings)
    recovered = sum(p.recovered for f in findings for p in f.planted)
    false = sum(len(f.false_positives) for f in findings)
    others = sum(len(f.cells) for f in findings) - planted
    if recovered == planted and not false:
        return (
            f"  RESULT: all {planted} planted effects recovered (Holm-adjusted p < 0.05), and none of the other "
            f"{others} layer x variant cells is significant: the reports found exactly what was planted."
        )
    missed = [
        f"{f.campaign} {_where(p.layer, f.dimension)} x {p.variant}"
        for f in findings
        for p in f.planted
        if not p.recovered
    ]
    wrong = [f"{f.campaign} {_where(c.layer, f.dimension)} x {c.variant}" for f in findings for c in f.false_positives]
    why = []
    if missed:
        why.append(
            "a planted effect is missed when its cell is too small: below the default 50,000 customers the "
            "planted cells are found less reliably"
        )
    if wrong:
        why.append("Holm keeps the chance of any false positive at or below 5% per experiment, not at zero")
    return (
        f"  RESULT: NOT exactly what was planted: recovered {recovered} of {planted} planted effects"
        + (f" (missed: {'; '.join(missed)})" if missed else "")
        + f"; {false} false positive(s)"
        + (f" ({'; '.join(wrong)})" if wrong else "")
        + ". "
        + "; ".join(why)
        + "."
    )


# --- Growth analytics by tier -------------------------------------------------------------------

TIER_DIMENSION = "rfm"


def _rate(rate: float | None, reason: str | None) -> str:
    return f"{100 * rate:.1f}%" if rate is not None else f"n/a ({reason or 'no customers'})"


def analytics_text(*, pyramid_keys: Sequence[str]) -> list[str]:
    """The analytics pages' headline numbers per tier, each line pointing at its page (the
    same numbers as the pages and /api/v1/analytics/*, computed by the same selectors)."""
    from dataclasses import replace

    from segments.analytics.flows import layer_flows, lifecycle_counts
    from segments.analytics.funnels import PRESETS, funnel
    from segments.analytics.retention import RetentionSpec, retention_table
    from segments.models import Dimension, Role
    from segments.selectors import dimension_layer_sizes

    lines = ["", "Growth analytics by tier (admin > Growth analytics; the same numbers at /api/v1/analytics/):"]
    # Sign-up cohorts split by what customers carry from day 0: tiers computed from purchases
    # would put every sign-up in "no_purchase" (nobody has bought at sign-up).
    heads = ""
    for label, attribute in (("acquisition channel", "channel"), ("city tier", "city_tier")):
        table = retention_table(spec=RetentionSpec(cohort_grain="week", periods=30, breakdown=f"attribute:{attribute}"))
        if not heads:
            heads = " · ".join(f"D{h.day} {_rate(h.rate, h.reason)}" for h in table.headlines)
            lines.append(
                f"  retention, sign-up weeks {table.cohort_from} .. {table.cohort_to} (a day is the customer's local "
                f"day): {heads}"
            )
        lines.append(f"    by {label}: /admin/analytics/retention/?breakdown=attribute:{attribute}")
        for layer in table.by_layer:
            size = sum(c.size for c in layer.cohorts)
            per = " · ".join(f"D{h.day} {_rate(h.rate, h.reason)}" for h in layer.headlines)
            name = f"tier {layer.layer}" if attribute == "city_tier" and layer.layer else layer.layer or "(none)"
            lines.append(f"      {name} ({size:,} customers): {per}")
    five = funnel(spec=replace(PRESETS["five_step"], breakdown=f"layer:{TIER_DIMENSION}"))
    steps = " -> ".join(f"{s.label} {s.reached:,}" for s in five.steps)
    lines += [
        f"  funnel channel -> scene -> product -> decision -> done, last 30 days, 3-day window: {steps}",
        f"    done per RFM tier: /admin/analytics/funnel/?preset=five_step&breakdown=layer:{TIER_DIMENSION}",
    ]
    for group in five.groups:
        last = group.steps[-1]
        lines.append(
            f"      {group.group or '(never layered)'}: {group.steps[0].reached:,} entered, "
            f"{_rate(last.conversion_overall, last.reason)} done"
        )
    # AARRR over a year of sign-ups (a month of them holds too few inviters at the test sizes);
    # Referral = the customer sent an invitation with their code (referral_invite_sent) after
    # the revenue step, inside the 30-day window from sign-up.
    since = (timezone.now() - dt.timedelta(days=365)).replace(hour=0, minute=0, second=0, microsecond=0)
    aarrr = funnel(spec=replace(PRESETS["aarrr"], start=since, breakdown="attribute:channel"))
    since_param = since.strftime("%Y-%m-%dT%H:%M:%S%%2B00:00")
    lines += [
        "  AARRR, sign-ups of the last 12 months, 30-day window: "
        + " -> ".join(f"{s.label} {s.reached:,}" for s in aarrr.steps)
        + " (Referral: sent an invitation after ordering)",
        "    by acquisition channel: "
        f"/admin/analytics/funnel/?preset=aarrr&breakdown=attribute:channel&start={since_param}",
    ]
    for group in aarrr.groups:
        lines.append(
            f"      {group.group or '(none)'}: {group.steps[0].reached:,} signed up, "
            f"{group.steps[-1].reached:,} referred"
        )
    flows = layer_flows(dimension=TIER_DIMENSION, grain="month")
    moved = [m for m in flows.moves if m.from_layer and m.from_layer != m.to_layer]
    top: dict[tuple[str, str], int] = {}
    for move in moved:
        top[(move.from_layer, move.to_layer)] = top.get((move.from_layer, move.to_layer), 0) + move.customers
    biggest = sorted(top.items(), key=lambda item: -item[1])[:3]
    lines += [
        f"  layer flows of RFM tiers by month ({flows.start} .. {flows.end}): {sum(top.values()):,} moves between "
        f"tiers; largest: " + (", ".join(f"{a} -> {b} {n:,}" for (a, b), n in biggest) or "none"),
        f"    /admin/analytics/flows/?dimension={TIER_DIMENSION}&grain=month",
    ]
    life = lifecycle_counts(grain="month")
    if life.periods:
        # The last month that is over: the current one's dormant count is everyone not back
        # *yet* (1,705 against ~290 in earlier months on a run of 5 December).
        over = [p for p in life.periods if p.complete]
        p = over[-1] if over else life.periods[-1]
        lines.append(
            f"  lifecycle, month of {p.period}{'' if p.complete else ' (so far)'}: new {p.new:,}, "
            f"returning {p.returning:,}, resurrecting {p.resurrecting:,}, dormant {p.dormant:,} (same page)"
        )
    roles = dict(
        Role.objects.annotate(n=Count("customer_roles")).values_list("key", "n")
    )  # a GROUP BY over customer roles
    if any(roles.values()):
        lines.append(
            "  roles (two-sided: each side layered separately; admin > Roles, and each customer's page): "
            + ", ".join(f"{key} {n:,}" for key, n in sorted(roles.items()))
        )
    for key in pyramid_keys:
        pyramid = Dimension.objects.filter(key=key).select_related("role").first()
        if pyramid is None:
            continue
        sizes = dimension_layer_sizes(dimension_id=pyramid.pk)
        scope = f", the {pyramid.role.key}s only" if pyramid.role else ""
        lines += [
            f"  value pyramid ({pyramid.name}{scope}): " + ", ".join(f"{s.name} {s.size:,}" for s in sizes),
            f"    flows between its layers: /admin/analytics/flows/?dimension={key}&grain=month",
        ]
    return lines
