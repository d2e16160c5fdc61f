"""The concurrency guard with real concurrent transactions and a killed process (PostgreSQL).

A recompute is held mid-way by a third connection that locks the CustomerLayer table, so
the timing is deterministic: no sleeps racing the code under test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.db import connection, connections

from segments.models import Customer, CustomerLayer, Dimension, RecomputeRun
from segments.services.recompute import LOCK_NAMESPACE, dimension_recompute
from tests.segments.conftest import AS_OF, World

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]

ROOT = Path(__file__).resolve().parents[2]


def _dsn() -> str:
    s = connection.settings_dict
    return f"host={s['HOST']} port={s['PORT']} dbname={s['NAME']} user={s['USER']} password={s['PASSWORD']}"


@pytest.fixture
def table_lock() -> Iterator[Callable[[], None]]:
    """Hold ACCESS EXCLUSIVE on CustomerLayer from another connection until released."""
    blocker = psycopg.connect(_dsn())
    blocker.execute("BEGIN")
    blocker.execute(f"LOCK TABLE {CustomerLayer._meta.db_table} IN ACCESS EXCLUSIVE MODE")
    released = False

    def release() -> None:
        nonlocal released
        if not released:
            blocker.rollback()
            released = True

    yield release
    release()
    blocker.close()


def _wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def expiry_world(db: None) -> Dimension:
    world = World()
    for name, expires_in in (("a", 5), ("b", 95), ("c", None)):
        customer = world.customer(name)
        if expires_in is not None:
            world.membership(customer, expires_in=expires_in)
    return Dimension.objects.get(key="expiry")


def test_guard__two_concurrent_recomputes__second_is_a_noop_and_first_sees_one_snapshot(
    expiry_world: Dimension, table_lock: Callable[[], None]
) -> None:
    results: dict[str, Any] = {}

    def first() -> None:
        try:
            results["first"] = dimension_recompute(dimension_id=expiry_world.pk, as_of=AS_OF)
        finally:
            connections.close_all()

    thread = threading.Thread(target=first)
    thread.start()
    # The first recompute has committed its running row, taken its snapshot and is now
    # waiting for the table lock (waiting on the running row alone raced the snapshot).
    _wait_for(lambda: RecomputeRun.objects.filter(target="dimension:expiry", status="running").exists())
    _wait_for(lambda: _waiting_for_lock_on(CustomerLayer._meta.db_table))
    second = dimension_recompute(dimension_id=expiry_world.pk, as_of=AS_OF)
    assert second.status == "skipped"
    assert RecomputeRun.objects.filter(target="dimension:expiry").count() == 1
    # A customer arriving mid-run is not in the run's snapshot (REPEATABLE READ; counted right
    # after the stage): no false MECE alarm.
    Customer.objects.create(external_id="late")
    table_lock()
    thread.join(timeout=30)
    first_outcome = results["first"]
    assert first_outcome.status == "succeeded", first_outcome.error
    assert first_outcome.customers == 3 and first_outcome.details["mece"]["ok"] is True
    assert list(RecomputeRun.objects.values_list("status", flat=True)) == ["succeeded"]
    # The next run places the late customer.
    assert dimension_recompute(dimension_id=expiry_world.pk, as_of=AS_OF).customers == 4


def _waiting_for_lock_on(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE c.relname = %s AND NOT l.granted",
            [table],
        )
        return cursor.fetchone()[0] > 0


def _advisory_lock_held(dimension: Dimension) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND objid = %s AND granted",
            [LOCK_NAMESPACE["dimension"], dimension.pk],
        )
        return cursor.fetchone()[0] > 0


def test_guard__process_killed_mid_recompute__next_trigger_marks_it_abandoned_and_runs(
    expiry_world: Dimension, table_lock: Callable[[], None]
) -> None:
    s = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}",
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "LOG_LEVEL": "WARNING",
    }
    process = subprocess.Popen(
        [sys.executable, "manage.py", "recompute_segments", "--dimension", "expiry"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for(lambda: RecomputeRun.objects.filter(status="running").exists())
        assert _advisory_lock_held(expiry_world)
        skipped = dimension_recompute(dimension_id=expiry_world.pk, as_of=AS_OF)
        assert skipped.status == "skipped"  # the live process still holds the lock
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    table_lock()
    # Its server session ends when it next talks to the dead client; then the lock is free.
    _wait_for(lambda: not _advisory_lock_held(expiry_world))
    outcome = dimension_recompute(dimension_id=expiry_world.pk, as_of=AS_OF)
    assert outcome.status == "succeeded"
    killed = RecomputeRun.objects.exclude(pk=outcome.run_id).get()
    assert killed.status == "failed" and killed.error.startswith("abandoned")
    assert CustomerLayer.objects.filter(dimension=expiry_world).count() == 3


def test_task__real_celery_worker__recompute_runs_once_per_trigger(expiry_world: Dimension) -> None:
    """The task through the real broker and a real worker process (this run's Redis DB)."""
    from segments.tasks import recompute_dimension

    s = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}",
        "DJANGO_SETTINGS_MODULE": "config.settings_test",
        "DATABASE_CONN_MAX_AGE": "0",
        "LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [str(Path(sys.executable).with_name("celery")), "-A", "config", "worker", "--pool", "solo",
         "--hostname", f"segments-test-{os.getpid()}@%h", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "--loglevel", "WARNING"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        recompute_dimension.delay(expiry_world.pk)
        _wait_for(lambda: RecomputeRun.objects.filter(status="succeeded").exists(), timeout=60)
        recompute_dimension.delay(expiry_world.pk)
        _wait_for(lambda: RecomputeRun.objects.filter(status="succeeded").count() == 2, timeout=60)
    finally:
        worker.terminate()
        worker.wait(timeout=20)
    runs = list(RecomputeRun.objects.order_by("started_at").values_list("trigger", "changed"))
    assert runs == [("admin", 3), ("admin", 0)]
    assert CustomerLayer.objects.filter(dimension=expiry_world).count() == 3
