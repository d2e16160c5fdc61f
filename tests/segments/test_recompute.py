"""Materialization: history, transitions, tier tags, failures, MECE, the guard, entry points."""

from __future__ import annotations

import datetime as dt
import json
import logging
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext, override_settings
from django_celery_beat.models import PeriodicTask

from segments.dimensions import expiry, kind_module
from segments.models import (
    Customer,
    CustomerLayer,
    CustomerTag,
    Dimension,
    LayerHistory,
    Membership,
    RecomputeRun,
    Segment,
    SegmentMembership,
    Tag,
)
from segments.services import materialize
from segments.services.recompute import dimension_recompute, recompute_all, segment_recompute
from segments.services.segments import segment_create
from segments.tasks import recompute_dimension, recompute_segment
from tests.segments.conftest import AS_OF, DAY, World, dimension_state, layers_of, recompute

pytestmark = pytest.mark.django_db

T1 = AS_OF + 10 * DAY


@pytest.fixture
def members(world: World) -> dict[str, Any]:
    """Expiry windows move as time passes: 'a' expires in 5 days, 'b' in 95, 'c' never had one."""
    a, b, c = world.customer("a"), world.customer("b"), world.customer("c")
    world.membership(a, expires_in=5)
    world.membership(b, expires_in=95)
    return {"a": a, "b": b, "c": c}


@pytest.mark.parametrize("portable", [False, True], ids=["fast-path", "portable-path"])
def test_recompute__second_run__history_closed_and_opened_for_movers_only(members: dict, portable: bool) -> None:
    # On PostgreSQL the fast path is MERGE; the portable path (UPDATE … FROM + INSERT … SELECT)
    # is what SQLite always runs.
    recompute("expiry", portable=portable)
    assert layers_of("expiry") == {"a": "expiring_soon", "b": "valid", "c": "none"}
    outcome = recompute("expiry", as_of=T1, portable=portable)  # a expired 5 days ago, b now expires within 85 days
    assert layers_of("expiry") == {"a": "expired_recently", "b": "expiring_soon", "c": "none"}
    assert outcome.changed == 2
    rows = LayerHistory.objects.filter(dimension__key="expiry").order_by("customer__external_id", "entered_at")
    assert [(h.customer.external_id, h.layer.key, h.entered_at, h.left_at) for h in rows] == [
        ("a", "expiring_soon", AS_OF, T1),
        ("a", "expired_recently", T1, None),
        ("b", "valid", AS_OF, T1),
        ("b", "expiring_soon", T1, None),
        ("c", "none", AS_OF, None),
    ]
    a_layer = CustomerLayer.objects.get(customer=members["a"], dimension__key="expiry")
    assert a_layer.since == T1
    c_layer = CustomerLayer.objects.get(customer=members["c"], dimension__key="expiry")
    assert c_layer.since == AS_OF  # unchanged row: not rewritten


def test_recompute__transitions_and_sizes__recorded_on_the_run(members: dict) -> None:
    first = recompute("expiry")
    assert sorted(first.details["transitions"]) == sorted(
        [[None, "expiring_soon", 1], [None, "valid", 1], [None, "none", 1]]
    )
    second = recompute("expiry", as_of=T1)
    assert sorted(second.details["transitions"], key=str) == sorted(
        [["expiring_soon", "expired_recently", 1], ["valid", "expiring_soon", 1], ["none", "none", 1]], key=str
    )
    assert second.details["layer_sizes"] == {"expired_recently": 1, "expiring_soon": 1, "valid": 0, "none": 1}
    run = RecomputeRun.objects.get(pk=second.run_id)
    assert (run.status, run.customers, run.changed, run.mece_ok) == ("succeeded", 3, 2, True)
    assert run.duration_ms is not None and run.finished_at is not None and run.as_of == T1
    assert Dimension.objects.get(key="expiry").computed_at is not None


def test_recompute__tier_tags__written_back_and_swapped(members: dict) -> None:
    recompute("expiry")
    tags = dict(CustomerTag.objects.filter(tag__family="tier").values_list("customer__external_id", "tag__code"))
    assert tags == {"a": "expiry.expiring_soon", "b": "expiry.valid", "c": "expiry.none"}
    recompute("expiry", as_of=T1)
    tags = sorted(CustomerTag.objects.filter(tag__family="tier").values_list("customer__external_id", "tag__code"))
    assert tags == [("a", "expiry.expired_recently"), ("b", "expiry.expiring_soon"), ("c", "expiry.none")]


