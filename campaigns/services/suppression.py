"""Suppressed contact points: addresses and numbers never written to again.

Sources: a hard bounce while sending (an SMTP 5xx answer to RCPT or to the message data;
``suppress_from_send``), a provider's tracking webhook (bounced, complained, rejected as
invalid, unsubscribed; django-anymail's normalized ``tracking`` signal, whose views check
the provider's signature: ``on_tracking``), the admin, and CSV import. Addresses are
normalized (email lower-cased and stripped; phone numbers must be E.164) so one contact point
is one row; adding it again keeps the first row (its reason and time).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction
from django.utils import timezone

from campaigns.models import Suppression
from campaigns.services import bulk
from segments.contacts import Channel
from segments.selectors import customers_queryset
from segments.services.ingestion import EventInput, events_record

logger = logging.getLogger(__name__)

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
CSV_COLUMNS = ("channel", "address", "reason", "detail", "created_at")


def normalize(channel: str, address: str) -> str:
    """The stored form of a contact point; ``ValueError`` if it is not one."""
    address = (address or "").strip()
    if channel == Channel.EMAIL:
        address = address.lower()
        try:
            validate_email(address)
        except ValidationError as exc:
            raise ValueError(f"'{address}' is not an email address.") from exc
        return address
    if channel == Channel.SMS:
        if not _E164.match(address):
            raise ValueError(f"'{address}' is not an E.164 phone number (e.g. +33612345678).")
        return address
    raise ValueError(f"'{channel}' is not a channel with contact points to suppress (email, sms).")


@dataclass(frozen=True)
class SuppressionInput:
    channel: str
    address: str
    reason: str
    detail: str = ""
    source: str = ""
    created_at: dt.datetime | None = None


def suppressions_add(*, items: Iterable[SuppressionInput]) -> int:
    """Insert the contact points not suppressed yet (``INSERT … ON CONFLICT DO NOTHING
    RETURNING`` in batches, so concurrent writers each count only their own rows); return
    how many were new. Items must be normalized."""
    now = timezone.now()
    rows = [(i.channel, i.address, i.reason, i.detail[:2000], i.source[:64], i.created_at or now) for i in items]
    inserted = bulk.rows_insert(
        Suppression,
        ("channel", "address", "reason", "detail", "source", "created_at"),
        rows,
        returning=("id",),
        skip_conflicts=True,
    )
    return len(inserted)


def suppression_add(*, channel: str, address: str, reason: str, detail: str = "", source: str = "") -> bool:
    """Suppress one contact point; ``ValueError`` if the address is not one."""
    if reason not in Suppression.Reason.values:
        raise ValueError(f"'{reason}' is not a suppression reason.")
    item = SuppressionInput(
        channel=channel, address=normalize(channel, address), reason=reason, detail=detail, source=source
    )
    return suppressions_add(items=[item]) == 1


# Events written for the customers behind a suppressed address: the guardrail metrics of
# campaign experiments count them per variant and layer (``assignments.GUARDRAIL_EVENTS``).
_EVENT_TYPES = {Suppression.Reason.HARD_BOUNCE: "bounce", Suppression.Reason.COMPLAINT: "complaint"}


def _events_for(*, channel: str, address: str, reason: str, at: dt.datetime, source: str) -> None:
    event_type = _EVENT_TYPES.get(reason)
    if event_type is None:
        return
    customers = customers_queryset().filter(email__iexact=address) if channel == Channel.EMAIL else None
    if customers is None:
        return
    stamp = at.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    events_record(
        events=[
            EventInput(
                event_id=f"{event_type}:{external_id}:{stamp}"[:128],
                customer_id=external_id,
                type=event_type,
                occurred_at=at,
                properties={"channel": channel, "source": source},
            )
            for external_id in customers.order_by("pk").values_list("external_id", flat=True)[:100]
        ],
        unknown_customers="reject",
    )


# --- From sending ------------------------------------------------------------------------

# 503 is "bad sequence of commands": the session's fault, never the recipient's.
_NOT_RECIPIENT_FAULT = {503}


# The SMTP commands whose refusal is about the recipient or the message (``smtp_command`` of
# ``campaigns.channels.base.PermanentError``; "END" is the reply to the end of the content).
_RECIPIENT_COMMANDS = {"RCPT", "DATA", "END"}


def is_hard_bounce(*, code: int | None, command: str) -> bool:
    """A permanent refusal of the recipient: SMTP 5xx at RCPT, DATA or the end of DATA."""
    return (
        code is not None and 500 <= code < 600 and code not in _NOT_RECIPIENT_FAULT and command in _RECIPIENT_COMMANDS
    )


def suppress_from_send(*, channel: str, address: str, code: int | None, command: str, detail: str) -> bool:
    """The hook the sender calls when a provider refused a message for good."""
    if channel != Channel.EMAIL or not is_hard_bounce(code=code, command=command):
        return False
    try:
        added = suppression_add(
            channel=channel, address=address, reason=Suppression.Reason.HARD_BOUNCE, detail=detail, source="smtp"
        )
    except ValueError:  # the address is malformed: the refusal already failed the delivery
        return False
    if added:
        _events_for(
            channel=channel, address=address, reason=Suppression.Reason.HARD_BOUNCE, at=timezone.now(), source="smtp"
        )
    return added


# --- Provider webhooks (django-anymail) ------------------------------------------------


def on_tracking(sender: Any, event: Any, esp_name: str, **kwargs: Any) -> None:
    """Receiver of ``anymail.signals.tracking``: the webhook view already checked the
    provider's signature and normalized the event. Bounces, complaints, invalid-address
    rejections and provider-side unsubscribes suppress the recipient's address."""
    from anymail.signals import EventType, RejectReason

    if event.event_type == EventType.UNSUBSCRIBED and event.recipient:
        # Not a suppression: the customer may subscribe again from the preference page.
        from campaigns.services.consent import email_unsubscribe

        email_unsubscribe(address=event.recipient, source=f"webhook:{esp_name.lower()}", at=event.timestamp)
        return
    reason = None
    if event.event_type == EventType.COMPLAINED:
        reason = Suppression.Reason.COMPLAINT
    elif event.event_type == EventType.BOUNCED:
        reason = Suppression.Reason.HARD_BOUNCE
    elif event.event_type == EventType.REJECTED and event.reject_reason in (
        RejectReason.INVALID,
        RejectReason.BOUNCED,
    ):
        reason = Suppression.Reason.INVALID
    if reason is None or not event.recipient:
        return
    try:
        address = normalize(Channel.EMAIL, event.recipient)
    except ValueError:
        logger.warning("%s webhook: %s event for an invalid address %r", esp_name, event.event_type, event.recipient)
        return
    detail = " ".join(str(p) for p in (event.description, event.mta_response) if p)
    source = f"webhook:{esp_name.lower()}"
    at = event.timestamp or timezone.now()
    item = SuppressionInput(
        channel=Channel.EMAIL, address=address, reason=reason, detail=detail, source=source, created_at=at
    )
    if suppressions_add(items=[item]):
        _events_for(channel=Channel.EMAIL, address=address, reason=reason, at=at, source=source)


