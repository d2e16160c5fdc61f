"""Reads of the campaigns app: delivery statistics, a customer's offers, layer entries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.db.models import Count, QuerySet
from django.utils import timezone

from campaigns.models import Campaign, Coupon, Delivery, Recipient
from segments.models import LayerHistory


def layer_entries_queryset(*, layer_id: int) -> QuerySet[LayerHistory]:
    """Customers entering a layer, in the order the segments engine recorded it.

    (Read from the segments app's layer history; a segments selector for "entries into a
    layer since id N" would replace this direct read.)"""
    return LayerHistory.objects.filter(layer_id=layer_id)


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


@dataclass(frozen=True)
class LayerSize:
    layer_id: int | None  # None: customers in no layer of the split dimension
    name: str
    size: int
    split: bool  # every treated variant acts here, so the experiment splits these customers


@dataclass(frozen=True)
class VariantSize:
    key: str
    name: str
    is_control: bool
    weight: str
    expected: int  # the split audience × the variant's weight (before coverage and holdout)


@dataclass(frozen=True)
class AudienceSizes:
    total: int
    split: int
    layers: tuple[LayerSize, ...]
    variants: tuple[VariantSize, ...]
    segments_never_computed: tuple[str, ...]


def campaign_audience_sizes(*, campaign: Campaign) -> AudienceSizes:
    """The builder's live audience: one SQL ``COUNT`` for the audience, one for the part the
    experiment splits (symmetric exposure) and one per layer of the split dimension. Per
    variant, the expected size is the split audience times the variant's weight: who lands
    where is decided at launch (sticky hashing, coverage, holdout), not before."""
    from campaigns.services.decide import (
        TreatmentIndex,
        campaign_audience,
        campaign_split_audience,
        treated_variant_keys,
    )
    from segments.selectors import audience_queryset

    audience = campaign_audience(campaign=campaign)
    total = audience.count()
    split = campaign_split_audience(campaign=campaign).count()
    layers: list[LayerSize] = []
    if campaign.split_dimension_id is not None:
        index, keys = TreatmentIndex(campaign), treated_variant_keys(campaign)
        fallback = index.covers(variant_keys=keys, layer_id=None)
        in_some = 0
        for layer in campaign.split_dimension.layers.order_by("position", "pk"):
            size = audience_queryset(include_layer_ids=[layer.pk], base=audience).count()
            in_some += size
            layers.append(LayerSize(layer.pk, layer.name, size, index.covers(variant_keys=keys, layer_id=layer.pk)))
        layers.append(LayerSize(None, "(in no layer)", total - in_some, fallback))
    variants: list[VariantSize] = []
    if campaign.experiment_id is not None:
        for v in campaign.experiment.variants.order_by("pk"):
            expected = int((split * v.weight).to_integral_value())
            variants.append(VariantSize(v.key, v.name, v.is_control, format(v.weight.normalize(), "f"), expected))
    never = sorted(
        {
            *campaign.include_segments.filter(computed_at__isnull=True).values_list("key", flat=True),
            *campaign.exclude_segments.filter(computed_at__isnull=True).values_list("key", flat=True),
        }
    )
    return AudienceSizes(total, split, tuple(layers), tuple(variants), tuple(never))
