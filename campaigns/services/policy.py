"""The send policy, one engine for every campaign: consent, quiet hours and frequency caps
(both in the customer's timezone), and per-channel rate limits shared by every worker.

- **Consent**: ``Customer.can_receive(channel)`` (contact point, consent, no later opt-out).
- **Quiet hours**: a send that would fall inside the channel's local quiet window is held
  until the window ends (``not_before``); the sweeper releases it then.
- **Caps**: a message takes a ``CapSlot`` (customer, channel, local day, slot 1..cap) and one
  for the local ISO week. Slots are taken with ``INSERT … ON CONFLICT DO NOTHING RETURNING``,
  so under any concurrency the database hands each slot to exactly one message; no count is
  read and then written.
- **Rate limits**: a fixed one-second window per channel counted with atomic ``incr`` in the
  shared cache (Redis in production), so the limit holds across every worker process. A
  sender takes its tokens in small blocks (one ``incr`` of up to a tenth of the limit) and
  uses them only inside the window that granted them.
- Transactional campaigns are exempt from caps and quiet hours.
"""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from django.core.cache import cache

from campaigns.models import CapSlot, ChannelPolicy
from campaigns.services import bulk


@dataclass(frozen=True)
class Policy:
    channel: str
    daily_cap: int | None = None
    weekly_cap: int | None = None
    quiet_start: dt.time | None = None
    quiet_end: dt.time | None = None
    rate_per_second: int | None = None


def policies_get() -> dict[str, Policy]:
    return {
        row.channel: Policy(
            channel=row.channel,
            daily_cap=row.daily_cap,
            weekly_cap=row.weekly_cap,
            quiet_start=row.quiet_start,
            quiet_end=row.quiet_end,
            rate_per_second=row.rate_per_second,
        )
        for row in ChannelPolicy.objects.all()
    }


@lru_cache(maxsize=1024)
def zone(name: str) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def _in_window(local: dt.time, start: dt.time, end: dt.time) -> bool:
    if start == end:
        return False
    if start < end:
        return start <= local < end
    return local >= start or local < end  # the window wraps midnight, e.g. 21:00–08:00


def quiet_until(policy: Policy | None, *, tz: str, at: dt.datetime) -> dt.datetime | None:
    """When the quiet window around ``at`` ends (UTC), or ``None`` if ``at`` is not quiet."""
    if policy is None or policy.quiet_start is None or policy.quiet_end is None:
        return None
    local = at.astimezone(zone(tz))
    if not _in_window(local.time(), policy.quiet_start, policy.quiet_end):
        return None
    end_date = local.date()
    if local.time() >= policy.quiet_end:
        end_date += dt.timedelta(days=1)
    opens = dt.datetime.combine(end_date, policy.quiet_end, tzinfo=zone(tz))
    return opens.astimezone(dt.UTC)


def local_periods(*, tz: str, at: dt.datetime) -> tuple[dt.date, dt.date]:
    """The customer's local day and the Monday of their local ISO week at ``at``."""
    day = at.astimezone(zone(tz)).date()
    return day, day - dt.timedelta(days=day.weekday())


@dataclass(frozen=True)
class CapRequest:
    """One message asking for cap slots: ``ref`` identifies it to the caller."""

    ref: int
    customer_id: int
    channel: str
    day: dt.date
    week: dt.date


def _insert_slots(rows: Sequence[tuple[CapRequest, str, dt.date, int]], now: dt.datetime) -> set[int]:
    """Insert slot rows, skipping taken ones (one ``INSERT … SELECT … ON CONFLICT DO
    NOTHING RETURNING``); return the refs that got theirs."""
    if not rows:
        return set()
    # A stable order keeps concurrent inserters from taking keys in opposite orders.
    ordered = sorted(rows, key=lambda r: (r[0].customer_id, r[0].channel, r[1], r[2], r[3]))
    inserted = bulk.rows_insert(
        CapSlot,
        ("customer", "channel", "period", "period_start", "slot", "delivery", "created_at"),
        [(r.customer_id, r.channel, period, start, slot, r.ref, now) for r, period, start, slot in ordered],
        returning=("delivery",),
        skip_conflicts=True,
    )
    return {ref for (ref,) in inserted}


def _take_period(
    requests: Sequence[CapRequest], *, period: str, cap: int, now: dt.datetime
) -> tuple[set[int], list[tuple[CapRequest, int]]]:
    """Try slots 1..cap in rounds; return (refs that got a slot, the slots they got)."""
    remaining = list(requests)
    taken: set[int] = set()
    slots: list[tuple[CapRequest, int]] = []
    for slot in range(1, cap + 1):
        if not remaining:
            break
        rows = [(r, period, r.day if period == CapSlot.Period.DAY else r.week, slot) for r in remaining]
        got = _insert_slots(rows, now)
        taken |= got
        slots += [(r, slot) for r in remaining if r.ref in got]
        remaining = [r for r in remaining if r.ref not in got]
    return taken, slots


