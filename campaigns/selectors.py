"""Reads of the campaigns app: delivery statistics, a customer's offers, layer entries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db.models import Count, QuerySet
from django.utils import timezone

from campaigns.models import Campaign, Coupon, Delivery, Recipient
from segments import selectors as segment_selectors

if TYPE_CHECKING:
    from segments.models import LayerHistory


def layer_entries_queryset(*, layer_id: int) -> QuerySet[LayerHistory]:
    """Customers entering a layer, in the order the segments engine recorded it.

    (Read from the segments app's layer history; a segments selector for "entries into a
    layer since id N" would replace this direct read.)"""
    return segment_selectors.layer_entries_queryset(layer_id=layer_id)


def delivery_counts(*, campaign: Campaign) -> dict[str, int]:
    rows = Delivery.objects.filter(campaign=campaign).values("status").annotate(n=Count("pk"))
    return {row["status"]: row["n"] for row in rows}


def suppression_counts(*, campaign: Campaign) -> dict[str, int]:
    rows = (
        Delivery.objects.filter(campaign=campaign, status__in=[Delivery.Status.SUPPRESSED, Delivery.Status.FAILED])
        .values("status", "reason")
        .annotate(n=Count("pk"))
    )
    return {f"{row['status']}:{row['reason']}": row["n"] for row in rows}


def recipient_counts(*, campaign: Campaign) -> dict[str, int]:
    rows = Recipient.objects.filter(campaign=campaign).values("outcome", "variant_key").annotate(n=Count("pk"))
    return {f"{row['outcome']}:{row['variant_key'] or '-'}": row["n"] for row in rows}


def offer_campaigns_queryset(*, now: dt.datetime | None = None) -> QuerySet[Campaign]:
    """Campaigns whose offers a customer may currently hold: running, not past their end."""
    now = now or timezone.now()
    return (
        Campaign.objects.filter(status=Campaign.Status.RUNNING)
        .exclude(ends_at__lte=now)
        .select_related("experiment")
        .order_by("started_at", "pk")
    )


@dataclass(frozen=True)
class CustomerOffer:
    """One campaign's answer for a customer: an offer, or the reason there is none."""

    campaign_key: str
    campaign_name: str
    campaign_kind: str
    status: str  # "offer" | "none"
    reason: str = ""
    variant_key: str = ""
    benefit: dict[str, Any] | None = None
    coupon_code: str = ""
    coupon_redeemed: bool = False
    expires_at: dt.datetime | None = None
    message: dict[str, str] | None = None


def recipient_latest(*, campaign: Campaign, customer_id: int) -> Recipient | None:
    return (
        Recipient.objects.filter(campaign=campaign, customer_id=customer_id)
        .select_related("offer", "treatment", "layer")
        .order_by("-decided_at", "-pk")
        .first()
    )


def recipient_coupon(*, recipient: Recipient) -> Coupon | None:
    return Coupon.objects.filter(recipient=recipient).first()
