"""Retention cohort tables: hand-worked cases (day edges, time zones, empty cohorts, ties, layers)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from segments.analytics.errors import AnalyticsInputError
from segments.analytics.retention import EMPTY, NOT_OVER, RetentionSpec, retention_table
from segments.models import Dimension, Layer, LayerHistory
from tests.factories import CustomerFactory, EventFactory, event_type

pytestmark = pytest.mark.django_db

UTC = dt.UTC


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC) if "+" not in text else dt.datetime.fromisoformat(text)


def login(customer, when: str, code: str = "login"):  # type: ignore[no-untyped-def]
    extra = {"amount": Decimal("10.00"), "currency": "EUR"} if code == "order" else {}
    return EventFactory(customer=customer, event_type=event_type(code), occurred_at=at(when), **extra)


def cells(table, cohort: int = 0):  # type: ignore[no-untyped-def]
    return {c.period: c for c in table.cohorts[cohort].cells}


def day_spec(**kw) -> RetentionSpec:  # type: ignore[no-untyped-def]
    base = dict(
        cohort_grain="day",
        period="day",
        periods=31,
        cohort_from=dt.date(2026, 1, 1),
        cohort_to=dt.date(2026, 1, 1),
        as_of=at("2026-03-01T00:00:00"),
    )
    return RetentionSpec(**{**base, **kw})


def test_retention_table__day_edges__day_n_is_the_calendar_day_n_days_after_signup() -> None:
    # Given one customer signed up on Jan 1 at 10:00 who came back at 23:59 (day 0),
    # at midnight (day 1), on Jan 8 (day 7) and Jan 31 (day 30); another who never came back.
    a = CustomerFactory(signed_up_at=at("2026-01-01T10:00:00"))
    CustomerFactory(signed_up_at=at("2026-01-01T11:00:00"))
    for when in ("2026-01-01T23:59:59", "2026-01-02T00:00:00", "2026-01-08T12:00:00", "2026-01-31T23:00:00"):
        login(a, when)
    # When
    table = retention_table(spec=day_spec())
    # Then: "on" retention only on the days with a return, half of the cohort each time
    got = cells(table)
    assert table.cohorts[0].cohort == dt.date(2026, 1, 1) and table.cohorts[0].size == 2
    assert {n: c.retained for n, c in got.items() if c.retained} == {0: 1, 1: 1, 7: 1, 30: 1}
    assert got[1].rate == 0.5 and got[2].rate == 0.0
    # "on or after": day 8..30 still counts the day-30 return; day 31 nobody
    assert [got[n].retained_on_or_after for n in (0, 1, 2, 7, 8, 30, 31)] == [1, 1, 1, 1, 1, 1, 0]
    # Headlines: D1, D7, D30 over the two customers (both reached day 31 by March)
    assert [(h.day, h.eligible, h.retained, h.rate) for h in table.headlines] == [
        (1, 2, 1, 0.5),
        (7, 2, 1, 0.5),
        (30, 2, 1, 0.5),
    ]


def test_retention_table__customer_time_zone__a_day_is_the_customers_local_day() -> None:
    # Given a Tokyo customer who signed up at 23:30 local (14:30 UTC) and came back at 00:30
    # local (same UTC day), and a Los Angeles customer who signed up at 23:00 local on Jan 1
    # (07:00 UTC Jan 2) and came back at 09:00 local on Jan 2 (17:00 UTC Jan 2).
    tokyo = CustomerFactory(timezone="Asia/Tokyo", signed_up_at=at("2026-01-01T14:30:00"))
    login(tokyo, "2026-01-01T15:30:00")
    la = CustomerFactory(timezone="America/Los_Angeles", signed_up_at=at("2026-01-02T07:00:00"))
    login(la, "2026-01-02T17:00:00")
    # When
    table = retention_table(spec=day_spec(periods=2))
    # Then: both sit in the Jan 1 cohort (local sign-up day) and both are retained on day 1
    assert table.cohorts[0].size == 2
    assert cells(table)[0].retained == 0
    assert cells(table)[1].retained == 2


def test_retention_table__empty_cohort_and_unfinished_period__null_with_reason() -> None:
    # Given sign-ups on Jan 1 only, a range Jan 1..Jan 3, and "now" Jan 3 at 12:00 UTC
    c = CustomerFactory(signed_up_at=at("2026-01-01T10:00:00"))
    login(c, "2026-01-02T10:00:00")
    # When
    table = retention_table(spec=day_spec(periods=3, cohort_to=dt.date(2026, 1, 3), as_of=at("2026-01-03T12:00:00")))
    # Then: Jan 1: days 0 and 1 are over, day 2 (today) is not; Jan 2 and 3 are empty cohorts
    assert [x.cohort.day for x in table.cohorts] == [1, 2, 3]
    jan1 = cells(table, 0)
    assert jan1[1].retained == 1 and jan1[1].rate == 1.0
    assert jan1[2].retained is None and jan1[2].reason == NOT_OVER
    assert table.cohorts[1].size == 0 and all(x.reason == EMPTY and x.rate is None for x in table.cohorts[1].cells)
    # D1: only the customer whose day 1 is over counts; D7/D30: nobody reached them
    d1, d7, _ = table.headlines
    assert (d1.eligible, d1.retained) == (1, 1)
    assert d7.eligible == 0 and d7.rate is None and d7.reason


def test_retention_table__repeated_events_same_day__count_once() -> None:
    c = CustomerFactory(signed_up_at=at("2026-01-01T10:00:00"))
    for when in ("2026-01-02T01:00:00", "2026-01-02T01:00:00", "2026-01-02T22:00:00"):
        login(c, when)
    login(c, "2026-01-02T05:00:00", code="visit")
    table = retention_table(spec=day_spec(periods=2))
    assert cells(table)[1].retained == 1


def test_retention_table__return_event_filter__other_types_do_not_retain() -> None:
    c = CustomerFactory(signed_up_at=at("2026-01-01T10:00:00"))
    login(c, "2026-01-02T01:00:00", code="visit")
    table = retention_table(spec=day_spec(periods=2, return_events=("order",)))
    assert cells(table)[1].retained == 0


def test_retention_table__weekly_cohorts_and_week_periods__weeks_counted_from_the_anchor_day() -> None:
    # Given Wednesday Jan 7 and Sunday Jan 11 sign-ups (ISO week of Monday Jan 5), returns on
    # day 6 (still week 0) and day 7 (week 1) respectively.
    wed = CustomerFactory(signed_up_at=at("2026-01-07T10:00:00"))
    login(wed, "2026-01-13T10:00:00")
    sun = CustomerFactory(signed_up_at=at("2026-01-11T10:00:00"))
    login(sun, "2026-01-18T10:00:00")
    table = retention_table(
        spec=RetentionSpec(
            cohort_grain="week",
            period="week",
            periods=2,
            cohort_from=dt.date(2026, 1, 5),
            cohort_to=dt.date(2026, 1, 11),
            as_of=at("2026-03-01T00:00:00"),
        )
    )
    assert [(x.cohort, x.size) for x in table.cohorts] == [(dt.date(2026, 1, 5), 2)]
    got = cells(table)
    assert (got[0].retained, got[1].retained, got[2].retained) == (1, 1, 0)
    assert (got[0].retained_on_or_after, got[1].retained_on_or_after) == (2, 1)


@pytest.mark.parametrize(
    ("grain", "cohort_from", "cohort_to", "first", "last"),
    [
        # Wednesday Jan 7 .. Tuesday Jan 13: whole ISO weeks of Monday Jan 5 and Monday Jan 12
        ("week", dt.date(2026, 1, 7), dt.date(2026, 1, 13), dt.date(2026, 1, 5), dt.date(2026, 1, 12)),
        # Jan 20 .. Feb 3: whole months of January and February
        ("month", dt.date(2026, 1, 20), dt.date(2026, 2, 3), dt.date(2026, 1, 1), dt.date(2026, 2, 1)),
        # no range given: the default span back from as_of (Wednesday Mar 4) starts inside a bucket
        ("week", None, None, None, dt.date(2026, 3, 2)),
        ("month", None, None, None, dt.date(2026, 3, 1)),
    ],
)
def test_retention_table__range_cut_inside_a_week_or_month__whole_buckets_counted(  # type: ignore[no-untyped-def]
    grain, cohort_from, cohort_to, first, last
) -> None:
    # Given one sign-up on every day from Dec 1 to Mar 4
    day = dt.date(2025, 12, 1)
    while day <= dt.date(2026, 3, 4):
        CustomerFactory(signed_up_at=dt.datetime.combine(day, dt.time(12), tzinfo=UTC))
        day += dt.timedelta(days=1)
    # When the range starts and ends inside a bucket
    table = retention_table(
        spec=RetentionSpec(
            cohort_grain=grain,
            period="day",
            periods=1,
            cohort_from=cohort_from,
            cohort_to=cohort_to,
            as_of=at("2026-03-04T18:00:00"),
        )
    )
    # Then every cohort holds all the customers of its bucket: one per day of it (up to as_of)
    sizes = {x.cohort: x.size for x in table.cohorts}
    if first is not None:
        assert min(sizes) == first
    assert max(sizes) == last
    for start, size in sizes.items():
        following = start + dt.timedelta(days=7) if grain == "week" else (start + dt.timedelta(days=31)).replace(day=1)
        end = min(following - dt.timedelta(days=1), dt.date(2026, 3, 4))
        assert size == max((end - max(start, dt.date(2025, 12, 1))).days + 1, 0), start
    assert table.cohort_from == min(sizes)


def test_retention_table__first_purchase_anchor__cohort_by_first_order_day() -> None:
    c = CustomerFactory(signed_up_at=at("2025-12-01T10:00:00"))
    login(c, "2026-01-01T09:00:00", code="order")
    login(c, "2026-01-02T09:00:00", code="order")
    login(c, "2026-01-03T09:00:00", code="order")  # day 2: not counted for this anchor's day 1
    CustomerFactory(signed_up_at=at("2026-01-01T10:00:00"))  # signed up Jan 1, never bought
    table = retention_table(spec=day_spec(anchor="first_purchase", periods=2, return_events=("order",)))
    assert table.cohorts[0].size == 1
    assert [cells(table)[n].retained for n in (0, 1, 2)] == [1, 1, 1]


def test_retention_table__breakdown__layer_held_at_signup_not_todays_layer() -> None:
    # Given a customer who was important_value at sign-up and is general_win_back today, and
    # one not yet layered at sign-up whose first layer (the next night) is general_value
    rfm = Dimension.objects.get(key="rfm")
    layer = {
        k: Layer.objects.get(dimension=rfm, key=k) for k in ("important_value", "general_win_back", "general_value")
    }
    a = CustomerFactory(signed_up_at=at("2026-01-01T10:00:00"))
    LayerHistory.objects.create(
        customer=a,
        dimension=rfm,
        layer=layer["important_value"],
        entered_at=at("2025-12-01T02:30:00"),
        left_at=at("2026-01-05T02:30:00"),
    )
    LayerHistory.objects.create(
        customer=a, dimension=rfm, layer=layer["general_win_back"], entered_at=at("2026-01-05T02:30:00")
    )
    login(a, "2026-01-02T10:00:00")
    b = CustomerFactory(signed_up_at=at("2026-01-01T12:00:00"))
    LayerHistory.objects.create(
        customer=b, dimension=rfm, layer=layer["general_value"], entered_at=at("2026-01-02T02:30:00")
    )
    c = CustomerFactory(signed_up_at=at("2026-01-01T13:00:00"))  # never layered
    # When
    table = retention_table(spec=day_spec(periods=1, breakdown="rfm"))
    # Then
    by = {x.layer: x for x in table.by_layer}
    assert set(by) == {"important_value", "general_value", ""}
    assert by["important_value"].cohorts[0].size == 1
    assert by["important_value"].cohorts[0].cells[1].retained == 1
    assert by["general_value"].cohorts[0].cells[1].retained == 0
    assert by["important_value"].headlines[0].rate == 1.0
    assert table.cohorts[0].size == 3 and c.pk


def test_retention_table__attribute_breakdown__signup_cohort_split_by_acquisition_channel() -> None:
    # Given four Jan 1 sign-ups: two from social (one back on day 1 and day 7, one never),
    # one from organic (back on day 7 only), one with no channel attribute (back on day 1)
    s1 = CustomerFactory(signed_up_at=at("2026-01-01T10:00:00"), attributes={"channel": "social", "city_tier": 1})
    login(s1, "2026-01-02T10:00:00")
    login(s1, "2026-01-08T10:00:00")
    CustomerFactory(signed_up_at=at("2026-01-01T11:00:00"), attributes={"channel": "social", "city_tier": 2})
    o = CustomerFactory(signed_up_at=at("2026-01-01T12:00:00"), attributes={"channel": "organic", "city_tier": 1})
    login(o, "2026-01-08T09:00:00")
    n = CustomerFactory(signed_up_at=at("2026-01-01T13:00:00"), attributes={})
    login(n, "2026-01-02T13:00:00")
    # When
    table = retention_table(spec=day_spec(periods=7, breakdown="attribute:channel"))
    # Then: one group per value ('' for the missing attribute), sizes 2 / 1 / 1, and
    # social's D1 = 1 of 2, D7 = 1 of 2; organic's D1 = 0 of 1, D7 = 1 of 1
    by = {x.layer: x for x in table.by_layer}
    assert {k: x.cohorts[0].size for k, x in by.items()} == {"social": 2, "organic": 1, "": 1}
    assert [(h.day, h.eligible, h.retained) for h in by["social"].headlines[:2]] == [(1, 2, 1), (7, 2, 1)]
    assert [(h.day, h.eligible, h.retained) for h in by["organic"].headlines[:2]] == [(1, 1, 0), (7, 1, 1)]
    assert by["social"].cohorts[0].cells[1].rate == 0.5 and by["organic"].cohorts[0].cells[7].rate == 1.0
    assert by[""].cohorts[0].cells[1].retained == 1
    # ... the overall table is unchanged by the breakdown
    assert table.cohorts[0].size == 4 and table.breakdown == "attribute:channel"
    # And a numeric attribute is grouped by its text: city tier 1 holds s1 and o
    tiers = retention_table(spec=day_spec(periods=7, breakdown="attribute:city_tier"))
    assert {x.layer: x.cohorts[0].size for x in tiers.by_layer} == {"1": 2, "2": 1, "": 1}
    assert next(x for x in tiers.by_layer if x.layer == "1").headlines[1].retained == 2


def test_retention_table__first_purchase_anchor_with_attribute_breakdown__cohort_by_first_order_day() -> None:
    # Given a paid-search customer whose first order is Jan 1 (signed up in December) and who
    # orders again on day 1, and an email customer whose first order is Jan 1 and no other
    a = CustomerFactory(signed_up_at=at("2025-12-01T10:00:00"), attributes={"channel": "paid_search"})
    login(a, "2026-01-01T09:00:00", code="order")
    login(a, "2026-01-02T09:00:00", code="order")
    b = CustomerFactory(signed_up_at=at("2025-12-20T10:00:00"), attributes={"channel": "email"})
    login(b, "2026-01-01T15:00:00", code="order")
    # When
    table = retention_table(
        spec=day_spec(anchor="first_purchase", periods=1, return_events=("order",), breakdown="attribute:channel")
    )
    # Then: both in the Jan 1 first-purchase cohort; day 1 retained: paid_search 1/1, email 0/1
    by = {x.layer: x.cohorts[0] for x in table.by_layer}
    assert {k: (c.size, c.cells[0].retained, c.cells[1].retained) for k, c in by.items()} == {
        "paid_search": (1, 1, 1),
        "email": (1, 1, 0),
    }


def test_retention_table__layer_prefix_breakdown__same_as_the_bare_dimension_key() -> None:
    rfm = Dimension.objects.get(key="rfm")
    a = CustomerFactory(signed_up_at=at("2026-01-01T10:00:00"))
    LayerHistory.objects.create(
        customer=a,
        dimension=rfm,
        layer=Layer.objects.get(dimension=rfm, key="general_value"),
        entered_at=at("2025-12-01T02:30:00"),
    )
    login(a, "2026-01-02T10:00:00")
    bare = retention_table(spec=day_spec(periods=1, breakdown="rfm"))
    prefixed = retention_table(spec=day_spec(periods=1, breakdown="layer:rfm"))
    assert [(x.layer, x.headlines) for x in prefixed.by_layer] == [(x.layer, x.headlines) for x in bare.by_layer]
    assert [x.layer for x in prefixed.by_layer] == ["general_value"]


def test_retention_table__bad_input__error_names_the_field() -> None:
    with pytest.raises(AnalyticsInputError) as info:
        retention_table(spec=day_spec(return_events=("nope",)))
    assert info.value.field == "return_events"
    with pytest.raises(AnalyticsInputError) as info:
        retention_table(spec=day_spec(breakdown="nope"))
    assert info.value.field == "breakdown"
    for bad in ("attribute:no spaces", "layer:nope", "tag:VIP"):
        with pytest.raises(AnalyticsInputError) as info:
            retention_table(spec=day_spec(breakdown=bad))
        assert info.value.field == "breakdown", bad


def test_retention_table__daylight_saving_change__local_days_follow_the_zone_rules() -> None:
    # Given a Paris customer who signed up on Saturday 28 March 2026 at 23:30 CET (22:30 UTC);
    # clocks go forward on the 29th. 22:30 UTC on the 29th is 00:30 CEST on the 30th: day 2
    # (a fixed +01:00 offset would say 23:30 on the 29th: day 1).
    c = CustomerFactory(timezone="Europe/Paris", signed_up_at=at("2026-03-28T22:30:00"))
    login(c, "2026-03-29T22:30:00")
    table = retention_table(
        spec=day_spec(
            periods=2, cohort_from=dt.date(2026, 3, 28), cohort_to=dt.date(2026, 3, 28), as_of=at("2026-05-01T00:00:00")
        )
    )
    got = cells(table)
    assert (got[1].retained, got[2].retained) == (0, 1)


def test_retention_table__headlines__come_out_of_the_table_statement_not_a_second_pass() -> None:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    # Given a cohort with a D1 return
    a = CustomerFactory(signed_up_at=at("2026-01-01T10:00:00"))
    login(a, "2026-01-02T10:00:00")
    # When
    with CaptureQueriesContext(connection) as queries:
        table = retention_table(spec=day_spec())
    # Then: one statement reads the events, for the table and its headlines (a second
    # statement re-read every event of the range); the others are the event types and,
    # on PostgreSQL, the savepoint and the statement's planner setting around it
    assert sum("segments_event " in q["sql"] for q in queries.captured_queries) == 1
    assert table.headlines[0].day == 1 and table.headlines[0].retained == 1


@pytest.mark.postgres
def test_sql_run__without_hash_aggregates_and_with_work_mem__scoped_to_the_statement_and_put_back() -> None:
    from django.db import connection

    from segments.analytics import sql

    # Given a test inside a transaction with the default planner settings
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('work_mem')")
        work_mem = cursor.fetchone()[0]
    # When a statement runs without hash joins and hash aggregates, with its own work_mem
    inside = sql.run(
        "SELECT current_setting('enable_hashjoin'), current_setting('enable_hashagg'), current_setting('work_mem')",
        [],
        hash_joins=False,
        hash_aggregates=False,
        work_mem="77MB",
    )
    # Then it saw all three, and the same transaction has the previous values afterwards
    assert inside == [("off", "off", "77MB")]
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT current_setting('enable_hashjoin'), current_setting('enable_hashagg'), current_setting('work_mem')"
        )
        assert cursor.fetchone() == ("on", "on", work_mem)


@pytest.mark.postgres
def test_sql_run__without_hash_joins__scoped_to_the_statement_and_put_back() -> None:
    from django.db import connection

    from segments.analytics import sql

    # Given a test inside a transaction with the default planner settings
    # When a statement runs without hash joins
    inside = sql.run("SELECT current_setting('enable_hashjoin')", [], hash_joins=False)
    # Then it saw them off, and the same transaction has them on again afterwards
    assert inside == [("off",)]
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('enable_hashjoin')")
        assert cursor.fetchone() == ("on",)
