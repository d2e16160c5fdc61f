"""The OpenAPI schema: valid without warnings, served with a local Swagger UI, and fuzzed
by schemathesis over every operation it lists (new endpoints are covered automatically).

The fuzzing runs in-process against the WSGI app, inside the test's transaction, on
SQLite and on PostgreSQL, in every phase schemathesis has for a single operation (the
schema's examples, the coverage phase's boundary and negative cases, random fuzzing); it
is bounded by ``FUZZ_EXAMPLES`` per operation (a few seconds per operation here).

Every check applies except ``positive_data_acceptance``: the schema cannot say every rule
(an unknown customer, a naive timestamp, a NUL character are schema-valid and 400), so
"schema-valid must be accepted" does not hold for this API. ``negative_data_rejection``
counts 207 as a rejection: a batch answers 207 when some of its items were refused."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from django.core.management import call_command
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import Client
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    allow_header_conformance,
    content_type_conformance,
    ignored_auth,
    missing_required_header,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
    unsupported_method,
    use_after_free,
)

from access.models import Scope
from access.services import api_key_create

FUZZ_EXAMPLES = 25
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
    negative_data_rejection,
    response_headers_conformance,
    allow_header_conformance,
    missing_required_header,
    unsupported_method,
    use_after_free,
]


@pytest.fixture
def openapi_document(db: None) -> dict[str, Any]:
    response = Client().get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    return response.json()


def test_schema__spectacular_validate__no_warnings() -> None:
    out, err = io.StringIO(), io.StringIO()
    call_command("spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", stdout=out, stderr=err)
    assert '"openapi"' in out.getvalue()
    assert "Warning" not in err.getvalue() and "Error" not in err.getvalue(), err.getvalue()


def test_schema__ingestion_operations__declare_key_auth_scope_and_errors(openapi_document: dict[str, Any]) -> None:
    operations = [
        (path, method, op)
        for path, item in openapi_document["paths"].items()
        for method, op in item.items()
        if method in {"get", "put", "post", "patch", "delete"} and "ingestion" in op.get("tags", [])
    ]
    assert len(operations) == 6
    for path, method, op in operations:
        label = f"{method.upper()} {path}"
        assert op.get("security") and any("ApiKeyAuth" in s for s in op["security"]), label
        assert {"400", "401", "403", "429"} <= set(op["responses"]), label
        assert any(f"`{scope}`" in op.get("description", "") for scope in Scope.values), f"{label}: name its scope"


def test_swagger_ui__served_locally__no_external_urls(db: None) -> None:
    client = Client()
    response = client.get("/api/docs/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "swagger-ui" in html.lower()
    assert not re.search(r"(src|href)=[\"']?(https?:)?//", html), "loads something from another host"
    for asset in re.findall(r"(?:src|href)=\"([^\"]+)\"", html):
        if asset.startswith("/"):
            assert client.get(asset).status_code == 200, asset


def test_every_operation__without_key__401(openapi_document: dict[str, Any]) -> None:
    client = Client()
    checked = 0
    for path, item in openapi_document["paths"].items():
        url = re.sub(r"\{[^}]+\}", "probe", path)
        for method in ("get", "put", "post", "patch", "delete"):
            if method not in item:
                continue
            response = client.generic(method.upper(), url, data=b"{}", content_type="application/json")
            assert response.status_code == 401, f"{method.upper()} {path} answered {response.status_code}"
            assert response["WWW-Authenticate"] == "Api-Key"
            checked += 1
    assert checked >= 6


@pytest.fixture
def fuzz_key(db: None) -> str:
    _, raw = api_key_create(name="schemathesis", scopes=Scope.values)
    return raw


@pytest.fixture
def _keep_test_connection() -> Iterator[None]:
    # Requests through the real WSGI handler end with close_old_connections, which would
    # close the test's connection (and its transaction); Django's test client does the same.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def _load_schema() -> schemathesis.BaseSchema:
    # Loaded at collection time (operations become test ids); schema generation reads no
    # database. Every operation the schema lists is fuzzed, so new endpoints are covered.
    from config.wsgi import application

    loaded = schemathesis.openapi.from_wsgi("/api/schema/", application)
    loaded.config.generation.update(max_examples=FUZZ_EXAMPLES)
    rejection = loaded.config.checks.negative_data_rejection
    rejection.expected_statuses = [*rejection.expected_statuses, "207"]
    return loaded


schema = _load_schema()


@schema.parametrize()
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_api__fuzzed__no_server_error_and_responses_match_schema(
    case: schemathesis.Case, fuzz_key: str, _keep_test_connection: None
) -> None:
    case.call_and_validate(headers={"Authorization": f"Api-Key {fuzz_key}"}, checks=CHECKS)
