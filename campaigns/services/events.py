"""What campaigns write back to the event stream, through ``segments.services.ingestion``.

Event ids are derived from what happened (``coupon_redeemed:<code>``), so writing the same
fact twice is a no-op (ingestion is idempotent by ``event_id``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from segments.services.ingestion import EventInput, events_record


def event_write(
    *, event_id: str, customer_external_id: str, type: str, occurred_at: dt.datetime, properties: Mapping[str, Any]
) -> None:
    result = events_record(
        events=[
            EventInput(
                event_id=event_id,
                customer_id=customer_external_id,
                type=type,
                occurred_at=occurred_at,
                properties=dict(properties),
            )
        ],
        unknown_customers="reject",
    )
    if result.errors:
        item = result.errors[0]
        raise RuntimeError(f"Could not record {type} event {event_id}: {item.field}: {item.message}")
