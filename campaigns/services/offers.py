"""Coupons (pool upload, redemption) and a customer's current offers (the offer API).

Redemption is one conditional UPDATE — ``… WHERE code = %s AND customer_id = %s AND
redeemed_at IS NULL AND (expires_at IS NULL OR expires_at > now)`` — on the coupon row
itself (no join in the UPDATE, so PostgreSQL re-checks every condition on the row it
locked): of any number of concurrent attempts exactly one updates a row. The winner writes
a ``coupon_redeemed`` event in the same transaction, so redemptions can be an experiment's
goal metric.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from campaigns.content import CustomerLocale, render_message
from campaigns.models import Campaign, Content, Coupon, Delivery, Offer, Recipient
from campaigns.models.offers import validate_code
from campaigns.selectors import (
    CustomerOffer,
    offer_campaigns_queryset,
    recipient_coupon,
    recipient_latest,
)
from campaigns.services import assignments
from campaigns.services.decide import Target, campaign_audience, recipients_decide
from campaigns.services.events import event_write
from campaigns.services.render import content_fields, message_context
from segments.contacts import Channel
from segments.selectors import customers_queryset

if TYPE_CHECKING:
    from segments.models import Customer


logger = logging.getLogger(__name__)


class CouponError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code  # "not_found" | "already_redeemed" | "expired"
        self.message = message


@transaction.atomic
def coupon_redeem(*, code: str, customer: Customer, reference: str = "", now: dt.datetime | None = None) -> Coupon:
    """Redeem ``code`` for ``customer``. Raises ``CouponError``; a code that is not this
    customer's answers exactly like an unknown code."""
    now = now or timezone.now()
    code = code.strip().upper()
    updated = (
        Coupon.objects.filter(code=code, customer_id=customer.pk, redeemed_at__isnull=True)
        .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
        .update(redeemed_at=now, redemption_ref=reference[:128])
    )
    coupon = Coupon.objects.select_related("offer", "campaign").filter(code=code, customer_id=customer.pk).first()
    if coupon is None:
        raise CouponError("not_found", f"No coupon '{code}' for customer '{customer.external_id}'.")
    if not updated:
        if coupon.redeemed_at is not None:
            raise CouponError("already_redeemed", f"Coupon '{code}' was already redeemed.")
        raise CouponError("expired", f"Coupon '{code}' expired at {coupon.expires_at:%Y-%m-%dT%H:%M:%SZ}.")
    event_write(
        event_id=f"coupon_redeemed:{coupon.code}",
        customer_external_id=customer.external_id,
        type="coupon_redeemed",
        occurred_at=now,
        properties={
            "coupon": coupon.code,
            "offer": coupon.offer.key,
            "campaign": coupon.campaign.key if coupon.campaign else "",
            "reference": reference,
        },
    )
    return coupon


def coupon_pool_upload(*, offer: Offer, codes: Iterable[str]) -> tuple[int, int]:
    """Add unassigned codes to an offer's pool; return (added, skipped as duplicates).
    Raises ``ValidationError`` (field ``codes``) naming the first malformed code."""
    cleaned: list[str] = []
    for line_no, raw in enumerate(codes, start=1):
        code = raw.strip().upper()
        if not code:
            continue
        try:
            validate_code(code)
        except ValidationError as exc:
            raise ValidationError({"codes": f"Line {line_no}: '{code}': {exc.messages[0]}"}) from exc
        cleaned.append(code)
    unique = list(dict.fromkeys(cleaned))
    if offer.code_source != Offer.CodeSource.POOL:
        raise ValidationError({"offer": "This offer generates its codes; set its code source to 'pool' first."})
    before = Coupon.objects.filter(offer=offer).count()
    with transaction.atomic():
        for start in range(0, len(unique), 1000):
            Coupon.objects.bulk_create(
                [Coupon(offer=offer, code=c, source=Coupon.Source.POOL) for c in unique[start : start + 1000]],
                ignore_conflicts=True,
            )
    added = Coupon.objects.filter(offer=offer).count() - before
    return added, len(cleaned) - added


def _benefit(offer: Offer) -> dict[str, object]:
    return {
        "offer": offer.key,
        "name": offer.name,
        "kind": offer.benefit_kind,
        "value": format(offer.value.normalize(), "f"),
        "currency": offer.currency,
        "description": offer.describe(),
    }


