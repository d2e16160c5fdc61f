"""Reads behind the monitoring pages: what a campaign did, and one customer's timeline.

Every number is an SQL aggregate (``GROUP BY`` over the campaign's recipients and
deliveries), never a Python loop over customers; the timeline reads a bounded page of each
source. Other apps are read through their selectors.

Campaign page (``campaign_monitor``):

* audience: customers the campaign decided for (distinct, every outcome), and the size of
  its audience definition now (one ``COUNT``);
* decisions: customers per outcome x variant x reason (treated, control "would have
  sent", holdout "would have sent", excluded with why);
* deliveries per variant: sent / pending / held / sending / failed / suppressed, and the
  suppressed and failed ones per reason;
* progress: messages sent per time bucket (minute, hour or day by the span) and their
  running total;
* errors: failed deliveries per reason and the last provider answers (SMTP codes and
  texts as the delivery recorded them).

Customer timeline (``customer_timeline``): events, layer moves, assignments, exposures,
campaign decisions, messages, redemptions and opt-outs, newest first. Each page costs one
query per source: each reads at most ``size + 1`` rows older than the cursor, ordered by
its own time; the merge keeps the newest ``size``. The cursor is the last entry's
(time, source, id), so entries with equal times are neither repeated nor skipped.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from django.db.models import Count, Max, Min, Q, QuerySet
from django.db.models.functions import TruncDay, TruncHour, TruncMinute
from django.utils import timezone

from campaigns.models import Campaign, Coupon, Delivery, Recipient, TopicOptOut
from experiments import selectors as experiment_selectors
from segments import selectors as segment_selectors

OUTCOME_LABELS = {
    Recipient.Outcome.TREATED: "Treated",
    Recipient.Outcome.CONTROL: "Control (would have sent)",
    Recipient.Outcome.HOLDOUT: "Holdout (would have sent)",
    Recipient.Outcome.EXCLUDED: "Excluded",
}
DELIVERY_STATUSES = ("sent", "pending", "held", "sending", "failed", "suppressed")
LAST_ERRORS = 10


# --------------------------------------------------------------------------------------
# A campaign
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DecisionRow:
    outcome: str
    outcome_label: str
    variant: str
    reason: str
    customers: int


@dataclass(frozen=True)
class VariantDeliveries:
    """One variant's messages (control and holdout named as such: what would have been sent
    to them is recorded as suppressed with reason control / holdout)."""

    variant: str
    role: str  # "treated" | "control" | "holdout" | "excluded" | "" (no recipient row)
    label: str
    statuses: dict[str, int]
    reasons: tuple[tuple[str, str, int], ...]  # (status, reason, count), suppressed and failed

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def status_cells(self) -> list[int]:
        return [self.statuses.get(s, 0) for s in DELIVERY_STATUSES]


@dataclass(frozen=True)
class ErrorRow:
    key: str
    customer: str
    channel: str
    status: str
    reason: str
    tries: str
    last_error: str
    at: dt.datetime | None


@dataclass(frozen=True)
class CampaignMonitor:
    decided_customers: int
    audience_now: int  # the audience definition's size now (one COUNT)
    assigned_per_variant: dict[str, int]  # variant key -> customers in the experiment (treated or control)
    decisions: tuple[DecisionRow, ...]
    deliveries: tuple[VariantDeliveries, ...]
    progress_unit: str  # "minute" | "hour" | "day" | ""
    progress: tuple[tuple[str, int, int], ...]  # (bucket ISO time, sent in bucket, sent so far)
    failures: dict[str, int]  # failed deliveries per reason
    errors: tuple[ErrorRow, ...]
    statuses: tuple[str, ...] = DELIVERY_STATUSES


def _role_label(variant: str, outcome: str) -> str:
    if outcome == Recipient.Outcome.CONTROL:
        return "control (would have sent)" if variant in ("", "control") else f"{variant} (control: would have sent)"
    if outcome == Recipient.Outcome.HOLDOUT:
        return "holdout (would have sent)"
    if outcome == Recipient.Outcome.EXCLUDED:
        return "excluded"
    return variant or "everyone (no experiment)"


def _bucket(first: dt.datetime, last: dt.datetime) -> tuple[str, Callable[..., Any]]:
    span = last - first
    if span <= dt.timedelta(hours=2):
        return "minute", TruncMinute
    if span <= dt.timedelta(days=3):
        return "hour", TruncHour
    return "day", TruncDay


def campaign_monitor(*, campaign: Campaign) -> CampaignMonitor:
    """What the campaign did so far (a handful of GROUP BY statements)."""
    recipients = Recipient.objects.filter(campaign=campaign)
    decided = recipients.aggregate(n=Count("customer_id", distinct=True))["n"]
    decision_rows = tuple(
        DecisionRow(o, OUTCOME_LABELS.get(o, o), v, r, n)
        for o, v, r, n in recipients.values("outcome", "variant_key", "reason")
        .annotate(n=Count("customer_id", distinct=True))
        .order_by("outcome", "variant_key", "reason")
        .values_list("outcome", "variant_key", "reason", "n")
    )
    assigned = dict(
        recipients.filter(outcome__in=[Recipient.Outcome.TREATED, Recipient.Outcome.CONTROL])
        .exclude(variant_key="")
        .values("variant_key")
        .annotate(n=Count("customer_id", distinct=True))
        .order_by("variant_key")
        .values_list("variant_key", "n")
    )

    deliveries = Delivery.objects.filter(campaign=campaign)
    grouped: dict[tuple[str, str], dict[str, int]] = {}
    reasons: dict[tuple[str, str], list[tuple[str, str, int]]] = {}
    for variant, outcome, status, reason, n in (
        deliveries.values("recipient__variant_key", "recipient__outcome", "status", "reason")
        .annotate(n=Count("pk"))
        .order_by("recipient__variant_key", "recipient__outcome", "status", "reason")
        .values_list("recipient__variant_key", "recipient__outcome", "status", "reason", "n")
    ):
        key = (variant or "", outcome or "")
        statuses = grouped.setdefault(key, {})
        statuses[status] = statuses.get(status, 0) + n
        if status in (Delivery.Status.SUPPRESSED, Delivery.Status.FAILED) and reason:
            reasons.setdefault(key, []).append((status, reason, n))
    per_variant = tuple(
        VariantDeliveries(v, o, _role_label(v, o), grouped[(v, o)], tuple(reasons.get((v, o), ())))
        for v, o in sorted(grouped, key=lambda k: (k[1] == Recipient.Outcome.HOLDOUT, k[1], k[0]))
    )

    sent = deliveries.filter(status=Delivery.Status.SENT, sent_at__isnull=False)
    span = sent.aggregate(first=Min("sent_at"), last=Max("sent_at"))
    unit, progress = "", ()
    if span["first"] is not None:
        unit, trunc = _bucket(span["first"], span["last"])
        running = 0
        points = []
        for at, n in (
            sent.annotate(at=trunc("sent_at"))
            .values("at")
            .annotate(n=Count("pk"))
            .order_by("at")
            .values_list("at", "n")
        ):
            running += n
            points.append((at.isoformat(), n, running))
        progress = tuple(points)

    failures = dict(
        deliveries.filter(status=Delivery.Status.FAILED)
        .values("reason")
        .annotate(n=Count("pk"))
        .order_by("-n", "reason")
        .values_list("reason", "n")
    )
    errors = tuple(
        ErrorRow(
            key=d.key,
            customer=d.customer.external_id if d.customer_id else "",
            channel=d.channel,
            status=d.status,
            reason=d.reason,
            tries=f"{d.attempts}/{d.max_attempts}",
            last_error=d.last_error[:300],
            at=d.first_tried_at or d.created_at,
        )
        for d in deliveries.exclude(last_error="").select_related("customer").order_by("-pk")[:LAST_ERRORS]
    )

    return CampaignMonitor(
        decided_customers=decided,
        audience_now=_audience_now(campaign),
        assigned_per_variant=assigned,
        decisions=decision_rows,
        deliveries=per_variant,
        progress_unit=unit,
        progress=progress,
        failures=failures,
        errors=errors,
    )


def _audience_now(campaign: Campaign) -> int:
    from campaigns.services.decide import campaign_audience

    return campaign_audience(campaign=campaign).count()


# --------------------------------------------------------------------------------------
# A customer's timeline
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEntry:
    at: dt.datetime
    source: str  # one of SOURCES
    pk: int
    title: str
    detail: str = ""
    link: tuple[str, Any] | None = None  # (URL name, argument) for the view to reverse

    @property
    def cursor(self) -> str:
        return f"{self.at.isoformat()}|{self.source}|{self.pk}"


@dataclass(frozen=True)
class Timeline:
    entries: tuple[TimelineEntry, ...]
    next_cursor: str | None  # None: this is the last page
    queries: int = 0
    sources: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class _Source:
    name: str
    queryset: Callable[[int], QuerySet[Any]]
    time_field: str
    entry: Callable[[Any], TimelineEntry]


def _events(customer_id: int) -> QuerySet[Any]:
    return segment_selectors.customer_events_queryset(customer_id=customer_id)


def _event_entry(e: Any) -> TimelineEntry:
    amount = f" {e.amount} {e.currency}" if e.amount is not None else ""
    return TimelineEntry(e.occurred_at, "event", e.pk, f"Event {e.event_type.code}{amount}", e.event_id)


def _layer_entry(h: Any) -> TimelineEntry:
    left = f"; left {h.left_at:%Y-%m-%d %H:%M}" if h.left_at else " (current)"
    return TimelineEntry(h.entered_at, "layer", h.pk, f"Entered layer {h.dimension.name}: {h.layer.name}", left.strip())


def _assignment_entry(a: Any) -> TimelineEntry:
    return TimelineEntry(
        a.assigned_at,
        "assignment",
        a.pk,
        f"Assigned to {a.variant.key} in experiment {a.experiment.key}",
        f"phase {a.phase.number}",
        ("reports:experiment", a.experiment.key),
    )


def _exposure_entry(a: Any) -> TimelineEntry:
    return TimelineEntry(
        a.first_exposed_at,
        "exposure",
        a.pk,
        f"Exposed to {a.variant.key} in experiment {a.experiment.key}",
        f"{a.exposure_count} exposure(s)" + ("; conflicting" if a.conflicting_exposure else ""),
        ("reports:experiment", a.experiment.key),
    )


def _recipient_entry(r: Recipient) -> TimelineEntry:
    variant = f" as {r.variant_key}" if r.variant_key else ""
    return TimelineEntry(
        r.decided_at,
        "decision",
        r.pk,
        f"Campaign {r.campaign.key}: {OUTCOME_LABELS.get(r.outcome, r.outcome)}{variant}",
        ", ".join(x for x in (r.step, r.reason, r.offer.name if r.offer_id and r.offer else "") if x),
        ("monitor:campaign", r.campaign_id),
    )


def _delivery_entry(d: Delivery) -> TimelineEntry:
    reason = f" ({d.get_reason_display()})" if d.reason else ""
    when = f"sent {d.sent_at:%Y-%m-%d %H:%M}" if d.sent_at else ""
    return TimelineEntry(
        d.created_at,
        "message",
        d.pk,
        f"{d.get_channel_display()} from {d.campaign.key}: {d.get_status_display()}{reason}",
        "; ".join(x for x in (when, d.last_error[:160]) if x),
        ("monitor:campaign", d.campaign_id),
    )


def _redemption_entry(c: Coupon) -> TimelineEntry:
    ref = f" (ref {c.redemption_ref})" if c.redemption_ref else ""
    return TimelineEntry(
        c.redeemed_at,  # type: ignore[arg-type]  # filtered non-null
        "redemption",
        c.pk,
        f"Redeemed coupon {c.code} ({c.offer.name}){ref}",
        f"campaign {c.campaign.key}" if c.campaign_id and c.campaign else "",
    )


def _opt_out_entry(o: TopicOptOut) -> TimelineEntry:
    verb = "Opted out of" if o.opted_out else "Subscribed again to"
    return TimelineEntry(
        o.changed_at, "opt_out", o.pk, f"{verb} {o.get_channel_display()} / {o.get_topic_display()}", o.source
    )


SOURCES: tuple[_Source, ...] = (
    _Source("event", _events, "occurred_at", _event_entry),
    _Source(
        "layer",
        lambda cid: segment_selectors.customer_layer_history_queryset(customer_id=cid),
        "entered_at",
        _layer_entry,
    ),
    _Source(
        "assignment",
        lambda cid: experiment_selectors.customer_assignments_queryset(customer_id=cid),
        "assigned_at",
        _assignment_entry,
    ),
    _Source(
        "exposure",
        lambda cid: experiment_selectors.customer_assignments_queryset(customer_id=cid).filter(
            first_exposed_at__isnull=False
        ),
        "first_exposed_at",
        _exposure_entry,
    ),
    _Source(
        "decision",
        lambda cid: Recipient.objects.filter(customer_id=cid).select_related("campaign", "offer"),
        "decided_at",
        _recipient_entry,
    ),
    _Source(
        "message",
        lambda cid: Delivery.objects.filter(customer_id=cid).select_related("campaign"),
        "created_at",
        _delivery_entry,
    ),
    _Source(
        "redemption",
        lambda cid: Coupon.objects.filter(customer_id=cid, redeemed_at__isnull=False).select_related(
            "offer", "campaign"
        ),
        "redeemed_at",
        _redemption_entry,
    ),
    _Source("opt_out", lambda cid: TopicOptOut.objects.filter(customer_id=cid), "changed_at", _opt_out_entry),
)
# Channel consent and opt-out live on the customer's row (read already): no query.
ROW_SOURCE = "consent"
CONSENT_CHANNELS = ("email", "sms", "push")
SOURCE_NAMES = (*(s.name for s in SOURCES), ROW_SOURCE)


def _consent_entries(customer: Any) -> list[TimelineEntry]:
    entries = []
    for i, channel in enumerate(CONSENT_CHANNELS):
        for offset, (field_name, verb) in enumerate(
            ((f"{channel}_consent_at", "Consented to"), (f"{channel}_opt_out_at", "Opted out of"))
        ):
            at = getattr(customer, field_name, None)
            if at is not None:
                entries.append(TimelineEntry(at, ROW_SOURCE, 2 * i + offset + 1, f"{verb} {channel} (channel)"))
    return entries


class BadCursor(ValueError):
    pass


def parse_cursor(value: str) -> tuple[dt.datetime, str, int]:
    """``"<ISO time>|<source>|<id>"`` as written by ``TimelineEntry.cursor``; ``BadCursor`` otherwise."""
    try:
        at_text, source, pk_text = value.split("|")
        at = dt.datetime.fromisoformat(at_text)
        pk = int(pk_text)
    except ValueError as exc:
        raise BadCursor("before: expected '<time>|<source>|<id>' from a 'Older' link.") from exc
    if source not in SOURCE_NAMES or timezone.is_naive(at):
        raise BadCursor("before: unknown source or a time without a time zone.")
    return at, source, pk


def _older_than(source: str, time_field: str, cursor: tuple[dt.datetime, str, int] | None) -> Q:
    """Entries after the cursor in the merged order (time desc, source desc, id desc)."""
    if cursor is None:
        return Q()
    at, cursor_source, pk = cursor
    if source < cursor_source:
        return Q(**{f"{time_field}__lte": at})
    if source > cursor_source:
        return Q(**{f"{time_field}__lt": at})
    return Q(**{f"{time_field}__lt": at}) | Q(**{time_field: at, "pk__lt": pk})


def _sort_key(e: TimelineEntry) -> tuple[dt.datetime, str, int]:
    return (e.at, e.source, e.pk)


def customer_timeline(
    *,
    customer_id: int,
    size: int = 50,
    before: str | None = None,
    sources: Iterable[str] | None = None,
    customer: Any = None,
) -> Timeline:
    """A page of the customer's timeline, newest first (one query per source).
    ``customer``: the customer's row, for its channel consents and opt-outs (no query)."""
    cursor = parse_cursor(before) if before else None
    wanted = set(sources) if sources else set(SOURCE_NAMES)
    entries: list[TimelineEntry] = []
    queries = 0
    for source in SOURCES:
        if source.name not in wanted:
            continue
        rows = (
            source.queryset(customer_id)
            .filter(_older_than(source.name, source.time_field, cursor))
            .order_by(f"-{source.time_field}", "-pk")[: size + 1]
        )
        entries.extend(source.entry(row) for row in rows)
        queries += 1
    if customer is not None and ROW_SOURCE in wanted:
        entries.extend(e for e in _consent_entries(customer) if cursor is None or _sort_key(e) < cursor)
    entries.sort(key=_sort_key, reverse=True)
    page, more = entries[:size], len(entries) > size
    return Timeline(
        entries=tuple(page),
        next_cursor=page[-1].cursor if more and page else None,
        queries=queries,
        sources=tuple(s for s in SOURCE_NAMES if s in wanted),
    )
