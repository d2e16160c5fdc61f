"""Reads of the segments app used by the other apps (experiments, campaigns).

Keyword-only; return querysets or frozen dataclasses. Other apps call these instead of
reaching into segments' models.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Count, Exists, Model, OuterRef, QuerySet, Subquery

from segments.models import (
    Customer,
    CustomerLayer,
    Dimension,
    Event,
    EventType,
    Layer,
    LayerHistory,
    Membership,
    RecomputeRun,
    SegmentMembership,
)


def customer_get(*, external_id: str, with_layers: bool = False) -> Customer | None:
    """The customer with this external id, or None.

    ``with_layers`` also reads the customer's current layers in the same statement, as
    ``customer.current_layers`` (``{dimension key: layer key}``, what
    ``customer_layer_snapshot`` returns): the assignment API needs them for a customer's
    first assignment and would otherwise spend a round trip on them. The statement is
    written once per database vendor (compiling it through the ORM on every request cost
    more than the round trip it saves)."""
    if not with_layers:
        return Customer.objects.filter(external_id=external_id).first()
    customer = next(iter(Customer.objects.raw(_customer_with_layers_sql(connection.vendor), [external_id])), None)
    if customer is not None:
        pairs: str = customer.layer_pairs or ""  # type: ignore[attr-defined]
        customer.current_layers = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)  # type: ignore[attr-defined]
    return customer


@functools.cache
def _customer_with_layers_sql(vendor: str) -> str:
    """The customer row and its ``dimension=layer`` pairs joined by ``,`` (keys are slugs:
    neither sign occurs in them)."""
    quote = connection.ops.quote_name

    def column(model: type[Model], field: str) -> str:
        return quote(model._meta.get_field(field).column)

    aggregate = "STRING_AGG" if vendor == "postgresql" else "GROUP_CONCAT"
    pairs = (
        f"SELECT {aggregate}(d.{column(Dimension, 'key')} || '=' || l.{column(Layer, 'key')}, ',') "
        f"FROM {quote(CustomerLayer._meta.db_table)} cl "
        f"JOIN {quote(Dimension._meta.db_table)} d "
        f"ON d.{column(Dimension, 'id')} = cl.{column(CustomerLayer, 'dimension')} "
        f"JOIN {quote(Layer._meta.db_table)} l ON l.{column(Layer, 'id')} = cl.{column(CustomerLayer, 'layer')} "
        f"WHERE cl.{column(CustomerLayer, 'customer')} = c.{column(Customer, 'id')}"
    )
    return (
        f"SELECT c.*, ({pairs}) AS layer_pairs FROM {quote(Customer._meta.db_table)} c "
        f"WHERE c.{column(Customer, 'external_id')} = %s"
    )


def customers_queryset(*, ids: Iterable[int] | QuerySet[Any] | None = None) -> QuerySet[Customer]:
    """All customers, or those whose primary key is in ``ids`` (a list, or a queryset of
    ids that stays a subquery)."""
    if ids is None:
        return Customer.objects.all()
    return Customer.objects.filter(pk__in=ids if isinstance(ids, QuerySet) else list(ids))


def event_type_get(*, code: str) -> EventType | None:
    return EventType.objects.filter(code=code).first()


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

    def in_layers(dimension_id: int, ids: list[int]) -> Exists:
        # Filtering on the dimension too lets every backend probe the unique
        # (customer, dimension) index once per customer (SQLite would otherwise scan the
        # layer's members through the layer index for each customer).
        return Exists(
            CustomerLayer.objects.filter(customer_id=OuterRef("pk"), dimension_id=dimension_id, layer_id__in=ids)
        )

    if include_segment_ids:
        qs = qs.filter(in_segments(include_segment_ids))
    for dimension_id, layer_ids in layers_by_dimension.items():
        qs = qs.filter(in_layers(dimension_id, layer_ids))
    if exclude_segment_ids:
        qs = qs.exclude(in_segments(exclude_segment_ids))
    excluded_by_dimension: dict[int, list[int]] = defaultdict(list)
    for layer_id, dimension_id in Layer.objects.filter(pk__in=exclude_layer_ids).values_list("pk", "dimension_id"):
        excluded_by_dimension[dimension_id].append(layer_id)
    for dimension_id, layer_ids in excluded_by_dimension.items():
        qs = qs.exclude(in_layers(dimension_id, layer_ids))
    return qs


def events_queryset(*, event_type_codes: Iterable[str] | None = None) -> QuerySet[Event]:
    """Events, optionally of the given types; the base of conversion queries."""
    qs = Event.objects.all()
    if event_type_codes is not None:
        qs = qs.filter(event_type__code__in=list(event_type_codes))
    return qs


# --- Layers and segments of customers (read by the API, experiments and campaigns) --------


@dataclass(frozen=True)
class CustomerLayerInfo:
    dimension: str  # dimension key, e.g. "rfm"
    dimension_name: str
    layer: str  # layer key, e.g. "important_value"
    layer_name: str
    since: dt.datetime  # when the customer entered the layer
    computed_at: dt.datetime | None  # the dimension's last successful recompute
    valid_until: dt.datetime | None  # membership levels: held until then at least

    @property
    def qualified_key(self) -> str:
        return f"{self.dimension}:{self.layer}"


@dataclass(frozen=True)
class CustomerSegmentInfo:
    segment: str  # segment key
    name: str
    since: dt.datetime
    computed_at: dt.datetime | None


def customer_layers(*, customer_id: int) -> list[CustomerLayerInfo]:
    """The customer's current layer in every dimension, ordered by dimension key."""
    rows = (
        CustomerLayer.objects.filter(customer_id=customer_id)
        .select_related("dimension", "layer")
        .order_by("dimension__key")
    )
    return [
        CustomerLayerInfo(
            dimension=row.dimension.key,
            dimension_name=row.dimension.name,
            layer=row.layer.key,
            layer_name=row.layer.name,
            since=row.since,
            computed_at=row.dimension.computed_at,
            valid_until=row.valid_until,
        )
        for row in rows
    ]


