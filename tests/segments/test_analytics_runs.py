"""Analytics runs: retention and funnels asked with ?async=true, computed by a task, polled."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.serializers.json import DjangoJSONEncoder
from django.utils import timezone

from config.celery import app
from segments import tasks
from segments.analytics import runs
from segments.models import AnalyticsRun
from tests.experiments.conftest import celery_worker, celery_worker_process, wait_until  # noqa: F401  (a fixture)
from tests.factories import CustomerFactory, EventFactory, event_type

UTC = dt.UTC
RETENTION = (
    "/api/v1/analytics/retention?cohort=day&periods=2&cohort_from=2026-01-01&cohort_to=2026-01-01"
    "&as_of=2026-02-01T00:00:00%2B00:00"
)
FUNNEL = "/api/v1/analytics/funnel?steps=login,visit&start=2026-01-01T00:00:00Z&end=2026-02-01T00:00:00Z"


@pytest.fixture
def data(db: None) -> None:
    a = CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 10, tzinfo=UTC))
    EventFactory(customer=a, event_type=event_type("login"), occurred_at=dt.datetime(2026, 1, 2, 10, tzinfo=UTC))
    EventFactory(customer=a, event_type=event_type("visit"), occurred_at=dt.datetime(2026, 1, 2, 10, 5, tzinfo=UTC))
    CustomerFactory(signed_up_at=dt.datetime(2026, 1, 1, 11, tzinfo=UTC))


def _ask(client, url: str, django_capture_on_commit_callbacks):  # type: ignore[no-untyped-def]
    with django_capture_on_commit_callbacks(execute=True):
        return client.get(url + "&async=true")


@pytest.mark.django_db
@pytest.mark.parametrize("url", [RETENTION, FUNNEL])
def test_analytics_run_api__async_eager__status_url_returns_the_synchronous_json(  # type: ignore[no-untyped-def]
    api_client_factory, data: None, eager: None, django_capture_on_commit_callbacks, url: str
) -> None:
    client = api_client_factory("reports:read")

    asked = _ask(client, url, django_capture_on_commit_callbacks)

    assert asked.status_code == 202
    body = asked.json()
    assert body["created"] is True and asked["Location"] == body["status_url"]
    polled = client.get(body["status_url"])
    assert polled.status_code == 200
    run = polled.json()
    assert run["status"] == "done" and run["error"] is None
    assert run["started_at"] and run["finished_at"] and run["run_seconds"] >= 0
    assert run["result"] == client.get(url).json()


@pytest.mark.django_db
def test_analytics_run_api__without_as_of__computed_at_the_instant_asked(  # type: ignore[no-untyped-def]
    api_client_factory, data: None, eager: None, django_capture_on_commit_callbacks
) -> None:
    client = api_client_factory("reports:read")
    url = "/api/v1/analytics/retention?cohort=day&periods=2&cohort_from=2026-01-01&cohort_to=2026-01-01"

    body = _ask(client, url, django_capture_on_commit_callbacks).json()

    run = AnalyticsRun.objects.get(pk=body["id"])
    assert run.result["as_of"] == DjangoJSONEncoder().default(run.created_at)
    assert run.result == client.get(url + "&as_of=" + run.created_at.isoformat().replace("+", "%2B")).json()


@pytest.mark.django_db
def test_analytics_run_api__another_keys_run__404(  # type: ignore[no-untyped-def]
    api_client_factory, data: None, django_capture_on_commit_callbacks
) -> None:
    owner, other = api_client_factory("reports:read"), api_client_factory("reports:read")
    body = _ask(owner, RETENTION, django_capture_on_commit_callbacks).json()

    assert other.get(body["status_url"]).status_code == 404
    assert owner.get(body["status_url"]).status_code == 200
    assert other.get("/api/v1/analytics/runs/00000000-0000-0000-0000-000000000000").status_code == 404
    assert other.get("/api/v1/analytics/runs/not-a-uuid").status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("url", "field"),
    [
        (RETENTION.replace("periods=2", "periods=999"), "periods"),
        (FUNNEL.replace("steps=login,visit", "steps=lo%20gin"), "steps"),
        (RETENTION.replace("retention?", "retention.csv?"), "async"),
    ],
)
def test_analytics_run_api__bad_parameter__400_naming_it_and_nothing_queued(  # type: ignore[no-untyped-def]
    api_client_factory, django_capture_on_commit_callbacks, url: str, field: str
) -> None:
    with django_capture_on_commit_callbacks() as callbacks:
        response = api_client_factory("reports:read").get(url + "&async=true")

    assert response.status_code == 400 and list(response.json()["errors"]) == [field]
    assert not AnalyticsRun.objects.exists() and callbacks == []


@pytest.mark.django_db
def test_analytics_run_api__async_not_a_boolean__400_naming_it(api_client_factory) -> None:  # type: ignore[no-untyped-def]
    response = api_client_factory("reports:read").get(RETENTION + "&async=maybe")
    assert response.status_code == 400 and list(response.json()["errors"]) == ["async"]


@pytest.mark.django_db
def test_analytics_run_api__same_spec_again__the_fresh_run_reused_once_created(  # type: ignore[no-untyped-def]
    api_client_factory, data: None, eager: None, django_capture_on_commit_callbacks, settings
) -> None:
    client, other = api_client_factory("reports:read"), api_client_factory("reports:read")
    first = _ask(client, RETENTION, django_capture_on_commit_callbacks).json()

    # The same spec written differently (defaults spelled out) is the same question.
    again = _ask(client, RETENTION + "&anchor=signup&period=day", django_capture_on_commit_callbacks).json()
    theirs = _ask(other, RETENTION, django_capture_on_commit_callbacks).json()

    assert first["created"] is True and again["created"] is False and again["id"] == first["id"]
    assert theirs["created"] is True and theirs["id"] != first["id"]
    assert again["status"] == "done" and again["result"]["cohorts"][0]["size"] == 2
    # Past the freshness bound: a new run.
    settings.GROWTH = {**settings.GROWTH, "ANALYTICS_RUN_FRESH_SECONDS": 60}
    AnalyticsRun.objects.filter(pk=first["id"]).update(finished_at=timezone.now() - dt.timedelta(seconds=61))
    later = _ask(client, RETENTION, django_capture_on_commit_callbacks).json()
    assert later["created"] is True and later["id"] != first["id"]


@pytest.mark.django_db
def test_analytics_run_request__in_flight__one_created_and_queued_once(  # type: ignore[no-untyped-def]
    api_client_factory, data: None, django_capture_on_commit_callbacks
) -> None:
    client = api_client_factory("reports:read")
    with django_capture_on_commit_callbacks() as callbacks:
        bodies = [client.get(RETENTION + "&async=true").json() for _ in range(3)]

    assert [b["created"] for b in bodies] == [True, False, False]
    assert len({b["id"] for b in bodies}) == 1 and len(callbacks) == 1
    assert bodies[2]["status"] == "queued" and bodies[2]["result"] is None


@pytest.mark.django_db
def test_analytics_run_get__running_past_the_bound__reported_failed_and_asked_anew(  # type: ignore[no-untyped-def]
    api_client_factory, data: None, django_capture_on_commit_callbacks, settings
) -> None:
    settings.GROWTH = {**settings.GROWTH, "ANALYTICS_RUN_STUCK_SECONDS": 600}
    client = api_client_factory("reports:read")
    body = _ask(client, RETENTION, django_capture_on_commit_callbacks).json()
    # A worker claimed it, then was killed: it stays "running".
    # (Past the task's soft limit, 600 s, its worker records why itself; past the hard limit and
    # a grace, 600 + 60 + 30 s, nobody will.)
    AnalyticsRun.objects.filter(pk=body["id"]).update(
        status="running", started_at=timezone.now() - dt.timedelta(seconds=600)
    )
    assert client.get(body["status_url"]).json()["status"] == "running"
    AnalyticsRun.objects.filter(pk=body["id"]).update(
        status="running", started_at=timezone.now() - dt.timedelta(seconds=691)
    )

    run = client.get(body["status_url"]).json()

    assert run["status"] == "failed" and "690 s" in run["error"] and run["finished_at"]
    assert _ask(client, RETENTION, django_capture_on_commit_callbacks).json()["created"] is True


@pytest.mark.django_db
def test_analytics_run_get__running_within_the_bound__still_running(  # type: ignore[no-untyped-def]
    api_client_factory, data: None, django_capture_on_commit_callbacks
) -> None:
    client = api_client_factory("reports:read")
    body = _ask(client, RETENTION, django_capture_on_commit_callbacks).json()
    AnalyticsRun.objects.filter(pk=body["id"]).update(status="running", started_at=timezone.now())

    assert client.get(body["status_url"]).json()["status"] == "running"


@pytest.mark.django_db
def test_analytics_run_task__computation_raises__failed_with_the_error(  # type: ignore[no-untyped-def]
    api_client_factory, data: None, django_capture_on_commit_callbacks, monkeypatch
) -> None:
    client = api_client_factory("reports:read")
    body = _ask(client, RETENTION, django_capture_on_commit_callbacks).json()

    def broken(**_: object) -> None:
        raise RuntimeError("statement timeout")

    monkeypatch.setattr(runs, "retention_table", broken)

    assert tasks.analytics_run.apply(args=[body["id"]]).get() == "failed"
    run = client.get(body["status_url"]).json()
    assert run["status"] == "failed" and run["error"] == "RuntimeError: statement timeout" and run["result"] is None


@pytest.mark.django_db
def test_analytics_run_task__delivered_twice__computed_once(  # type: ignore[no-untyped-def]
    api_client_factory, data: None, django_capture_on_commit_callbacks
) -> None:
    body = _ask(api_client_factory("reports:read"), RETENTION, django_capture_on_commit_callbacks).json()

    assert tasks.analytics_run.apply(args=[body["id"]]).get() == "done"
    finished = AnalyticsRun.objects.get(pk=body["id"]).finished_at
    assert tasks.analytics_run.apply(args=[body["id"]]).get() == "skipped (done)"
    assert AnalyticsRun.objects.get(pk=body["id"]).finished_at == finished


@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_analytics_run_api__real_worker__done_with_the_synchronous_json(  # type: ignore[no-untyped-def]
    celery_worker_process,  # noqa: F811
    api_client_factory,
    data: None,
) -> None:
    client = api_client_factory("reports:read")
    body = client.get(FUNNEL + "&async=true").json()

    wait_until(lambda: client.get(body["status_url"]).json()["status"] == "done", timeout=60, message="the run")

    assert client.get(body["status_url"]).json()["result"] == client.get(FUNNEL).json()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_analytics_run__statement_never_answers__stopped_at_the_stuck_bound_and_worker_freed(  # type: ignore[no-untyped-def]
    api_client_factory, data: None, settings
) -> None:
    """A run whose statement waits for ever (here a lock held on the events; in production a
    replica that stopped answering) is stopped by its time limit, recorded failed with the
    reason, and the worker's next run computes normally on a fresh connection."""
    import psycopg
    from django.db import connection

    settings.GROWTH = {**settings.GROWTH, "ANALYTICS_RUN_STUCK_SECONDS": 2}
    client = api_client_factory("reports:read")
    s = connection.settings_dict
    blocker = psycopg.connect(
        f"host={s['HOST']} port={s['PORT']} dbname={s['NAME']} user={s['USER']} password={s['PASSWORD']}"
    )
    with celery_worker(pool="prefork", GROWTH_ANALYTICS_RUN_STUCK_SECONDS="2"):
        try:
            blocker.execute("BEGIN")
            blocker.execute("LOCK TABLE segments_event IN ACCESS EXCLUSIVE MODE")
            stuck = client.get(FUNNEL + "&async=true").json()

            wait_until(
                lambda: client.get(stuck["status_url"]).json()["status"] == "failed", timeout=30, message="the stop"
            )
            blocker.rollback()
        finally:
            blocker.close()
        run = client.get(stuck["status_url"]).json()
        assert run["error"].startswith("Stopped after 2 s") and run["result"] is None
        assert run["run_seconds"] < 10

        settings.GROWTH = {**settings.GROWTH, "ANALYTICS_RUN_STUCK_SECONDS": 60}
        after = client.get(RETENTION + "&async=true").json()
        wait_until(lambda: client.get(after["status_url"]).json()["status"] == "done", timeout=30, message="the next")
        assert client.get(after["status_url"]).json()["result"] == client.get(RETENTION).json()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_close_busy_connections__statement_still_running__cancelled_and_next_statement_works() -> None:
    """What a time limit leaves behind outside a transaction block (Django's atomic closes the
    connection itself when its rollback fails): a statement sent, its answer never read."""
    import time

    import psycopg
    from django.db import connection

    connection.ensure_connection()
    pgconn = connection.connection.pgconn
    pgconn.send_query(b"SELECT pg_sleep(60) /* busy-close-test */")
    assert pgconn.transaction_status == psycopg.pq.TransactionStatus.ACTIVE

    started = time.monotonic()
    runs._close_busy_connections()

    with connection.cursor() as cursor:  # a fresh connection
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE query LIKE %s AND state = 'active'", ["%busy-close%"]
        )
        still_running = cursor.fetchone()[0] - 1  # this statement matches itself
    assert still_running == 0 and time.monotonic() - started < 10


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_analytics_run_request__eight_concurrent_connections__exactly_one_created(data: None) -> None:
    import threading

    from django.db import connection

    barrier = threading.Barrier(8)
    outcomes: list[tuple[str, bool]] = []

    def ask() -> None:
        try:
            barrier.wait(timeout=30)
            run, created = runs.analytics_run_request(
                kind="funnel", params={"steps": "login,visit"}, owner="key:concurrent"
            )
            outcomes.append((str(run.pk), created))
        finally:
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(outcomes) == 8 and sum(created for _, created in outcomes) == 1
    assert len({run_id for run_id, _ in outcomes}) == 1 and AnalyticsRun.objects.count() == 1


