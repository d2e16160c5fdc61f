"""Retention and funnels on seeded random data against a plain-Python reference.

The SQL is rewritten for speed (retention: per-customer bit sets of return periods in 62-bit
words; funnels on PostgreSQL: lateral probes, GROUPING SETS, ``percentile_cont``); these
tests pin its numbers to the definitions in the modules' docstrings, on both vendors, in
cases the hand-worked tests do not reach: many customers in four time zones (DST included),
more than one 62-period word, week periods, repeated entries and ties.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
from collections import defaultdict
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest

from segments.analytics.funnels import FunnelSpec, FunnelStep, funnel
from segments.analytics.retention import RetentionSpec, retention_table
from segments.models import Customer, Event
from tests.factories import event_type

pytestmark = pytest.mark.django_db

ZONES = ("UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York")
START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
AS_OF = dt.datetime(2026, 9, 1, tzinfo=dt.UTC)


def _world(seed: int, customers: int = 60) -> list[tuple[Customer, list[tuple[str, dt.datetime]]]]:
    """Customers signed up over ~5 months (spanning the DST changes) with 0-12 events each."""
    rng = random.Random(seed)
    codes = ("login", "visit", "add_to_cart", "order")
    kinds = {c: event_type(c) for c in codes}
    out = []
    for i in range(customers):
        signed = START + dt.timedelta(seconds=rng.randrange(150 * 86400))
        c = Customer.objects.create(external_id=f"r{seed}-{i}", signed_up_at=signed, timezone=rng.choice(ZONES))
        evs = []
        for _ in range(rng.randrange(13)):
            # mostly after sign-up, some before; whole seconds so that ties happen
            when = signed + dt.timedelta(seconds=rng.randrange(-3 * 86400, 120 * 86400))
            if rng.random() < 0.2 and evs:
                when = evs[-1][1]  # a tie with the previous event
            evs.append((rng.choice(codes), when))
        Event.objects.bulk_create(
            Event(event_id=f"r{seed}-{i}-{k}", customer=c, event_type=kinds[code], occurred_at=when)
            for k, (code, when) in enumerate(evs)
        )
        out.append((c, evs))
    return out


def _bucket(day: dt.date, grain: str) -> dt.date:
    if grain == "week":
        return day - dt.timedelta(days=day.weekday())
    return day.replace(day=1) if grain == "month" else day


def _reference_retention(world, grain: str, period: str, periods: int):  # type: ignore[no-untyped-def]
    length = {"day": 1, "week": 7}[period]
    sizes: dict[dt.date, int] = defaultdict(int)
    ages: dict[dt.date, int] = {}
    on: dict[tuple[dt.date, int], int] = defaultdict(int)
    after: dict[tuple[dt.date, int], int] = defaultdict(int)
    for c, evs in world:
        tz = ZoneInfo(c.timezone)
        d0 = c.signed_up_at.astimezone(tz).date()
        cohort = _bucket(d0, grain)
        sizes[cohort] += 1
        age = (AS_OF.astimezone(tz).date() - d0).days
        ages[cohort] = min(age, ages.get(cohort, age))
        days = {(when.astimezone(tz).date() - d0).days for _, when in evs if when <= AS_OF}
        ps = {d // length for d in days if d >= 0}
        for n in range(periods + 1):
            on[(cohort, n)] += n in ps
            after[(cohort, n)] += bool(ps) and max(ps) >= n
    expected = {}
    for cohort in sizes:
        for n in range(periods + 1):
            if (n + 1) * length > ages[cohort]:
                expected[(cohort, n)] = (None, None)
            else:
                expected[(cohort, n)] = (on[(cohort, n)], after[(cohort, n)])
    return sizes, expected


@pytest.mark.parametrize(
    ("seed", "grain", "period", "periods"),
    [(1, "week", "day", 70), (2, "month", "week", 14), (3, "month", "day", 130)],
)
def test_retention_table__random_customers_in_four_zones__equals_the_python_reference(
    seed: int, grain: str, period: str, periods: int
) -> None:
    # Given
    world = _world(seed)
    sizes, expected = _reference_retention(world, grain, period, periods)
    # When
    table = retention_table(
        spec=RetentionSpec(
            cohort_grain=grain,  # type: ignore[arg-type]
            period=period,  # type: ignore[arg-type]
            periods=periods,
            cohort_from=dt.date(2026, 1, 1),
            cohort_to=dt.date(2026, 5, 31),
            as_of=AS_OF,
            return_events=("login", "visit", "add_to_cart", "order"),
        )
    )
    # Then
    got_sizes = {c.cohort: c.size for c in table.cohorts if c.size}
    got = {
        (c.cohort, cell.period): (cell.retained, cell.retained_on_or_after)
        for c in table.cohorts
        if c.size
        for cell in c.cells
    }
    assert got_sizes == dict(sizes)
    assert got == expected
    # and the headlines are the sums over the same customers
    for h in table.headlines:
        eligible = on = later = 0
        for c, evs in world:
            tz = ZoneInfo(c.timezone)
            d0 = c.signed_up_at.astimezone(tz).date()
            if (AS_OF.astimezone(tz).date() - d0).days > h.day:
                eligible += 1
                days = {(w.astimezone(tz).date() - d0).days for _, w in evs if w <= AS_OF}
                on += h.day in days
                later += any(d >= h.day for d in days)
        assert (h.eligible, h.retained, h.retained_on_or_after) == (
            eligible,
            on if eligible else None,
            later if eligible else None,
        )


@pytest.mark.postgres
@pytest.mark.parametrize("anchor", ["signup", "first_purchase"])
def test_retention_table__events_in_monthly_partitions_split_by_customer_id_ranges__equals_the_python_reference(
    monkeypatch: pytest.MonkeyPatch, anchor: str
) -> None:
    from django.db import connection

    from segments.analytics import retention
    from segments.services import partitions

    # Given random customers whose events are in monthly partitions (as a database that has
    # run for months holds them: moved out of the default partition, then analyzed), and
    # ranges small enough to split 60 customers into four
    world = _world(6)
    anchored = world
    if anchor == "first_purchase":
        # the reference's anchor is signed_up_at: give it each buyer's first order in range
        anchored = []
        for c, evs in world:
            orders = [w for code, w in evs if code == "order" and w <= AS_OF]
            t0 = min(orders) if orders else None
            if t0 is not None and dt.date(2026, 1, 1) <= t0.astimezone(ZoneInfo(c.timezone)).date() <= dt.date(
                2026, 5, 31
            ):
                anchored.append((SimpleNamespace(timezone=c.timezone, signed_up_at=t0), evs))
    sizes, expected = _reference_retention(anchored, "month", "day", 40)
    assert sum(sizes.values()) >= 10  # enough customers for four ranges to mean something
    partitions.event_partitions_ensure(today=dt.date(2025, 12, 1), ahead=10)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE segments_event")
    monkeypatch.setattr(retention, "ID_RANGE_MIN", 0)
    monkeypatch.setattr(retention, "ID_RANGES", 4)
    assert len(retention._id_ranges()) == 4
    # When the table is computed, overall one branch per range (and per attribute layer,
    # which is not split, as the reference to compare with)
    spec = RetentionSpec(
        anchor=anchor,  # type: ignore[arg-type]
        cohort_grain="month",
        period="day",
        periods=40,
        cohort_from=dt.date(2026, 1, 1),
        cohort_to=dt.date(2026, 5, 31),
        as_of=AS_OF,
        return_events=("login", "visit", "add_to_cart", "order"),
        breakdown="attribute:channel",
    )
    table = retention_table(spec=spec)
    # Then every customer is counted once, in the numbers of the definitions
    for cohorts in (table.cohorts, table.by_layer[0].cohorts):
        assert {c.cohort: c.size for c in cohorts if c.size} == dict(sizes)
        got = {
            (c.cohort, cell.period): (cell.retained, cell.retained_on_or_after)
            for c in cohorts
            if c.size
            for cell in c.cells
        }
        assert got == expected
    assert [h.eligible for h in table.headlines] == [h.eligible for h in table.by_layer[0].headlines]
    assert table.headlines[0].eligible == sum(sizes.values())


def _reference_funnel(world, steps: tuple[str, ...], window: dt.timedelta):  # type: ignore[no-untyped-def]
    """Strict order: each attempt takes, per step, the first matching event strictly after the
    previous step's event and no later than entry + window; per customer the attempt that
    reached furthest (earliest on a tie)."""
    reached = [0] * len(steps)
    gaps: list[list[float]] = [[] for _ in steps]
    for _, evs in world:
        best = None
        for code, t1 in sorted(evs, key=lambda e: e[1]):
            if code != steps[0] or not (START <= t1 < AS_OF):
                continue
            times = [t1]
            for step in steps[1:]:
                nxt = [w for c, w in evs if c == step and times[-1] < w <= t1 + window]
                if not nxt:
                    break
                times.append(min(nxt))
            if best is None or len(times) > len(best):
                best = times
        if best:
            for k in range(len(best)):
                reached[k] += 1
                if k:
                    gaps[k].append((best[k] - best[k - 1]).total_seconds())
    return reached, [statistics.median(g) if g else None for g in gaps]


@pytest.mark.parametrize("seed", [4, 5])
def test_funnel__random_events_with_ties_and_repeated_entries__equals_the_python_reference(seed: int) -> None:
    # Given
    world = _world(seed, customers=80)
    steps = ("login", "visit", "add_to_cart", "order")
    window = dt.timedelta(days=20)
    reached, medians = _reference_funnel(world, steps, window)
    # When
    result = funnel(
        spec=FunnelSpec(
            steps=tuple(FunnelStep(s) for s in steps),
            window_seconds=int(window.total_seconds()),
            start=START,
            end=AS_OF,
            breakdown="attribute:channel",
        )
    )
    # Then
    assert [s.reached for s in result.steps] == reached
    assert [s.median_seconds_from_previous for s in result.steps[1:]] == medians[1:]
    assert sum(g.steps[0].reached for g in result.groups) == reached[0]
