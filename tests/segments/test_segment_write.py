"""``materialize.segment_write``: a segment's members written as a diff that never reads
the table being written (the first fill of a 243k-member segment at 1M customers took
385 s when the insert anti-joined the membership table it was filling)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction

from segments.models import Customer, SegmentMembership
from segments.services import materialize
from segments.services.segments import segment_create
from tests.segments.conftest import AS_OF, DAY, World, plan_nodes, statement_plans

SM = SegmentMembership._meta.db_table


def _write(segment_id: int, customer_ids: list[int], as_of: Any = AS_OF) -> materialize.SegmentWrite:
    table = Customer._meta.db_table
    ids = ", ".join(str(int(i)) for i in customer_ids) or "NULL"
    with transaction.atomic():
        return materialize.segment_write(
            segment_id=segment_id, members_sql=f"SELECT id FROM {table} WHERE id IN ({ids})", params=[], as_of=as_of
        )


def _members(segment_id: int) -> dict[int, Any]:
    return dict(SegmentMembership.objects.filter(segment_id=segment_id).values_list("customer_id", "since"))


def test_segment_write__fill_keep_change_empty_refill__only_diff_written_and_since_kept(db: None) -> None:
    # Given five customers and two segments (the other segment's rows must stay untouched)
    world = World()
    ids = [world.customer().pk for _ in range(5)]
    segment = segment_create(key="s", name="S", rule={"attribute": "tier", "op": "gte", "value": 1})
    other = segment_create(key="o", name="O", rule={"attribute": "tier", "op": "gte", "value": 1})
    _write(other.pk, ids[:2])

    # When: first fill, the same members again, a change, nobody, and a refill
    first = _write(segment.pk, ids[:3])
    same = _write(segment.pk, ids[:3], AS_OF + DAY)
    changed = _write(segment.pk, ids[1:5], AS_OF + 2 * DAY)
    after_change = _members(segment.pk)
    emptied = _write(segment.pk, [], AS_OF + 3 * DAY)
    refilled = _write(segment.pk, ids[:1], AS_OF + 4 * DAY)

    # Then only additions and removals are written; a kept member keeps its "since"
    assert (first.size, first.added, first.removed) == (3, 3, 0)
    assert (same.size, same.added, same.removed) == (3, 0, 0)
    assert (changed.size, changed.added, changed.removed) == (4, 2, 1)
    assert after_change == {ids[1]: AS_OF, ids[2]: AS_OF, ids[3]: AS_OF + 2 * DAY, ids[4]: AS_OF + 2 * DAY}
    assert (emptied.size, emptied.added, emptied.removed) == (0, 0, 4)
    assert (refilled.size, refilled.added, refilled.removed) == (1, 1, 0)
    assert _members(segment.pk) == {ids[0]: AS_OF + 4 * DAY}
    assert _members(other.pk) == {ids[0]: AS_OF, ids[1]: AS_OF}


# --- the plans (PostgreSQL) -----------------------------------------------------------------


def _writes_to_sm(sql: str) -> bool:
    head = " ".join(sql.split()[:3]).lower()
    return head in (f"insert into {SM}", f"delete from {SM}")


@pytest.fixture
def plans() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The plan of every statement that writes the membership table (``statement_plans``)."""
    with statement_plans(_writes_to_sm) as seen:
        yield seen


@pytest.mark.postgres
def test_segment_write__first_fill_and_diff__no_insert_reads_the_membership_table(
    db: None, plans: list[tuple[str, dict[str, Any]]]
) -> None:
    # Given 60 customers and an empty membership table whose statistics say so (as a fresh
    # install's autovacuum leaves it)
    world = World()
    ids = [world.customer().pk for _ in range(60)]
    segment = segment_create(key="s", name="S", rule={"attribute": "tier", "op": "gte", "value": 1})
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {SM}")

    # When the segment is filled, then changed
    _write(segment.pk, ids[:40])
    _write(segment.pk, ids[20:])

    # Then no insert reads the table it fills (a nested loop over it re-reads every page
    # inserted so far: quadratic), and no statement puts it on a nested loop's inner side
    assert plans, "segment_write wrote nothing through the captured statements"
    for sql, plan in plans:
        if sql.lstrip().lower().startswith("insert"):
            read = [n["Node Type"] for n in plan_nodes(plan) if n.get("Relation Name") == SM and n is not plan]
            assert read == [], f"the insert reads {SM}: {read}\n{sql}"
        for node in plan_nodes(plan):
            if node["Node Type"] == "Nested Loop":
                inner = node["Plans"][1]
                assert not any(
                    n.get("Relation Name") == SM and n["Node Type"] == "Seq Scan" for n in plan_nodes(inner)
                ), f"{SM} seq-scanned once per outer row\n{sql}\n{json.dumps(plan, indent=1)}"
    _members_now = _members(segment.pk)
    assert set(_members_now) == set(ids[20:])
    assert all(_members_now[i] == AS_OF for i in _members_now)
