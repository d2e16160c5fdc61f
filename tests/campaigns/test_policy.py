from __future__ import annotations

import datetime as dt

import pytest

from campaigns.models import CapSlot
from campaigns.services import policy
from campaigns.services.policy import CapRequest, Policy
from tests.factories import CustomerFactory

UTC = dt.UTC
QUIET = Policy(channel="sms", quiet_start=dt.time(21, 0), quiet_end=dt.time(8, 0))


@pytest.mark.pure
def test_quiet_until__inside_window_wrapping_midnight__next_local_morning() -> None:
    # 22:30 in Paris (winter, UTC+1) is 21:30 UTC; quiet until 08:00 Paris = 07:00 UTC next day.
    at = dt.datetime(2026, 1, 10, 21, 30, tzinfo=UTC)
    assert policy.quiet_until(QUIET, tz="Europe/Paris", at=at) == dt.datetime(2026, 1, 11, 7, 0, tzinfo=UTC)


@pytest.mark.pure
def test_quiet_until__after_midnight__same_local_morning() -> None:
    at = dt.datetime(2026, 1, 10, 2, 0, tzinfo=UTC)  # 11:00 in Tokyo: not quiet
    assert policy.quiet_until(QUIET, tz="Asia/Tokyo", at=at) is None
    at = dt.datetime(2026, 1, 10, 18, 0, tzinfo=UTC)  # 03:00 in Tokyo on the 11th
    assert policy.quiet_until(QUIET, tz="Asia/Tokyo", at=at) == dt.datetime(2026, 1, 10, 23, 0, tzinfo=UTC)


@pytest.mark.pure
def test_quiet_until__daytime_window_and_none__respected() -> None:
    day = Policy(channel="push", quiet_start=dt.time(12, 0), quiet_end=dt.time(14, 0))
    assert policy.quiet_until(day, tz="UTC", at=dt.datetime(2026, 1, 10, 13, 0, tzinfo=UTC)) == dt.datetime(
        2026, 1, 10, 14, 0, tzinfo=UTC
    )
    assert policy.quiet_until(day, tz="UTC", at=dt.datetime(2026, 1, 10, 14, 0, tzinfo=UTC)) is None
    assert policy.quiet_until(Policy(channel="email"), tz="UTC", at=dt.datetime(2026, 1, 10, tzinfo=UTC)) is None


@pytest.mark.pure
def test_local_periods__customer_timezone__day_and_monday() -> None:
    at = dt.datetime(2026, 1, 11, 23, 30, tzinfo=UTC)  # Sunday 23:30 UTC = Monday 08:30 in Tokyo
    assert policy.local_periods(tz="Asia/Tokyo", at=at) == (dt.date(2026, 1, 12), dt.date(2026, 1, 12))
    assert policy.local_periods(tz="UTC", at=at) == (dt.date(2026, 1, 11), dt.date(2026, 1, 5))


def _request(ref: int, customer_id: int, day: dt.date) -> CapRequest:
    return CapRequest(
        ref=ref, customer_id=customer_id, channel="email", day=day, week=day - dt.timedelta(days=day.weekday())
    )


@pytest.mark.django_db
def test_cap_slots_take__daily_cap_one__second_same_local_day_capped() -> None:
    customer = CustomerFactory()
    policies = {"email": Policy(channel="email", daily_cap=1)}
    now = dt.datetime(2026, 1, 12, 9, tzinfo=UTC)
    monday = dt.date(2026, 1, 12)
    assert policy.cap_slots_take(requests=[_request(1, customer.pk, monday)], policies=policies, now=now) == set()
    assert policy.cap_slots_take(requests=[_request(2, customer.pk, monday)], policies=policies, now=now) == {2}
    tuesday = monday + dt.timedelta(days=1)
    assert policy.cap_slots_take(requests=[_request(3, customer.pk, tuesday)], policies=policies, now=now) == set()
    assert CapSlot.objects.filter(customer=customer, period="day").count() == 2


@pytest.mark.django_db
def test_cap_slots_take__weekly_cap_reached__day_slot_given_back() -> None:
    customer = CustomerFactory()
    policies = {"email": Policy(channel="email", daily_cap=2, weekly_cap=2)}
    now = dt.datetime(2026, 1, 12, 9, tzinfo=UTC)
    monday = dt.date(2026, 1, 12)
    requests = [_request(1, customer.pk, monday), _request(2, customer.pk, monday + dt.timedelta(days=1))]
    assert policy.cap_slots_take(requests=requests, policies=policies, now=now) == set()
    wednesday = monday + dt.timedelta(days=2)
    assert policy.cap_slots_take(requests=[_request(3, customer.pk, wednesday)], policies=policies, now=now) == {3}
    assert not CapSlot.objects.filter(customer=customer, period="day", period_start=wednesday).exists()


@pytest.mark.django_db
def test_cap_slots_take__cap_two_in_one_batch__two_granted_third_capped() -> None:
    customer = CustomerFactory()
    policies = {"email": Policy(channel="email", daily_cap=2)}
    now = dt.datetime(2026, 1, 12, 9, tzinfo=UTC)
    day = dt.date(2026, 1, 12)
    capped = policy.cap_slots_take(
        requests=[_request(i, customer.pk, day) for i in (1, 2, 3)], policies=policies, now=now
    )
    assert len(capped) == 1
    assert sorted(CapSlot.objects.filter(customer=customer).values_list("slot", flat=True)) == [1, 2]


@pytest.mark.django_db
def test_rate_limit_wait__over_per_second__waits_until_next_window() -> None:
    waits = [policy.rate_limit_wait(channel="sms-test", per_second=3) for _ in range(4)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 0 < waits[3] <= 1.0
    assert policy.rate_limit_wait(channel="sms-test", per_second=None) == 0.0


@pytest.mark.django_db
def test_rate_limiter__two_senders_share_the_limit__never_over_per_second_in_a_window() -> None:
    import collections
    import time

    first = policy.RateLimiter(channel="limiter-test", per_second=5)
    second = policy.RateLimiter(channel="limiter-test", per_second=5)
    stamps = []
    for i in range(14):
        limiter = first if i % 2 else second
        limiter.acquire()
        stamps.append(limiter.window)  # the one-second window that granted this message
        assert limiter.window <= time.time()
    per_window = collections.Counter(stamps)
    assert max(per_window.values()) <= 5
    assert len(per_window) >= 3  # 14 messages at 5/s need at least three one-second windows


@pytest.mark.django_db
def test_rate_limit_take__block_over_the_limit__partly_granted_then_wait() -> None:
    import time_machine

    with time_machine.travel(dt.datetime(2026, 3, 2, 12, 0, 0, 250_000, tzinfo=UTC), tick=False):
        assert policy.rate_limit_take(channel="take-test", per_second=4, wanted=3)[:2] == (3, 0.0)
        assert policy.rate_limit_take(channel="take-test", per_second=4, wanted=3)[:2] == (1, 0.0)
        granted, wait, _ = policy.rate_limit_take(channel="take-test", per_second=4, wanted=3)
        assert granted == 0 and wait == pytest.approx(0.75)
