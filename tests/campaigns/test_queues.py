"""Queues by kind of work (config/queues.py): each kind of task is published to its own
queue, so a worker bound to the sending queues never waits behind a recompute."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import connection
from django.utils import timezone

from campaigns.models import Delivery
from campaigns.services import lifecycle, outbox
from campaigns.tasks import deliveries_send
from config import queues
from config.celery import app
from segments.models import RecomputeRun, Segment
from segments.tasks import recompute_segment
from tests.campaigns.builders import campaign, customers, run_broadcast
from tests.campaigns.peers import wait_until


def _queue(task_name: str, **options: object) -> str:
    return app.amqp.router.route(dict(options), task_name)["queue"].name


@pytest.mark.pure
def test_task_routes__each_kind_of_work__its_own_queue() -> None:
    assert _queue("campaigns.deliveries_send") == "send.email"
    assert _queue("campaigns.deliveries_send", queue="send.sms") == "send.sms"
    assert _queue("campaigns.audience_resolve") == _queue("campaigns.audience_batch_decide") == "decide"
    assert _queue("campaigns.triggers_process") == _queue("experiments.audience_assign") == "decide"
    assert _queue("segments.tasks.recompute_segment") == _queue("segments.tasks.recompute_all") == "recompute"
    assert _queue("experiments.conversions_refresh") == "conversions"
    assert _queue("segments.import_events") == "imports"
    assert _queue("segments.analytics_run") == "reports"
    assert _queue("campaigns.tick") == _queue("campaigns.noop") == "celery"


@pytest.mark.pure
def test_worker_queues__no_queue_option__consumes_every_queue() -> None:
    # A worker started without -Q (the demo's, the embedded default) consumes app.amqp.queues.
    assert set(app.amqp.queues) == set(queues.ALL)
    assert {"send.email", "send.sms", "send.push", "send.in_app"} <= set(queues.ALL)


@pytest.mark.pure
def test_send_queues__every_channel__one_queue_each() -> None:
    from segments.models import Channel

    assert {queues.send_queue(c) for c in Channel.values} == set(queues.SEND_QUEUES)


@pytest.mark.django_db
def test_deliveries_enqueue__email_and_sms__published_to_each_channels_queue(no_caps, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    customers(2, phone="+33612345678", sms_consent_at=timezone.now())
    row = campaign(channels=("email", "sms"), channel_strategy="all")
    run_broadcast(row)
    rows = dict(Delivery.objects.filter(campaign=row).values_list("pk", "channel"))
    assert sorted(rows.values()) == ["email", "email", "sms", "sms"]
    published: list[tuple[str, list[int]]] = []
    monkeypatch.setattr(deliveries_send, "apply_async", lambda args, queue, **_: published.append((queue, args[0])))
    assert outbox.deliveries_enqueue(delivery_ids=list(rows)) == 4
    assert published and all({rows[pk] for pk in ids} == {queue.removeprefix("send.")} for queue, ids in published)
    assert {queue for queue, _ in published} == {"send.email", "send.sms"}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_sending_worker__recompute_blocked_on_the_batch_worker__campaign_still_sent(  # type: ignore[no-untyped-def]
    worker_factory, smtp_sink, no_caps
) -> None:
    # Given two single-process workers on Redis, bound as in production: one to the batch
    # queues, one to sending (plus deciding and the default queue).
    worker_factory(concurrency=1, queues="recompute,conversions,imports")
    worker_factory(concurrency=1, queues=",".join((*queues.SEND_QUEUES, queues.DECIDE, queues.DEFAULT)))
    customers(20)
    row = campaign(key="during-recompute")
    segment = Segment.objects.create(
        key="long",
        name="Long",
        rule={"event": "order", "agg": "count", "window": {"last_days": 30}, "op": "gte", "value": 1},
    )
    params = {k: v for k, v in connection.get_connection_params().items() if k != "cursor_factory"}
    # A recompute that takes as long as we hold this lock (its run bookkeeping waits on it).
    with psycopg.connect(**params) as holder:
        holder.execute("LOCK TABLE segments_recomputerun IN ACCESS EXCLUSIVE MODE")
        recompute_segment.delay(segment.pk)

        def recompute_waiting() -> bool:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND relation = 'segments_recomputerun'::regclass"
                )
                return cursor.fetchone()[0] >= 1

        wait_until(recompute_waiting, timeout=60, message="the recompute to start and wait on its lock")
        # When a campaign launches while that recompute runs
        started = time.monotonic()
        lifecycle.campaign_launch(campaign=row)
        # Then its messages are all sent before the recompute ends (bounded: 90 s)
        wait_until(
            lambda: Delivery.objects.filter(campaign=row, status="sent").count() == 20,
            timeout=90,
            message="20 messages sent while the recompute holds the batch worker",
        )
        assert recompute_waiting(), "the recompute was still running"
        print(f"20 messages sent in {time.monotonic() - started:.1f} s during a blocked recompute")
    finished = RecomputeRun.objects.filter(target="segment:long").exclude(status=RecomputeRun.Status.RUNNING)
    wait_until(finished.exists, timeout=60, message="the recompute to finish once the lock is released")
    assert list(finished.values_list("status", "error")) == [("succeeded", "")]
    assert smtp_sink.total == 20


@pytest.mark.pure
def test_compose_workers__bound_to_queues__every_queue_consumed_sending_apart_from_recomputes() -> None:
    import yaml

    from bench.common import ROOT

    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    bound = {
        name: set(command[command.index("--queues") + 1].split(","))
        for name, service in services.items()
        if "worker" in (command := service.get("command", [])) and "--queues" in command
    }
    assert len(bound) >= 2
    assert set().union(*bound.values()) == set(queues.ALL)
    for consumed in bound.values():
        assert not (consumed & set(queues.SEND_QUEUES) and queues.RECOMPUTE in consumed)
