"""A first run into empty tables loads them bare and builds their indexes afterwards
(PostgreSQL; segments.services.materialize, "a first run's bulk load"): tier tags in place;
memberships and history, partitioned by dimension (migration 0016), into a new partition of
the dimension's own, attached after its indexes are built.

Transactional tests: the three tables start each test TRUNCATEd and without any dimension's
partition (an empty heap, as on a new install), and another connection can hold a lock on them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from segments.dimensions import expiry
from segments.models import CustomerLayer, CustomerTag, Dimension, LayerHistory, RecomputeRun
from segments.services import materialize
from segments.services.recompute import dimension_recompute
from tests.segments.conftest import AS_OF, DAY, World, layers_of, plan_nodes, recompute, statement_plans

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

TABLES = [m._meta.db_table for m in (CustomerLayer, LayerHistory, CustomerTag)]
PARTITIONED = TABLES[:2]
BUILDS = ("write_indexes", "history_indexes", "tags_indexes")


def partitions(table: str) -> dict[str, str]:
    """``table``'s partitions: name -> bound."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass",
            [table],
        )
        return dict(cursor.fetchall())


def partition_catalog(name: str) -> list[tuple[Any, ...]]:
    """A partition's indexes, each with the parent index it is attached to (definition without
    the index's own name), and its constraints."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT p.relname, regexp_replace(pg_get_indexdef(x.indexrelid), '^(CREATE (UNIQUE )?INDEX) \\S+ ON \\S+', "
            "'\\1 ON'), c.contype FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
            "LEFT JOIN pg_inherits h ON h.inhrelid = x.indexrelid LEFT JOIN pg_class p ON p.oid = h.inhparent "
            "LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid "
            "WHERE x.indrelid = %s::regclass ORDER BY 1",
            [name],
        )
        indexes = cursor.fetchall()
        cursor.execute(
            "SELECT contype, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass "
            "AND contype NOT IN ('p', 'u') ORDER BY 1, 2",
            [name],
        )
        return indexes + cursor.fetchall()


def catalog() -> dict[str, list[tuple[Any, ...]]]:
    """Each table's indexes as the catalog has them: name, definition, and the constraint it
    backs (name, type, deferrable, initially deferred), plus every constraint of the table."""
    with connection.cursor() as cursor:
        out = {}
        for name in TABLES:
            cursor.execute(
                "SELECT i.relname, pg_get_indexdef(x.indexrelid), x.indisunique, x.indisprimary, x.indisvalid, "
                "c.conname, c.contype, c.condeferrable, c.condeferred "
                "FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                "LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid "
                "WHERE x.indrelid = %s::regclass ORDER BY i.relname",
                [name],
            )
            out[name] = cursor.fetchall()
            cursor.execute(
                "SELECT conname, contype, condeferrable, condeferred, pg_get_constraintdef(oid) FROM pg_constraint "
                "WHERE conrelid = %s::regclass ORDER BY conname",
                [name],
            )
            out[f"{name} constraints"] = cursor.fetchall()
    return out


def rows() -> dict[str, list[tuple[Any, ...]]]:
    return {
        "layers": sorted(
            CustomerLayer.objects.values_list("customer__external_id", "layer__key", "since", "valid_until")
        ),
        "history": sorted(
            LayerHistory.objects.values_list("customer__external_id", "layer__key", "entered_at", "left_at")
        ),
        "tags": sorted(CustomerTag.objects.values_list("customer__external_id", "tag__code", "source")),
    }


def truncate() -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {', '.join(TABLES)}")
        for table in PARTITIONED:
            for name, bound in partitions(table).items():
                if bound != "DEFAULT":
                    cursor.execute(f"DROP TABLE {name}")


@pytest.fixture
def customers(world: World) -> World:
    for i in range(30):
        customer = world.customer(f"c{i:02d}")
        if i % 3:
            world.membership(customer, expires_in=5 if i % 3 == 1 else 95)
    truncate()  # a new install's tables: no row, no page
    return world


def test_first_run__empty_tables__loaded_bare_and_indexes_rebuilt_identical(customers: World) -> None:
    # Given a new install (three empty tables) and their catalog
    before = catalog()

    # When the first run writes them
    with CaptureQueriesContext(connection) as queries:
        outcome = recompute("expiry")

    # Then each table was loaded bare and its indexes built afterwards (the run says so):
    # tier tags in place, memberships and history into a partition of the dimension's own ...
    assert outcome.status == "succeeded"
    timings = RecomputeRun.objects.get(pk=outcome.run_id).details["timings_ms"]
    assert set(BUILDS) <= set(timings)
    statements = [q["sql"] for q in queries.captured_queries]
    tags = TABLES[2]
    assert f"LOCK TABLE {tags} IN ACCESS EXCLUSIVE MODE NOWAIT" in statements
    inserted = next(i for i, s in enumerate(statements) if s.startswith(f"INSERT INTO {tags} "))
    assert any(s.startswith("DROP INDEX") or f"ALTER TABLE {tags} DROP" in s for s in statements[:inserted])
    assert any(s.startswith("CREATE") and f" ON public.{tags} " in s for s in statements[inserted:])
    dimension = Dimension.objects.get(key="expiry").pk
    for name in PARTITIONED:
        own = f"{name}_d{dimension}"
        created = statements.index(f"CREATE TABLE {own} (LIKE {name} INCLUDING DEFAULTS)")
        inserted = next(i for i, s in enumerate(statements) if s.startswith(f"INSERT INTO {own} "))
        attached = statements.index(f"ALTER TABLE {name} ATTACH PARTITION {own} FOR VALUES IN ({dimension})")
        assert created < inserted < attached
        assert any(s.startswith("CREATE") and f" ON {own} " in s for s in statements[inserted:attached])
        assert not any(s.startswith(f"INSERT INTO {name} ") for s in statements)
        # attached with an index for each of the parent's, as PostgreSQL would have made it
        assert partitions(name)[own] == f"FOR VALUES IN ('{dimension}')"
        assert partition_catalog(own) == partition_catalog(f"{name}_default")
    # ... with every index, constraint name, type and deferrability of the tables as before
    assert catalog() == before
    assert layers_of("expiry") == {f"c{i:02d}": ("none", "expiring_soon", "valid")[i % 3] for i in range(30)}
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT COUNT(*) FROM {PARTITIONED[0]}_d{dimension}")
        assert cursor.fetchone()[0] == 30


def test_first_run__bulk_and_indexed_paths__write_the_same_rows(customers: World) -> None:
    # Given the rows a bulk first run wrote
    bulk = recompute("expiry")
    assert set(BUILDS) <= set(RecomputeRun.objects.get(pk=bulk.run_id).details["timings_ms"])
    written = rows()
    truncate()

    # When the same first run goes through the indexes (portable: no bulk load)
    indexed = recompute("expiry", portable=True)

    # Then the same memberships, history and tier tags
    assert not set(BUILDS) & set(RecomputeRun.objects.get(pk=indexed.run_id).details["timings_ms"])
    assert rows() == written and len(written["layers"]) == 30 and len(written["tags"]) == 30


def test_first_run__customer_staged_twice__refused_with_the_mece_report_and_catalog_intact(
    customers: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a kind that places one customer twice, on empty tables
    before = catalog()
    twice = customers.customer("twice")
    real_select = expiry.stage_select

    def faulty_select(ctx: Any) -> tuple[str, list]:
        sql, params = real_select(ctx)
        return (
            f"SELECT * FROM ({sql}) x UNION ALL SELECT * FROM ({sql}) y WHERE y.customer_id = %s",
            [*params, *params, twice.pk],
        )

    monkeypatch.setattr(expiry, "stage_select", faulty_select)

    # When the first run writes
    with CaptureQueriesContext(connection) as queries:
        outcome = dimension_recompute(dimension_id=Dimension.objects.get(key="expiry").pk, as_of=AS_OF)

    # Then the unique index, built after the bare load, refused it: the run is refused with
    # the MECE report, nothing is written and the catalog is as before
    statements = [q["sql"] for q in queries.captured_queries]
    own = f"{PARTITIONED[0]}_d{Dimension.objects.get(key='expiry').pk}"
    assert any(s.startswith(f'CREATE UNIQUE INDEX "{own}_customer_layer_unique"') for s in statements)
    assert outcome.status == "failed" and "MECE violation" in outcome.error
    assert set(partitions(PARTITIONED[0])) == {f"{PARTITIONED[0]}_default"}  # rolled back with the rest
    mece = RecomputeRun.objects.get(pk=outcome.run_id).details["mece"]
    assert (mece["ok"], mece["duplicates"], mece["unplaced"]) == (False, 1, 0)
    assert rows() == {"layers": [], "history": [], "tags": []}
    assert catalog() == before


def _dsn() -> str:
    s = connection.settings_dict
    return f"host={s['HOST']} port={s['PORT']} dbname={s['NAME']} user={s['USER']} password={s['PASSWORD']}"


@pytest.fixture
def reader() -> Iterator[psycopg.Connection]:
    """Another session with an open transaction that read CustomerLayer (it holds ACCESS SHARE)."""
    other = psycopg.connect(_dsn())
    other.execute(f"SELECT COUNT(*) FROM {CustomerLayer._meta.db_table}")
    yield other
    other.rollback()
    other.close()


def test_first_run__table_read_by_an_open_transaction__bounded_wait_then_through_the_parent(
    customers: World, reader: psycopg.Connection
) -> None:
    # Given another session in a transaction that read the memberships table (it holds ACCESS
    # SHARE on every partition, the default one too)
    started = time.monotonic()

    # When the first run writes
    outcome = recompute("expiry")

    # Then it waits for that session at most ATTACH_LOCK_TIMEOUT to attach the memberships'
    # partition, then copies them through the parent (into the default partition) and says so;
    # the history's partition (nobody holds that table) is attached, the tier tags bulk-loaded
    assert time.monotonic() - started < 10
    assert outcome.status == "succeeded"
    run = RecomputeRun.objects.get(pk=outcome.run_id).details
    expiry = Dimension.objects.get(key="expiry").pk
    assert run["stats"]["partitions_copied_through_parent"] == [f"{PARTITIONED[0]}_d{expiry}"]
    assert set(BUILDS) <= set(run["timings_ms"])
    assert f"{PARTITIONED[0]}_d{expiry}" not in partitions(PARTITIONED[0])
    assert f"{PARTITIONED[1]}_d{expiry}" in partitions(PARTITIONED[1])
    assert len(layers_of("expiry")) == 30
    # and the session is still in its transaction, unharmed
    assert reader.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS
    assert reader.execute(f"SELECT COUNT(*) FROM {PARTITIONED[0]}_default").fetchone()[0] == 30


def test_first_run__tables_hold_another_dimensions_rows__own_partition_loaded_tags_indexed(
    customers: World,
) -> None:
    # Given a new install's first dimension, bulk-loaded
    first = recompute("expiry")
    assert set(BUILDS) <= set(RecomputeRun.objects.get(pk=first.run_id).details["timings_ms"])
    before = catalog()
    expiry_partition = partition_catalog(f"{PARTITIONED[0]}_d{Dimension.objects.get(key='expiry').pk}")

    # When another dimension runs for the first time (a new dimension on a populated install)
    with CaptureQueriesContext(connection) as queries:
        second = recompute("lifecycle")

    # Then memberships and history are loaded into partitions of its own, and tier tags (a
    # populated table) go in through their indexes: no index dropped
    assert second.status == "succeeded"
    timings = RecomputeRun.objects.get(pk=second.run_id).details["timings_ms"]
    assert {"write_indexes", "history_indexes"} <= set(timings) and "tags_indexes" not in timings
    statements = [q["sql"] for q in queries.captured_queries]
    assert not any(s.startswith(("DROP INDEX", "ALTER TABLE segments_customertag DROP")) for s in statements)
    lifecycle = Dimension.objects.get(key="lifecycle").pk
    for name in PARTITIONED:
        assert f"{name}_d{lifecycle}" in partitions(name)
    # and the other dimension's partition is untouched
    assert partition_catalog(f"{PARTITIONED[0]}_d{Dimension.objects.get(key='expiry').pk}") == expiry_partition
    assert catalog() == before
    assert len(layers_of("lifecycle")) == 30 and len(layers_of("expiry")) == 30


def test_first_run__dimension_rows_waiting_in_the_default_partition__indexed_path(customers: World) -> None:
    # Given a membership row of a dimension written before its first run (no partition of its own:
    # it lives in the default partition)
    dimension = Dimension.objects.get(key="expiry")
    CustomerLayer.objects.create(
        customer=customers.customer("early"), dimension=dimension, layer=dimension.layers.get(key="none")
    )

    # When the dimension runs (not a first run: it has a row) and again the next night
    first = recompute("expiry")
    later = recompute("expiry", as_of=AS_OF + 10 * DAY)

    # Then everyone is placed through the parent, in the default partition, and no partition
    # of its own was made for the dimension
    assert first.status == later.status == "succeeded"
    assert len(layers_of("expiry")) == 31
    assert set(partitions(PARTITIONED[0])) == {f"{PARTITIONED[0]}_default"}


def _forget(key: str) -> None:
    """Delete a dimension's rows and runs, so that its next run is a first run again."""
    dimension = Dimension.objects.get(key=key)
    CustomerLayer.objects.filter(dimension=dimension).delete()
    LayerHistory.objects.filter(dimension=dimension).delete()
    CustomerTag.objects.filter(tag__layer__dimension=dimension).delete()
    RecomputeRun.objects.filter(target=f"dimension:{key}").delete()


