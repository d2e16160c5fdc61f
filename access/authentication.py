from __future__ import annotations

from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions

from access.models import ApiKey, hash_key
from access.services import api_key_touch

KEYWORD = "Api-Key"


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Api-Key <key>``. The request's ``auth`` is the ApiKey row."""

    def authenticate(self, request: HttpRequest) -> tuple[None, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        keyword, _, raw = header.partition(" ")
        if keyword != KEYWORD or not raw.strip():
            raise exceptions.AuthenticationFailed(f"Use the header 'Authorization: {KEYWORD} <key>'.")
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
