"""Sending claimed deliveries through their channel backends.

A task carries up to ``task_batch`` delivery ids. It claims them in chunks with one
conditional UPDATE each (``status = 'pending'`` and due → ``'sending'``, with the worker's
token and a lease), so a row is claimed by at most one task however often its id was
published. A chunk is read in one query (campaign, offer, layer and content rows once per
task), rendered, and handed to the channel backend's ``send_many`` on one connection (SMTP
pipelining where the server offers it). Each message is marked ``sent`` right after the
provider accepted it (its own short autocommit statement, sent asynchronously on PostgreSQL:
see ``_SentMarks``), and that statement is committed before the backend hands the next
message over, which keeps the in-doubt window — accepted by the provider but not yet
recorded — to the one message a process has in flight.

Right before a chunk is rendered, the send-time rules (consent, suppression, topic
opt-outs, quiet hours, the campaign's status and end date) are checked again on facts read
by the chunk's one query; what fails them is recorded and never sent (``sendtime``).

Errors: a ``PermanentError`` fails the row with the reason (an SMTP 5xx at RCPT, DATA or the
end of DATA also suppresses the address: ``smtp_code`` / ``smtp_command``); a
``TransientError`` schedules
the next try with exponential backoff and jitter, never sooner than the provider's
``Retry-After`` (up to ``CAMPAIGNS_RETRY_AFTER_MAX_SECONDS``), for the channel's retry
period after the first try (email: 24 h; mail servers queue for days) or, for channels
without one, until ``max_attempts`` tries; then the row fails with ``gave_up``. A next try
further away than the broker's countdown limit is left to the outbox sweeper (the schedule
is the row's ``not_before``).

A database error while sending (PostgreSQL restarted, the connection lost) ends the task at
once: the SMTP session is aborted, the acceptance being recorded is recorded once the
database answers again, and the task's other claims are put back (``_claims_release``),
so the next try starts within seconds instead of after the claim's lease.

Claims are keyed by ``hostname:pid`` and, on PostgreSQL, the claiming database session
(``claim_token``): a claim whose session is gone (its process was killed, on this host or
another) is released by the next tick (``outbox.deliveries_release_lost_sessions``).
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import select
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.db import DatabaseError, connection
from django.db import Error as DjangoDatabaseError
from django.db.models import Q
from django.template import TemplateSyntaxError
from django.utils import timezone

from campaigns import conf
from campaigns.channels import (
    ChannelBackend,
    OutgoingMessage,
    PermanentError,
    SendResult,
    TransientError,
    get_backend,
)
from campaigns.content import CustomerLocale, MissingVariable, render_message
from campaigns.models import Campaign, Content, Delivery, Offer
from campaigns.services import bulk, consent, sendtime, suppression
from campaigns.services import policy as send_policy
from campaigns.services.outbox import chunked
from campaigns.services.render import (
    campaign_variables,
    content_fields,
    context_build,
    customer_variables,
    layer_variables,
    offer_variables,
)
from segments import selectors as segment_selectors

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendReport:
    claimed: int = 0
    sent: int = 0
    failed: int = 0
    retried: int = 0
    released: int = 0
    stopped: int = 0  # stopped by the send-time rules (held, or suppressed with a reason)
    retry_ids: tuple[int, ...] = ()
    retry_at: dt.datetime | None = None


# A retry further away than this is not published with a broker countdown (it must stay
# well inside the Redis visibility timeout, 1 h): the row's ``not_before`` holds it and the
# outbox sweeper publishes it when it is due.
BROKER_COUNTDOWN_MAX_SECONDS = 900


def retry_delay(*, attempts: int, retry_after: float | None = None) -> float:
    """Exponential backoff with "equal jitter" (AWS Architecture Blog, "Exponential Backoff
    and Jitter", 2015): uniform in [c/2, c] with c = min(cap, base·2^(n-1)); never below the
    provider's Retry-After, even above the cap, up to ``retry_after_max_seconds``."""
    settings = conf.get()
    ceiling = min(settings.retry_max_seconds, settings.retry_base_seconds * 2 ** max(0, attempts - 1))
    delay = random.uniform(ceiling / 2, ceiling)  # jitter, not security
    if retry_after is not None:
        delay = max(delay, min(retry_after, settings.retry_after_max_seconds))
    return delay


def claim_token(worker: str) -> str:
    """``worker`` (``hostname:pid``) plus, on PostgreSQL, the database session's identity
    (backend pid and start time): ``outbox.deliveries_release_lost_sessions`` releases a
    claim once its session is gone, whichever host or hostname claimed it."""
    session = _session_id()
    return f"{worker}:{session}" if session else worker


_SESSIONS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _transaction_pooled() -> bool:
    """Django's connection goes through PgBouncer in transaction pooling mode
    (``DATABASE_TRANSACTION_POOLING``): each transaction may run on another server
    connection, and one server connection serves many clients in turn."""
    from django.conf import settings

    return bool(getattr(settings, "DATABASE_TRANSACTION_POOLING", False))


def _session_id() -> str:
    # Behind a transaction pooler the backend is PgBouncer's server connection, which
    # outlives the claiming process and serves others: it cannot tell whether the claimer
    # lives. Claims are then keyed by ``hostname:pid`` only and released by the dead-process
    # check and the lease (README, "PgBouncer").
    if connection.vendor != "postgresql" or _transaction_pooled():
        return ""
    connection.ensure_connection()
    raw = connection.connection
    session = _SESSIONS.get(raw)
    if session is None:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT pid, (extract(epoch FROM backend_start) * 1000000)::bigint FROM pg_stat_activity "
                "WHERE pid = pg_backend_pid()"
            )
            pid, started = cursor.fetchone()
        session = _SESSIONS[raw] = f"pg{pid}.{started}"
    return session