@pytest.mark.parametrize("install", ["new", "populated"])
def test_first_run__kind_in_customer_order__stage_merged_in_that_order_not_sorted(
    customers: World, install: str
) -> None:
    # Given customers with and without orders in RFM's window; on a populated install another
    # dimension's rows are in the three tables already
    for i, customer in enumerate(customers.customer(f"o{i:02d}") for i in range(12)):
        customers.orders(customer, [3 + i, 20 + 2 * i][: 1 + i % 2], f"{15 + 10 * i}.00")
    truncate()
    if install == "populated":
        recompute("expiry")
    portable = recompute("rfm", portable=True)
    expected = rows()
    _forget("rfm")

    # When RFM (IN_CUSTOMER_ORDER) runs for the first time
    with (
        CaptureQueriesContext(connection) as queries,
        statement_plans(lambda sql: sql.startswith("CREATE TEMP TABLE segments_stage_layer")) as plans,
    ):
        outcome = recompute("rfm")
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_hashjoin")
        hash_joins_after = cursor.fetchone()[0]

    # Then its stage statement asked the kind for its rows in customer order, with hash joins
    # off for that statement alone, and no sort of the whole stage above the join
    sqls = [q["sql"] for q in queries.captured_queries if not q["sql"].startswith("EXPLAIN")]
    stage = next(i for i, sql in enumerate(sqls) if sql.startswith("CREATE TEMP TABLE segments_stage_layer"))
    assert "ORDER BY c.id" in sqls[stage] and "segments_customerlayer" not in sqls[stage]
    assert sqls[stage - 1] == "SET LOCAL enable_hashjoin = off" and hash_joins_after == "on"
    ((_, plan),) = plans
    nodes = list(plan_nodes(plan))
    assert not any(n["Node Type"] == "Hash Join" for n in nodes)
    top = plan
    while "Join" not in top["Node Type"] and top["Node Type"] != "Nested Loop":
        assert top["Node Type"] not in ("Sort", "Incremental Sort"), top
        top = top["Plans"][0]
    # and it wrote the rows the portable path writes
    assert outcome.status == "succeeded" and outcome.details["layer_sizes"] == portable.details["layer_sizes"]
    assert rows() == expected and len(layers_of("rfm")) == 42


