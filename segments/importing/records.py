"""Record parsers shared by the API and the import commands.

``parse_customer`` / ``parse_event`` / ``parse_membership`` turn one decoded record (a JSON
object, or a CSV row as a dict of strings with ``text=True``) into the service input
dataclasses, or raise ``RecordError`` naming every bad field, so a record is valid in a
file exactly when it is valid in a request. Strings PostgreSQL cannot store (NUL, lone
surrogates, NaN in JSON) are refused here rather than failing a whole batch later.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import zoneinfo
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from segments.models import EventType
from segments.services.ingestion import CUSTOMER_FIELDS, CustomerInput, EventInput, MembershipInput

MAX_ID_LENGTH = 128
PHONE_RE = re.compile(r"^\+[1-9]\d{6,14}$")
CURRENCY_RE = re.compile(r"^[A-Z]{3}$")
ROLE_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_ROLES = 10
LOCALE_RE = re.compile(r"^[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*$")
AMOUNT_LIMIT = Decimal(10) ** 12  # DecimalField(max_digits=14, decimal_places=2)
CENT = Decimal("0.01")
TIMESTAMP_HINT = "Use an ISO 8601 timestamp with a UTC offset, e.g. 2024-05-01T12:30:00+02:00 or …Z."

CUSTOMER_TIMESTAMPS = frozenset(
    {
        "signed_up_at",
        "email_consent_at",
        "email_opt_out_at",
        "sms_consent_at",
        "sms_opt_out_at",
        "push_consent_at",
        "push_opt_out_at",
    }
)
CUSTOMER_COLUMNS = ("external_id", *CUSTOMER_FIELDS, "roles")
EVENT_COLUMNS = ("event_id", "customer_id", "type", "occurred_at", "amount", "currency", "properties")
MEMBERSHIP_COLUMNS = ("customer_id", "plan", "level", "started_at", "expires_at")
JSON_COLUMNS = frozenset({"properties", "attributes"})


class RecordError(Exception):
    """A record failed validation; ``errors`` maps each bad field ("" = the whole record) to why."""

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k or 'record'}: {v}" for k, v in self.errors.items()))


# --- Field primitives ---------------------------------------------------------------


@functools.cache
def time_zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# One decoder for every call: ``json.loads`` with a keyword argument builds a new
# ``JSONDecoder`` per call, and sniffs the encoding of bytes (UTF-16/32, BOM) per call:
# together a fifth of the importer's parsing time per line (cProfile, 200k lines).
_STRICT_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def loads_json(raw: str | bytes) -> Any:
    """Strict JSON: NaN and Infinity are refused (PostgreSQL's jsonb cannot store them).
    Same result and errors as ``json.loads(raw, parse_constant=…)``, which still handles the
    rare inputs (a BOM, UTF-16/32 bytes) the fast path leaves to it."""
    if isinstance(raw, bytes):
        # UTF-8 without a BOM: no BOM of any kind and no NUL byte among the first four
        # (json.detect_encoding's tests for UTF-16/32).
        if raw[:3] == b"\xef\xbb\xbf" or raw[:2] in (b"\xff\xfe", b"\xfe\xff") or 0 in raw[:4]:
            return json.loads(raw, parse_constant=_reject_constant)
        # As json.loads decodes UTF-8 bytes: surrogatepass, so a lone surrogate reaches the
        # record checks (which name it) instead of failing as invalid UTF-8.
        return _STRICT_DECODER.decode(raw.decode("utf-8", "surrogatepass"))
    if raw.startswith("\ufeff"):
        return json.loads(raw, parse_constant=_reject_constant)  # its "Unexpected UTF-8 BOM" error
    return _STRICT_DECODER.decode(raw)


def _text_problem(value: str) -> str | None:
    if "\x00" in value:
        return "Contains a NUL character."
    if value.isascii():
        return None
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "Contains text that is not valid Unicode (a lone surrogate)."
    return None


# Compact, strict (no NaN/Infinity) and UTF-8 as is: what the COPY path sends to jsonb.
_compact_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode


# The last object ``_json_problem`` encoded and its text, held (so the identity test below
# cannot match a new object at a recycled address): the COPY path sends the text it just
# checked instead of encoding the properties a second time.
_last_encoded: tuple[Any, str] = (None, "")


def _json_problem(value: Any) -> str | None:
    global _last_encoded
    try:
        dumped = _compact_json(value)
    except ValueError:
        return "Contains NaN or Infinity."
    if "\\u0000" in dumped:
        return "Contains a NUL character."
    problem = _text_problem(dumped)
    if problem is None:
        _last_encoded = (value, dumped)
    return problem


def compact_json(value: Any) -> str:
    """``value`` as compact JSON text: the text ``_json_problem`` made when it has just
    checked this very object (one tuple read: safe across threads), else encoded now."""
    held, text = _last_encoded
    return text if held is value else _compact_json(value)


def parse_timestamp(value: Any) -> dt.datetime:
    """A timezone-aware ISO 8601 timestamp; naive or unparsable ones raise ValueError."""
    if isinstance(value, dt.datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value)
        except ValueError:
            try:
                parsed = dt.datetime.fromisoformat(value.strip())
            except ValueError:
                raise ValueError(f"'{value[:64]}' is not a timestamp. {TIMESTAMP_HINT}") from None
    else:
        raise ValueError(f"Expected a string. {TIMESTAMP_HINT}")
    if parsed.tzinfo is dt.UTC:
        return parsed
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"The timestamp has no UTC offset (naive). {TIMESTAMP_HINT}")
    try:
        return parsed.astimezone(dt.UTC)
    except OverflowError:
        raise ValueError("The timestamp is out of range.") from None


def parse_amount(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError('Expected a decimal number, e.g. 42.50 or "42.50".')
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else repr(value))
    except InvalidOperation:
        raise ValueError(f"'{str(value)[:32]}' is not a decimal number.") from None
    if not amount.is_finite():
        raise ValueError("Expected a finite decimal number.")
    if abs(amount) >= AMOUNT_LIMIT:
        raise ValueError("Must be less than 1,000,000,000,000 in absolute value.")
    if amount != amount.quantize(CENT):
        raise ValueError("At most 2 decimal places.")
    return amount.quantize(CENT)


def _string(
    record: Mapping[str, Any],
    name: str,
    errors: dict[str, str],
    *,
    max_length: int,
    required: bool = False,
    blank: bool = True,
) -> str | None:
    """A string field; ``None`` when absent (or invalid, with the error recorded)."""
    value = record.get(name)
    # The common case in one test: a non-blank ASCII string of a valid length.
    if type(value) is str and 0 < len(value) <= max_length and value.isascii() and not value.isspace():
        if "\x00" not in value:
            return value
    if value is None:
        if required:
            errors[name] = "This field is required."
        return None
    if not isinstance(value, str):
        errors[name] = f"Expected a string, got {type(value).__name__}."
        return None
    if not value.strip() and (required or not blank):
        errors[name] = "May not be blank."
        return None
    if len(value) > max_length:
        errors[name] = f"At most {max_length} characters (got {len(value)})."
        return None
    problem = _text_problem(value)
    if problem:
        errors[name] = problem
        return None
    return value


def _timestamp(record: Mapping[str, Any], name: str, errors: dict[str, str], *, required: bool) -> dt.datetime | None:
    value = record.get(name)
    if value is None:
        if required:
            errors[name] = f"This field is required. {TIMESTAMP_HINT}"
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        errors[name] = str(exc)
        return None


def _json_object(record: Mapping[str, Any], name: str, errors: dict[str, str], *, text: bool) -> dict[str, Any] | None:
    value = record.get(name)
    if value is None:
        return None
    if text and isinstance(value, str):
        try:
            value = loads_json(value)
        except (ValueError, RecursionError) as exc:
            errors[name] = f"Not valid JSON: {exc}"
            return None
    if not isinstance(value, dict):
        errors[name] = f"Expected a JSON object, got {type(value).__name__}."
        return None
    problem = _json_problem(value)
    if problem:
        errors[name] = problem
        return None
    return value


def _record(record: Any) -> Mapping[str, Any]:
    if not isinstance(record, dict):
        raise RecordError({"": f"Expected a JSON object, got {type(record).__name__}."})
    return record


# --- Record parsers -----------------------------------------------------------------


def parse_customer(record: Any, *, text: bool = False) -> CustomerInput:
    """``text=True`` for CSV rows: every value is a string and JSON columns are encoded."""
    record = _record(record)
    errors: dict[str, str] = {}
    external_id = _string(record, "external_id", errors, max_length=MAX_ID_LENGTH, required=True)
    values: dict[str, Any] = {}
    for name in CUSTOMER_TIMESTAMPS:
        if name in record:
            if record[name] is None:
                values[name] = None  # an explicit null clears the timestamp
            else:
                parsed = _timestamp(record, name, errors, required=False)
                if parsed is not None:
                    values[name] = parsed
    if "timezone" in record:
        tz = _string(record, "timezone", errors, max_length=64, required=True)
        if tz is not None:
            if tz not in time_zone_names():
                errors["timezone"] = f"'{tz[:64]}' is not an IANA time zone name (e.g. 'Europe/Paris')."
            else:
                values["timezone"] = tz
    if "locale" in record:
        locale = _string(record, "locale", errors, max_length=35)
        if locale is not None:
            if locale and not LOCALE_RE.match(locale):
                errors["locale"] = "Use a BCP 47 language tag, e.g. 'en' or 'pt-BR'."
            else:
                values["locale"] = locale
        elif record["locale"] is None:
            values["locale"] = ""  # an explicit null clears it, like the contact points
    if "attributes" in record:
        attributes = _json_object(record, "attributes", errors, text=text)
        if attributes is not None:
            values["attributes"] = attributes
        elif record["attributes"] is None:
            values["attributes"] = {}
    if "email" in record:
        email = _string(record, "email", errors, max_length=254)
        if email is not None:
            if email:
                try:
                    validate_email(email)
                except ValidationError:
                    errors["email"] = "Enter a valid email address."
            if "email" not in errors:
                values["email"] = email
        elif record["email"] is None:
            values["email"] = ""
    if "phone" in record:
        phone = _string(record, "phone", errors, max_length=64)  # the E.164 check bounds it to 16
        if phone is not None:
            if phone and not PHONE_RE.match(phone):
                errors["phone"] = "Use E.164 format: '+', country code and number, e.g. +33612345678."
            else:
                values["phone"] = phone
        elif record["phone"] is None:
            values["phone"] = ""
    if "push_token" in record:
        token = _string(record, "push_token", errors, max_length=255)
        if token is not None:
            values["push_token"] = token
        elif record["push_token"] is None:
            values["push_token"] = ""
    roles = _roles(record, errors, text=text) if "roles" in record else None
    if errors:
        raise RecordError(errors)
    assert external_id is not None
    return CustomerInput(external_id=external_id, values=values, roles=roles)


def _roles(record: Mapping[str, Any], errors: dict[str, str], *, text: bool) -> tuple[str, ...] | None:
    """The customer's whole set of roles (keys; null or [] clears it). CSV: comma-separated.
    Whether each role exists is the service's check (it knows the Role table)."""
    value = record["roles"]
    if value is None:
        return ()
    if text and isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        errors["roles"] = 'A list of role keys, e.g. ["buyer", "seller"].'
        return None
    if len(value) > MAX_ROLES:
        errors["roles"] = f"At most {MAX_ROLES} roles."
        return None
    bad = [item for item in value if not ROLE_RE.match(item)]
    if bad:
        errors["roles"] = f"'{bad[0][:40]}' is not a role key (lower-case letters, digits, '_' and '-')."
        return None
    return tuple(sorted(set(value)))


def parse_event(record: Any, *, event_types: Mapping[str, bool], text: bool = False) -> EventInput:
    """``event_types`` maps each known type code to whether it is monetary."""
    record = _record(record)
    errors: dict[str, str] = {}
    event_id = _string(record, "event_id", errors, max_length=MAX_ID_LENGTH, required=True)
    customer_id = _string(record, "customer_id", errors, max_length=MAX_ID_LENGTH, required=True)
    type_code = _string(record, "type", errors, max_length=64, required=True)
    is_monetary = False
    if type_code is not None:
        if type_code not in event_types:
            known = ", ".join(sorted(event_types)[:30])
            errors["type"] = f"Unknown event type '{type_code[:64]}'. Known types: {known}."
        else:
            is_monetary = event_types[type_code]
    occurred_at = _timestamp(record, "occurred_at", errors, required=True)
    properties = _json_object(record, "properties", errors, text=text)
    amount: Decimal | None = None
    raw_amount = record.get("amount")
    if raw_amount is not None:
        try:
            amount = parse_amount(raw_amount)
        except ValueError as exc:
            errors["amount"] = str(exc)
    currency = _string(record, "currency", errors, max_length=3) or ""
    if currency and not CURRENCY_RE.match(currency):
        errors["currency"] = "Use an ISO 4217 code in capitals, e.g. EUR."
    if is_monetary:
        if raw_amount is None:
            errors["amount"] = f"Required for '{type_code}' events (they carry money)."
        if not currency and "currency" not in errors:
            errors["currency"] = f"Required for '{type_code}' events (they carry money), e.g. EUR."
    elif raw_amount is not None and not currency and "currency" not in errors:
        errors["currency"] = "Required when an amount is given, e.g. EUR."
    if errors:
        raise RecordError(errors)
    assert event_id is not None and customer_id is not None and type_code is not None and occurred_at is not None
    return EventInput(
        event_id=event_id,
        customer_id=customer_id,
        type=type_code,
        occurred_at=occurred_at,
        properties=properties or {},
        amount=amount,
        currency=currency,
    )


def parse_membership(record: Any, *, text: bool = False) -> MembershipInput:
    record = _record(record)
    errors: dict[str, str] = {}
    customer_id = _string(record, "customer_id", errors, max_length=MAX_ID_LENGTH, required=True)
    plan = _string(record, "plan", errors, max_length=64, required=True)
    level = _string(record, "level", errors, max_length=64) or ""
    started_at = _timestamp(record, "started_at", errors, required=True)
    expires_at = _timestamp(record, "expires_at", errors, required=True)
    if started_at and expires_at and expires_at <= started_at:
        errors["expires_at"] = "Must be after started_at."
    if errors:
        raise RecordError(errors)
    assert customer_id is not None and plan is not None and started_at is not None and expires_at is not None
    return MembershipInput(
        customer_id=customer_id, plan=plan, level=level, started_at=started_at, expires_at=expires_at
    )


def event_type_map() -> dict[str, bool]:
    return dict(EventType.objects.values_list("code", "is_monetary"))
