"""Deciding for a batch of customers, in one transaction: who is treated, what they get, and
the outbox rows that will carry it.

Order (intent to treat): audience and assignment first, then treatment (offer + content by
variant and layer), then channels (consent), then quiet hours and caps. Every customer the
experiment assigned gets a ``Recipient`` row, control and holdout included, and a
"would have sent" delivery row (suppressed, reason control/holdout). The deliveries to send
are created ``pending`` in the same transaction (the transactional outbox) and enqueued after
it commits; if enqueueing fails the sweeper finds them.
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from campaigns.models import Campaign, Content, Coupon, Delivery, Offer, Recipient, Treatment
from campaigns.models.delivery import delivery_key
from campaigns.services import policy as send_policy
from campaigns.services.assignments import Split, exposures_record, splits_get
from segments.models import CONTACT_FIELDS, Channel, Customer, Layer, Membership
from segments.selectors import audience_queryset

logger = logging.getLogger(__name__)

CODE_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I


@dataclass(frozen=True)
class Target:
    customer_id: int
    step: str
    role: str = ""  # referral: "inviter" | "invitee"


@dataclass(frozen=True)
class DecideResult:
    recipients: int = 0
    pending_ids: tuple[int, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)


def campaign_audience(*, campaign: Campaign, base=None):  # type: ignore[no-untyped-def]
    return audience_queryset(
        include_segment_ids=campaign.include_segments.values_list("pk", flat=True),
        exclude_segment_ids=campaign.exclude_segments.values_list("pk", flat=True),
        include_layer_ids=campaign.include_layers.values_list("pk", flat=True),
        exclude_layer_ids=campaign.exclude_layers.values_list("pk", flat=True),
        base=base,
    )


def generate_code(prefix: str = "", length: int = 10) -> str:
    return prefix + "".join(secrets.choice(CODE_ALPHABET) for _ in range(length))


def _layers_of(campaign: Campaign, customer_ids: Sequence[int]) -> dict[int, int]:
    """Each customer's layer in the campaign's split dimension, one query per layer."""
    if campaign.split_dimension_id is None:
        return {}
    result: dict[int, int] = {}
    base = Customer.objects.filter(pk__in=list(customer_ids))
    for layer_id in Layer.objects.filter(dimension_id=campaign.split_dimension_id).values_list("pk", flat=True):
        for cid in audience_queryset(include_layer_ids=[layer_id], base=base).values_list("pk", flat=True):
            result[cid] = layer_id
    return result


def _memberships_of(customer_ids: Sequence[int]) -> dict[int, tuple[int, dt.datetime]]:
    """The customer's latest membership term (id, expires_at), for renewals."""
    latest = Membership.objects.filter(customer_id=OuterRef("pk")).order_by("-expires_at", "-pk")
    rows = (
        Customer.objects.filter(pk__in=list(customer_ids))
        .annotate(mid=Subquery(latest.values("pk")[:1]), mexp=Subquery(latest.values("expires_at")[:1]))
        .filter(mid__isnull=False)
        .values_list("pk", "mid", "mexp")
    )
    return {cid: (mid, mexp) for cid, mid, mexp in rows}


class TreatmentIndex:
    """Resolves (variant, layer, role) to the most specific treatment of a campaign."""

    def __init__(self, campaign: Campaign) -> None:
        self.treatments = list(Treatment.objects.filter(campaign=campaign).select_related("offer"))
        self.by_key = {(t.variant_key, t.layer_id, t.referral_role): t for t in self.treatments}
        contents = Content.objects.filter(treatment__campaign=campaign)
        self.channels: dict[int, list[str]] = {}
        for content in contents:
            self.channels.setdefault(content.treatment_id, []).append(content.channel)

    def resolve(self, *, variant_key: str, is_control: bool, layer_id: int | None, role: str = "") -> Treatment | None:
        """Most specific first: the variant before "any variant" (never for control), the
        layer before "any layer", the referral role before "both roles"."""
        variants = [variant_key] if is_control else [variant_key, ""]
        roles = [role, ""] if role else [""]
        for r in roles:
            for v in variants:
                for layer in (layer_id, None):
                    treatment = self.by_key.get((v, layer, r))
                    if treatment is not None:
                        return treatment
        return None