@pytest.fixture
def later_migration() -> Iterator[None]:
    """Indexes a later migration might add: a partial one, a deferrable unique constraint, a
    primary key another table's foreign key points at (kept in place)."""
    statements = [
        "CREATE INDEX bulk20_open_by_layer ON segments_layerhistory (layer_id) WHERE left_at IS NULL",
        "CREATE INDEX bulk20_manual_by_tag ON segments_customertag (tag_id) WHERE source = 'manual'",
        "ALTER TABLE segments_customertag ADD CONSTRAINT bulk20_tag_source_unique "
        "UNIQUE (customer_id, tag_id, source) DEFERRABLE INITIALLY DEFERRED",
        "CREATE TABLE bulk20_referrer (id bigint PRIMARY KEY, tag_row_id bigint REFERENCES segments_customertag (id))",
    ]
    with connection.cursor() as cursor:
        for sql in statements:
            cursor.execute(sql)
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS bulk20_referrer")
        cursor.execute("DROP INDEX IF EXISTS bulk20_open_by_layer")
        cursor.execute("DROP INDEX IF EXISTS bulk20_manual_by_tag")
        cursor.execute("ALTER TABLE segments_customertag DROP CONSTRAINT IF EXISTS bulk20_tag_source_unique")


def test_first_run__indexes_a_later_migration_adds__rebuilt_from_the_catalog(
    customers: World, later_migration: None
) -> None:
    # Given indexes no hand-kept list names
    before = catalog()

    # When the first run bulk-loads the tables
    with CaptureQueriesContext(connection) as queries:
        outcome = recompute("expiry")

    # Then they were dropped and rebuilt too (the referenced primary key kept in place), or
    # built on the dimension's new partition, and the catalog is as before
    assert outcome.status == "succeeded"
    statements = [q["sql"] for q in queries.captured_queries]
    assert 'DROP INDEX "bulk20_manual_by_tag"' in statements
    assert any('DROP CONSTRAINT "bulk20_tag_source_unique"' in s for s in statements)
    assert not any('DROP CONSTRAINT "segments_customertag_pkey"' in s for s in statements)
    own = f"segments_layerhistory_d{Dimension.objects.get(key='expiry').pk}"
    assert ("bulk20_open_by_layer", "CREATE INDEX ON btree (layer_id) WHERE (left_at IS NULL)", None) in [
        (p, d.replace(" USING ", " "), c) for p, d, c in partition_catalog(own)
    ]
    assert catalog() == before
    assert len(layers_of("expiry")) == 30


