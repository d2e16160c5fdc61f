"""Celery entry points: take ids, re-fetch, call one service, record the outcome.

Idempotent by construction: a recompute is a no-op while the same target runs (the guard
in ``segments.services.recompute``), and rerunning a finished one rewrites nothing that
did not change. Transient database errors are retried with backoff.
"""

from __future__ import annotations

from typing import Any

from celery import shared_task

from segments.analytics.runs import analytics_run_execute
from segments.analytics.runs import analytics_runs_purge as analytics_runs_purge_service
from segments.models import RecomputeRun
from segments.services.partitions import event_partitions_ensure as partitions_ensure
from segments.services.recompute import dimension_recompute, segment_recompute, tag_rule_recompute
from segments.services.recompute import recompute_all as recompute_all_service


@shared_task(bind=True, max_retries=3, retry_backoff=True)
def recompute_dimension(self: Any, dimension_id: int, trigger: str = RecomputeRun.Trigger.ADMIN) -> dict[str, Any]:
    outcome = dimension_recompute(dimension_id=dimension_id, trigger=trigger)
    if outcome.retryable:
        raise self.retry(countdown=30 * 2**self.request.retries)
    return outcome.as_dict()


@shared_task(bind=True, max_retries=3, retry_backoff=True)
def recompute_segment(self: Any, segment_id: int, trigger: str = RecomputeRun.Trigger.ADMIN) -> dict[str, Any]:
    outcome = segment_recompute(segment_id=segment_id, trigger=trigger)
    if outcome.retryable:
        raise self.retry(countdown=30 * 2**self.request.retries)
    return outcome.as_dict()


@shared_task(bind=True, max_retries=3, retry_backoff=True)
def recompute_tag_rule(self: Any, tag_rule_id: int, trigger: str = RecomputeRun.Trigger.ADMIN) -> dict[str, Any]:
    outcome = tag_rule_recompute(tag_rule_id=tag_rule_id, trigger=trigger)
    if outcome.retryable:
        raise self.retry(countdown=30 * 2**self.request.retries)
    return outcome.as_dict()


@shared_task
def recompute_all() -> list[dict[str, Any]]:
    """The nightly schedule: every active dimension, tag rule, then segment."""
    return [outcome.as_dict() for outcome in recompute_all_service(trigger=RecomputeRun.Trigger.SCHEDULE)]


@shared_task
def event_partitions_ensure() -> list[str]:
    """Daily: the monthly event partitions for this month and the next three (PostgreSQL)."""
    return partitions_ensure()


@shared_task(name="segments.analytics_run")
def analytics_run(run_id: str) -> str:
    """A retention table or funnel asked for as a run (``segments.analytics.runs``): on the
    ``reports`` queue, so a long one waits behind reports only. Not retried: a failure is
    recorded on the run for its caller, who may ask again."""
    return analytics_run_execute(run_id=run_id)


@shared_task(name="segments.analytics_runs_purge")
def analytics_runs_purge() -> int:
    """Daily: delete analytics runs asked more than GROWTH_ANALYTICS_RUN_KEEP_DAYS ago."""
    return analytics_runs_purge_service()
