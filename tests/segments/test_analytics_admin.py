"""The growth analytics admin pages: who may read them, the numbers and the CSV they show."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json

import pytest
from django.test import Client

from tests.factories import CustomerFactory, EventFactory, UserFactory, event_type

pytestmark = pytest.mark.django_db

UTC = dt.UTC
RETENTION = "/admin/analytics/retention/?cohort=day&periods=2&cohort_from=2026-01-01&cohort_to=2026-01-01&breakdown=rfm"
FUNNEL = "/admin/analytics/funnel/?steps=login,visit&start=2026-01-01T00:00:00%2B00:00&end=2026-02-01T00:00:00%2B00:00"


@pytest.fixture
def data() -> None:
    a = CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 10, tzinfo=UTC))
    EventFactory(customer=a, event_type=event_type("login"), occurred_at=dt.datetime(2026, 1, 2, 10, tzinfo=UTC))
    EventFactory(customer=a, event_type=event_type("visit"), occurred_at=dt.datetime(2026, 1, 2, 11, tzinfo=UTC))
    CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 11, tzinfo=UTC))


@pytest.mark.parametrize("role", ["growth", "marketer"])
def test_analytics_pages__roles__render_tables_chart_and_csv_link(role: str, data: None) -> None:
    client = Client()
    client.force_login(UserFactory(groups=[role]))
    page = client.get(RETENTION)
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="retention-chart"' in html and "vendor/chartjs/chart.umd.min.js" in html and "50.0%" in html
    assert "(not layered)" in html
    funnel = client.get(FUNNEL).content.decode()
    assert 'id="funnel-chart"' in funnel and "60.0 min" in funnel
    index = client.get("/admin/").content.decode()
    assert "/admin/analytics/retention/" in index


def test_retention_page__attribute_breakdown__offered_and_headlines_per_value(data: None) -> None:
    CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 12, tzinfo=UTC), attributes={"channel": "social"})
    client = Client()
    client.force_login(UserFactory(groups=["marketer"]))
    html = client.get(RETENTION.replace("breakdown=rfm", "breakdown=attribute:channel")).content.decode()
    # the attribute is offered in the breakdown menu, selected, and the table is per value
    assert '<option value="attribute:channel" selected>channel</option>' in html
    assert "By channel (customer attribute)" in html
    assert "<td>social</td>" in html and "<td>(none)</td>" in html


def test_retention_page__one_layer_for_everyone__says_why_and_links_attribute_breakdowns(data: None) -> None:
    # Given sign-ups none of whom is layered (one group for everyone) and a channel attribute
    CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 12, tzinfo=UTC), attributes={"channel": "social"})
    client = Client()
    client.force_login(UserFactory(groups=["growth"]))
    # When
    html = client.get(RETENTION).content.decode()
    # Then: the page explains the single layer and links the breakdown by the attribute
    assert 'id="single-layer-note"' in html and "nobody has bought yet" in html
    assert "By layer of RFM value tiers at the cohort's start" in html  # the dimension's name, not "rfm"
    assert "breakdown=attribute%3Achannel" in html
    # ... and not when the groups differ
    split = client.get(RETENTION.replace("breakdown=rfm", "breakdown=attribute:channel")).content.decode()
    assert 'id="single-layer-note"' not in split and "<th>channel</th>" in split


def test_retention_page__first_purchase_cohorts_by_purchase_tier__note_does_not_send_back_to_first_purchase(
    data: None,
) -> None:
    # Given a first purchase, made while its customer was still unlayered / no_purchase
    a = CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 10, tzinfo=UTC), attributes={"channel": "social"})
    EventFactory(customer=a, event_type=event_type("order"), occurred_at=dt.datetime(2026, 1, 3, 10, tzinfo=UTC))
    client = Client()
    client.force_login(UserFactory(groups=["growth"]))
    # When the first-purchase cohorts are split by the purchase tier
    url = RETENTION.replace("cohort_to=2026-01-01", "cohort_to=2026-01-05") + "&anchor=first_purchase"
    html = client.get(url).content.decode()
    # Then the note says why everyone shares one tier, and offers the attributes, not the
    # first-purchase cohorts the page already shows
    assert 'id="single-layer-note"' in html and "at their first purchase" in html
    assert "cohort by first purchase" not in html and "breakdown=attribute%3Achannel" in html


def test_retention_page__first_purchase_anchor__explained_in_words(data: None) -> None:
    client = Client()
    client.force_login(UserFactory(groups=["growth"]))
    html = client.get(RETENTION + "&anchor=first_purchase&as_of=2026-02-01T00:00:00%2B00:00").content.decode()
    # "firstpurchase" (the anchor with its underscore cut) read as a typo; "a.m.." as one
    assert "after their first purchase day (day 0)" in html and "firstpurchase" not in html
    assert "As of 2026-02-01 00:00" in html


def test_retention_page__headline_tiles__one_decimal_like_the_tables(data: None) -> None:
    # Given three Jan 1 sign-ups of whom one came back on day 1: D1 = 1/3 = 33.3%
    CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 12, tzinfo=UTC))
    client = Client()
    client.force_login(UserFactory(groups=["growth"]))
    html = client.get(RETENTION).content.decode()
    tiles = html[html.index('id="headlines"') : html.index('class="explain"')]
    assert "<strong>33.3%</strong>" in tiles, tiles


def test_analytics_pages__csv_download__the_numbers_of_the_page(data: None) -> None:
    client = Client()
    client.force_login(UserFactory(groups=["marketer"]))
    response = client.get(RETENTION + "&download=csv")
    assert response["Content-Type"].startswith("text/csv")
    rows = [r for r in csv.DictReader(io.StringIO(response.content.decode())) if r["layer"] == ""]
    assert [(r["period"], r["retained"], r["rate"]) for r in rows] == [
        ("0", "0", "0.0"),
        ("1", "1", "0.5"),
        ("2", "0", "0.0"),
    ]


def test_analytics_pages__bad_parameter__400_page_naming_it(data: None) -> None:
    client = Client()
    client.force_login(UserFactory(groups=["growth"]))
    response = client.get("/admin/analytics/funnel/?steps=visit,nope")
    assert response.status_code == 400
    assert "steps.1.event" in response.content.decode()


def test_analytics_index__growth_user__redirected_to_retention() -> None:
    client = Client()
    client.force_login(UserFactory(groups=["growth"]))
    response = client.get("/admin/analytics/?cohort=month")
    assert response.status_code == 302 and response["Location"] == "/admin/analytics/retention/?cohort=month"


def test_analytics_pages__staff_without_permission__403() -> None:
    client = Client()
    client.force_login(UserFactory())
    assert client.get("/admin/analytics/retention/").status_code == 403
    assert client.get("/admin/analytics/funnel/").status_code == 403


def test_flows_page__history_and_activity__matrix_lifecycle_chart_and_csv(data: None) -> None:
    from segments.models import Dimension, Layer, LayerHistory

    rfm = Dimension.objects.get(key="rfm")
    customer = CustomerFactory()
    value = Layer.objects.get(dimension=rfm, key="important_value")
    retention = Layer.objects.get(dimension=rfm, key="important_retention")
    jan = dt.datetime(2026, 1, 5, 2, 30, tzinfo=UTC)
    LayerHistory.objects.create(
        customer=customer, dimension=rfm, layer=value, entered_at=jan, left_at=jan + dt.timedelta(days=7)
    )
    LayerHistory.objects.create(
        customer=customer, dimension=rfm, layer=retention, entered_at=jan + dt.timedelta(days=7)
    )
    client = Client()
    client.force_login(UserFactory(groups=["marketer"]))
    url = "/admin/analytics/flows/?dimension=rfm&grain=week&start=2026-01-01&end=2026-01-31"
    html = client.get(url).content.decode()
    assert 'id="lifecycle-chart"' in html and 'id="flow-matrix"' in html
    assert '<td>important_value</td><td>important_retention</td><td class="num">1</td>' in html
    rows = list(csv.DictReader(io.StringIO(client.get(url + "&download=csv").content.decode())))
    assert [(r["from_layer"], r["to_layer"], r["customers"]) for r in rows] == [
        ("", "important_value", "1"),
        ("important_value", "important_retention", "1"),
    ]
    lifecycle = client.get(url + "&download=lifecycle-csv").content.decode().splitlines()
    assert lifecycle[0] == "period,new,returning,resurrecting,dormant,complete" and len(lifecycle) == 1 + 5


def test_flows_page__moves_between_layers__drawn_as_a_chart_of_the_largest_moves() -> None:
    from segments.models import Dimension, Layer, LayerHistory

    # Given two customers moving important_value -> important_retention in the week of Jan 12
    rfm = Dimension.objects.get(key="rfm")
    value = Layer.objects.get(dimension=rfm, key="important_value")
    retention = Layer.objects.get(dimension=rfm, key="important_retention")
    for _ in range(2):
        customer = CustomerFactory()
        jan = dt.datetime(2026, 1, 5, 2, 30, tzinfo=UTC)
        moved = jan + dt.timedelta(days=7)
        LayerHistory.objects.create(customer=customer, dimension=rfm, layer=value, entered_at=jan, left_at=moved)
        LayerHistory.objects.create(customer=customer, dimension=rfm, layer=retention, entered_at=moved)
    client = Client()
    client.force_login(UserFactory(groups=["marketer"]))
    # When the flows page is opened
    html = client.get("/admin/analytics/flows/?dimension=rfm&grain=week&start=2026-01-01&end=2026-01-31").content
    # Then the move is drawn per period (first placements are in the tables, not on the chart)
    page = html.decode()
    assert 'id="flows-chart"' in page
    data = json.loads(page.split('<script id="flows-chart-data" type="application/json">')[1].split("</script>")[0])
    assert data["labels"] == ["2026-01-05", "2026-01-12"]
    assert [(d["label"], d["data"]) for d in data["datasets"]] == [("important_value → important_retention", [0, 2])]


def test_funnel_page__breakdown__offered_as_a_menu_of_layers_and_attributes(data: None) -> None:
    CustomerFactory(attributes={"channel": "social"})
    client = Client()
    client.force_login(UserFactory(groups=["marketer"]))
    html = client.get(FUNNEL + "&breakdown=layer:lifecycle").content.decode()
    assert '<select name="breakdown" id="breakdown">' in html
    assert '<option value="layer:lifecycle" selected>lifecycle</option>' in html
    assert '<option value="attribute:channel" >channel</option>' in html
    # a breakdown typed into the URL that the menu does not list stays selected
    other = client.get(FUNNEL + "&breakdown=attribute:coupon_source").content.decode()
    assert '<option value="attribute:coupon_source" selected>attribute:coupon_source</option>' in other


def test_funnel_page__entries_within_a_window_of_now__says_their_conversions_are_a_floor(data: None) -> None:
    client = Client()
    client.force_login(UserFactory(groups=["growth"]))
    # entries up to now (the default range): the last window's entries are still open
    aarrr = client.get("/admin/analytics/funnel/?preset=aarrr").content.decode()
    assert 'id="open-window-note"' in aarrr and "30.0 days of the entry" in aarrr
    # entries that ended long ago: every window is over
    assert 'id="open-window-note"' not in client.get(FUNNEL).content.decode()


def _section(html: str, start: str, end: str = "</table>") -> str:
    begin = html.index(start)
    return html[begin : html.index(end, begin)]


def test_analytics_pages__more_customers_than_the_setting__computing_page_then_the_same_table(  # type: ignore[no-untyped-def]
    data: None, settings, django_capture_on_commit_callbacks
) -> None:
    from segments import tasks
    from segments.models import AnalyticsRun

    client = Client()
    client.force_login(UserFactory(groups=["growth"]))
    retention = RETENTION + "&as_of=2026-02-01T00:00:00%2B00:00"
    pages = {"retention": (retention, 'id="retention-table"'), "funnel": (FUNNEL, 'class="funnel-table"')}
    synchronous = {kind: client.get(url).content.decode() for kind, (url, _) in pages.items()}
    settings.GROWTH = {**settings.GROWTH, "ANALYTICS_ASYNC_CUSTOMERS": 1}  # the fixture has 2

    for kind, (url, table) in pages.items():
        with django_capture_on_commit_callbacks() as queued:
            pending = client.get(url)
        html = pending.content.decode()
        assert pending.status_code == 200 and "Computing since" in html and "window.location.replace" in html
        assert table not in html and len(queued) == 1
        assert client.get(url).content.decode().count("Computing since") == 1  # the same run, not a second
        run = AnalyticsRun.objects.get(kind=kind)
        assert run.owner == "admin" and run.status == "queued"

        assert tasks.analytics_run.apply(args=[str(run.pk)]).get() == "done"

        done = client.get(url).content.decode()
        assert "Computing since" not in done
        assert _section(done, table) == _section(synchronous[kind], table)
    assert AnalyticsRun.objects.count() == 2
    csv_rows = client.get(retention + "&download=csv").content.decode()
    settings.GROWTH = {**settings.GROWTH, "ANALYTICS_ASYNC_CUSTOMERS": 200_000}
    assert csv_rows == client.get(retention + "&download=csv").content.decode()


def test_analytics_pages__run_failed__page_shows_the_error(data: None, settings, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from segments import tasks
    from segments.analytics import runs
    from segments.models import AnalyticsRun

    settings.GROWTH = {**settings.GROWTH, "ANALYTICS_ASYNC_CUSTOMERS": 1}
    client = Client()
    client.force_login(UserFactory(groups=["growth"]))
    client.get(FUNNEL)

    def broken(**_: object) -> None:
        raise RuntimeError("canceling statement due to statement timeout")

    monkeypatch.setattr(runs, "funnel", broken)
    tasks.analytics_run.apply(args=[str(AnalyticsRun.objects.get().pk)])
    html = client.get(FUNNEL).content.decode()

    assert 'id="analytics-run-error"' in html and "statement timeout" in html and "window.location" not in html
    assert AnalyticsRun.objects.count() == 1  # shown, not asked again by itself
    again = client.get(FUNNEL + "&retry=1").content.decode()
    assert "Computing since" in again and AnalyticsRun.objects.filter(status="queued").count() == 1
