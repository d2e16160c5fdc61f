"""Sending claimed deliveries through their channel backends.

A task carries up to ``task_batch`` delivery ids. It claims them in chunks with one
conditional UPDATE each (``status = 'pending'`` and due → ``'sending'``, with the worker's
token and a lease), so a row is claimed by at most one task however often its id was
published. Each message is marked ``sent`` right after the provider accepted it (its own
short statement), which keeps the in-doubt window — accepted by the provider but not yet
recorded — to the one message a process has in flight.

Errors: a ``PermanentError`` fails the row with the reason; a ``TransientError`` schedules
the next try with exponential backoff and full jitter (never sooner than the provider's
``Retry-After``) until ``max_attempts`` tries, then the row fails with ``gave_up``.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection
from django.db.models import Q
from django.template import TemplateSyntaxError
from django.utils import timezone

from campaigns import conf
from campaigns.channels import ChannelBackend, OutgoingMessage, PermanentError, TransientError, get_backend
from campaigns.content import MissingVariable, render_message
from campaigns.models import Campaign, Content, Delivery
from campaigns.services import policy as send_policy
from campaigns.services.outbox import chunked
from campaigns.services.render import content_fields, message_context

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendReport:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    retry_ids: tuple[int, ...] = ()
    retry_at: dt.datetime | None = None


def retry_delay(*, attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter (AWS Architecture Blog, "Exponential Backoff
    and Jitter", 2015): uniform in [base·2^(n-1)/2, base·2^(n-1)], capped; never below the
    provider's Retry-After."""
    settings = conf.get()
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** max(0, attempts - 1))
    delay = random.uniform(ceiling / 2, ceiling)  # jitter, not security
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.retry_max_seconds))
    return delay