def test_table_indexes__catalog_read__names_types_and_what_is_kept(later_migration: None, db: None) -> None:
    with connection.cursor() as cursor:
        tags = {ix.name: ix for ix in materialize.table_indexes(cursor, CustomerTag._meta.db_table)}
        layers = {ix.name: ix for ix in materialize.table_indexes(cursor, CustomerLayer._meta.db_table)}
    deferred = tags["bulk20_tag_source_unique"]
    assert (deferred.constraint, deferred.deferrable, deferred.deferred, deferred.keep) == ("u", True, True, False)
    assert deferred.definition.startswith("CREATE UNIQUE INDEX bulk20_tag_source_unique ON public.segments_customertag")
    assert tags["segments_customertag_pkey"].constraint == "p"
    assert tags["segments_customertag_pkey"].keep  # a foreign key depends on it
    assert layers["segments_customerlayer_pkey"].constraint == "p"
    assert not layers["customer_layer_unique"].keep


def test_first_run__next_night__diffs_against_the_rebuilt_indexes(customers: World) -> None:
    # Given a bulk first run, when the next night runs, then movers move as on the indexed path
    first = recompute("expiry")
    assert set(BUILDS) <= set(RecomputeRun.objects.get(pk=first.run_id).details["timings_ms"])
    outcome = recompute("expiry", as_of=AS_OF + 10 * DAY)
    assert outcome.status == "succeeded" and outcome.changed == 20
    assert LayerHistory.objects.filter(left_at__isnull=True).count() == 30


