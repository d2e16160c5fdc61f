"""The outbox: publishing delivery ids to the broker, and the sweeper that makes the
database, not the broker, the source of truth.

A delivery row is created ``pending`` in the transaction that decides it; its id is
published after commit. Whatever happens to that message (broker down at launch, worker
killed, message lost), the sweeper finds the row again:

- ``sending`` rows whose claim lease expired (their worker died mid-batch) are in doubt and
  go back to ``pending`` (or ``failed`` once out of tries) and are resent with the same key;
- ``held`` rows whose quiet hours ended become ``pending``;
- ``pending`` rows that are due and were not enqueued recently are published again;
- audience batches not decided yet are published again.

Publishing twice is harmless: a task claims rows with a conditional UPDATE, so a row is
sent by at most one task.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import socket
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from celery import current_app
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from campaigns import conf
from campaigns.models import AudienceBatch, Campaign, Delivery
from campaigns.services import bulk
from config import queues

logger = logging.getLogger(__name__)

PUBLISH_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}
# Deciding an audience batch waits behind sending, so a worker sends what is decided before
# it decides more and a broadcast's sending overlaps its deciding (measured with
# bench/delivery.py at 30,000 messages: 13-20% longer with decides at the default priority,
# every batch decided before the first send). kombu's Redis transport emulates priorities with one list per step of
# ``priority_steps`` (default 0, 3, 6, 9) and BRPOPs them in that order: the LOWER number is
# served first; sends are published at the default 0. Brokers without priorities (the
# filesystem transport of the embedded default) ignore it: then batches and sends are FIFO.
DECIDE_PRIORITY = 6

# The services publish tasks by name (campaigns.tasks imports the services, so the services
# must not import it back). The name resolves to the registered task when campaigns.tasks is
# loaded in this process (its options, and eager mode, apply) and is sent by name otherwise
# (``Celery.send_task``): the worker has it registered either way.
TASK_DELIVERIES_SEND = "campaigns.deliveries_send"
TASK_AUDIENCE_RESOLVE = "campaigns.audience_resolve"
TASK_AUDIENCE_BATCH_DECIDE = "campaigns.audience_batch_decide"


def task_publish(name: str, *, args: Sequence[Any], **options: Any) -> None:
    """Publish the task called ``name`` (see above); broker errors propagate to the caller."""
    task = current_app.tasks.get(name)
    if task is None:
        current_app.send_task(name, args=list(args), **options)
    else:
        task.apply_async(args=list(args), **options)


SWEEP_LIMIT = 500_000


def chunked(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def deliveries_enqueue(
    *,
    delivery_ids: Sequence[int],
    countdown: float | None = None,
    marked: bool = False,
    channels: Mapping[int, str] | None = None,
) -> int:
    """Publish ``deliveries_send`` tasks of ``task_batch`` ids; return how many ids were
    published. A broker failure is logged, not raised: the rows stay in the outbox.

    ``enqueued_at`` tells the sweeper when a pending row was last published (it waits
    ``requeue_after_seconds`` before publishing it again). Rows are stamped after they are
    published, except ``marked`` rows, which were stamped when inserted (the decide
    transaction writes ``enqueued_at`` with the row, saving one write per message): for
    those only the ids the broker refused are cleared, so the next sweep publishes them.
    A process that dies between the commit and the publish leaves marked rows stamped:
    the sweeper publishes them ``requeue_after_seconds`` later.

    Each task goes to its deliveries' channel's queue (``config.queues.send_queue``);
    ``channels`` (id -> channel), when the caller has them, saves reading them."""
    ids = sorted(delivery_ids)
    published: list[int] = []
    failed = False
    for queue, channel_ids in _by_send_queue(ids, channels).items():
        for chunk in chunked(channel_ids, conf.get().task_batch):
            try:
                task_publish(
                    TASK_DELIVERIES_SEND,
                    args=[chunk],
                    countdown=countdown,
                    queue=queue,
                    retry=True,
                    retry_policy=PUBLISH_RETRY,
                )
            except Exception as exc:  # noqa: BLE001 - any broker failure: the sweeper publishes later
                left = len(ids) - len(published)
                logger.warning("broker unavailable, %d deliveries left in the outbox: %r", left, exc)
                failed = True
                break
            published += chunk
        if failed:
            break
    if marked:
        done = set(published)
        _stamp([pk for pk in ids if pk not in done], None)
    elif published and countdown is None:
        _stamp(published, timezone.now())
    return len(published)


def _by_send_queue(ids: Sequence[int], channels: Mapping[int, str] | None) -> dict[str, list[int]]:
    """Sorted ``ids`` grouped by their channel's sending queue (``config.queues``), the
    channels read in one query per 5,000 ids unless given: each channel's workers take only
    its messages. An id whose row is gone goes to the first channel's queue (the task skips it)."""
    channel_of: dict[int, str] = dict(channels or {})
    for chunk in chunked([pk for pk in ids if pk not in channel_of], 5000):
        channel_of.update(Delivery.objects.filter(bulk.id_in(Delivery, "id", chunk)).values_list("id", "channel"))
    grouped: dict[str, list[int]] = {}
    for pk in ids:
        grouped.setdefault(queues.send_queue(channel_of.get(pk, "")), []).append(pk)
    return grouped


