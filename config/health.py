"""Liveness and readiness probes.

``/healthz`` answers as long as the process serves requests. ``/readyz`` checks that the
database and the Celery broker are reachable, each within a short timeout, so a probe
gets a non-2xx answer well within 5 seconds when either is down.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

from django.db import connection
from django.http import HttpRequest, JsonResponse
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


def _run(check) -> str:  # type: ignore[no-untyped-def]
    future = _pool.submit(check)
    try:
        future.result(timeout=CHECK_TIMEOUT_S)
    except FutureTimeout:
        return "timeout"
    except Exception as exc:  # noqa: BLE001 - any failure means "not ready"; say which
        return f"error: {type(exc).__name__}"
    return "ok"


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


@never_cache
@require_GET
def readyz(request: HttpRequest) -> JsonResponse:
    started = time.monotonic()
    checks = {"database": _run(_check_database), "broker": _run(_check_broker)}
    ready = all(v == "ok" for v in checks.values())
    body = {
        "status": "ready" if ready else "unavailable",
        "checks": checks,
        "elapsed_ms": round((time.monotonic() - started) * 1000),
    }
    return JsonResponse(body, status=200 if ready else 503)
