"""The demo's year of tier history: one recompute per calendar month."""

from __future__ import annotations

import datetime as dt

import pytest

from demo import configure


@pytest.mark.pure
@pytest.mark.parametrize("now", ["2027-03-01T00:30:00", "2026-12-05T15:37:00", "2027-01-31T23:00:00"])
def test_history_as_of__any_day__the_last_instant_of_each_previous_month(now: str) -> None:
    moment = dt.datetime.fromisoformat(now).replace(tzinfo=dt.UTC)
    ends = configure.history_as_of(now=moment)
    assert len(ends) == configure.HISTORY_MONTHS
    months = [(end.year, end.month) for end in ends]
    assert len(set(months)) == configure.HISTORY_MONTHS  # no month twice, none skipped below
    for end in ends:
        assert (end + dt.timedelta(microseconds=1)).day == 1  # a month's last instant
    assert ends == sorted(ends) and ends[-1] < moment
    assert (ends[-1] + dt.timedelta(microseconds=1)).month == moment.month  # up to last month


@pytest.mark.pure
def test_history_as_of__run_on_1_march__february_has_its_recompute() -> None:
    ends = configure.history_as_of(now=dt.datetime(2027, 3, 1, 0, 30, tzinfo=dt.UTC))
    assert ends[-2:] == [
        dt.datetime(2027, 1, 31, 23, 59, 59, 999999, tzinfo=dt.UTC),
        dt.datetime(2027, 2, 28, 23, 59, 59, 999999, tzinfo=dt.UTC),
    ]


@pytest.mark.django_db
def test_tier_history_backfill__run_on_1_march__one_recompute_per_month(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from types import SimpleNamespace

    seen: list[dt.datetime] = []

    def recompute(*, dimension_id: int, as_of: dt.datetime, trigger: str) -> SimpleNamespace:
        seen.append(as_of)
        return SimpleNamespace(status="succeeded", error="")

    monkeypatch.setattr(configure, "HISTORY_DIMENSIONS", ("rfm",))
    monkeypatch.setattr(configure, "dimension_recompute", recompute)
    configure.tier_history_backfill(now=dt.datetime(2027, 3, 1, 0, 30, tzinfo=dt.UTC))
    assert [(a.year, a.month) for a in seen] == [(2026, m) for m in range(3, 13)] + [(2027, 1), (2027, 2)]


@pytest.mark.django_db
def test_analytics_text__lifecycle_line__last_month_that_is_over_not_the_current_one() -> None:
    import time_machine

    from tests.factories import CustomerFactory, EventFactory, event_type

    # Given a customer active in November only, read on 5 December
    customer = CustomerFactory(signed_up_at=dt.datetime(2026, 11, 1, tzinfo=dt.UTC))
    EventFactory(customer=customer, event_type=event_type("login"), occurred_at=dt.datetime(2026, 11, 3, tzinfo=dt.UTC))
    with time_machine.travel(dt.datetime(2026, 12, 5, 15, tzinfo=dt.UTC), tick=False):
        from demo.summary import analytics_text

        lines = analytics_text(pyramid_keys=())
    # Then the summary reports November (one new customer), not December's partial counts
    (line,) = [line for line in lines if line.lstrip().startswith("lifecycle, month of")]
    assert line.strip().startswith("lifecycle, month of 2026-11-01: new 1,")
