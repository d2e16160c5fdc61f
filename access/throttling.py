"""Per-API-key (and per customer token: customer + signing key) rate limiting through the shared cache.

A fixed-window counter: ``cache.add(key, 0)`` then ``cache.incr(key)``. With Redis both
are atomic (``SET NX`` and ``INCRBY``), so the limit holds across every web process;
DRF's default throttle does a read-modify-write of a timestamp list and lets concurrent
requests slip through.

The embedded default, Django's file cache, implements ``add`` and ``incr`` as a read then
a write, so concurrent requests (threads or processes) read the same count and the limit
leaked (67 of 120 concurrent requests allowed at 30/min). There the two steps run under an
exclusive ``flock`` on a file in the cache directory, which serializes them across threads
and processes of one machine, the only place a file cache is shared. No maintained library
does this: django-ratelimit and DRF both rely on the cache's own atomicity.

When the cache cannot be reached the throttle fails open: the request is served and a
warning is logged, because an outage of the cache must not take the whole API down with
it. After a failure the process stops asking the cache for ``RETRY_AFTER`` seconds (a
dead Redis costs each request a connection attempt and the client's retries otherwise)
and logs at most one warning per such period.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from django.core.cache import DEFAULT_CACHE_ALIAS, caches
from django.core.cache.backends.filebased import FileBasedCache
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from access.models import ApiKey
from access.tokens import CustomerToken

logger = logging.getLogger(__name__)
RETRY_AFTER = 5.0
_unavailable_until = 0.0  # monotonic time; per process


@contextlib.contextmanager
def _exclusive(backend: Any) -> Iterator[None]:
    """Hold an exclusive lock across processes while a non-atomic cache counts."""
    if not isinstance(backend, FileBasedCache):
        yield  # Redis, LocMem: add and incr are atomic already
        return
    directory = backend._dir
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, "throttle.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def window_count(key: str, timeout: int) -> int:
    """Count one hit in the window ``key`` (created with ``timeout``) and return the count."""
    cache = caches[DEFAULT_CACHE_ALIAS]
    with _exclusive(cache):
        cache.add(key, 0, timeout=timeout)
        try:
            return cache.incr(key)
        except ValueError:  # expired between add and incr
            cache.add(key, 1, timeout=timeout)
            return 1


def _mark_unavailable(exc: Exception) -> None:
    global _unavailable_until
    _unavailable_until = time.monotonic() + RETRY_AFTER
    logger.warning(
        "API throttle: the cache is unavailable (%s: %s); requests are served without rate limiting for the next %g s",
        type(exc).__name__,
        exc,
        RETRY_AFTER,
    )


class ApiKeyRateThrottle(SimpleRateThrottle):
    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        principal = request.auth
        if isinstance(principal, CustomerToken):
            # One budget per customer and signing key: a token acts for one customer only.
            digest = hashlib.sha256(principal.customer_id.encode()).hexdigest()[:32]
            return f"throttle:ct:{principal.kid}:{digest}"
        if not isinstance(principal, ApiKey):
            return None  # unauthenticated requests are refused before they cost anything
        return f"throttle:{principal.prefix}"

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        key = self.get_cache_key(request, view)
        if key is None or time.monotonic() < _unavailable_until:
            return True
        now = time.time()
        window_start = int(now // self.duration) * self.duration
        self._window_end = window_start + self.duration
        self.now = now
        try:
            # The entry outlives its window by a little so a slow clock never resurrects it.
            count = window_count(f"{key}:{window_start}", self.duration + 5)
        except Exception as exc:  # noqa: BLE001 - any cache failure (connection, timeout, disk) fails open
            _mark_unavailable(exc)
            return True
        return count <= self.num_requests

    def wait(self) -> float:
        return max(1.0, self._window_end - self.now)
