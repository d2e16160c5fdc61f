"""Celery entry points. Each task takes ids, re-reads its rows, and calls one service;
every one is safe to run twice (``acks_late``: a task interrupted by a crash runs again)."""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

from billiard.exceptions import WorkerLostError
from celery import shared_task
from celery.signals import worker_ready
from celery.worker.request import Request
from django.db import Error as DatabaseError
from django.db import OperationalError, close_old_connections
from django.utils import timezone

from campaigns.models import Campaign, Delivery
from campaigns.services import delivery, lifecycle, outbox, triggers

logger = logging.getLogger(__name__)

# Retries are scheduled well inside the broker's visibility timeout (1 h): schedules that
# are further away live in the database (not_before) and the tick picks them up.
MAX_COUNTDOWN_SECONDS = delivery.BROKER_COUNTDOWN_MAX_SECONDS


class DeliveryRequest(Request):
    """The worker's main process learns that the pool process running a send died
    (``WorkerLostError``: killed, out of memory) before the message is requeued
    (``task_reject_on_worker_lost``): it puts that process's claims back first, so the
    redelivered task claims and sends them at once instead of after the lease."""

    def on_failure(self, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        exc = getattr(exc_info, "exception", None)
        exc = getattr(exc, "exc", exc)  # ExceptionWithTraceback
        if isinstance(exc, WorkerLostError | SystemExit | KeyboardInterrupt) and self.worker_pid:
            try:
                close_old_connections()
                outbox.deliveries_release_dead_claims(hostname=self.hostname, pid=int(self.worker_pid))
            except Exception:  # the tick and the lease are the backstops
                logger.exception("releasing the claims of lost pool process %s failed", self.worker_pid)
        return super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)


@shared_task(
    name=outbox.TASK_DELIVERIES_SEND,
    bind=True,
    acks_late=True,
    ignore_result=True,
    Request="campaigns.tasks:DeliveryRequest",
    max_retries=5,
)
def deliveries_send(self: Any, delivery_ids: list[int]) -> dict[str, int]:
    close_old_connections()
    worker = outbox.worker_token(self.request.hostname)
    try:
        report = delivery.deliveries_send(delivery_ids=delivery_ids, worker=worker)
    except DatabaseError as exc:  # claims already put back (delivery._claims_release): try again shortly
        close_old_connections()
        raise self.retry(exc=exc, countdown=1 + 2 * self.request.retries) from exc
    if report.retry_ids:
        countdown = max(0.0, (report.retry_at - timezone.now()).total_seconds()) if report.retry_at else 0.0
        outbox.deliveries_enqueue(delivery_ids=report.retry_ids, countdown=min(countdown, MAX_COUNTDOWN_SECONDS))
    return {"claimed": report.claimed, "sent": report.sent, "failed": report.failed, "retried": report.retried}


@shared_task(name=outbox.TASK_AUDIENCE_RESOLVE, acks_late=True, ignore_result=True)
def campaign_audience_resolve(campaign_id: int) -> int:
    close_old_connections()
    return lifecycle.campaign_audience_resolve(campaign_id=campaign_id)


@shared_task(
    name=outbox.TASK_AUDIENCE_BATCH_DECIDE,
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=5,
)
def audience_batch_decide(self: Any, batch_id: int) -> int:
    close_old_connections()
    try:
        return lifecycle.audience_batch_decide(batch_id=batch_id).recipients
    except OperationalError as exc:  # deadlock or serialization failure under concurrency: try again
        logger.warning("audience batch %s: %r; retrying", batch_id, exc)
        raise self.retry(exc=exc, countdown=1 + self.request.retries * 2) from exc


@shared_task(name="campaigns.triggers_process", acks_late=True, ignore_result=True)
def campaign_triggers_process(campaign_id: int) -> int:
    close_old_connections()
    return triggers.campaign_triggers_process(campaign_id=campaign_id)


@shared_task(name="campaigns.tick", ignore_result=True)
def campaigns_tick() -> dict[str, int]:
    """The periodic task (django-celery-beat, every 10 s): start what is due, finish what
    ended, resolve audiences left unresolved, sweep the outbox, and process triggers."""
    close_old_connections()
    return tick_run()


def tick_run(now: dt.datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    started = lifecycle.campaigns_start_due(now=now)
    finished = lifecycle.campaigns_finish_due(now=now)
    unresolved = lifecycle.campaigns_unresolved(now=now)
    for campaign_id in unresolved:  # launched while the broker was down, or the resolve task was lost
        campaign_audience_resolve.delay(campaign_id)
    swept = outbox.outbox_sweep(now=now)
    triggered = Campaign.objects.filter(status=Campaign.Status.RUNNING).exclude(trigger=Campaign.Trigger.BROADCAST)
    for campaign_id in triggered.values_list("pk", flat=True):
        campaign_triggers_process.delay(campaign_id)
    return {
        "started": len(started),
        "finished": len(finished),
        "resolved": len(unresolved),
        "released": swept.released,
        "enqueued": swept.enqueued,
        "batches": swept.batches,
    }


@shared_task(name="campaigns.noop", ignore_result=True)
def noop() -> None:
    """Does nothing: the benchmark's anchor for raw broker + worker throughput."""


@worker_ready.connect
def _release_dead_claims(sender: Any = None, **_: Any) -> None:
    hostname = getattr(sender, "hostname", None)
    if not hostname:
        return
    try:
        released = outbox.deliveries_release_dead_claims(hostname=hostname)
    except Exception:  # recovery must not stop the worker; the lease expiry is the backstop
        logger.exception("releasing claims of dead processes failed")
        return
    if released:
        pending = Delivery.objects.filter(
            status=Delivery.Status.PENDING, enqueued_at__isnull=True, claimed_by__startswith=f"{hostname}:"
        ).values_list("pk", flat=True)
        outbox.deliveries_enqueue(delivery_ids=list(pending))
    logger.info("worker %s ready (pid %s)", hostname, os.getpid())