def deliveries_claim(*, delivery_ids: Sequence[int], worker: str, now: dt.datetime) -> list[int]:
    """Claim due pending rows among ``delivery_ids``; return the ids this worker now owns."""
    if not delivery_ids:
        return []
    ops = connection.ops
    lease_until = now + dt.timedelta(seconds=conf.get().lease_seconds)
    placeholders = ", ".join(["%s"] * len(delivery_ids))
    sql = (
        f"UPDATE {Delivery._meta.db_table} SET status = %s, attempts = attempts + 1, claimed_at = %s, "
        f"claimed_by = %s, lease_until = %s "
        f"WHERE id IN ({placeholders}) AND status = %s AND (not_before IS NULL OR not_before <= %s) "
        f"RETURNING id"
    )
    params = [
        Delivery.Status.SENDING,
        ops.adapt_datetimefield_value(now),
        worker,
        ops.adapt_datetimefield_value(lease_until),
        *delivery_ids,
        Delivery.Status.PENDING,
        ops.adapt_datetimefield_value(now),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return sorted(row[0] for row in cursor.fetchall())


def _address(delivery: Delivery) -> str:
    customer = delivery.customer
    return {"email": customer.email, "sms": customer.phone, "push": customer.push_token}.get(
        delivery.channel, customer.external_id
    )


class _Sender:
    def __init__(self, worker: str) -> None:
        self.worker = worker
        self.backends: dict[str, ChannelBackend] = {}
        self.policies = send_policy.policies_get()
        self.contents: dict[tuple[int, str], Content] = {}
        self.sent = self.failed = self.retried = self.released = 0
        self.retry_ids: list[int] = []
        self.retry_at: dt.datetime | None = None

    def close(self) -> None:
        for backend in self.backends.values():
            try:
                backend.close()
            except Exception:  # closing must not hide the batch's outcome
                logger.exception("closing %s backend failed", backend.channel)

    def _owned(self, delivery: Delivery) -> Q:
        return Q(pk=delivery.pk) & (Q(status=Delivery.Status.SENDING, claimed_by=self.worker) | Q(status="pending"))

    def _mark_sent(self, delivery: Delivery, provider_ref: str) -> bool:
        """Record the provider's acceptance at once, in its own short statement (autocommit):
        the hot path of every send, so plain SQL instead of a built ORM query."""
        ops = connection.ops
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {Delivery._meta.db_table} SET status = %s, sent_at = %s, provider_ref = %s, "
                "lease_until = NULL, last_error = '' "
                "WHERE id = %s AND ((status = %s AND claimed_by = %s) OR status = %s)",
                [
                    Delivery.Status.SENT,
                    ops.adapt_datetimefield_value(timezone.now()),
                    provider_ref[:200],
                    delivery.pk,
                    Delivery.Status.SENDING,
                    self.worker,
                    Delivery.Status.PENDING,
                ],
            )
            return cursor.rowcount == 1

    def _fail(self, delivery: Delivery, reason: str, error: str) -> None:
        Delivery.objects.filter(self._owned(delivery)).update(
            status=Delivery.Status.FAILED, reason=reason, last_error=error[:2000], lease_until=None
        )
        self.failed += 1

    def _retry(self, delivery: Delivery, exc: TransientError) -> None:
        if delivery.attempts >= delivery.max_attempts:
            self._fail(delivery, Delivery.Reason.GAVE_UP, f"Try {delivery.attempts}/{delivery.max_attempts}: {exc}")
            return
        not_before = timezone.now() + dt.timedelta(
            seconds=retry_delay(attempts=delivery.attempts, retry_after=exc.retry_after)
        )
        Delivery.objects.filter(self._owned(delivery)).update(
            status=Delivery.Status.PENDING,
            not_before=not_before,
            enqueued_at=not_before,  # the retry task becomes visible then; the sweeper waits past it
            lease_until=None,
            last_error=f"Try {delivery.attempts}/{delivery.max_attempts}: {exc}"[:2000],
        )
        self.retried += 1
        self.retry_ids.append(delivery.pk)
        self.retry_at = max(self.retry_at or not_before, not_before)

    def _release(self, delivery_ids: list[int]) -> None:
        """Give rows back untouched (their campaign is paused): not counted as a try."""
        from django.db.models import F

        self.released += Delivery.objects.filter(
            pk__in=delivery_ids, status=Delivery.Status.SENDING, claimed_by=self.worker
        ).update(status=Delivery.Status.PENDING, attempts=F("attempts") - 1, enqueued_at=None, lease_until=None)

    def _content(self, delivery: Delivery) -> Content | None:
        treatment_id = delivery.recipient.treatment_id
        if treatment_id is None:
            return None
        key = (treatment_id, delivery.channel)
        if key not in self.contents:
            for content in Content.objects.filter(treatment_id=treatment_id):
                self.contents[(treatment_id, content.channel)] = content
        return self.contents.get(key)

    def send_chunk(self, claimed: list[int]) -> None:
        rows = list(
            Delivery.objects.filter(pk__in=claimed)
            .select_related("campaign", "customer", "recipient__offer", "recipient__layer", "recipient__coupon")
            .order_by("pk")
        )
        paused = [
            d.pk for d in rows if d.campaign.status != Campaign.Status.RUNNING and d.campaign.status != "finished"
        ]
        if paused:
            self._release(paused)
        for delivery in rows:
            if delivery.pk in paused:
                continue
            if delivery.campaign.status == Campaign.Status.FINISHED:
                Delivery.objects.filter(self._owned(delivery)).update(
                    status=Delivery.Status.SUPPRESSED, reason=Delivery.Reason.CAMPAIGN_ENDED, lease_until=None
                )
                continue
            self.send_one(delivery)

    def send_one(self, delivery: Delivery) -> None:
        recipient = delivery.recipient
        content = self._content(delivery)
        if content is None:
            self._fail(delivery, Delivery.Reason.RENDER_ERROR, f"No {delivery.channel} content for the treatment.")
            return
        coupon = getattr(recipient, "coupon", None)
        context = message_context(
            campaign=delivery.campaign,
            customer=delivery.customer,
            offer=recipient.offer,
            coupon=coupon,
            layer=recipient.layer,
        )
        try:
            rendered = render_message(content_fields(content), context)
        except (MissingVariable, TemplateSyntaxError) as exc:
            self._fail(delivery, Delivery.Reason.RENDER_ERROR, str(exc))
            return
        policy = self.policies.get(delivery.channel)
        send_policy.rate_limit_acquire(channel=delivery.channel, per_second=policy.rate_per_second if policy else None)
        message = OutgoingMessage(
            key=delivery.key,
            channel=delivery.channel,
            to=_address(delivery),
            subject=rendered.subject,
            title=rendered.title,
            text=rendered.text,
            html=rendered.html,
        )
        try:
            backend = self.backends.get(delivery.channel)
            if backend is None:
                backend = self.backends[delivery.channel] = get_backend(delivery.channel)
            result = backend.send(message)
        except PermanentError as exc:
            self._fail(delivery, Delivery.Reason.PERMANENT_ERROR, str(exc))
            return
        except TransientError as exc:
            self._retry(delivery, exc)
            return
        except Exception as exc:  # an unexpected backend failure is retried, then fails visibly
            logger.exception("unexpected error sending %s", delivery.key)
            self._retry(delivery, TransientError(f"{type(exc).__name__}: {exc}"))
            return
        if not self._mark_sent(delivery, result.provider_ref):
            logger.warning("delivery %s was sent after its claim was taken over", delivery.key)
        self.sent += 1


def deliveries_send(*, delivery_ids: Sequence[int], worker: str) -> SendReport:
    settings = conf.get()
    sender = _Sender(worker)
    claimed_total = 0
    try:
        for chunk in chunked(sorted(set(delivery_ids)), settings.claim_chunk):
            claimed = deliveries_claim(delivery_ids=chunk, worker=worker, now=timezone.now())
            claimed_total += len(claimed)
            if claimed:
                sender.send_chunk(claimed)
    finally:
        sender.close()
    return SendReport(
        claimed=claimed_total,
        sent=sender.sent,
        failed=sender.failed,
        retried=sender.retried,
        released=sender.released,
        retry_ids=tuple(sender.retry_ids),
        retry_at=sender.retry_at,
    )