_OPEN = (Delivery.Status.PENDING, Delivery.Status.HELD, Delivery.Status.SENDING, Delivery.Status.SENT)


def _customer_offer(campaign: Campaign, customer: Customer, recipient: Recipient | None) -> CustomerOffer:
    base = {"campaign_key": campaign.key, "campaign_name": campaign.name, "campaign_kind": campaign.kind}
    if recipient is None:
        reason = "not_triggered" if campaign.is_triggered else "not_in_audience"
        return CustomerOffer(**base, status="none", reason=reason)
    if recipient.outcome == Recipient.Outcome.CONTROL:
        return CustomerOffer(**base, status="none", reason="control", variant_key=recipient.variant_key)
    if recipient.outcome == Recipient.Outcome.HOLDOUT:
        return CustomerOffer(**base, status="none", reason="holdout")
    if recipient.outcome == Recipient.Outcome.EXCLUDED:
        return CustomerOffer(**base, status="none", reason=recipient.reason or "excluded")
    # A recipient's deliveries share its (campaign, customer, step): the unique key's prefix
    # finds them by index (there is no index on the recipient column).
    deliveries = list(
        Delivery.objects.filter(
            campaign_id=recipient.campaign_id,
            customer_id=recipient.customer_id,
            step=recipient.step,
            recipient=recipient,
        ).values_list("channel", "status", "reason")
    )
    if deliveries and not any(status in _OPEN for _, status, _ in deliveries):
        reasons = [reason for _, _, reason in deliveries if reason]
        return CustomerOffer(
            **base, status="none", reason=reasons[0] if reasons else "not_delivered", variant_key=recipient.variant_key
        )
    coupon = recipient_coupon(recipient=recipient)
    message = None
    if any(channel == Channel.IN_APP and status in _OPEN for channel, status, _ in deliveries):
        content = Content.objects.filter(treatment_id=recipient.treatment_id, channel=Channel.IN_APP).first()
        if content is not None:
            locale = CustomerLocale()  # the customer's zone and language, as in every message
            locale.activate(customer.timezone, customer.locale)
            try:
                rendered = render_message(
                    content_fields(content),
                    message_context(
                        campaign=campaign,
                        customer=customer,
                        offer=recipient.offer,
                        coupon=coupon,
                        layer=recipient.layer,
                    ),
                )
            finally:
                locale.restore()
            message = {"title": rendered.title, "body": rendered.text}
    expires = coupon.expires_at if coupon is not None else campaign.ends_at
    return CustomerOffer(
        **base,
        status="offer",
        variant_key=recipient.variant_key,
        benefit=_benefit(recipient.offer) if recipient.offer is not None else None,
        coupon_code=coupon.code if coupon is not None else "",
        coupon_redeemed=bool(coupon and coupon.redeemed_at),
        expires_at=expires,
        message=message,
    )


def customer_offers(*, customer: Customer, campaigns: Sequence[Campaign]) -> list[CustomerOffer]:
    """The customer's answer from each campaign. A running broadcast the customer is in but
    has not been decided for yet (e.g. joined the audience after launch) is decided now —
    assignment through the experiments engine on first request — and the exposure of an
    assigned customer (treated or control) is recorded when the API shows the answer."""
    answers = []
    for campaign in campaigns:
        recipient = recipient_latest(campaign=campaign, customer_id=customer.pk)
        if recipient is None and not campaign.is_triggered:
            in_audience = campaign_audience(campaign=campaign, base=customers_queryset(ids=[customer.pk])).exists()
            if in_audience:
                try:
                    recipients_decide(campaign=campaign, targets=[Target(customer.pk, "broadcast")])
                except IntegrityError:  # a concurrent request decided first
                    pass
                recipient = recipient_latest(campaign=campaign, customer_id=customer.pk)
        if recipient is not None and recipient.assignment_id is not None:
            try:
                assignments.exposure_record(assignment_id=recipient.assignment_id, variant_key=recipient.variant_key)
            except Exception:  # a failed exposure write must not hide the offer
                logger.exception("exposure record failed for assignment %s", recipient.assignment_id)
        answers.append(_customer_offer(campaign, customer, recipient))
    return answers


def offer_campaigns(*, now: dt.datetime | None = None):  # type: ignore[no-untyped-def]
    return offer_campaigns_queryset(now=now)
