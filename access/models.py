"""API keys for API clients.

A key looks like ``gk_<prefix>_<secret>``. Only a SHA-256 hash of the whole key is
stored; the prefix (shown in the admin and in logs) identifies it. The full key is shown
once, at creation. A high-entropy random secret needs no slow password hash: SHA-256 of
256 random bits cannot be brute-forced, and a constant-time lookup by hash keeps each
request cheap.
"""

from __future__ import annotations

import hashlib
import secrets

from django.conf import settings
from django.db import models
from django.utils import timezone


class Scope(models.TextChoices):
    CUSTOMERS_WRITE = "customers:write", "Write customers and memberships"
    EVENTS_WRITE = "events:write", "Post events and conversions"
    SEGMENTS_READ = "segments:read", "Read a customer's segments and layers"
    OFFERS_READ = "offers:read", "Read a customer's assignments and offers"
    COUPONS_REDEEM = "coupons:redeem", "Redeem coupon codes"
    REPORTS_READ = "reports:read", "Read experiment reports"


KEY_PREFIX = "gk"


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    name = models.CharField(max_length=100, help_text="Who uses this key, e.g. 'checkout service'.")
    prefix = models.CharField(max_length=12, unique=True, editable=False)
    hashed_key = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list, help_text="Scopes this key grants.")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.name} ({KEY_PREFIX}_{self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    @staticmethod
    def generate() -> tuple[str, str, str]:
        """Return (raw key, prefix, hash). The raw key is never stored."""
        prefix = secrets.token_hex(4)
        raw = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
        return raw, prefix, hash_key(raw)
