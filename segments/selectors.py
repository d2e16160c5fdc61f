"""Reads of the segments app used by the other apps (experiments, campaigns).

Keyword-only; return querysets or frozen dataclasses. Other apps call these instead of
reaching into segments' models.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from django.db.models import Exists, OuterRef, QuerySet

from segments.models import Customer, CustomerLayer, Event, Layer, SegmentMembership


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
    """The customers a targeting definition selects, as one SQL query (EXISTS subqueries
    over the materialized members):

    - in at least one included segment (when any is given);
    - for each dimension with included layers, in one of that dimension's included
      layers (OR within a dimension, AND across dimensions: "important value or
      important retention" and "expiring within 3 months");
    - in no excluded segment and no excluded layer.
    """
    qs = base if base is not None else Customer.objects.all()
    include_segment_ids, exclude_segment_ids = list(include_segment_ids), list(exclude_segment_ids)
    exclude_layer_ids = list(exclude_layer_ids)
    layers_by_dimension: dict[int, list[int]] = defaultdict(list)
    included = Layer.objects.filter(pk__in=list(include_layer_ids)).values_list("pk", "dimension_id")
    for layer_id, dimension_id in included:
        layers_by_dimension[dimension_id].append(layer_id)

    def in_segments(ids: list[int]) -> Exists:
        return Exists(SegmentMembership.objects.filter(customer_id=OuterRef("pk"), segment_id__in=ids))

    def in_layers(ids: list[int]) -> Exists:
        return Exists(CustomerLayer.objects.filter(customer_id=OuterRef("pk"), layer_id__in=ids))

    if include_segment_ids:
        qs = qs.filter(in_segments(include_segment_ids))
    for layer_ids in layers_by_dimension.values():
        qs = qs.filter(in_layers(layer_ids))
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
