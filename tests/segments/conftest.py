"""Fixtures for the segmentation engine tests: a fixed instant and a small data builder."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from segments.models import (
    Customer,
    CustomerLayer,
    CustomerTag,
    Dimension,
    Event,
    EventType,
    Layer,
    LayerHistory,
    Membership,
    Tag,
)
from segments.services.recompute import RecomputeOutcome, dimension_recompute

AS_OF = dt.datetime(2025, 6, 1, 12, 0, tzinfo=dt.UTC)
DAY = dt.timedelta(days=1)


def ago(days: float, *, as_of: dt.datetime = AS_OF) -> dt.datetime:
    return as_of - days * DAY


class World:
    """Builds customers, events and memberships relative to ``AS_OF``."""

    _ids = itertools.count(1)

    def __init__(self) -> None:
        self.types = {t.code: t for t in EventType.objects.all()}

    def customer(
        self,
        external_id: str | None = None,
        *,
        signed_up: float | None = 400,
        created: float | None = 500,
        attributes: dict[str, Any] | None = None,
        email: str = "",
    ) -> Customer:
        n = next(self._ids)
        return Customer.objects.create(
            external_id=external_id or f"w{n:05d}",
            signed_up_at=None if signed_up is None else ago(signed_up),
            created_at=ago(created) if created is not None else dt.datetime.now(dt.UTC),
            attributes=attributes or {},
            email=email,
        )

    def event(self, customer: Customer, code: str, days_ago: float, amount: str | None = None) -> Event:
        n = next(self._ids)
        return Event.objects.create(
            event_id=f"we{n:07d}",
            customer=customer,
            event_type=self.types[code],
            occurred_at=ago(days_ago),
            amount=None if amount is None else Decimal(amount),
            currency="EUR" if amount is not None else "",
        )

    def order(self, customer: Customer, days_ago: float, amount: str = "10.00") -> Event:
        return self.event(customer, "order", days_ago, amount)

    def orders(self, customer: Customer, days_ago: list[float], total: str) -> None:
        share = Decimal(total) / len(days_ago)
        for days in days_ago:
            self.order(customer, days, str(share.quantize(Decimal("0.01"))))

    def membership(
        self,
        customer: Customer,
        *,
        expires_in: float,
        started_ago: float = 400,
        plan: str = "plus",
        level: str = "",
    ) -> Membership:
        return Membership.objects.create(
            customer=customer, plan=plan, level=level, started_at=ago(started_ago), expires_at=ago(-expires_in)
        )

    def tag(self, customer: Customer, code: str) -> Tag:
        tag, _ = Tag.objects.get_or_create(code=code, defaults={"name": code, "family": Tag.Family.BEHAVIOUR})
        customer.customer_tags.create(tag=tag)
        return tag


@pytest.fixture
def world(db: None) -> World:
    return World()


def recompute(key: str, *, as_of: dt.datetime = AS_OF, **kwargs: Any) -> RecomputeOutcome:
    outcome = dimension_recompute(dimension_id=Dimension.objects.get(key=key).pk, as_of=as_of, **kwargs)
    assert outcome.status == "succeeded", outcome.error
    return outcome


def layers_of(key: str) -> dict[str, str]:
    """``{external_id: layer key}`` for a dimension."""
    return dict(CustomerLayer.objects.filter(dimension__key=key).values_list("customer__external_id", "layer__key"))


def dimension_state(key: str, **tag_filter: Any) -> dict[str, Any]:
    """Everything a nightly run of dimension ``key`` writes, by customer: memberships, history,
    and the tags matched by ``tag_filter`` (a ``CustomerTag`` filter, e.g. its tier family)."""
    return {
        "layers": sorted(
            CustomerLayer.objects.filter(dimension__key=key).values_list(
                "customer__external_id", "layer__key", "since", "valid_until"
            )
        ),
        "history": sorted(
            LayerHistory.objects.filter(dimension__key=key).values_list(
                "customer__external_id", "layer__key", "entered_at", "left_at"
            )
        ),
        "tags": sorted(
            CustomerTag.objects.filter(**tag_filter).values_list("customer__external_id", "tag__code", "source")
        ),
    }


def layer_id(qualified: str) -> int:
    dimension, key = qualified.split(":")
    return Layer.objects.get(dimension__key=dimension, key=key).pk


def plan_nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of an ``EXPLAIN (FORMAT JSON)`` plan, depth first."""
    yield node
    for child in node.get("Plans", []):
        yield from plan_nodes(child)


@contextlib.contextmanager
def statement_plans(matches: Callable[[str], bool]) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The plan of every statement ``matches`` selects, taken (EXPLAIN, not executed) on
    the same connection just before the statement runs, temp tables in place."""
    seen: list[tuple[str, dict[str, Any]]] = []

    def explain(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        if matches(sql):
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
                raw = cursor.fetchone()[0]
            seen.append((sql, (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(explain):
        yield seen