@pytest.mark.parametrize("held", [False, True], ids=["no-tier-tag-held", "a-manual-tier-tag-held"])
def test_recompute__first_run__one_insert_per_table_and_no_diff(members: dict, growth_user: Any, held: bool) -> None:
    # A first run has no previous rows: no join against the memberships, no MERGE, and no
    # speculative insertion (ON CONFLICT) unless someone already holds one of the tier tags.
    if held:
        tag = Tag.objects.get(code="expiry.valid")
        CustomerTag.objects.create(customer=members["b"], tag=tag, source="manual", assigned_by=growth_user)
    with CaptureQueriesContext(connection) as queries:
        recompute("expiry")
    statements = [q["sql"] for q in queries.captured_queries]
    writes = [s for s in statements if s.lstrip().startswith(("INSERT", "MERGE", "UPDATE", "DELETE"))]
    bulk = [s for s in writes if any(t in s for t in ("customerlayer", "layerhistory", "customertag"))]
    # (on PostgreSQL memberships and history go into the dimension's own new partition)
    own = f"_d{Dimension.objects.get(key='expiry').pk}" if connection.vendor == "postgresql" else ""
    assert [s.split("(")[0].split()[-1] for s in bulk] == [
        f"segments_customerlayer{own}",
        f"segments_layerhistory{own}",
        "segments_customertag",
    ]
    assert ["ON CONFLICT" in s for s in bulk] == [False, False, held]
    assert not any("JOIN segments_customerlayer" in s for s in statements)
    assert layers_of("expiry") == {"a": "expiring_soon", "b": "valid", "c": "none"}
    rows = sorted(CustomerTag.objects.filter(tag__family="tier").values_list("customer__external_id", "source"))
    assert rows == [("a", "computed"), ("b", "manual" if held else "computed"), ("c", "computed")]


@pytest.mark.parametrize("portable", [False, True], ids=["fast-path", "portable-path"])
@pytest.mark.parametrize("manual", [False, True], ids=["no-manual-row", "a-mover-holds-its-new-tier-tag-by-hand"])
def test_recompute__nightly_tier_tags__plain_insert_repeated_skipping_held_rows_only_when_a_manual_row_refuses_it(
    members: dict, growth_user: Any, manual: bool, portable: bool
) -> None:
    # Given a first run, and (for the second case) 'b' holding by hand the tier tag of the
    # layer they move into at T1 ('valid' -> 'expiring_soon')
    recompute("expiry", portable=portable)
    if manual:
        CustomerTag.objects.create(
            customer=members["b"], tag=Tag.objects.get(code="expiry.expiring_soon"), source="manual",
            assigned_by=growth_user,
        )  # fmt: skip
    # When the next night runs
    with CaptureQueriesContext(connection) as queries:
        outcome = recompute("expiry", as_of=T1, portable=portable)
    # Then the movers' tier tags went in with one plain INSERT, repeated with ON CONFLICT only
    # when the manual row refused it, and the manual row stayed as it was
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("INSERT INTO segments_customertag")]
    assert ["ON CONFLICT" in sql for sql in inserts] == ([False, True] if manual else [False])
    assert outcome.changed == 2
    rows = sorted(
        CustomerTag.objects.filter(tag__family="tier").values_list(
            "customer__external_id", "tag__code", "source", "assigned_by"
        )
    )
    assert rows == [
        ("a", "expiry.expired_recently", "computed", None),
        ("b", "expiry.expiring_soon", "manual" if manual else "computed", growth_user.pk if manual else None),
        ("c", "expiry.none", "computed", None),
    ]


