"""Referral reward: events carrying a ``referral_code`` attribute invitees to inviters; an
invitee's qualifying event (signup, order) earns the reward, for the inviter, the invitee or
both (``referral_reward_to``), at most ``referral_cap_per_inviter`` per inviter. Treatments
may differ per role ("inviter" / "invitee"), so coverage is checked per rewarded role."""

from __future__ import annotations

from typing import TYPE_CHECKING

from campaigns.kinds.base import TriggerDefaults

if TYPE_CHECKING:
    from campaigns.models import Campaign

KIND = "referral"
TOPIC = "referrals"
TRIGGER_DEFAULTS = TriggerDefaults(trigger="event", event_type_code="referral_signup")
OFFERS_PER_TERM = False
REFERRALS = True

_ROLES = {"inviter": ["inviter"], "invitee": ["invitee"], "both": ["inviter", "invitee"]}


def roles(campaign: Campaign) -> list[str]:
    return _ROLES.get(campaign.referral_reward_to, ["inviter", "invitee"])


def config_issues(campaign: Campaign) -> list[tuple[str, str]]:
    issues = []
    if campaign.trigger != "event":
        issues.append(("trigger", "A referral campaign attributes invitees from an event carrying 'referral_code'."))
    if campaign.referral_qualifying_event_type_id is None:
        issues.append(("referral_qualifying_event_type", "Name the invitee's qualifying event (signup, order)."))
    return issues
