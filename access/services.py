from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.utils import timezone

from access.models import ApiKey, Scope

# Writing last_used_at on every request would turn each read into a write; once a
# minute per key is enough to answer "is this key still in use?".
LAST_USED_RESOLUTION = timedelta(minutes=1)


def api_key_create(
    *, name: str, scopes: Iterable[str], created_by: AbstractBaseUser | None = None
) -> tuple[ApiKey, str]:
    """Create a key; return it with the raw key, which is shown once and never stored."""
    scopes = sorted(set(scopes))
    unknown = [s for s in scopes if s not in Scope.values]
    if unknown:
        raise ValidationError({"scopes": f"Unknown scope(s): {', '.join(unknown)}. Known: {', '.join(Scope.values)}."})
    raw, prefix, hashed = ApiKey.generate()
    key = ApiKey.objects.create(name=name, prefix=prefix, hashed_key=hashed, scopes=scopes, created_by=created_by)
    return key, raw


def api_key_revoke(*, api_key: ApiKey) -> ApiKey:
    if api_key.revoked_at is None:
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
    return api_key


def api_key_touch(*, api_key: ApiKey) -> None:
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
        api_key.last_used_at = now
