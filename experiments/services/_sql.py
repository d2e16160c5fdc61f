"""Raw SQL fragments shared by the services (portable between PostgreSQL and SQLite)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db import connection

from experiments.models import Assignment

ASSIGNMENT_TABLE = Assignment._meta.db_table


def db_datetime(value: dt.datetime | None) -> Any:
    """A datetime as a raw SQL parameter (SQLite stores naive UTC text in Django's format)."""
    return connection.ops.adapt_datetimefield_value(value)


def exposure_sql(where: str) -> str:
    """``UPDATE`` recording one exposure at a time given 4 times by ``exposure_params``:
    the earliest exposure is kept as the first, the latest as the last, all are counted."""
    return (
        f"UPDATE {ASSIGNMENT_TABLE} SET exposure_count = exposure_count + 1, "
        "first_exposed_at = CASE WHEN first_exposed_at IS NULL OR first_exposed_at > %s THEN %s "
        "ELSE first_exposed_at END, "
        "last_exposed_at = CASE WHEN last_exposed_at IS NULL OR last_exposed_at < %s THEN %s "
        f"ELSE last_exposed_at END WHERE {where}"
    )


def exposure_params(at: dt.datetime) -> list[Any]:
    value = db_datetime(at)
    return [value, value, value, value]
