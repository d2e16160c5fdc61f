"""Tag rule recomputes against real concurrent transactions (PostgreSQL): the guard, and a
manual tag committed while a recompute is starting, which must win without failing the run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection, connections, transaction

from segments.models import CustomerTag, RecomputeRun, TagHistory, TagRule
from segments.services.recompute import tag_rule_recompute
from segments.services.tags import customer_tag_add, tag_rule_create
from tests.segments.conftest import AS_OF, World

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

BUYERS = {"event": "order", "agg": "count", "op": "gte", "value": 1}


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def _waiting_for_lock_on(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = %s AND NOT l.granted",
            [table],
        )
        return cursor.fetchone()[0] > 0


@pytest.fixture
def buyers_rule(db: None) -> TagRule:
    world = World()
    for name in ("a", "b", "c"):
        world.order(world.customer(name), 3)
    world.customer("none")
    return tag_rule_create(code="BUY", name="Bought", family="consumption", rule=BUYERS)


def test_tag_rule_recompute__manual_tag_committing_meanwhile__run_waits_sees_it_and_keeps_it(
    buyers_rule: TagRule, growth_user: Any
) -> None:
    from segments.models import Customer

    customer = Customer.objects.get(external_id="a")
    added, release_manual = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def manual() -> None:
        # Staff set the tag by hand; their transaction is still open when the recompute starts.
        try:
            with transaction.atomic():
                customer_tag_add(customer=customer, tag=buyers_rule.tag, by=growth_user, at=AS_OF)
                added.set()
                release_manual.wait(timeout=30)
        finally:
            connections.close_all()

    def recompute() -> None:
        try:
            results["outcome"] = tag_rule_recompute(tag_rule_id=buyers_rule.pk, as_of=AS_OF)
        finally:
            connections.close_all()

    first = threading.Thread(target=manual)
    first.start()
    assert added.wait(timeout=20)
    second = threading.Thread(target=recompute)
    second.start()
    # The recompute waits for the manual transaction before taking its snapshot ...
    _wait_for(lambda: _waiting_for_lock_on(CustomerTag._meta.db_table))
    release_manual.set()
    first.join(timeout=30)
    second.join(timeout=30)
    # ... so it sees the manual row: no collision, no computed copy, the run succeeds.
    outcome = results["outcome"]
    assert outcome.status == "succeeded", outcome.error
    rows = dict(CustomerTag.objects.filter(tag=buyers_rule.tag).values_list("customer__external_id", "source"))
    assert rows == {"a": "manual", "b": "computed", "c": "computed"}
    assert TagHistory.objects.filter(customer=customer, tag=buyers_rule.tag).get().source == "manual"


def test_tag_rule_recompute__second_trigger_while_running__skipped(buyers_rule: TagRule) -> None:
    results: dict[str, Any] = {}
    blocker_ready, release = threading.Event(), threading.Event()

    def blocker() -> None:
        # Holds the customer-tag lock, so the first recompute stops right after its guard.
        try:
            with transaction.atomic():
                with connection.cursor() as cursor:
                    cursor.execute(f"LOCK TABLE {CustomerTag._meta.db_table} IN SHARE ROW EXCLUSIVE MODE")
                blocker_ready.set()
                release.wait(timeout=30)
        finally:
            connections.close_all()

    def first() -> None:
        try:
            results["first"] = tag_rule_recompute(tag_rule_id=buyers_rule.pk, as_of=AS_OF)
        finally:
            connections.close_all()

    hold = threading.Thread(target=blocker)
    hold.start()
    assert blocker_ready.wait(timeout=20)
    run = threading.Thread(target=first)
    run.start()
    _wait_for(lambda: RecomputeRun.objects.filter(target="tag:BUY", status="running").exists())
    second = tag_rule_recompute(tag_rule_id=buyers_rule.pk, as_of=AS_OF)
    assert second.status == "skipped"
    release.set()
    hold.join(timeout=30)
    run.join(timeout=30)
    assert results["first"].status == "succeeded", results["first"].error
    assert list(RecomputeRun.objects.filter(target="tag:BUY").values_list("status", flat=True)) == ["succeeded"]
    assert CustomerTag.objects.filter(tag=buyers_rule.tag).count() == 3
