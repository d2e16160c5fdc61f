"""Custom: any audience, trigger and channel; no rule beyond the generic ones."""

from __future__ import annotations

from campaigns.kinds.base import no_issues, no_roles

KIND = "custom"
TOPIC = "promotions"
TRIGGER_DEFAULTS = None
OFFERS_PER_TERM = False
REFERRALS = False

roles = no_roles
config_issues = no_issues
