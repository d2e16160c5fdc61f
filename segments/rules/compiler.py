"""Compile a validated rule into one ORM ``Q`` over ``Customer`` (one SQL query).

Leaves become correlated subqueries (event and membership aggregates, EXISTS for tags and
layers), JSON key lookups (attributes) or column lookups; ``rank`` becomes an
``id IN (…)`` subquery ranking customers with a window function. Nothing is evaluated
per customer in Python.

Semantics, the same on SQLite and PostgreSQL:

- A comparison on a missing value is false: a customer without ``signed_up_at``, with no
  order (for ``first``/``last``), or whose attribute is absent or of another JSON type
  matches neither ``eq`` nor ``ne``. Counts and sums of no events are 0, not missing.
- Every leaf is built null-safe (``value IS NOT NULL AND comparison``), so it is TRUE or
  FALSE, never NULL, and ``{"not": r}`` is the exact complement of ``r``.
- ``contains`` and ``starts_with`` ignore case (SQLite's LIKE does, so PostgreSQL uses
  ILIKE to agree).
- Relative dates count whole 24-hour days back or forward from ``as_of`` (now by default):
  ``within_last_days N``: as_of − N days ≤ v ≤ as_of; ``before_days_ago N``:
  v < as_of − N days; ``within_next_days N``: as_of ≤ v < as_of + N days;
  ``after_days_from_now N``: v ≥ as_of + N days. ``between [d1, d2]`` includes both
  days when they are dates (v < d2 + 1 day), and ``d2`` itself when it has a time.
- An event window ``{"last_days": N}`` is as_of − N days ≤ occurred_at ≤ as_of; without a
  window, all events up to as_of count. Events after as_of never count.
- ``sum`` of amounts is exact on every backend: integer hundredths (``segments.money``),
  compared with the rule's value converted exactly, so equal spenders always compare equal
  and a total of exactly the threshold meets ``gte``/``eq`` whatever the order of the orders.
- ``where`` on an event node keeps only the events whose ``properties`` satisfy every
  condition, with the attribute semantics (typed: a string never equals a number; a JSON
  null or a missing key is absent and matches only ``not_exists``).
- ``share``: matching / total over the customer's events of the type in the window, where
  matching counts those satisfying ``where``. Compared exactly, without division: for a
  threshold p/q (the decimal as written: 0.1 is 1/10) ``share ≥ p/q`` is
  ``matching·q − total·p ≥ 0`` in integers, so 2 of 4 meets ``gte 0.5`` and 1 of 3 is
  below 0.3334 and above 0.3333. With no events (total 0) the share is undefined and every
  comparison is false (its ``not`` is true).
- ``rank``: customers ordered by the measure (count or sum of amounts in the window),
  highest first, with ``RANK()`` (equal values share a rank). A customer is in the top
  P% when fewer than P% of the population rank strictly above them, i.e.
  ``(rank − 1) · 100 < P · N``, so ties at the boundary are all in. Customers with no
  value (0) are never in. N is all customers (``"among": "all"``, default) or only those
  with a value (``"among": "with_value"``).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from fractions import Fraction
from typing import Any

from django.db import models
from django.db.models import (
    Count,
    Exists,
    ExpressionWrapper,
    F,
    Func,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    Window,
)
from django.db.models.expressions import Expression
from django.db.models.fields.json import compile_json_path
from django.db.models.functions import Coalesce
from django.db.models.functions.window import Rank
from django.db.models.lookups import LessThan
from django.utils import timezone

from segments import money
from segments.money import AmountSum
from segments.rules.schema import CUSTOMER_FIELDS
from segments.rules.validation import Catalog, parse_date, rule_validate

DAY = dt.timedelta(days=1)


class JSONKeyTypeIs(Func):
    """TRUE when ``attributes[key]`` holds a JSON value of ``kind``; never NULL.

    ``kind``: ``number``, ``string``, ``boolean`` or ``present`` (any non-null value).
    Guards comparisons so a string never compares with a number (SQLite and PostgreSQL
    order mixed JSON types differently).
    """

    output_field = models.BooleanField()
    _PG = {"number": ("number",), "string": ("string",), "boolean": ("boolean",)}
    _SQLITE = {"number": ("integer", "real"), "string": ("text",), "boolean": ("true", "false")}

    def __init__(self, field: str, key: str, kind: str) -> None:
        super().__init__(F(field))
        self.key, self.kind = key, kind

    def _types_sql(self, types: tuple[str, ...]) -> str:
        return ", ".join(f"'{t}'" for t in types)  # constants from this class, never user input

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        lhs, params = compiler.compile(self.source_expressions[0])
        typeof = f"jsonb_typeof({lhs} -> %s)"
        test = "<> 'null'" if self.kind == "present" else f"IN ({self._types_sql(self._PG[self.kind])})"
        return f"COALESCE({typeof} {test}, false)", [*params, self.key]

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        lhs, params = compiler.compile(self.source_expressions[0])
        typeof = f"json_type({lhs}, %s)"
        test = "<> 'null'" if self.kind == "present" else f"IN ({self._types_sql(self._SQLITE[self.kind])})"
        return f"COALESCE({typeof} {test}, 0)", [*params, compile_json_path([self.key])]

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        raise NotImplementedError(f"JSON type tests are implemented for SQLite and PostgreSQL, not {connection.vendor}")


class ScalarCount(Func):
    """``(SELECT COUNT(*) FROM customers)`` without a GROUP BY (not an Aggregate)."""

    function = "COUNT"
    template = "%(function)s(*)"
    output_field = models.IntegerField()

    def __init__(self) -> None:
        super().__init__()


def _lookup(lhs: str | Expression, name: str, value: Any) -> Q:
    if isinstance(lhs, str):
        return Q(**{f"{lhs}__{name}": value})
    return Q(lhs.get_lookup(name)(lhs, value))


def _not_null(lhs: str | Expression) -> Q:
    return _lookup(lhs, "isnull", False)


class _Compiler:
    def __init__(self, *, as_of: dt.datetime, catalog: Catalog, outer: str = "pk") -> None:
        self.as_of = as_of
        self.catalog = catalog
        self.outer = outer

    def compile(self, node: dict[str, Any]) -> Q:
        if "all" in node:
            q = Q()
            for child in node["all"]:
                q &= self.compile(child)
            return q
        if "any" in node:
            children = [self.compile(child) for child in node["any"]]
            q = children[0]
            for child in children[1:]:
                q |= child
            return q
        if "not" in node:
            return ~self.compile(node["not"])
        for kind in ("field", "attribute", "tag", "layer", "event", "membership", "rank", "share"):
            if kind in node:
                return getattr(self, f"_{kind}")(node)
        raise ValueError(f"not a rule node: {node!r}")  # unreachable after validation

    # --- leaves ---------------------------------------------------------------------
    def _field(self, node: dict[str, Any]) -> Q:
        name = node["field"]
        value_type = CUSTOMER_FIELDS[name]
        if value_type == "string":
            return self._string(name, node["op"], node.get("value"))
        return self._compare(name, node["op"], node.get("value"), value_type, nullable=name == "signed_up_at")

    def _attribute(self, node: dict[str, Any]) -> Q:
        return self.json_key("attributes", node["attribute"], node["op"], node.get("value"))

    @classmethod
    def json_key(cls, field: str, key: str, op: str, value: Any) -> Q:
        """A typed comparison on one key of a JSON column (customer attributes, event
        properties): a value of another JSON type, null or a missing key never matches."""
        present = Q(JSONKeyTypeIs(field, key, "present"))
        if op == "exists":
            return present
        if op == "not_exists":
            return ~present
        sample = value[0] if isinstance(value, list) else value
        kind = "boolean" if isinstance(sample, bool) else "number" if isinstance(sample, int | float) else "string"
        guard = Q(JSONKeyTypeIs(field, key, kind))
        # Keys are identifiers (validated), so the ORM's key transform syntax is safe here.
        lhs = f"{field}__{key}"
        return guard & cls._compare_value(lhs, op, value, kind)

    def _tag(self, node: dict[str, Any]) -> Q:
        from segments.models import CustomerTag

        tag_id = self.catalog.tags[node["tag"]]
        return Q(Exists(CustomerTag.objects.filter(customer_id=OuterRef(self.outer), tag_id=tag_id)))

    def _layer(self, node: dict[str, Any]) -> Q:
        from segments.models import CustomerLayer

        key = node["layer"]
        # (customer, dimension) is the unique index: one probe per customer on every backend.
        rows = CustomerLayer.objects.filter(
            customer_id=OuterRef(self.outer),
            dimension_id=self.catalog.layer_dimensions[key],
            layer_id=self.catalog.layers[key],
        )
        return Q(Exists(rows))

    def _event(self, node: dict[str, Any]) -> Q:
        events = self.events(node["event"], node.get("window"), where=node.get("where"))
        agg, op, value = node["agg"], node["op"], node.get("value")
        if agg == "count":
            # Presence tests need no count: EXISTS stops at the first row.
            if (op, value) in (("gte", 1), ("gt", 0)):
                return Q(Exists(events))
            if (op, value) in (("eq", 0), ("lt", 1), ("lte", 0)):
                return ~Q(Exists(events))
        if agg == "sum":
            return self._compare_amount(self.event_aggregate(events, agg), op, value)
        return self._compare(self.event_aggregate(events, agg), op, value, _AGG_TYPES[agg], nullable=agg in _NULLABLE)

    def _membership(self, node: dict[str, Any]) -> Q:
        from segments.models import Membership

        terms = Membership.objects.filter(customer_id=OuterRef(self.outer), **node["membership"])
        agg = node["agg"]
        if agg == "active":
            return Q(Exists(terms.filter(started_at__lte=self.as_of, expires_at__gt=self.as_of)))
        grouped = terms.order_by().values("customer_id")
        if agg == "count":
            lhs: Expression = Coalesce(
                Subquery(grouped.annotate(v=Count("pk")).values("v"), output_field=models.IntegerField()), 0
            )
        elif agg == "latest_expiry":
            lhs = Subquery(grouped.annotate(v=Max("expires_at")).values("v"), output_field=models.DateTimeField())
        else:
            lhs = Subquery(grouped.annotate(v=Min("started_at")).values("v"), output_field=models.DateTimeField())
        return self._compare(lhs, node["op"], node.get("value"), _AGG_TYPES[agg], nullable=agg != "count")

    def _rank(self, node: dict[str, Any]) -> Q:
        from segments.models import Customer

        spec = node["rank"]
        top = Decimal(str(node["top_percent"]))
        # The measure per customer as a correlated subquery, then RANK() over customers
        # (a window over a GROUP BY would need a derived table, which the ORM lacks).
        measure = self.event_aggregate(self.events(spec["event"], spec.get("window")), spec["agg"])
        if node.get("among", "all") == "all":
            population: Expression = Subquery(Customer.objects.annotate(n=ScalarCount()).values("n")[:1])
        else:
            population = Window(Count("*"))  # over the rows left by WHERE v > 0
        ranked = (
            Customer.objects.annotate(v=measure)
            .filter(v__gt=0)
            .annotate(rk=Window(Rank(), order_by=F("v").desc()), n=population)
            .filter(LessThan((F("rk") - 1) * 100, F("n") * top))
        )
        return Q(pk__in=ranked.values("pk"))

    def _share(self, node: dict[str, Any]) -> Q:
        """matching / total ⊙ p/q, compared exactly as matching·q − total·p ⊙ 0 in integers
        (no division, no float), with total > 0: a share of no events is undefined, so false."""
        spec, op, value = node["share"], node["op"], node["value"]
        total = self.event_aggregate(self.events(spec["event"], spec.get("window")), "count")
        matching = self.event_aggregate(self.events(spec["event"], spec.get("window"), where=spec["where"]), "count")

        def diff(bound: Any) -> Expression:
            # str(): the value as written in the rule (0.1 is 1/10, not the double nearest it).
            fraction = Fraction(str(bound))
            return ExpressionWrapper(
                matching * Value(fraction.denominator) - total * Value(fraction.numerator),
                output_field=models.BigIntegerField(),
            )

        defined = _lookup(total, "gt", 0)
        if op == "between":
            return defined & _lookup(diff(value[0]), "gte", 0) & _lookup(diff(value[1]), "lte", 0)
        if op == "ne":
            return defined & ~_lookup(diff(value), "exact", 0)
        return defined & _lookup(diff(value), "exact" if op == "eq" else op, 0)

    # --- shared building blocks (also used by the dimensions) ------------------------
    def window_bounds(self, window: dict[str, Any] | None) -> Q:
        if window and "last_days" in window:
            return Q(occurred_at__gte=self.as_of - window["last_days"] * DAY, occurred_at__lte=self.as_of)
        if window and "between" in window:
            start, end = window["between"]
            return Q(occurred_at__gte=parse_date(start), occurred_at__lte=self.as_of) & _upper(end)
        return Q(occurred_at__lte=self.as_of)

    def events(
        self,
        code: str,
        window: dict[str, Any] | None,
        *,
        correlated: bool = True,
        where: list[dict[str, Any]] | None = None,
    ) -> QuerySet[Any]:
        from segments.models import Event

        qs = Event.objects.filter(self.window_bounds(window), event_type_id=self.catalog.event_types[code].id)
        for condition in where or ():
            qs = qs.filter(self.json_key("properties", condition["property"], condition["op"], condition.get("value")))
        if correlated:
            qs = qs.filter(customer_id=OuterRef(self.outer))
        return qs

    @staticmethod
    def event_aggregate(events: QuerySet[Any], agg: str) -> Expression:
        grouped = events.order_by().values("customer_id")
        if agg == "count":
            sq = Subquery(grouped.annotate(v=Count("pk")).values("v"), output_field=models.IntegerField())
            return Coalesce(sq, 0)
        if agg == "sum":
            # Integer hundredths, exact on every backend (segments.money); rules compare
            # it with thresholds converted by ``_compare_amount``.
            field = models.BigIntegerField()
            sq = Subquery(grouped.annotate(v=AmountSum("amount")).values("v"), output_field=field)
            return Coalesce(sq, Value(0), output_field=field)
        function = Min if agg == "first" else Max
        return Subquery(grouped.annotate(v=function("occurred_at")).values("v"), output_field=models.DateTimeField())

    # --- comparisons ------------------------------------------------------------------
    def _compare(self, lhs: str | Expression, op: str, value: Any, value_type: str, *, nullable: bool) -> Q:
        guard = _not_null(lhs) if nullable else Q()
        if op == "exists":
            return _not_null(lhs)
        if op == "not_exists":
            return _lookup(lhs, "isnull", True)
        if value_type == "number" and not isinstance(value, bool):
            value = [Decimal(str(v)) for v in value] if isinstance(value, list) else Decimal(str(value))
        if value_type == "datetime":
            return guard & self._datetime(lhs, op, value)
        return guard & self._compare_value(lhs, op, value, value_type)

    def _compare_amount(self, lhs: Expression, op: str, value: Any) -> Q:
        """A money sum (integer hundredths, never NULL) against a threshold in currency
        units, exactly: each bound is rounded to whole hundredths in the direction that
        keeps the comparison's meaning (``≥ 30.305`` is ``≥ 3031``), and a value that is no
        whole number of hundredths equals no sum."""
        if op in ("gte", "lt"):
            return self._compare_value(lhs, op, money.at_least(value), "number")
        if op in ("gt", "lte"):
            return self._compare_value(lhs, op, money.at_most(value), "number")
        if op == "between":
            low, high = money.at_least(value[0]), money.at_most(value[1])
            return self._compare_value(lhs, op, [low, high], "number")
        values = value if isinstance(value, list) else [value]
        exact = [h for h in map(money.exactly, values) if h is not None]
        matches = _lookup(lhs, "in", exact) if exact else Q(pk__in=[])
        return ~matches if op in ("ne", "not_in") else matches  # eq, in / ne, not_in

    @staticmethod
    def _compare_value(lhs: str | Expression, op: str, value: Any, value_type: str) -> Q:
        if op == "eq":
            return _lookup(lhs, "exact", value)
        if op == "ne":
            return ~_lookup(lhs, "exact", value)
        if op == "in":
            return _lookup(lhs, "in", value)
        if op == "not_in":
            return ~_lookup(lhs, "in", value)
        if op == "between":
            return _lookup(lhs, "gte", value[0]) & _lookup(lhs, "lte", value[1])
        if op == "contains":
            return _lookup(lhs, "icontains", value)
        if op == "starts_with":
            return _lookup(lhs, "istartswith", value)
        return _lookup(lhs, op, value)  # gt, gte, lt, lte

    def _string(self, name: str, op: str, value: Any) -> Q:
        if op == "exists":
            return ~Q(**{name: ""})
        if op == "not_exists":
            return Q(**{name: ""})
        return self._compare_value(name, op, value, "string")

    def _datetime(self, lhs: str | Expression, op: str, value: Any) -> Q:
        as_of = self.as_of
        if op == "within_last_days":
            return _lookup(lhs, "gte", as_of - value * DAY) & _lookup(lhs, "lte", as_of)
        if op == "before_days_ago":
            return _lookup(lhs, "lt", as_of - value * DAY)
        if op == "within_next_days":
            return _lookup(lhs, "gte", as_of) & _lookup(lhs, "lt", as_of + value * DAY)
        if op == "after_days_from_now":
            return _lookup(lhs, "gte", as_of + value * DAY)
        if op == "on_or_after":
            return _lookup(lhs, "gte", parse_date(value))
        if op == "before":
            return _lookup(lhs, "lt", parse_date(value))
        if op == "between":
            start, end = value
            upper = parse_date(end)
            high = _lookup(lhs, "lt", upper + DAY) if len(end) == 10 else _lookup(lhs, "lte", upper)
            return _lookup(lhs, "gte", parse_date(start)) & high
        raise ValueError(f"unknown datetime operator {op}")  # unreachable after validation


_AGG_TYPES = {
    "count": "number",
    "sum": "number",
    "first": "datetime",
    "last": "datetime",
    "latest_expiry": "datetime",
    "first_start": "datetime",
}
_NULLABLE = {"first", "last"}


def _upper(end: str) -> Q:
    upper = parse_date(end)
    return Q(occurred_at__lt=upper + DAY) if len(end) == 10 else Q(occurred_at__lte=upper)


def rule_compile(rule: dict[str, Any], *, as_of: dt.datetime | None = None, catalog: Catalog | None = None) -> Q:
    """A ``Q`` over ``Customer`` selecting the customers matching ``rule`` at ``as_of``."""
    if catalog is None:
        catalog = rule_validate(rule)
    return _Compiler(as_of=as_of or timezone.now(), catalog=catalog).compile(rule)


def rule_queryset(
    *, rule: dict[str, Any], as_of: dt.datetime | None = None, base: QuerySet[Any] | None = None
) -> QuerySet[Any]:
    """Customers matching ``rule`` (validated first) as one SQL query."""
    from segments.models import Customer

    qs = base if base is not None else Customer.objects.all()
    return qs.filter(rule_compile(rule, as_of=as_of))
