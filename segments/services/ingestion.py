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
  different body is a conflict naming the fields that differ. "The same body" is judged
  on a canonical form (:func:`canonical_json`) that survives PostgreSQL's jsonb round
  trip (``1e16`` comes back as ``10000000000000000``, ``-0.0`` as ``0.0``).
- Exactly one writer is told it created a row: rows are inserted with ``INSERT … ON
  CONFLICT DO NOTHING RETURNING`` and only the ids the database returns count as
  created; concurrent identical requests get "duplicate" (customers: "updated").
- Clients (``from_client=True``: the API) may not post the event types the platform
  writes itself (:data:`PLATFORM_EVENT_TYPES`, e.g. coupon redemptions, which experiments
  count as conversions) nor use the event ids reserved for them (prefix
  :data:`PLATFORM_EVENT_ID_PREFIX`, see :func:`platform_event_id`), so a client can
  neither forge a platform fact nor squat the id a future one will use.
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
from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import connection, models, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from segments.models import Customer, CustomerRole, Event, EventType, Membership, Role
from segments.models.customers import CONTACT_FIELDS
from segments.services.partitions import EVENT_KEYS, KEYS_CLAIMED_SQL, KEYS_UNCLAIMED_SQL

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
# Event types only the platform writes, through ``platform_event_id`` ids: campaigns record
# coupon redemptions (``campaigns.services.events``). Deliveries and exposures are rows of
# their own apps, not events. A client posting one of these could forge a redemption that
# an experiment counts as a conversion.
# Bounces and spam complaints come from the SMTP conversation and the providers' signed
# webhooks (campaigns' suppression): a client could otherwise forge guardrail harm.
PLATFORM_EVENT_TYPES: frozenset[str] = frozenset({"coupon_redeemed", "bounce", "complaint"})
# Types the platform writes (under its own ids) that clients may post too: an unsubscribe
# from the company's own preference centre is as real as one from our one-click link.
UNSUBSCRIBE = "unsubscribe"
PLATFORM_WRITABLE_EVENT_TYPES: frozenset[str] = PLATFORM_EVENT_TYPES | {UNSUBSCRIBE}
# Every event id the platform writes starts with this; clients may not use it, so a
# client's event can never take the id a platform event will need later.
PLATFORM_EVENT_ID_PREFIX = "platform:"
ARCHIVED_MESSAGE = "This event_id was recorded in a month that has since been archived."
# Rows per statement: keeps SQLite under its bound-parameter limit and PostgreSQL
# statements a sensible size.
WRITE_BATCH = 1000