def cap_slots_take(*, requests: Sequence[CapRequest], policies: dict[str, Policy], now: dt.datetime) -> set[int]:
    """Take a daily and a weekly slot for each request (delivery ids as ``ref``, one request
    per delivery); return the refs that are over a cap. Must run inside the transaction that
    creates the deliveries, so a rolled-back decision frees its slots."""
    capped: set[int] = set()
    by_channel: dict[str, list[CapRequest]] = {}
    for request in requests:
        by_channel.setdefault(request.channel, []).append(request)
    for channel, channel_requests in by_channel.items():
        policy = policies.get(channel)
        if policy is None:
            continue
        candidates = channel_requests
        day_slots: list[tuple[CapRequest, int]] = []
        if policy.daily_cap is not None:
            taken, day_slots = _take_period(candidates, period=CapSlot.Period.DAY, cap=policy.daily_cap, now=now)
            capped |= {r.ref for r in candidates if r.ref not in taken}
            candidates = [r for r in candidates if r.ref in taken]
        if policy.weekly_cap is not None and candidates:
            taken, _ = _take_period(candidates, period=CapSlot.Period.WEEK, cap=policy.weekly_cap, now=now)
            over_week = {r.ref for r in candidates if r.ref not in taken}
            capped |= over_week
            # Give back the day slots of messages the weekly cap refused.
            _release([(r, slot) for r, slot in day_slots if r.ref in over_week], period=CapSlot.Period.DAY)
    return capped


def _release(slots: Iterable[tuple[CapRequest, int]], *, period: str) -> None:
    for request, slot in slots:
        CapSlot.objects.filter(
            customer_id=request.customer_id,
            channel=request.channel,
            period=period,
            period_start=request.day if period == CapSlot.Period.DAY else request.week,
            slot=slot,
        ).delete()


def rate_limit_wait(*, channel: str, per_second: int | None) -> float:
    """Count one message against the channel's shared one-second window; return how long
    to wait before sending (0 when the message fits in the current window)."""
    if not per_second:
        return 0.0
    now = time.time()
    window = int(now)
    key = f"campaigns:rate:{channel}:{window}"
    cache.add(key, 0, timeout=5)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=5)
        count = 1
    if count <= per_second:
        return 0.0
    return max(0.001, window + 1 - now)


def rate_limit_acquire(*, channel: str, per_second: int | None, max_wait: float = 60.0) -> None:
    """Block until the channel's shared rate limit lets one message through."""
    waited = 0.0
    while waited < max_wait:
        delay = rate_limit_wait(channel=channel, per_second=per_second)
        if delay <= 0:
            return
        time.sleep(delay)
        waited += delay


def rate_limit_take(*, channel: str, per_second: int, wanted: int) -> tuple[int, float, int]:
    """Take up to ``wanted`` messages from the channel's current one-second window with one
    atomic ``incr``; return (granted, seconds to wait when none was granted, the window)."""
    now = time.time()
    window = int(now)
    key = f"campaigns:rate:{channel}:{window}"
    cache.add(key, 0, timeout=5)
    try:
        count = cache.incr(key, wanted)
    except ValueError:  # expired between add and incr
        cache.add(key, wanted, timeout=5)
        count = wanted
    granted = max(0, min(wanted, per_second - (count - wanted)))
    return granted, (0.0 if granted else max(0.001, window + 1 - now)), window


class RateLimiter:
    """One process's view of a channel's shared rate limit: ``acquire()`` before each
    message. Tokens are taken in blocks (one cache round trip per block, not per message)
    and are only spent in the one-second window that granted them, so the limit holds
    across every worker however the blocks are spread."""

    def __init__(self, *, channel: str, per_second: int | None, max_wait: float = 60.0) -> None:
        self.channel = channel
        self.per_second = per_second
        self.block = max(1, min(50, (per_second or 0) // 10))
        self.max_wait = max_wait
        self.allowance = 0
        self.window = 0

    def acquire(self) -> None:
        if not self.per_second:
            return
        if self.allowance > 0 and int(time.time()) == self.window:
            self.allowance -= 1
            return
        waited = 0.0
        while True:
            granted, delay, window = rate_limit_take(
                channel=self.channel, per_second=self.per_second, wanted=self.block
            )
            if granted:
                self.window, self.allowance = window, granted - 1
                return
            if waited >= self.max_wait:  # as rate_limit_acquire: never block a task forever
                return
            time.sleep(delay)
            waited += delay
