"""Retention tables and funnels computed as a task, with a status (issue 19 item 7).

At a million customers and ten million events a retention table or a funnel is 6-10 s of
SQL: too long for a web worker, and without a status the caller cannot tell "slow" from
"gone". A caller asks for a *run* instead (``analytics_run_request``), gets its id at once,
and reads its status (``analytics_run_get``) until it is done; the task
(``segments.tasks.analytics_run`` on the ``reports`` queue) computes exactly what the
synchronous endpoint would and stores that JSON on the run.

- Validation first: the same parsers as the synchronous endpoints
  (``segments.analytics.query``); a bad parameter raises ``AnalyticsInputError`` and no run
  is created or queued.
- Reuse: the spec is stored canonical (the validated dataclass as sorted JSON) with its
  SHA-256. The same owner asking the same spec gets back a run still in flight, or one done
  less than ``GROWTH["ANALYTICS_RUN_FRESH_SECONDS"]`` (300 s) ago. A partial unique
  constraint allows one in-flight run per owner and spec: of two racing callers exactly one
  is told "created".
- The instant: a spec without ``as_of`` (retention) or ``end`` (funnel) is computed at the
  run's ``created_at``, the moment it was asked, not when a worker got to it.
- Stuck runs: a run queued longer than ``GROWTH["ANALYTICS_RUN_STUCK_SECONDS"]`` (1800 s),
  or running past the task's hard time limit (below) and a grace, is marked failed when read
  (a worker killed mid-run: with ``acks_late`` the message comes back, but the run is no
  longer ``queued`` and is not claimed twice); asking again then starts a new run.
- Bounded: the task is queued with Celery's time limits (``soft_time_limit`` =
  ``ANALYTICS_RUN_STUCK_SECONDS``, ``time_limit`` a minute more), so a run that never ends
  (a statement waiting on a lock, a replica that stopped answering mid-read: no client-side
  query timeout exists in libpq) is stopped, recorded failed with the reason, and its
  worker process freed for the next run instead of being held for ever.
- Purge: runs asked more than ``GROWTH["ANALYTICS_RUN_KEEP_DAYS"]`` (7) days ago are deleted
  by a daily beat task (``analytics_runs_purge``); a result is kept in full on its run.
- Owners: ``key:<id>`` for an API key (a key sees only its own runs), ``admin`` for the
  staff pages.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import logging
from collections.abc import Mapping
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connections, router, transaction
from django.db.models import Q, QuerySet
from django.utils import timezone

from config.replica import replica_reads
from segments.analytics import exports
from segments.analytics.funnels import funnel
from segments.analytics.query import funnel_spec, retention_spec
from segments.analytics.retention import retention_table
from segments.models import AnalyticsRun, Customer

logger = logging.getLogger(__name__)

# The query-string parameters that make each kind's spec (others, e.g. the admin page's
# ``mode`` or ``download``, do not change the numbers and are not stored).
PARAMETERS = {
    AnalyticsRun.Kind.RETENTION: (
        "anchor",
        "cohort",
        "period",
        "periods",
        "return_events",
        "purchase_event",
        "cohort_from",
        "cohort_to",
        "as_of",
        "breakdown",
    ),
    AnalyticsRun.Kind.FUNNEL: ("preset", "steps", "window_seconds", "order", "start", "end", "breakdown"),
}
PARSERS = {AnalyticsRun.Kind.RETENTION: retention_spec, AnalyticsRun.Kind.FUNNEL: funnel_spec}


def fresh_seconds() -> int:
    return int(settings.GROWTH.get("ANALYTICS_RUN_FRESH_SECONDS", 300))


def keep_days() -> int:
    return int(settings.GROWTH.get("ANALYTICS_RUN_KEEP_DAYS", 7))


def stuck_seconds() -> int:
    return int(settings.GROWTH.get("ANALYTICS_RUN_STUCK_SECONDS", 1800))


def _runs() -> QuerySet[AnalyticsRun]:
    # Read-your-writes: a run is read back right after it is created or updated, so always
    # on the primary, even inside ``replica_reads``.
    return AnalyticsRun.objects.using(router.db_for_write(AnalyticsRun))


def _params(kind: str, params: Mapping[str, str]) -> dict[str, str]:
    return {name: params[name] for name in PARAMETERS[kind] if params.get(name)}  # type: ignore[index]


def canonical_spec(kind: str, params: Mapping[str, str]) -> tuple[dict[str, Any], str]:
    """The validated spec as JSON-ready data and its SHA-256; raises ``AnalyticsInputError``."""
    spec = PARSERS[kind](params)  # type: ignore[index]
    text = json.dumps(dataclasses.asdict(spec), cls=DjangoJSONEncoder, sort_keys=True, separators=(",", ":"))
    return json.loads(text), hashlib.sha256(f"{kind}:{text}".encode()).hexdigest()


# The task's hard time limit is this much after its soft one (``stuck_seconds()``): a worker
# stopped at the soft limit records the failure itself; one killed at the hard limit (or by
# anything else) records nothing, and a read reports the run failed once even that bound has
# passed (plus a grace for the kill and the pool's bookkeeping).
HARD_LIMIT_EXTRA_SECONDS = 60
KILLED_GRACE_SECONDS = 30


def _expire_stuck(runs: QuerySet[AnalyticsRun]) -> None:
    now = timezone.now()

    def why(seconds: int) -> str:
        return f"No result after {seconds} s: the worker was probably stopped mid-run or never got it; ask again."

    # A running run is not given up on while its worker may still stop it at the soft limit and
    # say why (a read at the same instant must not win that race with a vaguer reason).
    running = stuck_seconds() + HARD_LIMIT_EXTRA_SECONDS + KILLED_GRACE_SECONDS
    runs.filter(status=AnalyticsRun.Status.RUNNING, started_at__lt=now - dt.timedelta(seconds=running)).update(
        status=AnalyticsRun.Status.FAILED, finished_at=now, error=why(running)
    )
    runs.filter(status=AnalyticsRun.Status.QUEUED, created_at__lt=now - dt.timedelta(seconds=stuck_seconds())).update(
        status=AnalyticsRun.Status.FAILED, finished_at=now, error=why(stuck_seconds())
    )


def analytics_run_request(
    *,
    kind: str,
    params: Mapping[str, str],
    owner: str,
    api_key: Any = None,
    user: Any = None,
    reuse_failed: bool = False,
) -> tuple[AnalyticsRun, bool]:
    """The run answering ``params`` for ``owner``: a fresh or in-flight one, or a new one
    queued after commit. Returns ``(run, created)``. Bad input raises before anything is written.

    ``reuse_failed``: a run that failed within the freshness bound counts as the answer too
    (the admin page shows its error until asked to retry); an API caller asking again after
    a failure gets a new run."""
    spec, spec_hash = canonical_spec(kind, params)
    same = _runs().filter(owner=owner, kind=kind, spec_hash=spec_hash)
    _expire_stuck(same)
    fresh_from = timezone.now() - dt.timedelta(seconds=fresh_seconds())
    finished = [AnalyticsRun.Status.DONE, *([AnalyticsRun.Status.FAILED] if reuse_failed else [])]
    reusable = Q(status__in=AnalyticsRun.IN_FLIGHT) | Q(status__in=finished, finished_at__gte=fresh_from)
    existing = same.filter(reusable).order_by("-created_at").first()
    if existing is not None:
        return existing, False
    try:
        with transaction.atomic(using=same.db):
            run = _runs().create(
                kind=kind,
                params=_params(kind, params),
                spec=spec,
                spec_hash=spec_hash,
                owner=owner,
                api_key=api_key,
                requested_by=user,
            )
    except IntegrityError:  # another caller created it a moment ago: theirs is the one
        existing = same.filter(status__in=AnalyticsRun.IN_FLIGHT).first()
        if existing is None:
            raise
        return existing, False
    from segments import tasks  # the task module imports this one

    limits = {"soft_time_limit": stuck_seconds(), "time_limit": stuck_seconds() + HARD_LIMIT_EXTRA_SECONDS}
    transaction.on_commit(lambda: tasks.analytics_run.apply_async(args=[str(run.pk)], **limits), using=same.db)
    return run, True


def analytics_runs_purge(*, now: dt.datetime | None = None) -> int:
    """Delete the runs asked more than ``keep_days()`` ago, whatever their status (one still
    in flight after days was lost long ago: the stuck bound is half an hour); returns how
    many. Asking the same question again computes it afresh."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=keep_days())
    deleted, _ = _runs().filter(created_at__lt=cutoff).delete()
    return deleted