class Outcome(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DUPLICATE = "duplicate"
    CONFLICT = "conflict"
    UNKNOWN_CUSTOMER = "unknown_customer"
    REFUSED = "refused"  # a client sent what only the platform may write

    @property
    def is_error(self) -> bool:
        return self in (Outcome.CONFLICT, Outcome.UNKNOWN_CUSTOMER, Outcome.REFUSED)


@dataclass(frozen=True)
class CustomerInput:
    external_id: str
    # The fields the client sent, already validated; absent fields keep their stored value.
    values: Mapping[str, Any] = field(default_factory=dict)
    # The customer's whole set of role keys when sent (``()`` clears it); None keeps them.
    roles: tuple[str, ...] | None = None


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


def _insert_new(
    model: type[models.Model], rows: Sequence[Mapping[str, Any]], *, key: str | tuple[str, ...]
) -> set[Any]:
    """``INSERT … ON CONFLICT (key) DO NOTHING RETURNING key``: insert the rows whose key is
    not stored yet and return the keys this statement inserted. Of concurrent writers of
    one key exactly one gets it back (PostgreSQL waits for the other transaction to
    finish before deciding; SQLite serializes writers), which is what lets exactly one
    caller be told "created". Django's ``bulk_create(ignore_conflicts=True)`` does not say
    which rows it inserted, hence this statement. SQLite has RETURNING since 3.35."""
    if not rows:
        return set()
    meta = model._meta
    by_attname = {column.attname: column for column in meta.concrete_fields}
    columns = [by_attname[attname] for attname in rows[0]]
    quote = connection.ops.quote_name
    keys = [by_attname[name] for name in ((key,) if isinstance(key, str) else key)]
    key_columns = ", ".join(quote(column.column) for column in keys)
    head = f"INSERT INTO {quote(meta.db_table)} ({', '.join(quote(c.column) for c in columns)}) "
    tail = f" ON CONFLICT ({key_columns}) DO NOTHING RETURNING {key_columns}"
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    # On PostgreSQL one array per column (as Django's bulk_create does): a short statement
    # psycopg need not rewrite and PostgreSQL plans once, instead of 8 placeholders a row.
    unnest = "SELECT * FROM UNNEST(" + ", ".join(f"%s::{c.db_type(connection)}[]" for c in columns) + ")"
    claiming = model is Event and connection.vendor == "postgresql"
    if claiming:
        # PostgreSQL's events table is partitioned (migration 0006): no unique index on
        # event_id for ON CONFLICT to name. The key table stands in for it: the ids this
        # statement claims there (ON CONFLICT DO NOTHING RETURNING, with the same wait for
        # a concurrent writer of one id) are the rows it inserts and returns.
        names = ", ".join(quote(c.column) for c in columns)
        head = (
            f"WITH r AS ({unnest} AS r({names})), claimed AS (INSERT INTO {EVENT_KEYS} (event_id) "
            "SELECT event_id FROM r ON CONFLICT DO NOTHING RETURNING event_id) " + head
        )
        unnest, tail = "SELECT r.* FROM r JOIN claimed USING (event_id)", f" RETURNING {key_columns}"
    size = max(1, min(WRITE_BATCH, connection.ops.bulk_batch_size(columns, rows)))
    inserted: set[Any] = set()
    with connection.cursor() as cursor:
        if claiming:
            cursor.execute(KEYS_CLAIMED_SQL)
        for chunk in _chunks(rows, size):
            prepared = [
                [column.get_db_prep_save(row[column.attname], connection) for column in columns] for row in chunk
            ]
            if connection.vendor == "postgresql":
                cursor.execute(head + unnest + tail, [list(values) for values in zip(*prepared, strict=True)])
            else:
                params = [value for values in prepared for value in values]
                cursor.execute(head + "VALUES " + ", ".join([one] * len(chunk)) + tail, params)
            for returned in cursor.fetchall():
                values = tuple(_from_db(value, column) for value, column in zip(returned, keys, strict=True))
                inserted.add(values[0] if isinstance(key, str) else values)
        if claiming:
            cursor.execute(KEYS_UNCLAIMED_SQL)
    return inserted


def _from_db(value: Any, column: models.Field) -> Any:
    """A returned key value as the ORM would give it: SQLite returns datetimes as text (naive UTC)."""
    if isinstance(value, str) and column.get_internal_type() == "DateTimeField":
        parsed = parse_datetime(value)
        if parsed is not None:
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.UTC)
    return value


def customers_create_missing(*, external_ids: Iterable[str]) -> int:
    """Create a bare customer for each external id not stored yet; return how many were new."""
    wanted = set(external_ids)
    missing = sorted(wanted - _customer_ids(wanted).keys())
    now = timezone.now()
    rows = [_new_row(Customer, {"external_id": external_id}, now) for external_id in missing]
    return len(_insert_new(Customer, rows, key="external_id"))


