"""New-user incentive: a starter offer on the signup event, within N hours of it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from campaigns.kinds.base import TriggerDefaults, no_roles

if TYPE_CHECKING:
    from campaigns.models import Campaign

KIND = "new_user"
TOPIC = "promotions"
TRIGGER_DEFAULTS = TriggerDefaults(trigger="event", event_type_code="signup", within_hours=48)
OFFERS_PER_TERM = False
REFERRALS = False

roles = no_roles


def config_issues(campaign: Campaign) -> list[tuple[str, str]]:
    if campaign.trigger != "event":
        return [("trigger", "A new-user incentive is triggered by an event (signup).")]
    return []
