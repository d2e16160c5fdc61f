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
    """``UPDATE`` recording one exposure at a time given by ``exposure_params``: the
    earliest exposure is kept as the first, the latest as the last, all are counted.

    A time before the row's ``assigned_at`` is clamped to it (``E`` below): nobody can see
    a variant before they were given it, so an exposure dated earlier (a caller's stale
    clock) would only let pre-experiment events count as conversions. Client-supplied times
    are checked first (``exposures.exposure_log`` refuses them beyond a clock skew); this
    keeps the platform's own callers (campaigns, the assignment endpoint) inside the rule.
    """
    effective = "(CASE WHEN assigned_at > %s THEN assigned_at ELSE %s END)"
    return (
        f"UPDATE {ASSIGNMENT_TABLE} SET exposure_count = exposure_count + 1, "
        f"first_exposed_at = CASE WHEN first_exposed_at IS NULL OR first_exposed_at > {effective} THEN {effective} "
        "ELSE first_exposed_at END, "
        f"last_exposed_at = CASE WHEN last_exposed_at IS NULL OR last_exposed_at < {effective} THEN {effective} "
        f"ELSE last_exposed_at END WHERE {where}"
    )


def exposure_params(at: dt.datetime) -> list[Any]:
    value = db_datetime(at)
    return [value] * 8
