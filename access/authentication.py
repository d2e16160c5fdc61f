from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from access.models import ApiKey, hash_key
from access.services import api_key_touch, customer_token_authenticate
from access.tokens import SCHEME as TOKEN_SCHEME
from access.tokens import CustomerToken, TokenRefused

KEYWORD = "Api-Key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Api-Key <key>``. The request's ``auth`` is the ApiKey row."""

    def authenticate(self, request: HttpRequest) -> tuple[None, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, raw = header.partition(" ")
        if keyword == TOKEN_SCHEME:
            return None  # a customer token: CustomerTokenAuthentication's to answer
        if keyword != KEYWORD or not raw.strip():
            raise exceptions.AuthenticationFailed(
                f"Use the header 'Authorization: {KEYWORD} <key>' (server) or "
                f"'Authorization: {TOKEN_SCHEME} <customer token>' (app)."
            )
        try:
            api_key = ApiKey.objects.get(hashed_key=hash_key(raw.strip()))
        except ApiKey.DoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        if not api_key.is_active:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")
        api_key_touch(api_key=api_key)
        return (None, api_key)

    def authenticate_header(self, request: HttpRequest) -> str:
        # Makes DRF answer 401 (not 403) when no credentials were given.
        return KEYWORD


class CustomerTokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer <JWT>``, a customer token (see ``access.tokens``). The
    request's ``auth`` is a ``CustomerToken``; which routes accept one, and for which
    customer, ``access.permissions.HasScope`` decides."""

    def authenticate(self, request: HttpRequest) -> tuple[None, CustomerToken] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        keyword, _, raw = header.partition(" ")
        if keyword != TOKEN_SCHEME:
            return None
        if not raw.strip():
            raise exceptions.AuthenticationFailed(f"Use the header 'Authorization: {TOKEN_SCHEME} <customer token>'.")
        try:
            return (None, customer_token_authenticate(token=raw.strip()))
        except TokenRefused as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from None


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "access.authentication.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": f"`{KEYWORD} <key>`; each operation names the scope it needs.",
        }


class CustomerTokenAuthenticationScheme(OpenApiAuthenticationExtension):
    """Listed only on the operations that accept customer tokens (the others would answer 403)."""

    target_class = "access.authentication.CustomerTokenAuthentication"
    name = "CustomerToken"

    def get_security_requirement(self, auto_schema: Any) -> dict[str, list[Any]] | list[dict[str, list[Any]]]:
        if getattr(auto_schema.view, "customer_token", None) is None:
            return []
        return {self.name: []}

    def get_security_definition(self, auto_schema: object) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": (
                "A short-lived customer token minted by your backend (HS256, RS256 or ES256 with a "
                "signing key from the admin; header `kid`; claims `sub` = the customer's external id, "
                "`exp`, `iat`, optional `aud`). Only for the routes that list it, and only for the "
                "customer it names: any other customer is 403."
            ),
        }
