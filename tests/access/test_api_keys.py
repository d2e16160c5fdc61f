from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.urls import path
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.views import APIView

from access.models import ApiKey, hash_key
from access.services import api_key_create, api_key_revoke


class ProbeView(APIView):
    required_scope = "events:write"

    def get(self, request):  # type: ignore[no-untyped-def]
        return Response({"key": request.auth.prefix})


class UndeclaredScopeView(APIView):
    def get(self, request):  # type: ignore[no-untyped-def]
        return Response({"leak": True})


urlpatterns = [path("probe", ProbeView.as_view()), path("undeclared", UndeclaredScopeView.as_view())]

pytestmark = [pytest.mark.django_db, pytest.mark.urls(__name__)]


def test_api_key_create__stores_only_hash__raw_key_shown_once() -> None:
    key, raw = api_key_create(name="checkout", scopes=["events:write"])
    stored = ApiKey.objects.get(pk=key.pk)
    assert raw.startswith(f"gk_{stored.prefix}_")
    assert stored.hashed_key == hash_key(raw)
    assert raw not in {str(v) for v in ApiKey.objects.values_list("name", "prefix", "hashed_key", "scopes").get()}


def test_api_key_create__unknown_scope__refused_naming_it() -> None:
    with pytest.raises(ValidationError, match="admin:everything"):
        api_key_create(name="x", scopes=["admin:everything"])


def test_request__no_key__401_with_challenge() -> None:
    response = APIClient().get("/probe")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Api-Key"
    assert "leak" not in response.content.decode()


@pytest.mark.parametrize("header", ["Api-Key gk_nope_nope", "Bearer abc", "Api-Key ", "Token x"])
def test_request__wrong_key__401(header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get("/probe").status_code == 401


def test_request__key_without_scope__403_naming_scope(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("offers:read").get("/probe")
    assert response.status_code == 403
    assert "events:write" in response.json()["detail"]


def test_request__key_with_scope__200_and_last_used_recorded(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    client = api_client_factory("events:write")
    response = client.get("/probe")
    assert response.status_code == 200
    key = ApiKey.objects.get(prefix=response.json()["key"])
    assert key.last_used_at is not None


def test_request__revoked_key__401(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    client = api_client_factory("events:write")
    api_key_revoke(api_key=ApiKey.objects.get())
    response = client.get("/probe")
    assert response.status_code == 401
    assert "revoked" in response.json()["detail"]


def test_view_without_declared_scope__refused_even_with_every_scope(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    from access.models import Scope

    assert api_client_factory(*Scope.values).get("/undeclared").status_code == 403


def test_throttle__over_rate__429_with_retry_after(api_client_factory, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from access.throttling import ApiKeyRateThrottle

    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "3/min"})
    client = api_client_factory("events:write")
    other = api_client_factory("events:write", name="other")
    codes = [client.get("/probe").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    retry_after = int(client.get("/probe")["Retry-After"])
    assert 1 <= retry_after <= 60
    # The limit is per key: another key is unaffected.
    assert other.get("/probe").status_code == 200
