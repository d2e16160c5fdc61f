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
computed by one query per chunk (``facts_read``: three booleans, ``EXISTS`` probes of
unique indexes), and the outcome is written with one
``UPDATE`` per outcome kind (per distinct hold time for holds), never per message.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from django.db import connection
from django.db.models import Case, F, When

from campaigns.models import Campaign, Delivery, Suppression, TopicOptOut
from campaigns.services import bulk
from campaigns.services import policy as send_policy
from segments.contacts import CONTACT_FIELDS
from segments.selectors import customers_queryset


@dataclass(frozen=True)
class Facts:
    """What the send-time rules read about one delivery."""

    customer_id: int
    opted_out: bool  # consent withdrawn on the delivery's channel
    suppressed: bool  # the channel's contact point
    topic_out: bool  # opted out of the campaign's topic on the channel


NO_FACTS = Facts(customer_id=0, opted_out=False, suppressed=False, topic_out=False)


def _opted_out_sql(channel: str) -> str:
    """``Customer.can_receive``'s consent rule, negated (as ``reachable_by``): no consent,
    or an opt-out not followed by a later consent."""
    _, consent, opt_out = CONTACT_FIELDS[channel]
    return f"(c.{consent} IS NULL OR (c.{opt_out} IS NOT NULL AND c.{opt_out} >= c.{consent}))"


@lru_cache(maxsize=2)
def _facts_sql(vendor: str) -> str:
    """One statement per chunk, written out once: Django's compiler costs ~10 ms for a
    query of this shape (three CASE/EXISTS expressions), more than the database takes to
    run it for 100 rows. The ids come as one JSON parameter, as ``bulk.id_in``."""
    opted_out = " ".join(f"WHEN d.channel = '{ch}' THEN {_opted_out_sql(ch)}" for ch in CONTACT_FIELDS)
    if vendor == "postgresql":
        ids = "d.id = ANY(ARRAY(SELECT (json_array_elements_text(%s::json))::bigint))"
    else:
        ids = "d.id IN (SELECT value FROM json_each(%s))"
    return (
        f"SELECT d.id, d.customer_id, "
        f"CASE {opted_out} ELSE FALSE END, "
        f"CASE WHEN d.channel = 'email' THEN EXISTS (SELECT 1 FROM {Suppression._meta.db_table} s "
        f"WHERE s.channel = 'email' AND s.address = LOWER(c.email)) "
        f"WHEN d.channel = 'sms' THEN EXISTS (SELECT 1 FROM {Suppression._meta.db_table} s "
        f"WHERE s.channel = 'sms' AND s.address = c.phone) ELSE FALSE END, "
        f"EXISTS (SELECT 1 FROM {TopicOptOut._meta.db_table} t WHERE t.customer_id = d.customer_id "
        f"AND t.channel = d.channel AND t.topic = k.topic AND t.opted_out) "
        f"FROM {Delivery._meta.db_table} d "
        f"JOIN {customers_queryset().model._meta.db_table} c ON c.id = d.customer_id "
        f"JOIN {Campaign._meta.db_table} k ON k.id = d.campaign_id "
        f"WHERE {ids}"
    )


def facts_read(delivery_ids: Sequence[int]) -> dict[int, Facts]:
    """The send-time facts of a claimed chunk, in one query."""
    if not delivery_ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(_facts_sql(connection.vendor), [json.dumps(list(delivery_ids))])
        return {
            pk: Facts(customer_id=cid, opted_out=bool(out), suppressed=bool(sup), topic_out=bool(topic))
            for pk, cid, out, sup, topic in cursor.fetchall()
        }


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
            # The claim set ``first_tried_at`` when this was the first try; given back with
            # the try, so the channel's retry period starts at a real try.
            written += rows.update(
                status=status,
                reason=reason,
                last_error=detail,
                not_before=until,
                attempts=F("attempts") - 1,
                first_tried_at=Case(When(attempts__lte=1, then=None), default=F("first_tried_at")),
                enqueued_at=None,
                lease_until=None,
            )
        else:
            written += rows.update(status=status, reason=reason, last_error=detail, lease_until=None)
    return written
