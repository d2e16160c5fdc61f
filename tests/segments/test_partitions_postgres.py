"""The events table partitioned by month on PostgreSQL (migration 0006): routing, the
event-key table that keeps ``event_id`` idempotent across partitions, partitions created
ahead, and the archive command."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import threading
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import IntegrityError, connection, connections, transaction
from django.utils import timezone

from segments.models import Event
from segments.services.ingestion import ARCHIVED_MESSAGE, EventInput, Outcome, events_record
from segments.services.partitions import event_partitions, event_partitions_ensure, partition_name
from tests.factories import CustomerFactory, EventFactory

pytestmark = pytest.mark.postgres


def at(year: int, month: int, day: int = 15) -> dt.datetime:
    return dt.datetime(year, month, day, 12, tzinfo=dt.UTC)


def partition_of(event_id: str) -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT tableoid::regclass::text FROM segments_event WHERE event_id = %s", [event_id])
        return cursor.fetchone()[0]


def record(event_id: str, occurred_at: dt.datetime, customer: str = "c-1", **extra: object) -> Outcome:
    result = events_record(
        events=[EventInput(event_id=event_id, customer_id=customer, type="login", occurred_at=occurred_at, **extra)]
    )
    return result.items[0].outcome


@pytest.mark.django_db
def test_event_insert__two_months__each_row_in_its_month_partition_far_future_in_default() -> None:
    event_partitions_ensure(today=dt.date(2021, 1, 5), ahead=1)  # 2021-01 and 2021-02
    CustomerFactory(external_id="c-1")
    assert record("jan", at(2021, 1, 31)) == Outcome.CREATED
    assert record("feb", dt.datetime(2021, 2, 1, tzinfo=dt.UTC)) == Outcome.CREATED  # a bound: the later month
    assert record("far", at(2121, 1)) == Outcome.CREATED
    assert partition_of("jan") == "segments_event_p202101"
    assert partition_of("feb") == "segments_event_p202102"
    assert partition_of("far") == "segments_event_default"


@pytest.mark.django_db
def test_events_record__same_event_id_in_another_month__conflict_and_one_row() -> None:
    # The unique index of a partitioned table must contain the partition key: the key
    # table is what stops one event_id from landing once per month.
    event_partitions_ensure(today=dt.date(2021, 1, 5), ahead=1)
    CustomerFactory(external_id="c-1")
    assert record("e-1", at(2021, 1)) == Outcome.CREATED
    assert record("e-1", at(2021, 1)) == Outcome.DUPLICATE
    assert record("e-1", at(2021, 2)) == Outcome.CONFLICT
    assert Event.objects.filter(event_id="e-1").count() == 1


@pytest.mark.django_db
def test_orm_insert__event_id_claimed_in_another_month__integrity_error() -> None:
    # Writers that did not ask to skip (ORM, fixtures, raw SQL) keep the unique index's error.
    customer = CustomerFactory()
    EventFactory(event_id="e-1", customer=customer, occurred_at=at(2021, 1))
    with pytest.raises(IntegrityError), transaction.atomic():
        EventFactory(event_id="e-1", customer=customer, occurred_at=at(2021, 6))
    assert Event.objects.filter(event_id="e-1").count() == 1


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_events_record__8_concurrent_writers_of_one_id_in_different_months__exactly_one_created() -> None:
    CustomerFactory(external_id="c-1")
    barrier = threading.Barrier(8)
    outcomes: list[Outcome] = []

    def post(occurred_at: dt.datetime) -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.append(record("race", occurred_at))
        finally:
            connections.close_all()

    # A month apart each: the months ready ahead (migration 0006), then the default partition.
    now = timezone.now()
    threads = [threading.Thread(target=post, args=(now + dt.timedelta(days=31 * i),)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes.count(Outcome.CREATED) == 1
    assert outcomes.count(Outcome.CONFLICT) == 7
    assert Event.objects.filter(event_id="race").count() == 1


@pytest.mark.django_db
def test_event_delete__customer_erased__event_id_free_again() -> None:
    customer = CustomerFactory(external_id="c-1")
    assert record("e-1", at(2026, 1)) == Outcome.CREATED
    customer.delete()
    CustomerFactory(external_id="c-1")
    assert record("e-1", at(2026, 1)) == Outcome.CREATED


@pytest.mark.django_db
def test_event_update__occurred_at_moves_to_another_month__row_and_key_kept() -> None:
    event_partitions_ensure(today=dt.date(2026, 1, 1), ahead=2)
    CustomerFactory(external_id="c-1")
    record("e-1", at(2026, 1))
    Event.objects.filter(event_id="e-1").update(occurred_at=at(2026, 3))
    assert partition_of("e-1") == "segments_event_p202603"
    assert record("e-1", at(2026, 3)) == Outcome.DUPLICATE


@pytest.mark.django_db
def test_partitions_ensure__months_ahead_missing__created_and_default_rows_moved_in() -> None:
    CustomerFactory(external_id="c-1")
    record("early", at(2031, 2))  # no partition yet: the default one holds it
    assert partition_of("early") == "segments_event_default"
    created = event_partitions_ensure(today=dt.date(2031, 1, 20), ahead=3)
    assert created == [partition_name(dt.date(2031, m, 1)) for m in (1, 2, 3, 4)]
    assert partition_of("early") == "segments_event_p203102"
    assert record("early", at(2031, 2)) == Outcome.DUPLICATE  # its key survived the move
    assert event_partitions_ensure(today=dt.date(2031, 1, 20), ahead=3) == []


@pytest.mark.django_db
def test_partitions_ensure__past_months_in_default__their_partitions_created_and_rows_moved_in() -> None:
    # Given history imported on a fresh install (partitions exist only from "today" on):
    # it all lands in the default partition, where no month bound prunes it.
    CustomerFactory(external_id="c-1")
    record("old-jan", at(2031, 1))
    record("old-mar", at(2031, 3, 31))
    record("far", at(2121, 1))
    assert partition_of("old-jan") == partition_of("old-mar") == "segments_event_default"
    # When the daily task runs in May
    created = event_partitions_ensure(today=dt.date(2031, 5, 2), ahead=0)
    # Then the months the default held get their partitions (none for the empty February)
    assert created == [partition_name(dt.date(2031, m, 1)) for m in (1, 3, 5)]
    assert partition_of("old-jan") == "segments_event_p203101"
    assert partition_of("old-mar") == "segments_event_p203103"
    assert partition_of("far") == "segments_event_default"  # the future stays until its month nears
    assert record("old-jan", at(2031, 1)) == Outcome.DUPLICATE


@pytest.mark.django_db
def test_archive_events__old_months_only_in_default_partition__split_out_and_archived(tmp_path: Path) -> None:
    # Given events of January and February 2020 imported with no partition for them
    CustomerFactory(external_id="c-1")
    record("jan-0", at(2020, 1, 10))
    record("feb-0", at(2020, 2))
    listing = io.StringIO()
    call_command("archive_events", "--list", stdout=listing)
    assert "segments_event_default\tno month\t2 rows" in listing.getvalue()
    # When January is archived
    out = io.StringIO()
    call_command("archive_events", "--before", "2020-02", "--to", str(tmp_path), stdout=out)
    # Then it was split out of the default partition, written and dropped; February stays
    assert "Archived 1 partition(s)" in out.getvalue()
    with gzip.open(tmp_path / "segments_event_p202001.csv.gz", "rt") as archive:
        assert [row["event_id"] for row in csv.DictReader(archive)] == ["jan-0"]
    assert set(Event.objects.values_list("event_id", flat=True)) == {"feb-0"}
    assert partition_of("feb-0") == "segments_event_p202002"


@pytest.mark.django_db
def test_partitions_ensure__beat_task__scheduled_daily() -> None:
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="segments.tasks.event_partitions_ensure")
    assert task.enabled and task.crontab.hour == "1"


@pytest.mark.django_db
def test_archive_events__months_before__exported_detached_dropped_and_ids_stay_claimed(tmp_path: Path) -> None:
    event_partitions_ensure(today=dt.date(2020, 1, 1), ahead=2)  # 2020-01 .. 2020-03
    CustomerFactory(external_id="c-1")
    for i in range(3):
        record(f"jan-{i}", at(2020, 1, 10 + i))
    record("feb-0", at(2020, 2))
    record("mar-0", at(2020, 3))
    out = io.StringIO()
    call_command("archive_events", "--before", "2020-03", "--to", str(tmp_path), stdout=out)
    assert "Archived 2 partition(s)" in out.getvalue()
    names = {p.name for p in event_partitions()}
    assert "segments_event_p202001" not in names and "segments_event_p202002" not in names
    assert "segments_event_p202003" in names
    with gzip.open(tmp_path / "segments_event_p202001.csv.gz", "rt") as archive:
        rows = list(csv.DictReader(archive))
    assert sorted(row["event_id"] for row in rows) == ["jan-0", "jan-1", "jan-2"]
    assert set(Event.objects.values_list("event_id", flat=True)) == {"mar-0"}
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('segments_event_p202001')")
        assert cursor.fetchone()[0] is None
    result = events_record(
        events=[EventInput(event_id="jan-0", customer_id="c-1", type="login", occurred_at=at(2020, 1, 10))]
    )
    assert result.items[0].outcome == Outcome.DUPLICATE and result.items[0].message == ARCHIVED_MESSAGE
    assert not Event.objects.filter(event_id="jan-0").exists()


@pytest.mark.django_db
def test_archive_events__this_month__refused(tmp_path: Path) -> None:
    from django.core.management import CommandError

    with pytest.raises(CommandError, match="Refusing"):
        call_command("archive_events", "--before", "2999-01", "--to", str(tmp_path))


OLD_EVENT_TABLE = """
CREATE TABLE segments_event (
    id bigint GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    event_id varchar(128) NOT NULL UNIQUE,
    occurred_at timestamptz NOT NULL,
    received_at timestamptz NOT NULL,
    properties jsonb NOT NULL,
    amount numeric(14, 2),
    currency varchar(3) NOT NULL,
    customer_id bigint NOT NULL REFERENCES segments_customer (id) DEFERRABLE INITIALLY DEFERRED,
    event_type_id smallint NOT NULL REFERENCES segments_eventtype (id) DEFERRABLE INITIALLY DEFERRED,
    CONSTRAINT event_amount_has_currency CHECK (amount IS NULL OR NOT currency = '')
)"""


@pytest.mark.django_db
def test_migration_0006__unpartitioned_table_with_rows__converted_in_place() -> None:
    # Given the events table as it was before 0006 (single table, unique event_id), with
    # rows in three months. All of it in the test's transaction: PostgreSQL's DDL rolls back.
    import importlib

    migration = importlib.import_module("segments.migrations.0006_event_partitions")
    customer = CustomerFactory()
    type_id = EventFactory.build().event_type.pk
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE segments_event, segments_event_key")
        cursor.execute(OLD_EVENT_TABLE)
        cursor.execute(
            "INSERT INTO segments_event (event_id, occurred_at, received_at, properties, currency, customer_id, "
            "event_type_id) SELECT 'old-' || g, timestamptz '2024-01-10' + g * interval '20 days', now(), '{}', '', "
            "%s, %s FROM generate_series(0, 4) g",
            [customer.pk, type_id],
        )

    # When
    migration.forwards(None, connection.schema_editor())

    # Then: partitioned, rows in their months, keys claimed, the sequence past the old ids.
    with connection.cursor() as cursor:
        cursor.execute("SELECT relkind FROM pg_class WHERE oid = 'segments_event'::regclass")
        assert cursor.fetchone()[0] == "p"
        cursor.execute("SELECT count(*) FROM segments_event_key WHERE event_id LIKE 'old-%%'")
        assert cursor.fetchone()[0] == 5
    assert partition_of("old-0") == "segments_event_p202401"
    assert partition_of("old-4") == "segments_event_p202403"  # 2024-01-10 + 80 days
    new = EventFactory(customer=customer, occurred_at=at(2024, 2))
    assert new.pk > max(Event.objects.exclude(pk=new.pk).values_list("pk", flat=True))
    with pytest.raises(IntegrityError), transaction.atomic():
        EventFactory(event_id="old-1", customer=customer, occurred_at=at(2024, 5))
