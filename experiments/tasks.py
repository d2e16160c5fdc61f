"""Celery entry points of the experiments app. Each takes ids, re-reads its rows, returns
early when the row is gone, and calls one service; every one is safe to run twice
(``acks_late``): assignments and conversions are written with ``ON CONFLICT``."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import shared_task
from django.db import OperationalError, close_old_connections, connection
from django.utils import timezone

from experiments import services
from experiments.models import Experiment, Metric

logger = logging.getLogger(__name__)


def _fresh_connection() -> None:
    # Drop a connection the worker can no longer use -- unless the task runs eagerly
    # inside a transaction (a test, an eager call in a request), which it must not close.
    if not connection.in_atomic_block:
        close_old_connections()


# Conversions keep arriving after an experiment stops (windows end after the last
# exposure): stopped experiments are refreshed for as long as their longest window.
DEFAULT_WINDOW = dt.timedelta(days=7)


@shared_task(name="experiments.audience_assign", bind=True, acks_late=True, ignore_result=True, max_retries=3)
def experiment_audience_assign(self: Any, experiment_id: int) -> dict[str, Any] | None:
    """Assign a running experiment's whole targeted audience (idempotent)."""
    _fresh_connection()
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None:
        return None
    try:
        result = services.audience_assign(experiment=experiment)
    except OperationalError as exc:  # lock timeout, serialization failure: transient
        raise self.retry(exc=exc, countdown=5 * (self.request.retries + 1)) from exc
    logger.info("experiment %s: audience assigned", experiment.key, extra={"result": result.__dict__})
    return {"assigned": result.assigned, "already_assigned": result.already_assigned, "excluded": result.excluded}


@shared_task(name="experiments.conversions_refresh", bind=True, acks_late=True, ignore_result=True, max_retries=3)
def experiment_conversions_refresh(self: Any, experiment_id: int, full: bool = False) -> dict[int, int] | None:
    _fresh_connection()
    experiment = Experiment.objects.filter(pk=experiment_id).first()
    if experiment is None:
        return None
    try:
        return services.conversions_refresh(experiment=experiment, full=full)
    except OperationalError as exc:
        raise self.retry(exc=exc, countdown=5 * (self.request.retries + 1)) from exc


@shared_task(name="experiments.conversions_refresh_due", acks_late=True, ignore_result=True)
def conversions_refresh_due(full: bool = False) -> list[int]:
    """Periodic: refresh the conversions of every running or paused experiment, and of
    stopped ones whose conversion windows are still open. Enqueues one task each."""
    _fresh_connection()
    now = timezone.now()
    ids = list(Experiment.objects.active().values_list("pk", flat=True))
    for experiment in Experiment.objects.filter(status=Experiment.Status.STOPPED, stopped_at__isnull=False):
        hours = Metric.objects.filter(experiment=experiment).values_list("window_hours", flat=True)
        window = dt.timedelta(hours=max(hours, default=0)) or DEFAULT_WINDOW
        if experiment.stopped_at + window + dt.timedelta(days=1) >= now:
            ids.append(experiment.pk)
    for experiment_id in ids:
        experiment_conversions_refresh.delay(experiment_id, full)
    return ids
