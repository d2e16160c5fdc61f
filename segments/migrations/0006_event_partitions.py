"""PostgreSQL only: the events table becomes partitioned by month of ``occurred_at``.

Converts an existing database in place (SQLite keeps its single table; nothing changes
in Django's model state). What the new layout is and why:

- ``segments_event`` is ``PARTITION BY RANGE (occurred_at)``, one partition per calendar
  month in UTC (``segments_event_pYYYYMM``) plus ``segments_event_default`` for a row no
  monthly partition covers yet. ``segments.services.partitions.event_partitions_ensure``
  (a daily beat task, created below) keeps three months ready ahead.
- A unique index on a partitioned table must contain the partition key, so ``event_id``
  can no longer be unique across the table by an index of its own. Idempotency moves to a
  small unpartitioned table, ``segments_event_key (event_id PRIMARY KEY, event_pk)``,
  claimed by a ``BEFORE INSERT`` row trigger. A row whose key is already claimed raises
  the unique violation the old index raised, or, when the writer set
  ``segments.event_key_conflict = 'skip'`` for its transaction (:data:`SKIP_SQL` in
  ``segments.services.partitions``), is skipped (the trigger returns NULL), so ``INSERT …
  ON CONFLICT DO NOTHING RETURNING`` returns only the rows this statement inserted.
  Concurrent identical writers wait on the key's speculative insertion exactly as they
  waited on the old unique index: one is told "created". The trigger covers every writer
  (ORM, COPY, raw SQL, fixtures); an
  ``AFTER DELETE`` trigger frees the key of a deleted event (a customer's erasure) and an
  ``AFTER TRUNCATE`` trigger empties the table. Detaching a partition fires neither, so
  the keys of archived months stay: a re-sent old event is a duplicate, not a new row.
- The primary key is ``(id, occurred_at)``; Django still addresses rows by ``id`` (one
  sequence, so ``id`` stays unique). No foreign key points at events.
- Indexes: the two btree indexes of the model (same names), a plain btree on
  ``event_id`` (reads of stored bodies by id) and a BRIN on ``occurred_at`` (time ranges
  inside a month: events arrive roughly in time order, so block ranges are tight).
"""

import datetime as dt

from django.db import migrations

TASK_NAME = "segments: event partitions ahead"
AHEAD_MONTHS = 3

FUNCTIONS = """
CREATE OR REPLACE FUNCTION segments_event_key_claim() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO segments_event_key (event_id, event_pk) VALUES (NEW.event_id, NEW.id)
        ON CONFLICT (event_id) DO NOTHING;
    IF FOUND THEN
        RETURN NEW;
    END IF;
    -- The same row moving to another partition (an UPDATE of occurred_at) re-inserts
    -- itself: its key is its own.
    IF EXISTS (SELECT 1 FROM segments_event_key WHERE event_id = NEW.event_id AND event_pk = NEW.id) THEN
        RETURN NEW;
    END IF;
    -- A duplicate event_id. Writers that asked for ON CONFLICT DO NOTHING semantics (the
    -- ingestion service, the COPY importer) get the row skipped, so it is not RETURNING-ed;
    -- every other writer gets the error the old unique index raised.
    IF current_setting('segments.event_key_conflict', true) = 'skip' THEN
        RETURN NULL;
    END IF;
    RAISE unique_violation USING
        MESSAGE = format('duplicate key value violates unique constraint "segments_event_key_pkey"'),
        DETAIL = format('Key (event_id)=(%s) already exists.', NEW.event_id),
        CONSTRAINT = 'segments_event_key_pkey', TABLE = 'segments_event';
END $$;

CREATE OR REPLACE FUNCTION segments_event_key_release() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Runs after the statement: a row moved between partitions exists again by then.
    IF NOT EXISTS (SELECT 1 FROM segments_event WHERE event_id = OLD.event_id AND id = OLD.id) THEN
        DELETE FROM segments_event_key WHERE event_id = OLD.event_id AND event_pk = OLD.id;
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION segments_event_key_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    TRUNCATE segments_event_key;
    RETURN NULL;
END $$;
"""


def _month(value: dt.date) -> dt.date:
    return value.replace(day=1)


