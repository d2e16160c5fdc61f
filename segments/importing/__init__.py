"""Bringing customer data in (``import_*`` commands, and the API's record validation).

- ``records``: ``parse_customer`` / ``parse_event`` / ``parse_membership`` turn one
  decoded record into the service input dataclasses or raise ``RecordError`` naming
  every bad field; the API and the import commands share them.
- ``readers``: ``read_jsonl`` / ``read_csv`` stream a file line by line (memory flat in
  file size) and yield ``(line number, record, error)``.
- ``loaders``: ``import_customers`` / ``import_memberships`` / ``import_events``: parse,
  write in batches through ``segments.services.ingestion``, report every bad line.
- ``postgres``: the ``COPY`` fast path of ``import_events`` on PostgreSQL.

Re-running any import stores nothing twice.
"""

from segments.importing.loaders import ErrorSink, ImportStats, import_customers, import_events, import_memberships
from segments.importing.readers import ImportFileError, Line, detect_format, read_csv, read_jsonl
from segments.importing.records import (
    CURRENCY_RE,
    CUSTOMER_COLUMNS,
    EVENT_COLUMNS,
    LOCALE_RE,
    MEMBERSHIP_COLUMNS,
    PHONE_RE,
    RecordError,
    event_type_map,
    loads_json,
    parse_amount,
    parse_customer,
    parse_event,
    parse_membership,
    parse_timestamp,
    time_zone_names,
)

__all__ = [
    "CURRENCY_RE",
    "CUSTOMER_COLUMNS",
    "EVENT_COLUMNS",
    "LOCALE_RE",
    "MEMBERSHIP_COLUMNS",
    "PHONE_RE",
    "ErrorSink",
    "ImportFileError",
    "ImportStats",
    "Line",
    "RecordError",
    "detect_format",
    "event_type_map",
    "import_customers",
    "import_events",
    "import_memberships",
    "loads_json",
    "parse_amount",
    "parse_customer",
    "parse_event",
    "parse_membership",
    "parse_timestamp",
    "read_csv",
    "read_jsonl",
    "time_zone_names",
]
