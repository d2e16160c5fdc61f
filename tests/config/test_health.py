from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_healthz__process_up__200(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz__database_and_broker_up__200(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {"database": "ok", "broker": "ok"}


def _readyz_in_subprocess(**env: str) -> dict:
    code = (
        "import django, json, time; django.setup();"
        "from django.test import Client;"
        "t = time.monotonic(); r = Client().get('/readyz');"
        "print(json.dumps({'status': r.status_code, 'body': r.json(), 'elapsed': time.monotonic() - t}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings_test", **env},
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_readyz__broker_down__503_within_5s() -> None:
    result = _readyz_in_subprocess(CELERY_BROKER_URL="redis://127.0.0.1:1/0")
    assert result["status"] == 503
    assert result["body"]["checks"]["broker"] != "ok"
    assert result["elapsed"] < 5


def test_readyz__database_down__503_within_5s() -> None:
    result = _readyz_in_subprocess(DATABASE_URL="postgres://nobody:x@127.0.0.1:1/nothing")
    assert result["status"] == 503
    assert result["body"]["checks"]["database"] != "ok"
    assert result["elapsed"] < 5
