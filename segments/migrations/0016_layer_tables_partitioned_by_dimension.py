"""PostgreSQL only: memberships (``segments_customerlayer``) and layer history
(``segments_layerhistory``) become ``PARTITION BY LIST (dimension_id)``: one partition per
dimension (``<table>_d<id>``) plus ``<table>_default`` for the rows of a dimension that has no
partition of its own.

Why: a new dimension's first recompute on a running install wrote its million rows through
indexes already holding the other dimensions' rows, one B-tree insertion per row and index:
3.0-3.2 s per table at 1M customers where loading an empty table bare and building its indexes
afterwards takes 1.5-1.9 s (bench/segments.py ``--populated-cold``, 2026-12-06). With a
partition per dimension, a dimension's first run loads a table of its own bare, builds its
indexes and attaches it (``segments.services.materialize``, "a first run's bulk load"); the
other dimensions' partitions are not touched. Every reader names the dimension (or the
customer, which each partition's index serves), so plans prune to one partition.

Converts an existing database in place (SQLite keeps its single tables; nothing changes in
Django's model state): each dimension that has rows gets its partition here; one with none
(a new install's built-in dimensions) gets it from its first run. A unique index on a
partitioned table must contain the partition key: both unique constraints already do
(customer, dimension); the primary key becomes ``(id, dimension_id)``, and Django still
addresses rows by ``id`` (one sequence per table, so ``id`` stays unique). No foreign key
points at either table.

Both tables are locked (ACCESS EXCLUSIVE) while they are copied: at 1M customers with three
dimensions (3M rows per table) ``migrate`` took 15.5 s forwards and 14.1 s backwards
(bench/segments.py data, 2026-12-06): run it in a quiet window on a large install.
"""

from django.db import migrations

TABLES = {
    "segments_customerlayer": {
        "columns": """
            id bigint NOT NULL DEFAULT nextval('{seq}'),
            since timestamptz NOT NULL,
            computed_at timestamptz NOT NULL,
            customer_id bigint NOT NULL,
            dimension_id bigint NOT NULL,
            layer_id bigint NOT NULL,
            valid_until timestamptz
        """,
        "names": "id, since, computed_at, customer_id, dimension_id, layer_id, valid_until",
        "indexes": [
            "ALTER TABLE segments_customerlayer ADD CONSTRAINT segments_customerlayer_pkey "
            "PRIMARY KEY (id, dimension_id)",
            "ALTER TABLE segments_customerlayer ADD CONSTRAINT customer_layer_unique "
            "UNIQUE (customer_id, dimension_id)",
            "CREATE INDEX customer_layer_dim_idx ON segments_customerlayer (dimension_id, layer_id)",
        ],
        "plain_indexes": [
            "ALTER TABLE segments_customerlayer ADD CONSTRAINT segments_customerlayer_pkey PRIMARY KEY (id)",
            "ALTER TABLE segments_customerlayer ADD CONSTRAINT customer_layer_unique "
            "UNIQUE (customer_id, dimension_id)",
            "CREATE INDEX customer_layer_dim_idx ON segments_customerlayer (dimension_id, layer_id)",
        ],
    },
    "segments_layerhistory": {
        "columns": """
            id bigint NOT NULL DEFAULT nextval('{seq}'),
            entered_at timestamptz NOT NULL,
            left_at timestamptz,
            customer_id bigint NOT NULL,
            dimension_id bigint NOT NULL,
            layer_id bigint NOT NULL
        """,
        "names": "id, entered_at, left_at, customer_id, dimension_id, layer_id",
        "indexes": [
            "ALTER TABLE segments_layerhistory ADD CONSTRAINT segments_layerhistory_pkey "
            "PRIMARY KEY (id, dimension_id)",
            "CREATE INDEX layer_hist_cust_idx ON segments_layerhistory (customer_id, dimension_id, entered_at)",
            "CREATE UNIQUE INDEX layer_history_one_open ON segments_layerhistory (customer_id, dimension_id) "
            "WHERE left_at IS NULL",
        ],
        "plain_indexes": [
            "ALTER TABLE segments_layerhistory ADD CONSTRAINT segments_layerhistory_pkey PRIMARY KEY (id)",
            "CREATE INDEX layer_hist_cust_idx ON segments_layerhistory (customer_id, dimension_id, entered_at)",
            "CREATE UNIQUE INDEX layer_history_one_open ON segments_layerhistory (customer_id, dimension_id) "
            "WHERE left_at IS NULL",
        ],
    },
}


