"""Reading work on a real streaming replica (pg_basebackup, started on loopback by
scripts/services.sh): reads inside ``replica_reads`` go to it while it is fresh, and to the
primary when it lags beyond the bound, cannot be reached, or inside a transaction."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import psycopg
import pytest
from django.db import connection, connections, transaction

from config import replica
from config.replica import replica_reads
from segments.models import Customer
from tests.config.test_settings import ROOT
from tests.pgservers import conninfo, replica_port

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True, serialized_rollback=True)]
PREFIX = "replica-test-"


def _attach(port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replica as the ``replica`` alias, registered as a dynamically created connection
    (the test case forbids aliases of connections.settings it was not told about); with
    DATABASE_REPLICA_URL the settings declare it (tests/config/test_settings.py)."""
    from django.db.backends.postgresql.base import DatabaseWrapper

    connections[replica.REPLICA] = DatabaseWrapper({**connection.settings_dict, "PORT": port}, replica.REPLICA)
    monkeypatch.setattr(replica, "replica_configured", lambda: True)
    replica.replica_status_forget()


def _detach() -> None:
    with contextlib.suppress(Exception):
        connections[replica.REPLICA].close()
    with contextlib.suppress(AttributeError):
        del connections[replica.REPLICA]
    replica.replica_status_forget()


@pytest.fixture
def standby(settings, monkeypatch) -> Iterator[psycopg.Connection]:  # type: ignore[no-untyped-def]
    """The replica attached as the ``replica`` alias; yields a superuser session on it."""
    port = replica_port(connection.settings_dict)
    settings.DATABASE_REPLICA_CHECK_SECONDS = 0  # measure the lag at every read
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 3600
    _attach(port, monkeypatch)
    session = psycopg.connect(**conninfo(connection.settings_dict, port=port), autocommit=True)
    try:
        yield session
    finally:
        session.execute("SELECT pg_wal_replay_resume()")
        session.close()
        _detach()


