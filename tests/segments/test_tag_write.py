"""``materialize.tag_write``: a computed tag's gains found without reading the table being
filled (the same quadratic plan as ``segment_write``'s first fill: see test_segment_write)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection, transaction

from segments.models import Customer, CustomerTag, Tag
from segments.services import materialize
from tests.segments.conftest import AS_OF, DAY, World, plan_nodes, statement_plans

CT = CustomerTag._meta.db_table


def _write(tag: Tag, customer_ids: list[int], as_of: Any = AS_OF) -> materialize.TagWrite:
    ids = ", ".join(str(int(i)) for i in customer_ids) or "NULL"
    with transaction.atomic():
        return materialize.tag_write(
            tag_id=tag.pk,
            members_sql=f"SELECT id FROM {Customer._meta.db_table} WHERE id IN ({ids})",
            params=[],
            as_of=as_of,
        )


@pytest.fixture
def inserts() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The plan (EXPLAIN, not executed) of every insert into the customer-tag table."""
    with statement_plans(lambda sql: " ".join(sql.split()[:3]).lower() == f"insert into {CT}") as seen:
        yield seen


@pytest.mark.postgres
def test_tag_write__first_fill_and_gains__no_insert_reads_the_customer_tag_table(
    db: None, inserts: list[tuple[str, dict[str, Any]]]
) -> None:
    # Given 60 customers, one holding the tag by hand, and statistics taken on a near-empty table
    world = World()
    ids = [world.customer().pk for _ in range(60)]
    tag = Tag.objects.create(code="F3", name="Repurchased three times", family="consumption", source="computed")
    CustomerTag.objects.create(customer_id=ids[0], tag=tag, source="manual")
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {CT}")

    # When the tag's rule first matches 40 customers, then 40 others and the manual holder
    first = _write(tag, ids[:40])
    later = _write(tag, [ids[0], *ids[20:]], AS_OF + DAY)

    # Then no insert reads the table it fills, and the manual row is neither duplicated nor lost
    assert inserts, "tag_write inserted nothing through the captured statements"
    for sql, plan in inserts:
        read = [n["Node Type"] for n in plan_nodes(plan) if n.get("Relation Name") == CT and n is not plan]
        assert read == [], f"the insert reads {CT}: {read}\n{sql}"
    assert (first.gained, first.lost, later.gained, later.lost) == (39, 0, 20, 19)
    holders = dict(CustomerTag.objects.filter(tag=tag).values_list("customer_id", "source"))
    assert set(holders) == {ids[0], *ids[20:]}
    assert holders[ids[0]] == "manual"