def analytics_runs_for_pages() -> bool:
    """Whether the admin's retention and funnel pages compute as a run: more customers than
    ``GROWTH["ANALYTICS_ASYNC_CUSTOMERS"]`` (200,000). A count, not an estimate (tens of
    milliseconds on PostgreSQL at a million customers, an index-only scan)."""
    return Customer.objects.count() > int(settings.GROWTH.get("ANALYTICS_ASYNC_CUSTOMERS", 200_000))


def analytics_run_get(*, run_id: Any, owner: str) -> AnalyticsRun | None:
    """``owner``'s run (a stuck one reported failed), or None: unknown or someone else's."""
    runs = _runs().filter(pk=run_id, owner=owner)
    _expire_stuck(runs)
    return runs.first()


def _compute(run: AnalyticsRun) -> str:
    at = run.created_at
    if run.kind == AnalyticsRun.Kind.RETENTION:
        spec = retention_spec(run.params)
        return exports.to_json(retention_table(spec=dataclasses.replace(spec, as_of=spec.as_of or at)))
    spec = funnel_spec(run.params)
    return exports.to_json(funnel(spec=dataclasses.replace(spec, end=spec.end or at)))


def analytics_run_execute(*, run_id: Any) -> str:
    """Claim a queued run, compute it, record the result or the error. Returns the status
    it ends in; a run not queued any more (done, failed, claimed by another delivery of the
    message) is left alone."""
    claimed = (
        _runs()
        .filter(pk=run_id, status=AnalyticsRun.Status.QUEUED)
        .update(status=AnalyticsRun.Status.RUNNING, started_at=timezone.now())
    )
    run = _runs().filter(pk=run_id).first()
    if run is None or not claimed:
        return "gone" if run is None else f"skipped ({run.status})"
    try:
        with replica_reads():  # the long reads: the replica when fresh (config/replica.py)
            body = _compute(run)
    except Exception as error:  # recorded on the run for its caller; logged with the traceback
        logger.exception("analytics run %s failed", run_id)
        _close_busy_connections()
        why = f"{type(error).__name__}: {error}"
        if isinstance(error, SoftTimeLimitExceeded):
            why = (
                f"Stopped after {stuck_seconds()} s (GROWTH_ANALYTICS_RUN_STUCK_SECONDS): the database did not answer "
                "in time (a lock, an unresponsive replica); ask again."
            )
        _runs().filter(pk=run_id).update(status=AnalyticsRun.Status.FAILED, finished_at=timezone.now(), error=why)
        return AnalyticsRun.Status.FAILED
    # A result outlives a stuck verdict given meanwhile: the numbers are right either way.
    _runs().filter(pk=run_id).update(
        status=AnalyticsRun.Status.DONE, finished_at=timezone.now(), result=json.loads(body), error=""
    )
    return AnalyticsRun.Status.DONE


