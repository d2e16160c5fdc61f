"""The benchmarks find their servers from the environment scripts/bench.sh exports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from bench.common import ROOT

pytestmark = pytest.mark.pure


def _servers(**env: str) -> str:
    code = "from bench import common as c; print(c.PG_HOST, c.PG_PORT, c.PG_USER, c.PG_PASSWORD, c.REDIS_PORT)"
    clean = {"PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**clean, **env}, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_bench_servers__database_url_set__its_server_and_credentials() -> None:
    out = _servers(
        DATABASE_URL="postgres://bencher:s%40cret@127.0.0.2:55123/growth",
        CELERY_BROKER_URL="redis://127.0.0.1:56123/0",
        PG_PORT="1",
        REDIS_PORT="2",
    )
    assert out == "127.0.0.2 55123 bencher s@cret 56123"


def test_bench_servers__only_ports_set__loopback_on_those_ports() -> None:
    assert _servers(PG_PORT="55124", REDIS_PORT="56124") == "127.0.0.1 55124 growth growth 56124"


def test_bench_servers__nothing_set__services_script_defaults() -> None:
    assert _servers() == "127.0.0.1 54329 growth growth 63799"
