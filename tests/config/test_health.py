from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from config.health import worker_heartbeat_record

ROOT = Path(__file__).resolve().parents[2]


def test_healthz__process_up__200(client) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/healthz").json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz__database_broker_up_and_worker_seen__200(client) -> None:  # type: ignore[no-untyped-def]
    worker_heartbeat_record(hostname="celery@test")
    response = client.get("/readyz")
    assert response.status_code == 200, response.json()
    assert response.json()["checks"] == {"database": "ok", "broker": "ok", "worker": "ok"}
    assert response.json()["status"] == "ready"


@pytest.mark.django_db
def test_readyz__worker_heartbeat_stale__503_degraded_with_reason(client) -> None:  # type: ignore[no-untyped-def]
    # Given: the last heartbeat is older than WORKER_STALE_SECONDS (60)
    worker_heartbeat_record(hostname="celery@gone", at=time.time() - 300)
    # When
    response = client.get("/readyz")
    # Then
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["database"] == "ok" and body["checks"]["broker"] == "ok"
    assert re.match(r"no Celery worker seen for 30\d s", body["checks"]["worker"])
    assert "celery@gone" in body["checks"]["worker"]


@pytest.mark.django_db
def test_readyz__no_heartbeat_ever__503_degraded(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "degraded"
    assert "no Celery worker has been seen" in response.json()["checks"]["worker"]


@pytest.mark.django_db
def test_readyz__stale_worker_and_require_worker_off__200_degraded(client, settings) -> None:  # type: ignore[no-untyped-def]
    settings.READYZ_REQUIRE_WORKER = False
    worker_heartbeat_record(hostname="celery@gone", at=time.time() - 300)
    response = client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"


@pytest.mark.django_db
def test_admin_banner__worker_heartbeat_stale__every_admin_page_says_so(client, growth_user) -> None:  # type: ignore[no-untyped-def]
    client.force_login(growth_user)
    worker_heartbeat_record(hostname="celery@gone", at=time.time() - 300)
    stale = client.get("/admin/").content.decode()
    assert 'id="worker-banner"' in stale and re.search(r"No Celery worker seen for 30\d s", stale)

    worker_heartbeat_record(hostname="celery@here")
    assert 'id="worker-banner"' not in client.get("/admin/").content.decode()


@pytest.mark.django_db
def test_readyz__production_settings_probe_on_loopback_host__answered_not_400(client, settings) -> None:  # type: ignore[no-untyped-def]
    # Given: production settings whose ALLOWED_HOSTS names only the public host (as
    # documented), with the SSL redirect on; docker-compose probes 127.0.0.1:8000 over HTTP
    settings.DEBUG = False
    settings.ALLOWED_HOSTS = ["growth.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    worker_heartbeat_record(hostname="celery@test")
    # When
    ready = client.get("/readyz", HTTP_HOST="127.0.0.1:8000")
    health = client.get("/healthz", HTTP_HOST="127.0.0.1:8000")
    # Then: answered, not 400 DisallowedHost (nor a redirect to https)
    assert ready.status_code == 200, ready.content
    assert ready.json()["status"] == "ready"
    assert health.status_code == 200
    # and every other path still refuses the unknown host
    assert client.get("/admin/login/", HTTP_HOST="127.0.0.1:8000").status_code == 400


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
