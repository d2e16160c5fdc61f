"""Builders for campaign tests: customers in bulk, a ready-to-launch campaign, and running a
broadcast's decisions in this process (what the tasks do, step by step)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from campaigns.models import AudienceBatch, Campaign, Content, Delivery, Offer, Treatment
from campaigns.services import lifecycle
from campaigns.services.delivery import deliveries_send
from segments.models import Customer


def customers(n: int, *, prefix: str = "c", tz: str = "UTC", **fields: Any) -> list[Customer]:
    consent = timezone.now() - dt.timedelta(days=1)
    rows = [
        Customer(
            **{
                "external_id": f"{prefix}{i:06d}",
                "email": f"{prefix}{i:06d}@example.com",
                "email_consent_at": consent,
                "timezone": tz,
                **fields,
            }
        )
        for i in range(n)
    ]
    Customer.objects.bulk_create(rows, batch_size=2000)
    return list(Customer.objects.filter(external_id__startswith=prefix).order_by("pk"))


def campaign(
    *,
    key: str = "spring",
    offer: Offer | None = None,
    channels: tuple[str, ...] = ("email",),
    contents: dict[str, dict[str, str]] | None = None,
    treatment: dict[str, Any] | None = None,
    **fields: Any,
) -> Campaign:
    """A campaign with one treatment (``treatment`` kwargs) and content per channel."""
    if offer is None:
        offer = Offer.objects.create(
            key=f"{key}-offer", name="Ten percent", benefit_kind="percent_off", value=10, validity_days=14
        )
    row = Campaign.objects.create(key=key, name=key.title(), channels=list(channels), **fields)
    t = Treatment.objects.create(campaign=row, offer=offer, **(treatment or {}))
    defaults = {
        "email": {"subject": "Hi {{ customer.external_id }}", "text": "Code {{ coupon.code }}: {{ offer.benefit }}"},
        "sms": {"text": "{{ offer.benefit }} with {{ coupon.code }}"},
        "push": {"title": "{{ offer.name }}", "text": "Use {{ coupon.code }}"},
        "in_app": {
            "title": "{{ offer.name }}",
            "text": "Code {{ coupon.code }} until {{ coupon.expires_at|date:'Y-m-d' }}",
        },
    }
    for channel in channels:
        Content.objects.create(treatment=t, channel=channel, **(contents or {}).get(channel, defaults[channel]))
    return row


def run_broadcast(row: Campaign, *, now: dt.datetime | None = None) -> None:
    """Launch and decide a broadcast in this process (the tasks' work, in order)."""
    lifecycle.campaign_launch(campaign=row, now=now)
    lifecycle.campaign_audience_resolve(campaign_id=row.pk)
    for batch_id in AudienceBatch.objects.filter(campaign=row).values_list("pk", flat=True):
        lifecycle.audience_batch_decide(batch_id=batch_id)


def send_pending(row: Campaign, *, worker: str = "test:1") -> Any:
    ids = list(Delivery.objects.filter(campaign=row, status="pending").values_list("pk", flat=True))
    return deliveries_send(delivery_ids=ids, worker=worker)


def recipients_from_assignments(row: Campaign) -> None:
    """What the campaign's decisions would have written for an experiment filled directly
    (report fixtures): a treated or control recipient per assignment. The playbook shows a
    campaign without any as "reached nobody"."""
    from campaigns.models import Recipient
    from experiments.models import Assignment

    Recipient.objects.bulk_create(
        [
            Recipient(
                campaign=row,
                customer_id=a.customer_id,
                step="broadcast",
                outcome="control" if a.variant.is_control else "treated",
                variant_key=a.variant.key,
                assignment_id=a.pk,
            )
            for a in Assignment.objects.filter(experiment_id=row.experiment_id).select_related("variant")
        ],
        batch_size=2000,
        ignore_conflicts=True,
    )
