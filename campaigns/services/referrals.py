"""Referral rewards: personal codes, attribution and rewards, exactly once, with an audit trail.

- A customer's code is created on first request (``referral_code_get_or_create``).
- An invitee is attributed by an event of the campaign's trigger type carrying
  ``properties.referral_code`` (e.g. ``referral_signup``). Refused, and audited: an unknown
  code, the inviter's own code (self-referral), an invitee already referred (one referral
  per invitee, enforced by a unique constraint, so concurrent attributions cannot both win).
- The invitee's first qualifying event (signup or first order) after attribution rewards
  the referral once: a conditional UPDATE ``attributed → rewarded`` wins at most once. The
  inviter's reward respects a cap per inviter, checked and counted under a row lock on the
  inviter's code; past the cap the inviter is not rewarded (the invitee still is, if the
  campaign rewards invitees), and the audit says so.
- Rewards are ordinary campaign decisions for steps ``referral:<id>:inviter|invitee`` (offer,
  coupon, messages), through the same experiment split, send policy and outbox.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import F, OuterRef, Subquery
from django.utils import timezone

from campaigns.models import Campaign, Referral, ReferralAudit, ReferralCode
from campaigns.services.decide import Target, generate_code, recipients_decide
from segments.selectors import events_queryset

if TYPE_CHECKING:
    from segments.models import Customer

logger = logging.getLogger(__name__)

REFERRAL_CODE_PROPERTY = "referral_code"


def referral_code_get_or_create(*, customer: Customer) -> ReferralCode:
    existing = ReferralCode.objects.filter(customer=customer).first()
    if existing is not None:
        return existing
    for _ in range(5):
        try:
            with transaction.atomic():
                return ReferralCode.objects.create(customer=customer, code=generate_code("R", 8))
        except IntegrityError:
            existing = ReferralCode.objects.filter(customer=customer).first()
            if existing is not None:
                return existing
    raise RuntimeError("Could not generate a unique referral code.")


def _audit(
    campaign: Campaign,
    customer_id: int,
    action: str,
    event_id: int | None,
    *,
    referral_id: int | None = None,
    **detail: Any,
) -> None:
    ReferralAudit.objects.create(
        campaign=campaign,
        customer_id=customer_id,
        event_id=event_id,
        action=action,
        detail=detail,
        referral_id=referral_id,
    )


def referral_attribute(
    *, campaign: Campaign, invitee_id: int, code: str, event_id: int | None, now: dt.datetime | None = None
) -> Referral | None:
    now = now or timezone.now()
    code = (code or "").strip().upper()
    code_row = ReferralCode.objects.filter(code=code).first()
    if code_row is None:
        _audit(campaign, invitee_id, "rejected_unknown_code", event_id, code=code)
        return None
    if code_row.customer_id == invitee_id:
        _audit(campaign, invitee_id, "rejected_self_referral", event_id, code=code)
        return None
    try:
        with transaction.atomic():
            referral = Referral.objects.create(
                campaign=campaign,
                code=code_row,
                inviter_id=code_row.customer_id,
                invitee_id=invitee_id,
                attributed_event_id=event_id,
                attributed_at=now,
            )
    except IntegrityError:
        _audit(campaign, invitee_id, "rejected_already_referred", event_id, code=code)
        return None
    _audit(
        campaign,
        invitee_id,
        "attributed",
        event_id,
        code=code,
        inviter_id=code_row.customer_id,
        referral_id=referral.pk,
    )
    return referral


@transaction.atomic
def referral_reward(*, referral: Referral, event_id: int, now: dt.datetime | None = None) -> bool:
    """Reward ``referral`` for the invitee's qualifying event ``event_id``. Returns False if
    it was rewarded (or rejected) before: the conditional UPDATE succeeds at most once."""
    now = now or timezone.now()
    campaign = referral.campaign
    won = Referral.objects.filter(pk=referral.pk, status=Referral.Status.ATTRIBUTED).update(
        status=Referral.Status.REWARDED, qualifying_event_id=event_id, qualified_at=now
    )
    if not won:
        return False
    targets: list[Target] = []
    reward_to = campaign.referral_reward_to
    if reward_to in (Campaign.RewardTo.INVITER, Campaign.RewardTo.BOTH):
        code = ReferralCode.objects.select_for_update().get(pk=referral.code_id)
        cap = campaign.referral_cap_per_inviter
        if cap is not None and code.rewarded_count >= cap:
            Referral.objects.filter(pk=referral.pk).update(reason="inviter_cap_reached")
            _audit(campaign, referral.inviter_id, "inviter_cap_reached", event_id, cap=cap, referral_id=referral.pk)
        else:
            ReferralCode.objects.filter(pk=code.pk).update(rewarded_count=F("rewarded_count") + 1)
            targets.append(Target(referral.inviter_id, f"referral:{referral.pk}:inviter", role="inviter"))
    if reward_to in (Campaign.RewardTo.INVITEE, Campaign.RewardTo.BOTH):
        targets.append(Target(referral.invitee_id, f"referral:{referral.pk}:invitee", role="invitee"))
    recipients_decide(campaign=campaign, targets=targets, now=now)
    _audit(
        campaign,
        referral.invitee_id,
        "rewarded",
        event_id,
        rewarded=[t.role for t in targets],
        referral_id=referral.pk,
    )
    return True


def referral_events_process(
    *, campaign: Campaign, events: Sequence[tuple[int, int, dt.datetime, dict[str, Any]]], now: dt.datetime
) -> int:
    """Attribute invitees from trigger events (id, customer id, occurred_at, properties)."""
    qualifying_code = campaign.referral_qualifying_event_type.code if campaign.referral_qualifying_event_type else ""
    attributed = 0
    for event_id, customer_id, _occurred_at, properties in events:
        code = (properties or {}).get(REFERRAL_CODE_PROPERTY)
        if not code:
            continue
        referral = referral_attribute(
            campaign=campaign, invitee_id=customer_id, code=str(code), event_id=event_id, now=now
        )
        if referral is None:
            continue
        attributed += 1
        if qualifying_code and qualifying_code == campaign.trigger_event_type.code:
            referral.campaign = campaign
            referral_reward(referral=referral, event_id=event_id, now=now)
    return attributed


def referrals_qualify(*, campaign: Campaign, now: dt.datetime | None = None, limit: int = 1000) -> int:
    """Reward attributed referrals whose invitee has had the qualifying event since."""
    now = now or timezone.now()
    if campaign.referral_qualifying_event_type is None:
        return 0
    first_event = (
        events_queryset(event_type_codes=[campaign.referral_qualifying_event_type.code])
        .filter(customer_id=OuterRef("invitee_id"), occurred_at__gte=OuterRef("attributed_at"))
        .order_by("occurred_at", "pk")
        .values("pk")[:1]
    )
    due = (
        Referral.objects.filter(campaign=campaign, status=Referral.Status.ATTRIBUTED)
        .annotate(event_pk=Subquery(first_event))
        .filter(event_pk__isnull=False)
        .select_related("campaign")[:limit]
    )
    rewarded = 0
    for referral in due:
        rewarded += referral_reward(referral=referral, event_id=referral.event_pk, now=now)
    return rewarded
