"""Ingestion: upsert customers and memberships, record events.

The one place these rows are written, for the API and the import commands alike (the
one exception, ``segments.importing.postgres``, bulk-loads events with ``COPY`` on
PostgreSQL and follows the same rules). Inputs arrive already parsed and validated
(``segments.importing.records``) as frozen dataclasses; every service works on a whole
batch with a bounded number of set-based statements, never one query per row.

Rules (documented in README.md):

- Customers are keyed by ``external_id``. An upsert sets the fields the client sent and
  keeps the stored value of every field it left out (a new customer gets the defaults).
  Within one batch, later items for the same customer win field by field.
- Events are keyed by the client's ``event_id``. The same id with the same body is a
  duplicate: nothing is stored and the stored event is the result. The same id with a
  different body is a conflict naming the fields that differ.
- An event for an unknown customer follows ``settings.GROWTH["UNKNOWN_CUSTOMER_EVENTS"]``:
  ``"reject"`` (default; the item fails on ``customer_id``) or ``"create"`` (a bare
  customer with that ``external_id`` is created first).
- Memberships are keyed by (customer, plan, started_at); an upsert sets level and
  expiry. A membership for an unknown customer is always rejected.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from segments.models import Customer, Event, EventType, Membership

# Customer fields an upsert may set (``external_id`` is the key).
CUSTOMER_FIELDS: tuple[str, ...] = (
    "signed_up_at",
    "timezone",
    "locale",
    "attributes",
    "email",
    "email_consent_at",
    "email_opt_out_at",
    "phone",
    "sms_consent_at",
    "sms_opt_out_at",
    "push_token",
    "push_consent_at",
    "push_opt_out_at",
)
UNKNOWN_CUSTOMER_RULES = ("reject", "create")
# Rows per statement: keeps SQLite under its bound-parameter limit and PostgreSQL
# statements a sensible size.
WRITE_BATCH = 1000


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    UNKNOWN_CUSTOMER = "unknown_customer"

    @property
    def is_error(self) -> bool:
        return self in (Outcome.CONFLICT, Outcome.UNKNOWN_CUSTOMER)


@dataclass(frozen=True)
class CustomerInput:
    external_id: str
    # The fields the client sent, already validated; absent fields keep their stored value.
    values: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EventInput:
    event_id: str
    customer_id: str  # the customer's external_id
    type: str
    occurred_at: dt.datetime
    properties: Mapping[str, Any] = field(default_factory=dict)
    amount: Decimal | None = None
    currency: str = ""


@dataclass(frozen=True)
class MembershipInput:
    customer_id: str  # the customer's external_id
    plan: str
    started_at: dt.datetime
    expires_at: dt.datetime
    level: str = ""


@dataclass(frozen=True)
class ItemResult:
    index: int
    outcome: Outcome
    field: str = ""
    message: str = ""


@dataclass(frozen=True)
class IngestResult:
    items: tuple[ItemResult, ...]

    def count(self, outcome: Outcome) -> int:
        return sum(1 for item in self.items if item.outcome == outcome)

    @property
    def errors(self) -> tuple[ItemResult, ...]:
        return tuple(item for item in self.items if item.outcome.is_error)


def unknown_customer_rule(value: str | None = None) -> str:
    rule = value if value is not None else settings.GROWTH.get("UNKNOWN_CUSTOMER_EVENTS", "reject")
    if rule not in UNKNOWN_CUSTOMER_RULES:
        raise ImproperlyConfigured(
            f"GROWTH_UNKNOWN_CUSTOMER_EVENTS must be one of {', '.join(UNKNOWN_CUSTOMER_RULES)}; got {rule!r}."
        )
    return rule


def unknown_customer_message(external_id: str, *, events: bool = True) -> str:
    hint = " (events for unknown customers are rejected: GROWTH_UNKNOWN_CUSTOMER_EVENTS)" if events else ""
    return f"Unknown customer '{external_id}': create the customer first{hint}."


def _chunks(items: Sequence[Any], size: int = WRITE_BATCH) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _customer_ids(external_ids: Iterable[str]) -> dict[str, int]:
    wanted = sorted(set(external_ids))
    found: dict[str, int] = {}
    for chunk in _chunks(wanted):
        found.update(Customer.objects.filter(external_id__in=chunk).values_list("external_id", "id"))
    return found


def customers_create_missing(*, external_ids: Iterable[str]) -> int:
    """Create a bare customer for each external id not stored yet; return how many were new."""
    wanted = set(external_ids)
    missing = sorted(wanted - _customer_ids(wanted).keys())
    created = 0
    for chunk in _chunks(missing):
        before = Customer.objects.filter(external_id__in=chunk).count()
        Customer.objects.bulk_create([Customer(external_id=ext) for ext in chunk], ignore_conflicts=True)
        created += len(chunk) - before
    return created


# --- Customers ----------------------------------------------------------------------


@transaction.atomic
def customers_upsert(*, customers: Sequence[CustomerInput]) -> IngestResult:
    """Insert or update customers by ``external_id``: one ``INSERT … ON CONFLICT DO UPDATE``
    per group of items that set the same fields (usually one group per batch)."""
    existing = set(_customer_ids(c.external_id for c in customers))
    merged: dict[str, dict[str, Any]] = {}
    outcomes: list[ItemResult] = []
    for index, customer in enumerate(customers):
        seen = customer.external_id in merged
        merged.setdefault(customer.external_id, {}).update(customer.values)
        is_new = customer.external_id not in existing and not seen
        outcomes.append(ItemResult(index, Outcome.CREATED if is_new else Outcome.UPDATED))

    groups: dict[tuple[str, ...], list[Customer]] = {}
    for external_id, values in merged.items():
        unknown = set(values) - set(CUSTOMER_FIELDS)
        if unknown:
            raise ValueError(f"Not customer fields: {', '.join(sorted(unknown))}")
        groups.setdefault(tuple(sorted(values)), []).append(Customer(external_id=external_id, **values))
    for fields, rows in groups.items():
        for chunk in _chunks(rows):
            Customer.objects.bulk_create(
                chunk,
                update_conflicts=True,
                unique_fields=["external_id"],
                update_fields=[*fields, "updated_at"],
            )
    return IngestResult(tuple(outcomes))


# --- Events -------------------------------------------------------------------------


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _event_body(
    *,
    customer_id: int,
    event_type_id: int,
    occurred_at: dt.datetime,
    properties: Any,
    amount: Decimal | None,
    currency: str,
) -> dict[str, Any]:
    """What makes two events with one ``event_id`` "the same"; keys are the API's field names."""
    return {
        "customer_id": customer_id,
        "type": event_type_id,
        "occurred_at": occurred_at.astimezone(dt.UTC),
        "properties": canonical_json(properties),
        "amount": None if amount is None else amount.quantize(Decimal("0.01")),
        "currency": currency or "",
    }


