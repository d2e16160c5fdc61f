"""The read-only analytics API: scope, JSON and CSV bodies, errors naming the parameter."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest

from tests.factories import CustomerFactory, EventFactory, event_type

pytestmark = pytest.mark.django_db

UTC = dt.UTC


@pytest.fixture
def data() -> None:
    a = CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 10, tzinfo=UTC), attributes={"channel": "social"})
    EventFactory(customer=a, event_type=event_type("login"), occurred_at=dt.datetime(2026, 1, 2, 10, tzinfo=UTC))
    EventFactory(customer=a, event_type=event_type("visit"), occurred_at=dt.datetime(2026, 1, 2, 10, 5, tzinfo=UTC))
    CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 11, tzinfo=UTC))


RETENTION = (
    "/api/v1/analytics/retention?cohort=day&periods=2&cohort_from=2026-01-01&cohort_to=2026-01-01"
    "&as_of=2026-02-01T00:00:00%2B00:00"
)
FUNNEL = "/api/v1/analytics/funnel?steps=login,visit&start=2026-01-01T00:00:00Z&end=2026-02-01T00:00:00Z"


def test_retention_api__reports_read__json_table_with_headlines(api_client_factory, data: None) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("reports:read").get(RETENTION)
    assert response.status_code == 200
    body = response.json()
    cohort = body["cohorts"][0]
    assert (cohort["cohort"], cohort["size"]) == ("2026-01-01", 2)
    assert [c["retained"] for c in cohort["cells"]] == [0, 1, 0]
    assert cohort["cells"][1]["rate"] == 0.5
    assert body["headlines"][0] == {
        "day": 1,
        "eligible": 2,
        "retained": 1,
        "rate": 0.5,
        "retained_on_or_after": 1,
        "rate_on_or_after": 0.5,
        "reason": None,
    }


def test_retention_api__csv__one_line_per_cell(api_client_factory, data: None) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("reports:read").get(RETENTION.replace("retention?", "retention.csv?"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.content.decode())))
    assert [(r["cohort"], r["period"], r["retained"], r["rate"]) for r in rows] == [
        ("2026-01-01", "0", "0", "0.0"),
        ("2026-01-01", "1", "1", "0.5"),
        ("2026-01-01", "2", "0", "0.0"),
    ]


def test_retention_api__attribute_breakdown__groups_by_acquisition_channel_json_and_csv(
    api_client_factory, data: None
) -> None:  # type: ignore[no-untyped-def]
    client = api_client_factory("reports:read")
    body = client.get(RETENTION + "&breakdown=attribute:channel").json()
    assert body["breakdown"] == "attribute:channel"
    groups = {g["layer"]: g for g in body["by_layer"]}
    assert set(groups) == {"social", ""}
    assert [c["retained"] for c in groups["social"]["cohorts"][0]["cells"]] == [0, 1, 0]
    assert [c["retained"] for c in groups[""]["cohorts"][0]["cells"]] == [0, 0, 0]
    rows = list(
        csv.DictReader(
            io.StringIO(
                client.get(
                    RETENTION.replace("retention?", "retention.csv?") + "&breakdown=attribute:channel"
                ).content.decode()
            )
        )
    )
    assert {(r["layer"], r["period"], r["retained"]) for r in rows if r["period"] == "1"} == {
        ("", "1", "1"),
        ("social", "1", "1"),
        ("(none)", "1", "0"),
    }


def test_funnel_api__steps_and_breakdown__json_and_csv(api_client_factory, data: None) -> None:  # type: ignore[no-untyped-def]
    client = api_client_factory("reports:read")
    body = client.get(FUNNEL + "&breakdown=attribute:channel").json()
    assert [s["reached"] for s in body["steps"]] == [1, 1]
    assert body["steps"][1]["median_seconds_from_previous"] == 300.0
    assert [g["group"] for g in body["groups"]] == ["social"]
    rows = list(csv.DictReader(io.StringIO(client.get(FUNNEL.replace("funnel?", "funnel.csv?")).content.decode())))
    assert [(r["step"], r["reached"]) for r in rows] == [("1", "1"), ("2", "1")]


def test_funnel_api__preset__five_step_labels(api_client_factory, data: None) -> None:  # type: ignore[no-untyped-def]
    body = api_client_factory("reports:read").get("/api/v1/analytics/funnel?preset=five_step").json()
    assert [s["label"] for s in body["steps"]] == ["Channel", "Scene", "Product", "Decision", "Done"]


def test_funnel_api__step_with_property_filter__labelled_with_the_filter(api_client_factory, data: None) -> None:  # type: ignore[no-untyped-def]
    client = api_client_factory("reports:read")
    url = FUNNEL.replace("steps=login,visit", "steps=visit,visit[page=product]")
    body = client.get(url).json()
    assert [(s["label"], s["event"]) for s in body["steps"]] == [("visit", "visit"), ("visit[page=product]", "visit")]
    rows = list(csv.DictReader(io.StringIO(client.get(url.replace("funnel?", "funnel.csv?")).content.decode())))
    assert [r["label"] for r in rows] == ["visit", "visit[page=product]"]


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("/api/v1/analytics/retention?cohort=year", "cohort"),
        ("/api/v1/analytics/retention?periods=x", "periods"),
        ("/api/v1/analytics/retention?as_of=2026-01-01T00:00:00", "as_of"),
        ("/api/v1/analytics/retention?as_of=2999-01-01T00:00:00%2B00:00", "as_of"),
        ("/api/v1/analytics/retention?breakdown=nope", "breakdown"),
        ("/api/v1/analytics/retention?cohort=day&cohort_from=1990-01-01&cohort_to=1992-12-31&periods=60", "periods"),
        ("/api/v1/analytics/funnel", "steps"),
        ("/api/v1/analytics/funnel?steps=visit,nope", "steps.1.event"),
        ("/api/v1/analytics/funnel?steps=visit[page", "steps"),
        ("/api/v1/analytics/funnel?preset=x", "preset"),
        ("/api/v1/analytics/funnel.csv?steps=visit&breakdown=tier", "breakdown"),
        ("/api/v1/analytics/retention?cohort_to=", "cohort_to"),
        ("/api/v1/analytics/layer-flows?start=", "start"),
        ("/api/v1/analytics/lifecycle.csv?end=", "end"),
        ("/api/v1/analytics/lifecycle?grain=", "grain"),
    ],
)
def test_analytics_api__bad_parameter__400_naming_it(api_client_factory, url: str, field: str) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("reports:read").get(url)
    assert response.status_code == 400
    assert list(response.json()["errors"]) == [field]


def test_funnel_api__offset_plus_not_url_encoded__400_says_to_write_2b(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    # curl -G ...?start=2026-01-01T00:00:00+00:00: the '+' arrives as a space
    response = api_client_factory("reports:read").get(FUNNEL.replace("T00:00:00Z&end", "T00:00:00+00:00&end"))
    assert response.status_code == 400
    assert "%2B" in response.json()["errors"]["start"][0]


def test_analytics_api__without_reports_scope__403(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("segments:read").get("/api/v1/analytics/funnel?preset=aarrr")
    assert response.status_code == 403


def test_lifecycle_api__json_and_csv__every_period_listed(api_client_factory, data: None) -> None:  # type: ignore[no-untyped-def]
    client = api_client_factory("reports:read")
    body = client.get("/api/v1/analytics/lifecycle?grain=day&start=2026-01-01&end=2026-01-03").json()
    assert [(p["period"], p["new"], p["dormant"]) for p in body["periods"]] == [
        ("2026-01-01", 0, 0),
        ("2026-01-02", 1, 0),
        ("2026-01-03", 0, 1),
    ]
    text = client.get("/api/v1/analytics/lifecycle.csv?grain=day&start=2026-01-01&end=2026-01-03").content.decode()
    assert text.splitlines()[2] == "2026-01-02,1,0,0,0,true"


def test_layer_flows_api__unknown_dimension__400_naming_it(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("reports:read").get("/api/v1/analytics/layer-flows?dimension=nope")
    assert response.status_code == 400 and list(response.json()["errors"]) == ["dimension"]
    ok = api_client_factory("reports:read").get("/api/v1/analytics/layer-flows.csv?dimension=rfm")
    assert ok.status_code == 200 and ok.content.decode().startswith("period,from_layer,to_layer,customers")
