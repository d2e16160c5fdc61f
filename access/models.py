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


# --- Customer tokens: signing keys for client-side (in-app) access ---------------------


class SigningAlgorithm(models.TextChoices):
    """The algorithms a signing key may use: one per key, pinned when verifying, so a token
    can never pick its own (no ``none``, no RS256 public key reused as an HMAC secret)."""

    HS256 = "HS256", "HS256 (shared secret, generated here)"
    RS256 = "RS256", "RS256 (RSA public key, 2048 bits or more)"
    ES256 = "ES256", "ES256 (EC P-256 public key)"


# What a customer token may ever be granted: the routes an app calls for its own customer.
# ``events:write`` reaches only the exposure route with a token (see ``customer_token_field``
# on the views); event ingestion and every other route answer 403 to a token.
CLIENT_SCOPES = (Scope.OFFERS_READ, Scope.EVENTS_WRITE)


class CustomerSigningKeyQuerySet(models.QuerySet["CustomerSigningKey"]):
    def active(self) -> CustomerSigningKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class CustomerSigningKey(models.Model):
    """A key the company's backend signs customer tokens (JWTs) with.

    ``kid`` goes in every token's header and names the key. HS256 keys hold a secret
    generated here: it must be stored to verify a signature, so it is shown once at creation
    and never again (prefer RS256/ES256, where this platform holds only the public key).
    """

    name = models.CharField(max_length=100, help_text="Who signs with this key, e.g. 'mobile app backend'.")
    kid = models.CharField(max_length=32, unique=True, editable=False, help_text="The JWT header's `kid`.")
    algorithm = models.CharField(max_length=8, choices=SigningAlgorithm.choices)
    secret = models.CharField(max_length=128, blank=True, editable=False)
    public_key = models.TextField(blank=True, help_text="PEM public key (RS256/ES256); never the private key.")
    audience = models.CharField(
        max_length=200,
        blank=True,
        help_text="If set, tokens must carry this `aud`; if empty, tokens must carry no `aud`.",
    )
    scopes = models.JSONField(default=list, help_text="Scopes tokens signed with this key grant (client routes only).")
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, editable=False, related_name="+"
    )
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = CustomerSigningKeyQuerySet.as_manager()

    class Meta:
        verbose_name = "customer token signing key"
        constraints = [
            models.CheckConstraint(
                name="signing_key_material_matches_algorithm",
                condition=(
                    models.Q(algorithm="HS256", public_key="") & ~models.Q(secret="")
                    | models.Q(algorithm__in=["RS256", "ES256"], secret="") & ~models.Q(public_key="")
                ),
            )
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.algorithm}, kid {self.kid})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
