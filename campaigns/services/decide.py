"""Deciding for a batch of customers, in one transaction: who is treated, what they get, and
the outbox rows that will carry it.

Order (intent to treat): audience and assignment first, then treatment (offer + content by
variant and layer), then channels (consent), then quiet hours and caps. A batch is read
with one query per kind and written with one ``INSERT … SELECT`` per table (see
``campaigns.services.bulk``); no model instance is built per row. Every customer the
experiment assigned gets a ``Recipient`` row, control and holdout included, and a
"would have sent" delivery row (suppressed, reason control/holdout). The deliveries to send
are created ``pending`` in the same transaction (the transactional outbox), stamped
``enqueued_at``, and enqueued after it commits; if enqueueing fails the stamp is cleared and
the sweeper finds them at its next run (after a crash between commit and publish, once the
stamp is ``requeue_after_seconds`` old).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.db import connection, transaction
from django.utils import timezone

from campaigns import decision, kinds
from campaigns.models import Campaign, Content, Coupon, Delivery, Offer, Recipient, Treatment
from campaigns.models.delivery import delivery_key
from campaigns.services import bulk
from campaigns.services import policy as send_policy
from campaigns.services.assignments import exposures_record, manager_tag, splits_get
from segments import selectors as segment_selectors
from segments.contacts import CONTACT_FIELDS, Channel
from segments.selectors import audience_queryset

if TYPE_CHECKING:
    from segments.models import Customer

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
    return generate_codes(prefix, length, 1)[0]


def _layers_of(campaign: Campaign, customer_ids: Sequence[int]) -> dict[int, int]:
    """Each customer's layer in the campaign's split dimension, one query per layer."""
    if campaign.split_dimension_id is None:
        return {}
    result: dict[int, int] = {}
    base = _customers(customer_ids)
    layer_ids = segment_selectors.layers_queryset(dimension_id=campaign.split_dimension_id).values_list("pk", flat=True)
    for layer_id in layer_ids:
        for cid in audience_queryset(include_layer_ids=[layer_id], base=base).values_list("pk", flat=True):
            result[cid] = layer_id
    return result


def _terms_of(campaign: Campaign, customer_ids: Sequence[int], layers: dict[int, int]) -> dict[int, decision.Term]:
    """Each customer's latest membership term, the expiry window (their layer of the split
    dimension) and whether that term was already offered in that window, by any campaign."""
    memberships = _memberships_of(customer_ids)
    window_keys = dict(segment_selectors.layers_queryset(ids=set(layers.values())).values_list("pk", "key"))
    offered = set(
        Recipient.objects.filter(
            membership_id__in=[m for m, _ in memberships.values()], window_key__in=set(window_keys.values())
        ).values_list("membership_id", "window_key")
    )
    terms = {}
    for customer_id, (membership_id, expires_at) in memberships.items():
        layer_id = layers.get(customer_id)
        if layer_id is None:
            continue
        window = window_keys.get(layer_id, "")
        terms[customer_id] = decision.Term(membership_id, expires_at, window, (membership_id, window) in offered)
    return terms


def _memberships_of(customer_ids: Sequence[int]) -> dict[int, tuple[int, dt.datetime]]:
    """The customer's latest membership term (id, expires_at), for renewals."""
    return segment_selectors.latest_memberships(customers=_customers(customer_ids))


def _customers(customer_ids: Sequence[int]):  # type: ignore[no-untyped-def]
    """The customers with these ids (one JSON parameter, whatever the batch size)."""
    customers = segment_selectors.customers_queryset()
    return customers.filter(bulk.id_in(customers.model, "id", customer_ids))


class TreatmentIndex:
    """A campaign's treatments (rows and content channels) around the pure
    ``campaigns.decision.TreatmentTable`` that resolves (variant, layer, role) to one."""

    def __init__(self, campaign: Campaign) -> None:
        self.treatments = list(Treatment.objects.filter(campaign=campaign).select_related("offer"))
        self.by_id = {t.pk: t for t in self.treatments}
        self.table = decision.TreatmentTable(
            {decision.TreatmentKey(t.variant_key, t.layer_id, t.referral_role): t.pk for t in self.treatments}
        )
        contents = Content.objects.filter(treatment__campaign=campaign)
        self.channels: dict[int, list[str]] = {}
        for content in contents:
            self.channels.setdefault(content.treatment_id, []).append(content.channel)

    def resolve(self, *, variant_key: str, is_control: bool, layer_id: int | None, role: str = "") -> Treatment | None:
        pk = self.table.resolve(variant_key=variant_key, is_control=is_control, layer_id=layer_id, role=role)
        return None if pk is None else self.by_id[pk]

    def covers(self, *, variant_keys: Sequence[str], layer_id: int | None, role: str = "") -> bool:
        """See ``campaigns.decision.TreatmentTable.covers`` (symmetric exposure)."""
        return self.table.covers(variant_keys=variant_keys, layer_id=layer_id, role=role)


