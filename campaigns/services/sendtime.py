"""The rules checked again right before a claimed chunk is handed to the provider.

Deciding checks consent and quiet hours once; a message can wait long after that (a pause
and resume, a retry, a released lease, a broker backlog) while the customer opts out, a
bounce suppresses the address, the campaign ends or the customer's night begins. So the
sender checks, per claimed chunk:

- the campaign: finished, or past its end date → ``suppressed`` / ``campaign_ended``;
- channel consent, the rule of ``Customer.can_receive`` on the consent and opt-out
  timestamps → ``suppressed`` / ``no_consent``;
- a suppressed contact point (``Suppression``) → ``suppressed`` / ``suppressed``;
- a topic opt-out for the campaign's topic on that channel → ``suppressed`` / ``no_consent``;
- quiet hours in the customer's zone (``policy.quiet_until``, the rule deciding uses) →
  ``held`` / ``quiet_hours`` until the window ends, when the sweeper makes it pending again
  (not a try: ``attempts`` is given back).

Transactional campaigns skip the topic and quiet-hour rules, as when deciding. The facts are
read in the one query that reads the chunk (``annotations`` below: two ``EXISTS`` probes
on unique indexes, plus columns already joined), and the outcome is written with one
``UPDATE`` per outcome kind (per distinct hold time for holds), never per message.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db.models import Exists, F, OuterRef
from django.db.models.functions import Lower

from campaigns.models import Campaign, Delivery, Suppression, TopicOptOut
from campaigns.services import bulk
from campaigns.services import policy as send_policy
from campaigns.services.consent import is_opted_out
from segments.models import Channel

# Columns and annotations the sender's chunk query adds, in this order (see ``Facts``).
FIELDS: tuple[str, ...] = (
    "customer_id",
    "customer__email_consent_at",
    "customer__email_opt_out_at",
    "customer__sms_consent_at",
    "customer__sms_opt_out_at",
    "customer__push_consent_at",
    "customer__push_opt_out_at",
    "st_email_suppressed",
    "st_phone_suppressed",
    "st_topic_out",
)


def annotations() -> dict[str, Any]:
    """``EXISTS`` probes for the chunk query: the customer's address or number suppressed,
    and an opt-out of the campaign's topic on the delivery's channel."""
    return {
        "st_email_suppressed": Exists(
            Suppression.objects.filter(channel=Channel.EMAIL, address=Lower(OuterRef("customer__email")))
        ),
        "st_phone_suppressed": Exists(
            Suppression.objects.filter(channel=Channel.SMS, address=OuterRef("customer__phone"))
        ),
        "st_topic_out": Exists(
            TopicOptOut.objects.filter(
                customer_id=OuterRef("customer_id"),
                channel=OuterRef("channel"),
                topic=OuterRef("campaign__topic"),
                opted_out=True,
            )
        ),
    }


@dataclass(frozen=True)
class Facts:
    """What the send-time rules read about one delivery (from ``FIELDS``)."""

    customer_id: int
    opted_out: bool  # for the delivery's channel
    suppressed: bool  # the channel's contact point
    topic_out: bool


def facts_from(channel: str, values: Iterable[Any]) -> Facts:
    (customer_id, e_in, e_out, s_in, s_out, p_in, p_out, email_sup, phone_sup, topic_out) = values
    opted_out = {
        Channel.EMAIL: lambda: is_opted_out(consent_at=e_in, opt_out_at=e_out),
        Channel.SMS: lambda: is_opted_out(consent_at=s_in, opt_out_at=s_out),
        Channel.PUSH: lambda: is_opted_out(consent_at=p_in, opt_out_at=p_out),
    }.get(channel, lambda: False)()
    suppressed = bool(email_sup) if channel == Channel.EMAIL else bool(phone_sup) if channel == Channel.SMS else False
    return Facts(customer_id=customer_id, opted_out=opted_out, suppressed=suppressed, topic_out=bool(topic_out))


@dataclass(frozen=True)
class CampaignState:
    status: str
    ends_at: dt.datetime | None
    is_transactional: bool
    topic: str


def campaign_states(campaign_ids: Iterable[int]) -> dict[int, CampaignState]:
    """The campaigns' state, read for every chunk (a pause or an end takes effect at the
    next chunk)."""
    return {
        pk: CampaignState(status=status, ends_at=ends_at, is_transactional=transactional, topic=topic)
        for pk, status, ends_at, transactional, topic in Campaign.objects.filter(pk__in=set(campaign_ids))
        .order_by()
        .values_list("pk", "status", "ends_at", "is_transactional", "topic")
    }


@dataclass(frozen=True)
class Verdict:
    """Why a message may not go now: ``status`` and ``reason`` to record, ``until`` for a hold."""

    status: str
    reason: str
    detail: str
    until: dt.datetime | None = None


def verdict(
    *,
    channel: str,
    tz: str,
    facts: Facts,
    campaign: CampaignState,
    policies: dict[str, send_policy.Policy],
    now: dt.datetime,
) -> Verdict | None:
    """``None`` when the message may be sent now (the campaign is running)."""
    suppressed = Delivery.Status.SUPPRESSED
    if campaign.status == Campaign.Status.FINISHED or (campaign.ends_at is not None and campaign.ends_at <= now):
        return Verdict(suppressed, Delivery.Reason.CAMPAIGN_ENDED, "The campaign ended before this message was sent.")
    if facts.opted_out:
        return Verdict(suppressed, Delivery.Reason.NO_CONSENT, f"No {channel} consent at send time.")
    if facts.suppressed:
        return Verdict(suppressed, Delivery.Reason.SUPPRESSED, f"The {channel} contact point is suppressed.")
    if campaign.is_transactional:
        return None
    if facts.topic_out:
        return Verdict(suppressed, Delivery.Reason.NO_CONSENT, f"Opted out of '{campaign.topic}' by {channel}.")
    until = send_policy.quiet_until(policies.get(channel), tz=tz, at=now)
    if until is not None:
        return Verdict(Delivery.Status.HELD, Delivery.Reason.QUIET_HOURS, "Quiet hours at send time.", until)
    return None


def verdicts_record(*, verdicts: dict[int, Verdict], worker: str) -> int:
    """Write the verdicts of claimed rows: one ``UPDATE`` per (status, reason, detail,
    hold time). Only rows this worker still holds are touched. Return the rows written."""
    groups: dict[tuple[str, str, str, dt.datetime | None], list[int]] = {}
    for pk, v in verdicts.items():
        groups.setdefault((v.status, v.reason, v.detail, v.until), []).append(pk)
    written = 0
    for (status, reason, detail, until), ids in groups.items():
        rows = Delivery.objects.filter(bulk.id_in(Delivery, "id", sorted(ids))).filter(
            status=Delivery.Status.SENDING, claimed_by=worker
        )
        if status == Delivery.Status.HELD:
            # Not a try: the sweeper makes it pending at the window's end and enqueues it.
            written += rows.update(
                status=status,
                reason=reason,
                last_error=detail,
                not_before=until,
                attempts=F("attempts") - 1,
                enqueued_at=None,
                lease_until=None,
            )
        else:
            written += rows.update(status=status, reason=reason, last_error=detail, lease_until=None)
    return written