def _ordered_channels(campaign: Campaign, available: Sequence[str]) -> list[str]:
    order = [c for c in campaign.channels if c in Channel.values] or list(Channel.values)
    return [c for c in order if c in available]


def _coupon_expiry(
    *, offer: Offer, campaign: Campaign, now: dt.datetime, membership_expires: dt.datetime | None
) -> dt.datetime | None:
    candidates = [offer.valid_until, campaign.ends_at]
    if offer.validity_days is not None:
        candidates.append(now + dt.timedelta(days=offer.validity_days))
    if offer.expires_after_membership_days is not None and membership_expires is not None:
        candidates.append(membership_expires + dt.timedelta(days=offer.expires_after_membership_days))
    present = [c for c in candidates if c is not None]
    return min(present) if present else None


def _issue_coupons(
    *, campaign: Campaign, grants: list[tuple[Recipient, Offer, dt.datetime | None]], now: dt.datetime
) -> set[int]:
    """Issue one coupon per granted recipient; return the recipient ids left without one
    (pool exhausted)."""
    generated = [g for g in grants if g[1].code_source == Offer.CodeSource.GENERATED]
    rows = [
        Coupon(
            offer=offer,
            code=generate_code(offer.code_prefix),
            source=Coupon.Source.GENERATED,
            customer_id=recipient.customer_id,
            campaign=campaign,
            recipient=recipient,
            issued_at=now,
            expires_at=expires,
        )
        for recipient, offer, expires in generated
    ]
    Coupon.objects.bulk_create(rows, batch_size=1000)
    missing: set[int] = set()
    pooled: dict[int, list[tuple[Recipient, Offer, dt.datetime | None]]] = {}
    for grant in grants:
        if grant[1].code_source == Offer.CodeSource.POOL:
            pooled.setdefault(grant[1].pk, []).append(grant)
    for offer_id, offer_grants in pooled.items():
        free = list(
            Coupon.objects.select_for_update(skip_locked=True)
            .filter(offer_id=offer_id, customer__isnull=True)
            .order_by("pk")[: len(offer_grants)]
        )
        for coupon, (recipient, _, expires) in zip(free, offer_grants, strict=False):
            coupon.customer_id = recipient.customer_id
            coupon.campaign = campaign
            coupon.recipient = recipient
            coupon.issued_at = now
            coupon.expires_at = expires
        Coupon.objects.bulk_update(free, ["customer", "campaign", "recipient", "issued_at", "expires_at"])
        missing |= {recipient.pk for recipient, _, _ in offer_grants[len(free) :]}
    return missing


