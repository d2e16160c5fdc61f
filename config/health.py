"""Liveness and readiness probes, and the worker heartbeat.

``/healthz`` answers as long as the process serves requests. ``/readyz`` checks that the
database and the Celery broker are reachable, each within a short timeout, so a probe
gets a non-2xx answer well within 5 seconds when either is down; and that a Celery worker
has been seen recently (``worker``): every worker records a heartbeat in the shared cache
every ``WORKER_HEARTBEAT_SECONDS`` (config.celery's ``WorkerHeartbeat`` step), and none for
``WORKER_STALE_SECONDS`` means nothing queued runs (launches, sends, recomputes). Then
``/readyz`` answers 503 ``degraded`` with the reason (200 ``degraded`` when
``READYZ_REQUIRE_WORKER`` is off, for orchestrators that must not take web processes out
of rotation for a worker's sake) and the admin shows a banner.

Both probes are answered by ``HealthProbeMiddleware``, first in the middleware chain,
before anything reads the Host header: an orchestrator probes ``127.0.0.1:8000``, which is
not (and should not be) in ``ALLOWED_HOSTS``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.functional import SimpleLazyObject
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

CHECK_TIMEOUT_S = 2.0
_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="readyz")


def _check_database() -> None:
    from django.db import connections

    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    finally:
        # This runs in a pool thread: close its connection so it is not leaked.
        connections.close_all()


def _check_broker() -> None:
    from config.celery import app

    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=CHECK_TIMEOUT_S)


HEARTBEAT_KEY = "growth:worker-heartbeat"


def worker_heartbeat_record(*, hostname: str, at: float | None = None) -> None:
    """Called by every worker every ``WORKER_HEARTBEAT_SECONDS``; the newest wins."""
    cache.set(HEARTBEAT_KEY, {"at": time.time() if at is None else at, "hostname": hostname}, timeout=None)


@dataclass(frozen=True)
class WorkerStatus:
    ok: bool
    reason: str
    last_seen_seconds: float | None = None
    hostname: str | None = None


def worker_status(*, now: float | None = None) -> WorkerStatus:
    beat = cache.get(HEARTBEAT_KEY)
    stale_after = settings.WORKER_STALE_SECONDS
    if not beat:
        return WorkerStatus(False, "no Celery worker has been seen: nothing queued will run")
    age = max(0.0, (time.time() if now is None else now) - beat["at"])
    if age > stale_after:
        return WorkerStatus(
            False,
            f"no Celery worker seen for {age:.0f} s (last: {beat['hostname']}; stale after {stale_after} s): "
            "nothing queued will run",
            age,
            beat["hostname"],
        )
    return WorkerStatus(True, "ok", age, beat["hostname"])


def _check_worker() -> str:
    status = worker_status()
    return "ok" if status.ok else status.reason


def _run(check) -> str:  # type: ignore[no-untyped-def]
    """ "ok", or why not: a check fails by raising, or by returning its reason."""
    future = _pool.submit(check)
    try:
        reason = future.result(timeout=CHECK_TIMEOUT_S)
    except FutureTimeout:
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; say which
        return f"error: {type(exc).__name__}"
    return reason or "ok"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    started = time.monotonic()
    checks = {"database": _run(_check_database), "broker": _run(_check_broker), "worker": _run(_check_worker)}
    if checks["database"] != "ok" or checks["broker"] != "ok":
        status, code = "unavailable", 503
    elif checks["worker"] != "ok":
        status, code = "degraded", 503 if settings.READYZ_REQUIRE_WORKER else 200
    else:
        status, code = "ready", 200
    body = {"status": status, "checks": checks, "elapsed_ms": round((time.monotonic() - started) * 1000)}
    return JsonResponse(body, status=code)


PROBES: dict[str, Callable[[HttpRequest], HttpResponse]] = {"/healthz": healthz, "/readyz": readyz}


class HealthProbeMiddleware:
    """Answers ``/healthz`` and ``/readyz`` whatever the Host header says.

    First in ``MIDDLEWARE``: CommonMiddleware (and SecurityMiddleware's redirect) call
    ``request.get_host()``, which raises DisallowedHost (a 400 and a logged traceback) for a
    probe sent to ``127.0.0.1:8000`` when ``DJANGO_ALLOWED_HOSTS`` names the public host. The
    probes read no session, cookie or host-dependent state, so skipping the rest is safe."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        probe = PROBES.get(request.path_info)
        if probe is not None:
            return probe(request)
        return self.get_response(request)


def worker_status_context(request: HttpRequest) -> dict[str, Any]:
    """Template context for the admin's banner; read only when a template uses it."""
    return {"worker_status": SimpleLazyObject(_worker_status_or_error)}


def _worker_status_or_error() -> WorkerStatus:
    try:
        return worker_status()
    except Exception as exc:  # noqa: BLE001 - a broken cache must not break every admin page
        return WorkerStatus(False, f"cannot read the worker heartbeat ({type(exc).__name__})")
