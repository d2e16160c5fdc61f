"""What campaigns write back to the event stream, through ``segments.services.ingestion``.

Event ids are derived from what happened (``coupon_redeemed:<code>``), so writing the same
fact twice is a no-op (ingestion is idempotent by ``event_id``). They are stored in the
platform's id namespace (``platform:coupon_redeemed:<code>``), which API clients may not
use. Written: the types listed in ``PLATFORM_EVENT_TYPES`` (refused from clients) and
``unsubscribe`` (``CLIENT_TOO``), which clients also post (their own unsubscribe pages): the
platform's copy of an opt-out is its own fact, in its own id namespace.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from segments.services.ingestion import (
    PLATFORM_EVENT_TYPES,
    UNSUBSCRIBE,
    EventInput,
    events_record,
    platform_event_id,
)

# Types the platform writes that clients may post as well (``campaigns.services.consent``
# records every opt-out it takes as an ``unsubscribe`` event, the guardrail metric's input).
CLIENT_TOO: frozenset[str] = frozenset({UNSUBSCRIBE})


def event_write(
    *, event_id: str, customer_external_id: str, type: str, occurred_at: dt.datetime, properties: Mapping[str, Any]
) -> None:
    if type not in PLATFORM_EVENT_TYPES | CLIENT_TOO:
        raise ValueError(f"{type!r} is not a platform event type: add it to PLATFORM_EVENT_TYPES first")
    result = events_record(
        events=[
            EventInput(
                event_id=platform_event_id(event_id),
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