# --- CSV import and export ---------------------------------------------------------------


@dataclass(frozen=True)
class ImportResult:
    added: int
    errors: tuple[tuple[int, str], ...]  # (line number, message)


def suppressions_import(*, text: str, source: str = "import") -> ImportResult:
    """Import a CSV with a header line: ``channel,address,reason[,detail]``. Lines with
    errors are reported with their line number and nothing is imported when any line is
    wrong (a half-applied file is harder to fix than a refused one)."""
    reader = csv.DictReader(io.StringIO(text))
    missing = {"channel", "address", "reason"} - set(reader.fieldnames or ())
    if missing:
        return ImportResult(0, ((1, f"Missing column(s): {', '.join(sorted(missing))}."),))
    items: list[SuppressionInput] = []
    errors: list[tuple[int, str]] = []
    for row in reader:
        line = reader.line_num
        channel = (row.get("channel") or "").strip().lower()
        reason = (row.get("reason") or "").strip().lower()
        if reason not in Suppression.Reason.values:
            errors.append((line, f"reason: '{reason}' is not one of {', '.join(Suppression.Reason.values)}."))
            continue
        try:
            address = normalize(channel, row.get("address") or "")
        except ValueError as exc:
            errors.append((line, f"{'address' if channel in ('email', 'sms') else 'channel'}: {exc}"))
            continue
        items.append(
            SuppressionInput(
                channel=channel, address=address, reason=reason, detail=(row.get("detail") or "").strip(), source=source
            )
        )
    if errors:
        return ImportResult(0, tuple(errors))
    with transaction.atomic():
        added = suppressions_add(items=items)
    return ImportResult(added, ())


def suppressions_export() -> str:
    """Every suppression as CSV (the import's columns plus ``created_at``)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in Suppression.objects.order_by("pk").values_list(*CSV_COLUMNS).iterator(chunk_size=2000):
        writer.writerow([*row[:4], row[4].isoformat()])
    return out.getvalue()