def _close_busy_connections() -> None:
    """Close every connection still waiting for a statement's answer. A time limit stops the
    run inside psycopg's wait for the answer, and psycopg cancels a statement only on
    KeyboardInterrupt: the connection stays busy ("another command is already in progress")
    for the failure record below and for the worker's next task. The server is asked to
    cancel the statement (bounded: its postmaster may not answer either), then the
    connection is closed; Django opens a new one when next asked."""
    for conn in connections.all(initialized_only=True):
        raw = conn.connection
        pgconn = getattr(raw, "pgconn", None)  # psycopg 3
        if pgconn is None:
            continue
        from psycopg import pq

        if pgconn.transaction_status != pq.TransactionStatus.ACTIVE:
            continue
        try:
            raw.cancel_safe(timeout=3)
        except Exception:  # the server did not take the cancel request: closing is enough
            logger.warning("could not cancel the statement on %s", conn.alias, exc_info=True)
        conn.close()


def run_as_dict(run: AnalyticsRun, status_url: str) -> dict[str, Any]:
    def seconds(start: dt.datetime | None, end: dt.datetime | None) -> float | None:
        return None if start is None or end is None else round((end - start).total_seconds(), 3)

    return {
        "id": str(run.pk),
        "kind": run.kind,
        "status": run.status,
        "status_url": status_url,
        "spec": run.spec,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "queued_seconds": seconds(run.created_at, run.started_at),
        "run_seconds": seconds(run.started_at, run.finished_at),
        "error": run.error or None,
        "result": run.result if run.status == AnalyticsRun.Status.DONE else None,
    }
