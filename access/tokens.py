"""Customer tokens: short-lived JWTs a company's backend signs so that its app, in a
customer's hands, can call the client routes for that one customer (as Braze's SDK
authentication does). The app never holds a server API key.

A token is a JWT (RFC 7519) verified with PyJWT:

- header: ``alg`` equal to its signing key's algorithm (pinned per key: the token never
  chooses; ``none`` and an RS256 public key used as an HS256 secret are refused) and
  ``kid``, the signing key's id shown in the admin;
- claims: ``sub`` the customer's external id (as in the API's paths), ``exp`` and ``iat``
  required, ``exp - iat`` at most ``CUSTOMER_TOKEN_MAX_LIFETIME`` seconds, ``aud`` equal to
  the key's audience when the key has one (and absent when it has none).

Clocks may differ by ``CUSTOMER_TOKEN_LEEWAY`` seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import jwt
from django.conf import settings

from access.models import CLIENT_SCOPES, CustomerSigningKey, SigningAlgorithm

SCHEME = "Bearer"
# A header this long is not a token we issued; refuse before parsing it.
MAX_TOKEN_LENGTH = 4096
# Customer.external_id's length.
MAX_SUBJECT_LENGTH = 128


class TokenRefused(Exception):
    """The token is not acceptable; ``str(exc)`` says why, in words a developer can act on."""


@dataclass(frozen=True)
class CustomerToken:
    """A verified token: ``request.auth`` for a call made with one."""

    signing_key_id: int
    kid: str
    customer_id: str
    scopes: frozenset[str]
    expires_at: datetime

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


def token_kid(token: str) -> str:
    """The ``kid`` named in the token's (not yet verified) header."""
    if len(token) > MAX_TOKEN_LENGTH:
        raise TokenRefused(f"The token is longer than {MAX_TOKEN_LENGTH} characters.")
    try:
        header = jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise TokenRefused("Malformed token: expected a JWT (header.payload.signature).") from None
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise TokenRefused("The token's header must name its signing key in 'kid'.")
    return kid


def token_verify(*, token: str, key: CustomerSigningKey) -> CustomerToken:
    """Verify ``token`` against ``key`` and return what it grants, or raise ``TokenRefused``."""
    header_alg = jwt.get_unverified_header(token).get("alg")
    if header_alg != key.algorithm:
        # PyJWT would refuse it too (``algorithms`` below holds only the key's own); saying
        # so here gives a clearer message than "The specified alg value is not allowed".
        raise TokenRefused(f"This signing key verifies {key.algorithm} tokens only; the token says {header_alg!r}.")
    verifying_key = key.secret if key.algorithm == SigningAlgorithm.HS256 else key.public_key
    leeway = settings.CUSTOMER_TOKEN_LEEWAY
    try:
        claims = jwt.decode(
            token,
            verifying_key,
            algorithms=[key.algorithm],
            audience=key.audience or None,
            leeway=leeway,
            options={"require": ["exp", "iat", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise TokenRefused("The token has expired.") from None
    except jwt.InvalidSignatureError:
        raise TokenRefused("The token's signature does not verify with its signing key.") from None
    except jwt.MissingRequiredClaimError as exc:
        raise TokenRefused(f"The token lacks the required '{exc.claim}' claim.") from None
    except jwt.InvalidAudienceError:
        expected = f"'{key.audience}'" if key.audience else "none"
        raise TokenRefused(f"The token's audience (aud) is wrong; this signing key expects {expected}.") from None
    except jwt.ImmatureSignatureError:
        raise TokenRefused("The token is issued in the future (iat); check the signing server's clock.") from None
    except jwt.InvalidTokenError as exc:
        raise TokenRefused(f"Invalid token: {exc}.") from None
    lifetime = claims["exp"] - claims["iat"]
    max_lifetime = settings.CUSTOMER_TOKEN_MAX_LIFETIME
    if lifetime > max_lifetime:
        raise TokenRefused(f"The token lives {lifetime:g} s (exp - iat); at most {max_lifetime} s is accepted.")
    subject = claims["sub"]
    if not isinstance(subject, str) or not subject or len(subject) > MAX_SUBJECT_LENGTH:
        raise TokenRefused(f"The token's 'sub' must be the customer's external id (1-{MAX_SUBJECT_LENGTH} chars).")
    return CustomerToken(
        signing_key_id=key.pk,
        kid=key.kid,
        customer_id=subject,
        scopes=frozenset(key.scopes) & frozenset(CLIENT_SCOPES),
        expires_at=datetime.fromtimestamp(claims["exp"], tz=UTC),
    )