@pytest.mark.django_db
def test_analytics_runs_purge__runs_older_than_keep_days__deleted_recent_kept(settings) -> None:  # type: ignore[no-untyped-def]
    settings.GROWTH = {**settings.GROWTH, "ANALYTICS_RUN_KEEP_DAYS": 7}
    now = timezone.now()

    def run(age: dt.timedelta, status: str) -> AnalyticsRun:
        return AnalyticsRun.objects.create(
            kind="funnel",
            params={},
            spec={},
            spec_hash=f"h{age}{status}",
            owner="admin",
            status=status,
            created_at=now - age,
            result={"big": list(range(100))} if status == "done" else None,
        )

    old_done, old_lost = run(dt.timedelta(days=8), "done"), run(dt.timedelta(days=30), "running")
    recent = run(dt.timedelta(days=6, hours=23), "done")

    assert tasks.analytics_runs_purge.apply().get() == 2

    assert list(AnalyticsRun.objects.values_list("pk", flat=True)) == [recent.pk]
    assert not AnalyticsRun.objects.filter(pk__in=[old_done.pk, old_lost.pk]).exists()


@pytest.mark.django_db
def test_analytics_runs_purge__data_migration__scheduled_daily_on_the_reports_queue() -> None:
    from django_celery_beat.models import PeriodicTask

    from config import queues

    task = PeriodicTask.objects.get(name="segments: analytics runs purge")
    assert task.task == "segments.analytics_runs_purge" and task.enabled
    assert (task.crontab.hour, task.crontab.minute) == ("1", "45")
    assert task.task in app.tasks
    assert queues.ROUTES[task.task]["queue"] == queues.REPORTS


@pytest.mark.django_db
def test_analytics_run_admin__growth_and_marketer__listed_read_only_without_the_result(  # type: ignore[no-untyped-def]
    client, growth_user, marketer_user
) -> None:
    run = AnalyticsRun.objects.create(
        kind="retention",
        params={},
        spec={},
        spec_hash="h",
        owner="admin",
        status="failed",
        error="RuntimeError: boom",
        result={"marker": "result-not-shown"},
    )
    for user in (growth_user, marketer_user):
        client.force_login(user)
        listing = client.get("/admin/segments/analyticsrun/?status__exact=failed")
        assert listing.status_code == 200 and "RuntimeError: boom" in listing.content.decode()
        detail = client.get(f"/admin/segments/analyticsrun/{run.pk}/change/")
        assert detail.status_code == 200 and "result-not-shown" not in detail.content.decode()
        assert client.post(f"/admin/segments/analyticsrun/{run.pk}/delete/").status_code == 403
    assert client.get("/admin/segments/analyticsrun/add/").status_code == 403