def test_recompute__first_run_from_a_stage_in_any_order__rows_written_in_customer_order(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a kind whose statement hands its rows out in no useful order (RFM's come in
    # hash-join order; here: customers descending) and customers in every expiry layer
    for i in range(12):
        customer = world.customer(f"o{i:02d}")
        if i % 3:
            world.membership(customer, expires_in=5 if i % 3 == 1 else 95)
    real_select = expiry.stage_select

    def descending_select(ctx: Any) -> tuple[str, list]:
        sql, params = real_select(ctx)
        return f"SELECT * FROM ({sql}) x ORDER BY x.customer_id DESC", params

    monkeypatch.setattr(expiry, "stage_select", descending_select)

    # When the dimension is computed for the first time
    recompute("expiry")

    # Then each of the three tables received its rows in customer order (ids are handed out
    # in insertion order), which is what keeps their (customer, …) indexes growing at the
    # right edge instead of splitting random pages
    for model in (CustomerLayer, LayerHistory, CustomerTag):
        customers = list(model.objects.order_by("pk").values_list("customer_id", flat=True))
        assert len(customers) == 12 and customers == sorted(customers), model.__name__


@pytest.mark.parametrize("portable", [False, True], ids=["fast-path", "portable-path"])
def test_recompute__nightly_movers_from_a_stage_in_any_order__rows_written_in_customer_order(
    world: World, monkeypatch: pytest.MonkeyPatch, portable: bool
) -> None:
    # Given customers placed by a first run, 8 of whom move at T1 (their membership expires
    # in 5 days), and a kind whose statement hands its rows out in descending customer order
    for i in range(16):
        world.membership(world.customer(f"m{i:02d}"), expires_in=5 if i % 2 else 300)
    recompute("expiry")
    real_select = expiry.stage_select

    def descending_select(ctx: Any) -> tuple[str, list]:
        sql, params = real_select(ctx)
        return f"SELECT * FROM ({sql}) x ORDER BY x.customer_id DESC", params

    monkeypatch.setattr(expiry, "stage_select", descending_select)

    # When the next run writes the movers
    outcome = recompute("expiry", as_of=T1, portable=portable)

    # Then their new history rows and tier tags went in in customer order, as the first run's
    assert outcome.changed == 8
    opened = LayerHistory.objects.filter(entered_at=T1).order_by("pk").values_list("customer_id", flat=True)
    tagged = CustomerTag.objects.filter(tag__code="expiry.expired_recently").order_by("pk")
    for customers in (list(opened), list(tagged.values_list("customer_id", flat=True))):
        assert len(customers) == 8 and customers == sorted(customers)


@pytest.mark.parametrize("fault", [None, "duplicate", "missing"])
def test_recompute__first_run__no_precheck_pass_and_a_violation_still_caught(
    members: dict, monkeypatch: pytest.MonkeyPatch, fault: str | None
) -> None:
    # A first run does not aggregate the stage before writing (the unique index of the
    # insert refuses a customer placed twice, the count after it finds one placed nowhere);
    # only a violation pays the pre-check, to say what was wrong.
    real_select = expiry.stage_select

    def faulty_select(ctx: Any) -> tuple[str, list]:
        sql, params = real_select(ctx)
        if fault == "duplicate":
            return (
                f"SELECT * FROM ({sql}) x UNION ALL SELECT * FROM ({sql}) y WHERE y.customer_id = %s",
                [*params, *params, members["a"].pk],
            )
        if fault == "missing":
            return f"SELECT * FROM ({sql}) x WHERE x.customer_id <> %s", [*params, members["c"].pk]
        return sql, params

    monkeypatch.setattr(expiry, "stage_select", faulty_select)
    with CaptureQueriesContext(connection) as queries:
        outcome = dimension_recompute(dimension_id=Dimension.objects.get(key="expiry").pk, as_of=AS_OF)
    prechecks = [q["sql"] for q in queries.captured_queries if "COUNT(*) AS n" in q["sql"]]
    if fault is None:
        assert outcome.status == "succeeded" and prechecks == []
        assert layers_of("expiry") == {"a": "expiring_soon", "b": "valid", "c": "none"}
        return
    assert outcome.status == "failed" and "MECE violation" in outcome.error
    mece = RecomputeRun.objects.get(pk=outcome.run_id).details["mece"]
    assert mece["ok"] is False and mece["duplicates" if fault == "duplicate" else "unplaced"] == 1
    assert not CustomerLayer.objects.filter(dimension__key="expiry").exists()
    assert not LayerHistory.objects.filter(dimension__key="expiry").exists()
    assert not CustomerTag.objects.filter(tag__family="tier").exists()


@pytest.mark.postgres
@pytest.mark.parametrize("fault", [None, "twice-and-one-lost", "twice-and-a-new-one-missing"])
def test_recompute__nightly_postgres__check_folded_into_the_diff_and_a_violation_still_caught(
    members: dict, world: World, monkeypatch: pytest.MonkeyPatch, fault: str | None
) -> None:
    # Given a first run, then (for the new-customer case) a customer who has no row yet
    recompute("expiry")
    before = layers_of("expiry")
    new = world.customer("d") if fault == "twice-and-a-new-one-missing" else None
    real_select = expiry.stage_select

    def faulty_select(ctx: Any) -> tuple[str, list]:
        # As many rows as customers, but 'a' twice and someone missing: only the diff's lost
        # row (an existing customer) or the count after the write (a new one) can tell.
        sql, params = real_select(ctx)
        if fault is None:
            return sql, params
        missing = members["c"].pk if new is None else new.pk
        return (
            f"SELECT * FROM ({sql}) x WHERE x.customer_id <> %s UNION ALL SELECT * FROM ({sql}) y "
            "WHERE y.customer_id = %s",
            [*params, missing, *params, members["a"].pk],
        )

    monkeypatch.setattr(expiry, "stage_select", faulty_select)
    # When the next night runs
    with CaptureQueriesContext(connection) as queries:
        outcome = dimension_recompute(dimension_id=Dimension.objects.get(key="expiry").pk, as_of=T1)
    prechecks = [q["sql"] for q in queries.captured_queries if "COUNT(*) AS n" in q["sql"]]
    if fault is None:
        # Then no aggregation of the stage by customer ran, and the movers moved
        assert outcome.status == "succeeded" and outcome.changed == 2 and prechecks == []
        return
    # Then the violation is reported as one, and nothing changed
    assert outcome.status == "failed" and "MECE violation" in outcome.error
    mece = RecomputeRun.objects.get(pk=outcome.run_id).details["mece"]
    assert (mece["ok"], mece["duplicates"], mece["unplaced"]) == (False, 1, 1)
    assert {k: v for k, v in layers_of("expiry").items() if k != "d"} == before
    assert not CustomerLayer.objects.filter(customer__external_id="d").exists()


def _rfm_state() -> dict[str, Any]:
    """Everything a nightly RFM run writes, by customer."""
    return dimension_state("rfm", tag__code__startswith="rfm.")


@pytest.mark.postgres
@pytest.mark.parametrize("fault", [None, "twice-and-one-lost"])
def test_recompute__nightly_postgres_rfm__current_rows_read_once_by_the_stage_same_result_as_portable(
    world: World, growth_user: Any, monkeypatch: pytest.MonkeyPatch, fault: str | None
) -> None:
    # Given RFM placed for eight customers (one with no order, one holding a tier tag by hand),
    # then orders that change the scores and a new customer
    customers = {name: world.customer(name) for name in "abcdefgh"}
    for i, name in enumerate("abcdefg"):
        world.orders(customers[name], [5 + i * 7] * (1 + i % 3), str(20 + 15 * i))
    recompute("rfm")
    CustomerTag.objects.create(
        customer=customers["h"], tag=Tag.objects.get(code="rfm.general_value"), source="manual", assigned_by=growth_user
    )
    world.orders(customers["g"], [-3, -4, -5], "400")
    world.orders(customers["a"], [-2], "5")
    world.orders(world.customer("n"), [-1], "50")
    before = _rfm_state()
    if fault == "twice-and-one-lost":
        rfm = Dimension.objects.get(key="rfm")
        real_select = kind_module(rfm.kind).stage_select

        def faulty_select(ctx: Any) -> tuple[str, list]:
            # As many rows as customers, but 'a' twice and 'c' (placed) missing
            sql, params = real_select(ctx)
            return (
                f"SELECT * FROM ({sql}) x WHERE x.customer_id <> %s UNION ALL SELECT * FROM ({sql}) y "
                "WHERE y.customer_id = %s",
                [*params, customers["c"].pk, *params, customers["a"].pk],
            )

        monkeypatch.setattr(kind_module(rfm.kind), "stage_select", faulty_select)

    # When the next night runs on the fast path, and again from the same state on the portable one
    savepoint = transaction.savepoint()
    with CaptureQueriesContext(connection) as queries:
        fast = dimension_recompute(dimension_id=Dimension.objects.get(key="rfm").pk, as_of=T1)
    fast_state = _rfm_state()
    with connection.cursor() as cursor:
        cursor.execute("SHOW enable_hashjoin")
        hash_joins_after = cursor.fetchone()[0]
    transaction.savepoint_rollback(savepoint)
    portable = dimension_recompute(dimension_id=Dimension.objects.get(key="rfm").pk, as_of=T1, portable=True)

    # Then the current rows were read once, by the stage statement (merged in customer order,
    # hash joins off for it alone), the changes filtered from the stage, no pre-check aggregated it
    sqls = [q["sql"] for q in queries.captured_queries]
    stage = next(i for i, sql in enumerate(sqls) if "CREATE TEMP TABLE segments_stage_layer" in sql)
    assert "segments_customerlayer" in sqls[stage] and "ORDER BY c.id" in sqls[stage]
    assert sqls[stage - 1] == "SET LOCAL enable_hashjoin = off" and hash_joins_after == "on"
    changes = [sql for sql in sqls if "CREATE TEMP TABLE segments_stage_changes" in sql]
    assert len(changes) == 1 and all("segments_customerlayer" not in sql for sql in changes)
    prechecks = [sql for sql in sqls if "COUNT(*) AS n" in sql]
    if fault:
        # and the violation is reported as one (only the lost row can tell), nothing changed
        assert fast.status == portable.status == "failed" and "MECE violation" in fast.error
        mece = RecomputeRun.objects.get(pk=portable.run_id).details["mece"]
        assert (mece["ok"], mece["duplicates"], mece["unplaced"]) == (False, 1, 1)
        assert fast_state == before == _rfm_state() and len(prechecks) == 1
        return
    # and both paths wrote the same rows, transitions and statistics; the manual tag stayed
    assert fast.status == portable.status == "succeeded" and prechecks == []
    assert fast.changed == portable.changed >= 3
    assert fast_state == _rfm_state() != before
    assert ("h", "rfm.general_value", "manual") in fast_state["tags"]
    for key in ("transitions", "layer_sizes", "stats", "mece"):
        assert fast.details[key] == portable.details[key]


@pytest.mark.postgres
def test_recompute__nightly_postgres_kind_not_in_customer_order__stage_alone_then_a_full_join_diff(
    members: dict,
) -> None:
    # Given expiry (no IN_CUSTOMER_ORDER: its stage statement runs in parallel, a FULL JOIN in it would not)
    recompute("expiry")
    # When the next night runs
    with CaptureQueriesContext(connection) as queries:
        outcome = recompute("expiry", as_of=T1)
    # Then the stage is the kind's statement alone, the diff joins the current rows, hash joins stay on
    sqls = [q["sql"] for q in queries.captured_queries]
    stage = next(sql for sql in sqls if "CREATE TEMP TABLE segments_stage_layer" in sql)
    changes = next(sql for sql in sqls if "CREATE TEMP TABLE segments_stage_changes" in sql)
    assert "segments_customerlayer" not in stage and "FULL JOIN" in changes and "segments_customerlayer" in changes
    assert "SET LOCAL enable_hashjoin = off" not in sqls[: sqls.index(stage)]
    assert outcome.changed == 2 and layers_of("expiry") == {"a": "expired_recently", "b": "expiring_soon", "c": "none"}


def test_recompute__first_run_with_history_left_open__closes_it_and_places_everyone(members: dict) -> None:
    # Memberships removed behind the engine's back (raw SQL) leave open history rows: the
    # next run is a first run again, and must not open a second row for the same customer.
    recompute("expiry")
    CustomerLayer.objects.filter(dimension__key="expiry").delete()
    outcome = recompute("expiry", as_of=T1)
    assert outcome.changed == 3
    assert layers_of("expiry") == {"a": "expired_recently", "b": "expiring_soon", "c": "none"}
    rows = LayerHistory.objects.filter(dimension__key="expiry", customer=members["c"]).order_by("entered_at")
    assert [(h.layer.key, h.entered_at, h.left_at) for h in rows] == [("none", AS_OF, T1), ("none", T1, None)]


@pytest.mark.postgres
def test_recompute__first_run_of_a_new_dimension__reads_no_other_dimensions_history(world: World) -> None:
    # Given an install whose history already holds other dimensions' rows
    for i in range(50):
        world.membership(world.customer(f"h{i:02d}"), expires_in=5 if i % 2 else 300)
    recompute("expiry")
    recompute("expiry", as_of=T1)
    hist = LayerHistory._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {hist}")
    before = _rows_read([hist])

    # When a dimension is computed for the first time
    recompute("lifecycle")

    # Then its history rows are opened without reading the 75 rows of the other dimension
    # (whether one of its own was left open is the insert's unique index to say; on PostgreSQL
    # its own new partition is read by its index builds alone)
    own = (f"{hist}_d{Dimension.objects.get(key='lifecycle').pk}",)
    assert _rows_read([hist], skip=own).get(hist, 0) - before.get(hist, 0) == 0
    assert LayerHistory.objects.filter(dimension__key="lifecycle", left_at__isnull=True).count() == 50


def _rows_read(tables: list[str], *, skip: tuple[str, ...] = ()) -> dict[str, int]:
    """Rows this transaction has read from each table (sequential and index fetches), its
    partitions' included (memberships and history are partitioned by dimension) but those in
    ``skip``."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COALESCE(p.relname, s.relname), SUM(s.seq_tup_read + COALESCE(s.idx_tup_fetch, 0)) "
            "FROM pg_stat_xact_user_tables s LEFT JOIN pg_inherits i ON i.inhrelid = s.relid "
            "LEFT JOIN pg_class p ON p.oid = i.inhparent WHERE COALESCE(p.relname, s.relname) = ANY(%s) "
            "AND NOT s.relname = ANY(%s) GROUP BY 1",
            [tables, list(skip)],
        )
        return dict(cursor.fetchall())


@pytest.mark.postgres
def test_recompute__nightly_with_few_movers__writes_probe_indexes_not_the_whole_dimension(db: None) -> None:
    # Given 30,000 customers placed, 1% of whom will move (their membership expires): the
    # proportions of a real night, where the planner would rather hash every row
    Customer.objects.bulk_create(
        Customer(external_id=f"c{i}", signed_up_at=AS_OF - 400 * DAY, attributes={}) for i in range(30000)
    )
    movers = Customer.objects.order_by("pk")[:300]
    Membership.objects.bulk_create(
        Membership(customer=c, plan="plus", level="", started_at=AS_OF - 400 * DAY, expires_at=AS_OF + 5 * DAY)
        for c in movers
    )
    recompute("expiry")
    tables = [LayerHistory._meta.db_table, CustomerTag._meta.db_table]
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {', '.join(tables)}, {CustomerLayer._meta.db_table}")
    before = _rows_read(tables)

    # When the next night moves them
    outcome = recompute("expiry", as_of=T1)

    # Then closing their history rows and swapping their tier tags read their rows, not 30,000
    assert outcome.changed == 300
    after = _rows_read(tables)
    assert {t: after.get(t, 0) - before.get(t, 0) for t in tables} == {t: 300 for t in tables}


def test_recompute__full_tags__reconciles_a_removed_tier_tag(members: dict) -> None:
    recompute("expiry")
    CustomerTag.objects.filter(customer=members["c"]).delete()
    recompute("expiry")
    assert not CustomerTag.objects.filter(customer=members["c"]).exists()  # nobody moved: untouched
    recompute("expiry", full_tags=True)
    assert CustomerTag.objects.filter(customer=members["c"], tag__code="expiry.none").exists()


def test_recompute__failure_mid_write__previous_memberships_intact_and_next_run_retries(
    members: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    recompute("expiry")
    before = layers_of("expiry")

    def broken_history(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(materialize, "_write_history", broken_history)
    dimension = Dimension.objects.get(key="expiry")
    with caplog.at_level(logging.ERROR):
        outcome = dimension_recompute(dimension_id=dimension.pk, as_of=T1)
    assert outcome.status == "failed"
    assert "disk on fire" in outcome.error and "disk on fire" in caplog.text
    run = RecomputeRun.objects.get(pk=outcome.run_id)
    assert run.status == "failed" and "RuntimeError: disk on fire" in run.error
    assert layers_of("expiry") == before  # the layer writes before the failure were rolled back
    assert LayerHistory.objects.filter(dimension=dimension).count() == 3
    monkeypatch.undo()
    retry = dimension_recompute(dimension_id=dimension.pk, as_of=T1)
    assert retry.status == "succeeded" and retry.changed == 2


@pytest.mark.parametrize("fault", ["duplicate", "missing"])
def test_recompute__mece_violation__run_failed_logged_and_layers_kept(
    members: dict, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    recompute("expiry")
    before = layers_of("expiry")
    real_select = expiry.stage_select

    def faulty_select(ctx: Any) -> tuple[str, list]:
        sql, params = real_select(ctx)
        if fault == "duplicate":  # a customer placed twice
            return (
                f"SELECT * FROM ({sql}) x UNION ALL SELECT * FROM ({sql}) y WHERE y.customer_id = %s",
                [*params, *params, members["a"].pk],
            )
        return f"SELECT * FROM ({sql}) x WHERE x.customer_id <> %s", [*params, members["c"].pk]  # placed nowhere

    monkeypatch.setattr(expiry, "stage_select", faulty_select)
    with caplog.at_level(logging.ERROR):
        outcome = dimension_recompute(dimension_id=Dimension.objects.get(key="expiry").pk, as_of=T1)
    assert outcome.status == "failed" and "MECE violation" in outcome.error
    assert "MECE violation" in caplog.text
    run = RecomputeRun.objects.get(pk=outcome.run_id)
    assert run.mece_ok is False
    assert run.details["mece"]["ok"] is False
    assert run.details["mece"]["duplicates" if fault == "duplicate" else "unplaced"] >= 1
    assert layers_of("expiry") == before


def test_mece__every_builtin_dimension__every_customer_in_exactly_one_layer(world: World) -> None:
    for i in range(12):
        customer = world.customer(f"m{i}", signed_up=i * 20)
        if i % 2:
            world.orders(customer, [i, i + 30], str(50 * i))
        if i % 3:
            world.membership(customer, expires_in=i * 30 - 150)
    outcomes = recompute_all(as_of=AS_OF)
    assert {o.status for o in outcomes} == {"succeeded"}
    for dimension in Dimension.objects.all():
        run = RecomputeRun.objects.filter(target=f"dimension:{dimension.key}").latest("started_at")
        assert run.details["mece"] == {
            "ok": True,
            "customers": 12,
            "placed": 12,
            "rows": 12,
            "duplicates": 0,
            "unplaced": 0,
            "foreign": 0,
        }
        assert CustomerLayer.objects.filter(dimension=dimension).count() == 12
        assert sum(run.details["layer_sizes"].values()) == 12


# --- the guard -----------------------------------------------------------------------------


def _running(target: str, started: dt.datetime) -> RecomputeRun:
    return RecomputeRun.objects.create(target=target, status="running", started_at=started)


@pytest.mark.skipif("connection.vendor == 'postgresql'", reason="SQLite guard: the running row")
def test_guard__fresh_running_row_on_sqlite__second_trigger_is_a_noop(members: dict) -> None:
    from django.utils import timezone

    running = _running("dimension:expiry", timezone.now())
    outcome = dimension_recompute(dimension_id=Dimension.objects.get(key="expiry").pk, as_of=AS_OF)
    assert outcome.status == "skipped"
    assert RecomputeRun.objects.filter(target="dimension:expiry").count() == 1
    running.refresh_from_db()
    assert running.status == "running"
    assert not CustomerLayer.objects.exists()


@override_settings(GROWTH={"RECOMPUTE_STALE_AFTER_SECONDS": 60})
def test_guard__stale_running_row_of_a_dead_process__abandoned_and_recomputed(members: dict) -> None:
    # SQLite: older than the stale timeout. PostgreSQL: nobody holds the target's lock.
    from django.utils import timezone

    stale = _running("dimension:expiry", timezone.now() - dt.timedelta(minutes=5))
    outcome = dimension_recompute(dimension_id=Dimension.objects.get(key="expiry").pk, as_of=AS_OF)
    assert outcome.status == "succeeded"
    stale.refresh_from_db()
    assert stale.status == "failed" and stale.error.startswith("abandoned")


def test_recompute__as_of_before_last_run__refused_history_kept(members: dict) -> None:
    recompute("expiry", as_of=T1)
    outcome = dimension_recompute(dimension_id=Dimension.objects.get(key="expiry").pk, as_of=AS_OF)
    assert outcome.status == "failed" and "before the last recompute" in outcome.error
    assert not LayerHistory.objects.filter(left_at__isnull=False).exists()


def test_recompute__unknown_dimension__skipped_not_crashed(db: None) -> None:
    assert dimension_recompute(dimension_id=999_999).status == "skipped"
    assert segment_recompute(segment_id=999_999).status == "skipped"


# --- segments -------------------------------------------------------------------------------


def test_segment_recompute__members_added_and_removed__since_kept(world: World) -> None:
    a, b = world.customer("a"), world.customer("b")
    world.orders(a, [1, 2], "20")
    world.order(b, 50)
    segment = segment_create(
        key="recent",
        name="Ordered in 30 days",
        rule={"event": "order", "agg": "count", "window": {"last_days": 30}, "op": "gte", "value": 1},
    )
    first = segment_recompute(segment_id=segment.pk, as_of=AS_OF)
    assert first.status == "succeeded" and first.details["size"] == 1
    world.order(b, -5)  # b orders after AS_OF; 30 days later a's orders (1–2 days before AS_OF) are out
    second = segment_recompute(segment_id=segment.pk, as_of=AS_OF + 30 * DAY)
    assert second.details == {**second.details, "size": 1, "added": 1, "removed": 1}
    member = SegmentMembership.objects.get(segment=segment)
    assert (member.customer.external_id, member.since) == ("b", AS_OF + 30 * DAY)
    segment.refresh_from_db()
    assert segment.size == 1 and segment.computed_at is not None


# --- entry points ----------------------------------------------------------------------------


def test_command__one_dimension__prints_json_and_recomputes(members: dict) -> None:
    out = StringIO()
    call_command("recompute_segments", "--dimension", "expiry", "--as-of", AS_OF.isoformat(), stdout=out)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(line["target"], line["status"]) for line in lines] == [("dimension:expiry", "succeeded")]
    assert RecomputeRun.objects.get().trigger == "command"
    assert layers_of("expiry")["a"] == "expiring_soon"


def test_command__unknown_key__refused(db: None) -> None:
    with pytest.raises(CommandError, match="nope"):
        call_command("recompute_segments", "--segment", "nope")


def test_command__no_option__every_active_dimension_then_segments(members: dict) -> None:
    segment_create(key="s", name="S", rule={"membership": {}, "agg": "active"})
    Dimension.objects.filter(key="journey").update(is_active=False)
    out = StringIO()
    call_command("recompute_segments", stdout=out)
    targets = [json.loads(line)["target"] for line in out.getvalue().splitlines()]
    assert targets == ["dimension:expiry", "dimension:level", "dimension:lifecycle", "dimension:rfm", "segment:s"]


def test_tasks__run_twice__second_changes_nothing(members: dict) -> None:
    dimension = Dimension.objects.get(key="expiry")
    first = recompute_dimension.apply(args=[dimension.pk]).get()
    second = recompute_dimension.apply(args=[dimension.pk]).get()
    assert (first["status"], first["changed"]) == ("succeeded", 3)
    assert (second["status"], second["changed"]) == ("succeeded", 0)
    segment = segment_create(key="s", name="S", rule={"membership": {}, "agg": "count", "op": "gte", "value": 1})
    assert recompute_segment.apply(args=[segment.pk]).get()["customers"] == 2
    assert recompute_segment.apply(args=[999_999]).get()["status"] == "skipped"


def test_schedule__data_migration__nightly_recompute_task_exists(db: None) -> None:
    task = PeriodicTask.objects.get(name="segments: nightly recompute")
    assert task.task == "segments.tasks.recompute_all" and task.enabled
    assert (task.crontab.hour, task.crontab.minute) == ("2", "30")
    from celery import current_app

    import segments.tasks  # noqa: F401 - registers the tasks

    assert "segments.tasks.recompute_all" in current_app.tasks


def test_builtin_dimensions__data_migration__documented_layer_keys_and_tier_tags(db: None) -> None:
    from segments.models import Layer

    keys = {f"{d}:{k}" for d, k in Layer.objects.values_list("dimension__key", "key")}
    assert {
        "rfm:important_value",
        "rfm:general_win_back",
        "rfm:no_purchase",
        "lifecycle:churn_warning",
        "lifecycle:churned",
        "lifecycle:visitor",
        "journey:vip",
        "level:basic",
        "expiry:expiring_soon",
        "expiry:expired_recently",
        "expiry:valid",
        "expiry:none",
    } <= keys
    assert len([k for k in keys if k.startswith("rfm:")]) == 9
    assert not Layer.objects.filter(tag__isnull=True).exists()
    assert set(Layer.objects.values_list("tag__family", flat=True)) == {"tier"}
    assert Segment.objects.count() == 0
    assert connection.vendor in ("sqlite", "postgresql")