class SessionLost(DatabaseError):
    """The database connection was replaced while sending: the claims were made by the old
    session (the tick may release them any moment), so this task stops."""


def deliveries_claim(*, delivery_ids: Sequence[int], worker: str, now: dt.datetime) -> list[int]:
    """Claim due pending rows among ``delivery_ids``; return the ids this worker now owns."""
    if not delivery_ids:
        return []
    ops = connection.ops
    lease_until = now + dt.timedelta(seconds=conf.get().lease_seconds)
    if connection.vendor == "postgresql":  # one array parameter: the same short statement for every chunk
        ids_sql, ids = "id = ANY(%s::bigint[])", [list(delivery_ids)]
    else:
        ids_sql, ids = f"id IN ({', '.join(['%s'] * len(delivery_ids))})", list(delivery_ids)
    sql = (
        f"UPDATE {Delivery._meta.db_table} SET status = %s, attempts = attempts + 1, claimed_at = %s, "
        f"claimed_by = %s, lease_until = %s, first_tried_at = COALESCE(first_tried_at, %s) "
        f"WHERE {ids_sql} AND status = %s AND (not_before IS NULL OR not_before <= %s) "
        f"RETURNING id"
    )
    params = [
        Delivery.Status.SENDING,
        ops.adapt_datetimefield_value(now),
        worker,
        ops.adapt_datetimefield_value(lease_until),
        ops.adapt_datetimefield_value(now),
        *ids,
        Delivery.Status.PENDING,
        ops.adapt_datetimefield_value(now),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return sorted(row[0] for row in cursor.fetchall())


@dataclass(frozen=True)
class _Row:
    """What sending one claimed delivery needs, read in one query per chunk."""

    pk: int
    key: str
    channel: str
    attempts: int
    max_attempts: int
    first_tried_at: dt.datetime | None
    campaign_id: int
    to: str
    customer: dict[str, Any]
    treatment_id: int | None
    offer_id: int | None
    layer_id: int | None
    coupon: dict[str, Any] | None
    tz: str
    facts: sendtime.Facts


_ROW_FIELDS = (
    "pk",
    "key",
    "channel",
    "attempts",
    "max_attempts",
    "first_tried_at",
    "campaign_id",
    "customer__external_id",
    "customer__email",
    "customer__phone",
    "customer__push_token",
    "customer__attributes",
    "customer__locale",
    "customer__timezone",
    "recipient__treatment_id",
    "recipient__offer_id",
    "recipient__layer_id",
    "recipient__coupon__code",
    "recipient__coupon__expires_at",
)


def _rows(claimed: Sequence[int]) -> list[_Row]:
    rows = []
    facts = sendtime.facts_read(claimed)
    for values in Delivery.objects.filter(bulk.id_in(Delivery, "id", claimed)).order_by("pk").values_list(*_ROW_FIELDS):
        (pk, key, channel, attempts, max_attempts, first_tried_at, campaign_id, external_id, email, phone) = values[:10]
        push_token, attributes, locale, tz, treatment_id, offer_id, layer_id, code, expires_at = values[10:]
        to = {"email": email, "sms": phone, "push": push_token}.get(channel, external_id)
        rows.append(
            _Row(
                pk=pk,
                key=key,
                channel=channel,
                attempts=attempts,
                max_attempts=max_attempts,
                first_tried_at=first_tried_at,
                campaign_id=campaign_id,
                to=to,
                customer=customer_variables(
                    external_id=external_id,
                    email=email,
                    phone=phone,
                    attributes=attributes,
                    locale=locale,
                    timezone=tz,
                ),
                treatment_id=treatment_id,
                offer_id=offer_id,
                layer_id=layer_id,
                coupon={"code": code, "expires_at": expires_at or ""} if code is not None else None,
                tz=tz,
                facts=facts.get(pk, sendtime.NO_FACTS),
            )
        )
    return rows


_MARK_SENT = (
    f"UPDATE {Delivery._meta.db_table} SET status = %s, sent_at = %s, provider_ref = %s, "
    "lease_until = NULL, last_error = '' "
    "WHERE id = %s AND ((status = %s AND claimed_by = %s) OR status = %s)"
)
_MARK_SENT_NUMBERED = _MARK_SENT.replace("%s", "{}").format(*(f"${i}" for i in range(1, 8)))  # libpq's $n
_MARK_SENT_NAME = b"campaigns_delivery_mark_sent"
# Behind a transaction pooler: the same UPDATE in a PL/pgSQL function (migration
# campaigns 0008), whose plan each server backend caches; the call itself is cheap to plan.
_MARK_SENT_CALL = b"SELECT campaigns_delivery_mark_sent($1, $2, $3, $4, $5, $6, $7)"
# Behind a transaction pooler whose connect_query prepared it on every server connection
# (migration campaigns 0009): EXECUTE of this statement, with the values as literals.
_MARK_SENT_POOLED = b"campaigns_delivery_mark_sent_pooled"
# Until when (time.monotonic) this process sends the pooled mark as the function call instead:
# a server connection lacked the statement (PgBouncer without the connect_query, or a server
# connection opened before the migration); tried again after the pause.
POOLED_EXECUTE_OFF_SECONDS = 300
_POOLED_EXECUTE = {"off_until": 0.0}
_PREPARED: weakref.WeakKeyDictionary[Any, bool] = weakref.WeakKeyDictionary()  # libpq connections


class _SentMarks:
    """Records each provider acceptance as ``sent``, one autocommit statement per message.

    ``record`` hands the statement to the database; ``wait`` returns once it is executed
    and committed. The sender calls ``wait`` before the backend hands the next message over
    (``send_many``'s ``ready``), and ``guard`` (installed with ``connection.execute_wrapper``
    for the whole send) calls it before any other statement goes through Django's
    connection: at most one message per process is ever accepted by a provider and not
    recorded, and Django never uses the connection while an answer is unread.

    On PostgreSQL with psycopg 3 the statement is sent without waiting for its answer
    (libpq's asynchronous API, prepared once per connection; behind a transaction-pooling
    PgBouncer an ``EXECUTE`` of the statement its connect_query prepared on every server
    connection, else an unnamed call of the mark's PL/pgSQL function, see ``record``): the
    database executes it while the backend reads the provider's next replies and builds the next message. Measured end
    to end (bench/delivery.py, 30,000 messages, same machine and load, alternating runs)
    this was 14-26% faster than the synchronous statement, whose round trip stalls a worker
    process on a busy machine. Elsewhere (SQLite, another driver) ``record`` executes it at
    once. If the asynchronous statement fails in any way (connection lost, statement not
    prepared on this session, a driver error), the connection is closed if its state is
    unknown and the statement is run again synchronously: it is idempotent, and the provider
    did accept the message, so the row is recorded unless the database is unreachable (then
    the task fails and the row is the one message in doubt, resent after its lease)."""

    def __init__(self, worker: str, *, session_bound: bool = False) -> None:
        self.worker = worker
        # Claims keyed by the database session (``claim_token``): a new session ends the task.
        self.session_bound = session_bound
        # The statement whose answer is not read yet: (libpq connection, key, params).
        self.pending: tuple[Any, str, list[Any]] | None = None
        # An acceptance the database could not record (it was down): (key, params).
        self.unrecorded: tuple[str, list[Any]] | None = None

    def _params(self, pk: int, provider_ref: str) -> list[Any]:
        return [
            Delivery.Status.SENT,
            timezone.now(),
            provider_ref[:200],
            pk,
            Delivery.Status.SENDING,
            self.worker,
            Delivery.Status.PENDING,
        ]

    @staticmethod
    def _libpq() -> Any:
        """The libpq connection under Django's, if asynchronous marks can be used."""
        if connection.vendor != "postgresql":
            return None
        connection.ensure_connection()
        return getattr(connection.connection, "pgconn", None)  # psycopg 3; not psycopg2

    def guard(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        """A ``connection.execute_wrapper``: any statement waits for the pending mark."""
        self.wait()
        return execute(sql, params, many, context)

    def record(self, pk: int, key: str, provider_ref: str) -> None:
        self.wait()
        params = self._params(pk, provider_ref)
        pgconn = self._libpq()
        if pgconn is None:
            self._execute(key, params)
            return
        from psycopg import pq

        try:
            values = [(p.isoformat() if isinstance(p, dt.datetime) else str(p)).encode() for p in params]
            if _transaction_pooled() and time.monotonic() >= _POOLED_EXECUTE["off_until"]:
                # PgBouncer's connect_query prepared the mark on every server connection
                # (migration campaigns 0009, README "PgBouncer"): one simple-protocol EXECUTE.
                escaping = pq.Escaping(pgconn)
                literals = b", ".join(escaping.escape_literal(v) for v in values)
                pgconn.send_query(b"EXECUTE " + _MARK_SENT_POOLED + b"(" + literals + b")")
            elif _transaction_pooled():
                # Behind PgBouncer (transaction pooling, before 1.21's protocol-level support) a
                # statement prepared by name lives on ONE server connection, and the next
                # autocommit statement may run on another: "prepared statement … does not
                # exist", then, back on the first, "… already exists", which dropped the
                # session and ended the task (SessionLost). The unnamed statement of the
                # extended protocol (Parse/Bind/Execute/Sync in one message) is parsed on
                # whichever server connection runs it, still without waiting for the answer.
                # It calls the mark's PL/pgSQL function: an unnamed UPDATE would be parsed,
                # analysed and planned again for every message, where the function's UPDATE
                # is planned once per server backend (bench/delivery.py --round-trips).
                pgconn.send_query_params(_MARK_SENT_CALL, values)
            else:
                if pgconn not in _PREPARED:  # once per connection, kept across tasks
                    result = pgconn.prepare(_MARK_SENT_NAME, _MARK_SENT_NUMBERED.encode())
                    if result.status != pq.ExecStatus.COMMAND_OK:
                        raise DatabaseError(result.error_message.decode(errors="replace"))
                    _PREPARED[pgconn] = True
                pgconn.send_query_prepared(_MARK_SENT_NAME, values)
            while pgconn.flush():  # the whole statement is in the kernel before we go on
                select.select([], [pgconn.socket], [], 1.0)
        except Exception as exc:  # noqa: BLE001 - recovered synchronously below
            self._recover(pgconn, key, params, exc)
            return
        self.pending = (pgconn, key, params)

    def wait(self) -> None:
        if self.pending is None:
            return
        pgconn, key, params = self.pending
        self.pending = None
        from psycopg import pq

        rowcount: int | None = None
        error = ""
        try:
            if connection.connection is None or getattr(connection.connection, "pgconn", None) is not pgconn:
                raise DatabaseError("the connection was closed or replaced while the mark was pending")
            while True:
                pgconn.consume_input()
                if not pgconn.is_busy():
                    break
                select.select([pgconn.socket], [], [], 1.0)
            while (result := pgconn.get_result()) is not None:
                if result.status == pq.ExecStatus.COMMAND_OK:
                    rowcount = result.command_tuples
                elif result.status == pq.ExecStatus.TUPLES_OK and result.ntuples == 1:  # the function's rows updated
                    value = result.get_value(0, 0)
                    rowcount = int(value) if value is not None else None
                else:
                    error = result.error_message.decode(errors="replace") or str(result.status)
                    no_statement = result.error_field(pq.DiagnosticField.SQLSTATE) == b"26000"
                    if no_statement and _transaction_pooled():
                        _POOLED_EXECUTE["off_until"] = time.monotonic() + POOLED_EXECUTE_OFF_SECONDS
                        logger.warning(
                            "PgBouncer lent a server connection without the prepared mark (is its connect_query set? "
                            "README, PgBouncer): this process records sends by the mark function for %s s",
                            POOLED_EXECUTE_OFF_SECONDS,
                        )
        except Exception as exc:  # noqa: BLE001 - recovered synchronously below
            self._recover(pgconn, key, params, exc)
            return
        if error:  # the statement failed (e.g. not prepared on this session): run it again synchronously
            _PREPARED.pop(pgconn, None)
            healthy = pgconn.status == pq.ConnStatus.OK  # else (e.g. the server ended the session) reconnect
            self._recover(None if healthy else pgconn, key, params, DatabaseError(error))
            return
        self._check(key, rowcount)

    def _recover(self, pgconn: Any, key: str, params: list[Any], exc: BaseException) -> None:
        """The asynchronous mark failed: drop the session if its state is unknown, then
        record the acceptance synchronously (the statement is idempotent)."""
        logger.warning("recording %s as sent asynchronously failed (%r); recording it synchronously", key, exc)
        # A libpq connection is handed in when its session is dropped here or was already
        # closed or replaced under the pending mark: the mark below runs on a new session.
        replaced = pgconn is not None
        if pgconn is not None:
            _PREPARED.pop(pgconn, None)
            if getattr(connection.connection, "pgconn", None) is pgconn:
                try:
                    connection.close()
                except Exception:  # the session is being dropped anyway
                    logger.exception("closing the database connection failed")
        try:
            self._execute(key, params, again=True)
        except DjangoDatabaseError:
            self.unrecorded = (key, params)  # the provider accepted it: recorded when the database is back
            raise
        if replaced and self.session_bound:
            raise SessionLost(f"the database session was replaced while sending ({exc!r})")

    def _execute(self, key: str, params: list[Any], *, again: bool = False) -> None:
        params = [*params]
        params[1] = connection.ops.adapt_datetimefield_value(params[1])
        with connection.cursor() as cursor:
            cursor.execute(_MARK_SENT, params)
            rowcount = cursor.rowcount
        if again and rowcount == 0 and Delivery.objects.filter(pk=params[3], status=Delivery.Status.SENT).exists():
            return  # the first statement did land
        self._check(key, rowcount)

    @staticmethod
    def _check(key: str, rowcount: int | None) -> None:
        if rowcount != 1:
            logger.warning("delivery %s was sent after its claim was taken over", key)


class _Sender:
    """One task's sending session: backends (one connection per channel), rate limiters,
    and the campaign, offer, layer and content rows its deliveries share, read once."""

    def __init__(self, worker: str, *, session_bound: bool = False) -> None:
        self.worker = worker
        self.settings = conf.get()
        self.locale = CustomerLocale()
        self.backends: dict[str, ChannelBackend] = {}
        self.policies = send_policy.policies_get()
        self.limiters: dict[str, send_policy.RateLimiter] = {}
        self.contents: dict[tuple[int, str], dict[str, str] | None] = {}
        self.campaign_vars: dict[int, dict[str, Any]] = {}
        self.offer_vars: dict[int, dict[str, Any]] = {}
        self.layer_vars: dict[int, dict[str, Any]] = {}
        self.marks = _SentMarks(worker, session_bound=session_bound)
        settings = conf.get()
        self.site_url, self.unsubscribe_mailto = settings.site_url, settings.unsubscribe_mailto
        self.sms_opt_out_text = settings.sms_opt_out_text
        self.states: dict[int, sendtime.CampaignState] = {}
        self.sent = self.failed = self.retried = self.released = 0
        self.stopped = 0  # rows the send-time rules held or suppressed
        self.retry_ids: list[int] = []
        self.retry_at: dt.datetime | None = None

    def close(self, *, abort: bool = False) -> None:
        """Close the backends' sessions; ``abort``: drop them without a word (the task
        failed mid-batch, a transaction may be open)."""
        self.locale.restore()
        for backend in self.backends.values():
            try:
                if abort and hasattr(backend, "abort"):
                    backend.abort()
                else:
                    backend.close()
            except Exception:  # closing must not hide the batch's outcome
                logger.exception("closing %s backend failed", backend.channel)

    def _owned(self, pk: int) -> Q:
        return Q(pk=pk) & (Q(status=Delivery.Status.SENDING, claimed_by=self.worker) | Q(status="pending"))

    def _fail(self, row: _Row, reason: str, error: str) -> None:
        self.marks.wait()
        Delivery.objects.filter(self._owned(row.pk)).update(
            status=Delivery.Status.FAILED, reason=reason, last_error=error[:2000], lease_until=None
        )
        self.failed += 1

    def _retry(self, row: _Row, exc: TransientError) -> None:
        """Schedule the next try, or fail the row ``gave_up``: after the channel's retry
        period (from the first try) or, for a channel without one, ``max_attempts`` tries.
        A ``Retry-After`` that reaches past the period's end gives up at once (never sooner
        than it asks)."""
        self.marks.wait()
        now = timezone.now()
        period = self.settings.retry_period(row.channel)
        delay = dt.timedelta(seconds=retry_delay(attempts=row.attempts, retry_after=exc.retry_after))
        if period > 0:
            deadline = (row.first_tried_at or now) + dt.timedelta(seconds=period)
            earliest = now + dt.timedelta(seconds=min(exc.retry_after or 0.0, self.settings.retry_after_max_seconds))
            tried = f"Try {row.attempts}, retried for {_duration(period)}"
            if now >= deadline or earliest > deadline:
                self._fail(row, Delivery.Reason.GAVE_UP, f"{tried}: {exc}")
                return
            not_before = min(now + delay, deadline)  # the last try at the period's end
        else:
            tried = f"Try {row.attempts}/{row.max_attempts}"
            if row.attempts >= row.max_attempts:
                self._fail(row, Delivery.Reason.GAVE_UP, f"{tried}: {exc}")
                return
            not_before = now + delay
        by_broker = (not_before - now).total_seconds() <= BROKER_COUNTDOWN_MAX_SECONDS
        Delivery.objects.filter(self._owned(row.pk)).update(
            status=Delivery.Status.PENDING,
            not_before=not_before,
            # A countdown task publishes it then and the sweeper waits past it; a later try
            # is the sweeper's to publish as soon as it is due.
            enqueued_at=(
                not_before if by_broker else not_before - dt.timedelta(seconds=self.settings.requeue_after_seconds)
            ),
            lease_until=None,
            last_error=f"{tried}: {exc}"[:2000],
        )
        self.retried += 1
        if by_broker:
            self.retry_ids.append(row.pk)
            self.retry_at = max(self.retry_at or not_before, not_before)

    def _release(self, delivery_ids: list[int]) -> None:
        """Give rows back untouched (their campaign is paused): not counted as a try."""
        from django.db.models import Case, F, When

        self.released += Delivery.objects.filter(
            pk__in=delivery_ids, status=Delivery.Status.SENDING, claimed_by=self.worker
        ).update(
            status=Delivery.Status.PENDING,
            attempts=F("attempts") - 1,
            first_tried_at=Case(When(attempts__lte=1, then=None), default=F("first_tried_at")),
            enqueued_at=None,
            lease_until=None,
        )

    def _content(self, treatment_id: int | None, channel: str) -> dict[str, str] | None:
        if treatment_id is None:
            return None
        key = (treatment_id, channel)
        if key not in self.contents:
            for content in Content.objects.filter(treatment_id=treatment_id):
                self.contents[(treatment_id, content.channel)] = content_fields(content)
            self.contents.setdefault(key, None)
        return self.contents[key]

    def _load_shared(self, rows: list[_Row]) -> dict[int, str]:
        """Campaign statuses (read for every chunk, with the end date, topic and kind: a
        pause or an end takes effect at the next chunk) and the variables of the campaigns,
        offers and layers not seen yet."""
        campaign_ids = {r.campaign_id for r in rows}
        self.states = sendtime.campaign_states(campaign_ids)
        statuses = {pk: state.status for pk, state in self.states.items()}
        unseen = campaign_ids - self.campaign_vars.keys()
        if unseen:
            for campaign in Campaign.objects.filter(pk__in=unseen):
                self.campaign_vars[campaign.pk] = campaign_variables(campaign)
        offers = {r.offer_id for r in rows if r.offer_id is not None} - self.offer_vars.keys()
        if offers:
            for offer in Offer.objects.filter(pk__in=offers):
                self.offer_vars[offer.pk] = offer_variables(offer)
        layers = {r.layer_id for r in rows if r.layer_id is not None} - self.layer_vars.keys()
        if layers:
            for layer in segment_selectors.layers_queryset(ids=layers):
                self.layer_vars[layer.pk] = layer_variables(layer)
        return statuses

    def _render(self, row: _Row) -> OutgoingMessage | None:
        """The message for ``row``, or ``None`` after failing the row (no content, or a
        template that does not render)."""
        fields = self._content(row.treatment_id, row.channel)
        if fields is None:
            self._fail(row, Delivery.Reason.RENDER_ERROR, f"No {row.channel} content for the treatment.")
            return None
        context = context_build(
            customer=row.customer,
            campaign=self.campaign_vars[row.campaign_id],
            offer=self.offer_vars.get(row.offer_id) if row.offer_id is not None else None,
            coupon=row.coupon,
            layer=self.layer_vars.get(row.layer_id) if row.layer_id is not None else None,
        )
        self.locale.activate(row.customer["timezone"], row.customer["locale"])  # dates and numbers as they read them
        marketing = not self.states[row.campaign_id].is_transactional and row.channel in consent.OPT_OUT_CHANNELS
        url = ""
        if marketing:
            url = consent.unsubscribe_url(
                customer_id=row.facts.customer_id, channel=row.channel, site_url=self.site_url
            )
        context["unsubscribe_url"] = url  # type: ignore[assignment]
        try:
            rendered = render_message(fields, context)
        except (MissingVariable, TemplateSyntaxError) as exc:
            self._fail(row, Delivery.Reason.RENDER_ERROR, str(exc))
            return None
        text, html, headers = rendered.text, rendered.html, ()
        if marketing and row.channel == "email":
            # Every marketing email: the link (the template's, or a default footer) and
            # the one-click unsubscribe headers.
            locale = row.customer["locale"]
            if url not in text:
                text += consent.footer_text(url=url, locale=locale)
            if html and url not in html:
                html += consent.footer_html(url=url, locale=locale)
            headers = consent.email_headers(url=url, mailto=self.unsubscribe_mailto)
        elif marketing and row.channel == "sms" and self.sms_opt_out_text and self.sms_opt_out_text not in text:
            text = f"{text}\n{self.sms_opt_out_text}"
        return OutgoingMessage(
            key=row.key,
            channel=row.channel,
            to=row.to,
            subject=rendered.subject,
            title=rendered.title,
            text=text,
            html=html,
            headers=headers,
        )

    def send_chunk(self, claimed: list[int]) -> None:
        rows = _rows(claimed)
        statuses = self._load_shared(rows)
        paused = [r.pk for r in rows if statuses[r.campaign_id] not in (Campaign.Status.RUNNING, "finished")]
        if paused:
            self._release(paused)
        ended = [r.pk for r in rows if statuses[r.campaign_id] == Campaign.Status.FINISHED]
        if ended:
            Delivery.objects.filter(pk__in=ended, status=Delivery.Status.SENDING, claimed_by=self.worker).update(
                status=Delivery.Status.SUPPRESSED, reason=Delivery.Reason.CAMPAIGN_ENDED, lease_until=None
            )
        running = [r for r in rows if statuses[r.campaign_id] == Campaign.Status.RUNNING]
        now = timezone.now()
        verdicts: dict[int, sendtime.Verdict] = {}
        for row in running:
            found = sendtime.verdict(
                channel=row.channel,
                tz=row.tz,
                facts=row.facts,
                campaign=self.states[row.campaign_id],
                policies=self.policies,
                now=now,
            )
            if found is not None:
                verdicts[row.pk] = found
        if verdicts:
            self.marks.wait()
            written = sendtime.verdicts_record(verdicts=verdicts, worker=self.worker)
            self.stopped += written
        by_channel: dict[str, list[tuple[_Row, OutgoingMessage]]] = {}
        for row in running:
            if row.pk in verdicts:
                continue
            message = self._render(row)
            if message is not None:
                by_channel.setdefault(row.channel, []).append((row, message))
        for channel, items in by_channel.items():
            self.send_channel(channel, items)

    def send_channel(self, channel: str, items: list[tuple[_Row, OutgoingMessage]]) -> None:
        """Send one channel's messages through one backend session, recording each outcome
        before the backend hands the next message over."""
        limiter = self.limiters.get(channel)
        if limiter is None:
            policy = self.policies.get(channel)
            limiter = self.limiters[channel] = send_policy.RateLimiter(
                channel=channel, per_second=policy.rate_per_second if policy else None
            )
        backend = self.backends.get(channel)
        if backend is None:
            backend = self.backends[channel] = get_backend(channel)
        limiter.acquire()  # the first message's token; each later one is taken after its predecessor
        try:
            for index, outcome in backend.send_many([m for _, m in items], ready=self.marks.wait):
                row = items[index][0]
                if isinstance(outcome, SendResult):
                    self.marks.record(row.pk, row.key, outcome.provider_ref)
                    self.sent += 1
                elif isinstance(outcome, PermanentError):
                    self._fail(row, Delivery.Reason.PERMANENT_ERROR, str(outcome))
                    suppression.suppress_from_send(
                        channel=row.channel,
                        address=row.to,
                        code=outcome.smtp_code,
                        command=outcome.smtp_command,
                        detail=str(outcome),
                    )
                elif isinstance(outcome, TransientError):
                    self._retry(row, outcome)
                else:  # a backend yielding anything else is a bug: retried, then failed visibly
                    self._retry(row, TransientError(f"{type(outcome).__name__}: {outcome}"))
                if index + 1 < len(items):
                    if limiter.per_second:  # the cache may be the database: nothing may run while a mark is pending
                        self.marks.wait()
                    limiter.acquire()
        finally:
            self.marks.wait()


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds:g} s"


def deliveries_send(*, delivery_ids: Sequence[int], worker: str) -> SendReport:
    """Claim and send ``delivery_ids`` as ``worker`` (``hostname:pid``). A database error
    aborts the backends' sessions, puts this task's claims back and propagates (the task
    is retried); see the module docstring."""
    settings = conf.get()
    token = claim_token(worker)
    sender = _Sender(token, session_bound=token != worker)
    claimed_total = 0
    try:
        with connection.execute_wrapper(sender.marks.guard):
            for chunk in chunked(sorted(set(delivery_ids)), settings.claim_chunk):
                claimed = deliveries_claim(delivery_ids=chunk, worker=token, now=timezone.now())
                claimed_total += len(claimed)
                if claimed:
                    sender.send_chunk(claimed)
            sender.marks.wait()
    except DjangoDatabaseError as exc:
        sender.close(abort=True)  # never QUIT into a transaction the server waits to finish
        _claims_release(sender, exc)
        raise
    except BaseException:
        sender.close(abort=True)
        try:
            sender.marks.wait()  # what the provider accepted is recorded
        except DjangoDatabaseError:
            logger.exception("recording the last acceptance failed")
        raise
    sender.close()
    return SendReport(
        claimed=claimed_total,
        sent=sender.sent,
        failed=sender.failed,
        retried=sender.retried,
        released=sender.released,
        stopped=sender.stopped,
        retry_ids=tuple(sender.retry_ids),
        retry_at=sender.retry_at,
    )


# How long a task whose database failed keeps trying to put its claims back (a PostgreSQL
# restart takes a few seconds); if it cannot, the tick releases them once their session is
# gone (PostgreSQL) or their lease ends.
RELEASE_WITHIN_SECONDS = 15.0


def _claims_release(sender: _Sender, error: BaseException) -> int:
    """After a database error: record the acceptance the database missed (the provider did
    accept it), then put every row this task still holds back to ``pending`` (not counted as
    a try), reconnecting for up to ``RELEASE_WITHIN_SECONDS``. Returns the rows released."""
    from django.db.models import F

    deadline = time.monotonic() + RELEASE_WITHIN_SECONDS
    while True:
        try:
            if not connection.in_atomic_block:
                connection.close()  # the session is dead or its state unknown (an answer may be unread)
            if sender.marks.unrecorded is not None:
                key, params = sender.marks.unrecorded
                sender.marks._execute(key, params, again=True)
                sender.marks.unrecorded = None
                sender.sent += 1
            released = Delivery.objects.filter(status=Delivery.Status.SENDING, claimed_by=sender.worker).update(
                status=Delivery.Status.PENDING,
                attempts=F("attempts") - 1,
                enqueued_at=None,
                lease_until=None,
                last_error=f"Put back: the database failed while sending ({error!r})."[:2000],
            )
        except DjangoDatabaseError as exc:
            if time.monotonic() >= deadline:
                logger.error("could not put claims of %s back (%r); the tick releases them", sender.worker, exc)
                return 0
            time.sleep(0.5)
            continue
        logger.warning("database error while sending (%r): %d claims of %s put back", error, released, sender.worker)
        return released