@transaction.atomic
def recipients_decide(*, campaign: Campaign, targets: Sequence[Target], now: dt.datetime | None = None) -> DecideResult:
    """Decide for ``targets`` (customers already known to be in the audience). Idempotent:
    a (campaign, customer, step) decided before is skipped."""
    now = now or timezone.now()
    if not targets:
        return DecideResult()
    existing = set(
        Recipient.objects.filter(
            campaign=campaign, customer_id__in={t.customer_id for t in targets}, step__in={t.step for t in targets}
        ).values_list("customer_id", "step")
    )
    targets = [t for t in targets if (t.customer_id, t.step) not in existing]
    if not targets:
        return DecideResult()
    customer_ids = sorted({t.customer_id for t in targets})
    contact_fields = [field for fields in CONTACT_FIELDS.values() for field in fields]
    customers = {c.pk: c for c in Customer.objects.filter(pk__in=customer_ids).only("timezone", *contact_fields)}
    splits = splits_get(experiment=campaign.experiment, customer_ids=customer_ids)
    layers = _layers_of(campaign, customer_ids)
    index = TreatmentIndex(campaign)
    memberships: dict[int, tuple[int, dt.datetime]] = {}
    window_keys: dict[int, str] = {}
    if campaign.kind == Campaign.Kind.RENEWAL:
        memberships = _memberships_of(customer_ids)
        window_keys = dict(Layer.objects.filter(pk__in=set(layers.values())).values_list("pk", "key"))
        offered = set(
            Recipient.objects.filter(
                membership_id__in=[m for m, _ in memberships.values()], window_key__in=set(window_keys.values())
            ).values_list("membership_id", "window_key")
        )
    else:
        offered = set()

    recipients: list[Recipient] = []
    for target in targets:
        customer = customers.get(target.customer_id)
        if customer is None:
            continue
        split: Split = splits[target.customer_id]
        layer_id = layers.get(target.customer_id)
        row = Recipient(
            campaign=campaign,
            customer_id=target.customer_id,
            step=target.step,
            reason=split.reason,
            variant_key=split.variant_key,
            assignment_id=split.assignment_id,
            layer_id=layer_id,
            decided_at=now,
        )
        membership = memberships.get(target.customer_id)
        if membership is not None and layer_id is not None:
            window = window_keys.get(layer_id, "")
            if (membership[0], window) in offered:
                row.outcome, row.reason = Recipient.Outcome.EXCLUDED, "renewal_already_offered"
                recipients.append(row)
                continue
            row.membership_id, row.window_key = membership[0], window
            row._membership_expires = membership[1]  # type: ignore[attr-defined]
        if split.reason == "holdout":
            row.outcome = Recipient.Outcome.HOLDOUT
        elif not split.is_assigned:
            row.outcome = Recipient.Outcome.EXCLUDED
        else:
            treatment = index.resolve(
                variant_key=split.variant_key, is_control=split.is_control, layer_id=layer_id, role=target.role
            )
            if split.is_control and treatment is None:
                row.outcome = Recipient.Outcome.CONTROL
            elif treatment is None:
                row.outcome, row.reason = Recipient.Outcome.EXCLUDED, "no_treatment"
            else:
                row.outcome = Recipient.Outcome.TREATED
                row.treatment, row.offer = treatment, treatment.offer
        if row.outcome != Recipient.Outcome.TREATED:
            row.membership_id, row.window_key = None, ""
        recipients.append(row)
    Recipient.objects.bulk_create(recipients, batch_size=1000)

    grants = [
        (r, r.offer, _coupon_expiry(offer=r.offer, campaign=campaign, now=now, membership_expires=_mexp(r)))
        for r in recipients
        if r.outcome == Recipient.Outcome.TREATED
        and r.offer is not None
        and r.offer.code_source != Offer.CodeSource.NONE
    ]
    no_coupon = _issue_coupons(campaign=campaign, grants=grants, now=now)
    deliveries = _deliveries_for(
        campaign=campaign, recipients=recipients, customers=customers, index=index, no_coupon=no_coupon, now=now
    )
    delivered = {d.recipient_id for d in deliveries if d.status != Delivery.Status.SUPPRESSED}
    _void_coupons([r.pk for r, _, _ in grants if r.pk not in delivered])
    exposed = [
        (r.assignment_id, r.variant_key)
        for r in recipients
        if r.assignment_id is not None and r.outcome in (Recipient.Outcome.TREATED, Recipient.Outcome.CONTROL)
    ]
    if exposed:
        exposures_record(assignments=exposed, at=now)
    counts: dict[str, int] = {}
    for d in deliveries:
        label = d.status if d.status != Delivery.Status.SUPPRESSED else f"suppressed:{d.reason}"
        counts[label] = counts.get(label, 0) + 1
    pending = tuple(d.pk for d in deliveries if d.status == Delivery.Status.PENDING)
    if pending:
        from campaigns.services.outbox import deliveries_enqueue_on_commit

        deliveries_enqueue_on_commit(delivery_ids=pending)
    return DecideResult(recipients=len(recipients), pending_ids=pending, counts=counts)


def _void_coupons(recipient_ids: list[int]) -> None:
    """A coupon nobody will be told about (every message suppressed) is withdrawn: generated
    codes are deleted, pool codes go back to the pool."""
    if not recipient_ids:
        return
    Coupon.objects.filter(recipient_id__in=recipient_ids, source=Coupon.Source.GENERATED).delete()
    Coupon.objects.filter(recipient_id__in=recipient_ids, source=Coupon.Source.POOL).update(
        customer=None, campaign=None, recipient=None, issued_at=None, expires_at=None
    )


def _mexp(recipient: Recipient) -> dt.datetime | None:
    return getattr(recipient, "_membership_expires", None)