def _differences(stored: Mapping[str, Any], incoming: Mapping[str, Any]) -> list[str]:
    return [name for name in stored if stored[name] != incoming[name]]


def _stored_event_bodies(event_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    bodies: dict[str, dict[str, Any]] = {}
    columns = ("event_id", "customer_id", "event_type_id", "occurred_at", "properties", "amount", "currency")
    for chunk in _chunks(sorted(set(event_ids))):
        for event_id, customer_id, type_id, occurred_at, properties, amount, currency in Event.objects.filter(
            event_id__in=chunk
        ).values_list(*columns):
            bodies[event_id] = _event_body(
                customer_id=customer_id,
                event_type_id=type_id,
                occurred_at=occurred_at,
                properties=properties,
                amount=amount,
                currency=currency,
            )
    return bodies


def conflict_message(fields: Sequence[str]) -> str:
    return (
        "This event_id was already recorded with a different body (differs in: "
        f"{', '.join(fields)}). Use a new event_id for a new event."
    )


@transaction.atomic
def events_record(*, events: Sequence[EventInput], unknown_customers: str | None = None) -> IngestResult:
    """Record events idempotently by ``event_id``, in a bounded number of statements:
    resolve customers and event types, read the bodies already stored under these ids,
    ``bulk_create(ignore_conflicts=True)`` the new ones, then re-read what was stored to
    catch a concurrent writer that won the race with a different body."""
    rule = unknown_customer_rule(unknown_customers)
    type_ids = dict(EventType.objects.filter(code__in={e.type for e in events}).values_list("code", "id"))
    if rule == "create":
        customers_create_missing(external_ids={e.customer_id for e in events})
    customer_ids = _customer_ids(e.customer_id for e in events)
    stored = _stored_event_bodies(e.event_id for e in events)

    outcomes: dict[int, ItemResult] = {}
    in_batch: dict[str, dict[str, Any]] = {}
    to_create: dict[int, tuple[Event, dict[str, Any]]] = {}
    for index, event in enumerate(events):
        customer_pk = customer_ids.get(event.customer_id)
        if customer_pk is None:
            message = unknown_customer_message(event.customer_id)
            outcomes[index] = ItemResult(index, Outcome.UNKNOWN_CUSTOMER, "customer_id", message)
            continue
        type_id = type_ids.get(event.type)
        if type_id is None:  # parsers check types first; a type deleted meanwhile lands here
            raise ValueError(f"Unknown event type {event.type!r}")
        body = _event_body(
            customer_id=customer_pk,
            event_type_id=type_id,
            occurred_at=event.occurred_at,
            properties=event.properties,
            amount=event.amount,
            currency=event.currency,
        )
        previous = stored.get(event.event_id) or in_batch.get(event.event_id)
        if previous is not None:
            diff = _differences(previous, body)
            outcomes[index] = (
                ItemResult(index, Outcome.CONFLICT, "event_id", conflict_message(diff))
                if diff
                else ItemResult(index, Outcome.DUPLICATE)
            )
            continue
        in_batch[event.event_id] = body
        row = Event(
            event_id=event.event_id,
            customer_id=customer_pk,
            event_type_id=type_id,
            occurred_at=event.occurred_at,
            properties=dict(event.properties),
            amount=event.amount,
            currency=event.currency,
        )
        to_create[index] = (row, body)

    rows = [row for row, _ in to_create.values()]
    for chunk in _chunks(rows):
        Event.objects.bulk_create(chunk, ignore_conflicts=True)
    # A concurrent request may have stored one of these ids between our read and our
    # insert (ignore_conflicts skipped ours): compare with what is stored now.
    now_stored = _stored_event_bodies(row.event_id for row in rows)
    for index, (row, body) in to_create.items():
        diff = _differences(now_stored[row.event_id], body)
        outcomes[index] = (
            ItemResult(index, Outcome.CONFLICT, "event_id", conflict_message(diff))
            if diff
            else ItemResult(index, Outcome.CREATED)
        )
    return IngestResult(tuple(outcomes[i] for i in range(len(events))))


# --- Memberships --------------------------------------------------------------------


def _membership_key(customer_pk: int, plan: str, started_at: dt.datetime) -> tuple[int, str, dt.datetime]:
    return (customer_pk, plan, started_at.astimezone(dt.UTC))


@transaction.atomic
def memberships_upsert(*, memberships: Sequence[MembershipInput]) -> IngestResult:
    """Insert or update membership terms keyed by (customer, plan, started_at): one
    ``INSERT … ON CONFLICT DO UPDATE`` per 1,000 terms. Unknown customers are rejected."""
    customer_ids = _customer_ids(m.customer_id for m in memberships)
    existing: set[tuple[int, str, dt.datetime]] = set()
    pks = sorted(set(customer_ids.values()))
    for chunk in _chunks(pks):
        for customer_pk, plan, started_at in Membership.objects.filter(customer_id__in=chunk).values_list(
            "customer_id", "plan", "started_at"
        ):
            existing.add(_membership_key(customer_pk, plan, started_at))

    outcomes: list[ItemResult] = []
    rows: dict[tuple[int, str, dt.datetime], Membership] = {}
    for index, membership in enumerate(memberships):
        customer_pk = customer_ids.get(membership.customer_id)
        if customer_pk is None:
            outcomes.append(
                ItemResult(
                    index,
                    Outcome.UNKNOWN_CUSTOMER,
                    "customer_id",
                    unknown_customer_message(membership.customer_id, events=False),
                )
            )
            continue
        key = _membership_key(customer_pk, membership.plan, membership.started_at)
        outcomes.append(ItemResult(index, Outcome.UPDATED if key in existing or key in rows else Outcome.CREATED))
        rows[key] = Membership(
            customer_id=customer_pk,
            plan=membership.plan,
            level=membership.level,
            started_at=membership.started_at,
            expires_at=membership.expires_at,
        )
    for chunk in _chunks(list(rows.values())):
        Membership.objects.bulk_create(
            chunk,
            update_conflicts=True,
            unique_fields=["customer", "plan", "started_at"],
            update_fields=["level", "expires_at", "updated_at"],
        )
    return IngestResult(tuple(outcomes))