def customer_segments(*, customer_id: int) -> list[CustomerSegmentInfo]:
    """The active segments the customer is a member of (as of each segment's last recompute)."""
    rows = (
        SegmentMembership.objects.filter(customer_id=customer_id, segment__is_active=True)
        .select_related("segment")
        .order_by("segment__key")
    )
    return [
        CustomerSegmentInfo(
            segment=row.segment.key, name=row.segment.name, since=row.since, computed_at=row.segment.computed_at
        )
        for row in rows
    ]


def layer_snapshot_queryset(
    *,
    customer_ids: Iterable[int] | QuerySet[Any] | None = None,
    dimension_keys: Iterable[str] | None = None,
) -> QuerySet[Any]:
    """Set-based snapshot for bulk work: ``(customer_id, dimension_key, layer_key)`` rows.

    ``customer_ids`` may be a queryset of ids (``Customer.objects.filter(...).values("pk")``
    or an experiment's assignments' ``values("customer_id")``): it stays a subquery, so
    millions of customers are read in one statement, e.g. ``INSERT … SELECT`` them into a
    snapshot table or iterate with ``.iterator(chunk_size=…)``. Ordered by customer id.
    """
    qs = CustomerLayer.objects.all()
    if customer_ids is not None:
        qs = qs.filter(customer_id__in=customer_ids if isinstance(customer_ids, QuerySet) else list(customer_ids))
    if dimension_keys is not None:
        qs = qs.filter(dimension__key__in=list(dimension_keys))
    return qs.order_by("customer_id", "dimension__key").values_list("customer_id", "dimension__key", "layer__key")


def customer_layer_snapshots(*, customer_ids: Iterable[int]) -> dict[int, dict[str, str]]:
    """``{customer_id: {dimension key: layer key}}`` for a bounded batch of customers
    (one query); customers without any layer map to ``{}``."""
    ids = list(customer_ids)
    snapshots: dict[int, dict[str, str]] = {pk: {} for pk in ids}
    for customer_id, dimension_key, layer_key in layer_snapshot_queryset(customer_ids=ids):
        snapshots[customer_id][dimension_key] = layer_key
    return snapshots


def customer_layers_in_range_queryset(*, first_pk: int, last_pk: int) -> QuerySet[CustomerLayer]:
    """Current layer rows of the customers whose id is in ``[first_pk, last_pk]``, unordered:
    one range scan of the (customer, dimension) unique index and no join, for bulk readers
    that group by customer themselves (bulk assignment) and map layer ids to keys once with
    ``layer_keys_by_id``."""
    return CustomerLayer.objects.filter(customer_id__gte=first_pk, customer_id__lte=last_pk).order_by()


def layers_queryset(*, ids: Iterable[int] | None = None, dimension_id: int | None = None) -> QuerySet[Layer]:
    """The layers with these primary keys and/or of this dimension (in display order)."""
    layers = Layer.objects.order_by("position", "pk")
    if ids is not None:
        layers = layers.filter(pk__in=list(ids))
    if dimension_id is not None:
        layers = layers.filter(dimension_id=dimension_id)
    return layers


def customer_layer_get(*, customer_id: int, dimension_id: int) -> Layer | None:
    """The customer's current layer in the dimension (None outside every layer)."""
    return Layer.objects.filter(dimension_id=dimension_id, members__customer_id=customer_id).first()


def layer_entries_queryset(*, layer_id: int) -> QuerySet[LayerHistory]:
    """Entries into a layer (history rows whose ``layer`` is it), for layer-entry triggers."""
    return LayerHistory.objects.filter(layer_id=layer_id)