def _next_month(value: dt.date) -> dt.date:
    return (value.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def _partition_sql(month: dt.date) -> str:
    return (
        f"CREATE TABLE segments_event_p{month:%Y%m} PARTITION OF segments_event "
        f"FOR VALUES FROM ('{month:%Y-%m-%d} 00:00:00+00') TO ('{_next_month(month):%Y-%m-%d} 00:00:00+00')"
    )


def forwards(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = 'segments_event'::regclass")
        if cursor.fetchone()[0] == "p":
            return  # already partitioned
        cursor.execute("LOCK TABLE segments_event IN ACCESS EXCLUSIVE MODE")
        cursor.execute("SELECT min(occurred_at), max(id) FROM segments_event")
        oldest, max_id = cursor.fetchone()
        cursor.execute("SELECT (now() AT TIME ZONE 'UTC')::date")
        today = cursor.fetchone()[0]
        statements = [
            "ALTER TABLE segments_event RENAME TO segments_event_unpartitioned",
            "CREATE SEQUENCE segments_event_id_partitioned_seq AS bigint",
            """CREATE TABLE segments_event (
                id bigint NOT NULL DEFAULT nextval('segments_event_id_partitioned_seq'),
                event_id varchar(128) NOT NULL,
                occurred_at timestamptz NOT NULL,
                received_at timestamptz NOT NULL,
                properties jsonb NOT NULL,
                amount numeric(14, 2),
                currency varchar(3) NOT NULL,
                customer_id bigint NOT NULL,
                event_type_id smallint NOT NULL
            ) PARTITION BY RANGE (occurred_at)""",
            "ALTER SEQUENCE segments_event_id_partitioned_seq OWNED BY segments_event.id",
            "CREATE TABLE segments_event_key (event_id varchar(128) PRIMARY KEY, event_pk bigint NOT NULL)",
            "CREATE TABLE segments_event_default PARTITION OF segments_event DEFAULT",
        ]
        month = _month(oldest.astimezone(dt.UTC).date()) if oldest is not None else _month(today)
        last = _month(today)
        for _ in range(AHEAD_MONTHS):
            last = _next_month(last)
        while month <= last:
            statements.append(_partition_sql(month))
            month = _next_month(month)
        columns = "id, event_id, occurred_at, received_at, properties, amount, currency, customer_id, event_type_id"
        statements += [
            f"INSERT INTO segments_event ({columns}) SELECT {columns} FROM segments_event_unpartitioned",
            "INSERT INTO segments_event_key (event_id, event_pk) SELECT event_id, id FROM segments_event_unpartitioned",
            "DROP TABLE segments_event_unpartitioned",
            "ALTER SEQUENCE segments_event_id_partitioned_seq RENAME TO segments_event_id_seq",
            "ALTER TABLE segments_event ADD CONSTRAINT segments_event_pkey PRIMARY KEY (id, occurred_at)",
            "ALTER TABLE segments_event ADD CONSTRAINT event_amount_has_currency "
            "CHECK (amount IS NULL OR NOT currency = '')",
            "ALTER TABLE segments_event ADD CONSTRAINT segments_event_customer_id_88a9f9a8_fk_segments_customer_id "
            "FOREIGN KEY (customer_id) REFERENCES segments_customer (id) DEFERRABLE INITIALLY DEFERRED",
            "ALTER TABLE segments_event ADD CONSTRAINT segments_event_event_type_id_6de8761b_fk_segments_eventtype_id "
            "FOREIGN KEY (event_type_id) REFERENCES segments_eventtype (id) DEFERRABLE INITIALLY DEFERRED",
            "CREATE INDEX event_cust_type_time_idx ON segments_event (customer_id, event_type_id, occurred_at)",
            "CREATE INDEX event_type_time_idx ON segments_event (event_type_id, occurred_at)",
            "CREATE INDEX segments_event_event_id_idx ON segments_event (event_id)",
            "CREATE INDEX event_occurred_brin ON segments_event USING brin (occurred_at)",
            FUNCTIONS,
            "CREATE TRIGGER segments_event_key_claim BEFORE INSERT ON segments_event "
            "FOR EACH ROW EXECUTE FUNCTION segments_event_key_claim()",
            "CREATE TRIGGER segments_event_key_release AFTER DELETE ON segments_event "
            "FOR EACH ROW EXECUTE FUNCTION segments_event_key_release()",
            "CREATE TRIGGER segments_event_key_truncate AFTER TRUNCATE ON segments_event "
            "FOR EACH STATEMENT EXECUTE FUNCTION segments_event_key_truncate()",
        ]
        for statement in statements:
            cursor.execute(statement)
        # The rows were copied with their keys claimed above; the trigger only guards new ones.
        cursor.execute("SELECT setval('segments_event_id_seq', %s, %s)", [max_id or 1, max_id is not None])
        cursor.execute("ANALYZE segments_event")


def schedule(apps, schema_editor):
    CrontabSchedule = apps.get_model("django_celery_beat", "CrontabSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    crontab, _ = CrontabSchedule.objects.get_or_create(
        minute="15", hour="1", day_of_week="*", day_of_month="*", month_of_year="*", timezone="UTC"
    )
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "segments.tasks.event_partitions_ensure",
            "crontab": crontab,
            "description": "PostgreSQL: create the monthly event partitions three months ahead (no-op on SQLite).",
        },
    )


def unschedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    # The conversion copies the table: one transaction, so a failure leaves the old table.
    atomic = True

    dependencies = [
        ("segments", "0005_recompute_schedule"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [
        migrations.RunPython(forwards, migrations.RunPython.noop, elidable=False),
        migrations.RunPython(schedule, unschedule),
    ]