def _indexes_of(cursor, table: str) -> list[tuple[str, str | None]]:
    cursor.execute(
        "SELECT i.relname, c.conname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
        "LEFT JOIN pg_constraint c ON c.conindid = x.indexrelid AND c.conrelid = x.indrelid "
        "WHERE x.indrelid = %s::regclass",
        [table],
    )
    return cursor.fetchall()


def _convert(cursor, table: str, spec: dict, *, partitioned: bool) -> None:
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = %s::regclass", [table])
    if (cursor.fetchone()[0] == "p") == partitioned:
        return
    old = f"{table}_old"
    seq = f"{table}_id_new_seq"
    cursor.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    cursor.execute(f"SELECT max(id) FROM {table}")
    max_id = cursor.fetchone()[0]
    # The old table's index and constraint names are the new table's: drop them first (the copy
    # needs none of them).
    for index, constraint in _indexes_of(cursor, table):
        if constraint:
            cursor.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{constraint}"')
        else:
            cursor.execute(f'DROP INDEX "{index}"')
    cursor.execute(f"ALTER TABLE {table} RENAME TO {old}")
    cursor.execute(f"CREATE SEQUENCE {seq} AS bigint")
    if partitioned:
        cursor.execute(f"CREATE TABLE {table} ({spec['columns'].format(seq=seq)}) PARTITION BY LIST (dimension_id)")
        cursor.execute(f"CREATE TABLE {table}_default PARTITION OF {table} DEFAULT")
        cursor.execute(f"SELECT DISTINCT dimension_id FROM {old} ORDER BY 1")
        for (dimension_id,) in cursor.fetchall():
            cursor.execute(
                f"CREATE TABLE {table}_d{int(dimension_id)} PARTITION OF {table} FOR VALUES IN ({int(dimension_id)})"
            )
    else:
        # Back to Django's own layout (an identity column, as Django creates it).
        cursor.execute(f"CREATE TABLE {table} ({spec['columns'].format(seq=seq)})")
    cursor.execute(f"INSERT INTO {table} ({spec['names']}) SELECT {spec['names']} FROM {old}")
    cursor.execute(f"DROP TABLE {old} CASCADE")
    for statement in spec["indexes"] if partitioned else spec["plain_indexes"]:
        cursor.execute(statement)
    if partitioned:
        cursor.execute(f"ALTER SEQUENCE {seq} OWNED BY {table}.id")
        cursor.execute(f"ALTER SEQUENCE {seq} RENAME TO {table}_id_seq")
        cursor.execute(f"SELECT setval('{table}_id_seq', %s, %s)", [max_id or 1, max_id is not None])
    else:
        cursor.execute(f"ALTER TABLE {table} ALTER COLUMN id DROP DEFAULT")
        cursor.execute(f"DROP SEQUENCE {seq}")
        cursor.execute(
            f"ALTER TABLE {table} ALTER COLUMN id ADD GENERATED BY DEFAULT AS IDENTITY "
            f"(RESTART WITH {int(max_id or 0) + 1})"
        )
    cursor.execute(f"ANALYZE {table}")


def _convert_all(schema_editor, *, partitioned: bool) -> None:
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for table, spec in TABLES.items():
            _convert(cursor, table, spec, partitioned=partitioned)


def forwards(apps, schema_editor):
    _convert_all(schema_editor, partitioned=True)


def backwards(apps, schema_editor):
    _convert_all(schema_editor, partitioned=False)


class Migration(migrations.Migration):
    # The conversion copies the tables: one transaction, so a failure leaves the old ones.
    atomic = True

    dependencies = [("segments", "0015_event_probe_covers_amount")]
    operations = [migrations.RunPython(forwards, backwards, elidable=False)]