def latest_memberships(*, customers: QuerySet[Customer]) -> dict[int, tuple[int, dt.datetime]]:
    """``{customer id: (membership id, expires_at)}``: each customer's latest membership term
    (by expiry), for those of ``customers`` who have one. One query (a correlated subquery)."""
    latest = Membership.objects.filter(customer_id=OuterRef("pk")).order_by("-expires_at", "-pk")
    rows = (
        customers.annotate(mid=Subquery(latest.values("pk")[:1]), mexp=Subquery(latest.values("expires_at")[:1]))
        .filter(mid__isnull=False)
        .values_list("pk", "mid", "mexp")
    )
    return {cid: (mid, mexp) for cid, mid, mexp in rows}


def layer_keys_by_id() -> dict[int, tuple[str, str]]:
    """``{layer id: (dimension key, layer key)}`` for every layer."""
    return {pk: (d, k) for pk, d, k in Layer.objects.values_list("pk", "dimension__key", "key")}


@dataclass(frozen=True)
class DimensionLayers:
    key: str
    name: str
    layers: tuple[tuple[str, str], ...]  # (layer key, layer name) in the configured order


def dimension_layers(*, dimension_keys: Iterable[str]) -> dict[str, DimensionLayers]:
    """Names of the given dimensions and their layers, layers in their configured order;
    dimensions that no longer exist are absent."""
    keys = list(dimension_keys)
    names = dict(Dimension.objects.filter(key__in=keys).values_list("key", "name"))
    layers: dict[str, list[tuple[str, str]]] = defaultdict(list)
    rows = (
        Layer.objects.filter(dimension__key__in=keys)
        .order_by("dimension__key", "position", "key")
        .values_list("dimension__key", "key", "name")
    )
    for dimension_key, layer_key, layer_name in rows:
        layers[dimension_key].append((layer_key, layer_name))
    return {key: DimensionLayers(key=key, name=name, layers=tuple(layers[key])) for key, name in names.items()}


def layer_ids_by_keys(*, keys: Iterable[str]) -> dict[str, int]:
    """``{"rfm:important_value": layer id, …}`` for qualified layer keys that exist."""
    wanted = set(keys)
    dimensions = {key.split(":", 1)[0] for key in wanted if ":" in key}
    rows = Layer.objects.filter(dimension__key__in=dimensions).values_list("dimension__key", "key", "pk")
    return {f"{d}:{k}": pk for d, k, pk in rows if f"{d}:{k}" in wanted}


def layer_members_queryset(*, layer_id: int) -> QuerySet[Customer]:
    """Customers currently in the layer (one EXISTS subquery)."""
    dimension_id = Layer.objects.filter(pk=layer_id).values_list("dimension_id", flat=True).first()
    return Customer.objects.filter(
        Exists(CustomerLayer.objects.filter(customer_id=OuterRef("pk"), dimension_id=dimension_id, layer_id=layer_id))
    )


def segment_members_queryset(*, segment_id: int) -> QuerySet[Customer]:
    """Customers in the segment as of its last recompute."""
    return Customer.objects.filter(
        Exists(SegmentMembership.objects.filter(customer_id=OuterRef("pk"), segment_id=segment_id))
    )


def rule_members_queryset(*, rule: dict[str, Any], as_of: dt.datetime | None = None) -> QuerySet[Customer]:
    """Customers matching a rule *now* (validated, compiled to one query, not materialized)."""
    from segments.rules import rule_queryset

    return rule_queryset(rule=rule, as_of=as_of)


@dataclass(frozen=True)
class LayerSize:
    key: str
    name: str
    size: int


def dimension_layer_sizes(*, dimension_id: int) -> list[LayerSize]:
    """Each layer of the dimension with its current number of customers, in layer order."""
    counts = dict(
        CustomerLayer.objects.filter(dimension_id=dimension_id)
        .order_by()
        .values("layer_id")
        .annotate(n=Count("pk"))
        .values_list("layer_id", "n")
    )
    return [
        LayerSize(key=layer.key, name=layer.name, size=counts.get(layer.pk, 0))
        for layer in Layer.objects.filter(dimension_id=dimension_id).order_by("position", "key")
    ]


def recompute_runs_queryset(*, target: str | None = None) -> QuerySet[RecomputeRun]:
    qs = RecomputeRun.objects.all()
    return qs.filter(target=target) if target else qs


def dimension_last_run(*, dimension_id: int, succeeded_only: bool = True) -> RecomputeRun | None:
    dimension = Dimension.objects.filter(pk=dimension_id).first()
    if dimension is None:
        return None
    runs = RecomputeRun.objects.filter(target=f"dimension:{dimension.key}")
    if succeeded_only:
        runs = runs.filter(status=RecomputeRun.Status.SUCCEEDED)
    return runs.order_by("-started_at").first()


def customer_events_queryset(*, customer_id: int) -> QuerySet[Event]:
    """One customer's events with their type (the customer timeline reads it newest first;
    the (customer, event type, time) index serves the customer filter)."""
    return Event.objects.filter(customer_id=customer_id).select_related("event_type")


def customer_layer_history_queryset(*, customer_id: int) -> QuerySet[LayerHistory]:
    """One customer's layer moves: each entry into a layer (and when they left it)."""
    return LayerHistory.objects.filter(customer_id=customer_id).select_related("layer", "dimension")
