"""Renewal by expiry window: split by the expiry-window dimension (a treatment per window,
e.g. 30 / 7 / 1 days before expiry); each membership term gets at most one offer per
window, whichever campaign made it (``Recipient.membership`` + ``window_key``), and a
coupon may expire relative to the membership (``Offer.expires_after_membership_days``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from campaigns.kinds.base import no_roles

if TYPE_CHECKING:
    from campaigns.models import Campaign

KIND = "renewal"
TOPIC = "renewals"
TRIGGER_DEFAULTS = None
OFFERS_PER_TERM = True
REFERRALS = False

roles = no_roles


def config_issues(campaign: Campaign) -> list[tuple[str, str]]:
    if campaign.split_dimension_id is None:
        return [("split_dimension", "A renewal campaign is split by the expiry-window dimension.")]
    return []
