"""Memberships and layer history partitioned by dimension on PostgreSQL (migration 0016):
the conversion in place, both ways, and where rows go."""

from __future__ import annotations

import importlib

import pytest
from django.db import IntegrityError, connection, transaction

from segments.models import CustomerLayer, Dimension, LayerHistory
from tests.factories import CustomerFactory

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]

migration = importlib.import_module("segments.migrations.0016_layer_tables_partitioned_by_dimension")
TABLES = ("segments_customerlayer", "segments_layerhistory")


def relkind(table: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [table])
        return cursor.fetchone()[0]


def home(table: str, row_id: int) -> str:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT tableoid::regclass::text FROM {table} WHERE id = %s", [row_id])
        return cursor.fetchone()[0]


def place(customer, key: str, layer: str) -> tuple[CustomerLayer, LayerHistory]:
    dimension = Dimension.objects.get(key=key)
    layer_row = dimension.layers.get(key=layer)
    return (
        CustomerLayer.objects.create(customer=customer, dimension=dimension, layer=layer_row),
        LayerHistory.objects.create(
            customer=customer, dimension=dimension, layer=layer_row, entered_at="2025-01-01T00:00:00Z"
        ),
    )


def test_migration_0016__plain_tables_with_rows__partitioned_in_place_and_back() -> None:
    # Given the two tables as they were before 0016 (plain, identity ids) with rows of two
    # dimensions. All of it in the test's transaction: PostgreSQL's DDL rolls back.
    migration.backwards(None, connection.schema_editor())
    assert [relkind(t) for t in TABLES] == ["r", "r"]
    customers = [CustomerFactory() for _ in range(3)]
    rows = [place(c, "expiry", "valid") for c in customers] + [place(customers[0], "lifecycle", "new")]
    before = sorted(CustomerLayer.objects.values_list("id", "customer_id", "dimension_id", "layer_id"))

    # When
    migration.forwards(None, connection.schema_editor())

    # Then both are partitioned, each dimension with rows in a partition of its own, ids kept
    expiry, lifecycle = (Dimension.objects.get(key=k).pk for k in ("expiry", "lifecycle"))
    assert [relkind(t) for t in TABLES] == ["p", "p"]
    assert sorted(CustomerLayer.objects.values_list("id", "customer_id", "dimension_id", "layer_id")) == before
    assert LayerHistory.objects.filter(left_at__isnull=True).count() == 4
    for table in TABLES:
        assert home(table, rows[0][TABLES.index(table)].pk) == f"{table}_d{expiry}"
        assert home(table, rows[3][TABLES.index(table)].pk) == f"{table}_d{lifecycle}"
    # a new row of a dimension without a partition waits in the default one; new ids follow the old
    other = place(customers[1], "rfm", "no_purchase")
    assert other[0].pk > max(r[0] for r in before)
    assert home(TABLES[0], other[0].pk) == f"{TABLES[0]}_default"
    # the constraints still hold across the partitioned table
    with pytest.raises(IntegrityError, match="duplicate key"), transaction.atomic():
        place(customers[1], "rfm", "no_purchase")

    # When converted back
    migration.backwards(None, connection.schema_editor())

    # Then plain tables again, every row kept, ids from an identity past the old ones
    assert [relkind(t) for t in TABLES] == ["r", "r"]
    assert CustomerLayer.objects.count() == 5 and LayerHistory.objects.count() == 5
    again = place(customers[2], "rfm", "no_purchase")
    assert again[0].pk > other[0].pk
