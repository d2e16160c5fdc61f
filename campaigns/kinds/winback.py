"""Win-back recall: a broadcast (or layer-entry) campaign to lapsed customers, usually the
win-back / at-risk layers of the lifecycle dimension. The channel that still reaches them is
chosen by the "first reachable" strategy; no kind-specific rule beyond its topic."""

from __future__ import annotations

from campaigns.kinds.base import no_issues, no_roles

KIND = "winback"
TOPIC = "recall"
TRIGGER_DEFAULTS = None
OFFERS_PER_TERM = False
REFERRALS = False

roles = no_roles
config_issues = no_issues