def _stamp(delivery_ids: Sequence[int], enqueued_at: dt.datetime | None) -> None:
    for chunk in chunked(delivery_ids, 5000):
        Delivery.objects.filter(bulk.id_in(Delivery, "id", chunk), status=Delivery.Status.PENDING).update(
            enqueued_at=enqueued_at
        )


def deliveries_enqueue_on_commit(
    *, delivery_ids: Sequence[int], marked: bool = False, channels: Mapping[int, str] | None = None
) -> None:
    ids = list(delivery_ids)
    transaction.on_commit(lambda: deliveries_enqueue(delivery_ids=ids, marked=marked, channels=channels))


def audience_batches_enqueue(*, batch_ids: Sequence[int]) -> int:
    published: list[int] = []
    for batch_id in batch_ids:
        try:
            task_publish(
                TASK_AUDIENCE_BATCH_DECIDE,
                args=[batch_id],
                retry=True,
                retry_policy=PUBLISH_RETRY,
                priority=DECIDE_PRIORITY,
            )
        except Exception as exc:  # noqa: BLE001 - the sweeper publishes later
            logger.warning("broker unavailable, audience batches left for the sweeper: %r", exc)
            break
        published.append(batch_id)
    if published:
        AudienceBatch.objects.filter(pk__in=published).update(enqueued_at=timezone.now())
    return len(published)


def worker_token(hostname: str | None = None) -> str:
    """Who claims a row: the worker's node name and the process id."""
    return f"{hostname or socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class SweepResult:
    released: int = 0
    gave_up: int = 0
    unheld: int = 0
    enqueued: int = 0
    batches: int = 0


def outbox_sweep(*, now: dt.datetime | None = None) -> SweepResult:
    settings = conf.get()
    now = now or timezone.now()
    expired = Delivery.objects.filter(status=Delivery.Status.SENDING, lease_until__lt=now)
    # Out of tries: the channel's retry period is over, or (channels without one) max_attempts.
    periods = {channel: period for channel, period in settings.retry_periods.items() if period > 0}
    out_of_tries = ~Q(channel__in=list(periods)) & Q(attempts__gte=F("max_attempts"))
    for channel, period in periods.items():
        out_of_tries |= Q(channel=channel, first_tried_at__lt=now - dt.timedelta(seconds=period))
    gave_up = expired.filter(out_of_tries).update(
        status=Delivery.Status.FAILED,
        reason=Delivery.Reason.GAVE_UP,
        last_error="Out of tries; the last try's worker was lost before it finished.",
        lease_until=None,
    )
    released = expired.update(
        status=Delivery.Status.PENDING,
        enqueued_at=None,
        lease_until=None,
        last_error="In doubt: the worker's claim expired before it finished; resent with the same key.",
    )
    released += deliveries_release_lost_sessions()
    unheld = Delivery.objects.filter(status=Delivery.Status.HELD, not_before__lte=now).update(
        status=Delivery.Status.PENDING, enqueued_at=None
    )
    stale_before = now - dt.timedelta(seconds=settings.requeue_after_seconds)
    stale = (
        Delivery.objects.filter(status=Delivery.Status.PENDING, campaign__status=Campaign.Status.RUNNING)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=stale_before))
        .order_by("pk")
        .values_list("pk", "channel")[:SWEEP_LIMIT]
    )
    channels = dict(stale)
    enqueued = deliveries_enqueue(delivery_ids=list(channels), channels=channels)
    batches = list(
        AudienceBatch.objects.filter(done_at__isnull=True, campaign__status=Campaign.Status.RUNNING)
        .filter(Q(enqueued_at__isnull=True) | Q(enqueued_at__lte=stale_before))
        .values_list("pk", flat=True)
    )
    published = audience_batches_enqueue(batch_ids=batches)
    result = SweepResult(released=released, gave_up=gave_up, unheld=unheld, enqueued=enqueued, batches=published)
    if any((released, gave_up, unheld, enqueued, published)):
        logger.info("outbox sweep: %s", result)
    return result


