from __future__ import annotations

import secrets
from collections.abc import Iterable
from datetime import timedelta

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.utils import timezone

from access.models import CLIENT_SCOPES, ApiKey, CustomerSigningKey, Scope, SigningAlgorithm
from access.tokens import CustomerToken, TokenRefused, token_kid, token_verify

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


# --- Customer token signing keys -------------------------------------------------------

# NIST SP 800-57: RSA below 2048 bits no longer gives 112-bit security.
MIN_RSA_BITS = 2048


def signing_key_material_check(*, algorithm: str, public_key: str) -> str:
    """Check the key material fits ``algorithm``: no public key for HS256 (its secret is
    generated here); a PEM public key of the right type and size for RS256/ES256. Return the
    public key normalised (SubjectPublicKeyInfo PEM), or "" for HS256."""
    if algorithm not in SigningAlgorithm.values:
        raise ValidationError({"algorithm": f"One of {', '.join(SigningAlgorithm.values)}."})
    text = public_key.strip()
    if algorithm == SigningAlgorithm.HS256:
        if text:
            raise ValidationError({"public_key": "HS256 uses a secret generated here; leave the public key empty."})
        return ""
    if not text:
        raise ValidationError({"public_key": f"{algorithm} needs the PEM public key of your signing key pair."})
    if "PRIVATE KEY" in text:
        raise ValidationError({"public_key": "A private key: paste the PUBLIC key; keep the private key secret."})
    try:
        loaded = serialization.load_pem_public_key(text.encode())
    except ValueError:
        raise ValidationError({"public_key": "Not a PEM public key (-----BEGIN PUBLIC KEY-----)."}) from None
    if algorithm == SigningAlgorithm.RS256:
        if not isinstance(loaded, rsa.RSAPublicKey):
            raise ValidationError({"public_key": "RS256 needs an RSA public key."})
        if loaded.key_size < MIN_RSA_BITS:
            raise ValidationError({"public_key": f"RSA keys need at least {MIN_RSA_BITS} bits."})
    elif algorithm == SigningAlgorithm.ES256:
        if not isinstance(loaded, ec.EllipticCurvePublicKey) or not isinstance(loaded.curve, ec.SECP256R1):
            raise ValidationError({"public_key": "ES256 needs an EC public key on the P-256 curve."})
    return loaded.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def signing_key_create(
    *,
    name: str,
    algorithm: str,
    public_key: str = "",
    audience: str = "",
    scopes: Iterable[str] = CLIENT_SCOPES,
    created_by: AbstractBaseUser | None = None,
) -> tuple[CustomerSigningKey, str]:
    """Create a key for customer tokens; return it with the HS256 secret (shown once; empty
    for RS256/ES256, whose private key never leaves the company's backend)."""
    scopes = sorted({str(s) for s in scopes})
    not_client = [s for s in scopes if s not in CLIENT_SCOPES]
    if not_client:
        raise ValidationError(
            {"scopes": f"Customer tokens can only grant {', '.join(CLIENT_SCOPES)}; not {', '.join(not_client)}."}
        )
    pem = signing_key_material_check(algorithm=algorithm, public_key=public_key)
    # 256 random bits: RFC 7518 3.2 asks for an HMAC key at least as long as the hash output.
    secret = secrets.token_urlsafe(32) if algorithm == SigningAlgorithm.HS256 else ""
    key = CustomerSigningKey.objects.create(
        name=name,
        kid=secrets.token_hex(8),
        algorithm=algorithm,
        secret=secret,
        public_key=pem,
        audience=audience.strip(),
        scopes=scopes,
        created_by=created_by,
    )
    return key, secret


def signing_key_revoke(*, key: CustomerSigningKey) -> CustomerSigningKey:
    """Revoke a key: every token it signed is refused from the next request on."""
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    return key


def customer_token_authenticate(*, token: str) -> CustomerToken:
    """Verify a customer token against the signing key its header names; raise
    ``TokenRefused`` saying why it is not acceptable."""
    kid = token_kid(token)
    key = CustomerSigningKey.objects.filter(kid=kid).first()
    if key is None:
        raise TokenRefused(f"Unknown signing key '{kid}'.")
    if not key.is_active:
        raise TokenRefused(f"The signing key '{kid}' has been revoked.")
    principal = token_verify(token=token, key=key)
    now = timezone.now()
    if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
        CustomerSigningKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return principal