def treated_variant_keys(campaign: Campaign) -> list[str]:
    """The experiment's non-control variants ("" alone without an experiment: everyone is
    treated by the "any variant" rows)."""
    if campaign.experiment_id is None:
        return [""]
    from experiments import selectors as experiment_selectors

    return experiment_selectors.variant_keys(experiment_id=campaign.experiment_id, is_control=False)


def campaign_split_audience(*, campaign: Campaign):  # type: ignore[no-untyped-def]
    """The part of the audience the experiment splits: customers whose layer of the split
    dimension every treated variant acts on (see ``TreatmentIndex.covers``). One query:
    the audience restricted to the covered layers; an "any layer" fallback covers everyone,
    customers without a layer included."""
    audience = campaign_audience(campaign=campaign)
    index = TreatmentIndex(campaign)
    keys = treated_variant_keys(campaign)
    if index.covers(variant_keys=keys, layer_id=None):
        return audience
    if campaign.split_dimension_id is None:
        return audience.none()
    layer_ids = segment_selectors.layers_queryset(dimension_id=campaign.split_dimension_id).values_list("pk", flat=True)
    covered = [pk for pk in layer_ids if index.covers(variant_keys=keys, layer_id=pk)]
    if not covered:
        return audience.none()
    return audience_queryset(include_layer_ids=covered, base=audience)


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


def generate_codes(prefix: str, length: int, count: int) -> list[str]:
    """``count`` codes from the unambiguous alphabet: one read of the OS's CSPRNG, each
    byte mapped to one of 32 letters (256 = 8 × 32, so every letter is equally likely)."""
    table = bytes.maketrans(bytes(range(256)), CODE_ALPHABET.encode() * 8)
    letters = secrets.token_bytes(length * count).translate(table).decode()
    return [prefix + letters[i * length : (i + 1) * length] for i in range(count)]


@dataclass(slots=True)
class _Decision:
    """One ``Recipient`` row being decided (written set-based, not as a model instance)."""

    customer_id: int
    step: str
    reason: str
    variant_key: str
    assignment_id: int | None
    layer_id: int | None
    outcome: str = ""
    treatment: Treatment | None = None
    membership_id: int | None = None
    window_key: str = ""
    membership_expires: dt.datetime | None = None
    pk: int = 0

    @property
    def offer(self) -> Offer | None:
        return self.treatment.offer if self.treatment is not None else None

    @classmethod
    def of(cls, verdict: decision.Verdict, index: TreatmentIndex) -> _Decision:
        return cls(
            customer_id=verdict.customer_id,
            step=verdict.step,
            reason=verdict.reason,
            variant_key=verdict.variant_key,
            assignment_id=verdict.assignment_id,
            layer_id=verdict.layer_id,
            outcome=verdict.outcome,
            treatment=index.by_id[verdict.treatment_id] if verdict.treatment_id is not None else None,
            membership_id=verdict.membership_id,
            window_key=verdict.window_key,
            membership_expires=verdict.membership_expires,
        )


_RECIPIENT_FIELDS = (
    "campaign",
    "customer",
    "step",
    "outcome",
    "reason",
    "variant_key",
    "assignment_id",
    "layer",
    "treatment",
    "offer",
    "membership",
    "window_key",
    "decided_at",
)


def _recipients_insert(*, campaign: Campaign, decisions: list[_Decision], now: dt.datetime) -> None:
    rows = [
        (
            campaign.pk,
            d.customer_id,
            d.step,
            d.outcome,
            d.reason,
            d.variant_key,
            d.assignment_id,
            d.layer_id,
            d.treatment.pk if d.treatment is not None else None,
            d.treatment.offer_id if d.treatment is not None else None,
            d.membership_id,
            d.window_key,
            now,
        )
        for d in decisions
    ]
    ids = {
        (customer_id, step): pk
        for pk, customer_id, step in bulk.rows_insert(
            Recipient, _RECIPIENT_FIELDS, rows, returning=("id", "customer", "step")
        )
    }
    for d in decisions:
        d.pk = ids[(d.customer_id, d.step)]