_CLAIM = re.compile(r"^(?P<host>.*):(?P<pid>\d+)(?::pg(?P<session>\d+\.\d+))?$")


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds a claim: ``hostname:pid`` and, on PostgreSQL, ``:pg<backend pid>.<start µs>``
    (``campaigns.services.delivery.claim_token``)."""

    host: str
    pid: int
    session: str  # "" when not keyed by a database session


def claim_owner(claimed_by: str) -> ClaimOwner | None:
    match = _CLAIM.match(claimed_by)
    if match is None:
        return None
    return ClaimOwner(host=match["host"], pid=int(match["pid"]), session=match["session"] or "")


def _claims_put_back(claims: Sequence[str], why: str) -> int:
    if not claims:
        return 0
    return Delivery.objects.filter(status=Delivery.Status.SENDING, claimed_by__in=list(claims)).update(
        status=Delivery.Status.PENDING, enqueued_at=None, lease_until=None, last_error=why
    )


def deliveries_release_dead_claims(*, hostname: str, pid: int | None = None) -> int:
    """Rows claimed by a process of this node that no longer exists are in doubt (the
    worker was killed): put them back without waiting for the lease to expire. Called at
    worker start for every dead process of the node, and by the worker's main process with
    ``pid`` when it sees that pool process die (``campaigns.tasks.DeliveryRequest``). A
    process still alive (an orphaned pool child) keeps its rows until its lease ends."""
    claims = (
        Delivery.objects.filter(status=Delivery.Status.SENDING, claimed_by__startswith=f"{hostname}:")
        .values_list("claimed_by", flat=True)
        .distinct()
    )
    dead = []
    for claimed_by in list(claims):
        owner = claim_owner(claimed_by)
        if owner is None or owner.host != hostname or (pid is not None and owner.pid != pid):
            continue
        if _alive(owner.pid):
            continue
        dead.append(claimed_by)
    released = _claims_put_back(dead, "In doubt: the worker process died while sending; resent with the same key.")
    if released:
        logger.warning("released %d deliveries claimed by dead processes of %s", released, hostname)
    return released


def deliveries_release_lost_sessions() -> int:
    """PostgreSQL: put back rows whose claim was made by a database session that no longer
    exists. A process that dies (killed, its host gone, its container recreated under
    another hostname) loses its session with it, so its claims are released by the next
    tick instead of after the lease. A live process whose session was replaced stops
    sending (``delivery.SessionLost``) before it could send a released row. Sessions
    another role cannot see (no ``backend_start``) are taken as alive."""
    from django.db import connection

    if connection.vendor != "postgresql":
        return 0
    claims = list(
        Delivery.objects.filter(status=Delivery.Status.SENDING)
        .order_by()
        .values_list("claimed_by", flat=True)
        .distinct()
    )
    keyed = {c: owner.session for c in claims if (owner := claim_owner(c)) is not None and owner.session}
    if not keyed:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, (extract(epoch FROM backend_start) * 1000000)::bigint FROM pg_stat_activity "
            "WHERE datname = current_database()"
        )
        rows = cursor.fetchall()
    hidden = {str(pid) for pid, started in rows if started is None}
    alive = {f"{pid}.{started}" for pid, started in rows if started is not None}
    lost = [c for c, session in keyed.items() if session not in alive and session.split(".")[0] not in hidden]
    released = _claims_put_back(
        lost, "In doubt: the claiming process's database session ended while sending; resent with the same key."
    )
    if released:
        logger.warning("released %d deliveries claimed by ended database sessions", released)
    return released


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs. A zombie does not: a pool process
    killed with its worker (SIGKILL to the group) is orphaned and stays a zombie until the
    container's PID 1 reaps it, which an init that does not reap (a plain ``docker run``
    without ``--init``) never does, and a busy one does late; ``kill(pid, 0)`` succeeds on
    a zombie, so its claims waited for their lease instead of being put back at restart."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # /proc/<pid>/stat: "pid (comm) state …"; comm may hold spaces and parentheses.
        with open(f"/proc/{pid}/stat", "rb") as handle:
            state = handle.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):  # no procfs (not Linux), or the process ended meanwhile
        return True
    return state not in (b"Z", b"X")
