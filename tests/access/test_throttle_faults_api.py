"""The per-key throttle under faults and concurrency: the API keeps answering when its
cache is down (fail open, logged), and the embedded file cache counts exactly when
processes hit one key at once."""

from __future__ import annotations

import logging
import multiprocessing
import socket
import threading
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings as django_settings
from django.core.cache import caches

from access.models import ApiKey
from access.throttling import ApiKeyRateThrottle

RATE = 30


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once the socket is closed


@pytest.fixture
def file_cache(settings: Any, tmp_path: Any) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.filebased.FileBasedCache", "LOCATION": str(tmp_path)}
    }


def _throttle() -> ApiKeyRateThrottle:
    throttle = ApiKeyRateThrottle()
    throttle.rate = f"{RATE}/min"
    throttle.num_requests, throttle.duration = throttle.parse_rate(throttle.rate)
    return throttle


def _hits(count: int) -> int:
    """``count`` requests of one key through the throttle; how many it allowed."""
    request = SimpleNamespace(auth=ApiKey(prefix="same-key"))
    return sum(_throttle().allow_request(request, None) for _ in range(count))  # type: ignore[arg-type]


def _hits_in_child(count: int, results: Any) -> None:
    caches["default"].close()
    results.put(_hits(count))


@pytest.mark.django_db
@pytest.mark.parametrize("cache_url", ["redis", "file"])
def test_api_request__cache_unreachable__served_and_warning_logged(
    api_client_factory,
    settings: Any,
    tmp_path: Any,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    cache_url: str,
) -> None:  # type: ignore[no-untyped-def]
    client = api_client_factory("segments:read")
    if cache_url == "redis":
        backend = {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{_closed_port()}/1",
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    else:  # a cache directory that cannot be created: a file stands where it should be
        (tmp_path / "blocked").write_text("")
        backend = {
            "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
            "LOCATION": str(tmp_path / "blocked" / "cache"),
        }
    settings.CACHES = {"default": backend}
    monkeypatch.setattr("access.throttling._unavailable_until", 0.0)  # restored afterwards
    with caplog.at_level(logging.WARNING, logger="access.throttling"):
        responses = [client.get("/api/v1/customers/nobody/segments") for _ in range(3)]
    assert [r.status_code for r in responses] == [404, 404, 404]  # the view answered, in JSON
    assert all(r["Content-Type"] == "application/json" for r in responses)
    warnings = [r for r in caplog.records if r.name == "access.throttling"]
    assert len(warnings) == 1 and "without rate limiting" in warnings[0].getMessage()


@pytest.mark.skipif(
    not django_settings.CELERY_BROKER_URL.startswith("filesystem://"),
    reason="forks the test process: kombu's after-fork cleanup of the inherited Redis pool blocks the children "
    "on the parent's sockets; the file cache is the embedded default's and is tested in the SQLite pass",
)
def test_throttle__file_cache_4_processes_at_once__exactly_the_rate_allowed(file_cache: None) -> None:
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    children = [context.Process(target=_hits_in_child, args=(30, results)) for _ in range(4)]
    for child in children:
        child.start()
    allowed = [results.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=60)
    assert sum(allowed) == RATE, allowed


def test_throttle__file_cache_8_threads_at_once__exactly_the_rate_allowed(file_cache: None) -> None:
    allowed: list[int] = []
    barrier = threading.Barrier(8)

    def run() -> None:
        barrier.wait(timeout=30)
        allowed.append(_hits(15))

    threads = [threading.Thread(target=run) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sum(allowed) == RATE, allowed
