"""PostgreSQL: a rule's per-customer event aggregate reads ``event_cust_type_time_idx``
alone (migration 0015), never the events table's heap, whose pages outgrew shared_buffers
at 1M customers and made the rule segment's first fill grow faster than its size."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from segments.models import SegmentMembership
from segments.services.recompute import segment_recompute
from segments.services.segments import segment_create
from tests.segments.conftest import AS_OF, World, plan_nodes, statement_plans

pytestmark = pytest.mark.postgres

RULE = {"event": "order", "agg": "sum", "window": {"last_days": 90}, "op": "gte", "value": 100}


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_segment_recompute__sum_of_orders_in_window__event_probe_is_index_only() -> None:
    # Given two customers above the threshold in the window, one below, one above only
    # outside the window
    world = World()
    big, also, small, old = (world.customer() for _ in range(4))
    world.orders(big, [1, 10], total="150.00")
    world.orders(also, [89], total="100.00")
    world.orders(small, [2, 3], total="99.98")
    world.orders(old, [120], total="500.00")
    segment = segment_create(key="spenders", name="Spenders", rule=RULE)
    with connection.cursor() as cursor:
        # As autovacuum leaves a loaded table (its pages all-visible), and the per-customer
        # probe the planner picks for many customers over few events each (a handful of
        # rows would be seq-scanned).
        cursor.execute("VACUUM ANALYZE segments_event")
        cursor.execute("SET enable_seqscan = off")
        cursor.execute("SET enable_bitmapscan = off")

    # When the segment is filled
    try:
        with statement_plans(lambda sql: sql.startswith("INSERT INTO segments_stage_members")) as plans:
            outcome = segment_recompute(segment_id=segment.pk, as_of=AS_OF)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET enable_seqscan")
            cursor.execute("RESET enable_bitmapscan")

    # Then the events are read through the index alone (before migration 0015: an Index
    # Scan, one heap fetch per event), and the members are right
    assert outcome.status == "succeeded", outcome.error
    assert plans, "the fill's statement was not captured"
    reads: list[dict[str, Any]] = [
        node
        for _, plan in plans
        for node in plan_nodes(plan)
        if str(node.get("Relation Name", "")).startswith("segments_event")
    ]
    assert reads and all(node["Node Type"] == "Index Only Scan" for node in reads), [
        (node["Node Type"], node.get("Relation Name"), node.get("Index Name")) for node in reads
    ]
    members = set(SegmentMembership.objects.filter(segment=segment).values_list("customer_id", flat=True))
    assert members == {big.pk, also.pk}
