"""What every campaign kind provides (the contract; one module per kind, registry in
``campaigns.kinds``). A new kind touches one new file plus its ``Campaign.Kind`` choice.

A kind module exposes:

- ``KIND``: the ``Campaign.Kind`` value.
- ``TOPIC``: the consent topic a campaign of this kind is about when none is given.
- ``TRIGGER_DEFAULTS``: a ``TriggerDefaults`` (trigger, event type code, freshness in hours)
  filled in when a campaign of this kind is configured without a trigger, or None
  (for the configuration services and forms: ``campaigns.kinds.trigger_defaults``).
- ``OFFERS_PER_TERM``: True when an offer is made at most once per membership term and
  expiry window (renewal): the decision then reads each customer's membership term.
- ``roles(campaign) -> list[str]``: the referral roles a treatment is resolved for
  (``[""]``: no roles). Launch checks coverage per role.
- ``config_issues(campaign) -> list[tuple[str, str]]``: (field, message) for configuration
  this kind cannot run with; checked at schedule and launch
  (``campaigns.services.lifecycle.campaign_validate``).
- ``REFERRALS``: True when trigger events attribute invitees to inviters and rewards follow
  qualifying events (``campaigns.services.referrals``) instead of deciding for the event's
  customer.

Modules here hold rules and capabilities only: they read the ``Campaign`` row they are given
and never import the services (which reach kinds through the registry; import-linter's
"No import cycles inside campaigns" keeps it so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from campaigns.models import Campaign


@dataclass(frozen=True)
class TriggerDefaults:
    trigger: str
    event_type_code: str
    within_hours: int | None = None


def no_roles(campaign: Campaign) -> list[str]:
    return [""]


def no_issues(campaign: Campaign) -> list[tuple[str, str]]:
    return []
