"""Custom: any audience, trigger and channel; no rule beyond the generic ones."""

from __future__ import annotations

from campaigns.kinds.base import generic_triggers, no_issues, no_roles, nothing_after

KIND = "custom"
TOPIC = "promotions"
TRIGGER_DEFAULTS = None
OFFERS_PER_TERM = False

roles = no_roles
config_issues = no_issues
triggers_handle = generic_triggers
triggers_after = nothing_after
