from segments.models.customers import (
    CONTACT_FIELDS,
    Channel,
    Customer,
    CustomerQuerySet,
    CustomerTag,
    Event,
    EventType,
    Membership,
    Tag,
)
from segments.models.engine import (
    CustomerLayer,
    Dimension,
    Layer,
    LayerHistory,
    RecomputeRun,
    Segment,
    SegmentMembership,
)

__all__ = [
    "CONTACT_FIELDS",
    "Channel",
    "Customer",
    "CustomerLayer",
    "CustomerQuerySet",
    "CustomerTag",
    "Dimension",
    "Event",
    "EventType",
    "Layer",
    "LayerHistory",
    "Membership",
    "RecomputeRun",
    "Segment",
    "SegmentMembership",
    "Tag",
]
