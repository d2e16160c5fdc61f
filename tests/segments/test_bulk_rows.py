"""The tables a recompute writes in bulk carry no per-row foreign-key checks (migration
segments 0007), and deleting a customer still removes their rows (Django's cascade)."""

from __future__ import annotations

import pytest
from django.db import connection

from segments.models import CustomerLayer, CustomerTag, LayerHistory, SegmentMembership, TagHistory
from tests.segments.conftest import World, recompute

BULK_TABLES = [
    model._meta.db_table for model in (CustomerLayer, LayerHistory, CustomerTag, TagHistory, SegmentMembership)
]


@pytest.mark.postgres
@pytest.mark.django_db
def test_bulk_recompute_tables__postgres__no_foreign_key_constraints() -> None:
    # A deferred FK constraint costs one check query per written row at commit: most of a
    # first recompute of every customer (bench/segments.py).
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, conname FROM pg_constraint WHERE contype = 'f' "
            "AND conrelid = ANY(%s::regclass[])",
            [BULK_TABLES],
        )
        assert cursor.fetchall() == []


@pytest.mark.django_db
def test_customer_delete__after_first_recompute__layers_history_and_tags_go_too(world: World) -> None:
    # Given a customer placed by a first recompute (layer, history row, tier tag)
    customer = world.customer("gone")
    world.customer("stays")
    recompute("lifecycle")
    assert CustomerLayer.objects.filter(customer=customer).exists()
    assert LayerHistory.objects.filter(customer=customer).exists()

    # When the customer is deleted through Django
    customer.delete()

    # Then nothing of theirs is left behind, and the other customer's rows are untouched
    assert not CustomerLayer.objects.filter(customer_id=customer.pk).exists()
    assert not LayerHistory.objects.filter(customer_id=customer.pk).exists()
    assert not CustomerTag.objects.filter(customer_id=customer.pk).exists()
    assert CustomerLayer.objects.filter(customer__external_id="stays").exists()


@pytest.mark.postgres
@pytest.mark.django_db
def test_bulk_recompute_tables__postgres__only_the_indexes_readers_use() -> None:
    # Every index is one row-by-row insertion per customer on a first recompute: no
    # layer_id-only index (readers name the dimension), no (dimension, left_at) index
    # (nothing reads it), and the user of a tag is indexed for manual rows only.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT t.relname, i.relname, pg_get_expr(x.indpred, x.indrelid) IS NOT NULL "
            "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class t ON t.oid = x.indrelid "
            "WHERE t.relname = ANY(%s)",
            [[CustomerLayer._meta.db_table, LayerHistory._meta.db_table, CustomerTag._meta.db_table]],
        )
        rows = cursor.fetchall()
    full = {(table, name) for table, name, partial in rows if not partial}
    per_table = {table: sum(1 for t, _ in full if t == table) for table, _ in full}
    assert per_table == {
        CustomerLayer._meta.db_table: 3,  # id, (customer, dimension) unique, (dimension, layer)
        LayerHistory._meta.db_table: 2,  # id, (customer, dimension, entered_at)
        CustomerTag._meta.db_table: 3,  # id, (customer, tag) unique, tag
    }
    assert ("segments_customertag", "customer_tag_assigned_by_idx", True) in rows
