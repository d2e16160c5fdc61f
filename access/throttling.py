"""Per-API-key (and per customer token: customer + signing key) rate limiting through the shared cache.

A fixed-window counter: ``cache.add(key, 0)`` then ``cache.incr(key)``. With Redis both
are atomic, so the limit holds across every web process; DRF's default throttle does a
read-modify-write of a timestamp list and lets concurrent requests slip through.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from access.models import ApiKey
from access.tokens import CustomerToken


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
        if key is None:
            return True
        now = time.time()
        window_start = int(now // self.duration) * self.duration
        self._window_end = window_start + self.duration
        self.now = now
        window_key = f"{key}:{window_start}"
        # The entry outlives its window by a little so a slow clock never resurrects it.
        cache.add(window_key, 0, timeout=self.duration + 5)
        try:
            count = cache.incr(window_key)
        except ValueError:  # expired between add and incr
            cache.add(window_key, 1, timeout=self.duration + 5)
            count = 1
        return count <= self.num_requests

    def wait(self) -> float:
        return max(1.0, self._window_end - self.now)
