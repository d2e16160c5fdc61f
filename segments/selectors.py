"""Reads of the segments app used by the other apps (experiments, campaigns).

Keyword-only; return querysets or frozen dataclasses. Other apps call these instead of
reaching into segments' models.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import Exists, OuterRef, Q, QuerySet

from segments.models import Customer, CustomerLayer, Event, SegmentMembership


def customer_get(*, external_id: str) -> Customer | None:
    return Customer.objects.filter(external_id=external_id).first()


def customer_layer_snapshot(*, customer_id: int) -> dict[str, str]:
    """The customer's current layer in every dimension: ``{dimension key: layer key}``."""
    rows = CustomerLayer.objects.filter(customer_id=customer_id).values_list("dimension__key", "layer__key")
    return dict(rows)


def audience_queryset(
    *,
    include_segment_ids: Iterable[int] = (),
    exclude_segment_ids: Iterable[int] = (),
    include_layer_ids: Iterable[int] = (),
    exclude_layer_ids: Iterable[int] = (),
    base: QuerySet[Customer] | None = None,
) -> QuerySet[Customer]:
    """Customers in any included segment or layer (everyone when none is given), and in
    no excluded one. One SQL query with EXISTS subqueries over the materialized members."""
    qs = base if base is not None else Customer.objects.all()
    include_segment_ids, exclude_segment_ids = list(include_segment_ids), list(exclude_segment_ids)
    include_layer_ids, exclude_layer_ids = list(include_layer_ids), list(exclude_layer_ids)

    def in_segments(ids: list[int]) -> Exists:
        return Exists(SegmentMembership.objects.filter(customer_id=OuterRef("pk"), segment_id__in=ids))

    def in_layers(ids: list[int]) -> Exists:
        return Exists(CustomerLayer.objects.filter(customer_id=OuterRef("pk"), layer_id__in=ids))

    include = Q()
    if include_segment_ids:
        include |= Q(in_segments(include_segment_ids))
    if include_layer_ids:
        include |= Q(in_layers(include_layer_ids))
    if include:
        qs = qs.filter(include)
    if exclude_segment_ids:
        qs = qs.exclude(in_segments(exclude_segment_ids))
    if exclude_layer_ids:
        qs = qs.exclude(in_layers(exclude_layer_ids))
    return qs


def events_queryset(*, event_type_codes: Iterable[str] | None = None) -> QuerySet[Event]:
    """Events, optionally of the given types; the base of conversion queries."""
    qs = Event.objects.all()
    if event_type_codes is not None:
        qs = qs.filter(event_type__code__in=list(event_type_codes))
    return qs