@pytest.fixture
def app_role() -> Iterator[str]:
    """A role granted the tables' rows but not owning them (migrations ran as the owner)."""
    role = "bulk20_app_role"
    with connection.cursor() as cursor:
        cursor.execute(f"DROP ROLE IF EXISTS {role}")
        cursor.execute(f"CREATE ROLE {role}")
        cursor.execute(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
        cursor.execute(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    yield role
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
        cursor.execute(f"DROP OWNED BY {role}")
        cursor.execute(f"DROP ROLE {role}")


def test_first_run__role_not_owning_the_tables__indexed_path(customers: World, app_role: str) -> None:
    # Given the application connected as a role that may write the rows but not drop indexes
    with connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {app_role}")

    # When the first run writes the empty tables
    outcome = recompute("expiry")

    # Then it writes through the indexes instead of failing on DROP INDEX
    with connection.cursor() as cursor:
        cursor.execute("RESET ROLE")
    assert outcome.status == "succeeded", outcome.error
    assert not set(BUILDS) & set(RecomputeRun.objects.get(pk=outcome.run_id).details["timings_ms"])
    assert len(layers_of("expiry")) == 30


@pytest.fixture
def partitioned() -> Iterator[str]:
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE bulk20_parted (id bigint, k int) PARTITION BY LIST (k)")
        cursor.execute("CREATE TABLE bulk20_parted_1 PARTITION OF bulk20_parted FOR VALUES IN (1)")
        cursor.execute("CREATE UNIQUE INDEX bulk20_parted_uniq ON bulk20_parted (id, k)")
        cursor.execute("INSERT INTO bulk20_parted VALUES (1, 1)")
    yield "bulk20_parted"
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE bulk20_parted")


def test_bulk_target__partitioned_table_or_its_partition__never_bulk_loaded(partitioned: str, db: None) -> None:
    # A partitioned table's own heap is empty whatever its partitions hold; a partition's
    # indexes belong to the parent's: neither is loaded bare.
    with connection.cursor() as cursor:
        assert materialize._bulk_target(cursor, partitioned, portable=False) is False
        assert materialize._bulk_target(cursor, f"{partitioned}_1", portable=False) is False
        cursor.execute("CREATE TABLE bulk20_plain (id bigint PRIMARY KEY)")
        assert materialize._bulk_target(cursor, "bulk20_plain", portable=False) is True
        cursor.execute("DROP TABLE bulk20_plain")