def _deliveries_for(
    *,
    campaign: Campaign,
    recipients: Sequence[Recipient],
    customers: dict[int, Customer],
    index: TreatmentIndex,
    no_coupon: set[int],
    now: dt.datetime,
) -> list[Delivery]:
    policies = send_policy.policies_get()
    rows: list[Delivery] = []
    default_channels = _ordered_channels(campaign, campaign.channels)

    def make(recipient: Recipient, channel: str, status: str, reason: str = "", **extra: object) -> Delivery:
        return Delivery(
            recipient=recipient,
            campaign=campaign,
            customer_id=recipient.customer_id,
            step=recipient.step,
            channel=channel,
            key=delivery_key(campaign.pk, recipient.customer_id, recipient.step, channel),
            status=status,
            reason=reason,
            max_attempts=campaign.max_attempts,
            created_at=now,
            **extra,
        )

    def pick(customer: Customer, channels: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
        """(channels to use, [(channel, refusal reason)]) under the campaign's strategy."""
        usable, refused = [], []
        for channel in channels:
            if customer.can_receive(channel):
                usable.append(channel)
                if campaign.channel_strategy == Campaign.ChannelStrategy.FIRST_REACHABLE:
                    return usable, []
            else:
                contact = {"email": customer.email, "sms": customer.phone, "push": customer.push_token}.get(channel)
                refused.append((channel, Delivery.Reason.NO_CONTACT if not contact else Delivery.Reason.NO_CONSENT))
        if campaign.channel_strategy == Campaign.ChannelStrategy.FIRST_REACHABLE:
            return [], refused[:1]
        return usable, refused

    for recipient in recipients:
        customer = customers[recipient.customer_id]
        if recipient.outcome in (Recipient.Outcome.CONTROL, Recipient.Outcome.HOLDOUT):
            usable, _ = pick(customer, default_channels)
            control = recipient.outcome == Recipient.Outcome.CONTROL
            reason = Delivery.Reason.CONTROL if control else Delivery.Reason.HOLDOUT
            for channel in usable or default_channels[:1]:
                rows.append(make(recipient, channel, Delivery.Status.SUPPRESSED, reason))
            continue
        if recipient.outcome != Recipient.Outcome.TREATED:
            continue
        channels = _ordered_channels(campaign, index.channels.get(recipient.treatment_id, []))
        if not channels:
            rows.append(make(recipient, (default_channels or ["email"])[0], Delivery.Status.SUPPRESSED, "no_content"))
            continue
        if recipient.pk in no_coupon:
            rows.append(make(recipient, channels[0], Delivery.Status.SUPPRESSED, Delivery.Reason.NO_COUPON))
            continue
        usable, refused = pick(customer, channels)
        for channel, reason in refused:
            rows.append(make(recipient, channel, Delivery.Status.SUPPRESSED, reason))
        for channel in usable:
            if channel == Channel.IN_APP:
                rows.append(make(recipient, channel, Delivery.Status.SENT, sent_at=now, provider_ref="in_app"))
                continue
            held_until = None
            if not campaign.is_transactional:
                held_until = send_policy.quiet_until(policies.get(channel), tz=customer.timezone, at=now)
            if held_until is not None:
                rows.append(
                    make(recipient, channel, Delivery.Status.HELD, Delivery.Reason.QUIET_HOURS, not_before=held_until)
                )
            else:
                rows.append(make(recipient, channel, Delivery.Status.PENDING))
    Delivery.objects.bulk_create(rows, batch_size=1000)

    if not campaign.is_transactional:
        requests = []
        for d in rows:
            if d.status not in (Delivery.Status.PENDING, Delivery.Status.HELD):
                continue
            day, week = send_policy.local_periods(tz=customers[d.customer_id].timezone, at=d.not_before or now)
            requests.append(
                send_policy.CapRequest(ref=d.pk, customer_id=d.customer_id, channel=d.channel, day=day, week=week)
            )
        capped = send_policy.cap_slots_take(requests=requests, policies=policies, now=now)
        if capped:
            Delivery.objects.filter(pk__in=capped).update(
                status=Delivery.Status.SUPPRESSED, reason=Delivery.Reason.CAPPED, not_before=None
            )
            for d in rows:
                if d.pk in capped:
                    d.status, d.reason = Delivery.Status.SUPPRESSED, Delivery.Reason.CAPPED
    return rows