def _decided_before(campaign: Campaign, targets: Sequence[Target]) -> set[tuple[int, str]]:
    """The (customer, step) pairs of ``targets`` already decided in ``campaign``.

    On PostgreSQL, one probe of the (campaign, customer, step) unique index per customer,
    behind an optimization fence (``OFFSET 0`` in a ``LATERAL`` subquery). Left to itself,
    the planner (recipients inserted since the last ANALYZE, so estimated at a handful of
    rows) scanned every recipient of the campaign and step and tested each against the
    batch's 1,000 ids: a cost growing with the campaign, 100-150 ms per batch at 15,000
    recipients and most of the database's time in a 100,000-message send."""
    customer_ids = sorted({t.customer_id for t in targets})
    steps = sorted({t.step for t in targets})
    if connection.vendor != "postgresql":
        return set(
            Recipient.objects.filter(
                bulk.id_in(Recipient, "customer", customer_ids), campaign=campaign, step__in=steps
            ).values_list("customer_id", "step")
        )
    table = connection.ops.quote_name(Recipient._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT r.customer_id, r.step FROM unnest(%s::bigint[]) AS t(id) CROSS JOIN LATERAL ("
            f"SELECT customer_id, step FROM {table} "
            "WHERE campaign_id = %s AND customer_id = t.id AND step = ANY(%s::text[]) OFFSET 0) AS r",
            [customer_ids, campaign.pk, steps],
        )
        return {(customer_id, step) for customer_id, step in cursor.fetchall()}


@transaction.atomic
def recipients_decide(*, campaign: Campaign, targets: Sequence[Target], now: dt.datetime | None = None) -> DecideResult:
    """Decide for ``targets`` (customers already known to be in the audience). Idempotent:
    a (campaign, customer, step) decided before is skipped.

    Reads are one query per kind for the whole batch (existing decisions, customers,
    assignments, layers, memberships); the decision itself is a dictionary lookup per
    customer; writes are one ``INSERT … SELECT`` per table (recipients, coupons,
    deliveries, cap slots) and one ``UPDATE`` for the exposures."""
    now = now or timezone.now()
    if not targets:
        return DecideResult()
    existing = _decided_before(campaign, targets)
    targets = [t for t in targets if (t.customer_id, t.step) not in existing]
    if not targets:
        return DecideResult()
    customer_ids = sorted({t.customer_id for t in targets})
    contact_fields = [field for fields in CONTACT_FIELDS.values() for field in fields]
    customers = {c.pk: c for c in _customers(customer_ids).only("timezone", *contact_fields)}
    layers = _layers_of(campaign, customer_ids)
    index = TreatmentIndex(campaign)
    variant_keys = treated_variant_keys(campaign)
    covered = {
        (t.customer_id, t.role)
        for t in targets
        if index.covers(variant_keys=variant_keys, layer_id=layers.get(t.customer_id), role=t.role)
    }
    # Only covered customers are split: an uncovered one is never assigned (nor exposed).
    splits = splits_get(
        experiment=campaign.experiment,
        customer_ids=sorted({cid for cid, _ in covered}),
        manager=manager_tag(campaign.pk),
    )
    terms = _terms_of(campaign, customer_ids, layers) if kinds.kind_module(campaign.kind).OFFERS_PER_TERM else {}

    decisions: list[_Decision] = []
    for target in targets:
        if target.customer_id not in customers:
            continue
        is_covered = (target.customer_id, target.role) in covered
        verdict = decision.decide(
            decision.Candidate(
                customer_id=target.customer_id,
                step=target.step,
                layer_id=layers.get(target.customer_id),
                covered=is_covered,
                split=splits[target.customer_id] if is_covered else None,
                role=target.role,
                term=terms.get(target.customer_id),
            ),
            index.table,
        )
        decisions.append(_Decision.of(verdict, index))
    _recipients_insert(campaign=campaign, decisions=decisions, now=now)

    grants = [
        (d, offer, _coupon_expiry(offer=offer, campaign=campaign, now=now, membership_expires=d.membership_expires))
        for d in decisions
        if d.outcome == Recipient.Outcome.TREATED
        and (offer := d.offer) is not None
        and offer.code_source != Offer.CodeSource.NONE
    ]
    no_coupon = _issue_coupons(campaign=campaign, grants=grants, now=now)
    deliveries = _deliveries_for(
        campaign=campaign, decisions=decisions, customers=customers, index=index, no_coupon=no_coupon, now=now
    )
    delivered = {d.recipient_id for d in deliveries if d.status != Delivery.Status.SUPPRESSED}
    _void_coupons([d.pk for d, _, _ in grants if d.pk not in delivered])
    exposed = [
        (d.assignment_id, d.variant_key)
        for d in decisions
        if d.assignment_id is not None and d.outcome in (decision.TREATED, decision.CONTROL)
    ]
    if exposed:
        exposures_record(assignments=exposed, at=now)
    counts: dict[str, int] = {}
    for d in deliveries:
        label = d.status if d.status != Delivery.Status.SUPPRESSED else f"suppressed:{d.reason}"
        counts[label] = counts.get(label, 0) + 1
    channels = {d.pk: d.channel for d in deliveries if d.status == Delivery.Status.PENDING}
    pending = tuple(channels)
    if pending:
        from campaigns.services.outbox import deliveries_enqueue_on_commit

        deliveries_enqueue_on_commit(delivery_ids=pending, marked=True, channels=channels)
    return DecideResult(recipients=len(decisions), pending_ids=pending, counts=counts)


def _issue_coupons(
    *, campaign: Campaign, grants: list[tuple[_Decision, Offer, dt.datetime | None]], now: dt.datetime
) -> set[int]:
    """Issue one coupon per granted recipient; return the recipient ids left without one
    (pool exhausted)."""
    generated = [g for g in grants if g[1].code_source == Offer.CodeSource.GENERATED]
    by_prefix: dict[str, list[tuple[_Decision, Offer, dt.datetime | None]]] = {}
    for grant in generated:
        by_prefix.setdefault(grant[1].code_prefix, []).append(grant)
    rows = []
    for prefix, prefix_grants in by_prefix.items():
        codes = generate_codes(prefix, 10, len(prefix_grants))
        rows += [
            (offer.pk, code, Coupon.Source.GENERATED, d.customer_id, campaign.pk, d.pk, now, expires)
            for (d, offer, expires), code in zip(prefix_grants, codes, strict=True)
        ]
    bulk.rows_insert(
        Coupon, ("offer", "code", "source", "customer", "campaign", "recipient", "issued_at", "expires_at"), rows
    )
    missing: set[int] = set()
    pooled: dict[int, list[tuple[_Decision, Offer, dt.datetime | None]]] = {}
    for grant in grants:
        if grant[1].code_source == Offer.CodeSource.POOL:
            pooled.setdefault(grant[1].pk, []).append(grant)
    for offer_id, offer_grants in pooled.items():
        free = list(
            Coupon.objects.select_for_update(skip_locked=True)
            .filter(offer_id=offer_id, customer__isnull=True)
            .order_by("pk")[: len(offer_grants)]
        )
        for coupon, (row, _, expires) in zip(free, offer_grants, strict=False):
            coupon.customer_id = row.customer_id
            coupon.campaign = campaign
            coupon.recipient_id = row.pk
            coupon.issued_at = now
            coupon.expires_at = expires
        Coupon.objects.bulk_update(free, ["customer", "campaign", "recipient", "issued_at", "expires_at"])
        missing |= {row.pk for row, _, _ in offer_grants[len(free) :]}
    return missing


def _void_coupons(recipient_ids: list[int]) -> None:
    """A coupon nobody will be told about (every message suppressed) is withdrawn: generated
    codes are deleted, pool codes go back to the pool."""
    if not recipient_ids:
        return
    Coupon.objects.filter(recipient_id__in=recipient_ids, source=Coupon.Source.GENERATED).delete()
    Coupon.objects.filter(recipient_id__in=recipient_ids, source=Coupon.Source.POOL).update(
        customer=None, campaign=None, recipient=None, issued_at=None, expires_at=None
    )


@dataclass(slots=True)
class _Outgoing:
    """One ``Delivery`` row being written (set-based, not as a model instance)."""

    recipient_id: int
    customer_id: int
    step: str
    channel: str
    key: str
    status: str
    reason: str = ""
    not_before: dt.datetime | None = None
    sent_at: dt.datetime | None = None
    provider_ref: str = ""
    pk: int = 0


_DELIVERY_FIELDS = (
    "recipient",
    "campaign",
    "customer",
    "step",
    "channel",
    "key",
    "status",
    "reason",
    "not_before",
    "max_attempts",
    "sent_at",
    "provider_ref",
    "enqueued_at",
    "created_at",
)


def _deliveries_for(
    *,
    campaign: Campaign,
    decisions: Sequence[_Decision],
    customers: dict[int, Customer],
    index: TreatmentIndex,
    no_coupon: set[int],
    now: dt.datetime,
) -> list[_Outgoing]:
    policies = send_policy.policies_get()
    rows: list[_Outgoing] = []
    default_channels = _ordered_channels(campaign, campaign.channels)
    channels_of: dict[int, list[str]] = {}

    def make(row: _Decision, channel: str, status: str, reason: str = "", **extra: Any) -> _Outgoing:
        return _Outgoing(
            recipient_id=row.pk,
            customer_id=row.customer_id,
            step=row.step,
            channel=channel,
            key=delivery_key(campaign.pk, row.customer_id, row.step, channel),
            status=status,
            reason=reason,
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

    for row in decisions:
        customer = customers[row.customer_id]
        if row.outcome in (Recipient.Outcome.CONTROL, Recipient.Outcome.HOLDOUT):
            usable, _ = pick(customer, default_channels)
            control = row.outcome == Recipient.Outcome.CONTROL
            reason = Delivery.Reason.CONTROL if control else Delivery.Reason.HOLDOUT
            for channel in usable or default_channels[:1]:
                rows.append(make(row, channel, Delivery.Status.SUPPRESSED, reason))
            continue
        if row.outcome != Recipient.Outcome.TREATED or row.treatment is None:
            continue
        treatment_id = row.treatment.pk
        if treatment_id not in channels_of:
            channels_of[treatment_id] = _ordered_channels(campaign, index.channels.get(treatment_id, []))
        channels = channels_of[treatment_id]
        if not channels:
            rows.append(make(row, (default_channels or ["email"])[0], Delivery.Status.SUPPRESSED, "no_content"))
            continue
        if row.pk in no_coupon:
            rows.append(make(row, channels[0], Delivery.Status.SUPPRESSED, Delivery.Reason.NO_COUPON))
            continue
        usable, refused = pick(customer, channels)
        for channel, reason in refused:
            rows.append(make(row, channel, Delivery.Status.SUPPRESSED, reason))
        for channel in usable:
            if channel == Channel.IN_APP:
                rows.append(make(row, channel, Delivery.Status.SENT, sent_at=now, provider_ref="in_app"))
                continue
            held_until = None
            if not campaign.is_transactional:
                held_until = send_policy.quiet_until(policies.get(channel), tz=customer.timezone, at=now)
            if held_until is not None:
                rows.append(
                    make(row, channel, Delivery.Status.HELD, Delivery.Reason.QUIET_HOURS, not_before=held_until)
                )
            else:
                rows.append(make(row, channel, Delivery.Status.PENDING))
    ids = dict(
        bulk.rows_insert(
            Delivery,
            _DELIVERY_FIELDS,
            [
                (
                    d.recipient_id,
                    campaign.pk,
                    d.customer_id,
                    d.step,
                    d.channel,
                    d.key,
                    d.status,
                    d.reason,
                    d.not_before,
                    campaign.max_attempts,
                    d.sent_at,
                    d.provider_ref,
                    now if d.status == Delivery.Status.PENDING else None,  # published at commit
                    now,
                )
                for d in rows
            ],
            returning=("key", "id"),
        )
    )
    for d in rows:
        d.pk = ids[d.key]

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
            Delivery.objects.filter(bulk.id_in(Delivery, "id", sorted(capped))).update(
                status=Delivery.Status.SUPPRESSED, reason=Delivery.Reason.CAPPED, not_before=None, enqueued_at=None
            )
            for d in rows:
                if d.pk in capped:
                    d.status, d.reason = Delivery.Status.SUPPRESSED, Delivery.Reason.CAPPED
    return rows