def _replayed(session: psycopg.Connection, external_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if session.execute("SELECT 1 FROM segments_customer WHERE external_id = %s", [external_id]).fetchone():
            return
        time.sleep(0.05)
    raise AssertionError(f"{external_id} not replayed on the replica after {timeout}s")


def _ours() -> set[str]:
    return set(Customer.objects.filter(external_id__startswith=PREFIX).values_list("external_id", flat=True))


def _first_replayed_then_second_not(standby: psycopg.Connection) -> None:
    Customer.objects.create(external_id=PREFIX + "first")
    _replayed(standby, PREFIX + "first")
    standby.execute("SELECT pg_wal_replay_pause()")
    Customer.objects.create(external_id=PREFIX + "second")


def test_router__reads_inside_replica_reads__served_by_the_replica(standby) -> None:  # type: ignore[no-untyped-def]
    # Given a customer replayed on the replica, then replay paused and a second customer added
    _first_replayed_then_second_not(standby)
    # When reading work reads (the bound is an hour: the replica counts as fresh)
    with replica_reads():
        routed = Customer.objects.all().db
        seen = _ours()
    # Then it read the replica, which has not replayed the second; other reads, the primary
    assert routed == "replica"
    assert seen == {PREFIX + "first"}
    assert _ours() == {PREFIX + "first", PREFIX + "second"}
    assert replica.replica_status().usable


def test_reading_transaction__raw_sql_inside_replica_reads__one_snapshot_on_the_replica(standby) -> None:  # type: ignore[no-untyped-def]
    # Given the replica one customer behind the primary
    _first_replayed_then_second_not(standby)
    # When a report's raw statements and ORM reads run in one reading transaction
    with replica_reads(), replica.reading_transaction() as alias:
        with replica.reading_connection().cursor() as cursor:
            cursor.execute("SELECT count(*) FROM segments_customer WHERE external_id LIKE %s", [PREFIX + "%"])
            raw = cursor.fetchone()[0]
        orm = _ours()
        in_recovery = replica.reading_connection().cursor().execute("SELECT pg_is_in_recovery()").fetchone()[0]
    # Then all of them ran on the replica
    assert (alias, raw, orm, in_recovery) == ("replica", 1, {PREFIX + "first"}, True)
    # and outside replica_reads raw SQL reads the primary
    assert replica.reading_connection().alias == "default"


def test_router__replica_lags_beyond_the_bound__reads_the_primary(standby, settings) -> None:  # type: ignore[no-untyped-def]
    _first_replayed_then_second_not(standby)
    time.sleep(1.2)
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 1
    with replica_reads():
        routed = Customer.objects.all().db
        seen = _ours()
    status = replica.replica_status()
    assert (routed, seen) == ("default", {PREFIX + "first", PREFIX + "second"})
    assert not status.usable and status.lag_seconds is not None and status.lag_seconds > 1
    # Once replay resumes and catches up, reading work goes back to the replica
    standby.execute("SELECT pg_wal_replay_resume()")
    _replayed(standby, PREFIX + "second")
    with replica_reads():
        assert Customer.objects.all().db == "replica"


def test_router__inside_a_transaction__reads_the_primary(standby) -> None:  # type: ignore[no-untyped-def]
    with transaction.atomic(), replica_reads():
        Customer.objects.create(external_id=PREFIX + "mine")
        assert Customer.objects.all().db == "default"
        assert _ours() == {PREFIX + "mine"}


def test_router__replica_unreachable__reads_the_primary(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    settings.DATABASE_REPLICA_CHECK_SECONDS = 0
    _attach(1, monkeypatch)  # nothing listens on port 1
    try:
        Customer.objects.create(external_id=PREFIX + "only")
        with replica_reads():
            assert _ours() == {PREFIX + "only"}
            assert Customer.objects.all().db == "default"
        assert replica.replica_status().reason.startswith("unreachable")
    finally:
        _detach()


def test_replica_status__unreachable__tried_again_only_after_the_retry_interval(settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A try against a silent replica costs the connect timeout: not on every report.
    settings.DATABASE_REPLICA_CHECK_SECONDS = 0
    settings.DATABASE_REPLICA_RETRY_SECONDS = 30
    _attach(1, monkeypatch)  # nothing listens on port 1
    tries: list[int] = []
    measure = replica.replica_lag_seconds

    def counted() -> float:
        tries.append(1)
        return measure()

    monkeypatch.setattr(replica, "replica_lag_seconds", counted)
    try:
        assert [replica.replica_status().usable for _ in range(3)] == [False, False, False]
        assert len(tries) == 1
        settings.DATABASE_REPLICA_RETRY_SECONDS = 0  # the interval has passed
        assert not replica.replica_status().usable
        assert len(tries) == 2
    finally:
        _detach()


def test_router__no_replica_configured__reads_the_primary() -> None:
    with replica_reads():
        assert Customer.objects.all().db == "default"


def test_replica_status__replica_accepts_but_never_answers__primary_read_within_seconds() -> None:
    # Given a "replica" that accepts TCP connections (the kernel completes the handshake)
    # but never says a word, as a hung server or a half-dead host does
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    d = connection.settings_dict
    primary = f"postgres://{d['USER']}:{d['PASSWORD']}@{d['HOST']}:{d['PORT']}/{d['NAME']}"
    code = (
        "import time; from config import replica; t = time.monotonic();"
        "s = replica.replica_status(refresh=True);"
        "print('RESULT', s.usable, s.reason.split(':')[0], round(time.monotonic() - t))"
    )
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    env = {
        **clean,
        "DATABASE_URL": primary,
        "DATABASE_REPLICA_URL": f"postgres://growth:growth@127.0.0.1:{silent.getsockname()[1]}/growth",
    }
    try:
        # When the lag is checked in a process configured by settings.py
        result = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c", code],
            cwd=ROOT, env=env, capture_output=True, text=True, timeout=40,
        )  # fmt: skip
    finally:
        silent.close()
    # Then it gives up within the connect timeout (3 s) and says the replica is unreachable
    assert result.returncode == 0, result.stderr
    line = next(line for line in result.stdout.splitlines() if line.startswith("RESULT"))
    _, usable, reason, seconds = line.split()
    assert (usable, reason) == ("False", "unreachable")
    assert int(seconds) <= 10


class _FreezableProxy:
    """A TCP relay on loopback to the replica that can stop relaying while keeping every
    socket open: what a frozen server or a partitioned network looks like to a client."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.frozen = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                while self.frozen.is_set():
                    time.sleep(0.05)  # hold the bytes: nobody answers
                sink.sendall(data)

    def close(self) -> None:
        self.frozen.clear()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


def test_replica_status__replica_freezes_with_a_pooled_connection_open__primary_read_within_seconds(
    settings, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    from django.db.backends.postgresql.base import DatabaseWrapper

    settings.DATABASE_REPLICA_CHECK_SECONDS = 0
    settings.DATABASE_REPLICA_MAX_LAG_SECONDS = 3600
    proxy = _FreezableProxy(replica_port(connection.settings_dict))
    options = {**connection.settings_dict.get("OPTIONS", {}), "connect_timeout": 2}
    replica_settings = {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": proxy.port, "OPTIONS": options}
    connections[replica.REPLICA] = DatabaseWrapper(replica_settings, replica.REPLICA)
    monkeypatch.setattr(replica, "replica_configured", lambda: True)
    replica.replica_status_forget()
    # Unfreezes the relay after 20 s, so a check that waits on it fails the test, not hangs it.
    watchdog = threading.Timer(20, proxy.frozen.clear)
    try:
        # Given a read served by the replica, whose connection stays open for the next ones
        with replica_reads():
            assert Customer.objects.all().db == replica.REPLICA
            list(Customer.objects.all()[:1])
        # When the replica stops answering, and the next reading work checks it
        proxy.frozen.set()
        watchdog.start()
        started = time.monotonic()
        status = replica.replica_status()
        elapsed = time.monotonic() - started
        # Then the check gives up within seconds and reading work goes to the primary
        assert elapsed < 10, f"the lag check waited {elapsed:.0f} s on the frozen replica"
        assert not status.usable and status.reason.startswith("unreachable")
        with replica_reads():
            assert Customer.objects.all().db == "default"
    finally:
        watchdog.cancel()
        proxy.close()
        _detach()
