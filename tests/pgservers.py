"""PgBouncer and a streaming replica in front of / next to the test PostgreSQL server,
started on loopback by scripts/services.sh (PG pass only)."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import psycopg

from bench.common import ROOT


def _script_env(settings_db: dict[str, Any]) -> dict[str, str]:
    # The server the tests use; GROWTH_SERVICES_DIR (exported by scripts/test.sh) says where
    # scripts/services.sh keeps its files.
    # PGBOUNCER_ROUND_ROBIN: idle server connections lent in turn, not the most recent one
    # first (production's default), so a test leaning on session state fails at once.
    return {**os.environ, "PG_PORT": str(int(settings_db["PORT"] or 5432)), "PGBOUNCER_ROUND_ROBIN": "1"}


def _services(command: str, settings_db: dict[str, Any]) -> str:
    done = subprocess.run(
        [str(ROOT / "scripts" / "services.sh"), command],
        cwd=ROOT,
        env=_script_env(settings_db),
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode != 0:
        raise RuntimeError(f"services.sh {command} failed: {done.stdout}\n{done.stderr}")
    return done.stdout.strip()


def pgbouncer_port(settings_db: dict[str, Any]) -> int:
    """PgBouncer (transaction pooling), started if it is not running; its port."""
    _services("start-pgbouncer", settings_db)
    url = _services("pgbouncer-url", settings_db)
    return int(url.rsplit(":", 1)[1].split("/")[0])


def replica_port(settings_db: dict[str, Any]) -> int:
    """The streaming replica, cloned and started if it is not running; its port."""
    _services("start-replica", settings_db)
    url = _services("replica-url", settings_db)
    return int(url.rsplit(":", 1)[1].split("/")[0])


def conninfo(settings_db: dict[str, Any], *, port: int) -> dict[str, Any]:
    return {
        "host": settings_db["HOST"] or "127.0.0.1",
        "port": port,
        "user": settings_db["USER"],
        "password": settings_db["PASSWORD"],
        "dbname": settings_db["NAME"],
    }


def warm_pool(settings_db: dict[str, Any], *, port: int, size: int = 3) -> None:
    """Open ``size`` concurrent transactions through PgBouncer, so that it holds that many
    server connections and hands them out in turn (server_round_robin)."""
    connections = [psycopg.connect(**conninfo(settings_db, port=port)) for _ in range(size)]
    try:
        for conn in connections:
            conn.execute("SELECT 1")  # each holds a server connection until its commit
    finally:
        for conn in connections:
            with contextlib.suppress(Exception):
                conn.commit()
                conn.close()


@contextlib.contextmanager
def default_connection_on(port: int) -> Iterator[None]:
    """Django's default connection reconnects to ``port`` for the block (same database)."""
    from django.db import connection

    previous = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = port
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict["PORT"] = previous


def pgbouncer_release(settings_db: dict[str, Any], *, port: int) -> None:
    """Close PgBouncer's server connections to the test database (its admin console's
    KILL, then RESUME), so that the test runner can drop the database afterwards."""
    admin = psycopg.connect(**{**conninfo(settings_db, port=port), "dbname": "pgbouncer"}, autocommit=True)
    try:
        admin.execute(f"KILL {settings_db['NAME']}")
        admin.execute(f"RESUME {settings_db['NAME']}")
    finally:
        admin.close()