def _new_row(model: type[models.Model], values: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """Every column of a new row (by attname): the values given, the model's defaults (and
    ``now`` for auto_now fields) for the rest, as ``Model.save()`` would fill them."""
    row: dict[str, Any] = {}
    for column in model._meta.concrete_fields:
        if column.primary_key:
            continue
        if column.attname in values:
            row[column.attname] = values[column.attname]
        elif getattr(column, "auto_now", False) or getattr(column, "auto_now_add", False):
            row[column.attname] = now
        else:
            row[column.attname] = column.get_default()
    return row


# --- Customers ----------------------------------------------------------------------


@transaction.atomic
def customers_upsert(*, customers: Sequence[CustomerInput]) -> IngestResult:
    """Insert or update customers by ``external_id``. New customers are inserted first with
    ``INSERT … ON CONFLICT DO NOTHING RETURNING`` (the ids it returns, and only those, were
    created by this call, even against concurrent writers); the others get one ``INSERT …
    ON CONFLICT DO UPDATE`` per group of items that set the same fields (usually one group
    per batch). Within a batch the first item of a new customer is "created", later ones
    "updated"."""
    merged: dict[str, dict[str, Any]] = {}
    first_item: dict[str, int] = {}
    roles: dict[str, tuple[str, ...]] = {}
    wanted_roles = {key for customer in customers for key in customer.roles or ()}
    role_ids = dict(Role.objects.filter(key__in=wanted_roles).values_list("key", "id")) if wanted_roles else {}
    refused: dict[int, ItemResult] = {}
    known = ""
    for index, customer in enumerate(customers):
        unknown_roles = sorted(set(customer.roles or ()) - role_ids.keys())
        if unknown_roles:
            known = known or ", ".join(Role.objects.order_by("key").values_list("key", flat=True)) or "none defined"
            message = f"Unknown role '{unknown_roles[0]}'; known roles: {known}."
            refused[index] = ItemResult(index, Outcome.REFUSED, "roles", message)
            continue
        if customer.roles is not None:
            roles[customer.external_id] = customer.roles
        first_item.setdefault(customer.external_id, index)
        merged.setdefault(customer.external_id, {}).update(customer.values)
        unknown = set(customer.values) - set(CUSTOMER_FIELDS)
        if unknown:
            raise ValueError(f"Not customer fields: {', '.join(sorted(unknown))}")

    existing = set(_customer_ids(merged))
    now = timezone.now()
    new_rows = [
        _new_row(Customer, {**values, "external_id": ext}, now) for ext, values in merged.items() if ext not in existing
    ]
    created = _insert_new(Customer, new_rows, key="external_id")
    outcomes = [
        refused.get(index)
        or ItemResult(
            index,
            Outcome.CREATED
            if customer.external_id in created and first_item[customer.external_id] == index
            else Outcome.UPDATED,
        )
        for index, customer in enumerate(customers)
    ]

    groups: dict[tuple[str, ...], list[Customer]] = {}
    for external_id, values in merged.items():
        if external_id in created:
            continue  # inserted above with every value it was sent
        groups.setdefault(tuple(sorted(values)), []).append(Customer(external_id=external_id, **values))
    for fields, rows in groups.items():
        for chunk in _chunks(rows):
            Customer.objects.bulk_create(
                chunk,
                update_conflicts=True,
                unique_fields=["external_id"],
                update_fields=[*fields, "updated_at"],
            )
    if roles:
        _roles_replace(roles, role_ids, now)
    return IngestResult(tuple(outcomes))


def _roles_replace(roles: Mapping[str, tuple[str, ...]], role_ids: Mapping[str, int], now: dt.datetime) -> None:
    """Make each customer's roles exactly the keys given: delete the others, insert the
    missing ones (``since`` of a role kept stays), per batch of customers, not per row."""
    ids = _customer_ids(roles)
    wanted = {(ids[external_id], role_ids[key]) for external_id, keys in roles.items() for key in keys}
    for chunk in _chunks(sorted(ids.values())):
        stored = dict(
            ((customer_id, role_id), pk)
            for pk, customer_id, role_id in CustomerRole.objects.filter(customer_id__in=chunk).values_list(
                "pk", "customer_id", "role_id"
            )
        )
        CustomerRole.objects.filter(pk__in=[pk for pair, pk in stored.items() if pair not in wanted]).delete()
        chunk_ids = set(chunk)
        CustomerRole.objects.bulk_create(
            [
                CustomerRole(customer_id=customer_id, role_id=role_id, since=now)
                for customer_id, role_id in sorted(wanted - stored.keys())
                if customer_id in chunk_ids
            ],
            ignore_conflicts=True,
        )


# --- Events -------------------------------------------------------------------------


def _canonical_number(value: int | float) -> str:
    """An exact decimal spelling of a JSON number with no trailing zeros and no sign on
    zero: what jsonb keeps of it. PostgreSQL stores a JSON number as ``numeric`` (``1e16``
    and ``10000000000000000`` are one value, ``-0.0`` is ``0.0``) and gives back its own
    spelling, which Python reads as an int or a float of the same value. ``repr(float)`` is
    what the JSON encoder sent. No ``Decimal.normalize()``: it rounds to 28 digits."""
    sign, digits, exponent = Decimal(repr(value) if isinstance(value, float) else value).as_tuple()
    assert isinstance(exponent, int)  # finite: NaN and Infinity are refused by the parsers
    number = "".join(map(str, digits)).lstrip("0")
    if not number:
        return "0"
    stripped = number.rstrip("0")
    exponent += len(number) - len(stripped)
    return f"{'-' if sign else ''}{stripped}e{exponent}"


def _canonical(value: Any) -> Any:
    # Tagged so that no two JSON values of different kinds compare equal (True == 1 in Python).
    if isinstance(value, dict):
        return ("o", tuple(sorted((str(k), _canonical(v)) for k, v in value.items())))
    if isinstance(value, list | tuple):
        return ("a", tuple(_canonical(v) for v in value))
    if isinstance(value, bool) or value is None:
        return ("b", value)
    if isinstance(value, int | float):
        return ("n", _canonical_number(value))
    if isinstance(value, str):
        return ("s", value)
    raise TypeError(f"Not a JSON value: {type(value).__name__}")


def canonical_json(value: Any) -> str:
    """A JSON value's identity as both databases keep it: object keys sorted, numbers by
    value (see :func:`_canonical_number`). Two values are "the same body" when these are
    equal, whether one side went through jsonb or not."""
    return json.dumps(_canonical(value), separators=(",", ":"))


def platform_event_id(key: str) -> str:
    """The event id of an event the platform writes (``key`` names the fact, e.g.
    ``coupon_redeemed:SUMMER-7Q2X``): in a namespace no client may use."""
    return f"{PLATFORM_EVENT_ID_PREFIX}{key}"


def _client_refusal(event: EventInput) -> tuple[str, str] | None:
    if event.type in PLATFORM_EVENT_TYPES:
        return "type", (
            f"'{event.type}' events are written by the platform itself (e.g. when a coupon is redeemed "
            "through the API); clients may not post them."
        )
    if event.event_id.startswith(PLATFORM_EVENT_ID_PREFIX):
        return "event_id", f"Event ids starting with '{PLATFORM_EVENT_ID_PREFIX}' are reserved for the platform."
    return None


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


def _compared(index: int, stored: Mapping[str, Any], body: Mapping[str, Any]) -> ItemResult:
    diff = _differences(stored, body)
    if diff:
        return ItemResult(index, Outcome.CONFLICT, "event_id", conflict_message(diff))
    return ItemResult(index, Outcome.DUPLICATE)


@transaction.atomic
def events_record(
    *, events: Sequence[EventInput], unknown_customers: str | None = None, from_client: bool = False
) -> IngestResult:
    """Record events idempotently by ``event_id``, in a bounded number of statements:
    resolve customers and event types, read the bodies already stored under these ids,
    insert the new ones with ``INSERT … ON CONFLICT DO NOTHING RETURNING`` (the ids it
    returns are "created"), then compare the rest with what a concurrent writer stored.
    ``from_client=True`` (the API) refuses platform event types and reserved ids."""
    rule = unknown_customer_rule(unknown_customers)
    outcomes: dict[int, ItemResult] = {}
    if from_client:
        for index, event in enumerate(events):
            refusal = _client_refusal(event)
            if refusal is not None:
                outcomes[index] = ItemResult(index, Outcome.REFUSED, *refusal)
    accepted = [(index, event) for index, event in enumerate(events) if index not in outcomes]
    type_ids = dict(EventType.objects.filter(code__in={e.type for _, e in accepted}).values_list("code", "id"))
    if rule == "create":
        customers_create_missing(external_ids={e.customer_id for _, e in accepted})
    customer_ids = _customer_ids(e.customer_id for _, e in accepted)
    stored = _stored_event_bodies(e.event_id for _, e in accepted)

    in_batch: dict[str, dict[str, Any]] = {}
    to_create: dict[int, tuple[str, dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    now = timezone.now()
    for index, event in accepted:
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
            outcomes[index] = _compared(index, previous, body)
            continue
        in_batch[event.event_id] = body
        rows.append(
            _new_row(
                Event,
                {
                    "event_id": event.event_id,
                    "customer_id": customer_pk,
                    "event_type_id": type_id,
                    "occurred_at": event.occurred_at,
                    "received_at": now,
                    "properties": dict(event.properties),
                    "amount": event.amount,
                    "currency": event.currency,
                },
                now,
            )
        )
        to_create[index] = (event.event_id, body)

    created = _insert_new(Event, rows, key="event_id")
    # Ids not inserted were stored by a concurrent request between our read and our
    # insert: the same body is a duplicate, another body a conflict. On PostgreSQL an id
    # can also be claimed by an event whose month was archived (detached): its body is
    # gone, the id stays taken, so it is a duplicate.
    now_stored = _stored_event_bodies(event_id for event_id, _ in to_create.values() if event_id not in created)
    for index, (event_id, body) in to_create.items():
        if event_id in created:
            outcomes[index] = ItemResult(index, Outcome.CREATED)
        elif event_id not in now_stored:
            outcomes[index] = ItemResult(index, Outcome.DUPLICATE, "event_id", ARCHIVED_MESSAGE)
        else:
            outcomes[index] = _compared(index, now_stored[event_id], body)
    _opt_outs_apply(
        row for row in rows if row["event_id"] in created and row["event_type_id"] == type_ids.get(UNSUBSCRIBE)
    )
    return IngestResult(tuple(outcomes[i] for i in range(len(events))))


def _opt_outs_apply(rows: Iterable[Mapping[str, Any]]) -> None:
    """An ``unsubscribe`` event naming a channel (``properties.channel``: email, sms, push)
    is an opt-out of that channel at the event's time: ``<channel>_opt_out_at`` moves to
    it unless a later opt-out is already recorded (a consent given after the event still
    wins, as ``Customer.reachable_by`` compares the two times). Only events this call
    created count, so a replay changes nothing. One UPDATE per (channel, time): unsubscribes
    are rare within a batch. An event without a channel (or with a topic: topic opt-outs
    belong to campaigns' preferences) leaves consent alone."""
    groups: dict[tuple[str, dt.datetime], list[int]] = {}
    for row in rows:
        properties = row.get("properties") or {}
        channel = properties.get("channel")
        if channel not in CONTACT_FIELDS or properties.get("topic"):
            continue
        groups.setdefault((channel, row["occurred_at"]), []).append(row["customer_id"])
    for (channel, at), customer_ids in groups.items():
        opt_out = CONTACT_FIELDS[channel][2]
        Customer.objects.filter(pk__in=customer_ids).filter(
            Q(**{f"{opt_out}__isnull": True}) | Q(**{f"{opt_out}__lt": at})
        ).update(**{opt_out: at})


# --- Memberships --------------------------------------------------------------------


def _membership_key(customer_pk: int, plan: str, started_at: dt.datetime) -> tuple[int, str, dt.datetime]:
    return (customer_pk, plan, started_at.astimezone(dt.UTC))


@transaction.atomic
def memberships_upsert(*, memberships: Sequence[MembershipInput]) -> IngestResult:
    """Insert or update membership terms keyed by (customer, plan, started_at): new terms
    with ``INSERT … ON CONFLICT DO NOTHING RETURNING`` (those returned were created by this
    call), the others with ``INSERT … ON CONFLICT DO UPDATE``, 1,000 terms per statement.
    Unknown customers are rejected."""
    customer_ids = _customer_ids(m.customer_id for m in memberships)
    existing: set[tuple[int, str, dt.datetime]] = set()
    pks = sorted(set(customer_ids.values()))
    for chunk in _chunks(pks):
        for customer_pk, plan, started_at in Membership.objects.filter(customer_id__in=chunk).values_list(
            "customer_id", "plan", "started_at"
        ):
            existing.add(_membership_key(customer_pk, plan, started_at))

    outcomes: dict[int, ItemResult] = {}
    first_item: dict[tuple[int, str, dt.datetime], int] = {}
    rows: dict[tuple[int, str, dt.datetime], Membership] = {}
    for index, membership in enumerate(memberships):
        customer_pk = customer_ids.get(membership.customer_id)
        if customer_pk is None:
            message = unknown_customer_message(membership.customer_id, events=False)
            outcomes[index] = ItemResult(index, Outcome.UNKNOWN_CUSTOMER, "customer_id", message)
            continue
        key = _membership_key(customer_pk, membership.plan, membership.started_at)
        first_item.setdefault(key, index)
        rows[key] = Membership(
            customer_id=customer_pk,
            plan=membership.plan,
            level=membership.level,
            started_at=membership.started_at,
            expires_at=membership.expires_at,
        )
    # New terms first, with INSERT … ON CONFLICT DO NOTHING RETURNING: only the terms this
    # call inserted are "created", even against a concurrent writer of the same term.
    now = timezone.now()
    new_rows = [
        _new_row(
            Membership,
            {
                "customer_id": row.customer_id,
                "plan": row.plan,
                "level": row.level,
                "started_at": row.started_at,
                "expires_at": row.expires_at,
            },
            now,
        )
        for key, row in rows.items()
        if key not in existing
    ]
    created = {
        _membership_key(*returned)
        for returned in _insert_new(Membership, new_rows, key=("customer_id", "plan", "started_at"))
    }
    for index, membership in enumerate(memberships):
        if index in outcomes:
            continue
        key = _membership_key(customer_ids[membership.customer_id], membership.plan, membership.started_at)
        is_new = key in created and first_item[key] == index
        outcomes[index] = ItemResult(index, Outcome.CREATED if is_new else Outcome.UPDATED)
    for chunk in _chunks([row for key, row in rows.items() if key not in created]):
        Membership.objects.bulk_create(
            chunk,
            update_conflicts=True,
            unique_fields=["customer", "plan", "started_at"],
            update_fields=["level", "expires_at", "updated_at"],
        )
    return IngestResult(tuple(outcomes[i] for i in range(len(memberships))))


def event_type_ensure(*, code: str, name: str, is_monetary: bool) -> tuple[EventType, bool]:
    """The event type ``code``, created (not built in) when missing; True when created.

    For setup code (the demo's marketplace adds ``sale``) that must add to the vocabulary
    before importing events of the type; growth users add types in admin › Event types. An
    existing type whose ``is_monetary`` differs is refused rather than silently changed:
    events already stored were validated against it."""
    event_type, created = EventType.objects.get_or_create(
        code=code, defaults={"name": name, "is_monetary": is_monetary, "is_builtin": False}
    )
    if not created and event_type.is_monetary != is_monetary:
        raise ValidationError({"is_monetary": f"Event type '{code}' exists with is_monetary={event_type.is_monetary}."})
    return event_type, created
