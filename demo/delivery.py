"""Driving the campaigns until their messages have gone out, and knowing when that is.

Two modes:

- ``worker`` (``make demo``): a real Celery worker consumes the broker. Launching a
  broadcast publishes its audience resolution; the worker splits it into batches, decides
  them and sends the deliveries. Triggered campaigns are normally advanced by the
  periodic tick (every 10 s, 1,000 events per campaign per tick); the demo does not wait
  for ticks and publishes ``campaigns.triggers_process`` itself, one task in flight per
  campaign. Every 30 s it also runs the outbox sweeper (as the tick would) so a lost
  message cannot stall it. It polls the database until everything is settled or the
  timeout passes.
- ``inline`` (tests): the same services the tasks call, in this process, in order.

"Settled": every broadcast resolved and all its batches decided, every triggered campaign's
cursor past the last event of its trigger type, and no delivery pending (due) or sending.
Deliveries held for quiet hours, or waiting for a retry, are counted as scheduled: the
served worker and beat send them when they are due.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from django.db.models import Count, Q
from django.utils import timezone

from campaigns.models import AudienceBatch, Campaign, Delivery
from campaigns.services import lifecycle, outbox, triggers
from campaigns.services.delivery import deliveries_send
from config.progress import progress_bar
from segments.selectors import events_queryset

SWEEP_EVERY_SECONDS = 30.0
TRIGGER_TASK_PATIENCE_SECONDS = 30.0
POLL_SECONDS = 0.5
NO_PROGRESS_LIMIT_SECONDS = 120.0


class NoWorker(RuntimeError):
    """Nothing moved for a long time: no worker seems to consume the broker."""


@dataclass(frozen=True)
class SettleState:
    unresolved: int = 0
    batches_open: int = 0
    triggers_behind: tuple[int, ...] = ()  # campaign ids whose cursor is behind
    due: int = 0  # pending and due, or sending
    scheduled: int = 0  # held for quiet hours, or pending a retry later
    by_status: dict[str, int] = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return not (self.unresolved or self.batches_open or self.triggers_behind or self.due)

    @property
    def to_send(self) -> int:
        return sum(n for status, n in self.by_status.items() if status != Delivery.Status.SUPPRESSED)

    @property
    def done(self) -> int:
        return self.to_send - self.due


def _trigger_behind(campaign: Campaign) -> bool:
    code = campaign.trigger_event_type.code if campaign.trigger_event_type else None
    if code is None:
        return False
    return events_queryset(event_type_codes=[code]).filter(pk__gt=campaign.trigger_cursor).exists()


def settle_state(*, campaign_ids: Sequence[int], now: dt.datetime | None = None) -> SettleState:
    now = now or timezone.now()
    campaigns = list(Campaign.objects.filter(pk__in=campaign_ids).select_related("trigger_event_type"))
    running = [c for c in campaigns if c.status == Campaign.Status.RUNNING]
    unresolved = sum(1 for c in running if not c.is_triggered and c.audience_resolved_at is None)
    batches_open = AudienceBatch.objects.filter(campaign_id__in=[c.pk for c in running], done_at__isnull=True).count()
    behind = tuple(c.pk for c in running if c.is_triggered and _trigger_behind(c))
    deliveries = Delivery.objects.filter(campaign_id__in=campaign_ids)
    by_status = {row["status"]: row["n"] for row in deliveries.values("status").annotate(n=Count("pk"))}
    due_q = Q(status=Delivery.Status.SENDING) | (
        Q(status=Delivery.Status.PENDING) & (Q(not_before__isnull=True) | Q(not_before__lte=now))
    )
    due = deliveries.filter(due_q, campaign__status=Campaign.Status.RUNNING).count()
    open_total = by_status.get(Delivery.Status.PENDING, 0) + by_status.get(Delivery.Status.SENDING, 0)
    scheduled = by_status.get(Delivery.Status.HELD, 0) + max(0, open_total - due)
    return SettleState(unresolved, batches_open, behind, due, scheduled, by_status)


# --- Inline -------------------------------------------------------------------------------


def triggers_catch_up(*, campaign_ids: Sequence[int]) -> int:
    """Advance triggered campaigns' cursors to the end of the event stream, in this process
    (1,000 events per call, what one tick does). Used for the history the import just
    loaded: its events are old, so the campaigns skip almost all of them, but a tick at a
    time would take minutes to get through them."""
    read = 0
    for campaign_id in campaign_ids:
        while True:
            n = triggers.campaign_triggers_process(campaign_id=campaign_id)
            read += n
            if n < triggers.TRIGGER_BATCH:
                break
    return read


def drive_inline(*, campaign_ids: Sequence[int]) -> SettleState:
    """Do in this process what the tasks do, until settled."""
    worker = f"demo-inline:{os.getpid()}"
    for _ in range(1000):
        for campaign in Campaign.objects.filter(
            pk__in=campaign_ids, status=Campaign.Status.RUNNING, trigger=Campaign.Trigger.BROADCAST
        ):
            lifecycle.campaign_audience_resolve(campaign_id=campaign.pk)
        for batch_id in AudienceBatch.objects.filter(campaign_id__in=campaign_ids, done_at__isnull=True).values_list(
            "pk", flat=True
        ):
            lifecycle.audience_batch_decide(batch_id=batch_id)
        triggered = Campaign.objects.filter(pk__in=campaign_ids, status=Campaign.Status.RUNNING).exclude(
            trigger=Campaign.Trigger.BROADCAST
        )
        triggers_catch_up(campaign_ids=list(triggered.values_list("pk", flat=True)))
        now = timezone.now()
        due = list(
            Delivery.objects.filter(campaign_id__in=campaign_ids, status=Delivery.Status.PENDING)
            .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
            .order_by("pk")
            .values_list("pk", flat=True)
        )
        for chunk in outbox.chunked(due, 1000):
            deliveries_send(delivery_ids=chunk, worker=worker)
        state = settle_state(campaign_ids=campaign_ids)
        if state.settled:
            return state
    return settle_state(campaign_ids=campaign_ids)


# --- Worker ---------------------------------------------------------------------------------


def _publish_triggers(campaign_id: int) -> None:
    from campaigns.tasks import campaign_triggers_process

    campaign_triggers_process.apply_async(args=[campaign_id], retry=True, retry_policy=outbox.PUBLISH_RETRY)


def _sweep(campaign_ids: Sequence[int]) -> None:
    """What the tick does for stalled work: republish stale deliveries and batches, and
    broadcasts whose audience resolution was lost."""
    from campaigns.tasks import campaign_audience_resolve

    outbox.outbox_sweep()
    for campaign_id in lifecycle.campaigns_unresolved():
        if campaign_id in campaign_ids:
            campaign_audience_resolve.delay(campaign_id)


def drive_worker(
    *, campaign_ids: Sequence[int], timeout: float, progress: bool | None = None
) -> tuple[SettleState, bool]:
    """Poll until settled (True) or ``timeout`` seconds passed (False); see the module doc."""
    started = time.monotonic()
    in_flight: dict[int, tuple[float, int]] = {}  # campaign id -> (published at, cursor then)
    last_sweep = started
    last_progress, last_marker = started, None
    bar = progress_bar(desc="deliveries", unit="msg", total=0, enabled=progress)
    try:
        while True:
            state = settle_state(campaign_ids=campaign_ids)
            cursors = dict(Campaign.objects.filter(pk__in=state.triggers_behind).values_list("pk", "trigger_cursor"))
            now = time.monotonic()
            for campaign_id in state.triggers_behind:
                published = in_flight.get(campaign_id)
                stale = published is None or now - published[0] > TRIGGER_TASK_PATIENCE_SECONDS
                if stale or cursors.get(campaign_id) != published[1]:
                    _publish_triggers(campaign_id)
                    in_flight[campaign_id] = (now, cursors.get(campaign_id, 0))
            bar.total = max(bar.total or 0, state.to_send)
            bar.n = state.done
            bar.set_postfix_str(
                f"sent {state.by_status.get('sent', 0)}, held {state.by_status.get('held', 0)}, "
                f"batches left {state.batches_open}",
                refresh=False,
            )
            bar.refresh()
            if state.settled:
                return state, True
            marker = (state.done, state.batches_open, state.unresolved, tuple(sorted(cursors.items())))
            if marker != last_marker:
                last_marker, last_progress = marker, now
            elif now - last_progress > NO_PROGRESS_LIMIT_SECONDS:
                raise NoWorker(
                    f"nothing moved for {NO_PROGRESS_LIMIT_SECONDS:.0f} s: is a Celery worker consuming the broker "
                    "(celery -A config worker)? Or run the demo with --inline."
                )
            if now - started > timeout:
                return state, False
            if now - last_sweep > SWEEP_EVERY_SECONDS:
                _sweep(campaign_ids)
                last_sweep = now
            time.sleep(POLL_SECONDS)
    finally:
        bar.close()
