"""GET /api/v1/experiments/{key}/report: scope, errors, and the same JSON as the export."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from experiments.reports.assemble import report_build
from experiments.reports.exports import report_json
from tests.experiments.report_builders import Group, dimension_create, experiment_create, populate, without_clock

pytestmark = pytest.mark.django_db

URL = "/api/v1/experiments/{key}/report"


@pytest.fixture
def experiment():  # type: ignore[no-untyped-def]
    dimension_create("tier", ["new", "vip"])
    experiment = experiment_create()
    populate(
        experiment,
        [
            Group("control", 400, {"order": 40}, {"tier": "new"}),
            Group("treatment", 400, {"order": 60}, {"tier": "new"}),
            Group("control", 200, {}, {"tier": "vip"}),
            Group("treatment", 200, {"order": 1}, {"tier": "vip"}),
        ],
    )
    return experiment


def test_report_api__route__named_under_v1() -> None:
    assert reverse("v1:reports:experiment-report", args=["offer-test"]) == URL.format(key="offer-test")


def test_report_api__no_key__401(experiment) -> None:  # type: ignore[no-untyped-def]
    response = APIClient().get(URL.format(key=experiment.key))
    assert response.status_code == 401


def test_report_api__key_without_reports_read__403(experiment, api_client_factory: Callable[..., APIClient]) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("offers:read", "segments:read").get(URL.format(key=experiment.key))
    assert response.status_code == 403
    assert "reports:read" in response.json()["detail"]


def test_report_api__unknown_experiment__404(api_client_factory: Callable[..., APIClient]) -> None:
    response = api_client_factory("reports:read").get(URL.format(key="nope"))
    assert response.status_code == 404
    assert response.json() == {"detail": "No experiment with key 'nope'."}


@pytest.mark.parametrize(
    ("query", "field"), [("adjustment=bonferroni", "adjustment"), ("timeseries=maybe", "timeseries")]
)
def test_report_api__bad_parameter__400_naming_it(experiment, api_client_factory, query: str, field: str) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("reports:read").get(URL.format(key=experiment.key) + "?" + query)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


def test_report_api__reports_read__same_json_as_the_export(experiment, api_client_factory) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("reports:read").get(URL.format(key=experiment.key) + "?adjustment=bh")

    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)  # strict: no NaN / Infinity tokens
    exported = json.loads(report_json(report_build(experiment_key=experiment.key, adjustment="bh")))
    assert without_clock(body) == without_clock(exported)
    vip = body["metrics"][0]["dimensions"][0]["layers"][1]["lifts"][0]
    assert vip["relative_lift"] is None
    assert vip["undefined"]["relative_lift"]["code"] == "control_rate_zero"


def test_report_api__timeseries_true__includes_the_series(experiment, api_client_factory) -> None:  # type: ignore[no-untyped-def]
    body = api_client_factory("reports:read").get(URL.format(key=experiment.key) + "?timeseries=true").json()

    assert {point["variant"] for point in body["timeseries"]} == {"control", "treatment"}
    assert "timeseries" not in body["undefined"]


def test_report_api__openapi_schema__documents_the_operation_and_its_fields(client) -> None:  # type: ignore[no-untyped-def]
    schema = client.get("/api/schema/?format=json").json()

    operation = schema["paths"]["/api/v1/experiments/{key}/report"]["get"]
    assert operation["operationId"] == "experiment_report"
    body = operation["responses"]["200"]["content"]["application/json"]["schema"]
    lift = body["properties"]["metrics"]["items"]["properties"]["overall"]["properties"]["lifts"]["items"]
    assert lift["properties"]["adjusted_p_value"] == {"type": "number", "nullable": True}
    assert {p["name"] for p in operation["parameters"]} >= {"key", "adjustment", "timeseries"}
