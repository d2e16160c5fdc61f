"""Triggered campaigns: fire on new events of a type, or on customers entering a layer.

The periodic tick processes each running triggered campaign from its cursor (the last
event / layer-history id handled). The cursor moves in the same transaction as the
decisions it covers, and the campaign row is locked meanwhile, so each trigger is handled
exactly once even if two ticks overlap.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.utils import timezone

from campaigns import kinds
from campaigns.models import Campaign
from campaigns.selectors import layer_entries_queryset
from campaigns.services.decide import Target, campaign_audience, recipients_decide
from campaigns.services.referrals import referral_events_process, referrals_qualify
from segments.selectors import customers_queryset, events_queryset

TRIGGER_BATCH = 1000


def campaign_triggers_process(*, campaign_id: int, now: dt.datetime | None = None) -> int:
    """Handle up to ``TRIGGER_BATCH`` new triggers; return how many were read."""
    now = now or timezone.now()
    with transaction.atomic():
        campaign = (
            Campaign.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("trigger_event_type", "referral_qualifying_event_type", "experiment")
            .filter(pk=campaign_id, status=Campaign.Status.RUNNING)
            .first()
        )
        if campaign is None or not campaign.is_triggered:
            return 0
        kind = kinds.kind_module(campaign.kind)
        since = now - dt.timedelta(hours=campaign.trigger_within_hours) if campaign.trigger_within_hours else None
        if campaign.trigger == Campaign.Trigger.EVENT:
            rows = list(
                events_queryset(event_type_codes=[campaign.trigger_event_type.code])
                .filter(pk__gt=campaign.trigger_cursor)
                .order_by("pk")
                .values_list("pk", "customer_id", "occurred_at", "properties")[:TRIGGER_BATCH]
            )
            fresh = [r for r in rows if since is None or r[2] >= since]
            if kind.REFERRALS:
                referral_events_process(campaign=campaign, events=fresh, now=now)
            else:
                _decide(campaign, [(customer_id, "trigger") for _, customer_id, _, _ in fresh], now)
        else:
            rows = list(
                layer_entries_queryset(layer_id=campaign.trigger_layer_id)
                .filter(pk__gt=campaign.trigger_cursor)
                .order_by("pk")
                .values_list("pk", "customer_id", "entered_at")[:TRIGGER_BATCH]
            )
            fresh = [r for r in rows if since is None or r[2] >= since]
            _decide(campaign, [(customer_id, f"entry:{pk}") for pk, customer_id, _ in fresh], now)
        if rows:
            campaign.trigger_cursor = rows[-1][0]
            campaign.save(update_fields=["trigger_cursor", "updated_at"])
        if kind.REFERRALS:
            referrals_qualify(campaign=campaign, now=now)
    return len(rows)


def _decide(campaign: Campaign, candidates: list[tuple[int, str]], now: dt.datetime) -> None:
    if not candidates:
        return
    ids = {cid for cid, _ in candidates}
    in_audience = set(
        campaign_audience(campaign=campaign, base=customers_queryset(ids=ids)).values_list("pk", flat=True)
    )
    seen: set[tuple[int, str]] = set()
    targets = []
    for cid, step in candidates:
        if cid in in_audience and (cid, step) not in seen:
            seen.add((cid, step))
            targets.append(Target(cid, step))
    recipients_decide(campaign=campaign, targets=targets, now=now)
