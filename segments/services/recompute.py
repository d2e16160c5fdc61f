"""Recompute dimensions and segments: the guard, the unit of work, the run record.

A recompute of one target (``dimension:<key>``, ``tag:<code>`` or ``segment:<key>``) is three steps:

1. **Guard.** Two recomputes of the same target never run at once; a second trigger is a
   no-op (outcome ``skipped``), not a duplicate run.
   - PostgreSQL: a session-level advisory lock per target, taken with
     ``pg_try_advisory_lock`` and held for the whole recompute. A killed process loses
     its connection and so its lock, which makes stale "running" rows exact to detect:
     whoever gets the lock marks any "running" row of the target as failed
     ("abandoned"), then starts.
   - Behind PgBouncer in transaction pooling (``DATABASE_TRANSACTION_POOLING``) a
     session lock would be taken on one server connection and released on another (or
     never): the "running" row guards instead, as on SQLite.
   - SQLite (one writer at a time anyway): the "running" row itself, protected by the
     partial unique constraint ``recompute_one_running_per_target``; a "running" row
     older than ``GROWTH["RECOMPUTE_STALE_AFTER_SECONDS"]`` (default 6 h) is taken to be
     left by a dead process, marked failed and replaced.
   The "running" row is committed before the work starts, so the admin shows it live.
2. **Unit of work**, one transaction: compute, write the changes, history, tags, check
   MECE. On PostgreSQL it runs in REPEATABLE READ when it is the outermost transaction,
   so the computation and the MECE count see the same customers even while ingestion
   adds new ones. Any error (including a MECE violation) rolls everything back: the
   previous memberships stay as they were.
3. **Record** the outcome on the run row (timing, counts, layer sizes, transitions, MECE
   check, or the error), outside the rolled-back transaction. A failed target is simply
   recomputed by the next run (nightly schedule, admin action or command).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import IntegrityError, OperationalError, connection, transaction
from django.utils import timezone

from segments.dimensions import kind_module
from segments.models import Dimension, Layer, RecomputeRun, Segment, TagRule
from segments.services import materialize

logger = logging.getLogger(__name__)

# Advisory lock namespaces (two-int form: namespace, object id) — 'SEG1', 'SEG2', 'SEG3'.
LOCK_NAMESPACE = {"dimension": 0x53454731, "segment": 0x53454732, "tag": 0x53454733}
DEFAULT_STALE_AFTER = 6 * 3600


class MeceViolation(Exception):
    def __init__(self, result: materialize.MeceResult):
        self.result = result
        super().__init__(result.describe())


@dataclass(frozen=True)
class RecomputeOutcome:
    target: str
    status: str  # "succeeded", "failed" or "skipped"
    run_id: int | None = None
    duration_ms: int | None = None
    customers: int | None = None
    changed: int | None = None
    error: str = ""
    retryable: bool = False
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "status": self.status,
            "run_id": self.run_id,
            "duration_ms": self.duration_ms,
            "customers": self.customers,
            "changed": self.changed,
            "error": self.error,
        }


def dimension_target(dimension: Dimension) -> str:
    return f"dimension:{dimension.key}"


def segment_target(segment: Segment) -> str:
    return f"segment:{segment.key}"


def tag_target(code: str) -> str:
    return f"tag:{code}"


def _stale_after() -> dt.timedelta:
    return dt.timedelta(seconds=settings.GROWTH.get("RECOMPUTE_STALE_AFTER_SECONDS", DEFAULT_STALE_AFTER))


class _Guard:
    def __init__(self, *, target: str, namespace: int, object_id: int) -> None:
        self.target = target
        self.key = (namespace, object_id)
        self.locked = False

    def acquire(self, *, trigger: str, as_of: dt.datetime) -> RecomputeRun | None:
        now = timezone.now()
        running = RecomputeRun.objects.filter(target=self.target, status=RecomputeRun.Status.RUNNING)
        if connection.vendor == "postgresql" and not getattr(settings, "DATABASE_TRANSACTION_POOLING", False):
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s, %s)", list(self.key))
                self.locked = bool(cursor.fetchone()[0])
            if not self.locked:
                return None
            # We hold the lock, so no live process is working on this target.
            abandoned = "abandoned: the process running it ended without finishing (its lock was released)"
        else:
            if running.filter(started_at__gt=now - _stale_after()).exists():
                return None
            abandoned = f"abandoned: still 'running' after {int(_stale_after().total_seconds())} s"
        stale = running.update(status=RecomputeRun.Status.FAILED, finished_at=now, error=abandoned)
        if stale:
            logger.warning("recompute of %s: marked %d abandoned run(s) as failed", self.target, stale)
        try:
            with transaction.atomic():
                return RecomputeRun.objects.create(
                    target=self.target, status=RecomputeRun.Status.RUNNING, trigger=trigger, as_of=as_of, started_at=now
                )
        except IntegrityError:
            # Another process inserted its running row between our check and insert.
            self.release()
            return None

    def release(self) -> None:
        if self.locked:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s, %s)", list(self.key))
            self.locked = False


@contextlib.contextmanager
def _unit_of_work(*, lock_customer_tags: bool = False) -> Iterator[None]:
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost and connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if lock_customer_tags:
            # Before the snapshot (PostgreSQL docs, LOCK): see segments.services.tags.
            from segments.services.tags import customer_tags_lock

            customer_tags_lock()
        yield


def _finish(run: RecomputeRun, started: float, **fields: Any) -> RecomputeRun:
    run.finished_at = timezone.now()
    run.duration_ms = round((time.perf_counter() - started) * 1000)
    for name, value in fields.items():
        setattr(run, name, value)
    run.save()
    return run


def _outcome(run: RecomputeRun, *, retryable: bool = False) -> RecomputeOutcome:
    return RecomputeOutcome(
        target=run.target,
        status=RecomputeRun.Status(run.status).value,
        run_id=run.pk,
        duration_ms=run.duration_ms,
        customers=run.customers,
        changed=run.changed,
        error=run.error,
        retryable=retryable,
        details=run.details,
    )


def _failure(run: RecomputeRun, started: float, exc: BaseException, details: dict[str, Any]) -> RecomputeOutcome:
    error = f"{type(exc).__name__}: {exc}"[:4000]
    logger.error("recompute of %s failed: %s", run.target, error, exc_info=not isinstance(exc, MeceViolation))
    if isinstance(exc, MeceViolation):
        details = {**details, "mece": exc.result.as_dict()}
    _finish(
        run,
        started,
        status=RecomputeRun.Status.FAILED,
        error=error,
        details=details,
        mece_ok=False if isinstance(exc, MeceViolation) else None,
    )
    return _outcome(run, retryable=isinstance(exc, OperationalError))


def _as_of_check(*, target: str, as_of: dt.datetime) -> None:
    """Refuse an ``as_of`` before the target's last successful run: its history rows would
    close before they opened (dimensions and tag rules both keep history)."""
    previous = (
        RecomputeRun.objects.filter(target=target, status=RecomputeRun.Status.SUCCEEDED, as_of__isnull=False)
        .order_by("-as_of")
        .values_list("as_of", flat=True)
        .first()
    )
    if previous is not None and as_of < previous:
        raise ValueError(f"as_of {as_of.isoformat()} is before the last recompute's ({previous.isoformat()})")


def dimension_recompute(
    *,
    dimension_id: int,
    as_of: dt.datetime | None = None,
    trigger: str = RecomputeRun.Trigger.API,
    full_tags: bool = False,
    portable: bool = False,
) -> RecomputeOutcome:
    """Recompute one dimension's layers (see the module docstring for the guarantees).

    ``full_tags`` reconciles every customer's tier tag of this dimension instead of only
    the customers who moved; ``portable`` forces the portable SQL path on PostgreSQL.
    Not wrapped in ``transaction.atomic``: the run record must survive a rolled-back
    unit of work.
    """
    dimension = Dimension.objects.filter(pk=dimension_id).first()
    if dimension is None:
        return RecomputeOutcome(target=f"dimension:#{dimension_id}", status="skipped", error="no such dimension")
    as_of = as_of or timezone.now()
    target = dimension_target(dimension)
    guard = _Guard(target=target, namespace=LOCK_NAMESPACE["dimension"], object_id=dimension.pk)
    run = guard.acquire(trigger=trigger, as_of=as_of)
    if run is None:
        logger.info("recompute of %s skipped: already running", target)
        return RecomputeOutcome(target=target, status="skipped", error="already running")
    started = time.perf_counter()
    details: dict[str, Any] = {"kind": dimension.kind, "as_of": as_of.isoformat()}
    try:
        _as_of_check(target=target, as_of=as_of)
        layers = dict(Layer.objects.filter(dimension=dimension).values_list("key", "pk"))
        module = kind_module(dimension.kind)
        missing = [spec.key for spec in module.layer_specs(dimension.config) if spec.key not in layers]
        if missing:
            raise ValueError(
                f"layers missing for this config: {', '.join(missing)} (save the dimension to create them)"
            )
        tag_ids = list(Layer.objects.filter(dimension=dimension, tag__isnull=False).values_list("tag_id", flat=True))
        with _unit_of_work():
            written = materialize.dimension_write(
                dimension_id=dimension.pk,
                kind_module=module,
                config=dimension.config,
                layers=layers,
                tag_ids=tag_ids,
                as_of=as_of,
                now=timezone.now(),
                full_tags=full_tags,
                portable=portable,
                role_id=dimension.role_id,
            )
            key_of = {pk: key for key, pk in layers.items()}
            details.update(
                {
                    "layer_sizes": {key: written.layer_sizes.get(pk, 0) for key, pk in layers.items()},
                    "transitions": [
                        [
                            key_of.get(old) if old is not None else None,
                            key_of.get(new, str(new)) if new is not None else None,
                            count,
                        ]
                        for old, new, count in sorted(written.transitions, key=lambda t: (str(t[0]), str(t[1])))
                    ],
                    "mece": written.mece.as_dict() if written.mece else None,
                    "stats": written.stats,
                    "timings_ms": written.timings_ms,
                }
            )
            if written.mece is not None and not written.mece.ok:
                raise MeceViolation(written.mece)
            Dimension.objects.filter(pk=dimension.pk).update(computed_at=timezone.now())
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the run and logged
        return _failure(run, started, exc, details)
    finally:
        guard.release()
    _finish(
        run,
        started,
        status=RecomputeRun.Status.SUCCEEDED,
        customers=written.customers,
        changed=written.changed,
        details=details,
        mece_ok=True,
    )
    logger.info(
        "recompute of %s succeeded: %d customers, %d changed, %d ms",
        target,
        written.customers,
        written.changed,
        run.duration_ms,
    )
    return _outcome(run)


def segment_recompute(
    *, segment_id: int, as_of: dt.datetime | None = None, trigger: str = RecomputeRun.Trigger.API
) -> RecomputeOutcome:
    """Materialize one segment's members from its rule (one INSERT … SELECT of the
    compiled rule, then only the additions and removals)."""
    from segments.rules import rule_compile

    segment = Segment.objects.filter(pk=segment_id).first()
    if segment is None:
        return RecomputeOutcome(target=f"segment:#{segment_id}", status="skipped", error="no such segment")
    as_of = as_of or timezone.now()
    target = segment_target(segment)
    guard = _Guard(target=target, namespace=LOCK_NAMESPACE["segment"], object_id=segment.pk)
    run = guard.acquire(trigger=trigger, as_of=as_of)
    if run is None:
        return RecomputeOutcome(target=target, status="skipped", error="already running")
    started = time.perf_counter()
    details: dict[str, Any] = {"as_of": as_of.isoformat()}
    try:
        from segments.models import Customer

        members = Customer.objects.filter(rule_compile(segment.rule, as_of=as_of)).values_list("pk")
        sql, params = members.query.sql_with_params()
        with _unit_of_work():
            written = materialize.segment_write(
                segment_id=segment.pk, members_sql=sql, params=list(params), as_of=as_of
            )
            Segment.objects.filter(pk=segment.pk).update(size=written.size, computed_at=timezone.now())
        details.update(
            {"size": written.size, "added": written.added, "removed": written.removed, "timings_ms": written.timings_ms}
        )
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the run and logged
        return _failure(run, started, exc, details)
    finally:
        guard.release()
    _finish(
        run,
        started,
        status=RecomputeRun.Status.SUCCEEDED,
        customers=written.size,
        changed=written.added + written.removed,
        details=details,
    )
    return _outcome(run)


def tag_rule_recompute(
    *, tag_rule_id: int, as_of: dt.datetime | None = None, trigger: str = RecomputeRun.Trigger.API
) -> RecomputeOutcome:
    """Materialize one tag rule's computed holders (one INSERT … SELECT of the compiled
    rule, then only the gains and losses, with history; manual rows untouched)."""
    from segments.models import Customer
    from segments.rules import rule_compile

    tag_rule = TagRule.objects.select_related("tag").filter(pk=tag_rule_id).first()
    if tag_rule is None:
        return RecomputeOutcome(target=f"tag:#{tag_rule_id}", status="skipped", error="no such tag rule")
    as_of = as_of or timezone.now()
    target = tag_target(tag_rule.tag.code)
    guard = _Guard(target=target, namespace=LOCK_NAMESPACE["tag"], object_id=tag_rule.pk)
    run = guard.acquire(trigger=trigger, as_of=as_of)
    if run is None:
        return RecomputeOutcome(target=target, status="skipped", error="already running")
    started = time.perf_counter()
    details: dict[str, Any] = {"as_of": as_of.isoformat(), "family": tag_rule.tag.family}
    try:
        _as_of_check(target=target, as_of=as_of)
        members = Customer.objects.filter(rule_compile(tag_rule.rule, as_of=as_of)).values_list("pk")
        sql, params = members.query.sql_with_params()
        with _unit_of_work(lock_customer_tags=True):
            written = materialize.tag_write(tag_id=tag_rule.tag_id, members_sql=sql, params=list(params), as_of=as_of)
            TagRule.objects.filter(pk=tag_rule.pk).update(size=written.holders, computed_at=timezone.now())
        details.update(
            {
                "matched": written.matched,
                "holders": written.holders,
                "gained": written.gained,
                "lost": written.lost,
                "timings_ms": written.timings_ms,
            }
        )
    except Exception as exc:  # noqa: BLE001 - every failure is recorded on the run and logged
        return _failure(run, started, exc, details)
    finally:
        guard.release()
    _finish(
        run,
        started,
        status=RecomputeRun.Status.SUCCEEDED,
        customers=written.holders,
        changed=written.gained + written.lost,
        details=details,
    )
    return _outcome(run)


def recompute_all(
    *,
    as_of: dt.datetime | None = None,
    trigger: str = RecomputeRun.Trigger.SCHEDULE,
    dimension_keys: list[str] | None = None,
    segment_keys: list[str] | None = None,
    tag_codes: list[str] | None = None,
) -> list[RecomputeOutcome]:
    """Active dimensions first (tag rules and segments may use their layers), then active
    tag rules (a rule reading another computed tag after it; segments may use tags), then
    active segments; each in its own transaction. With keys or codes, only those targets
    (active or not)."""
    from segments.services.tags import tag_rule_order

    if dimension_keys is None and segment_keys is None and tag_codes is None:
        dimensions = Dimension.objects.filter(is_active=True)
        segments = Segment.objects.filter(is_active=True)
        tag_rules = TagRule.objects.filter(is_active=True)
    else:
        dimensions = Dimension.objects.filter(key__in=dimension_keys or [])
        segments = Segment.objects.filter(key__in=segment_keys or [])
        tag_rules = TagRule.objects.filter(tag__code__in=tag_codes or [])
    outcomes = [
        dimension_recompute(dimension_id=pk, as_of=as_of, trigger=trigger)
        for pk in dimensions.order_by("key").values_list("pk", flat=True)
    ]
    rule_ids = dict(tag_rules.values_list("tag__code", "pk"))
    outcomes += [
        tag_rule_recompute(tag_rule_id=rule_ids[code], as_of=as_of, trigger=trigger)
        for code in tag_rule_order(list(rule_ids))
    ]
    outcomes += [
        segment_recompute(segment_id=pk, as_of=as_of, trigger=trigger)
        for pk in segments.order_by("key").values_list("pk", flat=True)
    ]
    return outcomes
